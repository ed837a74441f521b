"""Incremental server-sent-events decoding (the subset OpenAI-compatible servers use).

Bytes go in as they arrive; complete events come out as soon as their blank line does, so
the bridge never waits for more of the stream than one event. Lines may end in LF, CRLF or
CR. Comments (`:`) and `id:`/`retry:` fields are ignored; several `data:` lines of one event
are joined with LF, as the SSE specification says.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "EventTooLarge", "SSEDecoder"]


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its `event:` type (default `message`) and joined data."""

    event: str
    data: str


class EventTooLarge(ValueError):
    """An event grew past the configured limit without ending."""


class SSEDecoder:
    """Feed bytes, get events. Keeps at most `max_event_bytes` of an unfinished event."""

    __slots__ = ("_buffer", "_data", "_event", "_failed", "_max", "_pending_size")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._max = max_event_bytes
        self._pending_size = 0
        # An event past the limit found after complete events of the same chunk: those are
        # returned first, and the error is raised by the next call.
        self._failed: EventTooLarge | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._failed is not None:
            raise self._failed
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # Normalise CRLF and lone CR; a CR at the very end may be half of a CRLF.
            keep_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer = buffer[:-1]
            lines = buffer.split(b"\n")
            self._buffer = lines.pop() + (b"\r" if keep_cr else b"")
        else:
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()
        events: list[Event] = []
        try:
            for raw in lines:
                event = self._line(raw)
                if event is not None:
                    events.append(event)
            if len(self._buffer) + self._pending_size > self._max:
                raise self._too_large()
        except EventTooLarge as exc:
            if not events:
                raise
            self._failed = exc
        return events

    def _too_large(self) -> EventTooLarge:
        return EventTooLarge(f"a server-sent event exceeded {self._max} bytes")

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data and not self._event:
                return None
            event = Event(self._event or "message", "\n".join(self._data))
            self._data = []
            self._event = ""
            self._pending_size = 0
            return event
        line = raw.decode("utf-8", errors="replace")
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._pending_size += len(raw)
            if self._pending_size > self._max:  # checked per line: it may arrive whole
                raise self._too_large()
        elif name == "event":
            self._event = value
        # Comments (empty name), id, retry and unknown fields are ignored.
        return None

    def close(self) -> Event | None:
        """The unfinished event at end of stream, if any (servers may omit the last blank)."""
        if self._failed is not None:
            raise self._failed
        tail, self._buffer = self._buffer, b""
        if tail:
            # A lone CR kept back as possibly half a CRLF was a line end after all; when that
            # line was blank, it is what dispatches the pending event.
            event = self._line(tail.rstrip(b"\r"))
            if event is not None:
                return event
        return self._line(b"")
