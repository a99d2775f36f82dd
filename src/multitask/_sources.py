"""`Document`: a text as a user has it, with where its pages begin and what it came from.

A PDF's text layer, a web page's visible text or a converter's output (Docling, markitdown)
is one text to extract from; `pages` keeps where each page begins in it, so that a grounded
item's quote can say which page it is on. `Document.from_pdf` reads a PDF's text layer (pypdf,
the `pdf` extra), `Document.from_html` a web page's visible text (`_html_text`), keeping where
each character came from in the HTML.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ._html_text import source_offset, visible_text
from ._pdf_text import read_pdf_text

__all__ = ["Document"]


@dataclass(frozen=True, slots=True)
class Document:
    """A text to extract from, with page offsets and metadata.

    `pages`: the offset in `text` where each page begins, in order (the first is 0); empty
    when the text has no pages. `metadata`: anything the caller keeps with it (a file name,
    a URL, a title); it is not sent to the model. A text made from another format keeps its
    map back to it there (`"source_offsets"`, see `source_offset`).
    """

    text: str
    pages: Sequence[int] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Document text must be a str, not {type(self.text).__name__}")
        pages = tuple(self.pages)
        if pages:
            if pages[0] != 0:
                raise ValueError(f"the first page must begin at offset 0, not {pages[0]}")
            if any(b < a for a, b in pairwise(pages)):
                raise ValueError("page offsets must not go down")
            if pages[-1] > len(self.text):
                raise ValueError(
                    f"page offset {pages[-1]} is past the end of the text ({len(self.text)})"
                )
        object.__setattr__(self, "pages", pages)

    def page_of(self, offset: int) -> int | None:
        """The page (numbered from 1) holding `offset`, or None for a text without pages."""
        if not self.pages:
            return None
        return bisect_right(self.pages, offset)

    def __len__(self) -> int:
        return len(self.text)

    def source_offset(self, offset: int) -> int | None:
        """Where in the source (the HTML of `from_html`) the character at `offset` of `text`
        came from; None when the text is the source itself (no `"source_offsets"` map).

        A collapsed run of whitespace is traced to its first character, a decoded entity
        (`&amp;`) to its `&`, and a line break a block element made to that element's tag.
        """
        if not 0 <= offset < max(len(self.text), 1):
            raise IndexError(f"offset {offset} is outside the text (0 to {len(self.text)})")
        return source_offset(self.metadata.get("source_offsets", ()), offset)

    @classmethod
    def from_html(cls, html: str, *, url: str | None = None) -> Document:
        """The visible text of the web page `html`, as a browser shows it.

        Scripts, styles, templates and hidden elements (`hidden`, `aria-hidden="true"`,
        `display: none`) are left out; block elements start lines, paragraphs and headings
        are set apart by a blank line, whitespace collapses as a browser collapses it (kept in
        `<pre>`), and entities are decoded. `metadata` holds the `"title"` (when the page has
        one), the `url` (when given) and `"source_offsets"`: `(text_offset, html_offset)`
        where each run of the text begins, for `source_offset`.

        It walks the page with the standard library's `html.parser`, whose every event says
        where it is in the source, which is what the map back needs; the libraries that do
        more (trafilatura's main-content guess, inscriptis' table layout) pull in lxml and
        say nothing of where a character came from. Convert with one of them, or Docling or
        markitdown, and pass its text as `Document(text)` when that suits a page better.
        """
        if not isinstance(html, str):
            raise TypeError(f"html must be a str, not {type(html).__name__} (decode it first)")
        page = visible_text(html)
        metadata: dict[str, Any] = {}
        if page.title:
            metadata["title"] = page.title
        if url is not None:
            metadata["url"] = url
        metadata["source_offsets"] = page.offsets
        return cls(page.text, metadata=metadata)

    @classmethod
    def from_pdf(
        cls,
        source: bytes | str | os.PathLike[str],
        *,
        page_separator: str = "\n\n",
        password: str | None = None,
    ) -> Document:
        """The text layer of a PDF (its bytes, or a path), read locally by pypdf.

        The pages' texts are joined by `page_separator` (which ends the page before it), and
        `pages` holds where each begins, so a grounded item's quote knows its page. `metadata`
        holds `"name"` (the file's name, for a path), `"page_count"` and the PDF's `"title"`
        when it has one. A scan without a text layer reads as empty pages: send that file to
        the model as `multitask.PDF` instead. Needs the `pdf` extra
        (`pip install "multitask[pdf]"`); without it this is a `ConfigurationError` saying so.
        """
        pdf = read_pdf_text(source, password=password)
        starts: list[int] = []
        offset = 0
        for i, page in enumerate(pdf.pages):
            starts.append(offset)
            offset += len(page) + (len(page_separator) if i < len(pdf.pages) - 1 else 0)
        metadata: dict[str, Any] = {"page_count": len(pdf.pages)}
        if pdf.name is not None:
            metadata["name"] = pdf.name
        if pdf.title:
            metadata["title"] = pdf.title
        return cls(page_separator.join(pdf.pages), pages=starts, metadata=metadata)
