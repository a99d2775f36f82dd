"""Ray Data adapter: extract items from a dataset of documents on a pool of Ray actors.

    import multitask.ray

    limit = multitask.ray.RateLimit(rpm=5_000, tpm=2_000_000)   # one budget for every worker
    ledger = multitask.ray.Ledger()                              # exactly once across retries
    users = ds.map_batches(
        multitask.ray.Extractor,
        fn_constructor_args=(User,),
        fn_constructor_kwargs={"model": "openai:gpt-4o-mini", "rate_limit": limit,
                               "ledger": ledger},
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=8),
    )

Each input row has a `text` column (the document) and a `key` column (its stable id). Each
output row is one extracted item, or one failed document::

    {"key": ..., "position": 0, "item": '{"name": ...}', "start": 120, "end": 131,
     "match": "exact", "error": None, "error_type": None}
    {"key": ..., "position": None, "item": None, "start": None, "end": None, "match": None,
     "error": "HTTP 400 ...", "error_type": "..."}

`start`, `end` and `match` are the span of the item's first `multitask.Quote` in its text
(None for an item type without one). Long texts are read as `extract_many` reads them: give
`chunk_chars` (and `overlap_chars`, `max_continuations`) among the client's options.

`item` is the item as a JSON string by default (`item_format="json"`): one string column has
the same Arrow type in every block whatever the item's shape (optional fields, unions), so
blocks always concatenate; `item_format="dict"` gives a struct column instead, whose type Ray
infers from each block's items.

`Extractor` works with `map_batches` (a batch's documents go through one `extract_many`, up to
four batches at once per actor) and with `flat_map` (one document per call, up to sixteen at
once per actor); both take its async `__call__`. One `multitask.Client` per actor is made in
the actor's event loop on first use and closed when Ray shuts the actor down.

Exactly once: the `Ledger` actor keeps each finished document's rows under its key, recorded
before the rows leave the worker. Every attempt of a Ray task looks its documents up first and
replays the rows of those already finished, so a retried task (a worker that died, a lost
block rebuilt from lineage) emits the same rows in the same order as the first attempt, the
deterministic output Ray Data counts on when it retries, without asking the model again; the
documents that had not finished emitted nothing and are extracted afresh. Without a ledger a
retry asks the model again, and its answer may differ. `(key, position)` is each row's primary
key: an idempotent sink (upsert, or dedupe on it) covers re-running the whole pipeline too.

Shared rate limit: `RateLimit` is one named async actor holding a `multitask.RateLimiter`.
Every request of every worker's client waits in its `acquire` first, settles its token
estimate afterwards and reports 429s and rate-limit headers to it, so N workers together stay
within one RPM/TPM budget, and a 429 seen by one pauses them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread
from pydantic import TypeAdapter

try:
    import pyarrow as pa  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import ray  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "multitask.ray needs Ray Data: pip install 'multitask[ray]' (or 'ray[data]')"
    ) from exc

from ._client import Client
from ._exceptions import MultitaskError
from ._many import Result
from ._ratelimit import RateLimiter

__all__ = ["Extractor", "Ledger", "RateLimit", "SharedRateLimiter", "output_schema"]

Row = dict[str, Any]
"""One output row: `key`, `position`, `item`, `start`, `end`, `match`, `error`, `error_type`."""

ItemFormat = Literal["json", "dict"]

_RATE_HEADERS = ("x-ratelimit-", "anthropic-ratelimit-")


# -- the shared rate limit ---------------------------------------------------------------------


class _RateLimitActor:
    """The cluster's token buckets: a `RateLimiter` in an async actor (every method async)."""

    def __init__(self, rpm: float | None, tpm: float | None, burst_seconds: float) -> None:
        self._limiter = RateLimiter(rpm=rpm, tpm=tpm, burst_seconds=burst_seconds)
        self._rpm = rpm
        self._tpm = tpm
        self._clients: set[str] = set()
        self._requests = 0
        self._waited = 0.0

    async def acquire(self, tokens: float, client: str) -> float:
        """Wait for a request's turn, take its budget; returns the seconds it waited."""
        self._clients.add(client)
        start = anyio.current_time()
        await self._limiter.acquire(tokens)
        waited = anyio.current_time() - start
        self._requests += 1
        self._waited += waited
        return waited

    async def settle(self, estimate: float, actual: float) -> None:
        self._limiter.settle(estimate, actual)

    async def backoff(self, seconds: float) -> None:
        self._limiter.backoff(seconds)

    async def observe(self, headers: dict[str, str]) -> None:
        self._limiter.observe(headers)

    async def stats(self) -> dict[str, Any]:
        return {
            "rpm": self._rpm,
            "tpm": self._tpm,
            "requests": self._requests,
            "clients": len(self._clients),
            "waited_seconds": self._waited,
            "backoffs": self._limiter.backoffs,
        }


_RateLimitActorClass: Any = ray.remote(_RateLimitActor)


class RateLimit:
    """A cluster-wide RPM/TPM budget: one named Ray actor that every worker's client asks.

    Made on the driver (the actor then lives as long as the driver's job; `detached=True`
    makes it outlive it, until `shutdown()`). Instances with the same `name` and `namespace`
    share one actor: the first one's limits win. Pass it to `Extractor(rate_limit=...)`; it
    pickles into the workers as a handle on the same actor.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        name: str = "multitask-rate-limit",
        namespace: str | None = None,
        detached: bool = False,
        burst_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.namespace = namespace
        options: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "get_if_exists": True,
            "num_cpus": 0,
            "max_concurrency": 100_000,  # requests waiting their turn are actor calls
            "max_restarts": -1,
            "max_task_retries": -1,
        }
        if detached:
            options["lifetime"] = "detached"
        self.handle: Any = _RateLimitActorClass.options(**options).remote(rpm, tpm, burst_seconds)

    @classmethod
    def lookup(cls, name: str = "multitask-rate-limit", namespace: str | None = None) -> RateLimit:
        """The existing budget of that name (ValueError if there is none)."""
        self = cls.__new__(cls)
        self.name = name
        self.namespace = namespace
        self.handle = ray.get_actor(name, namespace=namespace)
        return self

    def limiter(self, client_id: str | None = None) -> SharedRateLimiter:
        """A `RateLimiter` for one `Client` (`Client(..., limiter=limit.limiter())`)."""
        return SharedRateLimiter(self.handle, client_id or _worker_id())

    def stats(self) -> dict[str, Any]:
        """Requests let through, distinct clients, seconds waited, 429 pauses (blocking)."""
        result: dict[str, Any] = ray.get(self.handle.stats.remote())
        return result

    def shutdown(self) -> None:
        """Kill the actor (a detached one stays until this is called)."""
        ray.kill(self.handle)

    def __repr__(self) -> str:
        return f"<multitask.ray.RateLimit name={self.name!r}>"


class SharedRateLimiter(RateLimiter):
    """A `RateLimiter` whose buckets live in a `RateLimit` actor, for a `Client`'s `limiter`.

    `acquire` waits for the actor's answer; `settle`, `backoff` and `observe` are sent without
    waiting (they only adjust the buckets).
    """

    def __init__(self, handle: Any, client_id: str) -> None:
        super().__init__()
        self._handle = handle
        self._client_id = client_id

    async def acquire(self, tokens: float = 0.0) -> None:
        await _wait(self._handle.acquire.remote(tokens, self._client_id), cancel=True)

    def settle(self, estimate: float, actual: float) -> None:
        if estimate != actual:
            self._handle.settle.remote(estimate, actual)

    def backoff(self, seconds: float) -> None:
        self.backoffs += 1
        self._handle.backoff.remote(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        picked = {k.lower(): v for k, v in headers.items() if k.lower().startswith(_RATE_HEADERS)}
        if picked:
            self._handle.observe.remote(picked)


# -- the ledger --------------------------------------------------------------------------------


class _LedgerActor:
    """Finished documents' rows by key. Calls run one at a time, so the first record wins."""

    def __init__(self) -> None:
        self._rows: dict[Any, list[Row]] = {}
        self._replayed = 0
        self._conflicts = 0

    def lookup(self, keys: list[Any]) -> dict[Any, list[Row]]:
        found = {key: self._rows[key] for key in keys if key in self._rows}
        self._replayed += len(found)
        return found

    def record(self, key: Any, rows: list[Row]) -> list[Row] | None:
        """Keep `rows` for `key`; None if they were kept, else the rows recorded before."""
        recorded = self._rows.setdefault(key, rows)
        if recorded is rows:
            return None
        self._conflicts += 1
        return recorded

    def forget(self, keys: list[Any] | None) -> int:
        if keys is None:
            count = len(self._rows)
            self._rows.clear()
            return count
        return sum(self._rows.pop(key, None) is not None for key in keys)

    def stats(self) -> dict[str, Any]:
        return {
            "documents": len(self._rows),
            "failed": sum(
                any(r["error"] is not None for r in rows) for rows in self._rows.values()
            ),
            "rows": sum(len(rows) for rows in self._rows.values()),
            "replayed": self._replayed,
            "conflicts": self._conflicts,
        }


_LedgerActorClass: Any = ray.remote(_LedgerActor)


class Ledger:
    """The rows of every finished document, by key, so a retried Ray task replays them.

    One named actor, made on the driver. By default each `Ledger()` gets a fresh name: keys
    of two pipelines never mix. Give a `name` (with `detached=True`) to keep the ledger across
    driver runs: a re-run then replays finished documents instead of paying for them again
    (`forget()` first to start over). It holds every row it was given: in memory, the size of
    the output.
    """

    def __init__(
        self, name: str | None = None, *, namespace: str | None = None, detached: bool = False
    ) -> None:
        self.name = name or f"multitask-ledger-{uuid.uuid4().hex}"
        self.namespace = namespace
        options: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "get_if_exists": True,
            "num_cpus": 0,
            # A ledger that lost its memory would break the guarantee silently: fail instead.
            "max_restarts": 0,
        }
        if detached:
            options["lifetime"] = "detached"
        self.handle: Any = _LedgerActorClass.options(**options).remote()

    @classmethod
    def lookup(cls, name: str, namespace: str | None = None) -> Ledger:
        """The existing ledger of that name (ValueError if there is none)."""
        self = cls.__new__(cls)
        self.name = name
        self.namespace = namespace
        self.handle = ray.get_actor(name, namespace=namespace)
        return self

    def stats(self) -> dict[str, Any]:
        """Documents recorded (and failed), rows kept, documents replayed (blocking)."""
        result: dict[str, Any] = ray.get(self.handle.stats.remote())
        return result

    def forget(self, keys: Sequence[Any] | None = None) -> int:
        """Drop these documents (all, by default), e.g. to retry failed ones; how many."""
        count: int = ray.get(self.handle.forget.remote(None if keys is None else list(keys)))
        return count

    def shutdown(self) -> None:
        """Kill the actor (a detached one stays until this is called)."""
        ray.kill(self.handle)

    def __repr__(self) -> str:
        return f"<multitask.ray.Ledger name={self.name!r}>"


# -- the extractor -----------------------------------------------------------------------------


_TYPES: dict[str, Any] = {
    "position": pa.int64(),
    "item": pa.string(),
    "start": pa.int64(),
    "end": pa.int64(),
    "match": pa.string(),
    "error": pa.string(),
    "error_type": pa.string(),
}


def output_schema(key_type: Any = None) -> Any:
    """The rows' Arrow schema (with `item_format="json"`), e.g. for `write_parquet(schema=)`.

    `key` has `key_type` (default: string), `position`, `start` and `end` int64, `item`,
    `match`, `error` and `error_type` strings; all but `key` are nullable.
    """
    fields = [pa.field("key", key_type if key_type is not None else pa.string())]
    fields += [pa.field(name, kind) for name, kind in _TYPES.items()]
    return pa.schema(fields)


class Extractor:
    """A Ray Data callable class: documents in, one row per item or failed document out.

    Use it with `ds.map_batches(Extractor, ...)` (the batch's documents run concurrently
    through one `Client.extract_many`; a `pyarrow.Table` comes out per batch) or
    `ds.flat_map(Extractor, ...)` (one document per call, a row each). The input needs a
    `text_column`; `key_column` names each document's stable id (without it, the key is the
    SHA-256 of the text). `model`, and any other keyword (`base_url`, `api_key`, `rpm`, `tpm`,
    `max_retries`, `mode`, `chunk_chars`, ...), go to `multitask.Client`; `rpm`/`tpm` there
    limit this one worker, `rate_limit` shares a budget among all of them. `ledger` makes
    each document's rows come out once across Ray task retries. `max_concurrency` caps the
    documents of one batch in flight (default: the client's).

    A document that fails still gives the items it delivered before failing, then its error
    row.
    """

    def __init__(
        self,
        item_type: Any,
        *,
        model: str | None = None,
        text_column: str = "text",
        key_column: str = "key",
        item_format: ItemFormat = "json",
        rate_limit: RateLimit | str | None = None,
        ledger: Ledger | str | None = None,
        max_concurrency: int | None = None,
        **client_options: Any,
    ) -> None:
        if item_format not in ("json", "dict"):
            raise ValueError(f"item_format must be 'json' or 'dict', not {item_format!r}")
        if rate_limit is not None and (client_options.get("rpm") or client_options.get("tpm")):
            raise ValueError("give the limits to the shared RateLimit, not rpm/tpm as well")
        self.item_type = item_type
        self.model = model
        self.text_column = text_column
        self.key_column = key_column
        self.item_format: ItemFormat = item_format
        self.max_concurrency = max_concurrency
        self.rate_limit = (
            RateLimit.lookup(rate_limit) if isinstance(rate_limit, str) else rate_limit
        )
        self.ledger = Ledger.lookup(ledger) if isinstance(ledger, str) else ledger
        self._client_options = client_options
        self._adapter: TypeAdapter[Any] = TypeAdapter(item_type)
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- Ray Data's entry point ----------------------------------------------------------------

    async def __call__(self, data: Any) -> AsyncIterator[Any]:
        """A row (flat_map): yields its rows. A batch (map_batches): yields one table."""
        if isinstance(data, Mapping) and not _is_column(data.get(self.text_column)):
            text = _text(data, self.text_column)
            key = _plain(data[self.key_column]) if self.key_column in data else _text_key(text)
            (rows,) = await self.extract([key], [text])
            for row in rows:
                yield self._arrow_row(row)
            return
        texts = [_plain(t) for t in _column(data, self.text_column)]
        if _has_column(data, self.key_column):
            keys = [_plain(k) for k in _column(data, self.key_column)]
        else:
            keys = [_text_key(t if isinstance(t, str) else None) for t in texts]
        documents = await self.extract(keys, texts)
        rows = [row for document in documents for row in document]
        if rows:
            yield self._table(rows)

    # -- the work ------------------------------------------------------------------------------

    async def extract(self, keys: Sequence[Any], texts: Sequence[str | None]) -> list[list[Row]]:
        """Each document's rows, in input order: replayed from the ledger, or extracted.

        The rows are plain dicts. A document whose text is missing (None) gets an error row.
        """
        out: list[list[Row] | None] = [None] * len(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                error = MultitaskError(f"the document has no text ({self.text_column!r} is null)")
                out[i] = [_error_row(keys[i], error)]
        if self.ledger is not None:
            found: dict[Any, list[Row]] = await _wait(self.ledger.handle.lookup.remote(list(keys)))
            for i, key in enumerate(keys):
                if out[i] is None and key in found:
                    out[i] = found[key]
        todo = [(i, text) for i, text in enumerate(texts) if out[i] is None and text is not None]
        if todo:
            client = self._get_client()
            limit = min(len(todo), self.max_concurrency or client.max_concurrency)
            pending: dict[int, list[Row]] = {i: [] for i, _ in todo}
            records: list[tuple[int, Any]] = []
            async with client.extract_many(self.item_type, todo, max_concurrency=limit) as results:
                async for r in results:
                    rows = pending[r.index]
                    key = keys[r.index]
                    if not r.done:
                        rows.append(self._item_row(key, r))
                        continue
                    if r.error is not None:
                        rows.append(_error_row(key, r.error))
                    out[r.index] = rows
                    records.append((r.index, self._finished(key, rows)))
            for i, ref in records:
                if ref is not None:
                    recorded: list[Row] | None = await _wait(ref)
                    if recorded is not None:  # another attempt finished it first: use its rows
                        out[i] = recorded
        return [rows or [] for rows in out]

    def _finished(self, key: Any, rows: list[Row]) -> Any:
        """A document ended: record its rows in the ledger; the pending call, or None."""
        if self.ledger is None:
            return None
        return self.ledger.handle.record.remote(key, rows)

    def _item_row(self, key: Any, r: Result[Any]) -> Row:
        if self.item_format == "json":
            value: Any = self._adapter.dump_json(r.item).decode()
        else:
            value = self._adapter.dump_python(r.item, mode="json")
        return {
            "key": key,
            "position": r.position,
            "item": value,
            "start": r.start,
            "end": r.end,
            "match": r.match,
            "error": None,
            "error_type": None,
        }

    def _types(self) -> dict[str, Any]:
        """Each column's Arrow type but the key's (None: inferred, for a "dict" item)."""
        return {**_TYPES, "item": _TYPES["item"] if self.item_format == "json" else None}

    def _table(self, rows: list[Row]) -> Any:
        """map_batches output: the rows as one Arrow table, of the fixed types."""
        columns = {"key": pa.array([r["key"] for r in rows])}
        for name, kind in self._types().items():  # `.get`: a ledger's rows may predate a column
            columns[name] = pa.array([r.get(name) for r in rows], type=kind)
        return pa.table(columns)

    def _arrow_row(self, row: Row) -> dict[str, Any]:
        """flat_map output: Arrow scalars of the fixed types (plain values for a dict item).

        Ray builds each block's columns from these, so every block has the same schema, even
        a block of failures only (plain None values would give it null-typed columns).
        """
        typed: dict[str, Any] = {"key": pa.scalar(row["key"])}
        for name, kind in self._types().items():
            value = row.get(name)
            typed[name] = value if kind is None else pa.scalar(value, type=kind)
        return typed

    # -- the client ----------------------------------------------------------------------------

    def _get_client(self) -> Client:
        """This actor's client, made on first use inside the event loop that will use it."""
        if self._client is None:
            limiter = self.rate_limit.limiter() if self.rate_limit is not None else None
            client = Client(self.model, limiter=limiter, **self._client_options)
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
            self._client = client
        return self._client

    async def aclose(self) -> None:
        """Close the client (from the loop it runs in)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def __del__(self) -> None:
        # Ray Data drops the UDF when it shuts an actor down gracefully: close the connection
        # pool on the loop that owns it. Best effort (nothing to do after a crash).
        client, loop = getattr(self, "_client", None), getattr(self, "_loop", None)
        if client is None or loop is None or loop.is_closed() or not loop.is_running():
            return
        self._client = None
        try:
            future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                future.result(timeout=5)
        except Exception:  # a finalizer must not raise
            pass


# -- helpers -----------------------------------------------------------------------------------


async def _wait(ref: Any, *, cancel: bool = False) -> Any:
    """The value of a Ray object ref, awaited without blocking the event loop."""
    if not _in_asyncio():
        return await anyio.to_thread.run_sync(ray.get, ref, abandon_on_cancel=True)
    try:
        return await ref
    except asyncio.CancelledError:
        if cancel:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        raise


def _in_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _error_row(key: Any, error: MultitaskError) -> Row:
    return {
        "key": key,
        "position": None,
        "item": None,
        "start": None,
        "end": None,
        "match": None,
        "error": str(error) or type(error).__name__,
        "error_type": type(error).__name__,
    }


def _text_key(text: str | None) -> str:
    return "sha256:" + hashlib.sha256((text or "").encode()).hexdigest()


def _plain(value: Any) -> Any:
    """A numpy or Arrow scalar as the Python value (hashable, picklable, comparable)."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    as_py = getattr(value, "as_py", None)
    return as_py() if callable(as_py) else value


def _is_column(value: Any) -> bool:
    """Whether a batch's column (numpy, list, pandas, Arrow) rather than a row's value."""
    return value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__")


def _text(row: Mapping[str, Any], name: str) -> str | None:
    if name not in row:
        raise KeyError(f"the input has no {name!r} column (it has {sorted(row)})")
    value = _plain(row[name])
    return None if value is None else str(value)


def _has_column(batch: Any, name: str) -> bool:
    if isinstance(batch, pa.Table):
        return name in batch.column_names
    return name in batch


def _column(batch: Any, name: str) -> list[Any]:
    """A column of a batch (dict of numpy arrays or lists, pandas or Arrow) as a list."""
    if not _has_column(batch, name):
        raise KeyError(f"the input has no {name!r} column")
    if isinstance(batch, pa.Table):
        values: list[Any] = batch.column(name).to_pylist()
        return values
    column = batch[name]
    tolist: Callable[[], Iterable[Any]] | None = getattr(column, "tolist", None)
    return list(tolist()) if callable(tolist) else list(column)


def _worker_id() -> str:
    try:
        context = ray.get_runtime_context()
        return str(context.get_actor_id() or context.get_worker_id())
    except Exception:
        return f"pid-{os.getpid()}"
