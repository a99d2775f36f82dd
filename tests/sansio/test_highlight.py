"""`multitask.web.highlight`: a static page of a text with each item's grounded quotes marked.

The page is read back with the standard library's HTML parser, as a browser would read it:
the text comes out whole and unchanged, each `<mark>` holds exactly the characters of the
spans covering it (Python `str` offsets: emoji, CJK and combining marks included), names
every item covering it, and its tooltip holds their fields; nothing from the text or the
items is markup.
"""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel, TypeAdapter

from multitask import Quote
from multitask.lowlevel import Extraction
from multitask.providers import OpenAIChatDecoder
from multitask.web import highlight


class Mention(BaseModel):
    name: str
    quote: Quote


class Page(HTMLParser):
    """What a browser would see: the text's characters, its marks, the ungrounded items."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.texts: list[str] = []  # each section's text, as shown
        self.marks: list[dict[str, Any]] = []  # attributes, with "words" and "section"
        self.ungrounded: list[tuple[int, Any]] = []  # (item number, fields)
        self.title = ""
        self._in_text = 0
        self._mark: dict[str, Any] | None = None
        self._li: int | None = None
        self._pre: list[str] | None = None
        self._in_title = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "div" and a.get("class") == "text":
            self._in_text = 1
            self.texts.append("")
        elif self._in_text and tag == "mark":
            self._mark = {**a, "words": "", "section": len(self.texts) - 1}
        elif self._in_text:
            raise AssertionError(f"markup inside the text: <{tag}>")
        elif tag == "li" and "data-item" in a:
            self._li = int(a["data-item"] or "")
        elif tag == "pre" and self._li is not None:
            self._pre = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._mark is not None:
            self.marks.append(self._mark)
            self._mark = None
        elif tag == "div" and self._in_text:
            self._in_text = 0
        elif tag == "pre" and self._pre is not None and self._li is not None:
            self.ungrounded.append((self._li, json.loads("".join(self._pre))))
            self._pre = None
        elif tag == "li":
            self._li = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_text:
            self.texts[-1] += data
            if self._mark is not None:
                self._mark["words"] += data
        elif self._pre is not None:
            self._pre.append(data)
        elif self._in_title:
            self.title += data


def covered(page: Page, section: int = 0) -> dict[int, set[int]]:
    """Item number -> the character offsets its marks cover, as the page says."""
    out: dict[int, set[int]] = {}
    for mark in page.marks:
        if mark["section"] != section:
            continue
        for item in mark["data-items"].split():
            out.setdefault(int(item), set()).update(
                range(int(mark["data-start"]), int(mark["data-end"]))
            )
    return out


def check_marks(page: Page, text: str) -> None:
    """Every mark holds exactly the characters of the text its offsets say."""
    assert page.texts == [text]
    for mark in page.marks:
        start, end = int(mark["data-start"]), int(mark["data-end"])
        assert mark["words"] == text[start:end], mark


def test_each_items_span_is_marked_with_its_fields_on_hover() -> None:
    text = "Jason is 10 and John is 30."
    items = [
        Mention(name="Jason", quote=Quote("Jason", 0, 5, "exact")),
        Mention(name="John", quote=Quote("john is 30", 16, 26, "normalized")),
    ]
    page = Page(highlight(text, items))
    check_marks(page, text)
    assert [m["words"] for m in page.marks] == ["Jason", "John is 30"]
    assert covered(page) == {0: set(range(0, 5)), 1: set(range(16, 26))}
    tip = page.marks[1]["title"]
    assert tip.startswith("item 2: ")
    assert json.loads(tip.removeprefix("item 2: ").split('\n"')[0]) == {
        "name": "John",
        "quote": "john is 30",
    }
    assert '"john is 30" at 16-26, normalized' in tip
    assert page.ungrounded == []
    assert page.title == "Highlights"


def test_overlapping_and_nested_spans_are_cut_into_segments_naming_every_item() -> None:
    text = "0123456789abcdefghij"
    spans = [(0, 10), (5, 15), (2, 4), (5, 15), (18, 20)]  # nested, overlapping, the same twice
    items = [
        Mention(name=str(i), quote=Quote(text[a:b], a, b, "exact"))
        for i, (a, b) in enumerate(spans)
    ]
    page = Page(highlight(text, items))
    check_marks(page, text)
    assert covered(page) == {i: set(range(a, b)) for i, (a, b) in enumerate(spans)}
    segments = [(int(m["data-start"]), int(m["data-end"]), m["data-items"]) for m in page.marks]
    assert segments == [
        (0, 2, "0"),
        (2, 4, "0 2"),
        (4, 5, "0"),
        (5, 10, "0 1 3"),
        (10, 15, "1 3"),
        (18, 20, "4"),
    ]
    deep = page.marks[3]
    assert "deep" in deep["class"].split()
    assert [line for line in deep["title"].split("\n") if line.startswith("item ")] == [
        "item 1: {",
        "item 2: {",
        "item 4: {",
    ]


def test_offsets_are_python_characters_emoji_cjk_and_combining_marks() -> None:
    text = "👩‍💻 Zoë met 東京の友人 and Jose\u0301 🇫🇷 at café."
    words = ["Zoë", "東京の友人", "Jose\u0301", "🇫🇷", "👩‍💻", "e\u0301"]
    items = []
    for word in words:
        start = text.index(word)
        items.append(Mention(name=word, quote=Quote(word, start, start + len(word), "exact")))
    page = Page(highlight(text, items))
    check_marks(page, text)
    assert {m["words"] for m in page.marks} >= {"Zoë", "東京の友人", "🇫🇷", "👩‍💻", "e\u0301"}
    for i, word in enumerate(words):
        start = text.index(word)
        assert covered(page)[i] == set(range(start, start + len(word)))
    # The combining accent of "Jose\u0301" is its own mark inside Jose's: split, not lost.
    assert "".join(m["words"] for m in page.marks if "2" in m["data-items"].split()) == "Jose\u0301"


def test_everything_from_the_text_and_items_is_escaped() -> None:
    text = "<script>alert('x')</script> & \"quoted\" <b>bold</b> &amp; done"
    quote = "<script>alert('x')</script>"
    items = [
        Mention(name="<script>alert(\"y\")</script> & 'q'", quote=Quote(quote, 0, len(quote))),
        Mention(name="</pre><script>z</script>", quote=Quote("nowhere")),
    ]
    out = highlight(text, items, title='<script>t</script> & "T"')
    assert out.count("<script") == 1  # the page's own, nothing else
    assert "<b>" not in out
    page = Page(out)  # raises on any markup inside the text
    check_marks(page, text)
    assert page.title == '<script>t</script> & "T"'
    assert json.loads(page.marks[0]["title"].removeprefix("item 1: ").split('\n"')[0])["name"] == (
        "<script>alert(\"y\")</script> & 'q'"
    )
    assert page.ungrounded == [(1, {"name": "</pre><script>z</script>", "quote": "nowhere"})]


def test_quotes_anywhere_in_an_item_are_marked() -> None:
    class Place(BaseModel):
        where: Quote

    class Event(BaseModel):
        what: Quote
        places: list[Place]
        also: dict[str, Quote]

    text = "The fair opened in Lyon, then moved to Nice and Paris."
    at = {w: Quote(w, text.index(w), text.index(w) + len(w)) for w in ("fair", "Lyon", "Nice")}
    paris = Quote("Paris", text.index("Paris"), text.index("Paris") + 5)
    item = Event(
        what=at["fair"],
        places=[Place(where=at["Lyon"]), Place(where=at["Nice"])],
        also={"p": paris},
    )
    page = Page(highlight(text, [item]))
    check_marks(page, text)
    assert [m["words"] for m in page.marks] == ["fair", "Lyon", "Nice", "Paris"]
    assert {m["data-items"] for m in page.marks} == {"0"}


def test_items_without_a_grounded_quote_are_listed_below_the_text() -> None:
    @dataclasses.dataclass
    class Note:
        text: str
        quote: Quote

    text = "short"
    items: list[Any] = [
        Mention(name="no span", quote=Quote("short")),  # validated outside an extraction
        {"plain": "dict", "n": 1},  # no Quote at all
        Note("past the end", Quote("xx", 3, 9)),
        Mention(name="empty", quote=Quote("", 2, 2)),
        Mention(name="here", quote=Quote("short", 0, 5, "exact")),
    ]
    page = Page(highlight(text, items))
    check_marks(page, text)
    assert [m["data-items"] for m in page.marks] == ["4"]
    assert page.ungrounded == [
        (0, {"name": "no span", "quote": "short"}),
        (1, {"plain": "dict", "n": 1}),
        (2, {"text": "past the end", "quote": "xx"}),
        (3, {"name": "empty", "quote": ""}),
    ]


def test_an_empty_page_and_a_text_with_newlines() -> None:
    page = Page(highlight("", []))
    assert page.texts == [""]
    assert page.marks == []
    text = "line one\n\n  line two\r\n"
    page = Page(highlight(text, iter([Mention(name="t", quote=Quote("two", 17, 20))])))
    assert page.texts == [text]  # as it is: the page keeps line breaks and spaces (pre-wrap)
    assert [m["words"] for m in page.marks] == ["two"]


def test_items_from_a_real_extraction() -> None:
    text = "Jason is 10 and John is 30. Later, JASON turned 11 and Jason left."
    ex = Extraction(TypeAdapter(Mention), OpenAIChatDecoder("content"), text=text)
    answer = {
        "tasks": [
            {"name": "Jason", "quote": "Jason is 10"},
            {"name": "John", "quote": "John is 30"},
            {"name": "Jason", "quote": "jason turned 11"},
            {"name": "Jason", "quote": "Jason"},
        ]
    }
    items = ex.feed_text(json.dumps(answer)) + ex.close()
    ex.raise_for_outcome()
    page = Page(highlight(text, items))
    check_marks(page, text)
    assert [m["words"] for m in page.marks] == [
        "Jason is 10",
        "John is 30",
        "JASON turned 11",
        "Jason",
    ]
    assert [m["title"].rsplit(", ", 1)[1] for m in page.marks] == [
        "exact",
        "exact",
        "normalized",
        "exact",
    ]
