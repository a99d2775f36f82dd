"""`extract_many` over long texts: each document read in chunks and continued after cuts, each
item's `Result` carrying its quote's span, and `resume_after` starting a document after the
items a caller already has, without reading the text before them again.

Against the scripted server's reading model (it answers every match of a pattern in the text
it is sent, cut at the request's output limit), over real sockets, on every event loop.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

import multitask
from multitask import ConfigurationError, Quote
from multitask.testing import ReadingModel, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

PATTERN = r"Name\d+x\d+"


class Mention(BaseModel):
    name: str
    quote: Quote


class Plain(BaseModel):
    name: str


def mention(match: re.Match[str]) -> dict[str, Any]:
    return {"name": match[0], "quote": match[0]}


def reader() -> ReadingModel:
    return ReadingModel(PATTERN, item=mention, script=Script(chunk_size=64))


def book(k: int, mentions: int = 300) -> str:
    return " ".join(f"In part {i}, Name{k}x{i} speaks at length." for i in range(mentions))


def spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(PATTERN, text)]


def client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:reader", base_url=server.url + "/v1", api_key="k", max_retries=3, **options
    )


async def collect(results: multitask.Results[Any]) -> dict[Any, list[multitask.Result[Any]]]:
    by_key: dict[Any, list[multitask.Result[Any]]] = {}
    async for r in results:
        by_key.setdefault(r.index, []).append(r)
    return by_key


@pytest.mark.parametrize("where", ["call", "client"])
async def test_each_document_in_chunks_gives_every_mention_once_with_its_span(where: str) -> None:
    texts = {f"book{k}": book(k) for k in range(5)}
    chunking = {"chunk_chars": 2500, "overlap_chars": 120, "max_continuations": 20}
    model = reader()
    async with ScriptedModelServer(model) as server:
        c = client(server, max_tokens=300, **(chunking if where == "client" else {}))
        per_call = chunking if where == "call" else {}
        async with c, c.extract_many(Mention, texts, max_concurrency=3, **per_call) as results:
            got = await collect(results)
    assert set(got) == set(texts)
    for key, text in texts.items():
        *items, last = got[key]
        assert last.done
        assert last.error is None
        assert last.items == len(items) == 300
        assert [(r.start, r.end) for r in items] == spans(text)
        assert [r.position for r in items] == list(range(300))
        for r in items:
            assert r.item.quote.span == (r.start, r.end)
            assert r.match == "exact"
            assert text[r.start : r.end] == r.item.name
    # Chunked: more requests than documents (chunks and continuations), each reading a part.
    assert len(server.requests) > 5 * 4
    assert all(len(t) <= 2500 + 120 for t in model.texts)


async def test_resume_after_reads_on_from_the_item_given_and_nothing_before_it() -> None:
    texts = {"a": book(1), "b": book(2)}
    have = spans(texts["a"])[:170]  # what an earlier run delivered of "a"
    model = reader()
    async with ScriptedModelServer(model) as server:
        c = client(server, max_tokens=400, chunk_chars=2000, overlap_chars=100)
        async with (
            c,
            c.extract_many(
                Mention, texts, max_continuations=20, resume_after={"a": have[-1]}
            ) as results,
        ):
            got = await collect(results)
    *rest, last = got["a"]
    assert [(r.start, r.end) for r in rest] == spans(texts["a"])[170:]
    assert last.items == len(rest)
    assert [(r.start, r.end) for r in got["b"][:-1]] == spans(texts["b"])  # not resumed
    # No request for "a" was sent a mention it had already: the text before is not read.
    done_names = {f"Name1x{i}" for i in range(170)}
    a_texts = [t for t in model.texts if "Name1x" in t]
    assert a_texts
    assert not any(set(re.findall(PATTERN, t)) & done_names for t in a_texts)


async def test_items_without_a_quote_have_no_span() -> None:
    model = ReadingModel(PATTERN, item=lambda m: {"name": m[0]}, script=Script(chunk_size=64))
    async with ScriptedModelServer(model) as server:
        c = client(server)
        async with c, c.extract_many(Plain, [book(3, 40)], chunk_chars=500) as results:
            got = await collect(results)
    *items, last = got[0]
    assert [r.item.name for r in items] == [f"Name3x{i}" for i in range(40)]
    assert all(r.start is None and r.end is None and r.match is None for r in items)
    assert last.done
    assert last.items == 40


async def test_chunk_options_it_cannot_have_are_one_error_on_entering() -> None:
    async with ScriptedModelServer(reader()) as server:
        c = client(server)
        with pytest.raises(ConfigurationError, match="overlap_chars needs the item type"):
            async with c.extract_many(Plain, ["Name1x1"], chunk_chars=100, overlap_chars=10):
                pass
        with pytest.raises(ConfigurationError, match="chunk_chars must be at least 1"):
            async with c.extract_many(Mention, ["Name1x1"], chunk_chars=0):
                pass
        with pytest.raises(ConfigurationError, match="is not a span of the text"):
            async with c.extract_many(
                Mention, ["Name1x1"], chunk_chars=100, resume_after={0: (50, 60)}
            ) as results:
                await collect(results)
        await c.aclose()
    assert server.requests == []
