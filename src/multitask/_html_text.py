"""A web page's visible text, as a browser lays it out, with where each run of it came from.

`visible_text(html)` walks the page with the standard library's `html.parser` (a tokenizer
that knows HTML's quirks: unquoted attributes, `<script>` bodies, legacy entities without a
`;`) and keeps what a reader sees: no `<script>`, `<style>`, `<template>`, `<noscript>` or
`<head>` metadata, nothing inside an element marked `hidden`, `aria-hidden="true"` or styled
`display: none`; block elements start lines, paragraphs and headings are set apart by a blank
line, runs of whitespace collapse to one space (kept as written in `<pre>` and `<textarea>`),
and entities are decoded.

Every event of the parser comes with its place in the source, so the text it produces keeps a
map back: `(text_offset, source_offset)` pairs, one where each run begins, a run's characters
following its source one for one (a collapsed space or a decoded entity starts a run of its own).
Why not a library: trafilatura, inscriptis or html2text pick a page's main content or lay out
tables well, but they pull in lxml (or a GPL licence) and none says where a character came from.
"""

from __future__ import annotations

import html
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from html.entities import html5
from html.parser import HTMLParser

__all__ = ["VisibleText", "source_offset", "visible_text"]

#: Elements whose content is never shown.
_SKIPPED = frozenset(
    {
        "script", "style", "noscript", "template", "iframe", "object", "canvas",
        "video", "audio", "map", "datalist", "svg", "math", "select",
    }
)  # fmt: skip
#: Elements that start and end a line.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "body", "caption", "dd", "details", "dialog", "div",
        "dl", "dt", "fieldset", "figcaption", "footer", "form", "header", "hgroup", "html",
        "legend", "li", "main", "menu", "nav", "ol", "option", "section", "summary", "tbody",
        "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
#: Blocks set apart from their neighbours by a blank line.
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "figure", "hr"}
)
#: Elements whose whitespace is kept as written.
_PREFORMATTED = frozenset({"pre", "textarea", "listing", "plaintext", "xmp"})
#: Elements without content or an end tag.
_VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta",
        "param", "source", "track", "wbr",
    }
)  # fmt: skip
#: Elements whose end tag may be left out, and the start tags that end them then.
_ENDED_BY: dict[str, frozenset[str]] = {
    "p": _BLOCKS | _PARAGRAPHS | {"table"},
    "li": frozenset({"li"}),
    "dt": frozenset({"dt", "dd"}),
    "dd": frozenset({"dt", "dd"}),
    "option": frozenset({"option", "optgroup"}),
    "tr": frozenset({"tr", "tbody", "tfoot"}),
    "td": frozenset({"td", "th", "tr"}),
    "th": frozenset({"td", "th", "tr"}),
}
#: Elements whose end tag also ends one of those inside it left open.
_CONTAINERS = _BLOCKS | _PARAGRAPHS | {"td", "th"}
#: Elements that must be closed: one open inside an element of `_ENDED_BY` nests in it.
_NESTING = frozenset(
    {
        "ul", "ol", "menu", "dl", "table", "div", "section", "article", "blockquote", "nav",
        "aside", "header", "footer", "main", "form", "fieldset", "figure", "details",
    }
)  # fmt: skip
#: The whitespace HTML collapses (not U+00A0, which `&nbsp;` writes and which stays).
_SPACES = " \t\n\r\f"


@dataclass(frozen=True, slots=True)
class VisibleText:
    """What `visible_text` found: the text, its map back to the source, the page's title."""

    text: str
    #: `(text_offset, source_offset)` where each run of `text` begins, in order.
    offsets: tuple[tuple[int, int], ...]
    title: str | None


def visible_text(source: str) -> VisibleText:
    """The visible text of the HTML page `source` (see the module's docstring)."""
    parser = _TextParser(source)
    parser.feed(source)
    parser.close()
    text = parser.text()
    return VisibleText(text, tuple(parser.offsets), parser.title())


def source_offset(offsets: Sequence[tuple[int, int]], offset: int) -> int | None:
    """Where in the source the character at `offset` of the text came from, by `offsets`
    (`VisibleText.offsets`); None without a map."""
    if not offsets:
        return None
    i = bisect_right(offsets, (offset, float("inf"))) - 1
    text_at, source_at = offsets[max(i, 0)]
    return source_at + max(offset - text_at, 0)


class _TextParser(HTMLParser):
    """The parser's events turned into text: see `visible_text`."""

    def __init__(self, source: str) -> None:
        # Character references one by one, each with its place (with True they would come
        # decoded inside a run of text, whose characters would no longer match the source's).
        super().__init__(convert_charrefs=False)
        self._source = source
        self._line_starts = [0]
        self._line_starts.extend(i + 1 for i, c in enumerate(source) if c == "\n")
        self._parts: list[str] = []
        self._length = 0
        self.offsets: list[tuple[int, int]] = []
        self._skip: list[str] = []  # the element open whose content is not shown (one at most)
        self._skip_depth = 0  # elements of its name open inside it
        self._pre = 0  # open preformatted elements
        self._pre_start = False  # just after <pre>: its first newline is not content
        self._breaks = 0  # line breaks owed before the next text (2: a blank line)
        self._break_at = 0  # the source offset they are traced to
        self._space_at: int | None = None  # a collapsed space owed before the next word
        self._title: list[str] | None = None
        self._titles: list[str] = []
        self._line_empty = True  # nothing written on the current line yet
        self._cell = False  # a table cell began on this line: the next one is a tab apart

    # -- where events are ---------------------------------------------------------------------

    def _here(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    # -- the parser's events ------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            skipped = self._skip[-1]
            if skipped not in _ENDED_BY:
                if tag == skipped and tag not in _VOID:
                    self._skip_depth += 1
            elif self._skip_depth == 0 and tag in _ENDED_BY[skipped]:
                self._skip.pop()  # `<li hidden>a<li>b`: the second ends the first
                self._start(tag, attrs)
            elif tag in _NESTING:  # `<li hidden>a<ul><li>b</ul>`: b is inside it
                self._skip_depth += 1
            return
        self._start(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            skipped = self._skip[-1]
            if skipped not in _ENDED_BY:
                if tag == skipped:
                    if self._skip_depth:
                        self._skip_depth -= 1
                    else:
                        self._skip.pop()
                return
            if self._skip_depth:
                if tag in _NESTING:
                    self._skip_depth -= 1
                return
            if tag == skipped:
                self._skip.pop()
                return
            if tag not in _CONTAINERS:
                return
            self._skip.pop()  # `<ul><li hidden>a</ul>`: the list's end ends the item
        at = self._here()
        if tag == "title" and self._title is not None:
            self._titles.append(" ".join(_words("".join(self._title))))
            self._title = None
        elif tag in _PREFORMATTED:
            self._pre = max(self._pre - 1, 0)
        if tag in _PARAGRAPHS:
            self._owe(2, at)
        elif tag in _BLOCKS or tag == "br":
            self._owe(1, at)
            if tag == "tr":
                self._cell = False

    def handle_data(self, data: str) -> None:
        if self._skip or not data:
            return
        self._text(data, self._here())

    def handle_entityref(self, name: str) -> None:
        self._reference("&" + name)

    def handle_charref(self, name: str) -> None:
        self._reference("&#" + name)

    def unknown_decl(self, data: str) -> None:
        """`<![CDATA[...]]>` in HTML is a bogus comment: not shown."""

    # -- building the text --------------------------------------------------------------------

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._pre_start = False
        if tag in _SKIPPED or _hidden(attrs):
            if tag not in _VOID:
                self._skip.append(tag)
                self._skip_depth = 0
            return
        at = self._here()
        if tag == "title":
            self._title = []
            return
        if tag in _PARAGRAPHS:
            self._owe(2, at)
        elif tag in _BLOCKS:
            self._owe(1, at)
            if tag == "tr":
                self._cell = False
        if tag == "br":  # a line break of its own, after any a block owes
            if self._length:
                self._space_at = None
                self._settle(at)
                self._emit("\n", at)
                self._line_empty = True
        elif tag in ("td", "th"):
            if self._cell:
                self._owe_tab(at)
            self._cell = True
        if tag in _PREFORMATTED:
            self._pre += 1
            self._pre_start = True

    def _owe(self, breaks: int, at: int) -> None:
        """A block boundary: `breaks` line breaks before the next text, none at the start."""
        if self._length == 0:
            return
        if breaks > self._breaks:
            if self._breaks == 0:
                self._break_at = at
            self._breaks = breaks
        self._space_at = None

    def _owe_tab(self, at: int) -> None:
        if self._breaks == 0 and not self._line_empty:
            self._emit("\t", at)
            self._space_at = None

    def _settle(self, at: int) -> None:
        """Write the line breaks or the space owed before text at `at`."""
        if self._breaks:
            have = 0
            for part in reversed(self._parts):  # a <br> already ended the line
                stripped = len(part) - len(part.rstrip("\n"))
                have += stripped
                if stripped < len(part):
                    break
            owed = self._breaks - min(have, self._breaks)
            for _ in range(owed):  # each traced to the tag that made it
                self._emit("\n", self._break_at)
            self._breaks = 0
            self._space_at = None
            self._line_empty = True
        elif self._space_at is not None:
            if not self._line_empty:
                self._emit(" ", self._space_at)
            self._space_at = None

    def _collapse(self, data: str, at: int) -> None:
        i, n = 0, len(data)
        while i < n:
            j = i
            while j < n and data[j] in _SPACES:
                j += 1
            if j > i:
                if self._space_at is None and not self._line_empty:
                    self._space_at = at + i
                i = j
                continue
            while j < n and data[j] not in _SPACES:
                j += 1
            self._settle(at + i)
            self._emit(data[i:j], at + i)
            self._line_empty = False
            i = j

    def _preformatted(self, data: str, at: int) -> None:
        if self._pre_start:
            self._pre_start = False
            if data.startswith("\r\n"):
                data, at = data[2:], at + 2
            elif data[:1] in ("\n", "\r"):
                data, at = data[1:], at + 1
            if not data:
                return
        self._settle(at)
        i = 0
        while i < len(data):  # a CR LF or a lone CR is one newline, as browsers read it
            cr = data.find("\r", i)
            end = len(data) if cr < 0 else cr
            if end > i:
                self._emit(data[i:end], at + i)
            if cr < 0:
                break
            self._emit("\n", at + cr)
            i = cr + 2 if data.startswith("\r\n", cr) else cr + 1
        self._line_empty = data.endswith(("\n", "\r"))

    def _reference(self, name: str) -> None:
        """A character reference (`&amp;`, `&#38;`, `&#x26;`, legacy `&amp`): decoded, each
        character it makes traced to its `&`, and read as text is (`&#32;` collapses)."""
        at = self._here()
        if self._skip:
            return
        ends = self._source.startswith(";", at + len(name))
        decoded, rest = _decode_reference(name, ends)
        self._pre_start = False
        for char in decoded:
            self._text(char, at)
        if rest:  # `&copy2024`: a legacy name, then letters of the text
            self._text(rest, at + len(name) + int(ends) - len(rest))

    def _text(self, data: str, at: int) -> None:
        if self._title is not None:
            self._title.append(data)
        elif self._pre:
            self._preformatted(data, at)
        else:
            self._collapse(data, at)

    def _emit(self, text: str, at: int) -> None:
        """Append `text`, which comes from the source at `at` on."""
        if not text:
            return
        if self.offsets:
            text_at, source_at = self.offsets[-1]
            if source_at + (self._length - text_at) != at:
                self.offsets.append((self._length, at))
        else:
            self.offsets.append((self._length, at))
        self._parts.append(text)
        self._length += len(text)

    def text(self) -> str:
        """The text made, without the whitespace a `<br>` or `<pre>` left at its end."""
        text = "".join(self._parts).rstrip(" \t\n")
        while self.offsets and self.offsets[-1][0] >= len(text):
            self.offsets.pop()
        return text

    def title(self) -> str | None:
        return self._titles[0] if self._titles and self._titles[0] else None


def _decode_reference(name: str, ends: bool) -> tuple[str, str]:
    """A reference the parser met (`&name`, `&#digits`, `&#xhex`; `ends`: a `;` follows) as
    (what it decodes to, the letters after a legacy name without its `;`, which are text)."""
    if name.startswith("&#") or (ends and name[1:] + ";" in html5):
        return html.unescape(name + (";" if ends else "")), ""
    for k in range(len(name), 1, -1):  # the longest legacy name (`&amp`, `&copy`) it starts with
        if name[1:k] in html5:
            return html5[name[1:k]], name[k:] + (";" if ends else "")
    return name + (";" if ends else ""), ""


def _words(text: str) -> list[str]:
    """`text` split at HTML's whitespace only (`str.split()` would split at U+00A0 too)."""
    for space in _SPACES[1:]:
        text = text.replace(space, " ")
    return [word for word in text.split(" ") if word]


def _hidden(attrs: list[tuple[str, str | None]]) -> bool:
    """Whether an element's attributes hide it: `hidden`, `aria-hidden="true"`, or a `style`
    with `display: none` or `visibility: hidden`."""
    for name, value in attrs:
        if name == "hidden":
            return True
        if name == "aria-hidden" and (value or "").strip().lower() == "true":
            return True
        if name == "style" and value:
            for declaration in value.lower().split(";"):
                prop, _, val = declaration.partition(":")
                val = val.replace("!important", "").strip()
                if (prop.strip(), val) in (("display", "none"), ("visibility", "hidden")):
                    return True
    return False
