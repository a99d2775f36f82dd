"""A sans-IO HTTP/1.1 client connection: a request head out, a streamed response in.

multitask's requests are one small JSON body out and one long streamed body back, read a few
hundred bytes at a time. `ResponseReader.receive(bytes)` turns the bytes of one response into
a `Head`, the body's bytes and `END`, following RFC 9112's message framing (Content-Length,
chunked, or until the connection closes). It does no I/O, so it is tested alone; the
transport in `_transport.py` is the thin shell that moves bytes between it and a socket.
The body path is written for its common case, a read that holds whole chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "END",
    "End",
    "Event",
    "Head",
    "ProtocolError",
    "ResponseReader",
    "render_request_head",
]

#: The largest response head (status line and headers) accepted.
MAX_HEAD_BYTES: Final = 64 * 1024
#: The largest chunk-size line (size and extensions) or trailer section accepted.
MAX_LINE_BYTES: Final = 4 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class ProtocolError(Exception):
    """The server broke HTTP/1.1's framing; the message says where."""


@dataclass(frozen=True, slots=True)
class Head:
    """A response's status line and headers (names lower-cased, in order, repeats kept)."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes = b"1.1"


class End:
    """The response body is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: The one `End` instance.
END: Final = End()

Event = Head | bytes | End

_Framing = Literal["length", "chunked", "close", "none"]


def render_request_head(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The request line and header block, ready to write; refuses CR/LF smuggled into fields."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid request method {method!r}")
    if not target or any(c in target for c in b" \r\n\0"):
        raise ValueError(f"invalid request target {target!r}")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise ValueError(f"invalid value for header {name.decode('latin-1')!r}: CR, LF or NUL")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class ResponseReader:
    """Reads one response of one request; `receive` returns the events each read completed.

    `method` matters because a response to HEAD has no body. Informational (1xx) responses
    other than 101 are skipped. Errors are `ProtocolError`s naming what was wrong, raised
    only after the events framed before them: a read whose bytes frame some body and then
    break the framing returns that body and keeps the error in `error` (a reader should
    stop there, not wait for more bytes), for the next call to raise. After `END`,
    `reusable` says whether the connection may carry another request.
    """

    __slots__ = (
        "_buffer",
        "_framing",
        "_head_request",
        "_left",
        "_started",
        "_state",
        "_trailer_bytes",
        "error",
        "head",
        "received",
        "reusable",
    )

    def __init__(self, method: str = "GET") -> None:
        self._head_request = method.upper() == "HEAD"
        self._buffer = b""  # bytes of an unfinished head or chunk-size line
        self._state: Literal["head", "size", "data", "data_end", "trailer", "body", "done"] = "head"
        self._framing: _Framing = "none"
        self._left = 0  # body bytes left (length), or bytes of the current chunk (chunked)
        self._trailer_bytes = 0
        self._started = False
        #: The final response head, once read.
        self.head: Head | None = None
        #: Body bytes handed out so far.
        self.received = 0
        #: Whether the connection may be reused, once the response is complete.
        self.reusable = False
        #: The framing error found after the events last returned, raised by the next call.
        self.error: ProtocolError | None = None

    @property
    def started(self) -> bool:
        """Whether any byte of the response has arrived."""
        return self._started

    @property
    def done(self) -> bool:
        """Whether the whole response has been read."""
        return self._state == "done"

    def receive(self, data: bytes) -> list[Event]:
        """Take the next bytes from the connection; return what they completed.

        A framing error is raised at once when these bytes framed nothing before it; else
        what they framed is returned, and the error is kept in `error` for the next call.
        """
        if self.error is not None:
            raise self.error
        out: list[Event] = []
        state = self._state
        try:
            if state == "body":
                if data:
                    self.received += len(data)
                    out.append(data)
            elif state == "size" or state == "data" or state == "data_end" or state == "trailer":
                self._chunks(data, out)
            elif state == "head":
                self._started = self._started or bool(data)
                self._head(data, out)
            elif state == "done" and data:
                self.reusable = False  # bytes after the response: nothing to trust here
        except ProtocolError as exc:
            self.error = exc
            self.reusable = False
            if not out:
                raise
        return out

    def receive_eof(self) -> list[Event]:
        """The server closed the connection; return the final events or raise."""
        if self.error is not None:
            raise self.error
        state = self._state
        if state == "done":
            return []
        if state == "body":
            self._state = "done"
            self.reusable = False
            return [END]
        if state == "head":
            if self._buffer:
                raise ProtocolError(
                    f"the server closed the connection in the middle of the response head "
                    f"({len(self._buffer)} bytes)"
                )
            raise ProtocolError("the server closed the connection without sending a response")
        if self._framing == "length":
            raise ProtocolError(
                f"the server closed the connection after {self.received} of "
                f"{self.received + self._left} body bytes (Content-Length)"
            )
        raise ProtocolError(
            f"the server closed the connection in the middle of a chunked body "
            f"(after {self.received} bytes, no final chunk)"
        )

    # -- the head ------------------------------------------------------------------------------

    def _head(self, data: bytes, out: list[Event]) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = _head_end(buffer)
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
                self._buffer = buffer
                return
            if end > MAX_HEAD_BYTES:
                raise ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
            head = _parse_head(buffer[:end])
            buffer = buffer[end:]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # 100 Continue, 103 Early Hints: the real response follows
            break
        self._buffer = b""
        self._frame(head)  # (before the head is handed out: a head it refuses is an error)
        self.head = head
        out.append(head)
        if self._state == "done":
            out.append(END)
            if buffer:
                self.reusable = False  # bytes after a bodiless response
        elif buffer:  # the body's first bytes came with the head
            if self._state == "body":
                self.received += len(buffer)
                out.append(buffer)
            else:
                self._chunks(buffer, out)

    def _frame(self, head: Head) -> None:
        """Decide how the body is delimited (RFC 9112 section 6.3)."""
        headers = head.headers
        connection = b",".join(v for k, v in headers if k == b"connection").lower()
        keep_alive = head.http_version == b"1.1" and b"close" not in connection
        encodings = [v for k, v in headers if k == b"transfer-encoding"]
        lengths = [v for k, v in headers if k == b"content-length"]
        if self._head_request or head.status in (204, 304) or head.status == 101:
            self._finish(keep_alive and head.status != 101)
            return
        if encodings:
            # Only `chunked` is understood: any other transfer coding (gzip, a second
            # chunked) would hand out bytes nobody decodes (RFC 9112 sections 6.1, 7).
            codings = [c.strip().lower() for c in b",".join(encodings).split(b",")]
            codings = [c for c in codings if c]
            if codings != [b"chunked"]:
                raise ProtocolError(
                    f"unsupported Transfer-Encoding {b', '.join(encodings)!r} (only chunked)"
                )
            self._framing, self._state = "chunked", "size"
            self.reusable = keep_alive and not lengths
            return
        if lengths:
            values = {v.strip() for v in b",".join(lengths).split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError(f"invalid Content-Length: {b', '.join(lengths)!r}")
            self._left = int(next(iter(values)))
            self._framing = "length"
            self.reusable = keep_alive
            if self._left == 0:
                self._finish(keep_alive)
            else:
                self._state = "data"
            return
        self._framing, self._state = "close", "body"

    def _finish(self, reusable: bool) -> None:
        self._state = "done"
        self.reusable = reusable

    # -- the body ------------------------------------------------------------------------------

    def _chunks(self, data: bytes, out: list[Event]) -> None:
        if self._framing == "length":
            self._length(data, out)
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        elif self._state == "size":
            # The commonest read of a streamed body: one whole chunk (the server writes one
            # per event, and each arrives alone), framed at once; the loop below reads the rest.
            nl = data.find(b"\n", 0, 18)
            if nl > 1 and data[nl - 1] == 13:
                digits = data[: nl - 1]
                if _HEX.fullmatch(digits):
                    left = int(digits, 16)
                    end = nl + 1 + left
                    if left and len(data) == end + 2 and data.endswith(b"\r\n"):
                        out.append(data[nl + 1 : end])
                        self.received += left
                        return
        pos, size = 0, len(data)
        while pos < size:
            state = self._state
            if state == "data":
                end = pos + self._left
                if end <= size:
                    if end > pos:
                        out.append(data[pos:end] if pos or end < size else data)
                        self.received += end - pos
                    self._left = 0
                    self._state = "data_end"
                    pos = end
                else:
                    out.append(data[pos:] if pos else data)
                    self.received += size - pos
                    self._left -= size - pos
                    return
            elif state == "data_end":
                if data.startswith(b"\r\n", pos):
                    pos += 2
                elif data.startswith(b"\n", pos):
                    pos += 1
                elif size - pos < 2 and data[pos:] == b"\r":
                    self._buffer = b"\r"
                    return
                else:
                    raise ProtocolError("chunk data not followed by CRLF (chunk size wrong?)")
                self._state = "size"
            elif state == "size":
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if size - pos > MAX_LINE_BYTES:
                        raise ProtocolError(f"chunk-size line longer than {MAX_LINE_BYTES} bytes")
                    self._buffer = data[pos:]
                    return
                if nl - pos > MAX_LINE_BYTES:
                    raise ProtocolError(f"chunk-size line longer than {MAX_LINE_BYTES} bytes")
                self._left = _chunk_size(data[pos:nl])
                pos = nl + 1
                if self._left == 0:
                    self._state = "trailer"
                else:
                    self._state = "data"
            elif state == "trailer":
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._trailer_bytes += size - pos
                    if self._trailer_bytes > MAX_LINE_BYTES:
                        raise ProtocolError(f"trailer section longer than {MAX_LINE_BYTES} bytes")
                    self._buffer = data[pos:]
                    return
                line = data[pos:nl]
                pos = nl + 1
                self._trailer_bytes += len(line) + 1
                if self._trailer_bytes > MAX_LINE_BYTES:
                    raise ProtocolError(f"trailer section longer than {MAX_LINE_BYTES} bytes")
                if line in (b"", b"\r"):  # the empty line: the message is complete
                    self._state = "done"
                    out.append(END)
                    if pos < size:
                        self.reusable = False
                    return
            else:  # done: bytes after the end
                self.reusable = False
                return

    def _length(self, data: bytes, out: list[Event]) -> None:
        if not data:
            return
        left = self._left
        if len(data) < left:
            out.append(data)
            self.received += len(data)
            self._left = left - len(data)
            return
        out.append(data if len(data) == left else data[:left])
        self.received += left
        self._left = 0
        self._state = "done"
        if len(data) > left:
            self.reusable = False
        out.append(END)


def _head_end(buffer: bytes) -> int:
    """The offset just past the empty line ending the head (CRLF or bare LF), or -1."""
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n")
    ends = [i + n for i, n in ((crlf, 3), (lf, 2)) if i >= 0]
    return min(ends) if ends else -1


def _parse_head(block: bytes) -> Head:
    lines = block.split(b"\n")
    status_line = lines[0].rstrip(b"\r")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        shown = status_line[:80]
        raise ProtocolError(f"not an HTTP/1.x response: status line {shown!r}")
    minor, status, reason = match.groups()
    headers: list[tuple[bytes, bytes]] = []
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            # An obsolete line folding: a user agent replaces it with a space and reads on
            # (RFC 9112 section 5.2). Before any header line, it would start the headers
            # with whitespace, which section 2.2 lets a recipient refuse.
            if not headers:
                raise ProtocolError("a folded header line before any header (whitespace)")
            name, value = headers[-1]
            value = value + b" " + line.strip(b" \t") if value else line.strip(b" \t")
        else:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
        if not _FIELD_VALUE.fullmatch(value):
            raise ProtocolError(f"control character in the value of header {name.decode()!r}")
        headers[-1] = (name, value)
    return Head(int(status), reason or b"", headers, b"1." + minor)


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip(b" \t\r")
    if not _HEX.fullmatch(digits) or len(digits) > 16:
        raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
    return int(digits, 16)
