"""The SSE decoder: whatever way the bytes are split, the same events come out, at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sse import Event, EventTooLarge, SSEDecoder

STREAM = (
    b": keep-alive comment\n"
    b'data: {"a":1}\n\n'
    b"id: 7\nretry: 100\n"
    b'data: {"b":\n'
    b"data: 2}\n\n"
    b"event: error\n"
    b'data: {"error":{"message":"x"}}\n\n'
    b"data: [DONE]\n\n"
)
EVENTS = [
    Event("message", '{"a":1}'),
    Event("message", '{"b":\n2}'),
    Event("error", '{"error":{"message":"x"}}'),
    Event("message", "[DONE]"),
]


def decode_all(parts: list[bytes], limit: int = 1 << 20) -> list[Event]:
    decoder = SSEDecoder(limit)
    events = [event for part in parts for event in decoder.feed(part)]
    tail = decoder.close()
    return events + ([tail] if tail is not None else [])


def test_events_fields_and_comments() -> None:
    assert decode_all([STREAM]) == EVENTS


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(ending: bytes) -> None:
    assert decode_all([STREAM.replace(b"\n", ending)]) == EVENTS


def test_an_event_comes_out_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n') == []
    assert decoder.feed(b"\n") == [Event("message", '{"a":1}')]


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r\n") == [Event("message", "x")]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    parts = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert decode_all(parts) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_with_crlf_gives_the_same_events(cuts: list[int]) -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    points = sorted({min(c, len(stream)) for c in cuts})
    parts = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode_all(parts) == EVENTS


def test_last_event_without_a_blank_line_is_kept_at_close() -> None:
    assert decode_all([b"data: [DONE]"]) == [Event("message", "[DONE]")]
    assert decode_all([b"data: [DONE]\n"]) == [Event("message", "[DONE]")]


def test_nothing_at_close_after_complete_events() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\n")
    assert decoder.close() is None


def test_invalid_utf8_does_not_break_decoding() -> None:
    assert decode_all([b"data: \xff\xfe\n\n"]) == [Event("message", "\ufffd\ufffd")]


def test_an_event_growing_past_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60 + b"\n")
    with pytest.raises(EventTooLarge, match="100 bytes"):
        decoder.feed(b"data: " + b"y" * 60 + b"\n")


def test_an_unterminated_line_past_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"x" * 200)


def test_many_events_under_the_limit_are_fine() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed((b"data: " + b"y" * 80 + b"\n\n") * 50)
    assert len(events) == 50


def test_an_oversized_event_arriving_whole_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge, match="exceeded 100 bytes"):
        decoder.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_events_before_an_oversized_one_are_delivered_first() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 200 + b"\n\n")
    assert events == [Event("message", "a"), Event("message", "b")]
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: c\n\n")
    with pytest.raises(EventTooLarge):
        decoder.close()
