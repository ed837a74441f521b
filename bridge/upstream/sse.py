"""Incremental server-sent-events decoding, as the WHATWG HTML standard interprets a stream.

The rules are those of HTML §9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
the bytes are UTF-8 with replacement and one leading BOM is dropped; CRLF, LF and CR each end a
line; a blank line dispatches the pending event; a line starting with `:` is a comment; a line
without a colon is a field name with an empty value; one space after the colon is removed;
`data` values are joined with LF; `event` sets the type (default `message`); `id`, `retry` and
unknown fields are ignored here, since nothing downstream reconnects.

Two deliberate differences, both from DESIGN.md "Streaming": an event whose data is the empty
string is not dispatched either (the spec skips only an event with no `data` line; the bridge
has no chunk to make of empty data), and at the end of the stream an unfinished last event is
still dispatched (the spec discards it; servers omit the final blank line).

Bytes go in as they arrive and complete events come out as soon as their blank line does, so
the bridge never waits for more of the stream than one event. The work is linear in the bytes
received: only new bytes are searched for line ends, and the pieces of an unfinished line are
kept apart and joined once, when the line ends. Without that, an upstream sending one endless
line made every read re-copy and re-scan everything before it (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "EventTooLarge", "SSEDecoder"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its `event:` type (default `message`) and joined data."""

    event: str
    data: str


class EventTooLarge(ValueError):
    """An event grew past the configured limit without ending."""


class SSEDecoder:
    """Feed bytes, get events; holds at most about `max_event_bytes` of an unfinished event.

    The limit counts the bytes of the pending event's `data` lines plus those of the line being
    read, whatever its field, checked as bytes arrive: an endless line is refused as soon as it
    passes the limit, and no line longer than the limit is kept. Other fields are not
    accumulated (the last `event` value replaces the one before), so endless comments or
    `event:` lines cost no memory.
    """

    __slots__ = (
        "_data",
        "_event",
        "_failed",
        "_head",
        "_max",
        "_pending_size",
        "_skip_lf",
        "_tail",
    )

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._max = max_event_bytes
        # The first bytes of the stream while they may still be a split BOM; None after them.
        self._head: bytes | None = b""
        # The unfinished last line. One buffer, not a list of the pieces it came in: a line
        # trickled in tiny reads must cost its length in memory, not a Python object per read.
        self._tail = bytearray()
        # The last read ended in CR, so an LF starting the next one is the rest of a CRLF.
        self._skip_lf = False
        # The pending event: its data as UTF-8 bytes joined with LF (None: no `data` line
        # yet), the bytes of its data lines, and its type.
        self._data: bytes | bytearray | None = None
        self._pending_size = 0
        self._event = ""
        # An event past the limit found after complete events of the same chunk: those are
        # returned first, and the error is raised by the next call (and every call after).
        self._failed: EventTooLarge | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that the bytes read so far complete, in order."""
        if self._failed is not None:
            raise self._failed
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return []
            self._head = None
            if chunk[:3] == _BOM:
                chunk = chunk[3:]
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            # A CR at the very end ends its line now; an LF starting the next read is skipped.
            self._skip_lf = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        rest = lines.pop()
        tail = self._tail
        if not lines:  # no line ended: only the unfinished line grew
            tail += rest
            if len(tail) + self._pending_size > self._max:
                self._failed = self._too_large()
                raise self._failed
            return []
        if tail:
            lines[0] = b"".join((tail, lines[0]))  # each byte of a line is joined once
            tail.clear()
        if rest:
            tail += rest
        return self._lines(lines, check_tail=True)

    def close(self) -> Event | None:
        """The unfinished event at end of stream, if any (servers may omit the last blank)."""
        if self._failed is not None:
            raise self._failed
        tail = bytes(self._tail)
        if self._head:  # the stream was one or two bytes of what could have been a BOM
            tail = self._head
        self._head = None
        self._tail.clear()
        self._skip_lf = False
        events = self._lines([tail, b""] if tail else [b""], check_tail=False)
        return events[0] if events else None

    def _lines(self, lines: list[bytes], *, check_tail: bool) -> list[Event]:
        """Interpret complete lines (HTML §9.2.6), the pending event's state kept in locals."""
        events: list[Event] = []
        limit = self._max
        data = self._data
        pending = self._pending_size
        event_type = self._event
        try:
            for raw in lines:
                if not raw:
                    # Dispatch. The spec's data buffer is empty when there was no `data` line;
                    # an event whose data is the empty string is skipped as well (DESIGN.md).
                    if data:
                        text = data.decode("utf-8", "replace")
                        events.append(Event(event_type or "message", text))
                    data = None
                    pending = 0
                    event_type = ""  # the type never carries over, dispatched or not
                    continue
                size = pending + len(raw)
                if size > limit:  # a whole line may arrive in one read
                    raise self._too_large()
                if raw[:6] == b"data: ":  # the common line, without partition's copies
                    name, value = b"data", raw[6:]
                else:
                    name, _, value = raw.partition(b":")
                    if value[:1] == b" ":
                        value = value[1:]
                if name == b"data":
                    pending = size
                    if data is None:
                        data = value
                    else:
                        if type(data) is bytes:
                            data = bytearray(data)
                        data += b"\n"
                        data += value
                elif name == b"event":
                    event_type = value.decode("utf-8", "replace")
                # A comment (empty name), id, retry and unknown fields are ignored.
            if check_tail and len(self._tail) + pending > limit:
                raise self._too_large()
        except EventTooLarge as exc:
            self._failed = exc
            if not events:
                raise
        self._data = data
        self._pending_size = pending
        self._event = event_type
        return events

    def _too_large(self) -> EventTooLarge:
        return EventTooLarge(f"a server-sent event exceeded {self._max} bytes")
