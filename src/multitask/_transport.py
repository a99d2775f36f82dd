"""The HTTP/1.1 transport multitask's own clients use under httpx: the I/O shell of `_http11`.

httpx's default transport (httpcore and h11) is general; a streamed extraction is one request
and then thousands of small reads, and at that size the general path costs several times
what the read does (see the benchmarks). `StreamingTransport` keeps httpx as the interface
(requests, responses, timeouts, exceptions, event hooks) and does the HTTP/1.1 itself:
connections from anyio (TCP, TLS with httpx's certificate settings), a keep-alive pool,
and `_http11.ResponseReader` for the framing. It speaks HTTP/1.1 only and connects directly:
the `Client` falls back to httpx's own transport when a proxy is configured.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Final, TypeVar

import anyio
import httpx2

from ._http11 import END, Event, Head, ProtocolError, ResponseReader, render_request_head
from ._sockets import Socket, connect

__all__ = ["ResponseBody", "StreamingTransport", "response_body"]

T = TypeVar("T")

#: Connection events at DEBUG (never headers or bodies: they carry the API key and the text).
_log = logging.getLogger("multitask.transport")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: The response extension that holds a `ResponseBody` (httpx wraps the stream itself).
_BODY: Final = "multitask.body"

Origin = tuple[str, str, int]


class _Connection:
    """One open connection: its socket, its origin, and whether it has carried a response."""

    __slots__ = ("idle_since", "origin", "reused", "socket")

    def __init__(self, socket: Socket, origin: Origin) -> None:
        self.socket = socket
        self.origin = origin
        self.reused = False
        self.idle_since = 0.0


class StreamingTransport(httpx2.AsyncBaseTransport):
    """An HTTP/1.1 transport for httpx, made for long streamed responses read in small pieces.

    `max_connections` bounds the open connections (a request waits for one, up to the pool
    timeout); `max_keepalive_connections` bounds the idle ones kept for reuse, each for at
    most `keepalive_expiry` seconds. Timeouts come from the request (httpx's `timeout=`).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1000,
        max_keepalive_connections: int = 100,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: list[_Connection] = []  # oldest first
        self._open = 0
        self._freed: anyio.Event | None = None  # set when a connection slot frees up
        self._closed = False

    def __repr__(self) -> str:
        return f"<StreamingTransport open={self._open} idle={len(self._idle)}>"

    @property
    def connections(self) -> int:
        """Open connections: carrying a response, or idle in the pool."""
        return self._open

    @property
    def idle_connections(self) -> int:
        """Open connections waiting in the pool for the next request."""
        return len(self._idle)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings of `https` connections (httpx's defaults unless one was given)."""
        if self._ssl_context is None:
            self._ssl_context = httpx2.create_ssl_context()
        return self._ssl_context

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` and return its response, with the body still to be read."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin: Origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts = request.extensions.get("timeout", {})
        body = await _request_body(request)
        headers = request.headers.raw
        if not any(k.lower() == b"content-length" for k, _ in headers):
            # A streamed body was read whole: send it with its length, not chunked.
            headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
            if body or request.method not in ("GET", "HEAD"):
                headers.append((b"Content-Length", str(len(body)).encode()))
        try:
            head_bytes = render_request_head(request.method.encode(), url.raw_path, headers)
        except ValueError as exc:
            raise httpx2.LocalProtocolError(str(exc), request=request) from exc
        message = head_bytes + body
        while True:
            connection = await self._acquire(origin, request, timeouts)
            reader = ResponseReader(request.method)
            try:
                events = await self._exchange(connection, message, reader, request, timeouts)
            except _Stale:
                _log.debug("%s:%d closed a kept-alive connection: sending again", *origin[1:])
                await self._discard(connection)
                continue  # the server had closed a kept-alive connection: use a new one
            except BaseException:
                await self._discard(connection)
                raise
            head = events[0]
            assert isinstance(head, Head)
            body_stream = ResponseBody(self, connection, reader, events[1:], request, timeouts)
            return httpx2.Response(
                head.status,
                headers=head.headers,
                stream=body_stream,
                extensions={
                    "http_version": b"HTTP/" + head.http_version,
                    "reason_phrase": head.reason,
                    _BODY: body_stream,
                },
                request=request,
            )

    async def aclose(self) -> None:
        """Close the idle connections; the transport takes no more requests."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._discard(connection)

    # -- connections ---------------------------------------------------------------------------

    async def _take_idle(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to `origin` that is still good, if any."""
        while True:
            idle = self._idle
            for i in range(len(idle) - 1, -1, -1):
                if idle[i].origin == origin:
                    connection = idle.pop(i)
                    break
            else:
                return None
            # `>=`: uvloop's clock ticks in milliseconds, so an age of 0.0 is common and a
            # zero expiry must still mean "never reuse".
            expired = anyio.current_time() - connection.idle_since >= self._keepalive_expiry
            if not expired and not connection.socket.dead():
                _log.debug("reusing a connection to %s:%d", *origin[1:])
                return connection
            await self._discard(connection)  # others may change the pool meanwhile: look again

    async def _connect(
        self, origin: Origin, request: httpx2.Request, timeouts: dict[str, float | None]
    ) -> _Connection:
        scheme, host, port = origin
        tls = self.ssl_context if scheme == "https" else None
        try:
            with anyio.fail_after(timeouts.get("connect")):
                socket = await connect(host, port, tls)
        except TimeoutError as exc:
            raise httpx2.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from exc
        except (OSError, anyio.BrokenResourceError) as exc:
            raise httpx2.ConnectError(
                f"cannot connect to {host}:{port}: {exc}", request=request
            ) from exc
        _log.debug("connected to %s:%d%s", host, port, " with TLS" if tls else "")
        return _Connection(socket, origin)

    async def _acquire(
        self, origin: Origin, request: httpx2.Request, timeouts: dict[str, float | None]
    ) -> _Connection:
        """An idle connection to `origin`, or a new one once there is room for it."""
        pool_timeout = timeouts.get("pool")
        try:
            with anyio.fail_after(pool_timeout):
                while True:
                    connection = await self._take_idle(origin)
                    if connection is not None:
                        return connection
                    if self._open < self._max_connections:
                        break
                    if self._idle:  # full, but some are idle to other origins: make room
                        await self._discard(self._idle.pop(0))
                        continue
                    if self._freed is None:
                        self._freed = anyio.Event()
                    await self._freed.wait()
        except TimeoutError as exc:
            raise httpx2.PoolTimeout(
                f"no connection free among {self._max_connections} within {pool_timeout} s",
                request=request,
            ) from exc
        self._open += 1
        try:
            return await self._connect(origin, request, timeouts)
        except BaseException:
            self._release_slot()
            raise

    def _wake(self) -> None:
        """Tell requests waiting for a connection that one was freed or went idle."""
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()

    def _release_slot(self) -> None:
        self._open -= 1
        self._wake()

    async def _exchange(
        self,
        connection: _Connection,
        message: bytes,
        reader: ResponseReader,
        request: httpx2.Request,
        timeouts: dict[str, float | None],
    ) -> list[Event]:
        """Write the request; read until the response head is in. Return the head's events."""
        socket = connection.socket
        try:
            with anyio.fail_after(timeouts.get("write")):
                await socket.send(message)
        except TimeoutError as exc:
            raise httpx2.WriteTimeout("writing the request timed out", request=request) from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            if connection.reused:
                raise _Stale from exc
            raise httpx2.WriteError(
                f"writing the request failed: {exc!r}", request=request
            ) from exc
        events: list[Event] = []
        read_timeout = timeouts.get("read")
        while reader.head is None:
            try:
                events += await _read(connection, reader, request, read_timeout)
            except (httpx2.ReadError, httpx2.RemoteProtocolError) as exc:
                if connection.reused and not reader.started:
                    raise _Stale from exc  # not a byte of the response: the server had closed
                raise
        return events

    async def _done(self, connection: _Connection, reusable: bool) -> None:
        """A response was read to its end: pool its connection, or close it."""
        if not reusable or self._closed:
            await self._discard(connection)
            return
        connection.reused = True
        connection.idle_since = anyio.current_time()
        self._idle.append(connection)
        if len(self._idle) > self._max_keepalive:
            await self._discard(self._idle.pop(0))
        self._wake()

    async def _discard(self, connection: _Connection) -> None:
        """Close a connection (even under cancellation) and free its slot."""
        with anyio.CancelScope(shield=True):
            with suppress(OSError, anyio.BrokenResourceError):
                await connection.socket.aclose()
        self._release_slot()


class _Stale(Exception):
    """A kept-alive connection turned out closed before any of the response came."""


class ResponseBody(httpx2.AsyncByteStream):
    """A response body read straight off its connection; the connection is pooled at its end.

    httpx2 iterates it as any body. `read_into` is the fast way in: it feeds the bytes to a
    parser in the socket's callback as they arrive and returns only once the parser made
    something, so a read that completes no item costs no task switch.

    It is its own iterator rather than an async generator: an abandoned generator is closed
    later by the event loop's finalizer (a task of its own under trio); this needs no closing.
    """

    def __init__(
        self,
        transport: StreamingTransport,
        connection: _Connection,
        reader: ResponseReader,
        events: list[Event],
        request: httpx2.Request,
        timeouts: dict[str, float | None],
    ) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        self._reader = reader
        self._request = request
        self._read_timeout = timeouts.get("read")
        self._pending: deque[Event] = deque(events)  # framed, not yet handed on
        self._ended = False  # END was handed on: the body is complete
        self._iterating = False
        # `read_into`'s parser, what it made, and what went wrong (raised after what it made)
        self._feed: Callable[[bytes], list[Any]] = _no_parser
        self._out: list[Any] = []
        self._error: Exception | None = None
        self._made = False  # the last `read_into` returned something: `parse` may hold more

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterating:
            raise httpx2.StreamConsumed()
        if self._connection is None and not self._ended:
            raise httpx2.StreamClosed()
        self._iterating = True
        return _Chunks(self)

    async def next_chunk(self) -> bytes:
        """The next piece of the body (`StopAsyncIteration` at its end)."""
        pending = self._pending
        while not pending:
            if self._ended:
                raise StopAsyncIteration
            connection = self._connection
            if connection is None:
                raise httpx2.StreamClosed()
            events = await _read(connection, self._reader, self._request, self._read_timeout)
            if len(events) == 1 and type(events[0]) is bytes:  # the common case
                return events[0]
            pending.extend(events)
        event = pending.popleft()
        if event is END:
            self._ended = True
            await self._finish()
            raise StopAsyncIteration
        assert isinstance(event, bytes)
        return event

    async def read_into(self, parse: Callable[[bytes], list[T]]) -> list[T]:
        """Feed the body to `parse` until it returns something, and return that; `[]` once
        the body has ended. What `parse` raises is raised here (after what it returned
        before it); a broken connection or a timeout raise as httpx's errors.

        After a call that returned something, the next one first calls `parse(b"")`, which
        must return `[]` or raise: a parser that held an error back to hand out what came
        before it (as `Pipeline` does) raises it then, not once more bytes come."""
        self._feed = parse
        try:
            if self._made:
                self._made = False
                if not self._pending and self._error is None:
                    try:
                        self._out = parse(b"")
                    except Exception as exc:  # raised below, as `_drain` has them raised
                        self._error = exc
            while not self._drain():
                connection = self._connection
                if connection is None:
                    raise httpx2.StreamClosed()
                try:
                    await connection.socket.deliver(self._sink, self._read_timeout)
                except anyio.EndOfStream:
                    try:
                        self._pending.extend(self._reader.receive_eof())
                    except ProtocolError as exc:
                        self._error = exc
                except _READ_ERRORS as exc:
                    raise _read_error(exc, self._request, self._read_timeout) from exc
        finally:
            self._feed = _no_parser
        out = self._out
        if out:
            self._out = []
            self._made = True
            return out
        error = self._error
        if error is not None:
            if isinstance(error, ProtocolError):
                raise httpx2.RemoteProtocolError(str(error), request=self._request) from error
            raise error
        await self._finish()
        return []

    def _sink(self, data: bytes) -> bool:
        """The socket's sink while `read_into` waits: frame, parse, and wake it if need be."""
        try:
            self._pending.extend(self._reader.receive(data))
        except ProtocolError as exc:
            self._error = exc
            return True
        return self._drain()

    def _drain(self) -> bool:
        """Parse the framed bytes waiting; True once there is something to return or raise."""
        pending = self._pending
        while pending and not self._out and self._error is None:
            event = pending.popleft()
            if event is END:
                self._ended = True
                return True
            assert isinstance(event, bytes)
            try:
                self._out = self._feed(event)
            except Exception as exc:  # the parser's own errors: raised in `read_into`
                self._error = exc
        if not pending and self._error is None:
            self._error = self._reader.error  # broken framing after those bytes: no waiting
        return bool(self._out) or self._error is not None or self._ended

    async def _finish(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._transport._done(connection, self._reader.reusable)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._ended or list(self._pending) == [END]:  # read to its end: may be reused
            await self._transport._done(connection, self._reader.reusable)
        else:  # closed before its end: the connection cannot be reused
            await self._transport._discard(connection)


class _Chunks:
    """The one iteration of a `ResponseBody` (httpx2 calls `__aiter__` on what it gets too)."""

    __slots__ = ("_body",)

    def __init__(self, body: ResponseBody) -> None:
        self._body = body

    def __aiter__(self) -> _Chunks:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._body.next_chunk()


def response_body(response: httpx2.Response) -> ResponseBody | None:
    """The body of a response `StreamingTransport` made, or None for any other response."""
    body = response.extensions.get(_BODY)
    return body if isinstance(body, ResponseBody) else None


def _no_parser(data: bytes) -> list[Any]:
    raise RuntimeError("a response body was fed outside `read_into`")


_READ_ERRORS: Final = (
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ProtocolError,
)


def _read_error(
    exc: BaseException, request: httpx2.Request, read_timeout: float | None
) -> Exception:
    """A failed read as httpx says it."""
    if isinstance(exc, TimeoutError):
        return httpx2.ReadTimeout(f"no data from the server for {read_timeout} s", request=request)
    if isinstance(exc, ProtocolError):
        return httpx2.RemoteProtocolError(str(exc), request=request)
    return httpx2.ReadError(f"the connection broke: {exc!r}", request=request)


async def _read(
    connection: _Connection,
    reader: ResponseReader,
    request: httpx2.Request,
    read_timeout: float | None,
) -> list[Event]:
    """One read off the connection, through its response reader; failures as httpx's.

    A framing error found after the bytes handed out last is raised without reading."""
    if reader.error is not None:
        raise httpx2.RemoteProtocolError(str(reader.error), request=request) from reader.error
    try:
        return reader.receive(await connection.socket.receive(read_timeout))
    except anyio.EndOfStream:
        try:
            return reader.receive_eof()
        except ProtocolError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
    except _READ_ERRORS as exc:
        raise _read_error(exc, request, read_timeout) from exc


async def _request_body(request: httpx2.Request) -> bytes:
    """The whole request body (multitask's requests are small JSON documents)."""
    stream = request.stream
    if isinstance(stream, httpx2.ByteStream):
        return b"".join(stream)
    assert isinstance(stream, httpx2.AsyncByteStream)
    return b"".join([part async for part in stream])
