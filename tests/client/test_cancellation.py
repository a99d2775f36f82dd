"""Cancellation at every await point, on asyncio and trio, over real sockets.

The scripted server runs in a thread of its own (a blocking portal), so the test's event loop
holds only the client's tasks and counting them means something. After each cancelled
extraction:

* the server saw the response through or saw the client go, for every request it got;
* the client's connection pool holds no connection in use and no waiting request;
* the event loop has exactly the tasks it had before;
* at the end, once the client is closed, the process has the file descriptors it had before.

`CountingTransport` wraps the client's transport (`StreamingTransport`) and counts the await
points of the client's HTTP traffic (sending, each read of the body, closing); cancelling a
scope at the k-th one, for every k, cancels the extraction at each of them in turn,
deterministically. A sweep of tiny timeouts covers the awaits in between (the retry sleep,
the rate limiter, anyio's own).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx2
import pytest
from anyio.from_thread import BlockingPortal
from pydantic import BaseModel

import multitask
from multitask.lowlevel import StreamingTransport
from multitask.testing import RecordedRequest, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

KEY = "sk-cancel-test-0123456789"


class User(BaseModel):
    name: str
    age: int


USERS: list[dict[str, Any]] = [{"name": f"user{i}", "age": 20 + i} for i in range(4)]
EXPECTED = [User(**u) for u in USERS]
Many = AbstractAsyncContextManager[multitask.Results[User]]


# -- a scripted server in a thread of its own ---------------------------------------------------


@dataclass
class Served:
    """The scripted server, running on another thread's event loop."""

    server: ScriptedModelServer
    portal: BlockingPortal
    seen: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.server.requests)


def _last_text(request: RecordedRequest) -> str:
    messages = request.body.get("messages") if isinstance(request.body, dict) else None
    return str(messages[-1]["content"]) if messages else ""


@pytest.fixture
def served() -> Iterator[Served]:
    """Each document's first request gets a 503 (a retry) when its text starts with "retry";
    the others stream `USERS` four characters at a time, two hundred deltas a second."""
    box: list[Served] = []

    def script(request: RecordedRequest) -> Script:
        text = _last_text(request)
        seen = box[0].seen
        seen[text] = seen.get(text, 0) + 1
        if text.startswith("retry") and seen[text] == 1:
            return Script(status=503, retry_after=0.02)
        return Script(items=USERS, chunk_size=8, tokens_per_second=400)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        box.append(Served(server, portal))
        yield box[0]


# -- counting await points -----------------------------------------------------------------------


class Points:
    """The await points of the client's HTTP traffic; cancels `scope` at point `cancel_at`."""

    def __init__(self) -> None:
        self.count = 0
        self.cancel_at = 0
        self.scope: anyio.CancelScope | None = None
        self.trace: list[str] = []

    def arm(self, scope: anyio.CancelScope | None, cancel_at: int) -> None:
        self.count, self.cancel_at, self.scope, self.trace = 0, cancel_at, scope, []

    async def point(self, where: str) -> None:
        self.count += 1
        self.trace.append(where)
        if self.count == self.cancel_at and self.scope is not None:
            self.scope.cancel()
        await anyio.lowlevel.checkpoint()  # raises here once the scope is cancelled


class CountingStream(httpx2.AsyncByteStream):
    """A response body whose every read and whose close is an await point."""

    def __init__(self, inner: httpx2.AsyncByteStream, points: Points) -> None:
        self._inner = inner
        self._points = points
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:  # an iterator, not a generator to finalize
        if self._chunks is None:  # httpx2 asks for the iterator, then iterates what it got
            self._chunks = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._chunks is not None
        await self._points.point("read")
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._points.point("close")
        finally:
            await self._inner.aclose()  # under cancellation too: the transport shields its close


class CountingTransport(httpx2.AsyncBaseTransport):
    """The client's transport, with an await point before each request and after its head."""

    def __init__(self, points: Points) -> None:
        self.inner = StreamingTransport()
        self._points = points

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await self._points.point("send")
        response = await self.inner.handle_async_request(request)
        try:
            await self._points.point("head")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=CountingStream(response.stream, self._points),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- what must hold after each cancellation --------------------------------------------------


def open_fds() -> int | None:
    """Open file descriptors, less those on /dev/null: libuv (uvloop) opens one per loop at
    its first accept, its reserve against running out of descriptors."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: not Linux
        return None
    count = 0
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "/dev/null":
                count += 1
        except OSError:  # closed meanwhile, or listdir's own
            pass
    return count


def tasks_now(backend: str) -> int:
    """The tasks alive on the current event loop."""
    if backend != "trio":
        return len(asyncio.all_tasks())
    import trio

    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None
    todo = [root]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def describe_tasks(backend: str) -> list[str]:
    if backend != "trio":
        return [repr(t) for t in asyncio.all_tasks()]
    return []


def transport_of(http: httpx2.AsyncClient) -> Any:
    transport: Any = http._transport
    return getattr(transport, "inner", transport)


def pool_in_use(http: httpx2.AsyncClient) -> list[str]:
    """What the pool still uses: connections neither idle nor closed, and waiting requests."""
    transport = transport_of(http)
    if isinstance(transport, StreamingTransport):
        busy = transport.connections - transport.idle_connections
        return [f"{busy} connection(s) busy: {transport!r}"] if busy else []
    pool = transport._pool
    busy = [repr(c) for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return busy + [repr(r) for r in pool._requests]


def pool_open(http: httpx2.AsyncClient) -> int:
    """How many connections the client's pool has open."""
    transport = transport_of(http)
    if isinstance(transport, StreamingTransport):
        return int(transport.connections)
    return len(transport._pool.connections)


async def eventually(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait until `check()` holds, polling (the server is on another thread's loop); fail,
    not hang, after `seconds`."""
    for _ in range(int(seconds / 0.005)):
        if check():
            return
        await anyio.sleep(0.005)
    assert check(), what


async def assert_nothing_left(
    served: Served, http: httpx2.AsyncClient, backend: str, tasks: int, label: str
) -> None:
    await eventually(
        lambda: all(r.completed or r.disconnected for r in served.requests),
        f"{label}: a response neither completed nor saw its client go",
    )
    assert pool_in_use(http) == [], f"{label}: the pool still has work"
    await anyio.lowlevel.checkpoint()
    left = describe_tasks(backend)
    assert tasks_now(backend) == tasks, f"{label}: a task was left behind: {left}"


async def assert_fds_back(baseline: int | None) -> None:
    if baseline is not None:
        await eventually(lambda: (open_fds() or 0) <= baseline, f"fds: {open_fds()} > {baseline}")


def counting_client(served: Served, points: Points, **options: Any) -> multitask.Client:
    http = httpx2.AsyncClient(transport=CountingTransport(points), follow_redirects=False)
    return multitask.Client(
        "openai:m",
        base_url=served.server.openai_base_url,
        api_key=KEY,
        http_client=http,
        **options,
    )


# -- extract_stream, cancelled at each await point -----------------------------------------


@pytest.mark.parametrize("text", ["plain", "retry"])
async def test_extract_stream_cancelled_at_every_await_point(
    served: Served, anyio_backend: str, text: str
) -> None:
    """Cancel after 1, 2, 3, ... await points, until an extraction runs to its end."""
    fds = open_fds()
    points = Points()
    client = counting_client(served, points)
    http = client._client()
    tasks = tasks_now(anyio_backend)
    cancelled_at: list[str] = []
    for k in range(1, 500):
        got: list[User] = []
        with anyio.CancelScope() as scope:
            points.arm(scope, k)
            stream: multitask.ItemStream[User] = client.extract_stream(User, f"{text} {k}")
            async with stream:
                async for user in stream:
                    got.append(user)
        assert got == EXPECTED[: len(got)]
        await assert_nothing_left(served, http, anyio_backend, tasks, f"k={k} {points.trace}")
        if not scope.cancelled_caught:
            assert got == EXPECTED
            break
        cancelled_at.append(points.trace[k - 1])
    else:
        pytest.fail("the extraction never ran to its end")
    # Every kind of point was hit: the request, its head, the reads, the close.
    assert {"send", "head", "read", "close"} <= set(cancelled_at)
    if text == "retry":
        assert cancelled_at.count("send") >= 2  # before the first request and the retry
    await http.aclose()
    await client.aclose()
    await assert_fds_back(fds)


async def test_extract_stream_cancelled_by_tiny_timeouts(
    served: Served, anyio_backend: str
) -> None:
    """With the client's own connection pool: timeouts of 0, 2, 4, ... ms, through a retry."""
    fds = open_fds()
    client = multitask.Client("openai:m", base_url=served.server.openai_base_url, api_key=KEY)
    http = client._client()
    tasks = tasks_now(anyio_backend)
    completed = False
    for k in range(400):
        got: list[User] = []
        with anyio.move_on_after(k * 0.002) as scope:
            stream: multitask.ItemStream[User] = client.extract_stream(User, f"retry {k} ms")
            async with stream:
                async for user in stream:
                    got.append(user)
        assert got == EXPECTED[: len(got)]
        await assert_nothing_left(served, http, anyio_backend, tasks, f"timeout {k * 2} ms")
        if not scope.cancelled_caught:
            completed = True
            break
    assert completed
    await client.aclose()
    assert pool_open(http) == 0
    await assert_fds_back(fds)


# -- extract_many ------------------------------------------------------------------------------


async def test_extract_many_cancelled_at_many_points(served: Served, anyio_backend: str) -> None:
    """Five documents three at a time (two with a retry), cancelled at spread-out points."""
    fds = open_fds()
    points = Points()
    client = counting_client(served, points, max_retries=2)
    http = client._client()
    tasks = tasks_now(anyio_backend)
    docs = ["a", "retry b", "c", "retry d", "e"]

    async def run(tag: str, by_doc: dict[Any, list[User]]) -> None:
        many: Many = client.extract_many(User, [f"{d} {tag}" for d in docs], max_concurrency=3)
        async with many as rs:
            async for r in rs:
                if r.item is not None:
                    by_doc.setdefault(r.index, []).append(r.item)
                else:
                    assert r.done
                    assert r.error is None

    points.arm(None, 0)
    full: dict[Any, list[User]] = {}
    await run("full", full)
    assert full == dict.fromkeys(range(len(docs)), EXPECTED)
    total = points.count
    await assert_nothing_left(served, http, anyio_backend, tasks, "uncancelled")
    for k in sorted({1, 2, 3, 5, 8, total // 4, total // 2, 3 * total // 4, total - 1}):
        partial: dict[Any, list[User]] = {}
        with anyio.CancelScope() as scope:
            points.arm(scope, k)
            await run(f"k{k}", partial)
        assert scope.cancelled_caught or k >= points.count
        for index, items in partial.items():
            assert items == EXPECTED[: len(items)], index
        await assert_nothing_left(served, http, anyio_backend, tasks, f"k={k} of {total}")
    for k in range(0, 60, 6):
        with anyio.move_on_after(k * 0.002):
            await run(f"t{k}", {})
        await assert_nothing_left(served, http, anyio_backend, tasks, f"timeout {k * 2} ms")
    await http.aclose()
    await assert_fds_back(fds)


async def test_leaving_extract_many_early_leaves_nothing(
    served: Served, anyio_backend: str
) -> None:
    fds = open_fds()
    client = multitask.Client("openai:m", base_url=served.server.openai_base_url, api_key=KEY)
    http = client._client()
    tasks = tasks_now(anyio_backend)
    for stop_after in (0, 1, 5, 11):
        seen = 0
        many: Many = client.extract_many(User, [f"early {stop_after} {i}" for i in range(6)])
        async with many as rs:
            async for _ in rs:
                if seen == stop_after:
                    break
                seen += 1
        await assert_nothing_left(served, http, anyio_backend, tasks, f"after {stop_after}")
    await client.aclose()
    await assert_fds_back(fds)


# -- the finalizer path ------------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 3])
async def test_break_without_async_with_closes_the_connection(
    served: Served, anyio_backend: str, after: int
) -> None:
    """`async for ... break` with no `async with`: the event loop's async generator finalizer
    closes the response, so the server sees the client go and the pool is free."""
    fds = open_fds()
    client = multitask.Client("openai:m", base_url=served.server.openai_base_url, api_key=KEY)
    http = client._client()
    tasks = tasks_now(anyio_backend)
    seen = 0
    async for _ in client.extract_stream(User, f"finalizer {after}"):
        if seen == after:
            break
        seen += 1
    gc.collect()
    (request,) = served.requests[-1:]
    if after == 0:  # far from the end of the answer: the client must be seen to go
        await eventually(lambda: request.disconnected, "the server never saw the client go")
        assert not request.completed
    await eventually(lambda: request.disconnected or request.completed, "the response hangs")
    await eventually(lambda: pool_in_use(http) == [], "the pool still has work")
    await eventually(lambda: tasks_now(anyio_backend) == tasks, "the finalizer task lingers")
    await client.aclose()
    await assert_fds_back(fds)


# -- bugs found --------------------------------------------------------------------------------


async def test_closing_a_stream_leaves_no_generator_to_the_gc(
    served: Served, anyio_backend: str
) -> None:
    """The generators the library itself holds are closed, not finalized by the GC."""
    hooks = sys.get_asyncgen_hooks()
    finalized: list[str] = []

    def finalizer(agen: Any) -> None:
        finalized.append(agen.ag_code.co_qualname)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(hooks.firstiter, finalizer)
    try:
        client = multitask.Client("openai:m", base_url=served.server.openai_base_url, api_key=KEY)
        stream: multitask.ItemStream[User] = client.extract_stream(User, "gc")
        async with stream:
            async for _ in stream:
                break
        gc.collect()
        await client.aclose()
    finally:
        sys.set_asyncgen_hooks(*hooks)
    # What httpx's own iterators leave to the GC once closed is httpx's business (upstream);
    # the iterator `Engine.run` holds, and `Engine.run` itself, must be closed.
    held = {
        "Engine.run",
        *(f"Response.aiter_{kind}" for kind in ("bytes", "raw", "text", "lines")),
    }
    assert held.isdisjoint(finalized), finalized
