"""The sans-IO pipeline: stream bytes (or provider events) in, validated items out.

    bytes -> SSEDecoder -> ServerSentEvent -> StreamDecoder -> answer text
          -> TaskParser -> raw items -> ItemValidator -> T

Nothing here touches a socket or an event loop; the client and the `from_streaming_response`
helpers are thin loops around `Extraction`. `Pipeline` is what `Extraction` and the partial
event pipeline (`EventExtraction`) share: framing, decoding, parallel tool calls, deferred
errors and how the outcome is judged; they differ only in their parser and in what they emit.

`feed_bytes` is the per-event path: a whole event of the shape the decoder learned (see
`StreamDecoder.data`) costs one short C parse of its answer string; any other input goes
through `SSEDecoder.frames` and the decoder. Both ways give the same result (`test_fastpath`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from pydantic import TypeAdapter
from pydantic_core import from_json

from ._exceptions import IncompleteOutputError, MultitaskError, RefusalError
from ._ndjson import NDJSONDecoder
from ._providers._base import StreamDecoder, Usage, drop_member
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
    """

    def __init__(
        self,
        item_type: TypeAdapter[T],
        decoder: StreamDecoder,
        *,
        on_invalid: OnInvalid = "raise",
        validation_context: Any = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.decoder = decoder
        #: Splits the body into events: server-sent events, or NDJSON lines for some providers.
        self.events: SSEDecoder | NDJSONDecoder = (
            NDJSONDecoder(max_event_bytes=max_event_bytes)
            if decoder.framing == "ndjson"
            else SSEDecoder(max_event_bytes=max_event_bytes)
        )
        self.validator: ItemValidator[T] = ItemValidator(
            item_type, context=validation_context, on_invalid=on_invalid
        )
        self.parser: _Parser = self._new_parser(whole=False)
        self._parse_answer = self._feeder(self.parser)
        # The flat per-event path of `feed_bytes`: SSE framing, and a decoder that reads an
        # event from its type and data alone (one that overrides `event` gets the whole event).
        self._sse = (
            self.events
            if isinstance(self.events, SSEDecoder) and type(decoder).event is StreamDecoder.event
            else None
        )
        self._max_event_bytes = max_event_bytes
        # The decoder's template (see `StreamDecoder.data`) over whole events: the SSE head
        # before its prefix, the blank line after its suffix; and the one it was made from.
        self._template: tuple[bytes, bytes, int, int] | None = None
        self._ignored = decoder.IGNORED_LAST_MEMBER
        self._learned: tuple[bytes, bytes, int, int] | None = None
        self._after = None if type(self)._after_feed is Pipeline._after_feed else self._after_feed
        # The flat per-event path of `feed_payload` (see `_quick_reader`): a plain function.
        self._quick = _quick_reader(type(decoder))
        # Under mode="parallel_tools": one parser per tool call, each call one item.
        self._call_parsers: dict[Any, _Parser] = {}
        self._pending: MultitaskError | None = None
        self._closed = False
        #: Items handed out so far.
        self.delivered = 0

    # -- what a pipeline defines ---------------------------------------------------------------

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

    def _after_feed(self, out: list[E]) -> None:
        """Called once per feed, after its input was parsed."""

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
        # `_feed(_decode_bytes)` written out flat: this runs once per network chunk, and the
        # loop once per event, so every call saved here is saved per event.
        if self._pending is not None:
            raise self._pending
        if self._closed:
            raise RuntimeError("the extraction was closed")
        out: list[E] = []
        try:
            if not data:
                self._raise_held_back()
                return out
            template = self._template
            if template is not None and sse.idle and data.startswith(template[0]):
                event = data
                member = self._ignored
                if member is not None and data.endswith(b'"}\n\n'):
                    event = drop_member(data, member, len(data) - 3)  # as the decoder reads it
                if event.endswith(template[1]) and len(data) <= self._max_event_bytes:
                    # One whole event, of the shape the decoder's template reads: what the SSE
                    # decoder and then the decoder would make of it, made at once (`_combine`).
                    try:
                        text = from_json(event[template[2] : len(event) - template[3]])
                    except ValueError:
                        text = None
                    if type(text) is str:
                        if text:
                            parsed = self._parse_answer(text)
                            if parsed:
                                self._absorb(parsed, out)
                        if self._after is not None:
                            self._after(out)
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
                self._combine()
            if self._after is not None:
                self._after(out)
        except MultitaskError as exc:
            # Raised now if nothing came before it, else on the next call.
            self._pending = self.decoder.redact(exc)
            if not out:
                raise
        return out

    def _combine(self) -> None:
        """Extend the decoder's new template over whole events: the SSE head of the event it
        was learned from before it, the blank line after it.

        An event `head + prefix + X + suffix + LF LF`, where `"X"` parses as a JSON string
        (so X holds no line end: JSON strings hold no control characters), read with nothing
        pending is one event whose data is `prefix + X + suffix` (neither holds a line end:
        they come from one data line), which the decoder reads by its template as X's value.
        The decoder's template stays right once it is (see `StreamDecoder._learn_template`),
        so this one does too, even after the decoder learns another.
        """
        learned = self._learned = self.decoder.template
        self._template = None
        if learned is None or self._sse is None:
            return
        if any(end in part for part in learned[:2] for end in (10, 13)):
            return  # (cannot be: the decoder learns only from events read on the fast path)
        prefix, suffix = self._sse.head + learned[0], learned[1] + b"\n\n"
        self._template = (prefix, suffix, len(prefix) - 1, len(suffix) - 1)

    def _raise_held_back(self) -> None:
        """Raise an error a piece of the pipeline held back to hand out what came before it
        (the event decoder, a parser): `feed_bytes(b"")`, for a reader about to wait for
        more bytes, which might never come."""
        self.events.feed(b"")
        self._parse(self.parser, "")
        for parser in self._call_parsers.values():
            self._parse(parser, "")

    def feed_event(self, event: ServerSentEvent) -> list[E]:
        """Feed one decoded server-sent event."""
        return self._feed(self._decode, event)

    def feed_payload(self, payload: Mapping[str, Any]) -> list[E]:
        """Feed one parsed provider event (an SSE event's JSON, or an SDK chunk as a dict)."""
        # `_feed(read, _answer)` written out flat, as `feed_bytes` is: it runs once per event.
        # An event that is one fragment of the answer and nothing else is read by the
        # decoder's `_quick_payload` (None for any other), without `read`'s guards.
        if self._pending is not None:
            raise self._pending
        if self._closed:
            raise RuntimeError("the extraction was closed")
        out: list[E] = []
        try:
            decoder = self.decoder
            quick = self._quick
            text = None if quick is None else quick(decoder, payload)
            if text is None:
                text = decoder.read(payload)
            if text:
                parsed = self._parse_answer(text)
                if parsed:
                    self._absorb(parsed, out)
            elif decoder.calls:
                self._take_calls(out)
            if self._after is not None:
                self._after(out)
        except MultitaskError as exc:
            # Raised now if nothing came before it, else on the next call.
            self._pending = self.decoder.redact(exc)
            if not out:
                raise
        return out

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
            error: MultitaskError | None = self.validator.error
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
        except MultitaskError as exc:
            self._pending = self.decoder.redact(exc)
        return out

    def raise_for_outcome(self) -> None:
        """After `close()`: raise what went wrong, if anything did."""
        if self._pending is not None:
            raise self._pending

    # -- internals -----------------------------------------------------------------------------

    def _feed(self, step: Callable[[Any, list[E]], None], value: Any) -> list[E]:
        if self._pending is not None:
            raise self._pending
        if self._closed:
            raise RuntimeError("the extraction was closed")
        out: list[E] = []
        try:
            step(value, out)
            self._after_feed(out)
        except MultitaskError as exc:
            # Raised now if nothing came before it, else on the next call.
            self._pending = self.decoder.redact(exc)
            if not out:
                raise
        return out

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


#: What a decoder's `_quick_payload` stands in for: a subclass that overrides one of them
#: (but not `_quick_payload` too) has every payload read by `read`.
_QUICK = ("payload", "read", "_tool", "_content")


def _quick_reader(
    cls: type[StreamDecoder],
) -> Callable[[StreamDecoder, Mapping[str, Any]], str | None] | None:
    """The decoder class's `_quick_payload`, if it has one that reads as its `read` does.

    `_quick_payload(obj)` returns the answer text `read(obj)` would return if reading `obj`
    would change nothing (no finish reason, usage, refusal, tool call picked, text held
    back), else None; it never raises. `read` leaves the decoder's fields of the right
    types, so its checks after `payload` hold for an event that changes nothing.
    """
    owner = next((k for k in cls.__mro__ if "_quick_payload" in vars(k)), None)
    if owner is None or any(getattr(cls, name) is not getattr(owner, name) for name in _QUICK):
        return None
    quick: Callable[[StreamDecoder, Mapping[str, Any]], str | None] = vars(owner)["_quick_payload"]
    return quick


class Extraction(Pipeline[T, T]):
    """One answer being read: feed it the stream, get each validated item as it completes.

    See `Pipeline` for the contract; what comes out is the validated items.
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
        max_depth: int = DEFAULT_MAX_DEPTH,
        scalar_items: bool = True,
    ) -> None:
        self._limits = (max_item_bytes, max_answer_bytes, max_depth, scalar_items)
        super().__init__(
            item_type,
            decoder,
            on_invalid=on_invalid,
            validation_context=validation_context,
            max_event_bytes=max_event_bytes,
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
