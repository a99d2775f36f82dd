"""The seed's examples through `multitask.patch` with the real openai SDK, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import anyio.from_thread
import openai
import pytest
from pydantic import BaseModel

import multitask
from multitask import MultiTask
from multitask.testing import Script, ScriptedModelServer


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": "Jason", "age": 10}, {"name": "John", "age": 30}]
MESSAGES = [{"role": "user", "content": "Jason is 10 and John is 30"}]


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    """A scripted server on its own loop in a worker thread, for synchronous SDK clients."""
    script = Script(items=USERS, chunk_size=3)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as running,
    ):
        yield running


def test_seed_streaming_example(server: ScriptedModelServer) -> None:
    client = multitask.patch(openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test"))
    MultiUser = MultiTask(User)
    completion = client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini",
        messages=MESSAGES,
        response_model=MultiUser,
        stream=True,
    )
    users = []
    for user in MultiUser.from_streaming_response(completion):
        assert isinstance(user, User)
        users.append(user)
    assert users == [User(**u) for u in USERS]
    body = server.requests[0].body
    assert body["tools"] == [MultiUser.openai_tool]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "MultiUser"}}


def test_seed_non_streaming_example(server: ScriptedModelServer) -> None:
    client = multitask.patch(openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test"))
    MultiUser = MultiTask(User)
    result = client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=MESSAGES, response_model=MultiUser
    )
    assert isinstance(result, MultiUser)
    assert result.tasks == [User(**u) for u in USERS]


def test_plain_item_type_and_unpatched_calls(server: ScriptedModelServer) -> None:
    client = multitask.patch(openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test"))
    assert multitask.patch(client) is client  # patching twice is harmless
    result = client.chat.completions.create(  # type: ignore[call-overload]
        model="m", messages=MESSAGES, response_model=User
    )
    assert result.tasks == [User(**u) for u in USERS]
    raw = client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.choices[0].message is not None


@pytest.mark.anyio
async def test_async_client() -> None:
    async with ScriptedModelServer(Script(items=USERS, chunk_size=3)) as server:
        client = multitask.patch(
            openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test")
        )
        MultiUser = MultiTask(User)
        stream = await client.chat.completions.create(  # type: ignore[call-overload]
            model="m", messages=MESSAGES, response_model=MultiUser, stream=True
        )
        users = [u async for u in MultiUser.from_streaming_response_async(stream)]
        result = await client.chat.completions.create(  # type: ignore[call-overload]
            model="m", messages=MESSAGES, response_model=MultiUser
        )
        await client.close()
    assert users == result.tasks == [User(**u) for u in USERS]
