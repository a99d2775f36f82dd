"""Seeing grounded items: a static HTML page of a text with each item's quoted words marked.

Pure building, no I/O: `highlight` for one text, `highlight_page` for several (the CLI's
`--html`). Every `Quote` found in an item (`quotes_in`: nested models, lists, dicts) with a
span inside the text marks those characters; the text is cut at every span's start and end,
so overlapping and nested spans come out as segments, each naming every item that covers it
(its fields, as JSON, in the segment's tooltip). Offsets are the Python `str`'s, characters
not bytes or UTF-16 units, as a `Quote`'s are. Items with no such quote are listed below the
text. Everything from the text and the items is HTML-escaped.
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ._quote import quotes_in

__all__ = ["Document", "highlight", "highlight_page", "item_json", "segments"]

#: Background colours of the items, by the number of the first item covering a segment.
_PALETTE: Final = ("#ffe98a", "#b9e6ff", "#c8f0b4", "#ffcfd8", "#e2d4ff", "#ffd9a8")

_STYLE: Final = """
body { font: 15px/1.6 system-ui, sans-serif; max-width: 62rem; margin: 2rem auto;
  padding: 0 1rem; color: #1c1c1c; }
h1 { font-size: 1.4rem; }
h2 { font-size: 1.1rem; margin: 2rem 0 .3rem; overflow-wrap: anywhere; }
section.doc { border-top: 1px solid #ddd; padding-top: .4rem; }
p.stats { color: #555; margin: .2rem 0 .6rem; }
p.failed { color: #b00020; }
div.text { white-space: pre-wrap; overflow-wrap: anywhere; background: #fcfcfc;
  border: 1px solid #e6e6e6; padding: .8rem 1rem; border-radius: 4px; }
mark { color: inherit; border-radius: 2px; cursor: help; }
mark.deep { box-shadow: inset 0 -3px #c77700; }
mark.on { outline: 2px solid #1a56c4; }
pre { font-size: 13px; background: #f6f6f6; padding: .4rem .6rem; margin: .2rem 0;
  white-space: pre-wrap; overflow-wrap: anywhere; }
""".strip()

# Hovering one segment outlines every segment of the items covering it.
_SCRIPT: Final = """
document.addEventListener("mouseover", (e) => {
  const m = e.target.closest ? e.target.closest("mark[data-items]") : null;
  for (const o of document.querySelectorAll("mark.on")) o.classList.remove("on");
  if (!m) return;
  const doc = m.closest("section");
  const mine = new Set(m.dataset.items.split(" "));
  for (const o of doc.querySelectorAll("mark[data-items]")) {
    if (o.dataset.items.split(" ").some((i) => mine.has(i))) o.classList.add("on");
  }
});
""".strip()


@dataclass
class Document:
    """One text of a page and its items; `name` heads its section, `error` says it failed."""

    text: str
    items: list[Any] = field(default_factory=list)
    name: str | None = None
    error: str | None = None


def highlight(text: str, items: Iterable[Any], *, title: str | None = None) -> str:
    """A self-contained HTML page showing `text` with each item's quoted words highlighted.

    Every `multitask.Quote` in an item (nested models and lists included) whose span lies in
    `text` is marked; hovering a mark shows the fields of every item covering it, as JSON.
    Items without such a quote are listed below the text. No external assets.
    """
    return highlight_page([Document(text, list(items))], title=title)


def highlight_page(documents: Iterable[Document], *, title: str | None = None) -> str:
    """One page of several documents, each a section in the given order."""
    heading = title if title is not None else "Highlights"
    sections = "\n".join(_section(n, doc) for n, doc in enumerate(documents))
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(heading)}</title>\n<style>\n{_STYLE}\n{_palette_css()}\n</style>\n"
        f"</head>\n<body>\n<h1>{_esc(heading)}</h1>\n{sections}\n"
        f"<script>\n{_SCRIPT}\n</script>\n</body>\n</html>\n"
    )


def item_json(item: Any) -> Any:
    """An item as JSON-ready values: a model's `model_dump(mode="json")`, else pydantic's
    serialisation of whatever it is (dicts, dataclasses, ...; an unknown object as its repr)."""
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    return to_jsonable_python(item, fallback=repr)


def _section(number: int, doc: Document) -> str:
    text = doc.text
    spans: list[tuple[int, int, int]] = []  # (start, end, item number)
    ungrounded: list[int] = []
    shown: list[str] = []  # each item's fields, as JSON
    tips: list[str] = []  # and where its quotes are, for its marks' tooltips
    for i, item in enumerate(doc.items):
        fields = json.dumps(item_json(item), ensure_ascii=False, indent=1)
        where = ""
        for q in quotes_in(item):
            start, end = q.start, q.end
            if start is not None and end is not None and 0 <= start < end <= len(text):
                spans.append((start, end, i))
                where += f"\n{json.dumps(str(q), ensure_ascii=False)} at {start}-{end}, {q.match}"
        if not where:
            ungrounded.append(i)
        shown.append(fields)
        tips.append(f"item {i + 1}: {fields}{where}")
    parts = [f'<section class="doc" id="doc-{number}">']
    if doc.name is not None:
        parts.append(f"<h2>{_esc(doc.name)}</h2>")
    grounded = len(doc.items) - len(ungrounded)
    parts.append(
        f'<p class="stats">{len(doc.items)} item(s), {grounded} highlighted, '
        f"{len(ungrounded)} without a quote in the text</p>"
    )
    if doc.error is not None:
        parts.append(f'<p class="stats failed">failed: {_esc(doc.error)}</p>')
    parts.append(f'<div class="text">{_marked(text, spans, tips)}</div>')
    if ungrounded:
        parts.append('<h3>Items without a quote in the text</h3>\n<ul class="ungrounded">')
        parts.extend(
            f'<li data-item="{i}">item {i + 1}<pre>{_esc(shown[i])}</pre></li>' for i in ungrounded
        )
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _marked(text: str, spans: Sequence[tuple[int, int, int]], tips: Sequence[str]) -> str:
    """`text`, escaped, with each segment that spans cover in a `<mark>` naming its items."""
    out: list[str] = []
    for start, end, covering in segments(text, spans):
        words = _esc(text[start:end])
        if not covering:
            out.append(words)
            continue
        tip = "\n\n".join(tips[i] for i in covering)
        kind = f"c{covering[0] % len(_PALETTE)}" + (" deep" if len(covering) > 1 else "")
        names = " ".join(map(str, covering))
        out.append(
            f'<mark class="{kind}" data-items="{names}" data-start="{start}" '
            f'data-end="{end}" title="{_esc(tip)}">{words}</mark>'
        )
    return "".join(out)


def segments(
    text: str, spans: Iterable[tuple[int, int, int]]
) -> list[tuple[int, int, tuple[int, ...]]]:
    """`text` cut at every span's start and end: (start, end, items covering it, in order),
    covering the whole text, in order. A span is (start, end, item number)."""
    bounds = {0, len(text)}
    opens: dict[int, list[int]] = {}
    closes: dict[int, list[int]] = {}
    for start, end, item in spans:
        bounds.update((start, end))
        opens.setdefault(start, []).append(item)
        closes.setdefault(end, []).append(item)
    active: dict[int, int] = {}  # item -> how many of its spans cover here
    out: list[tuple[int, int, tuple[int, ...]]] = []
    cuts = sorted(bounds)
    for a, b in itertools.pairwise(cuts):
        for item in closes.get(a, ()):
            active[item] -= 1
            if not active[item]:
                del active[item]
        for item in opens.get(a, ()):
            active[item] = active.get(item, 0) + 1
        out.append((a, b, tuple(sorted(active))))
    return out


def _palette_css() -> str:
    return "\n".join(f"mark.c{n} {{ background: {c}; }}" for n, c in enumerate(_PALETTE))


def _esc(value: str) -> str:
    return html.escape(value, quote=True)
