"""What every provider's stream decoder shares: token usage, the answer source, the outcome."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic_core import from_json

from .. import _fastpath
from .._exceptions import (
    ContentFilterError,
    IncompleteOutputError,
    MultitaskError,
    RefusalError,
    StreamDecodeError,
)
from .._fastpath import Template, drop_member, learn_template
from .._preamble import JSON_START
from .._redact import Redactor
from .._sse import ServerSentEvent

__all__ = ["AnswerSource", "ProviderDecoder", "Usage"]


#: Where the answer is in the stream: a tool call's arguments, the message text, whichever
#: shows up first (for reading streams whose request we did not build), or many tool calls,
#: one item each ("calls", for `mode="parallel_tools"`).
AnswerSource = Literal["tool", "content", "auto", "calls"]


@dataclass(slots=True)
class Usage:
    """Token counts the provider reported for one request."""

    input_tokens: int = 0
    output_tokens: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: What the tokens cost in US dollars, from a price table; None when the model's price is
    #: not known (a wrong figure would be worse than none).
    cost: float | None = None

    def __post_init__(self) -> None:
        # Counts come from the wire: a string or a float must not break arithmetic later.
        self.input_tokens = _count(self.input_tokens)
        self.output_tokens = _count(self.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        """Two requests' usage together; the cost is known only if both costs are."""
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            cost=cost,
        )


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


class ProviderDecoder:
    """Turns one provider's stream events into the answer's JSON text, plus how it ended.

    The decoder contract:

    * `payload(obj, event)`, which subclasses implement, takes one parsed event and returns the
      answer text it carries ('' for none), updating `finish_reason`, `usage` and `refusal` as
      they go by, and raising `StreamError` for an error event. `read` guards it: an event of
      the wrong shape is a `StreamDecodeError`.
    * `answer_fragment(obj)`, the one fast hook, optional (None: every event is read by
      `read`). Defined, it returns the answer text `read(obj)` would return when reading `obj`
      would change nothing (no finish reason, usage, refusal, error, tool call picked, text
      held back), and returns it that way for every event that differs from `obj` only in
      that text's value, from now on; for any other event it declines: None (or an
      exception, for an event of an odd shape). It must change nothing. With it, an event of
      a shape seen before is read by parsing its answer string alone (`_fastpath.Template`),
      and a parsed event without `read` (`Pipeline.feed_payload`). A subclass that overrides
      `payload` to do more on such events must decline them too; a decoder that must see
      every event in `payload` (one that records them, say) is made with `fast=False`.
    * `fast=False` (or `MULTITASK_FASTPATH=0` in the environment) reads every event by `read`:
      the same results, by the general path.
    * `WHOLE_EVENTS`: set it for a decoder that overrides `event` to read an event's `id` or
      `retry`; the pipeline then hands it every `ServerSentEvent` whole. Otherwise it calls
      `data` with each event's data and type.

    The errors it raises (and `outcome_error` returns) go through `redactor`, set by the
    provider that made it, so that credentials a server echoed in an event never reach a
    message.
    """

    #: How the response body is framed: server-sent events, or one JSON object per line.
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    #: Finish reasons (as the provider spells them) that mean the answer was cut off.
    TRUNCATED: ClassVar[frozenset[str]] = frozenset()
    #: Finish reasons that mean a content filter stopped the answer.
    FILTERED: ClassVar[frozenset[str]] = frozenset()
    #: Finish reasons that mean the model refused.
    REFUSED: ClassVar[frozenset[str]] = frozenset()
    #: A member that `payload` never reads, whose value changes at every event, and that the
    #: provider puts last (OpenAI's `obfuscation` padding), as its bytes up to the value:
    #: `,"obfuscation":"`. On the fast path events are read without it (`drop_member`), so
    #: that one template matches them all.
    IGNORED_LAST_MEMBER: ClassVar[bytes | None] = None
    #: Whether the pipeline hands this decoder whole `ServerSentEvent`s (`event`), for one
    #: that reads their `id` or `retry`; else it calls `data` with their data and type.
    WHOLE_EVENTS: ClassVar[bool] = False
    #: The fast hook (see the class docstring): a method in a subclass that has one.
    answer_fragment: Callable[[Mapping[str, Any]], str | None] | None = None

    def __init__(self, source: AnswerSource = "auto", *, fast: bool | None = None) -> None:
        self.source: AnswerSource = source
        #: Whether this decoder takes its fast paths (None: `MULTITASK_FASTPATH`, default on).
        self.fast: bool = _fastpath.ENABLED if fast is None else fast
        #: The provider's finish reason, once it sent one.
        self.finish_reason: str | None = None
        #: Token usage, once reported.
        self.usage: Usage | None = None
        #: The refusal text the model streamed, if any.
        self.refusal = ""
        #: True once the provider said the stream is over (`[DONE]`, `message_stop`, ...).
        self.ended = False
        #: Under "calls": (call key, argument text) fragments not yet taken by the pipeline.
        self.calls: list[tuple[Any, str]] = []
        self._held = ""  # message text held back: see `_content`
        self._tool_seen = False
        #: The bytes around the answer string of the events that carry the answer, once they
        #: were seen to differ only in that string (see `_fastpath.learn_template`).
        self.template: Template | None = None
        fast_path = self.fast and self.answer_fragment is not None
        self._learn = _fastpath.TEMPLATE_BUDGET if fast_path else 0
        self._ignored = self.IGNORED_LAST_MEMBER if fast_path else None
        #: Replaces the client's credentials in the errors made here (None: nothing to hide).
        self.redactor: Redactor | None = None

    def redact(self, exc: MultitaskError) -> MultitaskError:
        """`exc` without the credentials (see `redactor`)."""
        redactor = self.redactor
        return exc if redactor is None else redactor.exception(exc)

    def event(self, event: ServerSentEvent) -> str:
        """Decode one server-sent event; return the answer text it carries."""
        return self.data(event.data, event.event)

    def data(self, data: bytes | str, event: str = "message") -> str:
        """Decode one event's data (its text, or the raw UTF-8 bytes of its data line, read as
        the text decoded with replacement would be); return the answer text it carries.

        An event that matches a learned template is read by parsing its answer string alone.
        """
        if type(data) is bytes:
            member = self._ignored
            if member is not None and data.endswith(b'"}'):
                data = drop_member(data, member, len(data) - 1)
            template = self.template
            if template is not None:
                text = template.answer(data)
                if text is not None:
                    return text
        if isinstance(data, bytes) and not data.isascii():
            data = data.decode("utf-8", "replace")  # as the text of the event would be
        try:
            obj = from_json(data)
        except ValueError:
            try:
                return self._not_json(data if isinstance(data, str) else data.decode(), event)
            except MultitaskError as exc:
                raise self.redact(exc) from None
        if type(obj) is not dict:
            text = data if isinstance(data, str) else data.decode()
            error = StreamDecodeError(f"event data is not a JSON object: {text[:80]!r}")
            raise self.redact(error)
        text = self.read(obj, event)
        if self._learn and text and isinstance(data, bytes):
            self._learn_template(data, obj, text)
        return text

    def _not_json(self, data: str, event: str) -> str:
        """Event data that is not JSON: an error (a provider's end marker, in a subclass)."""
        raise StreamDecodeError(f"event data is not JSON: {data[:80]!r}")

    def _learn_template(self, data: bytes, obj: dict[str, Any], text: str) -> None:
        """Learn a template from this event (`read` just read it as `text`), if it is one."""
        hook = self.answer_fragment
        if hook is None:
            return
        counted, template = learn_template(hook, data, obj, text)
        if counted:
            self._learn -= 1
        if template is not None:
            self.template = template

    def read(self, obj: Mapping[str, Any], event: str = "message") -> str:
        """`payload`, guarded: an event of the wrong shape is a `StreamDecodeError`, never a
        `KeyError` or `TypeError` from deep inside a decoder."""
        calls = len(self.calls)
        try:
            text = self.payload(obj, event)
            if not isinstance(text, str) or not isinstance(self.refusal, str):
                raise TypeError("answer text that is not a string")
            if self.finish_reason is not None and not isinstance(self.finish_reason, str):
                raise TypeError("a finish reason that is not a string")
            if len(self.calls) != calls:  # rare: no slice on the per-event path
                for key, fragment in self.calls[calls:]:
                    hash(key)
                    if not isinstance(fragment, str):
                        raise TypeError("tool call arguments that are not a string")
        except (LookupError, TypeError, AttributeError) as exc:
            del self.calls[calls:]
            # The event may have left a field of the wrong type behind (a finish reason that
            # is a number): from now on every event is read whole, and checked.
            self.template = None
            self._learn = 0
            raise self.redact(
                StreamDecodeError(
                    f"a {event!r} event of an unexpected shape ({type(exc).__name__}: {exc}): "
                    f"{str(dict(obj))[:120]}"
                )
            ) from None
        except MultitaskError as exc:  # an error event (`StreamError`), a blocked prompt...
            if self.redactor is not None:
                self.redact(exc)
            raise
        return text

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        """Decode one parsed event (an SSE event's JSON, or an SDK chunk as a dict)."""
        raise NotImplementedError

    def _call(self, key: Any, text: str) -> None:
        """Under "calls": a fragment of one tool call's arguments, which are one item."""
        self._tool_seen = True
        self._held = ""
        if text:
            self.calls.append((key, text))

    def _content(self, text: str) -> str:
        """Message text: the answer under "content"; under "auto", once it looks like JSON.

        Under "tool", text is held back in case no tool call ever comes: some compatible
        servers answer a forced tool call with the JSON in the content.
        """
        if self.source == "content":
            return text
        if self.source in ("tool", "calls"):
            if not self._tool_seen:
                self._held += text
            return ""
        held = self._held + text
        # JSON starts a line or follows a fence, as the task parser has it: a bracket in
        # prose ("I'll list them [all]") before a tool call must not take the answer. The
        # held text before had no match, so search from its last line only.
        if JSON_START.search(held, max(self._held.rfind("\n"), 0)):
            self.source = "content"
            self._held = ""
            return held
        self._held = held
        return ""

    def _tool(self) -> bool:
        """Whether tool-call arguments are the answer; under "auto", the first one decides."""
        if self.source == "auto":
            self.source = "tool"
        if self.source != "tool":
            return False
        if not self._tool_seen:
            self._tool_seen = True
            self._held = ""
        return True

    def leftover(self) -> str:
        """At the end of the stream: message text held back (prose, or JSON in the content)."""
        held, self._held = self._held, ""
        return held

    def outcome_error(self, items_delivered: int) -> MultitaskError | None:
        """What went wrong with how the answer ended, judged by the finish reason and refusal."""
        error = self._outcome_error(items_delivered)
        return None if error is None else self.redact(error)

    def _outcome_error(self, items_delivered: int) -> MultitaskError | None:
        reason = self.finish_reason
        if self.refusal or (reason is not None and reason in self.REFUSED):
            return RefusalError(
                f"the model refused: {self.refusal or reason}", refusal=self.refusal or None
            )
        if reason is not None and reason in self.FILTERED:
            return ContentFilterError(
                f"the provider's content filter stopped the answer (finish reason {reason!r}) "
                f"after {items_delivered} item(s)"
            )
        if reason is not None and reason in self.TRUNCATED:
            return IncompleteOutputError(
                f"the answer was cut off (finish reason {reason!r}) after {items_delivered} "
                "complete item(s); raise max_tokens to get the rest",
                finish_reason=reason,
                items_delivered=items_delivered,
            )
        return None


#: Old names of this module's classes, kept for one release: old name -> new name.
_DEPRECATED = {"StreamDecoder": "ProviderDecoder"}


def deprecated_name(module: str, name: str) -> Any:
    """For a module's `__getattr__`: what the deprecated `name` stands for now, with a
    `DeprecationWarning` pointing at the code that used it; else the usual AttributeError."""
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{name} is deprecated: it is now {new}", DeprecationWarning, stacklevel=3)
    return globals()[new]


def __getattr__(name: str) -> Any:
    return deprecated_name(__name__, name)
