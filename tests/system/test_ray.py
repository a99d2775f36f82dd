"""`multitask.ray` on a local Ray instance against the scripted model server on 127.0.0.1."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from pydantic import BaseModel

# A single-node Ray that binds and talks on 127.0.0.1 only (as it does on macOS and Windows),
# not on the machine's network address: read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("ray.data")

import multitask.ray as mray  # noqa: E402
from multitask import Quote  # noqa: E402
from multitask.testing import (  # noqa: E402
    ReadingModel,
    RecordedRequest,
    Script,
    ScriptedModelServer,
)


class User(BaseModel):
    name: str
    age: int


def number(key: str) -> int:
    return int(key.removeprefix("doc"))


def items_for(key: str) -> list[dict[str, Any]]:
    """Each document has its own answer: 1 to 7 users named after it."""
    n = 1 + number(key) % 7
    return [{"name": f"{key}-user{j}", "age": j} for j in range(n)]


def always_fails(key: str) -> bool:
    return number(key) % 50 == 7


class Faults:
    """The server's script, by document and attempt: first attempts fail in several ways."""

    def __init__(self) -> None:
        self.attempts: collections.Counter[str] = collections.Counter()
        self.arrivals: list[float] = []
        self.injected: collections.Counter[str] = collections.Counter()

    def __call__(self, request: RecordedRequest) -> Script:
        self.arrivals.append(time.monotonic())
        key = request.body["messages"][-1]["content"].split()[-1].rstrip(".")
        self.attempts[key] += 1
        attempt = self.attempts[key]
        items = items_for(key)
        half = len(json.dumps({"tasks": items})) // 2
        kind = number(key) % 10
        if always_fails(key):
            fault, script = "400", Script(status=400)
        elif (attempt == 1 and kind in (1, 5)) or (attempt == 2 and kind == 5):
            fault, script = "429", Script(status=429, retry_after=0.02)
        elif attempt == 1 and kind == 2:
            fault, script = "drop", Script(items=items, drop_after=half, chunk_size=8)
        elif attempt == 1 and kind == 3:
            fault, script = "500", Script(status=500)
        elif attempt == 1 and kind == 4:
            fault, script = "overload", Script(items=items, error_after=half, chunk_size=8)
        else:
            fault, script = "ok", Script(items=items, chunk_size=8)
        self.injected[fault] += 1
        return script


class CrashOnce(mray.Extractor):
    """Kills its own worker process once, cluster-wide, after `crash_after` documents ended."""

    def __init__(self, *args: Any, crash_after: int, flag: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after = crash_after
        self.flag = flag
        self.ended = 0

    def _finished(self, key: Any, rows: list[dict[str, Any]]) -> Any:
        ref = super()._finished(key, rows)
        self.ended += 1
        if self.ended == self.crash_after:
            try:
                fd = os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return ref  # another worker crashed already
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            ray.get(ref)  # the ledger has this document: the retry must replay it
            os._exit(1)  # mid-batch: other documents of the batch are still in flight
        return ref


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def server(faults: Faults) -> Iterator[ScriptedModelServer]:
    """The scripted server on 127.0.0.1, in a thread of its own, for the Ray workers to reach."""
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(ScriptedModelServer(faults)) as running:
            yield running


def dataset(n: int, blocks: int) -> Any:
    rows = [{"key": f"doc{i}", "text": f"Find the users in doc{i}."} for i in range(n)]
    return ray.data.from_items(rows, override_num_blocks=blocks)


def check_rows(rows: list[dict[str, Any]], n: int) -> tuple[int, int]:
    """Every item once, as scripted, in positions 0..k-1; one error row per failed document."""
    by_key: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        assert set(row) == {
            "key",
            "position",
            "item",
            "start",
            "end",
            "match",
            "error",
            "error_type",
        }
        assert row["start"] is row["end"] is row["match"] is None  # User has no Quote
        by_key[row["key"]].append(row)
    assert set(by_key) == {f"doc{i}" for i in range(n)}
    items = failed = 0
    for key, mine in by_key.items():
        if always_fails(key):
            assert len(mine) == 1, key
            (row,) = mine
            assert row["item"] is None
            assert row["position"] is None
            assert row["error_type"] == "APIStatusError"
            assert "400" in row["error"]
            failed += 1
            continue
        assert all(r["error"] is None and r["error_type"] is None for r in mine), key
        positions = [r["position"] for r in mine]
        assert sorted(positions) == list(range(len(items_for(key)))), (key, positions)
        got = [json.loads(r["item"]) for r in sorted(mine, key=lambda r: r["position"])]
        assert got == items_for(key), key
        items += len(mine)
    return items, failed


def test_500_documents_with_faults_and_a_crashed_worker_give_every_item_once(
    ray_local: None, server: ScriptedModelServer, faults: Faults, tmp_path: Path
) -> None:
    n, workers, rate = 500, 4, 200.0  # requests a second, for all the workers together
    limit = mray.RateLimit(rpm=rate * 60, name=f"test-limit-{tmp_path.name}")
    ledger = mray.Ledger()
    flag = tmp_path / "crashed"
    started = time.monotonic()
    out = dataset(n, blocks=10).map_batches(
        CrashOnce,
        fn_constructor_args=(User,),
        fn_constructor_kwargs={
            "model": "openai:scripted",
            "base_url": server.openai_base_url,
            "api_key": "test",
            "max_retries": 4,
            "rate_limit": limit,
            "ledger": ledger,
            "crash_after": 30,
            "flag": str(flag),
        },
        batch_size=25,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=2 / workers,
    )
    table = pa.concat_tables(ray.get(out.to_arrow_refs()))
    wall = time.monotonic() - started
    rows = table.to_pylist()

    assert table.schema == mray.output_schema()
    pairs = collections.Counter((r["key"], r["position"]) for r in rows if r["error"] is None)
    assert max(pairs.values()) == 1  # no duplicate across retries
    items, failed = check_rows(rows, n)
    assert failed == n // 50

    # The worker crashed once mid-batch; its retried task replayed what it had finished.
    assert flag.exists()
    ledger_stats = ledger.stats()
    assert ledger_stats["documents"] == n
    assert ledger_stats["failed"] == failed
    assert ledger_stats["replayed"] >= 1
    assert ledger_stats["rows"] == len(rows)
    # Every fault was injected, and retried.
    assert faults.injected["429"] >= 90
    assert faults.injected["drop"] >= 40
    assert faults.injected["500"] >= 40
    assert faults.injected["overload"] >= 40
    assert faults.injected["400"] >= failed
    # All workers asked the one budget, and together stayed within it.
    limit_stats = limit.stats()
    assert limit_stats["clients"] >= workers
    assert limit_stats["requests"] >= len(server.requests)
    assert limit_stats["backoffs"] >= 1
    arrivals = faults.arrivals
    span = max(arrivals) - min(arrivals)
    assert len(arrivals) <= rate * (span + 1) * 1.05 + 5
    assert window_max(arrivals, 1.0) <= rate * 2 * 1.05 + 5
    limit.shutdown()
    ledger.shutdown()

    print(
        f"\nray adapter: {n} documents, {items} items, {failed} failed documents, "
        f"{workers} workers, {len(server.requests)} requests "
        f"({dict(faults.injected)}), 1 worker crash, {ledger_stats['replayed']} documents "
        f"replayed, max {window_max(arrivals, 1.0)} requests in 1 s (budget {rate:.0f}/s), "
        f"wall time {wall:.1f} s"
    )


def row_order(row: dict[str, Any]) -> tuple[str, int]:
    return (str(row["key"]), -1 if row["position"] is None else int(row["position"]))


def test_flat_map_rows_and_a_rerun_replays_from_the_ledger(
    ray_local: None, server: ScriptedModelServer, faults: Faults
) -> None:
    n = 60
    ledger = mray.Ledger()

    def run(ds: Any, **extra: Any) -> Any:
        return ds.flat_map(
            mray.Extractor,
            fn_constructor_args=(User,),
            fn_constructor_kwargs={
                "model": "anthropic:scripted",
                "base_url": server.anthropic_base_url,
                "api_key": "test",
                "max_retries": 4,
                **extra,
            },
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
            num_cpus=0.5,
        )

    first = run(dataset(n, blocks=4), ledger=ledger).take_all()
    check_rows(first, n)
    requests = len(server.requests)
    again = run(dataset(n, blocks=4), ledger=ledger).take_all()
    # The same rows (blocks may come back in another order across the two workers)...
    assert sorted(again, key=row_order) == sorted(first, key=row_order)
    assert len(server.requests) == requests  # ...without asking the model again
    assert ledger.stats()["replayed"] == n
    assert ledger.forget() == n
    ledger.shutdown()

    # A block of failures only has the same column types as the others; a null text fails.
    docs: list[dict[str, str | None]] = [
        {"key": k, "text": f"Find the users in {k}."} for k in ("doc7", "doc57", "doc3")
    ]
    docs.append({"key": "doc8", "text": None})
    blocks = ray.get(run(ray.data.from_items(docs, override_num_blocks=2)).to_arrow_refs())
    assert [t.schema for t in blocks if t.num_rows] == [mray.output_schema()] * 2
    rows = pa.concat_tables(blocks).to_pylist()
    assert [r["key"] for r in rows if r["error"]] == ["doc7", "doc57", "doc8"]
    assert [json.loads(r["item"]) for r in rows if not r["error"]] == items_for("doc3")


def test_workers_share_one_budget_and_one_pause(ray_local: None) -> None:
    limit = mray.RateLimit(rpm=600, name="test-shared-budget")  # 10 a second, burst 10

    @ray.remote(num_cpus=0)
    def spend(limit: mray.RateLimit, count: int) -> list[float]:
        import asyncio

        limiter = limit.limiter()

        async def run() -> list[float]:
            times = []
            for _ in range(count):
                await limiter.acquire(1.0)
                times.append(time.monotonic())
            return times

        return asyncio.run(run())

    started = time.monotonic()
    times = sorted(t for ts in ray.get([spend.remote(limit, 15) for _ in range(3)]) for t in ts)
    elapsed = time.monotonic() - started
    assert len(times) == 45
    assert elapsed >= (45 - 10) / 10 * 0.95  # 3 workers, one bucket: not 3 x 10 a second
    assert window_max(times, 1.0) <= 10 * 2 + 3  # a bucket of 10: 10 * (1 s + 1 s), + jitter
    assert limit.stats()["clients"] == 3

    # A 429 seen by one client pauses the others (here: the driver, under trio).
    limit.limiter("a").backoff(1.0)
    while limit.stats()["backoffs"] < 1:  # the pause is sent without waiting for it
        time.sleep(0.01)
    other = limit.limiter("b")

    async def acquire_once() -> float:
        start = anyio.current_time()
        await other.acquire(0.0)
        return anyio.current_time() - start

    assert anyio.run(acquire_once, backend="trio") >= 0.8
    assert limit.stats()["backoffs"] == 1
    limit.shutdown()


def test_batch_formats_and_item_formats_without_ray_data(
    ray_local: None, server: ScriptedModelServer
) -> None:
    """The callable itself, in this process: numpy, pandas and Arrow batches, and rows."""
    import numpy as np
    import pandas as pd

    keys = ["doc1", "doc7", "doc12"]
    texts = [f"Find the users in {k}." for k in keys]

    async def run(extractor: mray.Extractor, data: Any) -> list[Any]:
        try:
            return [out async for out in extractor(data)]
        finally:
            await extractor.aclose()

    def extractor(**kwargs: Any) -> mray.Extractor:
        return mray.Extractor(
            User, model="openai:m", base_url=server.openai_base_url, api_key="t", **kwargs
        )

    batches = [
        {"key": np.array(keys), "text": np.array(texts, dtype=object)},
        pd.DataFrame({"key": keys, "text": texts}),
        pa.table({"key": keys, "text": texts}),
    ]
    tables = [anyio.run(run, extractor(), batch) for batch in batches]
    expected = tables[0][0].to_pylist()
    for (table,) in tables:
        assert table.to_pylist() == expected
    assert [r["key"] for r in expected if r["error"]] == ["doc7"]
    assert [json.loads(r["item"]) for r in expected if r["key"] == "doc12"] == items_for("doc12")

    rows = anyio.run(run, extractor(item_format="dict"), {"key": "doc12", "text": texts[2]})
    rows = [{k: v.as_py() if isinstance(v, pa.Scalar) else v for k, v in r.items()} for r in rows]
    assert [r["item"] for r in rows] == items_for("doc12")
    assert {r["key"] for r in rows} == {"doc12"}
    assert [r["position"] for r in rows] == list(range(len(rows)))

    # Without a key column, the key is the text's hash: the same on every attempt.
    (table,) = anyio.run(run, extractor(), {"text": np.array(texts[:1], dtype=object)})
    assert set(table.column("key").to_pylist()) == {mray._text_key(texts[0])}


class Mention(BaseModel):
    quote: Quote


def test_long_texts_in_chunks_give_rows_with_spans(ray_local: None) -> None:
    texts = {
        f"book{k}": " ".join(f"At {i}, Name{k}x{i} spoke." for i in range(120)) for k in (1, 2)
    }
    model = ReadingModel(r"Name\d+x\d+", script=Script(chunk_size=64))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(model)) as server,
    ):
        ds = ray.data.from_items([{"key": k, "text": t} for k, t in texts.items()])
        rows = ds.map_batches(
            mray.Extractor,
            fn_constructor_args=(Mention,),
            fn_constructor_kwargs={
                "model": "openai:reader",
                "base_url": server.openai_base_url,
                "api_key": "test",
                "max_tokens": 200,
                "chunk_chars": 900,
                "overlap_chars": 50,
                "max_continuations": 10,
            },
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.5,
        ).take_all()
    assert len(server.requests) > 2 * 3  # read in chunks, cut answers continued
    for key, text in texts.items():
        mine = sorted((r for r in rows if r["key"] == key), key=lambda r: r["position"])
        spans = [(m.start(), m.end()) for m in re.finditer(r"Name\d+x\d+", text)]
        assert [(r["start"], r["end"]) for r in mine] == spans, key
        assert [json.loads(r["item"])["quote"] for r in mine] == [text[a:b] for a, b in spans]
        assert {r["match"] for r in mine} == {"exact"}


def window_max(times: list[float], width: float) -> int:
    """The most events in any window of `width` seconds."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] > width:
            start += 1
        best = max(best, end - start + 1)
    return best
