"""`multitask.Image` and `multitask.PDF` as values, `Quote.page`, and reading the parts of
each provider's request body (`request_text`)."""

from __future__ import annotations

import base64
import copy
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import multitask
from _media import make_pdf, make_png
from multitask._parts import Content, Parts, resolve, sniff_image
from multitask.providers import Provider, RequestSpec
from multitask.testing._reading import request_text

PNG = make_png()


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, "image/jpeg"),
        (b"GIF89a" + b"\0" * 10, "image/gif"),
        (b"GIF87a" + b"\0" * 10, "image/gif"),
        (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 8, "image/webp"),
        (b"not an image at all", None),
        (b"RIFF\x10\0\0\0WAVE", None),
    ],
)
def test_the_media_type_is_read_from_the_magic_numbers(data: bytes, media_type: str) -> None:
    assert sniff_image(data) == media_type
    if media_type is None:
        with pytest.raises(ValueError, match="not a PNG, JPEG, GIF or WebP image"):
            multitask.Image(data)
    else:
        assert multitask.Image(data).media_type == media_type


def test_an_image_from_a_path_a_data_url_and_an_http_url(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(PNG)
    from_path = multitask.Image(path)
    assert (from_path.data, from_path.name, from_path.media_type) == (PNG, "scan.png", "image/png")
    assert multitask.Image(str(path)) == from_path
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    from_url = multitask.Image(url)
    assert from_url.data == PNG
    assert from_url.data_url() == url
    remote = multitask.Image("https://example.com/a/scan.jpg?x=1")
    assert (remote.url, remote.data, remote.media_type, remote.size) == (
        "https://example.com/a/scan.jpg?x=1",
        None,
        "image/jpeg",
        0,
    )
    assert remote.data_url() == remote.url
    with pytest.raises(ValueError, match="is a URL"):
        remote.base64()
    with pytest.raises(ValueError, match="cannot read the image"):
        multitask.Image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="base64 is not valid"):
        multitask.Image("data:image/png;base64,@@@")
    with pytest.raises(TypeError, match="not int"):
        multitask.Image(3)  # type: ignore[arg-type]


def test_a_given_media_type_is_kept() -> None:
    image = multitask.Image(b"\0\0\0\0ftypheic", media_type="image/heic")
    assert image.media_type == "image/heic"
    assert image.data_url().startswith("data:image/heic;base64,")


def test_a_pdf_is_checked_for_its_header(tmp_path: Path) -> None:
    data = make_pdf("hello")
    path = tmp_path / "invoice.pdf"
    path.write_bytes(data)
    pdf = multitask.PDF(path)
    assert (pdf.name, pdf.data, pdf.media_type, pdf.size) == (
        "invoice.pdf",
        data,
        "application/pdf",
        len(data),
    )
    assert multitask.PDF(data).name == "document.pdf"
    assert multitask.PDF(data, name="x.pdf").name == "x.pdf"
    assert pdf.data_url() == "data:application/pdf;base64," + base64.b64encode(data).decode()
    notes = tmp_path / "notes.pdf"
    notes.write_bytes(b"just text")
    with pytest.raises(ValueError, match=r"'notes\.pdf' is not a PDF: it has no %PDF- header"):
        multitask.PDF(notes)


def test_they_are_immutable_values_whose_repr_hides_the_bytes() -> None:
    image, pdf = multitask.Image(PNG + b"secret"), multitask.PDF(make_pdf("secret words"))
    for value in (image, pdf):
        with pytest.raises(AttributeError, match="immutable"):
            value._data = b""  # type: ignore[misc]
        assert "secret" not in repr(value)
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
        assert hash(pickle.loads(pickle.dumps(value))) == hash(value)
    assert repr(image) == f"Image(image/png, {len(PNG) + 6} bytes)"
    assert repr(pdf).startswith("PDF('document.pdf', ")
    assert repr(multitask.Image("https://x.org/a.png")) == "Image('https://x.org/a.png')"
    assert multitask.Image(PNG) != multitask.Image(PNG + b"x")


def test_a_quote_keeps_its_page_through_pickle_and_copy() -> None:
    quote = multitask.Quote("Name2", 22, 27, "exact", 2)
    assert quote.page == 2
    assert repr(quote) == "Quote('Name2', start=22, end=27, match='exact', page=2)"
    for again in (pickle.loads(pickle.dumps(quote)), copy.copy(quote), copy.deepcopy(quote)):
        assert (again.span, again.match, again.page) == ((22, 27), "exact", 2)
    # Equality is by words and span, as before; the page follows from the span.
    assert quote == multitask.Quote("Name2", 22, 27, "exact")
    assert repr(multitask.Quote("a", 0, 1, "exact")) == "Quote('a', start=0, end=1, match='exact')"
    assert multitask.Quote("a").page is None


def test_resolve() -> None:
    assert resolve("text") == Content("text")
    assert resolve(None) == Content(None)
    document = multitask.Document("ab cd", pages=(0, 3))
    content = resolve(document)
    assert content.text == "ab cd"
    assert content.page_of is not None
    assert content.page_of(4) == 2
    image = multitask.Image(PNG)
    assert resolve(image) == Content(None, Parts((image,)))
    assert resolve(["a", multitask.Document("b"), image]) == Content(
        "a\n\nb", Parts(("a", "b", image))
    )
    with pytest.raises(ValueError, match="empty"):
        resolve([])
    with pytest.raises(TypeError, match="cannot extract from a bytes"):
        resolve(b"raw")


def test_request_text_reads_text_parts_and_leaves_images_out() -> None:
    data = base64.b64encode(PNG).decode()
    chat = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "a"}]}
        ]
    }
    assert request_text("openai", chat) == "a"
    gemini = {
        "contents": [
            {"parts": [{"inline_data": {"mime_type": "image/png", "data": data}}, {"text": "g"}]}
        ]
    }
    assert request_text("gemini", gemini) == "g"
    ollama = {"messages": [{"role": "user", "content": "o", "images": [data]}]}
    assert request_text("ollama", ollama) == "o"


@pytest.mark.skipif(importlib.util.find_spec("pypdf") is None, reason="needs pypdf")
def test_request_text_reads_a_pdfs_text_layer_in_every_shape() -> None:
    data = base64.b64encode(make_pdf("Page one", "Page two")).decode()
    url = f"data:application/pdf;base64,{data}"
    shapes = {
        "openai": {"type": "file", "file": {"filename": "a.pdf", "file_data": url}},
        "openai-responses": {"type": "input_file", "filename": "a.pdf", "file_data": url},
        "anthropic": {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        },
        "gemini": {"inline_data": {"mime_type": "application/pdf", "data": data}},
    }
    for provider, part in shapes.items():
        text = {"text": "note"} if provider == "gemini" else {"type": "text", "text": "note"}
        if provider == "openai-responses":
            text = {"type": "input_text", "text": "note"}
        if provider == "gemini":
            body = {"contents": [{"role": "user", "parts": [part, text]}]}
        elif provider == "openai-responses":
            body = {"input": [{"role": "user", "content": [part, text]}]}
        else:
            body = {"messages": [{"role": "user", "content": [part, text]}]}
        assert request_text(provider, body) == "Page one\n\nPage two\n\nnote", provider
    broken = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}
    assert request_text("openai", {"messages": [{"role": "user", "content": [broken]}]}) == ""


class _TextOnly(Provider):
    """A provider of the caller's own that knows nothing of parts."""

    name = "textonly"
    default_base_url = "http://localhost:1"
    key_required = False

    def endpoint(self, spec: RequestSpec) -> str:
        return f"{self.base_url}/chat"

    def auth_headers(self) -> dict[str, str]:
        return {}

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        return {"messages": list(spec.messages)}


class _Mention(BaseModel):
    name: str


def _spec(*parts: Any) -> RequestSpec:
    schema = multitask.MultiTask(_Mention)
    message = {"role": "user", "content": Parts(parts)}
    return RequestSpec(model="m", schema=schema, mode="tools", system="s", messages=[message])


def test_a_provider_of_ones_own_takes_text_parts_and_refuses_the_rest() -> None:
    provider = _TextOnly()
    request = provider.request(_spec("a", "b"))
    assert request.json["messages"] == [{"role": "user", "content": "a\n\nb"}]
    with pytest.raises(multitask.ConfigurationError, match="'textonly' provider cannot take"):
        provider.request(_spec("a", multitask.Image(PNG)))
