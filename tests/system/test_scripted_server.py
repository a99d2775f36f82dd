"""The scripted model server, over real sockets: wire shapes, HTTP behaviour, faults, SDKs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest

from multitask.testing import RecordedRequest, Script, ScriptedModelServer, _wire, _wire_chat
from multitask.testing._http import ProtocolError, RequestParser
from multitask.testing._script import Cut
from multitask.testing._wire_base import call_steps

USERS = [
    {"name": "Ada Lovelace", "age": 36},
    {"name": "Alan Turing", "age": 41},
    {"name": "Grace Hopper", "age": 85},
]
ANSWER = {"tasks": USERS}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "Tasks", "parameters": {"type": "object"}}}
]
ANTHROPIC_TOOLS = [{"name": "Tasks", "input_schema": {"type": "object"}}]
MESSAGES = [{"role": "user", "content": "List three computing pioneers."}]


def openai_body(**extra: Any) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-2024-08-06",
        "messages": MESSAGES,
        "tools": OPENAI_TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return {**body, **extra}


def anthropic_body(**extra: Any) -> dict[str, Any]:
    body = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "messages": MESSAGES,
        "tools": ANTHROPIC_TOOLS,
        "stream": True,
    }
    return {**body, **extra}


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) for each event of an SSE body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def openai_chunks(text: str) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in parse_sse(text) if data != "[DONE]"]


def shape(value: Any) -> Any:
    """The key structure of a JSON value (keys of objects, shapes in arrays), not its values."""
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return None


def openai_arguments(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        call["function"].get("arguments", "")
        for chunk in chunks
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls") or []
    )


def anthropic_partial(text: str) -> str:
    events = [json.loads(data) for _, data in parse_sse(text)]
    return "".join(e["delta"].get("partial_json", "") for e in events if "delta" in e)


# -- OpenAI streams ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_tool_stream_matches_the_real_capture(wire: Path) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/chat/completions", json=openai_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["x-request-id"].startswith("req_")
    assert response.text.endswith("data: [DONE]\n\n")
    chunks = openai_chunks(response.text)
    assert json.loads(openai_arguments(chunks)) == ANSWER

    capture = openai_chunks((wire / "openai" / "chat_tools_c6aa7e39.sse").read_text())
    assert shape(chunks[0]) == shape(capture[0])  # role + tool call id/name/arguments ""
    assert shape(chunks[1]) == shape(capture[1])  # an argument delta
    assert shape(chunks[-2]) == shape(capture[-2])  # finish_reason
    assert shape(chunks[-1]) == shape(capture[-1])  # usage, empty choices
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"] == {
        "name": "Tasks",
        "arguments": "",
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert len({c["id"] for c in chunks}) == 1
    # Compact JSON, exactly as the service sends it.
    first_line = response.text.split("\n", 1)[0]
    assert first_line == "data: " + json.dumps(chunks[0], separators=(",", ":"))


@pytest.mark.anyio
async def test_openai_content_stream_for_response_format_and_no_tools(wire: Path) -> None:
    capture = openai_chunks((wire / "openai" / "chat_content_7e5ea4d1.sse").read_text())
    bodies = [
        openai_body(response_format={"type": "json_object"}, stream_options=None),
        {"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ]
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        for body in bodies:
            response = await client.post(server.url + "/chat/completions", json=body)
            chunks = openai_chunks(response.text)
            content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert json.loads(content) == ANSWER
            assert chunks[0]["choices"][0]["delta"] == {
                "role": "assistant",
                "content": "",
                "refusal": None,
            }
            assert shape(chunks[1]) == shape(capture[1])
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # no usage chunk asked


@pytest.mark.anyio
async def test_openai_legacy_functions_stream_function_call_deltas() -> None:
    body = openai_body(
        tools=None,
        functions=[{"name": "Tasks", "parameters": {"type": "object"}}],
        function_call={"name": "Tasks"},
    )
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/chat/completions", json=body)
    chunks = openai_chunks(response.text)
    first = chunks[0]["choices"][0]["delta"]
    assert first["function_call"] == {"name": "Tasks", "arguments": ""}
    arguments = "".join(
        c["choices"][0]["delta"].get("function_call", {}).get("arguments", "")
        for c in chunks
        if c["choices"]
    )
    assert json.loads(arguments) == ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "function_call"


@pytest.mark.anyio
async def test_tool_name_comes_from_tool_choice() -> None:
    tools = [*OPENAI_TOOLS, {"type": "function", "function": {"name": "Other"}}]
    body = openai_body(tools=tools, tool_choice={"type": "function", "function": {"name": "Other"}})
    a_body = anthropic_body(
        tools=[*ANTHROPIC_TOOLS, {"name": "Other", "input_schema": {}}],
        tool_choice={"type": "tool", "name": "Other"},
    )
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        openai_text = (await client.post(server.url + "/v1/chat/completions", json=body)).text
        anthropic_text = (await client.post(server.url + "/v1/messages", json=a_body)).text
    call = openai_chunks(openai_text)[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["function"]["name"] == "Other"
    start = json.loads(parse_sse(anthropic_text)[1][1])
    assert start["content_block"]["name"] == "Other"


# -- Anthropic streams -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_anthropic_tool_use_stream_matches_the_real_capture(wire: Path) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/messages", json=anthropic_body())
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["request-id"].startswith("req_")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(d) for _, d in events]
    assert json.loads(anthropic_partial(response.text)) == ANSWER
    assert data[-2]["delta"]["stop_reason"] == "tool_use"

    capture_text = (wire / "anthropic" / "tool_use_response.sse").read_text()
    capture = [(n, json.loads(d)) for n, d in parse_sse(capture_text)]
    by_name = {}
    for name, payload in capture:
        if name == "content_block_start" and payload["content_block"]["type"] != "tool_use":
            continue
        if name == "content_block_delta" and payload["delta"]["type"] != "input_json_delta":
            continue
        by_name.setdefault(name, payload)
    for (name, _), payload in zip(events, data, strict=False):
        assert shape(payload) == shape(by_name[name]), name
    ping = 'event: ping\ndata: {"type": "ping"}\n\n'
    assert ping in response.text
    assert ping in capture_text + "\n\n"


@pytest.mark.anyio
async def test_anthropic_text_stream_without_tools() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/messages", json=anthropic_body(tools=None))
    data = [json.loads(d) for _, d in parse_sse(response.text)]
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert json.loads(text) == ANSWER
    assert data[-2]["delta"]["stop_reason"] == "end_turn"


# -- HTTP behaviour ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    scripts = [Script(items=USERS[:1]), Script(items=USERS[1:])]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        first = await client.post(server.url + "/v1/chat/completions", json=openai_body())
        second = await client.post(server.url + "/v1/messages", json=anthropic_body())
        third = await client.post(server.url + "/v1/messages", json=anthropic_body())
    assert json.loads(openai_arguments(openai_chunks(first.text))) == {"tasks": USERS[:1]}
    assert json.loads(anthropic_partial(second.text)) == {"tasks": USERS[1:]}
    assert json.loads(anthropic_partial(third.text)) == {"tasks": USERS[1:]}
    requests = server.requests
    assert [r.provider for r in requests] == ["openai", "anthropic", "anthropic"]
    assert len({r.connection for r in requests}) == 1
    assert all(r.completed and not r.disconnected for r in requests)
    assert requests[1].script is scripts[1]
    assert requests[2].script is scripts[1]
    assert requests[0].headers["content-type"] == "application/json"
    assert requests[0].body == openai_body()


@pytest.mark.anyio
async def test_unknown_route_is_a_json_404() -> None:
    async with ScriptedModelServer() as server, httpx2.AsyncClient() as client:
        response = await client.get(server.url + "/v1/models?limit=2")
        again = await client.post(server.url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/models)"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["code"] is None
    assert again.status_code == 400
    assert server.requests[0].provider is None
    assert server.requests[0].query == {"limit": "2"}
    assert server.requests[1].body is None


@pytest.mark.anyio
async def test_error_status_with_retry_after_and_provider_error_shapes() -> None:
    openai_script = Script(status=429, retry_after=1.5, headers={"x-ratelimit-remaining": "0"})
    scripts = [openai_script, Script(status=529, retry_after=2)]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        openai_response = await client.post(server.url + "/v1/chat/completions", json=openai_body())
        anthropic_response = await client.post(server.url + "/v1/messages", json=anthropic_body())
    assert openai_response.status_code == 429
    assert openai_response.headers["retry-after"] == "1.5"
    assert openai_response.headers["retry-after-ms"] == "1500"
    assert openai_response.headers["x-ratelimit-remaining"] == "0"
    assert openai_response.headers["content-length"] == str(len(openai_response.content))
    error = openai_response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert anthropic_response.status_code == 529
    assert anthropic_response.headers["retry-after"] == "2"
    body = anthropic_response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert body["request_id"] == anthropic_response.headers["request-id"]
    assert all(r.completed for r in server.requests)


@pytest.mark.anyio
async def test_custom_error_body() -> None:
    custom = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    async with (
        ScriptedModelServer(Script(status=429, error_body=custom)) as server,
        httpx2.AsyncClient() as client,
    ):
        response = await client.post(server.url + "/v1/messages", json=anthropic_body())
    assert response.status_code == 429
    assert response.json() == custom


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_truncate_after_ends_with_length_and_max_tokens() -> None:
    script = Script(items=USERS, truncate_after=30)
    answer = json.dumps(ANSWER)
    async with ScriptedModelServer(script) as server, httpx2.AsyncClient() as client:
        openai_text = (
            await client.post(server.url + "/v1/chat/completions", json=openai_body())
        ).text
        anthropic_text = (
            await client.post(server.url + "/v1/messages", json=anthropic_body())
        ).text
    chunks = openai_chunks(openai_text)
    assert openai_arguments(chunks) == answer[:30]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert openai_text.endswith("data: [DONE]\n\n")
    events = parse_sse(anthropic_text)
    data = [json.loads(d) for _, d in events]
    assert anthropic_partial(anthropic_text) == answer[:30]
    assert data[-2]["delta"]["stop_reason"] == "max_tokens"
    # As in the real incomplete_partial_json capture: the cut block gets no content_block_stop.
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]
    assert "content_block_stop" not in anthropic_text


async def read_into(response: httpx2.Response, received: bytearray) -> None:
    """Read the body into `received`, so what arrived survives a read error."""
    async for data in response.aiter_bytes():
        received += data


@pytest.mark.anyio
async def test_drop_after_breaks_the_chunked_body() -> None:
    answer = json.dumps(ANSWER)
    received = bytearray()
    async with (
        ScriptedModelServer(Script(items=USERS, drop_after=20)) as server,
        httpx2.AsyncClient() as client,
        client.stream("POST", server.url + "/v1/chat/completions", json=openai_body()) as r,
    ):
        assert r.status_code == 200
        with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
            await read_into(r, received)
    assert openai_arguments(openai_chunks(received.decode())) == answer[:20]
    assert b"[DONE]" not in received
    record = server.requests[0]
    assert not record.completed
    assert not record.disconnected


@pytest.mark.anyio
async def test_error_after_sends_the_mid_stream_error_event() -> None:
    scripts = [Script(items=USERS, error_after=12)]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        openai_text = (
            await client.post(server.url + "/v1/chat/completions", json=openai_body())
        ).text
        anthropic_text = (
            await client.post(server.url + "/v1/messages", json=anthropic_body())
        ).text
    last = parse_sse(openai_text)[-1]
    assert last[0] is None
    error = json.loads(last[1])["error"]
    assert error["type"] == "server_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert "[DONE]" not in openai_text
    name, data = parse_sse(anthropic_text)[-1]
    assert name == "error"
    assert json.loads(data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    # The body ended cleanly, so the connection stayed usable for the second request.
    assert len({r.connection for r in server.requests}) == 1
    assert all(r.completed for r in server.requests)


@pytest.mark.anyio
async def test_pacing_spaces_the_deltas() -> None:
    script = Script(text="x" * 40, chunk_size=4, tokens_per_second=50)  # 10 deltas
    async with ScriptedModelServer(script) as server, httpx2.AsyncClient() as client:
        start = time.monotonic()
        response = await client.post(server.url + "/v1/messages", json=anthropic_body())
        elapsed = time.monotonic() - start
    assert elapsed >= 0.15
    assert response.text.count('"partial_json":"xxxx"') == 10


@pytest.mark.anyio
async def test_raw_malformed_text_is_streamed_verbatim() -> None:
    text = '{"tasks": [{"name": "Ada"}, {"name": '
    script = Script(text=text, chunk_size=3)
    async with ScriptedModelServer(script) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/chat/completions", json=openai_body())
    assert openai_arguments(openai_chunks(response.text)) == text


@pytest.mark.anyio
@pytest.mark.parametrize(
    "script",
    [
        Script(items=USERS, stall_after=10),
        Script(items=USERS * 20, chunk_size=2, tokens_per_second=200),
    ],
    ids=["stall", "paced"],
)
async def test_client_disconnect_is_recorded(script: Script) -> None:
    async with ScriptedModelServer(script) as server:
        async with (
            httpx2.AsyncClient() as client,
            client.stream(
                "POST", server.url + "/v1/chat/completions", json=openai_body()
            ) as response,
        ):
            async for data in response.aiter_bytes():
                if b"arguments" in data:
                    break
        await server.wait_disconnect(timeout=5)
        record = server.requests[0]
        assert record.disconnected
        assert not record.completed
        assert record.client_disconnected.is_set()
        assert server.disconnects == 1


@pytest.mark.anyio
async def test_wait_disconnect_times_out() -> None:
    async with ScriptedModelServer() as server:
        with pytest.raises(TimeoutError):
            await server.wait_disconnect(timeout=0.05)


@pytest.mark.anyio
async def test_leaving_the_server_closes_stalled_streams() -> None:
    with anyio.fail_after(5):
        async with httpx2.AsyncClient() as client, AsyncExitStack() as responses:
            async with ScriptedModelServer(Script(items=USERS, stall_after=5)) as server:
                response = await responses.enter_async_context(
                    client.stream("POST", server.url + "/v1/messages", json=anthropic_body())
                )
                chunks = response.aiter_bytes()
                assert b"message_start" in await chunks.__anext__()
                port = server.port
            # The server is gone: its stalled connection was closed and its port released.
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
                async for _ in chunks:
                    pass
    assert not server.requests[0].completed
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.anyio
async def test_script_function_is_called_per_request() -> None:
    seen: list[RecordedRequest] = []

    async def answer(request: RecordedRequest) -> Script:
        seen.append(request)
        await anyio.lowlevel.checkpoint()
        return Script(items=[{"n": len(seen)}])

    async with ScriptedModelServer(answer) as server, httpx2.AsyncClient() as client:
        responses = [
            await client.post(server.url + "/v1/chat/completions", json=openai_body(stream=False))
            for _ in range(2)
        ]
    assert seen == server.requests
    for n, response in enumerate(responses, 1):
        call = response.json()["choices"][0]["message"]["tool_calls"][0]
        assert json.loads(call["function"]["arguments"]) == {"tasks": [{"n": n}]}


@pytest.mark.anyio
async def test_script_function_failure_is_a_500_and_recorded() -> None:
    def broken(request: RecordedRequest) -> Script:
        raise RuntimeError("boom")

    async with ScriptedModelServer(broken) as server, httpx2.AsyncClient() as client:
        response = await client.post(server.url + "/v1/messages", json=anthropic_body())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert [str(e) for e in server.errors] == ["boom"]


# -- non-streaming -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_streaming_answers() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, httpx2.AsyncClient() as client:
        openai_response = await client.post(
            server.url + "/v1/chat/completions", json=openai_body(stream=False)
        )
        anthropic_response = await client.post(
            server.url + "/v1/messages", json=anthropic_body(stream=False)
        )
    assert openai_response.headers["content-type"] == "application/json"
    completion = openai_response.json()
    assert completion["object"] == "chat.completion"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == ANSWER
    message = anthropic_response.json()
    assert message["content"][0]["type"] == "tool_use"
    assert message["content"][0]["input"] == ANSWER
    assert message["stop_reason"] == "tool_use"


@pytest.mark.anyio
async def test_non_streaming_faults() -> None:
    scripts = [
        Script(items=USERS, truncate_after=10),
        Script(items=USERS, error_after=10),
        Script(items=USERS, error_after=10),
        Script(items=USERS, stall_after=10),
    ]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        url = server.url + "/v1/chat/completions"
        truncated = (await client.post(url, json=openai_body(stream=False))).json()
        failed = await client.post(url, json=openai_body(stream=False))
        overloaded = await client.post(server.url + "/v1/messages", json=anthropic_body())
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(url, json=openai_body(stream=False), timeout=0.2)
        await server.wait_disconnect(timeout=5)
    choice = truncated["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == json.dumps(ANSWER)[:10]
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error"
    assert overloaded.status_code == 200  # a stream: the error comes as an event
    assert parse_sse(overloaded.text)[-1][0] == "error"
    assert server.requests[-1].disconnected


@pytest.mark.anyio
async def test_connection_close_is_honoured() -> None:
    body = json.dumps(anthropic_body(stream=False)).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    async with ScriptedModelServer(Script(items=USERS)) as server:
        sock = await anyio.connect_tcp("127.0.0.1", server.port)
        async with sock:
            await sock.send(request)
            with anyio.fail_after(5):
                try:
                    while True:
                        received += await sock.receive()
                except anyio.EndOfStream:
                    pass
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close" in head
    assert json.loads(payload)["content"][0]["input"] == ANSWER
    assert server.requests[0].completed


# -- the real SDKs -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_sdk_streams_a_tool_call_and_parses_a_completion() -> None:
    openai = pytest.importorskip("openai")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                tools=OPENAI_TOOLS,
                tool_choice={"type": "function", "function": {"name": "Tasks"}},
                stream=True,
                stream_options={"include_usage": True},
            )
            arguments, finish, usage = "", None, None
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    for call in choice.delta.tool_calls or []:
                        arguments += call.function.arguments or ""
            assert json.loads(arguments) == ANSWER
            assert finish == "tool_calls"
            assert usage is not None
            assert usage.completion_tokens > 0

            completion = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, tools=OPENAI_TOOLS
            )
            call = completion.choices[0].message.tool_calls[0]
            assert call.function.name == "Tasks"
            assert json.loads(call.function.arguments) == ANSWER
        finally:
            await client.close()
    assert server.requests[0].headers["authorization"] == "Bearer test"


@pytest.mark.anyio
async def test_openai_sdk_retries_after_429_and_raises_mid_stream_errors() -> None:
    openai = pytest.importorskip("openai")
    scripts = [
        Script(status=429, retry_after=0.01),
        Script(items=USERS),
        Script(items=USERS, error_after=8),
    ]
    async with ScriptedModelServer(scripts) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=2)
        try:
            completion = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, response_format={"type": "json_object"}
            )
            assert json.loads(completion.choices[0].message.content) == ANSWER
            assert len(server.requests) == 2
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, tools=OPENAI_TOOLS, stream=True
            )
            with pytest.raises(openai.APIError, match="server had an error"):
                async for _ in stream:
                    pass
        finally:
            await client.close()


@pytest.mark.anyio
async def test_anthropic_sdk_streams_and_creates() -> None:
    anthropic = pytest.importorskip("anthropic")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
        try:
            async with client.messages.stream(
                model="claude-sonnet-4-20250514",
                max_tokens=1024,
                messages=MESSAGES,
                tools=ANTHROPIC_TOOLS,
                tool_choice={"type": "tool", "name": "Tasks"},
            ) as stream:
                partial = ""
                async for event in stream:
                    if event.type == "input_json":
                        partial += event.partial_json
                message = await stream.get_final_message()
            assert json.loads(partial) == ANSWER
            assert message.stop_reason == "tool_use"
            assert message.content[0].type == "tool_use"
            assert message.content[0].input == ANSWER

            created = await client.messages.create(
                model="claude-sonnet-4-20250514", max_tokens=1024, messages=MESSAGES
            )
            assert created.content[0].type == "text"
            assert json.loads(created.content[0].text) == ANSWER
        finally:
            await client.close()
    assert server.requests[0].headers["anthropic-version"]


@pytest.mark.anyio
async def test_anthropic_sdk_sees_overloaded_status() -> None:
    anthropic = pytest.importorskip("anthropic")
    async with ScriptedModelServer(Script(status=529)) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
        try:
            with pytest.raises(anthropic.APIStatusError) as caught:
                await client.messages.create(
                    model="claude-sonnet-4-20250514", max_tokens=10, messages=MESSAGES
                )
        finally:
            await client.close()
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


# -- sans-IO pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_stream_plan_reassembles_the_answer(provider: _wire.Provider, chunk_size: int) -> None:
    script = Script(items=[{"name": "Zoë", "tags": ["a", "b"]}], chunk_size=chunk_size)
    body = openai_body() if provider == "openai" else anthropic_body()
    plan = _wire.stream_plan(provider, body, script, ids=_wire.Ids(seed=1), now=0)
    again = _wire.stream_plan(provider, body, script, ids=_wire.Ids(seed=1), now=0)
    assert plan.body == again.body  # deterministic given the ids and the clock
    assert plan.ending == "end"
    events = [json.loads(d) for _, d in parse_sse(plan.body.decode()) if d != "[DONE]"]
    text = (
        openai_arguments(events) if provider == "openai" else anthropic_partial(plan.body.decode())
    )
    assert text == script.answer
    assert all(chunk.data.endswith(b"\n\n") for chunk in plan.chunks)


def test_script_cut_precedence_and_validation() -> None:
    script = Script(text="abcdefgh", truncate_after=4, stall_after=4, error_after=6)
    assert script.cut() == ("abcd", Cut.STALL)
    assert Script(text="abcdefgh", drop_after=6, error_after=6).cut() == ("abcdef", Cut.DROP)
    assert Script(text="abc", truncate_after=3).cut() == ("abc", Cut.COMPLETE)
    assert Script(text="abc", truncate_after=2).cut() == ("ab", Cut.TRUNCATE)
    with pytest.raises(ValueError, match="chunk_size"):
        Script(chunk_size=0)
    with pytest.raises(ValueError, match="status"):
        Script(status=42)


def test_request_parser_pipelined_chunked_and_split_anywhere() -> None:
    raw = (
        b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        b'Connection: close\r\n\r\n3\r\n{"a\r\n4;ext=1\r\n": 1\r\n1\r\n}\r\n0\r\n\r\n'
    )
    for split in range(len(raw) + 1):
        parser = RequestParser()
        requests = []
        for part in (raw[:split], raw[split:]):
            parser.feed(part)
            while (request := parser.next_request()) is not None:
                requests.append(request)
        assert [r.path for r in requests] == ["/v1/messages", "/v1/chat/completions"]
        assert requests[0].query == "beta=true"
        assert requests[0].body == b"{}"
        assert requests[0].keep_alive
        assert not requests[1].keep_alive
        assert json.loads(requests[1].body) == {"a": 1}
        assert not parser.has_partial


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n bad: fold\r\n\r\n", 400),
    ],
)
def test_request_parser_rejects_malformed_requests(raw: bytes, status: int) -> None:
    parser = RequestParser()
    parser.feed(raw)
    with pytest.raises(ProtocolError) as caught:
        parser.next_request()
    assert caught.value.status == status


@pytest.mark.anyio
async def test_malformed_request_gets_400_and_close() -> None:
    received = b""
    async with ScriptedModelServer() as server:
        sock = await anyio.connect_tcp("127.0.0.1", server.port)
        async with sock:
            await sock.send(b"NOT HTTP\r\n\r\n")
            with anyio.fail_after(5):
                try:
                    while True:
                        received += await sock.receive()
                except anyio.EndOfStream:
                    pass
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in head
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


# -- command line ------------------------------------------------------------------------------


def test_command_line_serves_until_interrupted(tmp_path: Path) -> None:
    items = tmp_path / "items.json"
    items.write_text(json.dumps(USERS[:2]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "multitask.testing", "--port", "0", "--items", str(items)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = lines[0].split(" on ", 1)[1].strip()
        assert lines[1].strip() == f"OpenAI    base_url={url}/v1"
        assert lines[2].strip() == f"Anthropic base_url={url}"
        response = httpx2.post(url + "/v1/messages", json=anthropic_body(stream=False), timeout=5)
        assert response.json()["content"][0]["input"] == {"tasks": USERS[:2]}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


# -- the other providers' wire formats ---------------------------------------------------------

ITEM_PARAMETERS = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}
# Very different lengths, so interleaved calls complete out of list order.
PARALLEL_USERS = [
    {"name": "Bartholomew Christopherson", "age": 1},
    {"name": "Al", "age": 2},
    {"name": "Cy", "age": 3},
    {"name": "Dorothea", "age": 4},
]
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def gemini_body(**extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "List them."}]}], **extra}


def ollama_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": MESSAGES, **extra}


@pytest.mark.parametrize(
    ("path", "provider", "model"),
    [
        ("/v1/responses", "openai-responses", None),
        ("/responses", "openai-responses", None),
        ("/api/chat", "ollama", None),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini", "gemini-2.5-flash"),
        ("/v1/models/gemini-pro:generateContent", "gemini", "gemini-pro"),
        ("/openai/deployments/my-gpt/chat/completions", "azure", "my-gpt"),
        ("/openai/v1/chat/completions", "azure", None),
    ],
)
def test_routes(path: str, provider: str, model: str | None) -> None:
    assert _wire.route(path) == _wire.Route(provider, model)  # type: ignore[arg-type]
    assert _wire.route(path + "/x") is None


@pytest.mark.anyio
async def test_responses_stream_parses_with_the_openai_sdk() -> None:
    openai = pytest.importorskip("openai")
    tool = {"type": "function", "name": "User", "parameters": ITEM_PARAMETERS, "strict": False}
    scripts = [
        Script(items=USERS),
        Script(items=PARALLEL_USERS, chunk_size=3, interleave=2),
        Script(items=USERS, truncate_after=20),
    ]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0)
        try:
            tasks_tool = {**tool, "name": "Tasks", "parameters": {"type": "object"}}
            async with client.responses.stream(
                model="gpt-4o",
                input="List them.",
                tools=[tasks_tool],
                tool_choice={"type": "function", "name": "Tasks"},
            ) as stream:
                kinds = [event.type async for event in stream]
                final = await stream.get_final_response()
            assert kinds[:3] == [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
            ]
            assert kinds[-1] == "response.completed"
            (call,) = final.output
            assert call.type == "function_call"
            assert call.name == "Tasks"
            assert json.loads(call.arguments) == ANSWER
            assert final.usage is not None
            assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens

            # Interleaved parallel calls: the SDK puts each delta on its own item.
            async with client.responses.stream(
                model="gpt-4o", input="List them.", tools=[tool], tool_choice="required"
            ) as stream:
                async for _ in stream:
                    pass
                final = await stream.get_final_response()
            assert [json.loads(o.arguments) for o in final.output] == PARALLEL_USERS
        finally:
            await client.close()
        response = await http.post(
            server.url + "/v1/responses",
            json={"model": "m", "input": "x", "stream": True},
        )
    events = parse_sse(response.text)
    data = [json.loads(d) for _, d in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert all(name == d["type"] for (name, _), d in zip(events, data, strict=True))
    assert "[DONE]" not in response.text
    assert data[-1]["type"] == "response.incomplete"
    assert data[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    text = "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta")
    assert text == json.dumps(ANSWER)[:20]
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.anyio
async def test_azure_stream_parses_with_the_openai_sdk() -> None:
    openai = pytest.importorskip("openai")
    tool = {"type": "function", "function": {"name": "User", "parameters": ITEM_PARAMETERS}}
    script = Script(items=PARALLEL_USERS, chunk_size=3, interleave=3)
    async with ScriptedModelServer(script) as server:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=server.url, api_key="az-key", api_version="2024-10-21", max_retries=0
        )
        try:
            raw = await client.chat.completions.create(
                model="my-deployment",
                messages=MESSAGES,
                tools=[tool],
                tool_choice="required",
                stream=True,
            )
            chunks = [chunk async for chunk in raw]
            async with client.chat.completions.stream(
                model="my-deployment",
                messages=MESSAGES,
                tools=[tool],
                tool_choice="required",
                stream_options={"include_usage": True},
            ) as stream:
                final = await stream.get_final_completion()
        finally:
            await client.close()
    request = server.requests[0]
    assert request.provider == "azure"
    assert request.model == "my-deployment"
    assert request.headers["api-key"] == "az-key"
    assert request.query == {"api-version": "2024-10-21"}
    # Azure's first chunk: no choices, the prompt's filter results.
    assert chunks[0].choices == []
    assert chunks[0].model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert "content_filter_results" in chunks[1].choices[0].model_extra
    message = final.choices[0].message
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == PARALLEL_USERS
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None


@pytest.mark.anyio
async def test_azure_content_filter_finish_and_sorted_keys() -> None:
    body = openai_body(tools=None, response_format={"type": "json_object"})
    script = Script(items=USERS, truncate_after=10, finish_reason="content_filter")
    async with ScriptedModelServer(script) as server, httpx2.AsyncClient() as client:
        url = server.url + "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        response = await client.post(url, json=body)
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]
    chunks = openai_chunks(response.text)
    for chunk in chunks:
        assert list(chunk) == sorted(chunk)
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "content_filter"
    assert last["content_filter_results"]["sexual"] == {"filtered": True, "severity": "medium"}
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:-1])
    assert content == json.dumps(ANSWER)[:10]


@pytest.mark.anyio
async def test_openai_sdk_accumulates_interleaved_parallel_calls() -> None:
    openai = pytest.importorskip("openai")
    tool = {"type": "function", "function": {"name": "User", "parameters": ITEM_PARAMETERS}}
    script = Script(items=PARALLEL_USERS, chunk_size=2, interleave=2)
    async with ScriptedModelServer(script) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0)
        try:
            async with client.chat.completions.stream(
                model="gpt-4o", messages=MESSAGES, tools=[tool], tool_choice="required"
            ) as stream:
                async for _ in stream:
                    pass
                final = await stream.get_final_completion()
        finally:
            await client.close()
    calls = final.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == PARALLEL_USERS
    assert len({c.id for c in calls}) == len(PARALLEL_USERS)
    plan = _wire.stream_plan("openai", server.requests[0].body, script)
    order = [call for _, call in plan.completions]
    assert sorted(order) == list(range(len(PARALLEL_USERS)))
    assert order != sorted(order)


@pytest.mark.anyio
async def test_anthropic_sdk_reads_parallel_tool_use_blocks_and_refusal() -> None:
    anthropic = pytest.importorskip("anthropic")
    tool = {"name": "User", "input_schema": ITEM_PARAMETERS}
    scripts = [Script(items=PARALLEL_USERS, chunk_size=3), Script(refusal="Not this one.")]
    async with ScriptedModelServer(scripts) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=0)
        try:
            async with client.messages.stream(
                model="claude-sonnet-4-20250514",
                max_tokens=1024,
                messages=MESSAGES,
                tools=[tool],
                tool_choice={"type": "any"},
            ) as stream:
                message = await stream.get_final_message()
            async with client.messages.stream(
                model="claude-sonnet-4-20250514", max_tokens=1024, messages=MESSAGES
            ) as stream:
                refused = await stream.get_final_message()
        finally:
            await client.close()
    assert [block.type for block in message.content] == ["tool_use"] * len(PARALLEL_USERS)
    assert [block.input for block in message.content] == PARALLEL_USERS
    assert message.stop_reason == "tool_use"
    assert refused.stop_reason == "refusal"


@pytest.mark.anyio
async def test_gemini_stream_wire_shape() -> None:
    scripts = [
        Script(items=USERS, chunk_size=16, usage=(12, 34)),
        Script(items=USERS, chunk_size=16, error_after=20),
        Script(status=429, retry_after=7),
    ]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        url = server.url + GEMINI_PATH + "?alt=sse"
        response = await client.post(url, json=gemini_body())
        failed = await client.post(url, json=gemini_body())
        limited = await client.post(url, json=gemini_body())
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text.endswith("}\r\n\r\n")
    lines = [line for line in response.text.split("\r\n\r\n") if line]
    assert all(line.startswith('data: {"candidates": [{"content": {"parts": ') for line in lines)
    chunks = [json.loads(line[len("data: ") :]) for line in lines]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert json.loads(text) == ANSWER
    assert [c["candidates"][0].get("finishReason") for c in chunks[-2:]] == [None, "STOP"]
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] == 12
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 34
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 46
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]
    assert {c["modelVersion"] for c in chunks} == {"gemini-2.5-flash"}
    assert len({c["responseId"] for c in chunks}) == 1
    error = json.loads(failed.text.split("\r\n\r\n")[-2][len("data: ") :])
    assert error == {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/json; charset=UTF-8"
    assert "retry-after" not in limited.headers  # Gemini says it in the body
    assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert limited.json()["error"]["details"][0]["retryDelay"] == "7s"
    assert limited.text.startswith('{\n  "error": {\n')
    assert all(r.stream for r in server.requests)


@pytest.mark.anyio
async def test_gemini_function_calls_and_generate_content() -> None:
    declaration = {"name": "User", "parameters": {"type": "OBJECT", **ITEM_PARAMETERS}}
    tools = [{"functionDeclarations": [declaration]}]
    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["User"]}}
    body = gemini_body(tools=tools, toolConfig=config)
    scripts = [Script(items=PARALLEL_USERS), Script(items=USERS, finish_reason="SAFETY")]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        streamed = await client.post(server.url + GEMINI_PATH + "?alt=sse", json=body)
        whole = await client.post(
            server.url + "/v1beta/models/gemini-2.5-flash:generateContent", json=gemini_body()
        )
    (line,) = [line for line in streamed.text.split("\r\n\r\n") if line]
    candidate = json.loads(line[len("data: ") :])["candidates"][0]
    calls = [part["functionCall"] for part in candidate["content"]["parts"]]
    assert calls == [{"name": "User", "args": user} for user in PARALLEL_USERS]
    assert candidate["finishReason"] == "STOP"
    assert not server.requests[1].stream
    answer = whole.json()["candidates"][0]
    assert answer["finishReason"] == "SAFETY"
    assert any(rating.get("blocked") for rating in answer["safetyRatings"])


@pytest.mark.anyio
async def test_ollama_ndjson_wire_shape() -> None:
    items = [{"name": "A <b> & c", "age": 1}]
    scripts = [
        Script(items=items, chunk_size=5, usage=(3, 4)),
        Script(items=items, error_after=6),
        Script(items=items, truncate_after=8),
        Script(status=404),
    ]
    async with ScriptedModelServer(scripts) as server, httpx2.AsyncClient() as client:
        url = server.url + "/api/chat"
        response = await client.post(url, json=ollama_body())
        failed = await client.post(url, json=ollama_body())
        whole = await client.post(url, json=ollama_body(stream=False))
        missing = await client.post(url, json=ollama_body())
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("}\n")
    lines = response.text.splitlines()
    for char, escape in [("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")]:
        assert char not in response.text  # Go's HTML-safe escapes
        assert escape in response.text
    data = [json.loads(line) for line in lines]
    assert all(list(d)[:3] == ["model", "created_at", "message"] for d in data)
    assert all(d["created_at"].endswith("Z") for d in data)
    content = "".join(d["message"]["content"] for d in data)
    assert json.loads(content) == {"tasks": items}
    assert [d["done"] for d in data] == [False] * (len(data) - 1) + [True]
    final = data[-1]
    assert list(final)[3:5] == ["done_reason", "done"]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == ("stop", 3, 4)
    assert json.loads(failed.text.splitlines()[-1]) == {
        "error": "an error was encountered while running the model: unexpected EOF"
    }
    assert whole.headers["content-type"] == "application/json; charset=utf-8"
    assert whole.json()["done_reason"] == "length"
    assert whole.json()["message"]["content"] == json.dumps({"tasks": items})[:8]
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "llama3.2" not found, try pulling it first'}
    assert [r.stream for r in server.requests] == [True, True, False, True]


def chat_calls(plan: _wire.StreamPlan) -> list[dict[str, Any]]:
    """Every tool-call delta of a chat stream plan, in order."""
    events = [d for _, d in parse_sse(plan.body.decode()) if d != "[DONE]"]
    return [
        call
        for chunk in map(json.loads, events)
        for choice in chunk.get("choices") or []
        for call in choice["delta"].get("tool_calls") or []
    ]


def test_compatible_quirks_render_as_the_servers_send_them() -> None:
    body = openai_body(tool_choice={"type": "function", "function": {"name": "Tasks"}})

    def plan(*quirks: str) -> _wire.StreamPlan:
        script = Script(items=USERS, chunk_size=8, quirks=frozenset(quirks))
        return _wire.stream_plan("openai", body, script, ids=_wire.Ids(seed=2), now=0)

    calls = chat_calls(plan("no_index"))
    assert all("index" not in call for call in calls)
    calls = chat_calls(plan("id_every_chunk"))
    assert len({call["id"] for call in calls}) == 1
    assert all("index" in call for call in calls)
    (whole,) = chat_calls(plan("whole_arguments"))
    assert json.loads(whole["function"]["arguments"]) == ANSWER
    text = plan("keep_alive").body.decode()
    assert text.startswith(": keep-alive\n\ndata: ")
    assert text.count(": keep-alive\n\n") == text.count("data: ")
    chunks = openai_chunks(plan("usage_in_last_chunk").body.decode())
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    chunks = openai_chunks(plan("reasoning_content").body.decode())
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "",
    }
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert reasoning == _wire_chat.REASONING
    chunks = openai_chunks(plan("content_with_tool_calls_finish").body.decode())
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(content) == ANSWER
    assert not chat_calls(plan("content_with_tool_calls_finish"))
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_refusal_stream_matches_the_capture(wire: Path) -> None:
    script = Script(refusal="I'm sorry, I can't help with that.", chunk_size=6)
    plan = _wire.stream_plan("openai", openai_body(tools=None), script)
    chunks = openai_chunks(plan.body.decode())
    capture = openai_chunks((wire / "openai" / "chat__173417d5.sse").read_text())
    assert chunks[0]["choices"][0]["delta"] == capture[0]["choices"][0]["delta"]
    assert shape(chunks[1]) == shape(capture[1])
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks if c["choices"])
    assert refusal == script.refusal
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_anthropic_refusal_matches_the_capture(wire: Path) -> None:
    plan = _wire.stream_plan("anthropic", anthropic_body(tools=None), Script(refusal="No."))
    events = parse_sse(plan.body.decode())
    capture = parse_sse((wire / "anthropic" / "refusal_response.sse").read_text())
    names = [name for name, _ in events if name != "ping"]
    assert names == [name for name, _ in capture]
    delta = json.loads(events[-2][1])
    assert shape(delta) == shape(json.loads(capture[-2][1]))
    assert delta["delta"]["stop_reason"] == "refusal"
    assert delta["delta"]["stop_details"]["explanation"] == "No."


@pytest.mark.parametrize("width", [1, 2, 3, 5])
@pytest.mark.parametrize("cut", [None, 0, 7, 30, 1000])
def test_call_steps_schedule(width: int, cut: int | None) -> None:
    script = Script(items=PARALLEL_USERS, chunk_size=3, truncate_after=cut)
    texts = script.calls
    steps, kind = call_steps(texts, script, width=width)
    budget = sum(map(len, texts)) if cut is None else min(cut, sum(map(len, texts)))
    assert sum(len(s.piece or "") for s in steps) == budget
    opened: set[int] = set()
    sent = [""] * len(texts)
    for step in steps:
        if step.piece is None:
            assert step.call not in opened
            opened.add(step.call)
        else:
            assert step.call in opened  # opened before its first delta
            sent[step.call] += step.piece
        open_now = {c for c in opened if sent[c] != texts[c]}
        assert len(open_now) <= width
        assert step.done == (sent[step.call] == texts[step.call])
    for text, part in zip(texts, sent, strict=True):
        assert text.startswith(part)
    assert kind == (Cut.COMPLETE if cut is None or cut >= sum(map(len, texts)) else Cut.TRUNCATE)
    if width == 1 and cut is None:
        assert [s.call for s in steps if s.done] == list(range(len(texts)))


def test_script_validates_the_new_options() -> None:
    with pytest.raises(ValueError, match="unknown quirks"):
        Script(quirks=frozenset({"no_such_quirk"}))
    with pytest.raises(ValueError, match="interleave"):
        Script(interleave=0)
    with pytest.raises(ValueError, match="usage"):
        Script(usage=(-1, 2))
    assert Script(quirks={"keep_alive"}).quirks == frozenset({"keep_alive"})  # type: ignore[arg-type]
    assert Script(text="raw").calls == ["raw"]
    assert Script(items=[1, {"a": 2}]).calls == ["1", '{"a": 2}']
