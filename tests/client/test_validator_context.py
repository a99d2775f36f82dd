"""Where the user's validators run, and what they see there: the contract in docs/design.md.

On multitask's own pool under asyncio (and uvloop) a validator runs in the socket's callback,
not in a task; under trio, or over a caller's httpx2 client, in the task reading the stream.
Wherever it runs, it sees the caller's context variables and `validation_context`, and what
it raises reaches the caller after the items before it. These tests pin that on every loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import pytest
import sniffio
from pydantic import BaseModel, ValidationInfo, field_validator

import multitask
from multitask.testing import Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")

#: What each validator call saw, in order (cleared by the `seen` fixture).
SEEN: list[dict[str, Any]] = []


class Probe(BaseModel):
    """An item whose validator records where it ran, and fails on demand by name."""

    name: str
    age: int

    @field_validator("name")
    @classmethod
    def _record(cls, v: str, info: ValidationInfo) -> str:
        SEEN.append(
            {
                "name": v,
                "request_id": REQUEST_ID.get(),
                "context": info.context,
                "asyncio_task": _asyncio_task(),
                "anyio_task": _anyio_task(),
                "library": sniffio.current_async_library(),
                "thread": threading.get_ident(),
            }
        )
        if v == "value-error":
            raise ValueError("not a name we accept")
        if v == "runtime-error":
            raise RuntimeError("the validator broke")
        return v


def _asyncio_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop running: trio
        return None


def _anyio_task() -> int | None:
    try:
        return anyio.get_current_task().id
    except RuntimeError:  # "no task currently running": a callback of the loop's
        return None


@pytest.fixture
def seen() -> Any:
    SEEN.clear()
    yield SEEN
    SEEN.clear()


def items(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "age": k} for k, n in enumerate(names)]


#: Paced and cut small: the items arrive over many reads, while the reader waits.
PACED: dict[str, Any] = {"chunk_size": 4, "tokens_per_second": 400}
#: The whole answer in one event: every item completes in the same read.
WHOLE: dict[str, Any] = {"chunk_size": 100_000}


def client_for(server: ScriptedModelServer, **kwargs: Any) -> multitask.Client:
    return multitask.Client("openai:m", base_url=server.openai_base_url, api_key="k", **kwargs)


async def read(
    server: ScriptedModelServer, *, http_client: httpx2.AsyncClient | None = None, **options: Any
) -> tuple[list[str], BaseException | None]:
    """The names delivered, and what the stream raised (or None)."""
    out: list[str] = []
    async with client_for(server, http_client=http_client) as client:
        try:
            async with client.extract_stream(Probe, "t", **options) as stream:
                async for item in stream:
                    out.append(item.name)
        except Exception as exc:
            return out, exc
    return out, None


def on_asyncio() -> bool:
    return sniffio.current_async_library() == "asyncio"


# -- where they run ----------------------------------------------------------------------------


async def test_on_the_own_pool_validators_run_in_the_callback_on_asyncio_in_the_task_on_trio(
    seen: list[dict[str, Any]],
) -> None:
    names = [f"u{k}" for k in range(6)]
    async with ScriptedModelServer(Script(items=items(*names), **PACED)) as server:
        assert await read(server) == (names, None)
    assert [s["name"] for s in seen] == names
    if on_asyncio():
        # Items completed while the reader waited were validated in the socket's callback:
        # no task is current there, for asyncio or anyio.
        in_callback = [s for s in seen if s["asyncio_task"] is None]
        assert in_callback, "every item was validated in a task: see docs/design.md"
        assert all(s["anyio_task"] is None for s in in_callback)
    else:
        reader = anyio.get_current_task().id
        assert all(s["anyio_task"] == reader for s in seen)


async def test_over_a_callers_http_client_validators_run_in_the_reading_task(
    seen: list[dict[str, Any]],
) -> None:
    names = [f"u{k}" for k in range(4)]
    async with ScriptedModelServer(Script(items=items(*names), **PACED)) as server:
        async with httpx2.AsyncClient() as http:
            assert await read(server, http_client=http) == (names, None)
    reader = anyio.get_current_task().id
    assert [s["anyio_task"] for s in seen] == [reader] * len(names)


def test_the_sync_functions_validate_in_their_loops_thread_with_the_callers_context(
    seen: list[dict[str, Any]],
) -> None:
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            ScriptedModelServer(Script(items=items("a", "b"), **PACED))
        ) as server,
    ):
        token = REQUEST_ID.set("sync-caller")
        try:
            got = multitask.extract_sync(
                Probe, "t", model="openai:m", base_url=server.openai_base_url, api_key="k"
            )
        finally:
            REQUEST_ID.reset(token)
    assert [p.name for p in got] == ["a", "b"]
    assert [s["request_id"] for s in seen] == ["sync-caller"] * 2
    assert all(s["thread"] != threading.get_ident() for s in seen)


# -- what they see -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [PACED, WHOLE], ids=["paced", "whole"])
async def test_validators_see_the_callers_context_variables(
    seen: list[dict[str, Any]], shape: dict[str, Any]
) -> None:
    async with ScriptedModelServer(Script(items=items("a", "b", "c"), **shape)) as server:
        token = REQUEST_ID.set("req-42")
        try:
            assert await read(server) == (["a", "b", "c"], None)
        finally:
            REQUEST_ID.reset(token)
    assert [s["request_id"] for s in seen] == ["req-42"] * 3


async def test_concurrent_streams_each_see_their_own_callers_context(
    seen: list[dict[str, Any]],
) -> None:
    def answer(request: Any) -> Script:
        tag = request.body["messages"][-1]["content"]
        return Script(items=items(*(f"{tag}-{k}" for k in range(4))), **PACED)

    async with ScriptedModelServer(answer) as server, client_for(server) as client:

        async def one(tag: str) -> None:
            REQUEST_ID.set(tag)  # in this task's own context
            async with client.extract_stream(Probe, tag) as stream:
                async for _ in stream:
                    pass

        async with anyio.create_task_group() as tg:
            for tag in ("x", "y", "z"):
                tg.start_soon(one, tag)
    assert len(seen) == 12
    assert all(s["name"].split("-")[0] == s["request_id"] for s in seen)


async def test_validation_context_reaches_every_validator(seen: list[dict[str, Any]]) -> None:
    marker = {"tenant": "acme"}
    async with ScriptedModelServer(Script(items=items("a", "b"), **PACED)) as server:
        assert await read(server, validation_context=marker) == (["a", "b"], None)
    assert [s["context"] for s in seen] == [marker, marker]


async def test_sniffio_names_the_running_loop_inside_a_validator(
    seen: list[dict[str, Any]],
) -> None:
    async with ScriptedModelServer(Script(items=items("a", "b"), **PACED)) as server:
        await read(server)
    assert [s["library"] for s in seen] == [sniffio.current_async_library()] * 2


# -- what they raise ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [PACED, WHOLE], ids=["paced", "whole"])
async def test_a_value_error_is_an_item_validation_error_after_the_items_before_it(
    seen: list[dict[str, Any]], shape: dict[str, Any]
) -> None:
    script = Script(items=items("a", "b", "value-error", "d"), **shape)
    async with ScriptedModelServer(script) as server:
        delivered, error = await read(server)
        assert len(server.requests) == 1  # not retried
    assert delivered == ["a", "b"]
    assert isinstance(error, multitask.ItemValidationError)
    assert error.index == 2
    assert "not a name we accept" in str(error)
    assert [s["name"] for s in seen] == ["a", "b", "value-error"]  # "d" never validated


async def test_skip_drops_the_invalid_item_and_goes_on(seen: list[dict[str, Any]]) -> None:
    script = Script(items=items("a", "value-error", "c"), **PACED)
    async with ScriptedModelServer(script) as server:
        assert await read(server, on_invalid="skip") == (["a", "c"], None)


async def test_any_other_exception_reaches_the_caller_as_itself_after_earlier_reads_items(
    seen: list[dict[str, Any]],
) -> None:
    script = Script(items=items("a", "b", "runtime-error", "d"), **PACED)
    async with ScriptedModelServer(script) as server:
        delivered, error = await read(server)
        assert len(server.requests) == 1  # not retried: a bug in the validator, not the wire
    assert delivered == ["a", "b"]
    assert type(error) is RuntimeError
    assert str(error) == "the validator broke"


async def test_any_other_exception_comes_after_the_items_of_the_same_read(
    seen: list[dict[str, Any]],
) -> None:
    script = Script(items=items("a", "b", "runtime-error", "d"), **WHOLE)
    async with ScriptedModelServer(script) as server:
        delivered, error = await read(server)
    assert type(error) is RuntimeError
    assert delivered == ["a", "b"]
