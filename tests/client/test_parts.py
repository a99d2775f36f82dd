"""Images, PDFs, Documents and mixed lists as input, through the scripted server on a socket:
each provider's request carries them in its documented content-part shape, what a provider
cannot take is refused before sending, size limits are checked first, and a `Document`'s
pages reach the grounded Quotes."""

from __future__ import annotations

import base64
import importlib.util
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic import BaseModel

import multitask
from _media import make_pdf, make_png
from multitask.testing import ReadingModel, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

needs_pypdf = pytest.mark.skipif(
    importlib.util.find_spec("pypdf") is None, reason="pypdf is not installed (the pdf extra)"
)

PNG = make_png()
PNG64 = base64.b64encode(PNG).decode()
PDF_BYTES = make_pdf("Invoice Name1 of the month")
PDF64 = base64.b64encode(PDF_BYTES).decode()


class Mention(BaseModel):
    name: str


class Grounded(BaseModel):
    quote: multitask.Quote


def client(server: ScriptedModelServer, provider: str, **options: Any) -> multitask.Client:
    v1 = provider in ("openai", "openai-responses", "vllm")
    return multitask.Client(
        f"{provider}:reader", base_url=server.url + ("/v1" if v1 else ""), api_key="k", **options
    )


def user_content(provider: str, body: dict[str, Any]) -> Any:
    """The last user message's content (Gemini: its parts; Ollama: the message itself)."""
    if provider == "gemini":
        return body["contents"][-1]["parts"]
    if provider == "openai-responses":
        return body["input"][-1]["content"]
    message = body["messages"][-1]
    assert message["role"] == "user"
    return message if provider == "ollama" else message["content"]


def image_and_pdf() -> list[Any]:
    return [multitask.Image(PNG), multitask.PDF(PDF_BYTES, name="invoice.pdf"), "and this note"]


#: Each provider's documented shape for [image, PDF, text].
EXPECTED: dict[str, Any] = {
    # https://platform.openai.com/docs/guides/images-vision, .../guides/pdf-files
    "openai": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}"}},
        {
            "type": "file",
            "file": {
                "filename": "invoice.pdf",
                "file_data": f"data:application/pdf;base64,{PDF64}",
            },
        },
        {"type": "text", "text": "and this note"},
    ],
    # https://platform.openai.com/docs/guides/file-inputs (Responses API)
    "openai-responses": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG64}"},
        {
            "type": "input_file",
            "filename": "invoice.pdf",
            "file_data": f"data:application/pdf;base64,{PDF64}",
        },
        {"type": "input_text", "text": "and this note"},
    ],
    # https://docs.claude.com/en/docs/build-with-claude/vision, .../pdf-support
    "anthropic": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG64}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
        },
        {"type": "text", "text": "and this note"},
    ],
    # https://ai.google.dev/gemini-api/docs/image-understanding, .../document-processing
    "gemini": [
        {"inline_data": {"mime_type": "image/png", "data": PNG64}},
        {"inline_data": {"mime_type": "application/pdf", "data": PDF64}},
        {"text": "and this note"},
    ],
}
EXPECTED["azure"] = EXPECTED["openai"]
EXPECTED["vllm"] = EXPECTED["openai"]


@pytest.mark.parametrize("provider", sorted(EXPECTED))
async def test_an_image_and_a_pdf_reach_each_provider_in_its_shape(provider: str) -> None:
    async with ScriptedModelServer(Script(items=[{"name": "a"}])) as server:
        items = await client(server, provider).extract(Mention, image_and_pdf())
        [request] = server.requests
    assert items == [Mention(name="a")]
    assert user_content(provider, request.body) == EXPECTED[provider]


async def test_ollama_gets_the_images_as_a_base64_list_on_the_message() -> None:
    async with ScriptedModelServer(Script(items=[{"name": "a"}])) as server:
        parts = [multitask.Image(PNG), "first", "second"]
        await client(server, "ollama").extract(Mention, parts)
        [request] = server.requests
    assert user_content("ollama", request.body) == {
        "role": "user",
        "content": "first\n\nsecond",
        "images": [PNG64],
    }


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-responses"])
async def test_an_image_url_is_sent_as_a_url(provider: str) -> None:
    url = "https://example.com/scan.png"
    async with ScriptedModelServer(Script(items=[])) as server:
        await client(server, provider).extract(Mention, [multitask.Image(url), "x"])
        [request] = server.requests
    first = user_content(provider, request.body)[0]
    shapes = {
        "openai": {"type": "image_url", "image_url": {"url": url}},
        "anthropic": {"type": "image", "source": {"type": "url", "url": url}},
        "openai-responses": {"type": "input_image", "image_url": url},
    }
    assert first == shapes[provider]


@pytest.mark.parametrize(
    ("provider", "part", "says"),
    [
        ("ollama", multitask.PDF(PDF_BYTES), "no PDFs"),
        ("ollama", multitask.Image("https://example.com/a.png"), "no image URLs"),
        ("gemini", multitask.Image("https://example.com/a.png"), "not URLs"),
    ],
)
async def test_what_a_provider_cannot_take_is_refused_before_sending(
    provider: str, part: Any, says: str
) -> None:
    async with ScriptedModelServer(Script(items=[])) as server:
        with pytest.raises(multitask.ConfigurationError) as caught:
            await client(server, provider).extract(Mention, [part, "text"])
        assert server.requests == []
    message = str(caught.value)
    assert "\n" not in message
    assert f"the {provider!r} provider cannot take" in message
    assert says in message


def big_png(size: int) -> bytes:
    return PNG + b"\0" * (size - len(PNG))


def big_pdf(size: int) -> bytes:
    return PDF_BYTES + b"%" * (size - len(PDF_BYTES))


MB = 1024 * 1024


@pytest.mark.parametrize(
    ("provider", "parts", "says"),
    [
        # Anthropic: an image up to 5 MB of base64 (4 MB raw is 5.3 MB of it).
        ("anthropic", [multitask.Image(big_png(4 * MB))], "Anthropic takes images up to 5.0 MB"),
        # Anthropic: a request up to 32 MB.
        ("anthropic", [multitask.PDF(big_pdf(25 * MB))], "Anthropic takes requests up to 32.0"),
        # Gemini: inline data up to 20 MB a request.
        ("gemini", [multitask.PDF(big_pdf(16 * MB))], "Gemini takes requests up to 20.0 MB"),
        # OpenAI: 20 MB an image, 50 MB of images, 32 MB of files a request.
        ("openai", [multitask.Image(big_png(21 * MB))], "OpenAI takes images up to 20.0 MB"),
        ("openai", [multitask.Image(big_png(15 * MB))] * 4, "up to 50.0 MB of images"),
        ("openai-responses", [multitask.PDF(big_pdf(33 * MB))], "up to 32.0 MB of files"),
        ("azure", [multitask.PDF(big_pdf(33 * MB))], "up to 32.0 MB of files"),
    ],
)
async def test_size_limits_are_checked_before_sending(
    provider: str, parts: list[Any], says: str
) -> None:
    async with ScriptedModelServer(Script(items=[])) as server:
        with pytest.raises(multitask.ConfigurationError, match=says):
            await client(server, provider).extract(Mention, parts)
        assert server.requests == []


async def test_a_compatible_server_is_not_held_to_openais_limits() -> None:
    async with ScriptedModelServer(Script(items=[])) as server:
        await client(server, "vllm").extract(Mention, [multitask.Image(big_png(21 * MB))])
        assert len(server.requests) == 1


async def test_chunk_options_are_refused_for_parts() -> None:
    async with ScriptedModelServer(Script(items=[])) as server:
        with pytest.raises(multitask.ConfigurationError) as caught:
            await client(server, "openai").extract(Grounded, image_and_pdf(), chunk_chars=100)
        assert server.requests == []
    assert "not a list of parts" in str(caught.value)
    assert "\n" not in str(caught.value)


TEXT = "Name1 is on page one. Name2 opens page two, and Name3 ends it. Name4 is on three."
PAGES = (0, TEXT.index("Name2"), TEXT.index("Name4"))


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "ollama"])
async def test_a_document_gives_its_quotes_their_page(provider: str) -> None:
    document = multitask.Document(TEXT, pages=PAGES, metadata={"file": "report.pdf"})
    model = ReadingModel(r"Name\d+")
    async with ScriptedModelServer(model) as server:
        got = await client(server, provider).extract(Grounded, document)
    assert [(g.quote, g.quote.page) for g in got] == [
        ("Name1", 1),
        ("Name2", 2),
        ("Name3", 2),
        ("Name4", 3),
    ]
    assert [TEXT[g.quote.start : g.quote.end] for g in got] == ["Name1", "Name2", "Name3", "Name4"]
    assert model.texts == [TEXT]  # the text alone is sent: the metadata is not


async def test_a_document_read_in_chunks_keeps_the_pages() -> None:
    document = multitask.Document(TEXT, pages=PAGES)
    async with ScriptedModelServer(ReadingModel(r"Name\d+")) as server:
        got = await client(server, "openai").extract(Grounded, document, chunk_chars=30)
        assert len(server.requests) > 1
    assert [(g.quote, g.quote.page) for g in got] == [
        ("Name1", 1),
        ("Name2", 2),
        ("Name3", 2),
        ("Name4", 3),
    ]


async def test_a_plain_text_has_no_pages() -> None:
    async with ScriptedModelServer(ReadingModel(r"Name\d+")) as server:
        got = await client(server, "openai").extract(Grounded, TEXT)
    assert [g.quote.page for g in got] == [None] * 4
    assert got[0].quote.span == (0, 5)


async def test_extract_many_takes_documents_and_their_pages() -> None:
    documents = {
        "a": multitask.Document(TEXT, pages=PAGES),
        "b": "Name9 has no pages.",
    }
    pages: dict[str, list[int | None]] = {}
    async with (
        ScriptedModelServer(ReadingModel(r"Name\d+")) as server,
        client(server, "anthropic").extract_many(Grounded, documents) as results,
    ):
        async for result in results:
            if result.item is not None:
                pages.setdefault(result.index, []).append(result.item.quote.page)
    assert pages == {"a": [1, 2, 2, 3], "b": [None]}


async def test_in_a_mixed_list_quotes_are_grounded_in_the_text_parts() -> None:
    parts = [multitask.Image(PNG), "Name1 first.", multitask.Document("then Name2.")]
    async with ScriptedModelServer(ReadingModel(r"Name\d+")) as server:
        got = await client(server, "openai").extract(Grounded, parts)
        [request] = server.requests
    # The text parts, joined by a blank line, are the text the Quotes' offsets are into.
    joined = "Name1 first.\n\nthen Name2."
    assert [(g.quote, g.quote.span) for g in got] == [("Name1", (0, 5)), ("Name2", (19, 24))]
    assert [joined[g.quote.start : g.quote.end] for g in got] == ["Name1", "Name2"]
    kinds = [p["type"] for p in user_content("openai", request.body)]
    assert kinds == ["image_url", "text", "text"]


@needs_pypdf
@pytest.mark.parametrize("provider", ["openai", "openai-responses", "anthropic", "gemini", "azure"])
async def test_the_reading_model_reads_a_native_pdfs_text_layer(provider: str) -> None:
    pdf = multitask.PDF(make_pdf("Name1 on the first page", "Name2 on the second"))
    model = ReadingModel(r"Name\d+", item=lambda m: {"name": m[0]})
    async with ScriptedModelServer(model) as server:
        got = await client(server, provider).extract(Mention, [pdf, "and Name3 in the note"])
    assert [m.name for m in got] == ["Name1", "Name2", "Name3"]
    assert model.texts == [
        "Name1 on the first page\n\nName2 on the second\n\nand Name3 in the note"
    ]


async def test_a_pdf_alone_and_an_image_alone_are_inputs_too() -> None:
    async with ScriptedModelServer(Script(items=[{"name": "a"}])) as server:
        await client(server, "anthropic").extract(Mention, multitask.PDF(PDF_BYTES))
        await client(server, "anthropic").extract(Mention, multitask.Image(PNG))
        first, second = server.requests
    assert [b["type"] for b in user_content("anthropic", first.body)] == ["document"]
    assert [b["type"] for b in user_content("anthropic", second.body)] == ["image"]


async def test_the_callers_messages_come_first_and_stay_as_given() -> None:
    earlier = [{"role": "user", "content": "context"}]
    async with ScriptedModelServer(Script(items=[])) as server:
        await client(server, "openai").extract(Mention, image_and_pdf(), messages=earlier)
        [request] = server.requests
    assert request.body["messages"][1] == {"role": "user", "content": "context"}
    assert request.body["messages"][2]["content"] == EXPECTED["openai"]


async def test_events_take_parts_too() -> None:
    async with ScriptedModelServer(Script(items=[{"name": "a"}])) as server:
        stream = client(server, "gemini").extract_events(Mention, image_and_pdf())
        events = [e async for e in stream]
        [request] = server.requests
    assert isinstance(events[-1], multitask.Finished)
    assert user_content("gemini", request.body) == EXPECTED["gemini"]


async def test_a_wrong_input_type_says_what_it_takes() -> None:
    async with ScriptedModelServer(Script(items=[])) as server:
        with pytest.raises(TypeError, match="part 1 of the input is of type int"):
            await client(server, "openai").extract(Mention, ["a", 3])
        assert server.requests == []


def test_the_sync_api_takes_a_document() -> None:
    document = multitask.Document(TEXT, pages=PAGES)

    async def run() -> list[Grounded]:
        async with ScriptedModelServer(ReadingModel(r"Name\d+")) as server:
            url = server.url + "/v1"
            return await anyio.to_thread.run_sync(
                lambda: multitask.extract_sync(
                    Grounded, document, model="openai:m", base_url=url, api_key="k"
                )
            )

    got = anyio.run(run)
    assert [g.quote.page for g in got] == [1, 2, 2, 3]
