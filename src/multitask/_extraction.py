"""The sans-IO pipeline: stream bytes (or provider events) in, validated items out.

    bytes -> SSEDecoder -> ServerSentEvent -> ProviderDecoder -> answer text
          -> TaskParser -> raw items -> ItemValidator -> T

Nothing here touches a socket or an event loop; the client and the `from_streaming_response`
helpers are thin loops around `Extraction`. `Pipeline` is what `Extraction` and the partial
event pipeline (`PartialExtraction`) share: framing, decoding, parallel tool calls, deferred
errors and how the outcome is judged; they differ only in their parser and in what they emit.

`feed_bytes` is the per-event path: a whole event of the shape the decoder learned (see
`_fastpath.Template`) costs one short C parse of its answer string; any other input goes
through `SSEDecoder.frames` and the decoder. Both ways give the same result (`test_fastpath`),
and a decoder made with `fast=False` (or `MULTITASK_FASTPATH=0`) takes the second way only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import TypeAdapter
from pydantic_core import from_json

from ._align import Aligner
from ._exceptions import IncompleteOutputError, MultitaskError, RefusalError
from ._fastpath import Template, drop_member
from ._ndjson import NDJSONDecoder
from ._providers._base import ProviderDecoder, Usage
from ._quote import contains_quote
from ._sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent, SSEDecoder
from ._taskparser import (
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEM_BYTES,
    TaskParser,
)
from ._validation import InvalidItem, ItemValidator, OnInvalid

__all__ = ["Extraction", "Pipeline"]

T = TypeVar("T")
E = TypeVar("E")  # what a pipeline emits: items, or events


class _Parser(Protocol):
    """What a pipeline needs of its parser (`TaskParser`, `PartialTaskParser`)."""

    error: MultitaskError | None

    def feed(self, text: str) -> list[Any]: ...

    def close(self) -> list[Any]: ...


class Pipeline(Generic[T, E]):
    """Reads one answer: feed it the stream, get what the parser completed (`E`s).

    Every `feed_*` method returns what the input completed. An error found partway through a
    feed (a bad item, malformed JSON, an error event) is raised only after what came before
    it was returned: by the next call, or by `close()`. `close()` says the stream ended; it
    returns the last of it, and `raise_for_outcome()` then raises if the answer was cut off,
    refused, filtered or malformed. Errors are redacted by the decoder's `redactor` (the
    credentials of the provider that made it never appear in them).

    Given the `text` the answer is about (or an `Aligner` over it), an item type with a
    `multitask.Quote` in it is grounded: each Quote is found in the text and carries its span,
    and an item whose quote is not there is invalid. A type without a Quote ignores both.
    """

    def __init__(
        self,
        item_type: TypeAdapter[T],
        decoder: ProviderDecoder,
        *,
        on_invalid: OnInvalid = "raise",
        validation_context: Any = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        text: str | None = None,
        aligner: Aligner | None = None,
    ) -> None:
        self.decoder = decoder
        if aligner is None and text is not None:
            aligner = Aligner(text)  # (cheap: it folds the text only if a search needs it)
        if aligner is not None and not contains_quote(item_type):
            aligner = None  # a type without a Quote validates as it would without a text
        #: Splits the body into events: server-sent events, or NDJSON lines for some providers.
        self.events: SSEDecoder | NDJSONDecoder = (
            NDJSONDecoder(max_event_bytes=max_event_bytes)
            if decoder.framing == "ndjson"
            else SSEDecoder(max_event_bytes=max_event_bytes)
        )
        self.validator: ItemValidator[T] = ItemValidator(
            item_type, context=validation_context, on_invalid=on_invalid, aligner=aligner
        )
        self.parser: _Parser = self._new_parser(whole=False)
        self._parse_answer = self._feeder(self.parser)
        # How `feed_bytes` reads: SSE frames, each handed to `decoder.data` (the flat path),
        # or events whole, for NDJSON and for a decoder that reads whole events.
        self._sse = (
            self.events
            if isinstance(self.events, SSEDecoder) and not decoder.WHOLE_EVENTS
            else None
        )
        self._max_event_bytes = max_event_bytes
        # The decoder's template over whole events (`Template.framed`), and the one it was
        # made from: none unless the decoder takes its fast path.
        self._template: Template | None = None
        self._learned: Template | None = None
        self._ignored = decoder.IGNORED_LAST_MEMBER
        # The decoder's fast hook, for `feed_payload` (see `ProviderDecoder`).
        self._quick = decoder.answer_fragment if decoder.fast else None
        # Under mode="parallel_tools": one parser per tool call, each call one item.
        self._call_parsers: dict[Any, _Parser] = {}
        self._pending: Exception | None = None  # a MultitaskError, or a validator's own
        self._closed = False
        #: Items handed out so far.
        self.delivered = 0

    # -- what a pipeline defines ---------------------------------------------------------------

    #: Called once per feed, after its input was parsed, with its output: a method, in a
    #: pipeline that has something to do then (snapshots); None in one that has nothing. A
    #: class attribute, bound on access (its first argument is the pipeline).
    _after_feed: ClassVar[Callable[[Any, list[Any]], None] | None] = None

    def _new_parser(self, *, whole: bool) -> _Parser:
        """A parser for the answer (`whole=False`) or for one tool call's item (`whole=True`)."""
        raise NotImplementedError

    def _absorb(self, parsed: list[Any], out: list[E]) -> None:
        """Turn what the parser returned into output; raise for an invalid item."""
        raise NotImplementedError

    def _feeder(self, parser: Any) -> Callable[[str], list[Any]]:
        """How to hand fragments of answer text to one of the parsers."""
        return parser.feed  # type: ignore[no-any-return]

    def _parse(self, parser: Any, text: str) -> list[Any]:
        """Hand a fragment of answer text to one of the parsers."""
        return self._feeder(parser)(text)

    def _after_close(self, out: list[E]) -> None:
        """Called at the end of a stream whose outcome was good."""

    # -- the pipeline --------------------------------------------------------------------------

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

    def feed_bytes(self, data: bytes) -> list[E]:
        """Feed raw stream bytes (the response body), in pieces of any size. `b""` feeds
        nothing, and raises an error held back after what the last feed returned."""
        sse = self._sse
        if sse is None:
            return self._feed(self._decode_bytes, data)
        # `_feed` with the step written in: this runs once per network chunk, and the loop once
        # per event (two Python calls fewer per chunk: 6-9% of the cost of a whole event).
        if self._pending is not None or self._closed:
            self._refuse()
        out: list[E] = []
        try:
            template = self._template
            if template is not None and sse.idle and data.startswith(template.prefix):
                event = data
                member = self._ignored
                if member is not None and data.endswith(b'"}\n\n'):
                    event = drop_member(data, member, len(data) - 3)  # as the decoder reads it
                if event.endswith(template.suffix) and len(data) <= self._max_event_bytes:
                    # One whole event, of the shape the decoder's template reads: what the SSE
                    # decoder and then the decoder would make of it, made at once (this is
                    # `template.answer(event)`, written in).
                    try:
                        text = from_json(event[template.start : len(event) - template.back])
                    except ValueError:
                        text = None
                    if type(text) is str:
                        if text:
                            parsed = self._parse_answer(text)
                            if parsed:
                                self._absorb(parsed, out)
                        after = self._after_feed
                        if after is not None:
                            after(out)
                        return out
            if not data:
                self._raise_held_back()
                return out
            decoder = self.decoder
            for name, value in sse.frames(data):
                text = decoder.data(value, name)
                if text:
                    parsed = self._parse_answer(text)
                    if parsed:
                        self._absorb(parsed, out)
                elif decoder.calls:
                    self._take_calls(out)
            if decoder.template is not self._learned:
                # The decoder learned a template: extend it over whole events.
                learned = self._learned = decoder.template
                self._template = None if learned is None else learned.framed(sse.head)
            after = self._after_feed
            if after is not None:
                after(out)
        except Exception as exc:  # (a validator's own exception too: after the items before it)
            if not self._hold(exc, out):
                raise
        return out

    def feed_event(self, event: ServerSentEvent) -> list[E]:
        """Feed one decoded server-sent event."""
        return self._feed(self._decode, event)

    def feed_payload(self, payload: Mapping[str, Any]) -> list[E]:
        """Feed one parsed provider event (an SSE event's JSON, or an SDK chunk as a dict).

        An event that is one fragment of the answer and nothing else is read by the decoder's
        fast hook (which declines any other), without `read`'s guards."""
        # `_feed` with the step written in, as in `feed_bytes`: it runs once per event.
        if self._pending is not None or self._closed:
            self._refuse()
        out: list[E] = []
        try:
            decoder = self.decoder
            quick = self._quick
            text = None
            if quick is not None:
                try:
                    text = quick(payload)
                except Exception:  # an event of an odd shape: the hook declines it
                    text = None
            if text is None:
                text = decoder.read(payload)
            if text:
                parsed = self._parse_answer(text)
                if parsed:
                    self._absorb(parsed, out)
            elif decoder.calls:
                self._take_calls(out)
            after = self._after_feed
            if after is not None:
                after(out)
        except Exception as exc:  # (a validator's own exception too: after the items before it)
            if not self._hold(exc, out):
                raise
        return out

    def _raise_held_back(self) -> None:
        """Raise an error a piece of the pipeline held back to hand out what came before it
        (the event decoder, a parser): `feed_bytes(b"")`, for a reader about to wait for
        more bytes, which might never come."""
        self.events.feed(b"")
        self._parse(self.parser, "")
        for parser in self._call_parsers.values():
            self._parse(parser, "")

    def feed_text(self, text: str) -> list[E]:
        """Feed answer text directly (a complete response's arguments or content)."""
        return self._feed(self._answer, text)

    def close(self) -> list[E]:
        """Say the stream ended; return what that completes."""
        out: list[E] = []
        if self._closed:
            return out
        self._closed = True
        if self._pending is not None:
            return out
        try:
            for event in self.events.end():
                self._decode(event, out)
            parsed: MultitaskError | None = None
            if self._call_parsers:
                for parser in self._call_parsers.values():
                    self._absorb(parser.close(), out)
                    parsed = parsed or parser.error
            else:
                leftover = self.decoder.leftover()
                if leftover:
                    self._answer(leftover, out)
                self._absorb(self.parser.close(), out)
                parsed = self.parser.error
            error: Exception | None = self.validator.error
            if error is None:
                outcome = self.decoder.outcome_error(self.delivered)
                if isinstance(outcome, RefusalError):
                    error = outcome
                elif parsed is not None or (self._call_parsers and outcome is not None):
                    # A cut-off or filtered finish explains a broken answer better than the
                    # parse error it caused (even one with no JSON yet). With one tool call
                    # per item, a cut between two calls leaves every call whole: the finish
                    # reason alone says items are missing.
                    error = outcome if outcome is not None else parsed
                    if isinstance(error, IncompleteOutputError):
                        error.items_delivered = self.delivered
            if error is not None:
                raise error
            self._after_close(out)
        except Exception as exc:
            self._hold(exc, out)
        return out

    def raise_for_outcome(self) -> None:
        """After `close()`: raise what went wrong, if anything did."""
        if self._pending is not None:
            raise self._pending

    # -- internals -----------------------------------------------------------------------------

    def _feed(self, step: Callable[[Any, list[E]], None], value: Any) -> list[E]:
        """A feed: `step(value, out)`, then `_after_feed`, with the errors held back."""
        if self._pending is not None or self._closed:
            self._refuse()
        out: list[E] = []
        try:
            step(value, out)
            after = self._after_feed
            if after is not None:
                after(out)
        except Exception as exc:  # (a validator's own exception too: after the items before it)
            if not self._hold(exc, out):
                raise
        return out

    def _refuse(self) -> None:
        """A feed after an error or after `close()`: raise that error, or say it is closed."""
        if self._pending is not None:
            raise self._pending
        raise RuntimeError("the extraction was closed")

    def _hold(self, exc: Exception, out: list[E]) -> bool:
        """An error found partway through a feed: kept for the next call, and raised now
        (False) only if nothing came before it."""
        self._pending = self.decoder.redact(exc) if isinstance(exc, MultitaskError) else exc
        return bool(out)

    def _decode_bytes(self, data: bytes, out: list[E]) -> None:
        if not data:
            self._raise_held_back()
            return
        for event in self.events.feed(data):
            self._decode(event, out)

    def _decode(self, event: ServerSentEvent, out: list[E]) -> None:
        self._answer(self.decoder.event(event), out)

    def _answer(self, text: str, out: list[E]) -> None:
        if text:
            self._absorb(self._parse_answer(text), out)
        elif self.decoder.calls:
            self._take_calls(out)

    def _take_calls(self, out: list[E]) -> None:
        calls, self.decoder.calls = self.decoder.calls, []
        for key, text in calls:
            parser = self._call_parsers.get(key)
            if parser is None:
                parser = self._call_parsers[key] = self._new_parser(whole=True)
            self._absorb(self._parse(parser, text), out)


class Extraction(Pipeline[T, T]):
    """One answer being read: feed it the stream, get each validated item as it completes.

    See `Pipeline` for the contract; what comes out is the validated items.
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
        scalar_items: bool = True,
        text: str | None = None,
        aligner: Aligner | None = None,
    ) -> None:
        self._limits = (max_item_bytes, max_answer_bytes, max_depth, scalar_items)
        super().__init__(
            item_type,
            decoder,
            on_invalid=on_invalid,
            validation_context=validation_context,
            max_event_bytes=max_event_bytes,
            text=text,
            aligner=aligner,
        )

    def _new_parser(self, *, whole: bool) -> TaskParser:
        max_item, max_answer, max_depth, scalar = self._limits
        return TaskParser(
            max_item_bytes=max_item,
            max_answer_bytes=max_answer,
            max_depth=max_depth,
            scalar_items=scalar,
            whole=whole,
        )

    def _absorb(self, parsed: list[Any], out: list[T]) -> None:
        if not parsed:
            return
        valid = self.validator.validate(parsed)
        out.extend(valid)
        self.delivered += len(valid)
        if self.validator.error is not None:
            raise self.validator.error
