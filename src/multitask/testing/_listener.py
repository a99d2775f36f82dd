"""What the test servers share: a loopback TCP listener whose connections live in its scope."""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSListener

from multitask.testing._http import CONTINUE, Request, RequestParser

__all__ = ["GONE", "Listener", "read_request"]

#: What a read or a write raises once the peer went away.
GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)

_Self = TypeVar("_Self", bound="Listener")


class Listener:
    """An async context manager that listens on `host:port` (port 0 picks a free one).

    Entering starts serving in a task group the listener owns, one `_connection` task per
    connection; leaving cancels it, so no task outlives the block. Subclasses define
    `_connection`. With `ssl_context` (a server-side context) it speaks HTTPS.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._tg is None:
            raise RuntimeError("the server is not running; use `async with server:`")
        return self._port

    @property
    def url(self) -> str:
        """`http://HOST:PORT` (`https` with TLS); add the path a client expects (`/v1`...)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Self) -> _Self:
        if self._tg is not None:
            raise RuntimeError("the server is already running")
        async with AsyncExitStack() as stack:
            tcp = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
            await stack.enter_async_context(tcp)
            self._port = int(tcp.extra(SocketAttribute.local_port))
            listener: anyio.abc.Listener[anyio.abc.ByteStream] = tcp
            if self._ssl_context is not None:
                listener = TLSListener(tcp, self._ssl_context, standard_compatible=False)
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(listener.serve, self._connection, tg)
            self._tg = tg
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, tg = self._stack, self._tg
        if stack is None or tg is None:
            return
        tg.cancel_scope.cancel()
        try:
            # The body's own exception is not handed to the task group: it would come out
            # wrapped in an ExceptionGroup. It propagates unchanged once this returns.
            await stack.aclose()
        finally:
            self._stack = self._tg = None


async def read_request(stream: anyio.abc.ByteStream, parser: RequestParser) -> Request | None:
    """The next whole request on a connection (answering `Expect: 100-continue`), or None if
    the client went away first. A malformed request raises the parser's `ProtocolError`."""
    while True:
        request = parser.next_request()
        if request is not None:
            return request
        if parser.take_continue():
            await stream.send(CONTINUE)
        try:
            data = await stream.receive()
        except GONE:
            return None
        parser.feed(data)
