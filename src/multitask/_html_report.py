"""`multitask extract --html report.html`: one highlight page of the run, written at its end.

The documents are passed through as `extract_many` reads them, their texts kept in reading
(input) order, and each item the run delivers is kept with its document, its Quotes' spans
and all; at the end the page (`_highlight.highlight_page`) is written, each document a
section. It holds the documents of this run (a resumed run's finished ones are not read again)
and keeps their texts and items in memory until then. Without a path it does nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from ._highlight import Document, highlight_page
from ._many import Result
from ._sources import Document as Source

__all__ = ["HtmlReport"]


class HtmlReport:
    """The `--html` page of one run; `path=None`: none, and every method passes through."""

    def __init__(self, path: Path | None, *, schema: str) -> None:
        self.title = f"multitask extract: {schema}"
        self._documents: dict[Any, Document] = {}
        self._positions: dict[Any, list[int]] = {}
        # Opened now, so that a path that cannot be written fails before any document runs.
        self._file: IO[str] | None = (
            path.open("w", encoding="utf-8", errors="replace", newline="\n") if path else None
        )

    async def read(
        self, documents: AsyncIterator[tuple[Any, Any]]
    ) -> AsyncIterator[tuple[Any, Any]]:
        """`documents` as they are, each text kept (a file sent as it is, a PDF, has none)."""
        async for key, text in documents:
            if self._file is not None:
                if isinstance(text, Source):  # a PDF's text layer, a page's visible text
                    shown = text.text
                else:
                    shown = text if isinstance(text, str) else ""
                self._documents[key] = Document(shown, name=str(key))
                self._positions[key] = []
            yield key, text

    def add(self, result: Result[Any]) -> None:
        """Keep an item of the run with its document, or how the document ended."""
        doc = self._documents.get(result.index)
        if doc is None:
            return
        if not result.done:
            doc.items.append(result.item)
            self._positions[result.index].append(
                result.position if result.position is not None else len(doc.items)
            )
        elif result.error is not None:
            doc.error = str(result.error)

    def close(self) -> None:
        """Write the page (each document's items in their order in it) and close the file."""
        if self._file is None:
            return
        for key, doc in self._documents.items():
            order = sorted(range(len(doc.items)), key=self._positions[key].__getitem__)
            doc.items = [doc.items[i] for i in order]
        with self._file:
            self._file.write(highlight_page(self._documents.values(), title=self.title))
        self._file = None
