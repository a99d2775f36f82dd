"""Fan-out: extraction over many documents on one event loop, with results as they stream.

Structure: `extract_many` is an async context manager that owns a task group. Inside it a
feeder reads the documents lazily and starts one worker per document, never more than
`max_concurrency` at once; workers push `Result`s into a bounded memory channel, which is
what the caller iterates. Leaving the block cancels the task group, so nothing outlives it.
Each worker reads its document as `extract_stream` does (`document_items`: in chunks when
the options ask for it), with exactly-once retries.
"""

from __future__ import annotations

import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from ._chunked import ChunkedStream, chunk_settings, document_items, wants_chunks
from ._engine import Engine
from ._exceptions import ConfigurationError, MultitaskError
from ._parts import PDF, Image, Input
from ._providers import Usage
from ._quote import contains_quote, first_quote
from ._sources import Document
from ._stream import ItemStream

__all__ = ["Documents", "Progress", "Result", "Results", "extract_many"]

T = TypeVar("T")

#: What `extract_many` reads: texts (or `Document`s, images, PDFs, lists of parts, as
#: `extract_stream` takes them), or `(key, text)` pairs, from a plain or async iterable; or a
#: mapping of keys to texts, read as its `(key, text)` items.
Documents = (
    Mapping[Any, Input]
    | Iterable[Input]
    | Iterable[tuple[Any, Input]]
    | AsyncIterable[Input]
    | AsyncIterable[tuple[Any, Input]]
)

#: The types a document can be (a list is a list of parts).
_INPUTS = (str, Document, Image, PDF, list)


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """One event of a fan-out: an item, or the end of a document (finished or failed).

    `index` is the document's position in the input, or the key given with it. An item event
    has `item` (and `position`, the item's place in its document, counted from 0 in each
    run); when the item type has a `multitask.Quote`, also `start`, `end` and `match`: the
    span of the item's first grounded Quote (in field order), None for an item without one,
    and `page`, the page its start is on (for a `multitask.Document` with pages).
    The document's last event has `done=True` and either `usage` (finished) or `error`
    (failed for good).
    """

    index: Any
    item: T | None = None
    position: int | None = None
    done: bool = False
    error: MultitaskError | None = None
    usage: Usage | None = None
    items: int = 0  # on the last event: how many items the document delivered
    start: int | None = None
    end: int | None = None
    match: str | None = None
    page: int | None = None  # the page `start` is on, for a `Document` with pages

    @property
    def ok(self) -> bool:
        """False only for a document that failed."""
        return self.error is None


@dataclass
class Progress:
    """Running totals of a fan-out, for a progress display."""

    documents_done: int = 0
    documents_failed: int = 0
    in_flight: int = 0
    items: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def documents_ended(self) -> int:
        return self.documents_done + self.documents_failed

    @property
    def requests_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.requests * 60.0 / elapsed if elapsed > 0 else 0.0


class Results(Generic[T]):
    """The async iterator `extract_many` gives: `Result`s in the order they happen."""

    def __init__(self, receive: MemoryObjectReceiveStream[Result[T]], progress: Progress) -> None:
        self._receive = receive
        #: Totals so far; updated as documents start and end.
        self.progress = progress

    def __aiter__(self) -> AsyncIterator[Result[T]]:
        return self._receive.__aiter__()


@asynccontextmanager
async def extract_many(
    engine: Engine,
    item_type: Any,
    documents: Documents,
    *,
    max_concurrency: int,
    buffer: int,
    on_progress: Callable[[Progress], None] | None,
    options: Mapping[str, Any],
    resume_after: Mapping[Any, tuple[int, int]] | None = None,
) -> AsyncIterator[Results[Any]]:
    """See `Client.extract_many`."""
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
    # What would fail every document (a bad option, a mode the provider lacks, an item type
    # that has no schema, chunk options it cannot have) is raised here, once, rather than as
    # one failed `Result` each.
    prepared = engine.prepare(item_type, "", options)
    if wants_chunks(engine, options):
        chunk_settings(engine, item_type, options)
    send, receive = anyio.create_memory_object_stream[Result[Any]](buffer)
    progress = Progress()
    fanout = _Fanout(engine, item_type, options, send, progress, on_progress)
    fanout.grounded = contains_quote(prepared.schema.item_adapter)
    fanout.resume_after = resume_after or {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(fanout.feed, documents, max_concurrency)
        try:
            with receive:
                yield Results(receive, progress)
        finally:
            tg.cancel_scope.cancel()
    if fanout.failure is not None:
        raise fanout.failure  # after the documents before it, which ended as they would


class _Fanout:
    """The feeder and the workers of one `extract_many`."""

    def __init__(
        self,
        engine: Engine,
        item_type: Any,
        options: Mapping[str, Any],
        send: ObjectSendStream[Result[Any]],
        progress: Progress,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.engine = engine
        self.item_type = item_type
        self.options = options
        self.send = send
        self.progress = progress
        self.on_progress = on_progress
        #: Whether items have Quotes (then each item's `Result` has its span).
        self.grounded = False
        #: By document key: the span of the last item the caller has of it (chunked reading
        #: then starts after it).
        self.resume_after: Mapping[Any, tuple[int, int]] = {}
        #: What reading the documents raised (a document that is not a text, an error of
        #: the caller's iterable), or a worker's `ConfigurationError`: no more documents are
        #: started, those started end as they would, and `extract_many` raises it.
        self.failure: Exception | None = None

    async def feed(self, documents: Documents, max_concurrency: int) -> None:
        slots = anyio.Semaphore(max_concurrency)
        async with self.send, anyio.create_task_group() as workers:
            try:
                async with aclosing(_each(documents)) as each:  # closed at once on a break
                    async for index, text in each:
                        await slots.acquire()
                        if self.failure is not None:  # a worker's `ConfigurationError`
                            break
                        workers.start_soon(self.work, index, text, slots)
            except Exception as exc:  # the workers started finish; the error is the caller's
                self.failure = exc

    async def work(self, index: Any, text: Input, slots: anyio.Semaphore) -> None:
        progress = self.progress
        progress.in_flight += 1
        self._report()
        delivered = 0
        try:
            stream: ItemStream[Any] = document_items(
                self.engine,
                self.item_type,
                text,
                self.options,
                resume=True,
                resume_after=self.resume_after.get(index),
            )

            async def deliver() -> None:
                nonlocal delivered
                grounded = self.grounded
                async for item in stream:
                    progress.items += 1
                    quote = first_quote(item) if grounded else None
                    if quote is None:
                        result = Result(index, item=item, position=delivered)
                    else:
                        result = Result(
                            index,
                            item=item,
                            position=delivered,
                            start=quote.start,
                            end=quote.end,
                            match=quote.match,
                            page=quote.page,
                        )
                    await self.send.send(result)
                    delivered += 1

            try:
                if isinstance(stream, ChunkedStream):  # its block may own chunk-reading tasks
                    async with stream:
                        await deliver()
                else:
                    # try/finally rather than `async with stream`, which keeps a bound
                    # `__aexit__` alive per document for the collector to walk.
                    try:
                        await deliver()
                    finally:
                        await stream.aclose()
            finally:
                progress.requests += stream.info.attempts
                usage = stream.info.usage
                if usage is not None:
                    progress.input_tokens += usage.input_tokens
                    progress.output_tokens += usage.output_tokens
            last: Result[Any] = Result(index, done=True, usage=usage, items=delivered)
            progress.documents_done += 1
        except ConfigurationError as exc:
            # No document could succeed (a base URL changed to one that cannot be sent to,
            # say): no more are started, and `extract_many` raises this once.
            self.failure = self.failure or exc
            return
        except MultitaskError as exc:
            last = Result(index, done=True, error=exc, items=delivered)
            progress.documents_failed += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the reader has gone; the task group is being cancelled
        except Exception as exc:  # a bug: fail this document, not the batch
            error = MultitaskError(f"unexpected {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            last = Result(index, done=True, error=error, items=delivered)
            progress.documents_failed += 1
        finally:
            progress.in_flight -= 1
            slots.release()
        self._report()
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.send.send(last)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


async def _each(documents: Documents) -> AsyncGenerator[tuple[Any, Input], None]:
    """(key, text) for each document: its position, unless it came as a (key, text) pair."""
    position = 0
    if isinstance(documents, Mapping):
        documents = documents.items()
    if isinstance(documents, AsyncIterable):
        async for document in documents:
            yield _keyed(position, document)
            position += 1
    else:
        for document in documents:
            yield _keyed(position, document)
            position += 1


def _keyed(position: int, document: Any) -> tuple[Any, Input]:
    if isinstance(document, _INPUTS):
        return position, document
    if isinstance(document, tuple) and len(document) == 2 and isinstance(document[1], _INPUTS):
        return document[0], document[1]
    if isinstance(document, tuple) and len(document) == 2:
        raise TypeError(
            f"document {position} (key {document[0]!r}) is not a text: its value is of type "
            f"{type(document[1]).__name__}"
        )
    raise TypeError(
        f"document {position} is of type {type(document).__name__}: expected a text or a "
        "(key, text) pair"
    )
