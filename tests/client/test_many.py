"""`extract_many` over real HTTP: faults, exactly-once delivery, back-pressure, rate limits."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import multitask
from multitask.testing import RecordedRequest, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio


class User(BaseModel):
    name: str
    age: int


def items_for(key: str) -> list[dict[str, Any]]:
    """Each document has its own answer: 1 to 7 users named after it."""
    n = 1 + int(key.removeprefix("doc")) % 7
    return [{"name": f"{key}-user{j}", "age": j} for j in range(n)]


def document_key(request: RecordedRequest) -> str:
    text = request.body["messages"][-1]["content"]
    match = re.search(r"doc\d+", text)
    assert match, text
    return match.group()


class Faults:
    """The scripted server's behaviour: each request draws a fault, with fixed odds."""

    def __init__(self, seed: int, *, pace: float | None = None) -> None:
        self.random = random.Random(seed)
        self.pace = pace
        self.injected: dict[str, int] = {"429": 0, "500": 0, "drop": 0, "overload": 0, "ok": 0}

    def __call__(self, request: RecordedRequest) -> Script:
        items = items_for(document_key(request))
        answer = json.dumps({"tasks": items})
        cut = self.random.randrange(10, len(answer))
        r = self.random.random()
        if r < 0.10:
            self.injected["429"] += 1
            return Script(status=429, retry_after=0.01)
        if r < 0.15:
            self.injected["500"] += 1
            return Script(status=500)
        if r < 0.20:
            self.injected["drop"] += 1
            return Script(items=items, drop_after=cut, chunk_size=16)
        if r < 0.22:
            self.injected["overload"] += 1
            return Script(items=items, error_after=cut, chunk_size=16)
        self.injected["ok"] += 1
        return Script(items=items, chunk_size=16, tokens_per_second=self.pace)


async def test_two_thousand_documents_with_faults_deliver_each_item_once() -> None:
    n = 2000
    faults = Faults(seed=7)
    got: dict[str, list[User]] = {}
    positions: dict[str, list[int]] = {}
    ended: dict[str, multitask.Result[User]] = {}
    async with ScriptedModelServer(faults) as server:
        async with multitask.Client(
            "anthropic:test",
            base_url=server.anthropic_base_url,
            api_key="k",
            max_concurrency=500,
            max_retries=6,
        ) as client:
            documents = (f"Find the users in doc{i}." for i in range(n))  # a lazy generator
            async with client.extract_many(User, documents) as results:
                async for r in results:
                    key = f"doc{r.index}"
                    assert key not in ended, "an event after the document's last one"
                    if r.done:
                        ended[key] = r
                    else:
                        assert r.item is not None
                        got.setdefault(key, []).append(r.item)
                        positions.setdefault(key, []).append(r.position or 0)
            progress = results.progress
    assert len(ended) == n
    failed = {k: r for k, r in ended.items() if r.error is not None}
    for key, r in ended.items():
        expected = [User(**u) for u in items_for(key)]
        delivered = got.get(key, [])
        assert r.items == len(delivered)
        assert positions.get(key, []) == list(range(len(delivered)))
        if r.error is None:
            assert delivered == expected, key  # every item exactly once, in order
            assert r.usage is not None
        else:
            assert delivered == expected[: len(delivered)], key  # what came was right
            assert isinstance(r.error, multitask.MultitaskError)
    assert faults.injected["429"] > 100
    assert faults.injected["drop"] > 50
    assert faults.injected["overload"] > 20
    assert len(failed) < n * 0.01
    assert progress.documents_done == n - len(failed)
    assert progress.documents_failed == len(failed)
    assert progress.items == sum(len(v) for v in got.values())
    assert progress.in_flight == 0
    assert len(server.requests) > n  # the faults were retried


async def test_documents_with_keys_and_async_iterables() -> None:
    async def documents() -> AsyncIterator[tuple[str, str]]:
        for i in range(20):
            yield (f"key-{i}", f"doc{i}")

    async with ScriptedModelServer(Faults(seed=1).__class__(seed=1)) as server:
        server._script = lambda r: Script(items=items_for(document_key(r)))  # no faults
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k"
        ) as client:
            async with client.extract_many(User, documents(), max_concurrency=3) as results:
                events = [r async for r in results]
    keys = {r.index for r in events}
    assert keys == {f"key-{i}" for i in range(20)}
    for i in range(20):
        mine = [r for r in events if r.index == f"key-{i}"]
        assert mine[-1].done
        assert [r.item for r in mine[:-1]] == [User(**u) for u in items_for(f"doc{i}")]


async def test_a_failed_document_never_stops_the_others() -> None:
    def script(request: RecordedRequest) -> Script:
        key = document_key(request)
        if key == "doc3":
            return Script(status=400)  # not retryable
        return Script(items=items_for(key))

    async with ScriptedModelServer(script) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k"
        ) as client:
            async with client.extract_many(User, [f"doc{i}" for i in range(10)]) as results:
                ends = [r async for r in results if r.done]
    errors = {r.index: r.error for r in ends if r.error}
    assert list(errors) == [3]
    assert isinstance(errors[3], multitask.APIStatusError)
    assert len(ends) == 10


async def test_leaving_early_cancels_everything_and_closes_connections() -> None:
    script = Script(items=items_for("doc6"), chunk_size=2, tokens_per_second=50)
    async with ScriptedModelServer(script) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k"
        ) as client:
            with anyio.fail_after(10):
                async with client.extract_many(
                    User, (f"doc{i}" for i in range(1000)), max_concurrency=20
                ) as results:
                    async for r in results:
                        if r.item is not None:
                            break
            started = len(server.requests)
            await server.wait_disconnect(count=started, timeout=5)
    assert started <= 21  # the generator was read lazily: no more than the slots
    assert all(r.disconnected or r.completed for r in server.requests)


async def test_a_slow_reader_holds_the_workers_back() -> None:
    async with ScriptedModelServer(lambda r: Script(items=items_for("doc6"))) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k"
        ) as client:
            async with client.extract_many(
                User, (f"doc{i}" for i in range(200)), max_concurrency=50, buffer=4
            ) as results:
                iterator = aiter(results)
                await anext(iterator)
                await anyio.sleep(0.5)  # the reader stalls
                requests_while_stalled = len(server.requests)
                rest = [r async for r in iterator]
    # With 4 slots in the buffer, the 50 workers block on it instead of finishing all 200.
    assert requests_while_stalled <= 60
    assert sum(1 for r in rest if r.done) == 200


# -- rate limits -------------------------------------------------------------------------------


def window_max(times: list[float], width: float) -> int:
    """The most events in any window of `width` seconds."""
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] > width:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_rpm_and_tpm_limits_hold() -> None:
    arrivals: list[float] = []

    def script(request: RecordedRequest) -> Script:
        arrivals.append(anyio.current_time())
        return Script(items=items_for("doc0"))

    rpm = 600  # 10 a second
    async with ScriptedModelServer(script) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k", rpm=rpm
        ) as client:
            start = anyio.current_time()
            async with client.extract_many(
                User, [f"doc{i}" for i in range(30)], max_concurrency=30
            ) as results:
                async for _ in results:
                    pass
            elapsed = anyio.current_time() - start
    # A bucket of one second's budget: at most rate * (w + 1) in any window of w seconds.
    assert window_max(arrivals, 1.0) <= 10 * 2
    assert window_max(arrivals, 0.5) <= 10 * 1.5
    assert elapsed >= 1.8  # 30 requests at 10/s, less the first second's burst


async def test_tpm_limit_holds_over_http() -> None:
    """With a token budget that binds before the request budget, tokens/s stay under it."""
    from multitask.testing._wire import _prompt_tokens

    spent: list[tuple[float, int]] = []

    def script(request: RecordedRequest) -> Script:
        items = items_for("doc0")
        chunks = -(-len(json.dumps({"tasks": items})) // 4)
        spent.append((anyio.current_time(), _prompt_tokens(request.body) + chunks))
        return Script(items=items)

    tpm = 30_000  # 500 tokens a second; a request costs ~330 (estimate ~330 + 100 output cap)
    async with ScriptedModelServer(script) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k", rpm=6000, tpm=tpm
        ) as client:
            async with client.extract_many(
                User, [f"doc{i}" for i in range(12)], max_concurrency=12, max_tokens=100
            ) as results:
                async for _ in results:
                    pass
    per_second = tpm / 60
    largest = max(cost for _, cost in spent)
    for width in (0.5, 1.0, 2.0):
        worst = max(
            sum(cost for t, cost in spent if start <= t <= start + width) for start, _ in spent
        )
        # The bucket holds one second's budget; one request may start on the boundary.
        assert worst <= per_second * (width + 1) + largest, (width, worst)
    assert spent[-1][0] - spent[0][0] >= (sum(c for _, c in spent) - per_second) / per_second * 0.7


async def test_token_budget_is_reserved_and_settled() -> None:
    limiter = multitask.RateLimiter(tpm=60_000)  # 1,000 tokens a second, burst of 1,000
    start = anyio.current_time()
    for _ in range(3):
        await limiter.acquire(900)  # the first fits the burst; the others wait ~0.9 s each
        limiter.settle(900, 900)
    assert anyio.current_time() - start >= 1.6
    # Settling for fewer tokens than reserved gives the difference back.
    limiter2 = multitask.RateLimiter(tpm=60_000)
    await limiter2.acquire(1000)
    limiter2.settle(1000, 100)
    t = anyio.current_time()
    await limiter2.acquire(800)
    assert anyio.current_time() - t < 0.2


async def test_a_429_slows_everyone_down() -> None:
    first = True

    def script(request: RecordedRequest) -> Script:
        nonlocal first
        if first:
            first = False
            return Script(status=429, retry_after=0.5)
        return Script(items=items_for("doc0"))

    async with ScriptedModelServer(script) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k"
        ) as client:
            start = anyio.current_time()
            async with client.extract_many(
                User, [f"doc{i}" for i in range(10)], max_concurrency=1
            ) as results:
                async for _ in results:
                    pass
            assert client.limiter.backoffs == 1
    # The 429 came for the first document; with one slot, the other nine waited for it too.
    assert anyio.current_time() - start >= 0.5


def test_rate_limit_headers_are_learned() -> None:
    async def main() -> None:
        limiter = multitask.RateLimiter()
        limiter.observe(
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "0.3s",
            }
        )
        assert limiter.requests is not None
        start = anyio.current_time()
        await limiter.acquire()
        assert anyio.current_time() - start >= 0.25
        limiter.observe(
            {
                "anthropic-ratelimit-tokens-limit": "6000",
                "anthropic-ratelimit-tokens-remaining": "5",
            }
        )
        assert limiter.tokens is not None
        assert limiter.tokens.level <= 5

    anyio.run(main)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    from multitask._ratelimit import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration("soon") is None


# -- the sync form -----------------------------------------------------------------------------


def test_extract_many_sync() -> None:
    def script(request: RecordedRequest) -> Script:
        return Script(items=items_for(document_key(request)))

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as server,
    ):
        results = list(
            multitask.extract_many_sync(
                User,
                iter_docs(5),
                model="openai:m",
                base_url=server.openai_base_url,
                api_key="k",
            )
        )
    assert sum(1 for r in results if r.done) == 5
    assert sum(1 for r in results if r.item is not None) == sum(
        len(items_for(f"doc{i}")) for i in range(5)
    )


def iter_docs(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"doc{i}"
