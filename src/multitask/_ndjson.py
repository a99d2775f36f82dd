"""A sans-IO decoder for newline-delimited JSON streams (Ollama's native API).

It has the SSE decoder's shape, `feed(bytes) -> events`, so a provider that streams NDJSON
plugs into the same pipeline: each non-blank line becomes one event whose data is the line.
"""

from __future__ import annotations

from ._exceptions import EventTooLargeError
from ._sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent

__all__ = ["NDJSONDecoder"]


class NDJSONDecoder:
    """Splits a byte stream into lines (LF or CRLF), each one `ServerSentEvent(data=line)`."""

    __slots__ = ("_error", "_max_event_bytes", "_partial")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._partial = b""
        self._error: EventTooLargeError | None = None  # raised by the next call

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes; return one event per line they completed.

        A line over the cap raises `EventTooLargeError`, after the lines before it: by this
        call when it completed none, else by the next one (or `end()`)."""
        if self._error is not None:
            raise self._error
        if self._partial:
            data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        limit = self._max_event_bytes
        events = []
        for line in lines:
            if len(line) > limit:
                break
            if line.strip():
                events.append(ServerSentEvent(line.decode("utf-8", "replace")))
        else:
            if len(self._partial) <= limit:
                return events
        self._error = EventTooLargeError(f"NDJSON line longer than {limit} bytes")
        if not events:
            raise self._error
        return events

    def end(self) -> list[ServerSentEvent]:
        """Say the stream ended: a last line without its newline still counts."""
        if self._error is not None:
            raise self._error
        rest, self._partial = self._partial, b""
        return [ServerSentEvent(rest.decode("utf-8", "replace"))] if rest.strip() else []
