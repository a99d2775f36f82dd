"""`HostileServer`: a raw HTTP server that answers whatever bytes a test tells it to.

`ScriptedModelServer` speaks the providers' formats correctly, even when it fails on cue.
This one does not speak any format: each request gets a `Reply`, a status line and headers
(or a raw head) and a body of byte pieces, framed as chunks, by a content length or by closing
the connection, paced, endless, or never sent at all. It is for testing what the client does
with a server that is broken or malicious: HTML pages, gzip bombs, a drip of one byte a
second, a connection that is accepted and never answered, a response cut into pieces
anywhere (inside its head or its chunk framing), bytes that break the framing after a valid
start, and (a function of the request) whatever echoes the request back, API key included.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel

from multitask.testing._http import (
    LAST_CHUNK,
    ProtocolError,
    Request,
    RequestParser,
    encode_chunk,
    response_head,
)
from multitask.testing._listener import GONE, Listener, read_request

__all__ = ["HostileServer", "Reply", "ReplySource"]


Body: TypeAlias = Iterable[bytes] | AsyncIterable[bytes]


@dataclass
class Reply:
    """What the server sends back to one request, byte for byte.

    The head is `status` and `headers` (sent as given, plus the framing header and
    `connection: close` unless `headers` has them), or `head` verbatim. The body is `body`'s
    pieces, in order; it may be endless (a generator). `framing` says how its end is marked:
    `"chunked"` (each non-empty piece is one chunk), `"length"` (a content length, counted
    from the pieces, which must then be finite) or `"close"` (no framing: the body ends when
    the connection closes). `delay` is the pause before each piece. `then` says what follows
    the last piece: `"end"` finishes the body properly and closes, `"close"` closes without
    finishing it (a chunked body then stops mid-stream), `"hang"` sends nothing more and keeps
    the connection open until the server stops. `silent` reads the request and never answers.
    `tail` is sent as it is after the last piece (a bad chunk-size line, trailers, junk),
    before what `then` says. `split`, when set, cuts everything sent (head, framing, body)
    into writes of at most that many bytes, `split_delay` seconds apart, as a network may.
    """

    status: int = 200
    headers: Sequence[tuple[str, str]] = (("content-type", "text/event-stream"),)
    body: Body = ()
    framing: Literal["chunked", "length", "close"] = "chunked"
    delay: float = 0.0
    then: Literal["end", "close", "hang"] = "end"
    head: bytes | None = None
    silent: bool = False
    tail: bytes = b""
    split: int | None = None
    split_delay: float = 0.0


ReplySource: TypeAlias = Reply | Callable[[Request], Reply | Awaitable[Reply]]
"""One reply for every request, or a function of the request (for a fresh endless body)."""


class HostileServer(Listener):
    """A local HTTP/1.1 server that answers each request with a `Reply`; one per connection.

    Use it as an async context manager, like `ScriptedModelServer`: entering listens on
    `host:port` (port 0 picks a free one), leaving closes every connection and stops every
    task. It records the requests, and counts the connections and the body bytes it sent
    (before framing), so a test can tell how much a client read before it gave up.
    """

    def __init__(
        self,
        reply: ReplySource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context)
        self._reply = reply
        self.requests: list[Request] = []
        """Every request received, in order."""
        self.connections = 0
        """Connections accepted so far."""
        self.open_connections = 0
        """Connections still open."""
        self.bytes_sent = 0
        """Body bytes handed to the sockets so far, over all responses."""

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            async with stream:
                try:
                    request = await read_request(stream, RequestParser())
                except ProtocolError:
                    return
                if request is None:
                    return
                self.requests.append(request)
                reply = self._reply(request) if callable(self._reply) else self._reply
                if inspect.isawaitable(reply):
                    reply = await reply
                await self._send(stream, reply)
        except GONE:
            pass
        finally:
            self.open_connections -= 1

    async def _send(self, raw: anyio.abc.ByteStream, reply: Reply) -> None:
        if reply.silent:
            await anyio.sleep_forever()
        stream: anyio.abc.ByteStream = (
            raw if reply.split is None else _Split(raw, reply.split, reply.split_delay)
        )
        pieces = reply.body
        if reply.framing == "length" and not isinstance(pieces, AsyncIterable):
            pieces = list(pieces)
        await stream.send(reply.head if reply.head is not None else _head(reply, pieces))
        chunked = reply.framing == "chunked"
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                await self._piece(stream, reply, piece, chunked)
        else:
            for piece in pieces:
                await self._piece(stream, reply, piece, chunked)
        if reply.tail:
            await stream.send(reply.tail)
        if reply.then == "hang":
            await anyio.sleep_forever()
        if reply.then == "end" and chunked:
            await stream.send(LAST_CHUNK)
        if reply.then == "end":
            # A lingering close: the client reads the whole response before the FIN.
            with anyio.move_on_after(1.0):
                await stream.send_eof()
                while True:
                    await stream.receive()

    async def _piece(
        self, stream: anyio.abc.ByteStream, reply: Reply, piece: bytes, chunked: bool
    ) -> None:
        if reply.delay:
            await anyio.sleep(reply.delay)
        else:
            await anyio.lowlevel.checkpoint()  # an endless body must not starve the loop
        if piece:
            await stream.send(encode_chunk(piece) if chunked else piece)
            self.bytes_sent += len(piece)


class _Split(anyio.abc.ByteStream):
    """A stream whose writes are cut into pieces of at most `size` bytes, `delay` apart."""

    def __init__(self, stream: anyio.abc.ByteStream, size: int, delay: float) -> None:
        if size < 1:
            raise ValueError(f"split must be at least 1 byte, not {size}")
        self._stream = stream
        self._size = size
        self._delay = delay

    async def send(self, item: bytes) -> None:
        for start in range(0, len(item), self._size):
            if self._delay:
                await anyio.sleep(self._delay)
            await self._stream.send(item[start : start + self._size])

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


def _head(reply: Reply, pieces: Body) -> bytes:
    headers = list(reply.headers)
    names = {name.lower() for name, _ in headers}
    if reply.framing == "chunked" and "transfer-encoding" not in names:
        headers.append(("transfer-encoding", "chunked"))
    if reply.framing == "length" and "content-length" not in names:
        if not isinstance(pieces, list):
            raise ValueError('framing="length" needs a finite body of bytes, not an async one')
        headers.append(("content-length", str(sum(len(p) for p in pieces))))
    if "connection" not in names:
        headers.append(("connection", "close"))
    return response_head(reply.status, headers)
