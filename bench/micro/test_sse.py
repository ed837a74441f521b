"""Microbenchmarks of the SSE decoder (`make bench-micro`): the common read, and an attack.

The 1 KiB-read case is `test_sse_decode_stream` in test_translate.py.
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from bridge.upstream.sse import EventTooLarge, SSEDecoder


def test_sse_one_event_per_read(benchmark: BenchmarkFixture, sse_stream: bytes) -> None:
    """What a model server's flushes usually give: each ~250-byte event in a read of its own."""
    parts = [part + b"\n\n" for part in sse_stream.split(b"\n\n")[:-1]]

    def decode() -> int:
        decoder = SSEDecoder()
        return sum(len(decoder.feed(part)) for part in parts)

    assert benchmark(decode) == 101


def test_sse_endless_line_refused(benchmark: BenchmarkFixture) -> None:
    """Issue 12: one `data:` line that never ends, in 64 KiB reads, up to a 16 MiB limit.

    Linear decoding refuses it in about the time it takes to receive it; the old decoder
    re-copied the unfinished line on every read (0.47 s at 8 MiB, quadratic).
    """
    piece = b"x" * (64 * 1024)

    def refuse() -> int:
        decoder = SSEDecoder(16 * 1024 * 1024)
        decoder.feed(b"data: ")
        reads = 0
        try:
            while True:
                reads += 1
                decoder.feed(piece)
        except EventTooLarge:
            return reads

    assert benchmark(refuse) == 256
