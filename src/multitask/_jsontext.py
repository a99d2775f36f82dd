"""What the C JSON parser (yajl, under ijson) reads differently from RFC 8259, put right first.

Both task parsers hand their text to yajl through these, so they read it the same way:

- yajl pairs a high-surrogate escape with whatever `\\u` escape follows it (`"\\ud83d\\u00e9"`
  became U+1F4E9, the `é` lost). `mend_surrogates` replaces every unpaired surrogate escape,
  high or low, with `?`, which is what yajl makes of a lone high surrogate, and leaves pairs
  alone. Over text that arrives in pieces it holds back the end of a piece where an escape is
  cut, or where a high surrogate may yet get its pair.
- yajl takes form feed and vertical tab for whitespace; JSON allows only space, tab, LF and
  CR. `strict_whitespace` turns them into a byte yajl refuses wherever it stands (outside a
  string and inside one), so they are errors where they would be in the JSON, and ignored
  in prose after it, like any other character there.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["FF_VT_NOTE", "has_ff_vt", "mend_surrogates", "strict_whitespace"]

# One escape: `\u` and four hex digits (group 1), `\u` cut short at the end (group 2), any
# other escape, or a backslash at the very end.
_ESCAPE: Final = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(u[0-9a-fA-F]{0,3})\Z|[\s\S]|\Z)")
_HIGH: Final = frozenset("89abAB")  # the second hex digit of D800-DBFF
_LOW: Final = frozenset("cdefCDEF")  # ... and of DC00-DFFF
_FF_VT: Final = str.maketrans("\f\v", "\x01\x01")
#: What a parse error caused by a form feed or vertical tab adds to its message.
FF_VT_NOTE: Final = " (form feed and vertical tab are not JSON whitespace)"


def mend_surrogates(text: str, final: bool = True) -> tuple[str, int]:
    """`text` with each unpaired surrogate escape replaced by `?`, up to where it must stop.

    Returns the mended text and the offset in `text` it covers: unless `final`, an escape cut
    at the end, or a high surrogate at the end that the next piece may pair, is held back
    (the caller hands `text[offset:]` in again, before the next piece). `text` must not begin
    in the middle of an escape.
    """
    if "\\u" not in text and text[-1:] != "\\":
        return text, len(text)
    size = len(text)
    parts: list[str] = []
    last = 0  # text[last:] is not in `parts` yet
    high = -1  # where a high surrogate escape still waiting for its pair begins
    for match in _ESCAPE.finditer(text):
        start, end = match.span()
        code = match.group(1)
        if (
            code is None
            and end == size
            and not final
            and (match.group(2) is not None or end - start == 1)
        ):  # an escape cut at the end: hold it back, with a high surrogate just before it
            if high >= 0 and high + 6 == start:
                return _joined(parts, text, last, high), high
            if high >= 0:
                parts += (text[last:high], "?")
                last = high + 6
            return _joined(parts, text, last, start), start
        if high >= 0:
            if start == high + 6 and code is not None and code[0] in "dD" and code[1] in _LOW:
                high = -1  # a pair
                continue
            parts += (text[last:high], "?")
            last = high + 6
            high = -1
        if code is not None and code[0] in "dD":
            if code[1] in _HIGH:
                high = start
            elif code[1] in _LOW:  # a low surrogate with no high one before it
                parts += (text[last:start], "?")
                last = end
    if high >= 0:
        if high + 6 == size and not final:
            return _joined(parts, text, last, high), high
        parts += (text[last:high], "?")
        last = high + 6
    return _joined(parts, text, last, size), size


def _joined(parts: list[str], text: str, last: int, stop: int) -> str:
    if not parts:  # (then `last` is 0)
        return text if stop == len(text) else text[:stop]
    parts.append(text[last:stop])
    return "".join(parts)


def has_ff_vt(text: str) -> bool:
    """Whether `text` holds a form feed or a vertical tab."""
    return "\f" in text or "\v" in text


def strict_whitespace(text: str) -> str:
    """`text` with form feeds and vertical tabs made into a character yajl refuses (U+0001)."""
    return text.translate(_FF_VT)
