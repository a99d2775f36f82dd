"""Extraction events: each item as it starts, grows and completes, for UIs that show progress.

    bytes -> SSEDecoder -> ServerSentEvent -> ProviderDecoder -> answer text
          -> PartialTaskParser -> ItemStarted / ItemUpdated / raw ItemDone -> ItemValidator

`PartialExtraction` is the sans-IO pipeline (the clock is an argument, so throttling is tested
without sleeping); `extract_events` runs it through the client's `Engine` (connection pool,
provider, options, retries and error translation), as `extract_stream` runs `Extraction`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union, cast

from pydantic import TypeAdapter

from ._align import Aligner
from ._chunked import refuse_chunks
from ._engine import Engine, Prepared
from ._extraction import Pipeline
from ._partial import (
    DEFAULT_MAX_SNAPSHOT_VALUES,
    ItemDone,
    ItemStarted,
    ItemUpdated,
    PartialTaskParser,
)
from ._parts import Input, resolve
from ._providers._base import ProviderDecoder, Usage
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._stream import ItemStream, StreamInfo
from ._taskparser import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEM_BYTES
from ._validation import InvalidItem, OnInvalid

__all__ = [
    "DEFAULT_MIN_INTERVAL",
    "EventStream",
    "ExtractionEvent",
    "Finished",
    "ItemDone",
    "ItemSkipped",
    "ItemStarted",
    "ItemUpdated",
    "PartialExtraction",
    "PartialTaskParser",
    "extract_events",
]

T = TypeVar("T")

#: Default least time between two `ItemUpdated` events, in seconds.
DEFAULT_MIN_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class ItemSkipped:
    """Item `index` did not validate and was dropped (`on_invalid="skip"`); `invalid` says why."""

    index: int
    invalid: InvalidItem


@dataclass(frozen=True, slots=True)
class Finished:
    """The extraction ended well: every item was delivered. The last event of a stream."""

    usage: Usage | None
    finish_reason: str | None


#: What `extract_events` yields.
ExtractionEvent = Union[ItemStarted, ItemUpdated, ItemDone[T], ItemSkipped, Finished]  # noqa: UP007


class PartialExtraction(Pipeline[T, ExtractionEvent[T]]):
    """One answer being read as events: feed it the stream, get what happened to each item.

    `feed_bytes(data, now)` returns the events one network chunk caused: `ItemStarted`,
    `ItemDone` with the validated item (or `ItemSkipped`), and at most one `ItemUpdated` per
    item in progress, only if `min_interval` seconds passed since the last update (`now` is
    any monotonic clock; by default, `time.monotonic()`). The last event of a stream that
    ended well is `Finished`. Errors and `close()` / `raise_for_outcome()` work as
    `Extraction`'s do (see `Pipeline`).
    """

    def __init__(
        self,
        item_type: TypeAdapter[T],
        decoder: ProviderDecoder,
        *,
        on_invalid: OnInvalid = "raise",
        validation_context: Any = None,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        partial_strings: bool = True,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        max_snapshot_values: int = DEFAULT_MAX_SNAPSHOT_VALUES,
        text: str | None = None,
        aligner: Aligner | None = None,
    ) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must not be negative, not {min_interval}")
        self._limits = (
            max_item_bytes,
            max_answer_bytes,
            max_depth,
            partial_strings,
            max_snapshot_values,
        )
        self._min_interval = min_interval
        self._last_update = -math.inf
        self._now: float | None = None
        self._calls_seen = 0
        super().__init__(
            item_type,
            decoder,
            on_invalid=on_invalid,
            validation_context=validation_context,
            max_event_bytes=max_event_bytes,
            text=text,
            aligner=aligner,
        )

    def feed_bytes(self, data: bytes, now: float | None = None) -> list[ExtractionEvent[T]]:
        """Feed one chunk of the response body, read at time `now` (seconds)."""
        self._now = now
        return super().feed_bytes(data)

    def feed_text(self, text: str, now: float | None = None) -> list[ExtractionEvent[T]]:
        """Feed answer text directly, as one chunk."""
        self._now = now
        return super().feed_text(text)

    def _new_parser(self, *, whole: bool) -> PartialTaskParser:
        max_item, max_answer, max_depth, partial_strings, max_values = self._limits
        first_index = 0
        if whole:
            first_index, self._calls_seen = self._calls_seen, self._calls_seen + 1
        return PartialTaskParser(
            partial_strings=partial_strings,
            max_item_bytes=max_item,
            max_answer_bytes=max_answer,
            max_depth=max_depth,
            max_snapshot_values=max_values,
            whole=whole,
            first_index=first_index,
        )

    def _feeder(self, parser: Any) -> Callable[[str], list[Any]]:
        return functools.partial(parser.feed, update=False)

    def _absorb(self, parsed: list[Any], out: list[ExtractionEvent[T]]) -> None:
        """Validate each completed item; an invalid one raises (after the events before it)."""
        validator = self.validator
        for event in parsed:
            if not isinstance(event, ItemDone):
                out.append(event)
                continue
            skipped = len(validator.skipped)
            valid = validator.validate([event.item])
            if valid:
                self.delivered += 1
                out.append(ItemDone(event.index, valid[0]))
            elif validator.error is not None:
                raise validator.error
            elif len(validator.skipped) > skipped:
                out.append(ItemSkipped(event.index, validator.skipped[-1]))

    def _snapshots(self, out: list[ExtractionEvent[T]]) -> None:
        """At most one snapshot per item in progress, and none within `min_interval`."""
        now = time.monotonic() if self._now is None else self._now
        if now - self._last_update < self._min_interval:
            return
        updated = False
        parsers = self._call_parsers.values() if self._call_parsers else (self.parser,)
        for parser in parsers:
            update = cast(PartialTaskParser, parser).update()
            if update is not None:
                out.append(update)
                updated = True
        if updated:
            self._last_update = now

    # The pipeline's hook, assigned rather than a `def` of that name: pyright takes a method
    # for an instance variable when it overrides a `ClassVar`.
    _after_feed = _snapshots

    def _after_close(self, out: list[ExtractionEvent[T]]) -> None:
        out.append(Finished(self.usage, self.finish_reason))


class EventStream(ItemStream[ExtractionEvent[T]]):
    """The async iterator `Client.extract_events` returns: events, then `Finished`.

    Like `ItemStream`: `async with` closes the HTTP response on the spot, and `usage`,
    `finish_reason`, `skipped` and `info` say how it went.
    """

    __slots__ = ()

    async def __aenter__(self) -> EventStream[T]:
        return self


def extract_events(
    engine: Engine,
    item_type: type[T] | Any,
    text: Input | None,
    *,
    min_interval: float = DEFAULT_MIN_INTERVAL,
    partial_strings: bool = True,
    max_snapshot_values: int = DEFAULT_MAX_SNAPSHOT_VALUES,
    **options: Any,
) -> EventStream[T]:
    """Stream what happens to each item of `item_type` in `text`, as it happens.

    Yields `ItemStarted(index)`, then `ItemUpdated(index, partial)` snapshots (at most one per
    network chunk, and at least `min_interval` seconds apart), then `ItemDone(index, item)`
    with the validated item (or `ItemSkipped` under `on_invalid="skip"`); the last event is
    `Finished(usage, finish_reason)`. Errors are raised as `extract_stream` raises them, after
    the events before them. `partial_strings=False` keeps strings out of snapshots until they
    are complete. An item holding more than `max_snapshot_values` values gets no more
    `ItemUpdated` (each is a full copy) until its `ItemDone`. A request retried before any
    item was done starts again at `ItemStarted(0)`: a new `ItemStarted` for an index
    replaces what was shown for it.
    """
    if min_interval < 0:
        raise ValueError(f"min_interval must not be negative, not {min_interval}")
    content = resolve(text)
    prepared: Prepared[T] = engine.prepare(
        item_type, content.text, options, parts=content.parts, page_of=content.page_of
    )
    refuse_chunks(engine, options, "extract_events")
    opts = prepared.opts

    def new_pipeline() -> PartialExtraction[T]:
        return PartialExtraction(
            prepared.schema.item_adapter,
            engine.provider.decoder(prepared.spec.mode),
            on_invalid=opts.on_invalid,
            validation_context=opts.validation_context,
            max_item_bytes=opts.max_item_bytes,
            max_answer_bytes=opts.max_answer_bytes,
            max_depth=opts.max_depth,
            partial_strings=partial_strings,
            min_interval=min_interval,
            max_snapshot_values=max_snapshot_values,
            aligner=prepared.aligner,
        )

    info = StreamInfo()
    item = getattr(prepared.schema, "item_type", item_type)
    agen = engine.run(prepared, info, new_pipeline)
    return EventStream(agen, info, item_type=item, model=engine.model)
