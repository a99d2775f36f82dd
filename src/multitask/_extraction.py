"""The sans-IO pipeline: stream bytes (or provider events) in, validated items out.

    bytes -> SSEDecoder -> ServerSentEvent -> StreamDecoder -> answer text
          -> TaskParser -> raw items -> ItemValidator -> T

Nothing here touches a socket or an event loop; the client and the `from_streaming_response`
helpers are thin loops around `Extraction`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from ._exceptions import IncompleteOutputError, MultitaskError, RefusalError
from ._ndjson import NDJSONDecoder
from ._providers._base import StreamDecoder, Usage
from ._sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent, SSEDecoder
from ._taskparser import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_ITEM_BYTES, TaskParser
from ._validation import InvalidItem, ItemValidator, OnInvalid

__all__ = ["Extraction"]

T = TypeVar("T")


class Extraction(Generic[T]):
    """One answer being read: feed it the stream, get each validated item as it completes.

    Every `feed_*` method returns the items completed by what it was given. An error found
    partway through a feed (a bad item, malformed JSON, an error event) is raised only after
    the items before it were returned: by the next call, or by `close()`.

    `close()` says the stream ended; it returns the last items, and `raise_for_outcome()`
    then raises if the answer was cut off, refused, filtered or malformed.
    """

    def __init__(
        self,
        item_type: TypeAdapter[T],
        decoder: StreamDecoder,
        *,
        on_invalid: OnInvalid = "raise",
        validation_context: Any = None,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        scalar_items: bool = True,
    ) -> None:
        self.decoder = decoder
        #: Splits the body into events: server-sent events, or NDJSON lines for some providers.
        self.events: SSEDecoder | NDJSONDecoder = (
            NDJSONDecoder(max_event_bytes=max_event_bytes)
            if decoder.framing == "ndjson"
            else SSEDecoder(max_event_bytes=max_event_bytes)
        )
        self.parser = TaskParser(
            max_item_bytes=max_item_bytes,
            max_answer_bytes=max_answer_bytes,
            scalar_items=scalar_items,
        )
        self.validator: ItemValidator[T] = ItemValidator(
            item_type, context=validation_context, on_invalid=on_invalid
        )
        self._limits = (max_item_bytes, max_answer_bytes, scalar_items)
        # Under mode="parallel_tools": one parser per tool call, each call one item.
        self._call_parsers: dict[Any, TaskParser] = {}
        self._pending: MultitaskError | None = None
        self._closed = False
        #: Items handed out so far.
        self.delivered = 0

    @property
    def usage(self) -> Usage | None:
        """Token usage, once the provider reported it."""
        return self.decoder.usage

    @property
    def finish_reason(self) -> str | None:
        """The provider's finish reason, once it sent one."""
        return self.decoder.finish_reason

    @property
    def skipped(self) -> list[InvalidItem]:
        """Items dropped under `on_invalid="skip"`."""
        return self.validator.skipped

    def feed_bytes(self, data: bytes) -> list[T]:
        """Feed raw stream bytes (the response body), in pieces of any size."""
        self._check()
        out: list[T] = []
        try:
            for event in self.events.feed(data):
                text = self.decoder.event(event)
                if text:
                    self._text(text, out)
                elif self.decoder.calls:
                    self._take_calls(out)
        except MultitaskError as exc:
            self._defer(exc, out)
        self.delivered += len(out)
        return out

    def feed_event(self, event: ServerSentEvent) -> list[T]:
        """Feed one decoded server-sent event."""
        return self._one(self.decoder.event, event)

    def feed_payload(self, payload: Mapping[str, Any]) -> list[T]:
        """Feed one parsed provider event (an SSE event's JSON, or an SDK chunk as a dict)."""
        return self._one(self.decoder.payload, payload)

    def feed_text(self, text: str) -> list[T]:
        """Feed answer text directly (a complete response's arguments or content)."""
        return self._one(lambda t: t, text)

    def close(self) -> list[T]:
        """Say the stream ended; return the items that completes."""
        out: list[T] = []
        if self._closed:
            return out
        self._closed = True
        if self._pending is not None:
            return out
        try:
            for event in self.events.end():
                text = self.decoder.event(event)
                if text:
                    self._text(text, out)
                elif self.decoder.calls:
                    self._take_calls(out)
            parsed: MultitaskError | None = None
            if self._call_parsers:
                for parser in self._call_parsers.values():
                    raw = parser.close()
                    if raw:
                        out.extend(self.validator.validate(raw))
                    parsed = parsed or parser.error
            else:
                leftover = self.decoder.leftover()
                if leftover:
                    self._text(leftover, out)
                raw = self.parser.close()
                if raw:
                    out.extend(self.validator.validate(raw))
                parsed = self.parser.error
            error: MultitaskError | None = self.validator.error
            if error is None:
                outcome = self.decoder.outcome_error(self.delivered + len(out))
                if isinstance(outcome, RefusalError):
                    error = outcome
                elif parsed is not None:
                    # A cut-off or filtered finish explains a broken answer better than the
                    # parse error it caused (even one with no JSON yet).
                    error = outcome if outcome is not None else parsed
            if isinstance(error, IncompleteOutputError):
                # The parser counts the answer's items, skipped invalid ones included.
                error.items_delivered = self.delivered + len(out)
            if error is not None:
                raise error
        except MultitaskError as exc:
            self._pending = exc
        self.delivered += len(out)
        return out

    def raise_for_outcome(self) -> None:
        """After `close()`: raise what went wrong, if anything did."""
        if self._pending is not None:
            raise self._pending

    # -- internals -----------------------------------------------------------------------------

    def _text(self, text: str, out: list[T]) -> None:
        raw = self.parser.feed(text)
        if raw:
            out.extend(self.validator.validate(raw))
            if self.validator.error is not None:
                raise self.validator.error

    def _take_calls(self, out: list[T]) -> None:
        calls, self.decoder.calls = self.decoder.calls, []
        for key, text in calls:
            parser = self._call_parsers.get(key)
            if parser is None:
                max_item, max_answer, scalar = self._limits
                parser = TaskParser(
                    max_item_bytes=max_item,
                    max_answer_bytes=max_answer,
                    scalar_items=scalar,
                    whole=True,
                )
                self._call_parsers[key] = parser
            raw = parser.feed(text)
            if raw:
                out.extend(self.validator.validate(raw))
                if self.validator.error is not None:
                    raise self.validator.error

    def _one(self, decode: Any, value: Any) -> list[T]:
        self._check()
        out: list[T] = []
        try:
            text = decode(value)
            if text:
                self._text(text, out)
            elif self.decoder.calls:
                self._take_calls(out)
        except MultitaskError as exc:
            self._defer(exc, out)
        self.delivered += len(out)
        return out

    def _check(self) -> None:
        if self._pending is not None:
            raise self._pending
        if self._closed:
            raise RuntimeError("the extraction was closed")

    def _defer(self, exc: MultitaskError, out: list[T]) -> None:
        if not out:
            self._pending = exc
            raise exc
        self._pending = exc
