"""A tiny sans-IO HTTP/1.1 server-side codec: parse requests, serialise responses.

It knows nothing about sockets: the I/O shell feeds it received bytes and sends the bytes it
returns. It understands just what a model client sends (a request line, headers, and a body
framed by Content-Length or chunked encoding), keeps a connection alive across requests, and
rejects anything else with a `ProtocolError` carrying the status to answer with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "ProtocolError",
    "Request",
    "RequestParser",
    "encode_chunk",
    "reason_phrase",
    "response_head",
]

LAST_CHUNK = b"0\r\n\r\n"
"""The zero-length chunk that ends a chunked body (with no trailers)."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim response that tells a client waiting on `Expect: 100-continue` to go on."""

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/1\.[01]$")
# Statuses http.HTTPStatus does not name, as the providers send them.
_EXTRA_REASONS = {529: "Site is overloaded"}


class ProtocolError(Exception):
    """The peer sent something this codec cannot serve; answer `status` and close."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-cased; repeated headers keep every value."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (without the `?`), or an empty string."""
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key == wanted:
                found = value
        return found

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after the response."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body_start: int
    content_length: int | None
    chunked: bool


class RequestParser:
    """Incremental request parser for one connection: `feed` bytes, take `next_request`s.

    Several requests may be buffered at once (pipelining); each call returns the next complete
    one, or None until more bytes arrive.
    """

    def __init__(self, *, max_head_bytes: int = 64 * 1024, max_body_bytes: int = 64 << 20) -> None:
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._continue_due = False
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes

    @property
    def has_partial(self) -> bool:
        """True while some bytes of an unfinished request are buffered."""
        return bool(self._buffer.strip(b"\r\n"))

    def take_continue(self) -> bool:
        """True once per request whose client awaits `100 Continue` before sending its body.

        The shell then sends `CONTINUE`; curl, for one, waits for it on large bodies.
        """
        due, self._continue_due = self._continue_due, False
        return due

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buffer += data

    def next_request(self) -> Request | None:
        """The next complete request, or None if more bytes are needed.

        Raises `ProtocolError` on a malformed or oversized request.
        """
        if self._head is None:
            self._head = self._parse_head()
            if self._head is None:
                return None
            expect = [v.lower() for k, v in self._head.headers if k == "expect"]
            self._continue_due = "100-continue" in expect and self._head.version == "HTTP/1.1"
        head = self._head
        if head.chunked:
            decoded = self._decode_chunked(head.body_start)
            if decoded is None:
                return None
            body, end = decoded
        else:
            length = head.content_length or 0
            end = head.body_start + length
            if len(self._buffer) < end:
                return None
            body = bytes(self._buffer[head.body_start : end])
        del self._buffer[:end]
        self._head = None
        self._continue_due = False
        return Request(head.method, head.target, head.version, head.headers, body)

    def _parse_head(self) -> _Head | None:
        # RFC 9112 section 2.2: ignore empty lines before a request line.
        start = 0
        while self._buffer.startswith(b"\r\n", start) or self._buffer.startswith(b"\n", start):
            start += 2 if self._buffer.startswith(b"\r\n", start) else 1
        if start:
            del self._buffer[:start]
        match = _HEAD_END.search(self._buffer)
        if match is None:
            if len(self._buffer) > self._max_head:
                raise ProtocolError("request head too large", status=431)
            return None
        if match.start() > self._max_head:
            raise ProtocolError("request head too large", status=431)
        lines = [raw.decode("latin-1") for raw in _LINE_END.split(self._buffer[: match.start()])]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
            raise ProtocolError("malformed request line")
        method, target, version = parts
        if not _VERSION.match(version):
            raise ProtocolError(f"unsupported HTTP version {version!r}", status=505)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                raise ProtocolError("obsolete header line folding")
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.match(name):
                raise ProtocolError(f"malformed header line {line!r}")
            headers.append((name.lower(), value.strip(" \t")))
        content_length, chunked = self._framing(headers)
        if content_length is not None and content_length > self._max_body:
            raise ProtocolError("request body too large", status=413)
        return _Head(method, target, version, headers, match.end(), content_length, chunked)

    @staticmethod
    def _framing(headers: list[tuple[str, str]]) -> tuple[int | None, bool]:
        lengths = {v for k, v in headers if k == "content-length"}
        codings = [
            c.strip().lower()
            for k, v in headers
            if k == "transfer-encoding"
            for c in v.split(",")
            if c.strip()
        ]
        if codings:
            if lengths:
                raise ProtocolError("both Content-Length and Transfer-Encoding")
            if codings != ["chunked"]:
                raise ProtocolError(f"unsupported transfer coding {codings!r}", status=501)
            return None, True
        if not lengths:
            return None, False
        if len(lengths) > 1:
            raise ProtocolError("conflicting Content-Length headers")
        (value,) = lengths
        if not value.isdigit():
            raise ProtocolError(f"bad Content-Length {value!r}")
        return int(value), False

    def _decode_chunked(self, pos: int) -> tuple[bytes, int] | None:
        """Decode a whole chunked body from `pos`: (body, end offset), or None if incomplete."""
        body = bytearray()
        buf = self._buffer
        while True:
            line_end = buf.find(b"\n", pos)
            if line_end < 0:
                return None
            size_text = bytes(buf[pos:line_end]).rstrip(b"\r").split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ProtocolError("malformed chunk size") from exc
            pos = line_end + 1
            if size == 0:
                # Skip trailers up to and including the empty line.
                while True:
                    line_end = buf.find(b"\n", pos)
                    if line_end < 0:
                        return None
                    line = bytes(buf[pos:line_end]).rstrip(b"\r")
                    pos = line_end + 1
                    if not line:
                        return bytes(body), pos
            if len(body) + size > self._max_body:
                raise ProtocolError("request body too large", status=413)
            if len(buf) < pos + size + 1:
                return None
            body += buf[pos : pos + size]
            pos += size
            if buf.startswith(b"\r\n", pos):
                pos += 2
            elif buf.startswith(b"\n", pos):
                pos += 1
            elif len(buf) - pos < 2:
                return None
            else:
                raise ProtocolError("chunk not followed by CRLF")


def reason_phrase(status: int) -> str:
    """The standard reason phrase for `status` (empty if unknown)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_REASONS.get(status, "")


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Serialise a status line and headers, ending with the blank line."""
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}".rstrip(" ")]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_chunk(data: bytes) -> bytes:
    """Frame `data` as one chunk of a chunked body (empty data would end the body: refused)."""
    if not data:
        raise ValueError("an empty chunk would end the body; send LAST_CHUNK for that")
    return b"%x\r\n%s\r\n" % (len(data), data)
