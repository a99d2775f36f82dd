"""The async client against the scripted model server, over real sockets, on asyncio and trio."""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import BaseModel

import multitask
import multitask.providers
from multitask.testing import Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-0123456789"


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user{i}", "age": 20 + i} for i in range(6)]
EXPECTED = [User(**u) for u in USERS]


def openai_client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:gpt-test", base_url=server.openai_base_url, api_key=KEY, **options
    )


def anthropic_client(server: ScriptedModelServer, **options: Any) -> multitask.Client:
    return multitask.Client(
        "anthropic:claude-test", base_url=server.anthropic_base_url, api_key=KEY, **options
    )


CLIENTS = [openai_client, anthropic_client]


async def collect(stream: multitask.ItemStream[User]) -> tuple[list[User], BaseException | None]:
    """The items delivered before an error, and the error (or None)."""
    items: list[User] = []
    try:
        async with stream:
            async for item in stream:
                items.append(item)
    except multitask.MultitaskError as exc:
        return items, exc
    return items, None


# -- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", CLIENTS)
async def test_items_arrive_while_the_model_is_still_writing(make: Any) -> None:
    script = Script(items=USERS, chunk_size=4, tokens_per_second=400)
    async with ScriptedModelServer(script) as server, make(server) as client:
        seen: list[tuple[User, bool]] = []
        async with client.extract_stream(User, "some text") as stream:
            async for user in stream:
                seen.append((user, server.requests[0].completed))
        assert [u for u, _ in seen] == EXPECTED
        # Every item but the last came out before the server had sent the whole response.
        assert [done for _, done in seen[:-1]] == [False] * (len(USERS) - 1)
        assert stream.usage is not None
        assert stream.usage.output_tokens > 0
        assert stream.finish_reason in ("tool_calls", "tool_use")
        assert stream.info.attempts == 1


async def test_openai_request_shape() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai_client(server, max_tokens=500, temperature=0.0) as client:
            assert await client.extract(User, "Jason is 10") == EXPECTED
        request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    body = request.body
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [multitask.MultiTask(User).openai_tool]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "MultiUser"}}
    assert body["max_tokens"] == 500
    assert body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][-1] == {"role": "user", "content": "Jason is 10"}


async def test_anthropic_request_shape() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with anthropic_client(server, system="Find the users.") as client:
            assert await client.extract(User, "Jason is 10") == EXPECTED
        request = server.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    body = request.body
    assert body["model"] == "claude-test"
    assert body["stream"] is True
    assert body["max_tokens"] > 0
    assert body["system"] == "Find the users."
    (tool,) = body["tools"]
    assert tool["name"] == "MultiUser"
    assert tool["eager_input_streaming"] is True
    assert tool["input_schema"]["required"] == ["tasks"]
    assert body["tool_choice"] == {"type": "tool", "name": "MultiUser"}
    assert body["messages"] == [{"role": "user", "content": "Jason is 10"}]


@pytest.mark.parametrize("mode", ["json_schema", "json", "functions"])
async def test_openai_modes(mode: str) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai_client(server, mode=mode) as client:
            assert await client.extract(User, "text") == EXPECTED
        body = server.requests[0].body
    if mode == "json_schema":
        assert body["response_format"] == multitask.MultiTask(User).openai_response_format
        assert body["response_format"]["json_schema"]["strict"] is True
    elif mode == "json":
        assert body["response_format"] == {"type": "json_object"}
        assert '"tasks"' in body["messages"][0]["content"]
    else:
        assert body["functions"] == [multitask.MultiTask(User).openai_schema]
        assert body["function_call"] == {"name": "MultiUser"}
    assert "tools" not in body


async def test_anthropic_json_mode() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with anthropic_client(server, mode="json") as client:
            assert await client.extract(User, "text") == EXPECTED
        assert "tools" not in server.requests[0].body


async def test_messages_and_extra_body_pass_through() -> None:
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai_client(server) as client:
            items = await client.extract(
                User, "now", messages=history, extra_body={"seed": 7, "user": "u-1"}
            )
        body = server.requests[0].body
    assert items == EXPECTED
    assert body["messages"][1:] == [*history, {"role": "user", "content": "now"}]
    assert body["seed"] == 7
    assert body["user"] == "u-1"


async def test_module_level_functions() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        got = [
            u
            async for u in multitask.extract_stream(
                User, "t", model="openai:m", base_url=server.openai_base_url, api_key=KEY
            )
        ]
        assert got == EXPECTED
        assert (
            await multitask.extract(
                User, "t", model="anthropic:m", base_url=server.anthropic_base_url, api_key=KEY
            )
            == EXPECTED
        )


async def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        monkeypatch.setenv("MULTITASK_MODEL", "openai:from-env")
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        async with multitask.Client() as client:
            assert await client.extract(User, "t") == EXPECTED
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
        async with multitask.Client("anthropic:from-env") as client:
            assert await client.extract(User, "t") == EXPECTED
    assert server.requests[0].body["model"] == "from-env"
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"
    assert server.requests[1].headers["x-api-key"] == "sk-ant-env"


async def test_users_own_http_client_is_used_and_left_open() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with httpx2.AsyncClient(headers={"x-proxy-token": "p"}) as http:
            client = multitask.Client(
                "openai:m", base_url=server.openai_base_url, api_key=KEY, http_client=http
            )
            async with client:
                assert await client.extract(User, "t") == EXPECTED
            assert not http.is_closed
            assert server.requests[0].headers["x-proxy-token"] == "p"


async def test_concurrent_extractions_share_one_loop_and_pool() -> None:
    n = 200
    script = Script(items=USERS, chunk_size=8, tokens_per_second=8)  # ~3 s per stream
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        results: dict[int, list[User]] = {}
        active = 0
        most_active = 0

        async def one(i: int) -> None:
            nonlocal active, most_active
            out = []
            async for user in client.extract_stream(User, f"doc {i}"):
                if not out:
                    active += 1
                    most_active = max(most_active, active)
                out.append(user)
            active -= 1
            results[i] = out

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        elapsed = time.perf_counter() - start
        assert len(server.requests) == n
    assert all(results[i] == EXPECTED for i in range(n))
    # The streams overlapped: most of them were between first and last item at once.
    assert most_active >= n * 0.75
    single = len(json.dumps({"tasks": USERS})) / 8 / 8
    assert elapsed < single * n / 10, (elapsed, single)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", CLIENTS)
async def test_http_error_is_not_retried_and_names_the_problem(make: Any) -> None:
    async with ScriptedModelServer(Script(status=400)) as server, make(server) as client:
        items, error = await collect(client.extract_stream(User, "t"))
        assert len(server.requests) == 1
    assert items == []
    assert isinstance(error, multitask.APIStatusError)
    assert error.status_code == 400
    assert "400" in str(error)
    assert KEY not in str(error)
    assert KEY not in repr(error)


@pytest.mark.parametrize("make", CLIENTS)
async def test_429_with_retry_after_is_retried_then_succeeds(make: Any) -> None:
    scripts = [Script(status=429, retry_after=0.2), Script(items=USERS)]
    async with ScriptedModelServer(scripts) as server, make(server) as client:
        start = anyio.current_time()
        stream = client.extract_stream(User, "t")
        items, error = await collect(stream)
        waited = anyio.current_time() - start
        assert len(server.requests) == 2
    assert error is None
    assert items == EXPECTED
    assert stream.info.attempts == 2
    assert waited >= 0.2  # retry-after was honoured


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_retry_up_to_max_retries(status: int) -> None:
    async with ScriptedModelServer(Script(status=status, retry_after=0.01)) as server:
        async with anthropic_client(server, max_retries=2) as client:
            _items, error = await collect(client.extract_stream(User, "t"))
        assert len(server.requests) == 3
    assert isinstance(error, multitask.APIStatusError)
    assert error.status_code == status
    assert error.retry_after == pytest.approx(0.01)


@pytest.mark.parametrize("make", CLIENTS)
async def test_mid_stream_error_after_items(make: Any) -> None:
    answer = json.dumps({"tasks": USERS})
    cut = answer.index("user3")  # three whole items, then the error
    async with ScriptedModelServer(Script(items=USERS, error_after=cut)) as server:
        async with make(server) as client:
            items, error = await collect(client.extract_stream(User, "t"))
        assert len(server.requests) == 1  # items were delivered: no retry here
    assert items == EXPECTED[:3]
    assert isinstance(error, multitask.StreamError)
    assert "mid-stream" in str(error)


async def test_mid_stream_overload_before_any_item_is_retried() -> None:
    scripts = [Script(items=USERS, error_after=5), Script(items=USERS)]
    async with ScriptedModelServer(scripts) as server, anthropic_client(server) as client:
        items, error = await collect(client.extract_stream(User, "t"))
        assert len(server.requests) == 2
    assert error is None
    assert items == EXPECTED


@pytest.mark.parametrize("make", CLIENTS)
async def test_dropped_connection_after_items(make: Any) -> None:
    answer = json.dumps({"tasks": USERS})
    cut = answer.index("user2")
    async with ScriptedModelServer(Script(items=USERS, drop_after=cut)) as server:
        async with make(server) as client:
            items, error = await collect(client.extract_stream(User, "t"))
    assert items == EXPECTED[:2]
    assert isinstance(error, multitask.APIConnectionError)
    assert "after 2 item(s)" in str(error)


@pytest.mark.parametrize("make", CLIENTS)
async def test_truncated_answer(make: Any) -> None:
    answer = json.dumps({"tasks": USERS})
    cut = answer.index("user4")
    async with ScriptedModelServer(Script(items=USERS, truncate_after=cut)) as server:
        async with make(server) as client:
            stream = client.extract_stream(User, "t")
            items, error = await collect(stream)
    assert items == EXPECTED[:4]
    assert isinstance(error, multitask.IncompleteOutputError)
    assert error.items_delivered == 4
    assert error.finish_reason in ("length", "max_tokens")
    assert stream.finish_reason in ("length", "max_tokens")


async def test_malformed_answer_after_valid_items() -> None:
    text = '{"tasks": [{"name": "a", "age": 1}, {"name": "b", "age": 2}, {"name" "c"}]}'
    async with ScriptedModelServer(Script(text=text)) as server, openai_client(server) as client:
        items, error = await collect(client.extract_stream(User, "t"))
    assert items == [User(name="a", age=1), User(name="b", age=2)]
    assert isinstance(error, multitask.MalformedOutputError)


async def test_invalid_item_raise_and_skip() -> None:
    bad = [USERS[0], {"name": "x", "age": "old"}, USERS[2]]
    async with ScriptedModelServer(Script(items=bad)) as server, openai_client(server) as client:
        items, error = await collect(client.extract_stream(User, "t"))
        assert items == [EXPECTED[0]]
        assert isinstance(error, multitask.ItemValidationError)
        assert error.index == 1
        assert error.raw == {"name": "x", "age": "old"}
        stream = client.extract_stream(User, "t", on_invalid="skip")
        items, error = await collect(stream)
    assert error is None
    assert items == [EXPECTED[0], EXPECTED[2]]
    assert [s.index for s in stream.skipped] == [1]


async def test_unreachable_server() -> None:
    with socket_that_refuses() as port:
        async with multitask.Client(
            "openai:m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=1
        ) as client:
            items, error = await collect(client.extract_stream(User, "t"))
    assert items == []
    assert isinstance(error, multitask.APIConnectionError)
    assert "could not connect" in str(error)


async def test_read_timeout_between_chunks() -> None:
    answer = json.dumps({"tasks": USERS})
    cut = answer.index("user1")
    async with ScriptedModelServer(Script(items=USERS, stall_after=cut)) as server:
        async with openai_client(server, timeout=httpx2.Timeout(0.3)) as client:
            items, error = await collect(client.extract_stream(User, "t"))
    assert items == EXPECTED[:1]
    assert isinstance(error, multitask.APITimeoutError)


async def test_total_deadline() -> None:
    script = Script(items=USERS, chunk_size=2, tokens_per_second=50)  # several seconds
    async with ScriptedModelServer(script) as server, openai_client(server, deadline=0.5) as client:
        start = anyio.current_time()
        items, error = await collect(client.extract_stream(User, "t"))
        elapsed = anyio.current_time() - start
    assert isinstance(error, multitask.APITimeoutError)
    assert "deadline" in str(error)
    assert 0.4 <= elapsed < 3
    assert items == EXPECTED[: len(items)]


async def test_missing_key_and_bad_model_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(multitask.ConfigurationError, match="OPENAI_API_KEY"):
        multitask.Client("openai:gpt-4o-mini")  # at once, not at the first request
    with pytest.raises(multitask.MultitaskError, match="provider:model_name"):
        multitask.Client("gpt-4o-mini")
    with pytest.raises(multitask.MultitaskError, match="unknown provider"):
        multitask.Client("nope:model")
    with pytest.raises(multitask.MultitaskError, match="does not support mode"):
        multitask.Client("anthropic:m", api_key="k").extract_stream(User, "t", mode="functions")


async def test_key_never_in_repr_or_errors() -> None:
    async with ScriptedModelServer(Script(status=401)) as server, openai_client(server) as client:
        assert KEY not in repr(client)
        assert KEY not in repr(client.provider)
        request = client.provider.request(
            multitask.providers.RequestSpec("m", multitask.MultiTask(User), "tools", "s", [])
        )
        assert KEY not in repr(request)
        _, error = await collect(client.extract_stream(User, "t"))
    assert isinstance(error, multitask.APIStatusError)
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert KEY not in repr(error.body)


# -- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", CLIENTS)
async def test_leaving_the_loop_closes_the_connection(make: Any) -> None:
    script = Script(items=USERS, chunk_size=4, tokens_per_second=100)
    async with ScriptedModelServer(script) as server, make(server) as client:
        async with client.extract_stream(User, "t") as stream:
            async for _ in stream:
                break
        await server.wait_disconnect(timeout=5)
        assert server.requests[0].disconnected
        assert not server.requests[0].completed


async def test_plain_break_without_async_with_closes_the_connection() -> None:
    script = Script(items=USERS, chunk_size=4, tokens_per_second=100)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        async for _ in client.extract_stream(User, "t"):
            break
        gc.collect()
        await server.wait_disconnect(timeout=5)


async def test_cancelling_the_scope_closes_the_connection() -> None:
    script = Script(items=USERS, chunk_size=2, tokens_per_second=50)
    async with ScriptedModelServer(script) as server, openai_client(server) as client:
        got: list[User] = []
        with anyio.move_on_after(0.3) as scope:
            async for user in client.extract_stream(User, "t"):
                got.append(user)
        assert scope.cancelled_caught
        await server.wait_disconnect(timeout=5)
    assert got == EXPECTED[: len(got)]


# -- the sync API ------------------------------------------------------------------------------


def test_sync_api_from_plain_code() -> None:
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            ScriptedModelServer(Script(items=USERS, tokens_per_second=100))
        ) as server,
    ):
        url = server.openai_base_url
        assert multitask.extract_sync(User, "t", model="openai:m", base_url=url, api_key=KEY) == (
            EXPECTED
        )
        stream = multitask.extract_stream_sync(
            User, "t", model="openai:m", base_url=url, api_key=KEY
        )
        assert next(stream) == EXPECTED[0]
        stream.close()  # leaving early closes the connection
        portal.call(server.wait_disconnect)


async def test_sync_api_inside_a_running_loop() -> None:
    """As in a notebook cell: the calling thread already runs an event loop."""
    async with ScriptedModelServer(Script(items=USERS)) as server:
        url = server.openai_base_url
        # The server runs on this loop, so the sync call must run in another thread here;
        # the point is that extract_sync itself never touches the caller's loop.
        items = await anyio.to_thread.run_sync(
            lambda: multitask.extract_sync(User, "t", model="openai:m", base_url=url, api_key=KEY)
        )
    assert items == EXPECTED


def test_sync_api_called_from_a_thread_running_asyncio() -> None:
    import asyncio

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(Script(items=USERS))) as server,
    ):
        url = server.openai_base_url

        async def notebook_cell() -> list[User]:
            return multitask.extract_sync(User, "t", model="openai:m", base_url=url, api_key=KEY)

        assert asyncio.run(notebook_cell()) == EXPECTED


# -- helpers -----------------------------------------------------------------------------------


class socket_that_refuses:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = int(s.getsockname()[1])
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass


async def test_key_never_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    scripts = [Script(status=429, retry_after=0.01), Script(items=USERS, drop_after=40)]
    async with ScriptedModelServer(scripts) as server, openai_client(server) as client:
        _, error = await collect(client.extract_stream(User, "t"))
    assert isinstance(error, multitask.APIConnectionError)
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"httpx2", "multitask"} <= loggers, loggers  # the logs were on (the transport's too)
    assert KEY not in caplog.text
