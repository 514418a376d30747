"""SSE framing over bytes: complete events out of arbitrary network reads.

Upstream events arrive split across reads and several to a read; an event ends at a blank line
(``\\n\\n``; ``\\r\\n`` line ends are normalised first). Comment lines (``: keep-alive``) are events
of their own and are forwarded as they are.
"""

from __future__ import annotations

import itertools

DONE = b"[DONE]"


class EventTooLarge(Exception):
    def __init__(self, message: str, before: list[bytes]) -> None:
        super().__init__(message)
        self.before = before  # the complete events ahead of the oversized one, still owed to the client


class EventSplitter:
    __slots__ = ("_buffer", "_max")

    def __init__(self, max_event_bytes: int) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events completed by ``chunk``, each without its terminating blank line."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        if len(self._buffer) > self._max or any(len(e) > self._max for e in events):
            before = [e for e in itertools.takewhile(lambda e: len(e) <= self._max, events) if e]
            raise EventTooLarge(f"an upstream event is larger than {self._max} bytes", before)
        return [e for e in events if e]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (the upstream closed mid-event if non-empty)."""
        return self._buffer


def data_of(event: bytes) -> bytes | None:
    """The ``data`` of an event (lines joined with \\n), or None for a comment/field-only event."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[6:] if event[5:6] == b" " else event[5:]
    lines = [line[6:] if line[5:6] == b" " else line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def frame(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"
