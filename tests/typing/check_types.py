"""What a type checker infers from multitask's entry points: checked, never run.

`tests/system/test_typing.py` runs mypy --strict and pyright on this file; each `assert_type` is
what a user's editor shows. A class gives its own type, a `MultiTask(...)` model its items',
and a union or an `Annotated` type `Any` (the items are whatever it validates to).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, assert_type

from pydantic import BaseModel, Field

import multitask
from multitask import EventStream, ItemStream, Result


class User(BaseModel):
    name: str
    age: int


class Admin(BaseModel):
    name: str


async def client_methods(client: multitask.Client, text: str) -> None:
    assert_type(client.extract_stream(User, text), ItemStream[User])
    assert_type(client.extract_stream(str, text, mode="json"), ItemStream[str])
    assert_type(client.extract_stream(User | Admin, text), ItemStream[Any])
    assert_type(client.extract_stream(Annotated[int, Field(gt=0)], text), ItemStream[Any])
    assert_type(client.extract_stream(multitask.MultiTask(User), text), ItemStream[Any])
    assert_type(await client.extract(User, text), list[User])
    assert_type(await client.extract(User | Admin, text), list[Any])
    assert_type(client.extract_events(User, text), EventStream[User])
    assert_type(client.extract_events(User | Admin, text), EventStream[Any])

    async for user in client.extract_stream(User, text):
        assert_type(user, User)
    async with client.extract_stream(User, text) as stream:
        assert_type(stream, ItemStream[User])
    async with client.extract_events(User, text) as events:
        async for event in events:
            if isinstance(event, multitask.ItemDone):
                assert_type(event.item, User)

    async with client.extract_many(User, ["a", "b"]) as results:
        assert_type(results, multitask.Results[User])
        async for result in results:
            assert_type(result, Result[User])
            assert_type(result.item, User | None)
    async with client.extract_many(User | Admin, {"a": "text"}) as anything:
        async for some in anything:
            assert_type(some, Result[Any])


async def one_call_functions(text: str) -> None:
    assert_type(multitask.extract_stream(User, text, model="openai:gpt-4o-mini"), ItemStream[User])
    assert_type(multitask.extract_stream(User | Admin, text), ItemStream[Any])
    assert_type(await multitask.extract(User, text, headers={"x": "y"}), list[User])
    assert_type(await multitask.extract(User | Admin, text), list[Any])


def sync_functions(text: str) -> None:
    assert_type(multitask.extract_sync(User, text, model="openai:gpt-4o-mini"), list[User])
    assert_type(multitask.extract_sync(User | Admin, text), list[Any])
    assert_type(multitask.extract_stream_sync(User, text), Iterator[User])
    assert_type(multitask.extract_many_sync(User, [text]), Iterator[Result[User]])
    assert_type(multitask.extract_many_sync(User | Admin, [text]), Iterator[Result[Any]])
    for user in multitask.extract_stream_sync(User, text):
        assert_type(user, User)
    # The README's first snippet: no annotation needed.
    users = multitask.extract_sync(User, text, model="openai:gpt-4o-mini")
    assert_type(users[0].name, str)
