"""What every provider's stream decoder shares: token usage, the answer source, the outcome."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic_core import from_json

from .._exceptions import (
    ContentFilterError,
    IncompleteOutputError,
    MultitaskError,
    RefusalError,
    StreamDecodeError,
)
from .._sse import ServerSentEvent

__all__ = ["AnswerSource", "StreamDecoder", "Usage"]

# Where JSON may begin in message text: a line that opens an object or array, or a fence.
_JSON_START = re.compile(r"(?:^|\n)[ \t]*[\[{]|```")

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

    def __post_init__(self) -> None:
        # Counts come from the wire: a string or a float must not break arithmetic later.
        self.input_tokens = _count(self.input_tokens)
        self.output_tokens = _count(self.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


class StreamDecoder:
    """Turns one provider's stream events into the answer's JSON text, plus how it ended.

    Subclasses implement `payload`, which takes one parsed event and returns the answer text it
    carries ('' for none), updating `finish_reason`, `usage` and `refusal` as they go by, and
    raising `StreamError` for an error event.
    """

    #: How the response body is framed: server-sent events, or one JSON object per line.
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    #: Finish reasons (as the provider spells them) that mean the answer was cut off.
    TRUNCATED: ClassVar[frozenset[str]] = frozenset()
    #: Finish reasons that mean a content filter stopped the answer.
    FILTERED: ClassVar[frozenset[str]] = frozenset()
    #: Finish reasons that mean the model refused.
    REFUSED: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, source: AnswerSource = "auto") -> None:
        self.source: AnswerSource = source
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

    def event(self, event: ServerSentEvent) -> str:
        """Decode one server-sent event; return the answer text it carries."""
        try:
            obj = from_json(event.data)
        except ValueError:
            raise StreamDecodeError(f"event data is not JSON: {event.data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise StreamDecodeError(f"event data is not a JSON object: {event.data[:80]!r}")
        return self.read(obj, event.event)

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
            raise StreamDecodeError(
                f"a {event!r} event of an unexpected shape ({type(exc).__name__}: {exc}): "
                f"{str(dict(obj))[:120]}"
            ) from None
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
        if _JSON_START.search(held, max(self._held.rfind("\n"), 0)):
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
