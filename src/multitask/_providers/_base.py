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
from .._redact import Redactor
from .._sse import ServerSentEvent

__all__ = ["AnswerSource", "StreamDecoder", "Usage"]

# Where JSON may begin in message text: a line that opens an object or array, or a fence.
_JSON_START = re.compile(r"(?:^|\n)[ \t]*[\[{]|```")

# One JSON string token, quotes included. Scanning valid JSON from its start, every match is
# a string token of the document: outside strings a quote can only open one.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# What a template's string is replaced with to prove it is the one the answer text comes from.
_PROBE = rb"\u0001~\\"
_PROBE_TEXT = "\x01~\\"
# The value of a member a decoder ignores (`IGNORED_LAST_MEMBER`): plain printable ASCII, no
# quote or backslash, so it is the whole string token whatever surrounds it.
_PLAIN = re.compile(rb"[ !#-\[\]-~]*")
# The bytes a JSON value can end with: what must come before the member dropped, so that the
# object keeps a member (`{}` stays `{}`, and `{,...}` is never made valid).
_VALUE_END = frozenset(b'"}]0123456789el')
# How many event templates a decoder may learn (each costs a few parses: bounded, so a stream
# whose events never repeat, with a changing field, costs nothing after the first few).
_TEMPLATE_BUDGET = 8
# The methods a template stands in for: a subclass that overrides one reads every event.
_TEMPLATED = ("payload", "read", "data", "_fragment", "_tool", "_content", "_call")

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
    raising `StreamError` for an error event. The errors it raises (and `outcome_error`
    returns) go through `redactor`, set by the provider that made it, so that credentials a
    server echoed in an event never reach a message.
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
    #: `,"obfuscation":"`. Events are read without it (`drop_member`), so that one template
    #: (see `_learn_template`) matches them all.
    IGNORED_LAST_MEMBER: ClassVar[bytes | None] = None

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
        #: The bytes around the answer string of the events that carry the answer, once they
        #: were seen to differ only in that string (see `_learn_template`): (prefix, suffix,
        #: len(prefix), len(suffix)). An event's data that starts and ends with them is read
        #: by parsing that string alone.
        self.template: tuple[bytes, bytes, int, int] | None = None
        self._learn = _TEMPLATE_BUDGET if _templates_apply(type(self)) else 0
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
        member = self.IGNORED_LAST_MEMBER
        if member is not None and type(data) is bytes and data.endswith(b'"}'):
            data = drop_member(data, member, len(data) - 1)
        template = self.template
        if template is not None and type(data) is bytes:
            prefix, suffix, head, tail = template
            if data.startswith(prefix) and data.endswith(suffix):
                try:
                    # The answer string, its quotes included (the last byte of the prefix and
                    # the first of the suffix): one short C parse instead of the whole event's.
                    # (Were the prefix and suffix to overlap, this would be `"` or nothing.)
                    text = from_json(data[head - 1 : len(data) - tail + 1])
                except ValueError:
                    pass  # not one JSON string (a quote or a bad escape inside): read it all
                else:
                    if type(text) is str:
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

    def _fragment(self, obj: Mapping[str, Any]) -> str | None:
        """For a subclass that can read events by template: the answer text of an event that
        `payload` just read, if `payload` would read any event that differs from it only in
        that text's value the same way from now on, returning that value and changing
        nothing; else None. Must not change anything, nor raise."""
        return None

    def _learn_template(self, data: bytes, obj: dict[str, Any], text: str) -> None:
        """Learn the bytes around this event's answer string, to read the next events of the
        same shape (the same bytes but that string) by parsing that string alone.

        Why that is exact: a JSON string token cannot hold an unescaped quote, so in
        `prefix + X + suffix`, where `"X"` alone parses as a string, the string token opened
        by the prefix's last byte ends at the suffix's first byte, whatever X is, and every
        other token is as in the learned event. The event then parses as the learned one
        did, that one string's value aside, and `_fragment` vouches that `payload` would
        return that value and change nothing. A probe (the learned bytes with another
        string there) proves the string is the one the answer text comes from.
        """
        try:
            if self._fragment(obj) != text or text == _PROBE_TEXT or not data.isascii():
                return
            self._learn -= 1
            tried = 0
            for token in reversed(list(_STRING.finditer(data))):
                start, end = token.span()
                if from_json(data[start:end]) != text:
                    continue
                prefix, suffix = data[: start + 1], data[end - 1 :]
                probe = from_json(prefix + _PROBE + suffix)
                if type(probe) is dict and self._fragment(probe) == _PROBE_TEXT:
                    self.template = (prefix, suffix, len(prefix), len(suffix))
                    return
                tried += 1
                if tried == 2:
                    return
        except (ValueError, LookupError, TypeError, AttributeError):
            return

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


def drop_member(data: bytes, member: bytes, end: int) -> bytes:
    """`data` without its member `member + V + '"'` just before `data[end]`, the object's
    closing brace, where V is plain string content (`_PLAIN`); else `data` as it is.

    JSON text ending in that member parses as the same text without it, plus that member
    (a string token cannot hold an unescaped quote, so the quotes of `member` and V's closing
    one are tokens of their own), and the other way round as long as a value ends before it
    (`_VALUE_END`): one is valid JSON exactly when the other is.
    """
    start = data.rfind(member, 0, end)
    if (
        start > 0
        and data[end - 1] == 0x22  # '"'
        and data[start - 1] in _VALUE_END
        and _PLAIN.fullmatch(data, start + len(member), end - 1)
    ):
        return data[:start] + data[end:]
    return data


def _templates_apply(cls: type[StreamDecoder]) -> bool:
    """Whether `cls` reads events by template: it has a `_fragment` and overrides none of
    the methods (`_TEMPLATED`) of the class that defined it."""
    owner = next((k for k in cls.__mro__ if "_fragment" in vars(k)), StreamDecoder)
    if owner is StreamDecoder:
        return False
    return all(getattr(cls, name) is getattr(owner, name) for name in _TEMPLATED)
