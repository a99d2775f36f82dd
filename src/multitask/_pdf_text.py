"""A PDF's text layer, read locally with pypdf (the `pdf` extra): one text per page.

No PDF parsing of our own: pypdf reads the file and lays out each page's text. A scan without
a text layer gives empty pages; send such a PDF to the model natively (`multitask.PDF`).
"""

from __future__ import annotations

import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["PdfText", "read_pdf_text"]

INSTALL_HINT = 'reading a PDF\'s text needs pypdf: pip install "multitask[pdf]"'


@dataclass(frozen=True, slots=True)
class PdfText:
    """The text of each page, in order, and what the file says of itself."""

    pages: list[str]
    name: str | None
    title: str | None


def read_pdf_text(source: bytes | str | os.PathLike[str], *, password: str | None) -> PdfText:
    """Each page's text of the PDF `source` (its bytes, or a path).

    A missing pypdf is a `ConfigurationError` naming the extra; a file that is not a PDF pypdf
    can read, or an encrypted one without its password, is a `ValueError` saying so.
    """
    try:
        pypdf: Any = importlib.import_module("pypdf")
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    name: str | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        stream: Any = io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        name = path.name
        stream = path  # pypdf opens (and closes) it
    else:
        raise TypeError(f"a PDF is bytes or a path, not {type(source).__name__}")
    where = f"{name}: " if name else ""
    try:
        reader = pypdf.PdfReader(stream)
        if reader.is_encrypted and not reader.decrypt(password or ""):
            raise ValueError(f"{where}the PDF is encrypted: give its password")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = info.title if info is not None else None
    except pypdf.errors.PyPdfError as exc:
        raise ValueError(f"{where}not a PDF pypdf can read ({exc})") from None
    return PdfText(pages, name, str(title) if title else None)
