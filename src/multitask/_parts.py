"""`Image` and `PDF`: what a user sends beside (or instead of) a text, as each provider takes it.

An extraction's input is a text, a `Document`, an `Image`, a `PDF`, or a list mixing them
(`[multitask.PDF("invoice.pdf"), "and this note"]`). `resolve` turns any of them into one
`Content`: the text its quotes are grounded in (and a long text is chunked by), the parts
sent when the input is more than one text, and the page of an offset for a `Document`.
Each provider maps the parts to its own content blocks (`_providers/_parts_wire.py`).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias
from urllib.parse import unquote_to_bytes, urlsplit

from ._sources import Document

__all__ = ["PDF", "Content", "Image", "Input", "Part", "Parts", "resolve", "sniff_image"]

#: Magic numbers of the image formats every provider with vision takes.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image(data: bytes) -> str | None:
    """The media type of PNG, JPEG, GIF or WebP bytes, from their first bytes; else None."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n} bytes"


def _read(source: str | os.PathLike[str], kind: str) -> tuple[bytes, str]:
    path = Path(source)
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise ValueError(f"cannot read the {kind} {str(path)!r}: {exc.strerror or exc}") from None


class Image:
    """An image to send to the model: bytes, a file's path, or an http(s) or data URL.

    The media type is read from the bytes (PNG, JPEG, GIF, WebP) unless given; a URL is sent
    as a URL to providers that fetch one, and refused by those that take bytes only.
    Immutable; its repr names the source and size, never the bytes.
    """

    __slots__ = ("_data", "_media_type", "_name", "_url")

    _data: bytes | None
    _media_type: str | None
    _name: str | None
    _url: str | None

    def __init__(
        self, source: bytes | str | os.PathLike[str], *, media_type: str | None = None
    ) -> None:
        data: bytes | None = None
        url: str | None = None
        name: str | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif isinstance(source, str) and source.startswith(("http://", "https://")):
            url = source
            if media_type is None:
                guessed, _ = mimetypes.guess_type(urlsplit(source).path)
                media_type = guessed if guessed and guessed.startswith("image/") else None
        elif isinstance(source, str) and source.startswith("data:"):
            given, data = _data_url(source)
            media_type = media_type or given
        elif isinstance(source, (str, os.PathLike)):
            data, name = _read(source, "image")
        else:
            raise TypeError(f"Image takes bytes, a path or a URL, not {type(source).__name__}")
        if data is not None:
            sniffed = sniff_image(data)
            if media_type is None and sniffed is None:
                raise ValueError(
                    "not a PNG, JPEG, GIF or WebP image (by its first bytes); pass "
                    "media_type='image/...' if it is one the provider takes"
                )
            media_type = media_type or sniffed
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_url", url)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_media_type", media_type)

    @property
    def data(self) -> bytes | None:
        """The image's bytes; None for an http(s) URL."""
        return self._data

    @property
    def url(self) -> str | None:
        """The http(s) URL it was given as, or None."""
        return self._url

    @property
    def media_type(self) -> str | None:
        """`image/png`, `image/jpeg`, ...; None for a URL whose type is not known."""
        return self._media_type

    @property
    def name(self) -> str | None:
        """The file's name, when it was read from a path."""
        return self._name

    @property
    def size(self) -> int:
        """How many bytes it has (0 for a URL: the provider fetches it)."""
        return len(self._data) if self._data is not None else 0

    def base64(self) -> str:
        """Its bytes in base64 (a URL image has none: `ValueError`)."""
        if self._data is None:
            raise ValueError(f"{self!r} is a URL: it has no bytes to encode")
        return base64.b64encode(self._data).decode("ascii")

    def data_url(self) -> str:
        """The http(s) URL, or a `data:` URL of the bytes."""
        if self._url is not None:
            return self._url
        return f"data:{self._media_type};base64,{self.base64()}"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        if self._url is not None:
            return f"Image({self._url!r})"
        where = f"{self._name!r}, " if self._name else ""
        return f"Image({where}{self._media_type}, {_size(self.size)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return (self._data, self._url, self._media_type) == (
            other._data,
            other._url,
            other._media_type,
        )

    def __hash__(self) -> int:
        return hash((Image, self._data, self._url, self._media_type))

    def __reduce__(self) -> tuple[object, ...]:
        return (_image, (self._data, self._url, self._media_type, self._name))


def _image(data: bytes | None, url: str | None, media_type: str | None, name: str | None) -> Image:
    """An `Image` from its fields (unpickling)."""
    image = Image(url if url is not None else data or b"", media_type=media_type)
    object.__setattr__(image, "_name", name)
    return image


def _data_url(url: str) -> tuple[str | None, bytes]:
    """A `data:` URL's media type and bytes."""
    head, comma, payload = url[5:].partition(",")
    if not comma:
        raise ValueError("a data URL needs a ',' before its data")
    params = head.split(";")
    media_type = params[0] or None
    if "base64" in params[1:]:
        try:
            return media_type, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the data URL's base64 is not valid") from None
    return media_type, unquote_to_bytes(payload)


class PDF:
    """A PDF to send to the model as a file: bytes or a file's path.

    Checked for the `%PDF-` header. `name` is the file name providers are told (the path's,
    or `document.pdf`). Immutable; its repr names the file and size, never the bytes.
    """

    __slots__ = ("_data", "_name")

    _data: bytes
    _name: str

    def __init__(self, source: bytes | str | os.PathLike[str], *, name: str | None = None) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, found = bytes(source), None
        elif isinstance(source, (str, os.PathLike)):
            data, found = _read(source, "PDF")
        else:
            raise TypeError(f"PDF takes bytes or a path, not {type(source).__name__}")
        if b"%PDF-" not in data[:1024]:
            shown = f" {found!r}" if found else ""
            raise ValueError(f"the file{shown} is not a PDF: it has no %PDF- header")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_name", name or found or "document.pdf")

    @property
    def data(self) -> bytes:
        """The PDF's bytes."""
        return self._data

    @property
    def name(self) -> str:
        """The file name sent with it."""
        return self._name

    @property
    def media_type(self) -> str:
        """Always `application/pdf`."""
        return "application/pdf"

    @property
    def size(self) -> int:
        """How many bytes it has."""
        return len(self._data)

    def base64(self) -> str:
        """Its bytes in base64."""
        return base64.b64encode(self._data).decode("ascii")

    def data_url(self) -> str:
        """A `data:application/pdf;base64,...` URL of it."""
        return f"data:application/pdf;base64,{self.base64()}"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"PDF({self._name!r}, {_size(self.size)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PDF):
            return NotImplemented
        return (self._data, self._name) == (other._data, other._name)

    def __hash__(self) -> int:
        return hash((PDF, self._data, self._name))

    def __reduce__(self) -> tuple[object, ...]:
        return (_pdf, (self._data, self._name))


def _pdf(data: bytes, name: str) -> PDF:
    return PDF(data, name=name)


#: One piece of a user message: a text, an image or a PDF.
Part: TypeAlias = str | Image | PDF
#: What an extraction reads.
Input: TypeAlias = str | Document | Image | PDF | Sequence[str | Document | Image | PDF]


@dataclass(frozen=True, slots=True)
class Parts:
    """A user message's content as parts, in order: what `build_messages` puts in the
    message for each provider to map to its own content blocks (`Provider.request`)."""

    items: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Content:
    """An extraction's input, resolved.

    `text`: what quotes are grounded in and chunking reads (a `Document`'s text; the text
    parts joined by blank lines; None when there is none). `parts`: the message's parts,
    or None when the input is one text, sent as the plain user message. `page_of`: a
    `Document`'s page of an offset, for grounded quotes.
    """

    text: str | None
    parts: Parts | None = None
    page_of: Callable[[int], int | None] | None = None


#: What separates text parts in the text their quotes are grounded in.
PART_SEPARATOR = "\n\n"


def resolve(value: object) -> Content:
    """The `Content` of what an extraction was given; `TypeError` for anything else."""
    if value is None or isinstance(value, str):
        return Content(value)
    if isinstance(value, Document):
        return Content(value.text, page_of=value.page_of)
    if isinstance(value, (Image, PDF)):
        return Content(None, Parts((value,)))
    if isinstance(value, (list, tuple)):
        items: list[Part] = []
        for position, piece in enumerate(value):
            if isinstance(piece, Document):
                items.append(piece.text)
            elif isinstance(piece, (str, Image, PDF)):
                items.append(piece)
            else:
                raise TypeError(
                    f"part {position} of the input is of type {type(piece).__name__}: "
                    "expected a str, multitask.Document, multitask.Image or multitask.PDF"
                )
        if not items:
            raise ValueError("nothing to extract from: the list of parts is empty")
        texts = [p for p in items if isinstance(p, str)]
        return Content(PART_SEPARATOR.join(texts) if texts else None, Parts(tuple(items)))
    raise TypeError(
        f"cannot extract from a {type(value).__name__}: give a str, a multitask.Document, "
        "multitask.Image or multitask.PDF, or a list of them"
    )
