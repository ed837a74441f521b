"""The SSE decoder: whatever way the bytes are split, the same events come out, at once.

The rules are WHATWG HTML §9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
with DESIGN.md's two differences: an event with empty data is skipped, and an unfinished last
event is dispatched at the end of the stream. `reference` below is that text, read over the
whole stream at once; the decoder must agree with it however the stream is cut.
"""

from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.upstream.sse import Event, EventTooLarge, SSEDecoder

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

BOM = b"\xef\xbb\xbf"
# Every rule in one stream: a BOM, all three line ends, a type-only event, empty data, a field
# without a colon, two spaces, a multi-byte character, invalid UTF-8, and no final blank line.
RICH = (
    BOM + b"data: caf\xc3\xa9\r\n\r\n"
    b"event: ping\r\r"
    b"data:\n\n"
    b"event: usage\ndata\ndata:  two\r\n\n"
    b": comment\rid: 1\nretry: x\nvendor: y\n"
    b"data: \xff[DONE] \r"
    b"data:x"
)
RICH_EVENTS = [
    Event("message", "caf\u00e9"),
    Event("usage", "\n two"),
    Event("message", "\ufffd[DONE] \nx"),
]


def decode_all(parts: list[bytes], limit: int = 1 << 20) -> list[Event]:
    decoder = SSEDecoder(limit)
    events = [event for part in parts for event in decoder.feed(part)]
    tail = decoder.close()
    return events + ([tail] if tail is not None else [])


def reference(stream: bytes) -> list[Event]:
    """HTML §9.2.6 applied to the whole stream, as its text says, plus DESIGN.md's two rules."""
    text = stream.decode("utf-8", "replace")  # "UTF-8 decode" drops one leading BOM
    text = text.removeprefix("\ufeff")
    *lines, last = re.split("\r\n|\r|\n", text)
    if last:
        lines.append(last)  # DESIGN.md: the unfinished last line still counts...
    events: list[Event] = []
    data_buffer, event_type = "", ""
    for line in [*lines, ""]:  # ...and so does the unfinished last event
        if not line:
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            if data_buffer:  # the spec also dispatches empty data; DESIGN.md skips it
                events.append(Event(event_type or "message", data_buffer))
            data_buffer, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data_buffer += value + "\n"
        elif field == "event":
            event_type = value
    return events


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def test_events_fields_and_comments() -> None:
    assert decode_all([STREAM]) == EVENTS == reference(STREAM)


def test_every_rule_at_once() -> None:
    assert decode_all([RICH]) == RICH_EVENTS == reference(RICH)


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(ending: bytes) -> None:
    assert decode_all([STREAM.replace(b"\n", ending)]) == EVENTS


def test_an_event_comes_out_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n') == []
    assert decoder.feed(b"\n") == [Event("message", '{"a":1}')]


def test_a_cr_ends_its_line_at_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\r") == [Event("message", "x")]


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r\n") == [Event("message", "x")]


def test_a_crlf_split_by_an_empty_read_is_still_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: y\n\n") == [Event("message", "x\ny")]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    assert decode_all(split(STREAM, cuts)) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_with_crlf_gives_the_same_events(cuts: list[int]) -> None:
    assert decode_all(split(STREAM.replace(b"\n", b"\r\n"), cuts)) == EVENTS


def test_every_cut_in_two_or_three_gives_the_same_events() -> None:
    n = len(RICH)
    for i in range(n + 1):
        assert decode_all([RICH[:i], RICH[i:]]) == RICH_EVENTS, i
        for j in range(i, n + 1):
            assert decode_all([RICH[:i], RICH[i:j], RICH[j:]]) == RICH_EVENTS, (i, j)
    assert decode_all([RICH[i : i + 1] for i in range(n)]) == RICH_EVENTS


# Pieces that exercise every rule when strung together in any order.
TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event",
    b"event: ",
    b"id: 1",
    b"retry: 5",
    b":",
    b" ",
    b"x",
    b"[DONE]",
    b"\xc3\xa9",
    b"\xe2\x82",
    b"\xff",
    b"\xef\xbb\xbf",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
]


@given(
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_any_stream_cut_anywhere_decodes_as_the_spec_says(stream: bytes, cuts: list[int]) -> None:
    assert decode_all(split(stream, cuts)) == reference(stream)


def test_a_bom_at_the_start_is_dropped() -> None:
    assert decode_all([BOM + b"data: x\n\n"]) == [Event("message", "x")]


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_bom_split_across_reads_is_dropped(at: int) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(BOM[:at]) == []
    assert decoder.feed(BOM[at:] + b"data: x\n\n") == [Event("message", "x")]


def test_a_bom_fed_byte_by_byte_is_dropped() -> None:
    parts = [bytes([b]) for b in BOM + b"data: x\n\n"]
    assert decode_all(parts) == [Event("message", "x")]


def test_only_one_bom_and_only_at_the_start_is_dropped() -> None:
    # A second BOM, like one later in the stream, is part of the field name: "\ufeffdata".
    assert decode_all([BOM + BOM + b"data: x\n\n"]) == []
    assert decode_all([b"data: a\n\n" + BOM + b"data: b\n\n"]) == [Event("message", "a")]
    assert decode_all([b"data: \xef\xbb\xbf\n\n"]) == [Event("message", "\ufeff")]


def test_the_start_of_a_bom_that_is_not_one_is_kept() -> None:
    assert decode_all([b"\xef", b"data: x\n\n"]) == []  # field "\ufffddata" is unknown
    assert decode_all([b"\xef\xbb"]) == []
    assert decode_all([b"\xef\xbb", b"\n", b"data: x\n\n"]) == [Event("message", "x")]


@pytest.mark.parametrize(
    "stream", [b"event: ping\n\n", b"data:\n\n", b"data\n\n", b"data: \n\n", b"id: 1\n\n"]
)
def test_an_event_without_data_is_not_dispatched(stream: bytes) -> None:
    assert decode_all([stream]) == []
    assert decode_all([stream.rstrip(b"\n")]) == []  # nor at the end of the stream


def test_the_type_of_an_undispatched_event_does_not_carry_over() -> None:
    assert decode_all([b"event: ping\n\ndata: x\n\n"]) == [Event("message", "x")]
    assert decode_all([b"event: ping\ndata:\n\ndata: x\n\n"]) == [Event("message", "x")]


def test_data_lines_are_joined_with_lf_and_kept_unstripped() -> None:
    assert decode_all([b"data: a\ndata:b\ndata\ndata:  c \n\n"]) == [
        Event("message", "a\nb\n\n c ")
    ]
    assert decode_all([b"data: [DONE] \n\n"]) == [Event("message", "[DONE] ")]
    assert decode_all([b"data:\ndata:\n\n"]) == [Event("message", "\n")]


def test_field_names_are_exact_and_values_keep_later_colons() -> None:
    assert decode_all([b"Data: x\ndata : y\n\n"]) == []
    assert decode_all([b'data: {"a":"b:c"}\n\n']) == [Event("message", '{"a":"b:c"}')]
    assert decode_all([b"event\ndata: x\n\n"]) == [Event("message", "x")]  # empty type
    assert decode_all([b"event: a\nevent: b\ndata: x\n\n"]) == [Event("b", "x")]


def test_last_event_without_a_blank_line_is_kept_at_close() -> None:
    assert decode_all([b"data: [DONE]"]) == [Event("message", "[DONE]")]
    assert decode_all([b"data: [DONE]\n"]) == [Event("message", "[DONE]")]
    assert decode_all([b"data: [DONE]\r"]) == [Event("message", "[DONE]")]


def test_nothing_at_close_after_complete_events() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n\n")
    assert decoder.close() is None


def test_invalid_utf8_does_not_break_decoding() -> None:
    assert decode_all([b"data: \xff\xfe\n\n"]) == [Event("message", "\ufffd\ufffd")]
    assert decode_all([b"data: \xe2\x82\ndata: \x82\n\n"]) == [Event("message", "\ufffd\n\ufffd")]


def test_a_character_split_across_reads_is_decoded_whole() -> None:
    assert decode_all([b"data: caf\xc3", b"\xa9\n\n"]) == [Event("message", "caf\u00e9")]


def test_an_event_growing_past_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60 + b"\n")
    with pytest.raises(EventTooLarge, match="100 bytes"):
        decoder.feed(b"data: " + b"y" * 60 + b"\n")


@pytest.mark.parametrize("before", [b"", b"data: a\n", b": comment\n\n"])
def test_an_unterminated_line_past_the_limit_is_refused_at_once(before: bytes) -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        decoder.feed(before + b"data: " + b"x" * 200)
    with pytest.raises(EventTooLarge):  # and stays refused
        decoder.feed(b"\n\n")


@pytest.mark.parametrize("prefix", [b": ", b"event: ", b"id: ", b"vendor: "])
def test_any_endless_line_is_refused(prefix: bytes) -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(prefix + b"x" * 90)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"x" * 20)


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


def test_events_before_an_oversized_unfinished_line_are_delivered_first() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: a\n\ndata: " + b"x" * 200)
    assert events == [Event("message", "a")]
    with pytest.raises(EventTooLarge):
        decoder.feed(b"\n\n")


def outcome(parts: list[bytes], limit: int) -> tuple[list[Event], bool]:
    """The events a caller gets, and whether the stream was refused after them."""
    decoder = SSEDecoder(limit)
    events: list[Event] = []
    try:
        for part in parts:
            events += decoder.feed(part)
        tail = decoder.close()
    except EventTooLarge:
        return events, True
    return events + ([tail] if tail is not None else []), False


@given(
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=200), max_size=12),
    st.integers(min_value=0, max_value=40),
)
def test_the_limit_does_not_depend_on_how_the_stream_is_cut(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    assert outcome(split(stream, cuts), limit) == outcome([stream], limit)


def test_an_endless_line_is_refused_without_recopying_what_came_before() -> None:
    """Issue 12: a 64 MiB line in 64 KiB reads, refused at the bridge's default limit.

    Linearity is checked by what the reads allocate, not by time: together no more than the
    bytes received, where the old decoder concatenated and re-split the whole unfinished line
    on every read (32 GiB of copies and 39 s of CPU at this size).
    """
    limit = 64 * 1024 * 1024
    piece = b"x" * (64 * 1024)
    decoder = SSEDecoder(limit)
    decoder.feed(b"data: ")
    reads = 0
    allocated = 0
    tracemalloc.start()
    try:
        with pytest.raises(EventTooLarge):
            while reads < 2 * limit // len(piece):
                reads += 1
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                try:
                    decoder.feed(piece)
                finally:
                    allocated += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert reads == limit // len(piece)  # refused by the read that passed the limit
    assert allocated < 1.5 * reads * len(piece)


def test_a_line_trickled_in_tiny_reads_holds_about_its_length() -> None:
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    decoder.feed(b"data: ")
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(50_000):
            decoder.feed(b"xy")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * 100_000
    assert decoder.feed(b"\n\n") == [Event("message", "xy" * 50_000)]


@pytest.mark.parametrize(
    "lines",
    [
        b": keep-alive\n",
        b"event:\n",
        b"event: ping\n\n",
        b"id: 1\nretry: 5\n",
        b"\r\n",
        b"data:\n\n",
    ],
)
def test_endless_lines_that_dispatch_nothing_hold_no_memory(lines: bytes) -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    read = lines * 64
    for _ in range(50):  # warm up: the decoder's own small state exists
        assert decoder.feed(read) == []
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(2_000):
            decoder.feed(read)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096
    assert decoder.close() is None
