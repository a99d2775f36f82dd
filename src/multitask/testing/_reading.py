"""`ReadingModel`: a scripted model whose answer depends on the text each request carries.

It reads the text parts of every provider's format, and a PDF part's text layer (with pypdf,
the `pdf` extra, when it is installed): a PDF sent natively can be tested offline. Images
carry no text it can read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from multitask.testing._script import Script
from multitask.testing._server import RecordedRequest
from multitask.testing._wire_base import Provider

__all__ = ["ReadingModel", "pdf_text", "request_text", "request_token_limit"]


def _quote(match: re.Match[str]) -> dict[str, Any]:
    return {"quote": match[0]}


@dataclass
class ReadingModel:
    """A model for tests that reads: each match of `pattern` in the text it is sent is an item.

    Use it as a `ScriptedModelServer`'s script (it is a `ScriptSource`). For each request it
    reads the user's text (`read="last"`: the last user message, what multitask sends as the
    text; `read="all"`: every user message, as a model that ignores instructions about which
    part to read does), finds every match of `pattern` in order, and answers them as the
    `tasks` list: `item(match)` each (by default `{"quote": <the matched words>}`), streamed
    in the provider's real format with `script`'s other options (pacing, chunk size, faults).

    Like a real model it stops at its output limit: the request's own (`max_tokens`,
    `max_completion_tokens`, `max_output_tokens`, `maxOutputTokens`, `num_predict`), or
    `max_tokens` here if lower, counting `chars_per_token` characters of the answer a token;
    an answer cut there ends with the provider's "length" / "max_tokens" finish.
    """

    pattern: str | re.Pattern[str]
    item: Callable[[re.Match[str]], Any] = _quote
    read: Literal["last", "all"] = "last"
    max_tokens: int | None = None
    chars_per_token: float = 4.0
    script: Script = field(default_factory=Script)
    #: The text each request was read as, in the order the requests came.
    texts: list[str] = field(default_factory=list, init=False, repr=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.read not in ("last", "all"):
            raise ValueError(f"read must be 'last' or 'all', not {self.read!r}")
        if self.chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be positive, not {self.chars_per_token}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {self.max_tokens}")
        self._regex = re.compile(self.pattern)

    def items(self, text: str) -> list[Any]:
        """What this model answers to `text`: one item per match, in order."""
        return [self.item(match) for match in self._regex.finditer(text)]

    def __call__(self, request: RecordedRequest) -> Script:
        """The script answering `request`: its text read, its output limit kept."""
        if request.provider is None:
            raise ValueError(f"no provider serves {request.path}")
        text = request_text(request.provider, request.body, read=self.read)
        self.texts.append(text)
        script = dataclasses.replace(self.script, items=self.items(text), text=None)
        limits = [request_token_limit(request.provider, request.body), self.max_tokens]
        known = [limit for limit in limits if limit is not None]
        if known:
            chars = int(min(known) * self.chars_per_token)
            if script.truncate_after is None or chars < script.truncate_after:
                script.truncate_after = chars
        return script


def request_text(provider: Provider, body: Any, *, read: Literal["last", "all"] = "last") -> str:
    """The user's text in a request body, as the provider's format carries it: the last user
    message's text parts (`read="last"`), or every user message's, joined by blank lines."""
    messages = _user_messages(provider, body)
    if read == "last":
        messages = messages[-1:]
    return "\n\n".join(_text_of(provider, message) for message in messages)


def request_token_limit(provider: Provider, body: Any) -> int | None:
    """The output token limit a request body sets, if any."""
    if not isinstance(body, dict):
        return None
    if provider == "gemini":
        config = body.get("generationConfig")
        value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    elif provider == "ollama":
        options = body.get("options")
        value = options.get("num_predict") if isinstance(options, dict) else None
    elif provider == "openai-responses":
        value = body.get("max_output_tokens")
    elif provider == "anthropic":
        value = body.get("max_tokens")
    else:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _user_messages(provider: Provider, body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    if provider == "gemini":
        contents = body.get("contents") or []
        return [c for c in contents if isinstance(c, dict) and c.get("role", "user") == "user"]
    if provider == "openai-responses":
        given = body.get("input")
        if isinstance(given, str):
            return [given]
        return [m for m in given or [] if isinstance(m, dict) and m.get("role") == "user"]
    messages = body.get("messages") or []
    return [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def _text_of(provider: Provider, message: Any) -> str:
    if isinstance(message, str):
        return message
    if provider == "gemini":
        parts = message.get("parts", [])
    else:
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts = content if isinstance(content, list) else []
    # Consecutive text parts are one text; a PDF's text layer stands apart, a blank line
    # before and after it.
    out: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if _has_text(part) and (provider == "gemini" or part.get("type") in _TEXT_TYPES):
            out.append(part["text"])
            continue
        pdf = _pdf_bytes(part)
        if pdf is not None:
            out.append(f"\n\n{pdf_text(pdf)}\n\n")
    return "".join(out).strip("\n") if any(_is_pdf(p) for p in parts) else "".join(out)


#: The text parts: OpenAI chat and Anthropic `text`, the Responses API's `input_text`.
_TEXT_TYPES = ("text", "input_text")


def _is_pdf(part: Any) -> bool:
    return isinstance(part, dict) and _pdf_bytes(part, decode=False) is not None


def _pdf_bytes(part: dict[str, Any], *, decode: bool = True) -> bytes | None:
    """The bytes of a PDF part, in any provider's shape (None if it is not one):
    chat `file.file_data`, Responses `file_data`, Anthropic `document.source.data`, Gemini
    `inline_data.data` (or `inlineData`) with a PDF media type."""
    kind = part.get("type")
    data: Any = None
    if kind == "file" and isinstance(part.get("file"), dict):
        data = part["file"].get("file_data")
    elif kind == "input_file":
        data = part.get("file_data")
    elif kind == "document" and isinstance(part.get("source"), dict):
        source = part["source"]
        if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
            data = source.get("data")
    else:
        inline = part.get("inline_data", part.get("inlineData"))
        if isinstance(inline, dict):
            mime = inline.get("mime_type", inline.get("mimeType"))
            data = inline.get("data") if mime == "application/pdf" else None
    if not isinstance(data, str):
        return None
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if "application/pdf" not in head:
            return None
    if not decode:
        return b""
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""


def pdf_text(data: bytes) -> str:
    """A PDF's text layer, its pages joined by blank lines, as pypdf reads it ("" without
    pypdf, or for bytes it cannot read: a model that sees no text)."""
    try:
        pypdf: Any = importlib.import_module("pypdf")
    except ImportError:
        return ""
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except Exception:  # a broken PDF reads as no text, as a model would see none
        return ""


def _has_text(part: Any) -> bool:
    return isinstance(part, dict) and isinstance(part.get("text"), str)
