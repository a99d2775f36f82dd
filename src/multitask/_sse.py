"""A sans-IO decoder for server-sent events, following the WHATWG event-stream rules.

Feed it bytes as they come off the wire, in pieces of any size; it returns the events those
bytes completed. It does no I/O and holds only the current unfinished line and event.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._exceptions import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent"]

#: The largest event (data plus the line being read) the decoder accepts by default.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (`message` unless named), data, last event id and retry."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns an event-stream byte stream into `ServerSentEvent`s.

    Lines end at CR, LF or CRLF and nowhere else, even when a CRLF pair is split between two
    feeds. A UTF-8 byte order mark at the very start is dropped. Bytes are decoded per line,
    so a multi-byte character split between feeds is never broken.
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_data_size",
        "_event",
        "_last_id",
        "_max_event_bytes",
        "_partial",
        "_retry",
        "_skip_lf",
        "comments",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._partial = bytearray()  # the unfinished line carried over from the last feed
        self._skip_lf = False  # the last feed ended on CR: a leading LF belongs to it
        self._at_start = True  # still looking for a byte order mark
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        #: Comment lines seen so far (keep-alives); useful to tell a live stream from a dead one.
        self.comments = 0

    @property
    def last_event_id(self) -> str:
        """The last event id the stream set, for reconnecting with `Last-Event-ID`."""
        return self._last_id

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes of the stream; return the events they completed."""
        if self._skip_lf and data:  # an empty feed must not forget the pending CR
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._partial:
            if not self._at_start and b"\n" not in data and b"\r" not in data:
                # The same line goes on: append (amortised), rather than copy the line per feed.
                self._partial += data
                self._check_line(len(self._partial))
                return []
            data = bytes(self._partial) + data
            self._partial = bytearray()
        if self._at_start:
            if len(data) < 3 and _BOM.startswith(data):
                self._partial = bytearray(data)  # could still be the start of a byte order mark
                return []
            self._at_start = False
            if data.startswith(_BOM):
                data = data[3:]
        if not data:
            return []
        lines = data.splitlines(keepends=True)
        last = lines[-1]
        tail = last[-1:]
        if tail == b"\r":
            self._skip_lf = True
        elif tail != b"\n":
            lines.pop()
            self._partial = bytearray(last)
            self._check_line(len(last))
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line.rstrip(b"\r\n"))
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[ServerSentEvent]:
        """Say the stream ended. An event not followed by a blank line is discarded, per spec."""
        self._partial = bytearray()
        self._data = []
        self._data_size = 0
        self._event = ""
        return []

    def _check_line(self, size: int) -> None:
        if size + self._data_size > self._max_event_bytes:
            raise EventTooLargeError(
                f"server-sent event larger than {self._max_event_bytes} bytes "
                "(a line that never ends?)"
            )

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[:1] == b":":
            self.comments += 1
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            text = value.decode("utf-8", "replace")
            self._data.append(text)
            self._data_size += len(value) + 1
            if self._data_size > self._max_event_bytes:
                raise EventTooLargeError(
                    f"server-sent event larger than {self._max_event_bytes} bytes"
                )
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit() and len(value) <= 18:
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = ServerSentEvent(data, self._event or "message", self._last_id, self._retry)
        self._data = []
        self._data_size = 0
        self._event = ""
        return event
