"""`multitask.Quote` end to end, over real HTTP against the scripted model server.

Each Quote of a delivered item carries its span in the text given to the extraction
(`text[q.start:q.end]` are the source words); a quote that is not in the text makes its item
invalid (raised after the items before it, or skipped); repeats get distinct spans, across
a retry too; partial events ground their `ItemDone` items; a type without a Quote is untouched.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import multitask
from multitask import ItemDone, ItemValidationError, Quote
from multitask.testing import Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

TEXT = (
    "Acme Corp. hired Jane Doe as CFO in March. Jane Doe joined from Globex. "
    "The board of ACME CORP. met on Monday; Jane Doe presented the “annual budget”."
)


class Mention(BaseModel):
    kind: str
    quote: Quote


class User(BaseModel):
    name: str
    age: int


MENTIONS = [
    {"kind": "org", "quote": "Acme Corp."},
    {"kind": "person", "quote": "Jane Doe"},
    {"kind": "person", "quote": "Jane Doe"},
    {"kind": "org", "quote": "acme corp."},  # normalized: the second "ACME CORP."
    {"kind": "person", "quote": "Jane Doe"},
    {"kind": "thing", "quote": 'the "annual budget"'},  # normalized: curly quotes
    {"kind": "org", "quote": "joined from the Globex"},  # fuzzy: a word added
]


def client_for(server: ScriptedModelServer) -> multitask.Client:
    return multitask.Client("openai:m", base_url=server.openai_base_url, api_key="k", max_retries=2)


def check_grounded(items: list[Mention]) -> None:
    """Every span is the source of its words, and no two items share one."""
    for m in items:
        assert m.quote.start is not None
        assert m.quote.end is not None
        source = TEXT[m.quote.start : m.quote.end]
        if m.quote.match == "exact":
            assert source == m.quote
        else:
            assert m.quote.match in ("normalized", "fuzzy")
    assert len({m.quote.span for m in items}) == len(items)


EXPECTED = [
    ("Acme Corp.", "exact"),
    ("Jane Doe", "exact"),
    ("Jane Doe", "exact"),
    ("ACME CORP.", "normalized"),
    ("Jane Doe", "exact"),
    ("the “annual budget”", "normalized"),
    ("joined from Globex", "fuzzy"),
]


def sources(items: list[Mention]) -> list[tuple[str, str | None]]:
    return [(TEXT[m.quote.start or 0 : m.quote.end or 0], m.quote.match) for m in items]


async def test_extract_stream_delivers_quotes_with_their_spans() -> None:
    async with ScriptedModelServer(Script(items=MENTIONS, chunk_size=7)) as server:
        async with client_for(server) as client:
            async with client.extract_stream(Mention, TEXT) as stream:
                items = [m async for m in stream]
    assert sources(items) == EXPECTED
    check_grounded(items)
    jane = [m.quote.start for m in items if m.quote == "Jane Doe"]
    assert jane == sorted(jane)
    assert len(set(jane)) == 3


async def test_an_unfindable_quote_raises_after_the_items_before_it() -> None:
    answer = [*MENTIONS[:2], {"kind": "person", "quote": "John Smith"}, MENTIONS[0]]
    got: list[Mention] = []

    async def read(client: multitask.Client) -> None:
        async with client.extract_stream(Mention, TEXT) as stream:
            async for m in stream:
                got.append(m)

    async with ScriptedModelServer(Script(items=answer)) as server:
        async with client_for(server) as client:
            with pytest.raises(ItemValidationError) as info:
                await read(client)
    assert sources(got) == EXPECTED[:2]
    assert info.value.index == 2
    assert info.value.errors[0]["type"] == "quote_not_found"


async def test_under_skip_an_unfindable_quote_is_listed_in_skipped() -> None:
    answer = [MENTIONS[1], {"kind": "person", "quote": "John Smith"}, MENTIONS[1]]
    async with ScriptedModelServer(Script(items=answer)) as server:
        async with client_for(server) as client:
            async with client.extract_stream(Mention, TEXT, on_invalid="skip") as stream:
                items = [m async for m in stream]
    assert sources(items) == [("Jane Doe", "exact"), ("Jane Doe", "exact")]
    assert [s.index for s in stream.skipped] == [1]
    assert stream.skipped[0].raw == {"kind": "person", "quote": "John Smith"}


async def test_more_repeats_than_occurrences_are_invalid() -> None:
    answer = [MENTIONS[1]] * 4
    async with ScriptedModelServer(Script(items=answer)) as server:
        async with client_for(server) as client:
            async with client.extract_stream(Mention, TEXT, on_invalid="skip") as stream:
                items = [m async for m in stream]
    assert len(items) == 3
    assert len({m.quote.span for m in items}) == 3
    assert [s.index for s in stream.skipped] == [3]


async def test_a_retry_before_any_item_starts_from_no_owned_span() -> None:
    answer = json.dumps({"tasks": MENTIONS})
    first_item_ends = answer.index("}")
    scripts = [Script(items=MENTIONS, drop_after=first_item_ends - 3), Script(items=MENTIONS)]
    async with ScriptedModelServer(scripts) as server:
        async with client_for(server) as client:
            async with client.extract_stream(Mention, TEXT) as stream:
                items = [m async for m in stream]
        assert len(server.requests) == 2
    assert stream.info.attempts == 2
    assert sources(items) == EXPECTED


@pytest.mark.parametrize("cut_at", ["Jane", "acme corp.", "annual"])
async def test_a_retry_after_a_dropped_connection_gives_each_span_once(cut_at: str) -> None:
    # `extract_many` retries after delivered items and skips the ones it had: the retry's
    # items must get the spans they were delivered with, not the next occurrences.
    answer = json.dumps({"tasks": MENTIONS})
    cut = answer.index(cut_at, answer.index(cut_at) + 1) if cut_at == "Jane" else None
    cut = cut if cut is not None else answer.index(cut_at)
    scripts = [Script(items=MENTIONS, drop_after=cut, chunk_size=5), Script(items=MENTIONS)]
    async with ScriptedModelServer(scripts) as server:
        async with client_for(server) as client:
            async with client.extract_many(Mention, [TEXT]) as results:
                events = [r async for r in results]
        assert len(server.requests) == 2
    items = [r.item for r in events if r.item is not None]
    assert [r.position for r in events if r.item is not None] == list(range(len(MENTIONS)))
    assert events[-1].done
    assert events[-1].ok, events[-1].error
    assert sources(items) == EXPECTED
    check_grounded(items)


async def test_extract_events_grounds_its_done_items() -> None:
    async with ScriptedModelServer(Script(items=MENTIONS, chunk_size=3)) as server:
        async with client_for(server) as client:
            async with client.extract_events(Mention, TEXT, min_interval=0) as events:
                done = [e.item async for e in events if isinstance(e, ItemDone)]
    assert sources(done) == EXPECTED


async def test_extract_collects_grounded_items() -> None:
    async with ScriptedModelServer(Script(items=MENTIONS[:3])) as server:
        async with client_for(server) as client:
            items = await client.extract(Mention, TEXT)
    assert sources(items) == EXPECTED[:3]


async def test_two_streams_on_one_loop_ground_in_their_own_texts() -> None:
    texts = {"one": "alpha beta alpha", "two": "beta alpha beta"}
    expected = {"one": [0, 6, 11], "two": [0, 5, 11]}

    def answer(request: Any) -> Script:
        words = texts["one" if "alpha beta alpha" in json.dumps(request.body) else "two"].split()
        items = [{"kind": "w", "quote": w} for w in words]
        return Script(items=items, chunk_size=2, tokens_per_second=500)

    got: dict[str, list[Mention]] = {}
    async with ScriptedModelServer(answer) as server, client_for(server) as client:

        async def one(name: str) -> None:
            got[name] = await client.extract(Mention, texts[name])

        async with anyio.create_task_group() as tg:
            for name in texts:
                tg.start_soon(one, name)
    for name, text in texts.items():
        assert [m.quote.start for m in got[name]] == expected[name]
        assert [text[m.quote.start or 0 : m.quote.end or 0] for m in got[name]] == text.split()


async def test_a_type_without_a_quote_is_untouched() -> None:
    users = [{"name": "Jane Doe", "age": 40}, {"name": "nobody in the text", "age": 1}]
    async with ScriptedModelServer(Script(items=users)) as server:
        async with client_for(server) as client:
            assert client._engine.prepare(User, TEXT, {}).aligner is None
            assert client._engine.prepare(Mention, TEXT, {}).aligner is not None
            items = await client.extract(User, TEXT)
    assert items == [User(**u) for u in users]


async def test_without_a_text_quotes_have_no_span() -> None:
    messages = [{"role": "user", "content": TEXT}]
    async with ScriptedModelServer(Script(items=MENTIONS[:2])) as server:
        async with client_for(server) as client:
            items = await client.extract(Mention, None, messages=messages)
    assert [m.quote.span for m in items] == [None, None]
