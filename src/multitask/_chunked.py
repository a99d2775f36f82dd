"""A long text in many requests: chunks read one after another, cut answers continued.

    read_in_chunks -> for each chunk of DocumentPlan: for each Window it asks for:
                      one request (Engine.items over the window, its Quotes grounded there)
                      -> Chunk.place(the item's span): deliver, or drop a repeat / another's
                      -> Chunk.answered(cut=...): the next window, done, or stuck (raises)

Only used when `chunk_chars` or `max_continuations` asks for it; a plain extraction is one
request, as before. Chunks are read in document order, one request at a time, in the
caller's task: nothing runs in the background, so breaking out of the loop stops it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, NamedTuple

from ._align import Aligner
from ._document import DocumentPlan, Place, Window
from ._engine import Engine, schema_for
from ._exceptions import ConfigurationError, IncompleteOutputError
from ._options import Options, merge_options
from ._providers import Usage
from ._quote import contains_quote, quotes_in
from ._stream import ItemStream, StreamInfo

__all__ = ["CHUNK_OPTIONS", "CONTEXT_NOTE", "chunked_items", "refuse_chunks", "wants_chunks"]


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
CHUNK_OPTIONS = ("chunk_chars", "overlap_chars", "max_continuations")


def wants_chunks(engine: Engine, options: Mapping[str, Any]) -> bool:
    """Whether these options ask for a text to be read in chunks or continued after a cut.

    Read off the two options alone, on every call: whether they (and the rest) are valid is
    checked where they are used."""
    base = engine.options
    chunk_chars = options.get("chunk_chars", base.chunk_chars)
    return chunk_chars is not None or bool(options.get("max_continuations", base.max_continuations))


def refuse_chunks(engine: Engine, options: Mapping[str, Any], reader: str) -> None:
    """A `ConfigurationError` if the options ask for chunks where they cannot be had yet."""
    if wants_chunks(engine, options):
        raise ConfigurationError(
            f"{reader} reads a text in one request: chunk_chars and max_continuations are "
            "options of extract_stream and extract (not yet of extract_events, extract_many "
            "or the CLI)"
        )


def chunked_items(
    engine: Engine, item_type: Any, text: str, options: Mapping[str, Any]
) -> ItemStream[Any]:
    """`Engine.items` for a text read in chunks and continued after cuts."""
    opts = merge_options(engine.options, options) if options else engine.options
    schema = schema_for(item_type)
    grounded = contains_quote(schema.item_adapter)
    if not grounded and (opts.overlap_chars or opts.max_continuations):
        what = "overlap_chars" if opts.overlap_chars else "max_continuations"
        raise ConfigurationError(
            f"{what} needs the item type to have a multitask.Quote field: repeats and "
            f"continuations are told apart by where each item's quote is in the text, and "
            f"{schema.task_name} has none (chunk_chars alone works without one)"
        )
    plan = DocumentPlan(
        text,
        chunk_chars=opts.chunk_chars,
        overlap_chars=opts.overlap_chars,
        max_continuations=opts.max_continuations,
    )
    info = StreamInfo()
    item = getattr(schema, "item_type", item_type)
    agen = _read(engine, item_type, plan, opts, dict(options), info, grounded=grounded)
    return ItemStream(agen, info, item_type=item, model=engine.model)


async def _read(
    engine: Engine,
    item_type: Any,
    plan: DocumentPlan,
    base: Options,
    options: dict[str, Any],
    info: StreamInfo,
    *,
    grounded: bool,
) -> AsyncGenerator[Any, None]:
    text = plan.text
    system = (base.system or engine.prepare(item_type, "", options).spec.system) + _PART_NOTE
    delivered = 0
    for chunk in plan.chunks:
        window: Window | None = chunk.window()
        while window is not None:
            part = text[window.start : window.end]
            messages = list(base.messages or ())
            if window.context < window.start:
                context = text[window.context : window.start]
                messages.append({"role": "user", "content": CONTEXT_NOTE + context})
            asked = {k: v for k, v in options.items() if k not in CHUNK_OPTIONS}
            asked |= {"messages": messages, "system": system}
            # The window's own aligner: repeats inside one answer map to further occurrences
            # of the same words, as in any extraction; repeats across requests are told by
            # their span, by the chunk.
            aligner = None
            if grounded:
                aligner = Aligner(
                    text[window.context : window.end],
                    offset=window.context,
                    read_from=window.start - window.context,
                )
            # `resume`: a request that fails after items is retried too, its answer's first
            # items checked against those and skipped (each item once, as in extract_many).
            stream = engine.items(item_type, part, asked, aligner=aligner, resume=True)
            cut = False
            try:
                async with stream:
                    async for item in stream:
                        span = _span(item) if grounded else None
                        if span is None or chunk.place(span) is Place.DELIVER:
                            delivered += 1
                            info.items = delivered
                            yield item
            except IncompleteOutputError as exc:
                if chunk.max_continuations == 0:
                    exc.items_delivered = delivered
                    raise
                cut = True
            finally:
                _add_up(info, stream.info)
            try:
                window = chunk.answered(cut=cut)
            except IncompleteOutputError as exc:
                exc.items_delivered = delivered
                raise


def _span(item: Any) -> Span | None:
    """The item's place in the text: its first grounded Quote's, in field order."""
    for quote in quotes_in(item):
        span = quote.span
        if span is not None:
            return Span(*span)
    return None


def _add_up(total: StreamInfo, one: StreamInfo) -> None:
    """Fold one request's stream info into the document's."""
    total.attempts += one.attempts
    total.finish_reason = one.finish_reason
    total.skipped.extend(one.skipped)
    if one.usage is not None:
        was = total.usage or Usage()
        total.usage = Usage(
            was.input_tokens + one.usage.input_tokens, was.output_tokens + one.usage.output_tokens
        )
