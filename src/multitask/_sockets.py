"""The byte pipes `StreamingTransport` reads responses from: one per event loop kind.

A streamed response is thousands of small reads. Through anyio's asyncio stream each read
pauses and resumes the transport (two selector updates) and enters a cancel scope for its
timeout; `AsyncioSocket` is an `asyncio.Protocol` that keeps reading, queues what arrives
and wakes one waiting reader, its timeout a deadline that each read moves and one timer
per connection checks. Its `deliver` goes further: it hands each read to a synchronous
sink right in the protocol's callback and wakes the waiting task only when the sink says
so (when bytes made an item), so a read that completes nothing costs no task switch.
Under trio (or anything not asyncio) `AnyioSocket` wraps anyio's stream, whose reads are
already a plain `recv`. Both raise the same things: `anyio.EndOfStream` when the peer
closed, `anyio.BrokenResourceError` (or `OSError`) when the connection broke, and
`TimeoutError` when a read waited too long.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import math
import select
import ssl
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol, cast

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.streams.tls

__all__ = ["AnyioSocket", "AsyncioSocket", "Sink", "Socket", "connect"]

#: The most one read of a socket takes (into the loop's shared buffer, or a connection's own).
_READ_SIZE: Final = 64 * 1024
_OWN_READ_SIZE: Final = 16 * 1024
#: Bytes read ahead of the reader before the socket stops reading (TCP then pushes back).
_HIGH_WATER: Final = 1 << 20


#: Takes the bytes of one read; returns True once the waiting reader should wake.
Sink = Callable[[bytes], bool]


class Socket(Protocol):
    """What the transport needs of a connection."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self, max_wait: float | None) -> bytes:
        """The next bytes; `TimeoutError` after `max_wait` seconds without any."""
        ...

    async def deliver(self, sink: Sink, max_wait: float | None) -> None:
        """Hand bytes to `sink` as they come until it returns True; raise as `receive` does
        (`max_wait` bounds each wait for bytes, not the whole call)."""
        ...

    async def aclose(self) -> None: ...

    def dead(self) -> bool:
        """Whether an idle connection was closed (or written to) by the peer meanwhile."""
        ...


async def connect(host: str, port: int, tls: ssl.SSLContext | None) -> Socket:
    """A connection to `host:port`, TLS-wrapped (verifying `host`) when `tls` is given."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio
        return await AnyioSocket.connect(host, port, tls)
    return await AsyncioSocket.connect(loop, host, port, tls)


class AnyioSocket:
    """A connection through anyio's streams (used under trio)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    @classmethod
    async def connect(cls, host: str, port: int, tls: ssl.SSLContext | None) -> AnyioSocket:
        """Connect (happy eyeballs over the host's addresses), then wrap in TLS if asked."""
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
        if tls is not None:
            try:
                stream = await anyio.streams.tls.TLSStream.wrap(
                    stream, hostname=host, ssl_context=tls, standard_compatible=False
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                raise
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self._stream.send(data)

    async def receive(self, max_wait: float | None) -> bytes:
        if max_wait is None:
            return await self._stream.receive()
        with anyio.fail_after(max_wait):
            return await self._stream.receive()

    async def deliver(self, sink: Sink, max_wait: float | None) -> None:
        while not sink(await self.receive(max_wait)):
            pass

    async def aclose(self) -> None:
        await self._stream.aclose()

    def dead(self) -> bool:
        try:
            sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            if sock.fileno() < 0:
                return True
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError, anyio.TypedAttributeLookupError):
            return True
        return bool(readable)  # an idle HTTP/1.1 connection has nothing to say: EOF or junk


class AsyncioSocket(asyncio.BufferedProtocol):
    """A connection as an asyncio protocol: reads queue up as they arrive; `receive` takes them.

    Reading pauses only when more than `_HIGH_WATER` bytes wait unread. A cancelled or timed
    out `receive` loses nothing: the bytes stay queued for the next one. The socket is read
    into one buffer per event loop, shared by every connection (asyncio fills it and hands it
    back in one synchronous step), and only the bytes read are copied out: asyncio's default
    is a fresh 256 KiB allocation per read, shrunk to fit, which fragments the heap of a
    process with hundreds of streams. (Where the loop is not a selector loop, each
    connection reads into a smaller buffer of its own.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = _read_buffer(loop)
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reader: asyncio.Future[bool] | None = None
        self._sink: Sink | None = None  # while `deliver` waits
        self._sink_context = _NO_CONTEXT  # the context of the task `deliver` waits in
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        # The waiting read's deadline, and one timer that outlives reads: a read only moves
        # the deadline (a timer per read would be created and cancelled thousands of times
        # a second); the timer, when it fires early, sets itself again for the deadline.
        self._deadline = math.inf
        self._max_wait: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._overdue = False  # the deadline passed; one more poll before the verdict

    @classmethod
    async def connect(
        cls, loop: asyncio.AbstractEventLoop, host: str, port: int, tls: ssl.SSLContext | None
    ) -> AsyncioSocket:
        """Connect (happy eyeballs over the host's addresses), TLS included when asked."""
        hostname = host if tls is not None else None
        if isinstance(loop, asyncio.BaseEventLoop) and not _is_ip_literal(host):
            # A name may have several addresses (IPv6 and IPv4): race them. asyncio's race
            # leaves its tasks behind for a moment when cancelled, so only where it can help.
            _, protocol = await loop.create_connection(
                lambda: cls(loop),
                host,
                port,
                ssl=tls,
                server_hostname=hostname,
                happy_eyeballs_delay=0.25,
            )
        else:  # one address, or a loop without asyncio's keyword (uvloop's): no race
            _, protocol = await loop.create_connection(
                lambda: cls(loop), host, port, ssl=tls, server_hostname=hostname
            )
        return protocol

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's own, or one of a loop that does not subclass its
        # classes (uvloop's), so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self._buffer[:nbytes].tobytes()
        sink = self._sink
        if sink is not None:
            max_wait = self._max_wait
            if max_wait is not None:
                self._deadline = self._loop.time() + max_wait
                self._overdue = False
            # In the waiting task's context variables, not those of the task that opened
            # the connection (the socket's callbacks run in that one): the sink may run
            # user code (validators) that reads them.
            if self._sink_context.run(sink, data):
                self._sink = None  # what comes next queues up until the next `deliver`
                reader = self._reader
                if reader is not None and not reader.done():
                    reader.set_result(True)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport: a response ends with the peer's FIN at the latest

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake()
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(False)

    def _wait_at_most(self, max_wait: float | None) -> None:
        """Set the waiting read's deadline; arm the timer if it would fire too late."""
        self._max_wait = max_wait
        self._overdue = False
        if max_wait is None:
            self._deadline = math.inf
            return
        deadline = self._deadline = self._loop.time() + max_wait
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire, context=_NO_CONTEXT)

    def _expire(self) -> None:
        self._timer = None
        reader = self._reader
        if reader is None or reader.done() or self._deadline == math.inf:
            return  # no read waits with a deadline: the next one sets the timer again
        now = self._loop.time()
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire, context=_NO_CONTEXT)
        elif not self._overdue:
            # Past the deadline, but the loop may have been held up (a long collection, a
            # starved process) while the bytes came: a loop that runs its timers before it
            # polls (uvloop, as libuv orders a turn) would time out a read whose data is
            # already here. One poll first, then the verdict.
            self._overdue = True
            self._timer = self._loop.call_at(now + _GRACE, self._expire, context=_NO_CONTEXT)
        else:
            reader.set_exception(TimeoutError())

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # -- Socket --------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise anyio.BrokenResourceError("the connection is closed")
        transport.write(data)
        if self._writable is not None:
            await self._writable
            if transport.is_closing():
                raise anyio.BrokenResourceError("the connection closed while writing")

    async def receive(self, max_wait: float | None) -> bytes:
        chunks = self._chunks
        if chunks:
            await anyio.lowlevel.checkpoint()  # data is waiting: still let others run
        else:
            if self._eof:
                if self._error is not None:
                    raise anyio.BrokenResourceError from self._error
                raise anyio.EndOfStream
            reader = self._reader = self._loop.create_future()
            self._wait_at_most(max_wait)
            try:
                await reader
            finally:
                self._reader = None
            if not chunks:
                if self._error is not None:
                    raise anyio.BrokenResourceError from self._error
                raise anyio.EndOfStream
        return self._take_chunks()

    async def deliver(self, sink: Sink, max_wait: float | None) -> None:
        if self._chunks and sink(self._take_chunks()):  # what came while nobody waited
            await anyio.lowlevel.checkpoint()
            return
        if self._eof:
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            raise anyio.EndOfStream
        reader = self._reader = self._loop.create_future()
        self._sink = sink
        self._sink_context = contextvars.copy_context()
        self._wait_at_most(max_wait)
        try:
            woken_by_sink = await reader
        finally:
            self._reader = None
            self._sink = None
            self._sink_context = _NO_CONTEXT
        if not woken_by_sink:
            if self._error is not None:
                raise anyio.BrokenResourceError from self._error
            raise anyio.EndOfStream

    def _take_chunks(self) -> bytes:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    async def aclose(self) -> None:
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()
        await anyio.lowlevel.checkpoint()

    def dead(self) -> bool:
        return self._eof or bool(self._chunks) or self._transport is None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


#: How long past its deadline a read waits for the poll that may bring its bytes (uvloop's
#: timers count whole milliseconds).
_GRACE = 0.001

#: The context the read timers run in: `_expire` reads no context variables, and this spares
#: a copy of the caller's context per timer.
_NO_CONTEXT: Final = contextvars.Context()

_READ_BUFFERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def _read_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    """The buffer a connection reads into: the loop's one buffer where reads fill it and hand
    it back in one synchronous step (selector loops), else one of the connection's own (a
    proactor loop lends the buffer to the OS until the read completes)."""
    if not isinstance(loop, asyncio.SelectorEventLoop):
        return memoryview(bytearray(_OWN_READ_SIZE))
    buffer = _READ_BUFFERS.get(loop)
    if buffer is None:
        buffer = _READ_BUFFERS[loop] = memoryview(bytearray(_READ_SIZE))
    return buffer
