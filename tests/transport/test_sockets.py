"""The transport's sockets over real loopback connections, on asyncio and trio.

`connect` gives the asyncio protocol socket under asyncio and anyio's stream under trio;
both must read the same bytes, time out, report the peer's close and a reset, and lose
nothing to a cancelled or timed-out read.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from multitask._sockets import AnyioSocket, AsyncioSocket, Socket, _read_buffer, connect

pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Socket]]]:
    """Start a loopback listener running `handler` per connection; return a connected socket."""
    async with anyio.create_task_group() as tg:
        sockets: list[Socket] = []

        async def start(handler: Handler) -> Socket:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            port = listener.extra(anyio.abc.SocketAttribute.local_port)

            async def run() -> None:
                async with listener:
                    await listener.serve(handler)

            tg.start_soon(run)
            sock = await connect("127.0.0.1", port, None)
            sockets.append(sock)
            return sock

        yield start
        for sock in sockets:
            await sock.aclose()
        tg.cancel_scope.cancel()


async def read_all(sock: Socket) -> bytes:
    out = b""
    while True:
        try:
            out += await sock.receive(5.0)
        except anyio.EndOfStream:
            return out


async def read_until_error(sock: Socket) -> tuple[bytes, BaseException]:
    got = b""
    while True:
        try:
            got += await sock.receive(5.0)
        except Exception as exc:  # the test looks at which one
            return got, exc


async def test_the_socket_kind_follows_the_event_loop(
    serve: Callable[[Handler], Awaitable[Socket]], anyio_backend: str
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    sock = await serve(handler)
    assert isinstance(sock, AsyncioSocket if anyio_backend != "trio" else AnyioSocket)


async def test_bytes_in_order_then_end_of_stream(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    pieces = [bytes([i]) * (i * 37 + 1) for i in range(50)]

    async def handler(stream: anyio.abc.SocketStream) -> None:
        request = await stream.receive()
        assert request == b"hello"
        for piece in pieces:
            await stream.send(piece)
            await anyio.lowlevel.checkpoint()
        await stream.aclose()

    sock = await serve(handler)
    await sock.send(b"hello")
    assert await read_all(sock) == b"".join(pieces)
    with pytest.raises(anyio.EndOfStream):  # and again: the end stays the end
        await sock.receive(1.0)
    assert sock.dead()


async def test_a_read_times_out_and_loses_nothing(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    go = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"first")
        await go.wait()
        await stream.send(b"second")
        await stream.aclose()

    sock = await serve(handler)
    assert await sock.receive(5.0) == b"first"
    with pytest.raises(TimeoutError):
        await sock.receive(0.05)
    go.set()
    assert await read_all(sock) == b"second"


async def test_a_read_whose_bytes_came_while_the_loop_was_held_up_does_not_time_out() -> None:
    """The loop is held up past a read's deadline, in another connection's read callback (a
    long collection in a validator, say), while the read's bytes arrive: the read gets them.
    uvloop runs its timers before it polls, so without a poll between the deadline and the
    verdict it timed the read out."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        busy = await connect("127.0.0.1", port, None)
        busy_peer, _ = listener.accept()
        waiting = await connect("127.0.0.1", port, None)
        waiting_peer, _ = listener.accept()
        with busy_peer, waiting_peer:

            def held_up(data: bytes) -> bool:
                waiting_peer.sendall(b"hello")
                time.sleep(0.5)  # the loop blocked: the other read's 0.2 s deadline passes
                return True

            async def send_soon() -> None:
                await anyio.sleep(0.05)
                busy_peer.sendall(b"go")

            async with anyio.create_task_group() as tg:
                tg.start_soon(busy.deliver, held_up, 5.0)
                tg.start_soon(send_soon)
                assert await waiting.receive(0.2) == b"hello"
            with pytest.raises(TimeoutError):  # and a read with nothing coming still ends
                await waiting.receive(0.05)
            await busy.aclose()
            await waiting.aclose()


async def test_a_cancelled_read_loses_nothing(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    go = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await go.wait()
        await stream.send(b"after the cancel")
        await stream.aclose()

    sock = await serve(handler)
    with anyio.move_on_after(0.05) as scope:
        await sock.receive(None)
    assert scope.cancelled_caught
    go.set()
    assert await read_all(sock) == b"after the cancel"


async def test_a_reset_is_a_broken_connection(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"partial")
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.sleep(0.05)
        await stream.aclose()  # with SO_LINGER 0: an RST, not a FIN

    sock = await serve(handler)
    got, error = await read_until_error(sock)
    assert isinstance(error, (anyio.BrokenResourceError, OSError)), repr(error)
    assert got in (b"", b"partial")  # the RST may overtake unread bytes; never garbled


async def test_a_peer_that_sends_faster_than_we_read_is_held_back(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    """8 MiB sent at once while nobody reads: the socket stops reading past its high-water
    mark and resumes as the reader catches up; every byte arrives, in order."""
    block = bytes(range(256)) * 4096  # 1 MiB

    async def handler(stream: anyio.abc.SocketStream) -> None:
        for _ in range(8):
            await stream.send(block)
        await stream.aclose()

    sock = await serve(handler)
    await anyio.sleep(0.2)  # let the sender run ahead
    data = await read_all(sock)
    assert len(data) == 8 * len(block)
    assert data == block * 8


async def test_an_idle_connection_knows_the_peer_went(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    sock = await serve(handler)
    for _ in range(500):
        if sock.dead():
            break
        await anyio.sleep(0.01)
    assert sock.dead()


async def test_a_live_idle_connection_is_not_dead(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await anyio.sleep_forever()

    sock = await serve(handler)
    await anyio.sleep(0.05)
    assert not sock.dead()


async def test_sending_on_a_closed_socket_is_an_error(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await anyio.sleep_forever()

    sock = await serve(handler)
    await sock.aclose()
    with pytest.raises((anyio.BrokenResourceError, anyio.ClosedResourceError)):
        await sock.send(b"x")


def test_connections_share_a_read_buffer_only_on_selector_loops() -> None:
    """A selector loop fills a buffer and hands it back in one step, so its connections share
    one; a proactor loop lends the buffer to the OS until the read completes, so each
    connection of any other loop gets its own."""
    selector = asyncio.SelectorEventLoop()
    try:
        assert _read_buffer(selector) is _read_buffer(selector)
        other = asyncio.SelectorEventLoop()
        try:
            assert _read_buffer(other) is not _read_buffer(selector)
        finally:
            other.close()
    finally:
        selector.close()

    class NotASelectorLoop(asyncio.AbstractEventLoop):
        pass

    loop = NotASelectorLoop()
    first, second = _read_buffer(loop), _read_buffer(loop)
    assert first is not second
    assert first.obj is not second.obj


async def test_deadlines_follow_each_read(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    """Each read has its own deadline: a read without one is not cut short by an earlier
    read's, and a short one times out on time even after a long one."""
    go = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"one")
        await go.wait()
        await stream.send(b"two")
        await anyio.sleep_forever()

    sock = await serve(handler)
    assert await sock.receive(0.05) == b"one"

    async def release() -> None:
        await anyio.sleep(0.2)  # well past the first read's 50 ms
        go.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release)
        assert await sock.receive(None) == b"two"
    assert await read_until_error_within(sock, 10.0, 0.05) == "timeout"


async def read_until_error_within(sock: Socket, long: float, short: float) -> str:
    """A read with a long deadline that is cancelled, then one with a short deadline."""
    with anyio.move_on_after(0.02):
        await sock.receive(long)
    with anyio.move_on_after(5):  # the socket's own deadline must end the read, not this
        try:
            await sock.receive(short)
        except TimeoutError:
            return "timeout"
        return "data"
    return "hung"


# -- deliver: bytes handed to a sink as they come ------------------------------------------


class Collect:
    """A sink that keeps what it gets and asks to be woken once it has seen `marker`."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.got = b""
        self.calls = 0

    def __call__(self, data: bytes) -> bool:
        self.calls += 1
        self.got += data
        return self.marker in self.got


async def test_deliver_returns_once_the_sink_asks_and_keeps_the_rest(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    """Reads go to the sink until it says so; what comes after waits for the next reader."""
    pieces = [b"a" * (i + 1) for i in range(20)]
    go = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        for piece in pieces:
            await stream.send(piece)
            await anyio.sleep(0.002)
        await stream.send(b"!")
        await go.wait()
        await stream.send(b"after")
        await stream.aclose()

    sock = await serve(handler)
    sink = Collect(b"!")
    await sock.deliver(sink, 5.0)
    assert sink.got == b"".join(pieces) + b"!"
    assert sink.calls > 1  # each read went to the sink, the reader woke once
    go.set()
    assert await read_all(sock) == b"after"


async def test_deliver_first_hands_over_what_came_while_nobody_waited(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"early!")
        await anyio.sleep_forever()

    sock = await serve(handler)
    await anyio.sleep(0.1)  # the bytes are queued by now
    sink = Collect(b"!")
    with anyio.fail_after(5):
        await sock.deliver(sink, 5.0)
    assert sink.got == b"early!"


async def test_deliver_times_out_between_reads_not_over_the_whole_call(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    """`max_wait` bounds each silence: a trickle that lasts longer than it does not time out;
    a silence longer than it does."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        for _ in range(10):
            await stream.send(b".")
            await anyio.sleep(0.03)
        await stream.send(b"!")
        await anyio.sleep_forever()

    sock = await serve(handler)
    sink = Collect(b"!")
    started = anyio.current_time()
    await sock.deliver(sink, 0.15)
    assert anyio.current_time() - started >= 0.25  # longer than max_wait, in all
    assert sink.got == b"." * 10 + b"!"
    with pytest.raises(TimeoutError):
        await sock.deliver(Collect(b"!"), 0.05)


async def test_deliver_reports_the_end_of_the_stream(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"abc")
        await stream.aclose()

    sock = await serve(handler)
    sink = Collect(b"!")
    with pytest.raises(anyio.EndOfStream):
        await sock.deliver(sink, 5.0)
    assert sink.got == b"abc"
    with pytest.raises(anyio.EndOfStream):
        await sock.deliver(sink, 5.0)


async def test_a_cancelled_deliver_loses_nothing(
    serve: Callable[[Handler], Awaitable[Socket]],
) -> None:
    """The sink is let go with the cancelled call: later bytes wait for the next reader."""
    go = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.send(b"before")
        await go.wait()
        await stream.send(b"after the cancel")
        await stream.aclose()

    sock = await serve(handler)
    sink = Collect(b"!")
    with anyio.move_on_after(0.1) as scope:
        await sock.deliver(sink, None)
    assert scope.cancelled_caught
    assert sink.got == b"before"
    go.set()
    assert await read_all(sock) == b"after the cancel"
