"""Where an answer's JSON begins: past whitespace, prose and a markdown fence.

Models sometimes write a sentence or a ```json fence before the JSON they were asked for.
`Preamble` holds what comes before the JSON's opening bracket and hands back the text from
that bracket on, once it has come. Both task parsers (`TaskParser`, `PartialTaskParser`) use
it, and `JSON_START` is the same rule for a stream decoder choosing between message text and
a tool call; it does no I/O.
"""

from __future__ import annotations

import re

from ._exceptions import ItemTooLargeError, MalformedOutputError

__all__ = ["JSON_START", "Preamble", "excerpt"]

# Where JSON begins after prose: a fence line, or a line that opens an object or array.
_FENCE_MARK = "```"
_OPENER_LINE = r"(?:^|\n)[ \t]*([\[{])"
_FENCE = re.compile(_FENCE_MARK + r"[^\n`]*\n")
_LINE_OPENER = re.compile(_OPENER_LINE)
_ANY_OPENER = re.compile(r"[\[{]")
#: The same rule as a test of text that may not be complete yet: a match says JSON may begin
#: here (a line opens an object or array, or a fence begins). A decoder deciding whether
#: message text is the answer searches with it, so that it and `Preamble` agree on what
#: counts as JSON; like `Preamble`, search from the last line of text that had no match.
JSON_START = re.compile(f"{_OPENER_LINE}|{_FENCE_MARK}")


class Preamble:
    """The text before an answer's JSON, fed in pieces of any size.

    `find` returns the text from the JSON's opening bracket on (so its first character is
    `{` or `[`), or "" while no JSON has begun; more than `limit` characters without one is
    an `ItemTooLargeError`. `end` says the answer ended: it returns the text from any bracket
    on, or raises `MalformedOutputError` when the answer held no JSON at all.
    """

    __slots__ = ("_held", "_limit")

    def __init__(self, limit: int) -> None:
        self._held = ""
        self._limit = limit

    def find(self, text: str) -> str:
        """Take the next piece; return the text from the JSON's opener on, or ''."""
        held = self._held
        preamble = held + text
        while True:
            stripped = preamble.lstrip()
            if not stripped:
                break
            if stripped[0] in "{[":
                self._held = ""
                return stripped
            # The held text had no match, so one can only begin on its last line: search from
            # there, not from the start (which made long prose fed in small pieces quadratic).
            last_line = held.rfind("\n")
            fence = _FENCE.search(preamble, max(last_line, 0))
            opener = _LINE_OPENER.search(preamble, last_line if last_line >= 0 else len(held))
            if fence is not None and (opener is None or fence.start() < opener.start(1)):
                held, preamble = "", preamble[fence.end() :]
                if not preamble:
                    break
                continue
            if opener is not None:
                self._held = ""
                return preamble[opener.start(1) :]
            if len(preamble) > self._limit:
                raise ItemTooLargeError(
                    f"no JSON found in the first {self._limit} characters of the answer"
                )
            break
        self._held = preamble
        return ""

    def end(self) -> str:
        """The answer ended before `find` saw JSON begin: the text from any bracket on."""
        start = _ANY_OPENER.search(self._held)
        if start is None:
            raise MalformedOutputError(
                "the answer holds no JSON: expected an object with a 'tasks' list, got "
                + excerpt(self._held)
            )
        text, self._held = self._held[start.start() :], ""
        return text


def excerpt(text: str, limit: int = 80) -> str:
    """The start of `text`, quoted, for an error message."""
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")
