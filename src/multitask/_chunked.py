"""A long text in many requests: chunks read in order or side by side, cut answers continued.

    ChunkedStream -> _Reader.chunk_items(chunk), for each chunk of the DocumentPlan:
                     for each Window the chunk asks for: one request (Engine.items over the
                     window, its Quotes grounded there)
                     -> Chunk.place(the item's span): keep, or drop a repeat / another's
                     -> Chunk.answered(cut=...): the next window, done, or stuck (raises)
                     -> release what no later answer can precede (order="document")

Only used when `chunk_chars` or `max_continuations` asks for it; a plain extraction is one
request, as before. With `chunk_concurrency=1` (the default) chunks are read one request at
a time in the caller's task: nothing runs in the background, so breaking out of the loop
stops it. With more, `async with` the stream: its block owns the task group that reads the
next chunks while the caller handles the items of the first (PEP 789: the generator the
caller iterates only receives from channels, it never yields inside a task group).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._align import Aligner
from ._document import Chunk, DocumentPlan, Place, Window, check_sizes
from ._engine import Engine, schema_for
from ._exceptions import ConfigurationError, IncompleteOutputError
from ._options import Options, merge_options
from ._parts import resolve
from ._quote import contains_quote, first_quote
from ._stream import ItemStream, StreamInfo
from ._telemetry import NO_EXTRACTION, ExtractionTrace

__all__ = [
    "CHUNK_OPTIONS",
    "CONTEXT_NOTE",
    "ChunkedStream",
    "chunk_settings",
    "chunked_items",
    "document_items",
    "refuse_chunks",
    "wants_chunks",
]


T = TypeVar("T")


class Span(NamedTuple):
    """Where an item is in the text: its first Quote's span."""

    start: int
    end: int


#: How a request's context message begins: text before the part to read, not to extract from.
CONTEXT_NOTE = (
    "Context only: the text just before the part you are given in the next message. "
    "Do not extract anything from it.\n\n"
)

#: Added to the system prompt of a request that reads part of a text.
_PART_NOTE = (
    " The last message is the part of a longer text to extract from; a message before it "
    "marked as context is only there to help you read it."
)


#: The options only `chunked_items` reads.
CHUNK_OPTIONS = (
    "chunk_chars",
    "overlap_chars",
    "max_continuations",
    "order",
    "chunk_concurrency",
    "key",
)


def wants_chunks(engine: Engine, options: Mapping[str, Any]) -> bool:
    """Whether these options ask for a text to be read in chunks, continued after a cut, or
    its items told apart by a `key`.

    Read off those options alone, on every call: whether they (and the rest) are valid is
    checked where they are used."""
    base = engine.options
    chunk_chars = options.get("chunk_chars", base.chunk_chars)
    return (
        chunk_chars is not None
        or bool(options.get("max_continuations", base.max_continuations))
        or options.get("key", base.key) is not None
    )


def refuse_chunks(engine: Engine, options: Mapping[str, Any], reader: str) -> None:
    """A `ConfigurationError` if the options ask for chunks where they cannot be had yet."""
    if wants_chunks(engine, options):
        raise ConfigurationError(
            f"{reader} reads a text in one request: chunk_chars, max_continuations and key "
            "are options of extract_stream, extract and extract_many (not of "
            "extract_events, whose events follow one answer)"
        )


def document_items(
    engine: Engine,
    item_type: Any,
    source: object,
    options: Mapping[str, Any],
    *,
    resume: bool,
    resume_after: tuple[int, int] | None = None,
) -> ItemStream[Any]:
    """The items of one input (a text, a `Document`, an `Image`, a `PDF` or a list of them):
    in chunks when the options ask for it (a text or `Document` only), else one request.

    `resume_after`: the span of the last item a reader already has of this text (chunked
    reading only): what comes before it in the text is not read again."""
    content = resolve(source)
    text, parts, page_of = content.text, content.parts, content.page_of
    if parts is not None:
        if wants_chunks(engine, options):
            raise ConfigurationError(
                "chunk_chars, max_continuations and key read one text in chunks: they take "
                "a str or a multitask.Document, not a list of parts or an image or PDF"
            )
        return engine.items(item_type, text, options, resume=resume, parts=parts)
    if text is not None and wants_chunks(engine, options):
        return chunked_items(
            engine, item_type, text, options, resume_after=resume_after, page_of=page_of
        )
    return engine.items(item_type, text, options, resume=resume, page_of=page_of)


def chunk_settings(
    engine: Engine, item_type: Any, options: Mapping[str, Any]
) -> tuple[Options, bool]:
    """The options of a chunked reading and whether its items are grounded; a
    `ConfigurationError` for chunk options that cannot be had (checked once by
    `extract_many`, before any document)."""
    opts = merge_options(engine.options, options) if options else engine.options
    schema = schema_for(item_type)
    grounded = contains_quote(schema.item_adapter)
    if not grounded and opts.max_continuations:
        raise ConfigurationError(
            "max_continuations needs the item type to have a multitask.Quote field: a "
            "continuation starts after the last item's quote in the text, and "
            f"{schema.task_name} has none (chunk_chars alone works without one)"
        )
    if not grounded and opts.overlap_chars and opts.key is None:
        raise ConfigurationError(
            "overlap_chars needs the item type to have a multitask.Quote field, or a key=: "
            "an item read twice in an overlap is told apart by where its quote is, or by its "
            f"key, and {schema.task_name} has no Quote (chunk_chars alone works without one)"
        )
    check_sizes(opts.chunk_chars, opts.overlap_chars, opts.max_continuations)
    if opts.chunk_concurrency < 1:
        raise ConfigurationError(
            f"chunk_concurrency must be at least 1, not {opts.chunk_concurrency}"
        )
    return opts, grounded


def chunked_items(
    engine: Engine,
    item_type: Any,
    text: str,
    options: Mapping[str, Any],
    *,
    resume_after: tuple[int, int] | None = None,
    page_of: Callable[[int], int | None] | None = None,
) -> ChunkedStream[Any]:
    """`Engine.items` for a text read in chunks and continued after cuts (`page_of`: the
    page of an offset in it, for the Quotes)."""
    opts, grounded = chunk_settings(engine, item_type, options)
    plan = DocumentPlan(
        text,
        chunk_chars=opts.chunk_chars,
        overlap_chars=opts.overlap_chars,
        max_continuations=opts.max_continuations,
        resume_after=resume_after,
    )
    asked = {k: v for k, v in options.items() if k not in CHUNK_OPTIONS}
    system = opts.system or engine.prepare(item_type, "", asked).spec.system
    if opts.chunk_chars is not None or opts.max_continuations:
        system += _PART_NOTE
    reader = _Reader(
        engine, item_type, plan, opts, asked, system, grounded=grounded, page_of=page_of
    )
    item = getattr(schema_for(item_type), "item_type", item_type)
    return ChunkedStream(reader, item_type=item, model=engine.model)


class ChunkedStream(ItemStream[T]):
    """The `ItemStream` of a text read in chunks.

    With `chunk_concurrency` above 1 it must be used as `async with stream:` (which
    `extract()` does): that block owns the tasks that read chunks ahead of the caller."""

    __slots__ = ("_group", "_reader")

    def __init__(self, reader: _Reader, *, item_type: Any, model: str | None) -> None:
        concurrency = reader.base.chunk_concurrency
        agen = reader.one_by_one() if concurrency == 1 else _needs_async_with(concurrency)
        super().__init__(agen, reader.info, item_type=item_type, model=model)
        self._reader = reader
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> ChunkedStream[T]:
        reader = self._reader
        if reader.base.chunk_concurrency > 1 and self._group is None:
            group = anyio.create_task_group()
            await group.__aenter__()
            self._group = group
            await self._agen.aclose()  # the one that would have said "use async with"
            self._agen = reader.side_by_side(group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            group, self._group = self._group, None
            if group is not None:
                group.cancel_scope.cancel()  # chunks read ahead that nobody will take
                # Not handed the caller's exception, which goes on as it is (a task group
                # would wrap it in an ExceptionGroup); the chunks' own errors come as items.
                await group.__aexit__(None, None, None)


async def _needs_async_with(concurrency: int) -> AsyncGenerator[Any, None]:
    raise ConfigurationError(
        f"chunk_concurrency={concurrency} reads chunks in background tasks, which need a "
        "block to live in: use `async with client.extract_stream(...) as items:` (or "
        "extract()), or chunk_concurrency=1"
    )
    yield  # an async generator  # pragma: no cover


@dataclass(eq=False)
class _Failed:
    """A chunk's error, sent after its items to whoever takes them."""

    error: Exception


@dataclass(eq=False)
class _Reader:
    """One text's chunks and how to read them."""

    engine: Engine
    item_type: Any
    plan: DocumentPlan
    base: Options
    asked: dict[str, Any]  # the options of every request (the chunk options left out)
    system: str
    grounded: bool
    #: The page of an offset in the text (a `Document`'s), for the Quotes.
    page_of: Callable[[int], int | None] | None = None
    info: StreamInfo = field(default_factory=StreamInfo)
    #: The `key`s of the items delivered, when the options give a `key`.
    keys: set[Any] = field(default_factory=set)
    #: The text's extraction span, from the first item asked for; its requests go under it.
    trace: ExtractionTrace = NO_EXTRACTION

    def request(self, window: Window, chunk: Chunk) -> ItemStream[Any]:
        """One request over `window` (the chunk's latest), its quotes grounded in the
        window's text."""
        text = self.plan.text
        messages = list(self.base.messages or ())
        if window.context < window.start:
            context = text[window.context : window.start]
            messages.append({"role": "user", "content": CONTEXT_NOTE + context})
        asked = self.asked | {"messages": messages, "system": self.system}
        # The window's own aligner: repeats inside one answer map to further occurrences of
        # the same words, as in any extraction; repeats across requests are told by their
        # span, by the chunk.
        aligner = None
        if self.grounded:
            aligner = Aligner(
                text[window.context : window.end],
                offset=window.context,
                read_from=window.start - window.context,
                page_of=self.page_of,
            )
        # `resume`: a request that fails after items is retried too, its answer's first
        # items checked against those and skipped (each item once, as in extract_many).
        part = text[window.start : window.end]
        within = (self.trace, chunk.index, chunk.requests)
        return self.engine.items(
            self.item_type, part, asked, aligner=aligner, resume=True, within=within
        )

    async def chunk_items(self, chunk: Chunk) -> AsyncGenerator[Any, None]:
        """One chunk's new items, in the reader's order; then its error, if it failed.

        order="document": an item waits until no later answer can bring one before it: the
        end of its answer, after which the chunk reads only from the next window's start."""
        in_order = self.base.order == "document" and self.grounded
        key, keys = self.base.key, self.keys
        held: list[tuple[int, int, Any]] = []  # (start, arrival, item), a heap
        arrivals = 0
        try:
            window: Window | None = chunk.window()
            while window is not None:
                stream = self.request(window, chunk)
                cut = False
                try:
                    async with stream:
                        async for item in stream:
                            span = _span(item) if self.grounded else None
                            if span is not None and chunk.place(span) is not Place.DELIVER:
                                continue
                            if key is not None:
                                known = key(item)
                                if known in keys:
                                    continue
                                keys.add(known)
                            if in_order and span is not None:
                                heapq.heappush(held, (span.start, arrivals, item))
                                arrivals += 1
                            else:
                                yield item
                except IncompleteOutputError:
                    if chunk.max_continuations == 0:
                        raise
                    cut = True
                finally:
                    _add_up(self.info, stream.info)
                window = chunk.answered(cut=cut)
                frontier = chunk.end if window is None else window.start
                while held and held[0][0] < frontier:
                    yield heapq.heappop(held)[2]
        except Exception:
            while held:  # the items before an error come first
                yield heapq.heappop(held)[2]
            raise

    async def one_by_one(self) -> AsyncGenerator[Any, None]:
        """Every chunk's items, one request at a time, in the caller's task."""
        info = self.info
        self.start_trace()
        try:
            for chunk in self.plan.todo:
                async for item in self.chunk_items(chunk):
                    info.items += 1
                    yield item
        except IncompleteOutputError as exc:
            exc.items_delivered = info.items
            self.end_trace(exc)
            raise
        except BaseException as exc:
            self.end_trace(exc)
            raise
        self.end_trace(None)

    async def side_by_side(self, group: TaskGroup) -> AsyncGenerator[Any, None]:
        """Every chunk's items, up to `chunk_concurrency` chunks read at once in `group`.

        order="document": chunk after chunk, each chunk's own channel holding what it read
        ahead; order="arrival": one channel, items as they come from any chunk."""
        slots = anyio.Semaphore(self.base.chunk_concurrency)
        info = self.info
        self.start_trace()
        try:
            if self.base.order == "document":
                send_order, chunks = anyio.create_memory_object_stream[
                    MemoryObjectReceiveStream[Any]
                ](math.inf)
                group.start_soon(self._start_in_order, send_order, slots, group)
                with chunks:
                    async for receive in chunks:
                        with receive:
                            async for got in receive:
                                if isinstance(got, _Failed):
                                    raise got.error
                                info.items += 1
                                yield got
                        slots.release()  # this chunk is taken: read one more ahead
            else:
                send, receive = anyio.create_memory_object_stream[Any](16)
                group.start_soon(self._start_as_slots_free, send, slots, group)
                with receive:
                    async for got in receive:
                        if isinstance(got, _Failed):
                            raise got.error
                        info.items += 1
                        yield got
        except IncompleteOutputError as exc:
            exc.items_delivered = info.items
            self.end_trace(exc)
            raise
        except BaseException as exc:
            self.end_trace(exc)
            raise
        self.end_trace(None)

    def start_trace(self) -> None:
        """The text's extraction span starts (under the span current now)."""
        self.trace = self.engine.telemetry.extraction(schema_for(self.item_type).task_name)

    def end_trace(self, error: BaseException | None) -> None:
        """The text's extraction span ends: its chunks read and the requests that continued
        one (after a cut answer)."""
        chunks = [chunk.requests for chunk in self.plan.chunks if chunk.requests]
        continuations = sum(requests - 1 for requests in chunks)
        self.trace.end(self.info, error, chunks=len(chunks), continuations=continuations)

    async def _start_in_order(
        self,
        send_order: MemoryObjectSendStream[MemoryObjectReceiveStream[Any]],
        slots: anyio.Semaphore,
        group: TaskGroup,
    ) -> None:
        async with send_order:
            for chunk in self.plan.todo:
                await slots.acquire()  # released when the caller has taken the chunk
                send, receive = anyio.create_memory_object_stream[Any](math.inf)
                await send_order.send(receive)
                group.start_soon(self._read_chunk, chunk, send, None)

    async def _start_as_slots_free(
        self, send: MemoryObjectSendStream[Any], slots: anyio.Semaphore, group: TaskGroup
    ) -> None:
        async with send:
            for chunk in self.plan.todo:
                await slots.acquire()  # released when the chunk is read
                group.start_soon(self._read_chunk, chunk, send.clone(), slots)

    async def _read_chunk(
        self, chunk: Chunk, send: MemoryObjectSendStream[Any], slots: anyio.Semaphore | None
    ) -> None:
        async with send:
            try:
                async for item in self.chunk_items(chunk):
                    await send.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the caller stopped reading; the group is being cancelled
            except Exception as exc:  # the caller's to raise, after the items before it
                with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await send.send(_Failed(exc))
            finally:
                if slots is not None:
                    slots.release()


def _span(item: Any) -> Span | None:
    """The item's place in the text: its first grounded Quote's, in field order."""
    quote = first_quote(item)
    span = None if quote is None else quote.span
    return None if span is None else Span(*span)


def _add_up(total: StreamInfo, one: StreamInfo) -> None:
    """Fold one request's stream info into the document's."""
    total.attempts += one.attempts
    total.finish_reason = one.finish_reason
    total.skipped.extend(one.skipped)
    if one.usage is not None:
        total.usage = one.usage if total.usage is None else total.usage + one.usage
