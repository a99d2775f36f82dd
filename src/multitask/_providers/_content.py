"""A user message's parts (texts, `Image`s, `PDF`s) as each provider's native content blocks.

Each function maps one `Parts` to one provider format and checks that format's documented
size limits first: a part the format cannot take, or too many bytes, is a
`ConfigurationError` before anything is sent. The formats and limits, from the providers'
documentation:

- OpenAI chat: `text`, `image_url` (an http(s) or data URL) and `file` (`filename` and a
  `data:application/pdf;base64,` `file_data`) parts; images up to 20 MB each, 500 and
  50 MB of them a request; files up to 32 MB in all a request.
- OpenAI Responses: `input_text`, `input_image` (`image_url`) and `input_file` (`filename`,
  `file_data`); the same limits.
- Anthropic: `text`, `image` (a `base64` or `url` source) and `document` (a base64 PDF
  source) blocks; an image up to 5 MB (its base64), a request up to 32 MB.
- Gemini: `text` and `inline_data` (`mime_type`, base64 `data`) parts; inline data takes no
  URL, and a request is up to 20 MB.
- Ollama: the text as `content` and the images as a base64 `images` list; no PDF, no URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._exceptions import ConfigurationError
from .._parts import PART_SEPARATOR, PDF, Image, Parts
from .._prompt import Message

__all__ = [
    "ANTHROPIC_LIMITS",
    "GEMINI_LIMITS",
    "OPENAI_LIMITS",
    "PartLimits",
    "anthropic_message",
    "check_limits",
    "gemini_message",
    "ollama_message",
    "openai_chat_message",
    "responses_message",
]

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PartLimits:
    """A provider's documented limits on what a request carries (None: no such limit).

    Sizes are of the bytes as sent: `base64=True` counts the base64 text (what Anthropic
    and Gemini measure), else the raw bytes."""

    provider: str
    image_bytes: int | None = None
    images_bytes: int | None = None
    images: int | None = None
    files_bytes: int | None = None
    request_bytes: int | None = None
    base64: bool = False


#: https://platform.openai.com/docs/guides/images-vision (image input requirements) and
#: https://platform.openai.com/docs/guides/pdf-files (file size limitations).
OPENAI_LIMITS = PartLimits("OpenAI", image_bytes=20 * MB, images_bytes=50 * MB, images=500,
                           files_bytes=32 * MB)  # fmt: skip
#: https://docs.claude.com/en/docs/build-with-claude/vision and .../pdf-support.
ANTHROPIC_LIMITS = PartLimits("Anthropic", image_bytes=5 * MB, request_bytes=32 * MB, base64=True)
#: https://ai.google.dev/gemini-api/docs/image-understanding (inline data: 20 MB a request).
GEMINI_LIMITS = PartLimits("Gemini", request_bytes=20 * MB, base64=True)


def _megabytes(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _sent_size(part: Image | PDF, limits: PartLimits) -> int:
    raw = part.size
    return (raw + 2) // 3 * 4 if limits.base64 else raw


def check_limits(parts: Parts, limits: PartLimits) -> None:
    """Raise `ConfigurationError` if `parts` exceed the provider's documented limits."""
    images = [p for p in parts.items if isinstance(p, Image)]
    files = [p for p in parts.items if isinstance(p, PDF)]
    who = limits.provider
    if limits.image_bytes is not None:
        for image in images:
            size = _sent_size(image, limits)
            if size > limits.image_bytes:
                raise ConfigurationError(
                    f"{image!r} is {_megabytes(size)}{' in base64' if limits.base64 else ''}: "
                    f"{who} takes images up to {_megabytes(limits.image_bytes)} each"
                )
    if limits.images is not None and len(images) > limits.images:
        raise ConfigurationError(
            f"{len(images)} images in one request: {who} takes up to {limits.images}"
        )
    if limits.images_bytes is not None:
        total = sum(_sent_size(i, limits) for i in images)
        if total > limits.images_bytes:
            raise ConfigurationError(
                f"the images are {_megabytes(total)} in all: {who} takes up to "
                f"{_megabytes(limits.images_bytes)} of images a request"
            )
    if limits.files_bytes is not None:
        total = sum(_sent_size(f, limits) for f in files)
        if total > limits.files_bytes:
            raise ConfigurationError(
                f"the PDFs are {_megabytes(total)} in all: {who} takes up to "
                f"{_megabytes(limits.files_bytes)} of files a request"
            )
    if limits.request_bytes is not None:
        total = sum(
            len(p.encode()) if isinstance(p, str) else _sent_size(p, limits) for p in parts.items
        )
        if total > limits.request_bytes:
            raise ConfigurationError(
                f"the message is {_megabytes(total)}{' in base64' if limits.base64 else ''}: "
                f"{who} takes requests up to {_megabytes(limits.request_bytes)}"
            )


def refuse(provider: str, part: Image | PDF, takes: str) -> ConfigurationError:
    """The error for a part a provider cannot take."""
    what = "an image URL" if isinstance(part, Image) and part.url else f"{part!r}"
    return ConfigurationError(f"the {provider!r} provider cannot take {what}: it takes {takes}")


def _blocks(parts: Parts, block: Callable[[str | Image | PDF], dict[str, Any]]) -> list[Any]:
    return [block(p) for p in parts.items]


def openai_chat_message(parts: Parts, limits: PartLimits | None) -> Message:
    """OpenAI chat completions' user message: `text`, `image_url` and `file` parts."""
    if limits is not None:
        check_limits(parts, limits)

    def block(part: str | Image | PDF) -> dict[str, Any]:
        if isinstance(part, str):
            return {"type": "text", "text": part}
        if isinstance(part, Image):
            return {"type": "image_url", "image_url": {"url": part.data_url()}}
        return {"type": "file", "file": {"filename": part.name, "file_data": part.data_url()}}

    return {"role": "user", "content": _blocks(parts, block)}


def responses_message(parts: Parts, limits: PartLimits | None) -> Message:
    """The Responses API's user input: `input_text`, `input_image` and `input_file` parts."""
    if limits is not None:
        check_limits(parts, limits)

    def block(part: str | Image | PDF) -> dict[str, Any]:
        if isinstance(part, str):
            return {"type": "input_text", "text": part}
        if isinstance(part, Image):
            return {"type": "input_image", "image_url": part.data_url()}
        return {"type": "input_file", "filename": part.name, "file_data": part.data_url()}

    return {"role": "user", "content": _blocks(parts, block)}


def anthropic_message(parts: Parts, limits: PartLimits | None) -> Message:
    """Anthropic's user message: `text`, `image` and `document` blocks."""
    if limits is not None:
        check_limits(parts, limits)

    def block(part: str | Image | PDF) -> dict[str, Any]:
        if isinstance(part, str):
            return {"type": "text", "text": part}
        if isinstance(part, Image):
            if part.url is not None:
                return {"type": "image", "source": {"type": "url", "url": part.url}}
            source = {"type": "base64", "media_type": part.media_type, "data": part.base64()}
            return {"type": "image", "source": source}
        source = {"type": "base64", "media_type": "application/pdf", "data": part.base64()}
        return {"type": "document", "source": source}

    return {"role": "user", "content": _blocks(parts, block)}


def gemini_message(parts: Parts, limits: PartLimits | None) -> Message:
    """Gemini's user `Content`: `text` and `inline_data` parts (bytes only, no URL)."""

    def block(part: str | Image | PDF) -> dict[str, Any]:
        if isinstance(part, str):
            return {"text": part}
        if isinstance(part, Image) and part.url is not None:
            raise refuse("gemini", part, "images and PDFs as bytes (inline_data), not URLs")
        return {"inline_data": {"mime_type": part.media_type, "data": part.base64()}}

    blocks = _blocks(parts, block)
    if limits is not None:
        check_limits(parts, limits)
    return {"role": "user", "parts": blocks}


def ollama_message(parts: Parts, limits: PartLimits | None) -> Message:
    """Ollama's user message: the texts as `content`, the images as base64 `images`."""
    texts: list[str] = []
    images: list[str] = []
    for part in parts.items:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Image) and part.url is None:
            images.append(part.base64())
        else:
            raise refuse("ollama", part, "texts and images as bytes (no PDFs, no image URLs)")
    if limits is not None:
        check_limits(parts, limits)
    message: Message = {"role": "user", "content": PART_SEPARATOR.join(texts)}
    if images:
        message["images"] = images
    return message
