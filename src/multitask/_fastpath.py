"""The per-event fast paths, and the one switch that turns them off.

A provider decoder that has a fast hook (`ProviderDecoder.answer_fragment`) reads an event
that is one fragment of the answer and nothing else without its general `read`:

* from bytes (`ProviderDecoder.data`), by a `Template` learned from the first such events:
  the bytes around the answer string, the same in every such event, so that one short C
  parse of that string stands in for parsing the whole event; the pipeline extends the
  template over the SSE framing, to read a whole network chunk at once (`Template.framed`);
* from an already parsed event (`Pipeline.feed_payload`), by the hook itself.

Both give exactly what the general path gives (`tests/sansio/test_fastpath.py` and
`tests/sansio/test_feed_payload.py` compare them, the switch on and off). The switch is
`MULTITASK_FASTPATH=0` in the environment, read once at import (`ENABLED`), or
`fast=False` for one decoder (and so for the pipeline that reads with it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

__all__ = ["ENABLED", "TEMPLATE_BUDGET", "Template", "drop_member", "learn_template"]

#: Whether decoders take their fast paths by default: `MULTITASK_FASTPATH=0` turns them off
#: (for a decoder made with `fast=None`; `fast=True` or `False` decides for one decoder).
ENABLED: bool = os.environ.get("MULTITASK_FASTPATH", "1").strip() != "0"

#: How many event templates a decoder may learn (each costs a few parses: bounded, so a stream
#: whose events never repeat, with a changing field, costs nothing after the first few).
TEMPLATE_BUDGET = 8

#: What a decoder's fast hook is: the answer text of one parsed event, or None to decline.
Fragment = Callable[[Mapping[str, Any]], "str | None"]

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
_LF, _CR = 10, 13


@dataclass(frozen=True, slots=True)
class Template:
    """The bytes around the answer string of the events that carry the answer, once they were
    seen to differ only in that string (see `learn_template`): an event's data that starts
    with `prefix` and ends with `suffix` is read by parsing that string alone.

    `prefix` ends with the string's opening quote and `suffix` starts with its closing one.
    """

    prefix: bytes
    suffix: bytes
    #: Where the string token (its quotes included) starts, and how far before the end it stops.
    start: int = field(init=False, repr=False, compare=False)
    back: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", len(self.prefix) - 1)
        object.__setattr__(self, "back", len(self.suffix) - 1)

    def answer(self, data: bytes) -> str | None:
        """The answer text of `data` read by this template, or None: `data` has another shape,
        or the bytes in the string's place are not one JSON string (a quote or a bad escape
        inside): read it whole."""
        if data.startswith(self.prefix) and data.endswith(self.suffix):
            try:
                # The string token alone: one short C parse instead of the whole event's.
                # (Were prefix and suffix to overlap, this would be `"` or nothing: no string.)
                text = from_json(data[self.start : len(data) - self.back])
            except ValueError:
                return None
            if type(text) is str:
                return text
        return None

    def framed(self, head: bytes) -> Template:
        """This template over whole server-sent events: `head` (`data: `, or `event: X` + LF +
        `data: `) before the prefix, the blank line after the suffix.

        An event `head + prefix + X + suffix + LF LF`, where `"X"` parses as a JSON string (so
        X holds no line end: JSON strings hold no control characters), read with nothing
        pending, is one event whose data is `prefix + X + suffix` (neither holds a line end:
        `learn_template` learns from none that does), which the decoder reads by this
        template as X's value. The decoder's template stays right once it is, so this one
        does too, even after the decoder learns another.
        """
        return Template(head + self.prefix, self.suffix + b"\n\n")


def learn_template(
    fragment: Fragment, data: bytes, obj: Mapping[str, Any], text: str
) -> tuple[bool, Template | None]:
    """Learn the bytes around this event's answer string, to read the next events of the same
    shape (the same bytes but that string) by parsing that string alone. `data` is the event
    that parsed to `obj`, which the decoder read as `text`; `fragment` is its fast hook.
    Returns whether the event was one to learn from (it counts against the decoder's budget),
    and the template, if one was found. Never raises.

    Why that is exact: a JSON string token cannot hold an unescaped quote, so in
    `prefix + X + suffix`, where `"X"` alone parses as a string, the string token opened by
    the prefix's last byte ends at the suffix's first byte, whatever X is, and every other
    token is as in the learned event. The event then parses as the learned one did, that one
    string's value aside, and the hook vouches that the decoder reads it as that value,
    changing nothing. A probe (the learned bytes with another string there) proves the string
    is the one the answer text comes from.
    """
    try:
        if (
            text == _PROBE_TEXT
            or not data.isascii()
            or _LF in data
            or _CR in data
            or fragment(obj) != text
        ):
            return False, None
    except Exception:  # (a hook may decline an odd event by raising)
        return False, None
    try:
        tried = 0
        for token in reversed(list(_STRING.finditer(data))):
            start, end = token.span()
            if from_json(data[start:end]) != text:
                continue
            prefix, suffix = data[: start + 1], data[end - 1 :]
            probe = from_json(prefix + _PROBE + suffix)
            if type(probe) is dict and fragment(probe) == _PROBE_TEXT:
                return True, Template(prefix, suffix)
            tried += 1
            if tried == 2:
                break
    except Exception:  # (a hook may decline an odd event by raising)
        pass
    return True, None


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
