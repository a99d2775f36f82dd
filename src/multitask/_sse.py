"""A sans-IO decoder for server-sent events, following the WHATWG event-stream rules.

Feed it bytes as they come off the wire, in pieces of any size; it returns the events those
bytes completed. It does no I/O and holds only the current unfinished line and event. An
event over the size cap is an `EventTooLargeError`, raised after the events completed before
it: by the feed that found it when it completed none, else by the next call (or `end()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ._exceptions import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Frame", "SSEDecoder", "ServerSentEvent"]

#: The largest event (data plus the line being read) the decoder accepts by default.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024

#: One event as `SSEDecoder.frames` gives it: its type, and its data (the raw bytes of its one
#: data line for an event of the common shape, else the decoded text).
Frame = tuple[str, bytes | str]

_BOM = b"\xef\xbb\xbf"
_MESSAGE = "message"
# Line ends as ints: `13 in data` is a memchr, `b"\r" in data` a much slower substring search.
_CR, _LF = 13, 10
# Event type names seen on the fast path, decoded once (bounded: the server picks them).
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 256
# The most bytes of an unfinished event kept raw for the next feed (beyond, the general path
# reads them; joining a longer carry to every feed would copy it again and again).
_CARRY_MAX = 64 * 1024

T = TypeVar("T")


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

    Events of the common shape (`data: ...` or `event: X` then `data: ...`, then a blank line,
    all LF-terminated) are cut out by slicing when nothing is pending from the last feed; any
    other input goes through the general line-by-line reading, which gives the same events.
    """

    __slots__ = (
        "_at_start",
        "_carry",
        "_carry_max",
        "_data",
        "_data_size",
        "_error",
        "_event",
        "_head_name",
        "_head_size",
        "_last_event_id",
        "_last_id",
        "_max_event_bytes",
        "_partial",
        "_retry",
        "_skip_lf",
        "comments",
        "head",
        "idle",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._partial = bytearray()  # the unfinished line carried over from the last feed
        self._skip_lf = False  # the last feed ended on CR: a leading LF belongs to it
        self._at_start = True  # still looking for a byte order mark
        self._data: list[str] | None = None  # the event's data lines; made at the first one
        self._data_size = 0
        self._event = ""
        self._last_id = ""  # the last event ID buffer: set by `id:`, until the block ends
        self._last_event_id = ""  # the last event ID string: the buffer, at each blank line
        self._retry: int | None = None
        self._error: EventTooLargeError | None = None  # raised by the next call
        # The start of an event of the common shape cut off at the end of the last feed, not
        # yet read: the next feed is read as if it began with these bytes.
        self._carry = b""
        self._carry_max = min(_CARRY_MAX, max_event_bytes)
        #: Whether nothing is pending (no line, field, CR or byte order mark): the next byte
        #: starts a new event. (The fast path runs only then.)
        self.idle = False
        #: How the last event read alone on the fast path began, up to its data (`data: `, or
        #: `event: X` + LF + `data: `); the next events most likely begin the same way.
        self.head = b"data: "
        self._head_size = 6
        self._head_name = _MESSAGE
        #: Comment lines seen so far (keep-alives); useful to tell a live stream from a dead one.
        self.comments = 0

    @property
    def last_event_id(self) -> str:
        """The last event id the stream set, for reconnecting with `Last-Event-ID`.

        As WHATWG has it, an `id:` line takes effect when the blank line ending its block
        comes (whether or not the block had data), not when the line is read."""
        return self._last_event_id

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes of the stream; return the events they completed."""
        if self._error is not None:
            raise self._error
        if self._carry:
            data = self._take_carry(data)
        if not self.idle:
            before, data = self._complete(data)
            if not data or self._error is not None:
                return self._checked(before)
            if not self.idle:
                return self._checked(before + self._lines(data))
        else:
            before = []
        split = self._split(data)
        if split is None:
            return self._checked(before + self._lines(data))
        frames, tail = split
        last_id, retry = self._last_id, self._retry
        events = [
            ServerSentEvent(value.decode("utf-8", "replace"), name, last_id, retry)
            for name, value in frames
        ]
        if before:
            events[:0] = before
        if tail:
            events += self._rest(tail)
        return events

    def frames(self, data: bytes) -> list[Frame]:
        """Like `feed`, for readers that need neither `id` nor `retry`: each event as a
        `(type, data)` pair, whose data is left as the raw bytes of its data line when the
        event has the common shape (saving a decode when the reader parses bytes anyway)."""
        if self._error is not None:
            raise self._error
        carry = self._carry
        if carry:
            # The commonest feed on a real network: the rest of the event the last feed cut
            # off, then the start of the next (or nothing).
            cut = data.find(b"\n\n")
            if cut < 0:
                if _CR not in data and self._carried(carry + data):
                    return []  # still inside the event
            elif _CR not in data:
                event = carry + data[:cut]
                start = self._head_size
                if (
                    event.startswith(self.head)
                    and event.find(b"\n", start) < 0
                    and len(event) < self._max_event_bytes
                ):
                    rest = data[cut + 2 :]
                    if not rest:
                        self._carry = b""
                        self.idle = True
                        return [(self._head_name, event[start:])]
                    if b"\n\n" not in rest and self._carried(rest):
                        return [(self._head_name, event[start:])]
            data = self._take_carry(data)
        if self.idle:
            # The commonest feed first: one whole event that starts as the last one did
            # (`data: ` or `event: X` + LF + `data: `), its data on one line, then the blank line.
            start = self._head_size
            end = len(data) - 2
            if (
                data.startswith(self.head)
                and data.find(b"\n", start) == end
                and data[-1] == _LF
                and _CR not in data
                and end < self._max_event_bytes
            ):
                return [(self._head_name, data[start:end])]
            before: list[Frame] = []
            alone = True  # `data` may be one whole event, read alone
        else:
            alone = False
            events, data = self._complete(data)
            before = [(e.event, e.data) for e in events]
            if not data or self._error is not None:
                return self._checked(before)
            if not self.idle:
                return self._checked(before + [(e.event, e.data) for e in self._lines(data)])
        split = self._split(data)
        if split is None:
            return self._checked(before + [(e.event, e.data) for e in self._lines(data)])
        frames, tail = split
        if tail:
            return [*before, *frames, *[(e.event, e.data) for e in self._rest(tail)]]
        if alone and len(frames) == 1:
            # One whole event, read alone: keep how it began, to recognise the next by it.
            name, value = frames[0]
            start = len(data) - 2 - len(value)
            self.head = data[:start]
            self._head_size = start
            self._head_name = name
            return [(name, value)]
        return [*before, *frames]

    def end(self) -> list[ServerSentEvent]:
        """Say the stream ended. An event not followed by a blank line is discarded, per spec
        (and so is an `id:` of its block). Raises the error held back by the last feed."""
        if self._error is not None:
            raise self._error
        if self._carry:
            self._lines(self._take_carry(b""))  # what the general path would have read of it
        self._last_id = self._last_event_id
        self._partial = bytearray()
        self._data = None
        self._data_size = 0
        self._event = ""
        self.idle = not (self._skip_lf or self._at_start)
        return []

    # -- the fast path -------------------------------------------------------------------------

    def _take_carry(self, data: bytes) -> bytes:
        """`data` after the bytes carried from the last feed; nothing is pending after it."""
        data = self._carry + data
        self._carry = b""
        self.idle = True
        return data

    def _rest(self, tail: bytes) -> list[ServerSentEvent]:
        """Read the bytes after the last whole event of a feed, with nothing pending before.

        The start of an event is carried raw to the next feed, whose bytes it is then read
        with: an event split between reads (most are, on a real network) is cut out by slicing
        like any other. Comments and long tails go the general way (that counts comments when
        they arrive, and copies a long line once); so do whole lines at the end, which may leave
        nothing pending."""
        if self._carried(tail):
            return []
        return self._lines(tail)

    def _carried(self, tail: bytes) -> bool:
        """Carry `tail` (no whole event in it) to the next feed, if `_rest` may."""
        if (
            len(tail) <= self._carry_max
            and tail[-1] != _LF  # (else the general path may read it to nothing pending)
            and tail[0] != 0x3A  # `:`, a comment
            and b"\n:" not in tail
        ):
            self._carry = tail
            self.idle = False
            return True
        return False

    def _complete(self, data: bytes) -> tuple[list[ServerSentEvent], bytes]:
        """With something pending: read `data` up to the end of the event it is in (the first
        blank line, after which nothing is pending) the general way; return those events and
        the rest of `data` (all of it read, and `b""` returned, if that cannot be done)."""
        cut = data.find(b"\n\n")
        if cut < 0 or _CR in data:
            return self._lines(data), b""
        unfinished = len(data) - data.rfind(b"\n") - 1  # the line after the last LF
        if unfinished and unfinished + self._data_size > self._max_event_bytes:
            # Read whole, `data` raises for that line before anything else (as it must).
            return self._lines(data), b""
        cut += 2
        return self._lines(data[:cut]), data[cut:]

    def _split(self, data: bytes) -> tuple[list[tuple[str, bytes]], bytes] | None:
        """With nothing pending: the whole events at the start of `data` as `(type, raw data
        line)` pairs, and the bytes after the last of them (all of `data` when no event ends in
        it); None unless every one of them has the common shape (then the general path reads
        `data`)."""
        if _CR in data or len(data) > self._max_event_bytes:
            return None  # (an event within the size limit has a data line within it too)
        whole = data.rfind(b"\n\n") + 2
        if whole < 2:
            return [], data  # no event ends here
        frames: list[tuple[str, bytes]] = []
        pos = 0
        find = data.find
        while pos < whole:
            stop = find(b"\n\n", pos)  # the blank line ending the event that starts at pos
            if data.startswith(b"data: ", pos):
                if find(b"\n", pos + 6, stop) >= 0:
                    return None  # more lines than one
                frames.append((_MESSAGE, data[pos + 6 : stop]))
            elif data.startswith(b"event: ", pos):
                nl = find(b"\n", pos + 7, stop)
                if (
                    nl < 0
                    or not data.startswith(b"data: ", nl + 1)
                    or find(b"\n", nl + 7, stop) >= 0
                ):
                    return None
                frames.append((_name(data[pos + 7 : nl]), data[nl + 7 : stop]))
            else:
                return None
            pos = stop + 2
        return frames, data[whole:]

    # -- the general path ----------------------------------------------------------------------

    def _lines(self, data: bytes) -> list[ServerSentEvent]:
        """Read `data` line by line (any line ending, pieces of lines, a byte order mark).

        Never raises: an event over the cap ends the reading, and its error is kept in
        `_error` (the events before it are returned)."""
        events: list[ServerSentEvent] = []
        try:
            self._read_lines(data, events)
        except EventTooLargeError as exc:
            self._error = exc
        finally:
            self.idle = not (
                self._partial
                or self._data
                or self._event
                or self._skip_lf
                or self._at_start
                or self._last_id != self._last_event_id  # an id waiting for its blank line
            )
        return events

    def _checked(self, out: list[T]) -> list[T]:
        """`out`, or the error found before anything in it (it stays raised)."""
        if self._error is not None and not out:
            raise self._error
        return out

    def _read_lines(self, data: bytes, events: list[ServerSentEvent]) -> None:
        if self._skip_lf and data:  # an empty feed must not forget the pending CR
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if self._partial:
            if not self._at_start and _LF not in data and _CR not in data:
                # The same line goes on: append (amortised), rather than copy the line per feed.
                self._partial += data
                self._check_line(len(self._partial))
                return
            data = bytes(self._partial) + data
            self._partial = bytearray()
        if self._at_start:
            if len(data) < 3 and _BOM.startswith(data):
                self._partial = bytearray(data)  # could still be the start of a byte order mark
                return
            self._at_start = False
            if data.startswith(_BOM):
                data = data[3:]
        if not data:
            return
        lines = data.splitlines(keepends=True)
        last = lines[-1]
        tail = last[-1:]
        if tail == b"\r":
            self._skip_lf = True
        elif tail != b"\n":
            lines.pop()
            self._partial = bytearray(last)
        for line in lines:
            event = self._line(line.rstrip(b"\r\n"))
            if event is not None:
                events.append(event)
        if self._partial:
            self._check_line(len(self._partial))  # after the whole lines before it

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
            if self._data is None:
                self._data = [text]
            else:
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
        self._last_event_id = self._last_id
        lines = self._data
        if lines is None:
            self._event = ""
            return None
        data = lines[0] if len(lines) == 1 else "\n".join(lines)
        event = ServerSentEvent(data, self._event or "message", self._last_id, self._retry)
        self._data = None
        self._data_size = 0
        self._event = ""
        return event


def _name(raw: bytes) -> str:
    """An `event:` line's value as the event type (`message` when empty)."""
    name = _NAMES.get(raw)
    if name is None:
        name = raw.decode("utf-8", "replace") or _MESSAGE
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[raw] = name
    return name
