"""A newcomer's mistakes: each is one line, said as early as it can be known, never retried.

A missing key, an unknown provider, a mode the provider lacks, a base URL with no scheme, a
model string without its provider, an option typo or a value of the wrong type: each is a
`ConfigurationError` (a `MultitaskError` and a `ValueError`) raised by `Client()` or by the call
itself, once for a whole `extract_many`. Over real HTTP (the scripted server, a hostile one).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import BaseModel

import multitask
from multitask.providers import Anthropic, OpenAIChat
from multitask.testing import HostileServer, Reply, Script, ScriptedModelServer

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-0123456789"
USERS = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]


class User(BaseModel):
    name: str
    age: int


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "MULTITASK_MODEL"):
        monkeypatch.delenv(name, raising=False)


async def drain(many: AbstractAsyncContextManager[multitask.Results[Any]]) -> list[Any]:
    """Every result of an `extract_many`."""
    async with many as results:
        return [r async for r in results]


# -- the class ---------------------------------------------------------------------------------


def test_configuration_error_is_a_multitask_error_and_a_value_error() -> None:
    assert issubclass(multitask.ConfigurationError, multitask.MultitaskError)
    assert issubclass(multitask.ConfigurationError, ValueError)
    assert "ConfigurationError" in multitask.__all__


# -- at Client() -------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("args", "kwargs", "said"),
    [
        ((), {}, "no model"),
        (("openai:gpt-4o-mini",), {}, "no API key for 'openai': set OPENAI_API_KEY"),
        (
            ("opnai:gpt-4o-mini",),
            {"api_key": KEY},
            "unknown provider 'opnai' (did you mean 'openai'?)",
        ),
        (
            ("anthropic:claude",),
            {"api_key": KEY, "mode": "functions"},
            "does not support mode 'functions'",
        ),
        (
            ("openai:gpt-4o-mini",),
            {"api_key": KEY, "base_url": "127.0.0.1:8765/v1"},
            "did you mean 'http://127.0.0.1:8765/v1'?",
        ),
        (
            ("openai:m",),
            {"api_key": KEY, "base_url": "localhost:8765/v1"},
            "needs http:// or https://",
        ),
        (("openai:m",), {"api_key": KEY, "base_url": "ftp://example.com/v1"}, "needs http://"),
        (("azure:deployment",), {}, "no Azure OpenAI endpoint"),
    ],
)
def test_client_refuses_what_no_request_could_get_past(
    args: tuple[str, ...], kwargs: dict[str, Any], said: str
) -> None:
    with pytest.raises(multitask.ConfigurationError) as caught:
        multitask.Client(*args, **kwargs)
    assert said in one_line(caught.value)


def test_a_bad_base_url_from_the_environment_is_refused_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "127.0.0.1:8765/v1")
    with pytest.raises(multitask.ConfigurationError, match=re.escape("http://127.0.0.1:8765/v1")):
        multitask.Client("openai:m", api_key=KEY)


def test_a_provider_given_is_checked_as_one_looked_up() -> None:
    with pytest.raises(multitask.ConfigurationError, match="needs http"):
        multitask.Client("openai:m", provider=OpenAIChat(base_url="127.0.0.1:1/v1", api_key=KEY))
    with pytest.raises(multitask.ConfigurationError, match="does not support mode"):
        multitask.Client("x:m", provider=Anthropic(api_key=KEY), mode="json_schema")


def test_a_callers_http_client_may_speak_another_scheme() -> None:
    """A caller's transport may mount schemes of its own: only a URL with none is refused."""
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(500)))
    client = multitask.Client("openai:m", base_url="unix://api/v1", api_key=KEY, http_client=http)
    assert client.provider.base_url == "unix://api/v1"
    with pytest.raises(multitask.ConfigurationError):
        multitask.Client("openai:m", base_url="api/v1", api_key=KEY, http_client=http)


def test_keyless_local_servers_need_no_key(no_env: None) -> None:
    client = multitask.Client("llamacpp:any")  # key_required=False, at its default base_url
    assert client.provider.base_url == "http://localhost:8080/v1"
    multitask.Client("openai:m", base_url="http://127.0.0.1:1/v1")  # a custom URL: no key needed


def test_a_mode_given_per_call_is_refused_at_the_call() -> None:
    client = multitask.Client("anthropic:claude", api_key=KEY)
    with pytest.raises(
        multitask.ConfigurationError, match="it supports json, parallel_tools, tools"
    ):
        client.extract_stream(User, "text", mode="functions")


# -- model strings -----------------------------------------------------------------------------


async def test_space_around_the_model_name_is_not_sent() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "openai: gpt-4o ", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            assert await client.extract(User, "text") == [User(**u) for u in USERS]
    assert server.requests[0].body["model"] == "gpt-4o"
    assert client.model == "openai:gpt-4o"


@pytest.mark.parametrize(
    ("model", "provider", "name"),
    [
        ("OpenAI:gpt-4o-mini", "openai", "gpt-4o-mini"),
        (" Anthropic : claude-3-5-haiku", "anthropic", "claude-3-5-haiku"),
        ("openrouter:openai/gpt-4o-mini", "openrouter", "openai/gpt-4o-mini"),  # a real name
        ("ollama:llama3.2:3b", "ollama", "llama3.2:3b"),
    ],
)
def test_unambiguous_model_strings_are_normalised(model: str, provider: str, name: str) -> None:
    client = multitask.Client(model, api_key=KEY)
    assert (client.provider.name, client.model_name) == (provider, name)
    assert client.model == f"{provider}:{name}"


@pytest.mark.parametrize(
    ("model", "suggested"),
    [
        ("gpt-4o-mini", "openai:gpt-4o-mini"),
        ("openai/gpt-4o-mini", "openai:gpt-4o-mini"),
        ("OpenAI/gpt-4o-mini", "openai:gpt-4o-mini"),
        ("claude-3-5-haiku-latest", "anthropic:claude-3-5-haiku-latest"),
        ("gemini-2.0-flash", "gemini:gemini-2.0-flash"),
    ],
)
def test_a_model_without_its_provider_gets_a_suggestion(model: str, suggested: str) -> None:
    with pytest.raises(multitask.ConfigurationError) as caught:
        multitask.Client(model, api_key=KEY)
    assert f"did you mean {suggested!r}?" in one_line(caught.value)


@pytest.mark.parametrize("model", ["meta-llama/Llama-3.1-8B", "mystery", ":gpt-4o", "openai:"])
def test_no_guess_where_there_is_nothing_to_go_on(model: str) -> None:
    with pytest.raises(multitask.ConfigurationError, match="provider:model_name") as caught:
        multitask.Client(model, api_key=KEY)
    assert "did you mean" not in one_line(caught.value)


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"modd": "json"}, "unknown option 'modd' (did you mean 'mode'?)"),
        ({"max_retry": 3}, "(did you mean 'max_retries'?)"),
        ({"api_ky": "k"}, "(did you mean 'api_key'?)"),
        ({"timeout": "5"}, "option 'timeout' must be a number or httpx2.Timeout or None, not str"),
        ({"max_retries": 2.5}, "option 'max_retries' must be an integer, not float"),
        ({"max_retries": True}, "option 'max_retries' must be an integer, not bool"),
        ({"mode": "tool"}, "option 'mode' must be one of 'tools'"),
        ({"on_invalid": "ignore"}, "one of 'raise', 'skip'"),
        ({"messages": "hello"}, "option 'messages' must be Sequence or None, not str"),
        ({"extra_body": [1]}, "option 'extra_body' must be Mapping or None"),
    ],
)
def test_options_are_checked_where_they_are_given(options: dict[str, Any], said: str) -> None:
    with pytest.raises(multitask.ConfigurationError) as caught:
        multitask.Client("openai:m", api_key=KEY, **options)
    assert said in one_line(caught.value)
    if said.startswith("unknown"):
        assert "the options are: mode, system, messages" in str(caught.value)
    client = multitask.Client("openai:m", api_key=KEY)
    with pytest.raises(multitask.ConfigurationError) as per_call:
        client.extract_stream(User, "text", **options)
    assert said in str(per_call.value)


def test_good_options_pass() -> None:
    client = multitask.Client(
        "openai:m", api_key=KEY, timeout=5, deadline=30, temperature=0, max_tokens=100
    )
    assert client.options.timeout == 5
    stream = client.extract_stream(
        User, "t", timeout=httpx2.Timeout(3.0), messages=({"role": "user", "content": "x"},)
    )
    assert stream.info.attempts == 0


# -- once for many documents -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"mode": "functions"}, {"modd": "json"}, {"timeout": "5"}], ids=str
)
async def test_extract_many_raises_a_configuration_error_once(options: dict[str, Any]) -> None:
    started = 0

    def documents() -> Iterator[str]:
        nonlocal started
        for i in range(1000):
            started += 1
            yield f"doc{i}"

    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "anthropic:claude", base_url=server.anthropic_base_url, api_key=KEY
        ) as client:
            many = client.extract_many(User, documents(), **options)
            with pytest.raises(multitask.ConfigurationError):
                await many.__aenter__()
    assert started == 0
    assert server.requests == []


async def test_a_url_that_cannot_be_sent_to_is_not_retried() -> None:
    """Past `Client()` (a provider changed after), an unusable URL fails at once, unretried."""
    client = multitask.Client("openai:m", base_url="http://127.0.0.1:9/v1", api_key=KEY)
    client.provider.base_url = "ftp://127.0.0.1:9/v1"
    async with client:
        start = anyio.current_time()
        stream = client.extract_stream(User, "text", max_retries=5)
        with pytest.raises(multitask.ConfigurationError, match="not usable"):
            await stream.collect()
    assert stream.info.attempts == 1
    assert anyio.current_time() - start < 0.5


async def test_a_configuration_error_found_by_a_worker_stops_the_batch_once() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        client = multitask.Client("openai:m", base_url=server.openai_base_url, api_key=KEY)
        client.provider.base_url = "ftp://127.0.0.1:9/v1"  # past the checks of `Client()`
        read = 0

        def documents() -> Iterator[str]:
            nonlocal read
            for i in range(1000):
                read += 1
                yield f"doc{i}"

        async with client:
            with pytest.raises(multitask.ConfigurationError, match="not usable"):
                await drain(client.extract_many(User, documents(), max_concurrency=2))
    assert read <= 4  # not a thousand failed results


# -- what the server says ----------------------------------------------------------------------


async def test_broken_http_framing_is_said_as_such() -> None:
    reply = Reply(body=[b": keep-alive\n\n"], tail=b"zz\r\n", then="close")
    async with HostileServer(reply) as server:
        async with multitask.Client(
            "openai:m", base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY
        ) as client:
            with pytest.raises(multitask.APIConnectionError) as caught:
                await client.extract(User, "text", max_retries=0)
    message = one_line(caught.value)
    assert message.startswith("the server broke HTTP framing: ")
    assert "invalid chunk size line" in message
    assert "dropped" not in message


async def test_a_connection_closed_early_is_said_as_a_drop_not_as_framing() -> None:
    reply = Reply(body=[b": keep-alive\n\n"], then="close")  # no final chunk
    async with HostileServer(reply) as server:
        async with multitask.Client(
            "openai:m", base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY
        ) as client:
            with pytest.raises(multitask.APIConnectionError) as caught:
                await client.extract(User, "text", max_retries=0)
    message = one_line(caught.value)
    assert message.startswith("the connection dropped mid-response: the server closed")
    assert "framing" not in message


async def test_a_404_names_the_request_and_hints_at_v1() -> None:
    async with ScriptedModelServer(Script(status=404)) as server:
        url = server.url
        async with multitask.Client("openai:m", base_url=url, api_key=KEY) as client:  # no /v1
            with pytest.raises(multitask.APIStatusError) as caught:
                await client.extract(User, "text")
    message = one_line(caught.value)
    assert caught.value.status_code == 404
    assert message.startswith("openai answered HTTP 404")
    assert f"(POST {url}/chat/completions; " in message
    assert f"is /v1 missing from base_url? try base_url='{url}/v1')" in message
    assert KEY not in message


async def test_a_404_with_v1_names_the_request_only() -> None:
    async with ScriptedModelServer(Script(status=404)) as server:
        url = server.openai_base_url
        async with multitask.Client("openai:m", base_url=url, api_key=KEY) as client:
            with pytest.raises(multitask.APIStatusError) as caught:
                await client.extract(User, "text")
    message = one_line(caught.value)
    assert f"(POST {url}/chat/completions)" in message
    assert "/v1 missing" not in message


async def test_a_404_from_anthropic_names_the_request_without_the_v1_hint() -> None:
    async with ScriptedModelServer(Script(status=404)) as server:
        url = server.anthropic_base_url
        async with multitask.Client("anthropic:m", base_url=url, api_key=KEY) as client:
            with pytest.raises(multitask.APIStatusError) as caught:
                await client.extract(User, "text")
    message = one_line(caught.value)
    assert f"(POST {url}/v1/messages)" in message
    assert "/v1 missing" not in message


# -- the one-call functions --------------------------------------------------------------------


async def test_one_call_functions_take_headers_provider_and_http_client() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        provider = OpenAIChat(base_url=server.openai_base_url, api_key=KEY)
        async with httpx2.AsyncClient() as http:
            users = await multitask.extract(
                User,
                "text",
                model="openai:m",
                provider=provider,
                http_client=http,
                headers={"x-trace": "one"},
            )
            assert not http.is_closed  # the caller's pool stays the caller's
            stream = multitask.extract_stream(
                User,
                "text",
                model="openai:m",
                base_url=server.openai_base_url,
                api_key=KEY,
                headers={"x-trace": "two"},
                http_client=http,
            )
            assert [u async for u in stream] == users
    assert users == [User(**u) for u in USERS]
    assert [r.headers.get("x-trace") for r in server.requests] == ["one", "two"]


def test_sync_one_call_functions_take_headers_and_provider() -> None:
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(Script(items=USERS))) as server,
    ):
        provider = OpenAIChat(base_url=server.openai_base_url, api_key=KEY)
        users = multitask.extract_sync(
            User, "text", model="openai:m", provider=provider, headers={"x-trace": "sync"}
        )
        results = list(
            multitask.extract_many_sync(
                User, ["a", "b"], model="openai:m", provider=provider, headers={"x-trace": "many"}
            )
        )
    assert users == [User(**u) for u in USERS]
    assert sum(r.done for r in results) == 2
    traces = sorted(r.headers.get("x-trace") or "" for r in server.requests)
    assert traces == ["many", "many", "sync"]


# -- documents ---------------------------------------------------------------------------------


async def test_a_document_that_is_not_a_text_is_a_type_error_naming_it() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            ended: list[Any] = []
            with pytest.raises(TypeError, match=r"^document 2 is of type bytes: expected a text"):
                async with client.extract_many(
                    User, ["a", "b", b"c", "d"], max_concurrency=1
                ) as results:
                    ended += [r.index async for r in results if r.done]
    assert sorted(ended) == [0, 1]  # the documents before it ended as they would


async def test_an_error_of_the_callers_iterable_comes_out_as_itself() -> None:
    async def documents() -> AsyncIterator[str]:
        yield "a"
        raise LookupError("the database went away")

    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            with pytest.raises(LookupError, match="database"):
                await drain(client.extract_many(User, documents()))


async def test_a_mapping_of_documents_is_read_as_key_and_text() -> None:
    """`{id: text}` is what a user holds; the key comes back as each `Result.index`."""
    documents = {"alpha": "text a", "beta": "text b"}
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            async with client.extract_many(User, documents) as results:
                events = [r async for r in results]
    assert {r.index for r in events} == {"alpha", "beta"}
    texts = sorted(r.body["messages"][-1]["content"] for r in server.requests)
    assert texts == ["text a", "text b"]
    with pytest.raises(
        TypeError, match=r"document 0 \(key 'k'\) is not a text: its value is of type int$"
    ):
        await drain(client.extract_many(User, {"k": 1}))  # type: ignore[arg-type]


# -- providers ---------------------------------------------------------------------------------


def test_a_built_in_provider_is_not_replaced_by_accident() -> None:
    for name in ("openai", "anthropic", "vllm"):
        with pytest.raises(multitask.ConfigurationError, match="built-in provider"):
            multitask.register_openai_compatible(name, base_url="http://127.0.0.1:1/v1")
    assert (
        multitask.Client("openai:m", api_key=KEY).provider.base_url == "https://api.openai.com/v1"
    )


def test_a_built_in_provider_is_replaced_on_purpose() -> None:
    from multitask._providers._provider import _REGISTRY

    saved = _REGISTRY["groq"]
    try:
        multitask.register_openai_compatible(
            "groq", base_url="http://127.0.0.1:1/v1", key_required=False, replace=True
        )
        assert multitask.Client("groq:m").provider.base_url == "http://127.0.0.1:1/v1"
    finally:
        _REGISTRY["groq"] = saved


def test_a_name_of_ones_own_may_be_registered_again() -> None:
    """Re-running a notebook cell registers the same name twice: that is not an accident."""
    for port in (1, 2):
        multitask.register_openai_compatible(
            "mine-test", base_url=f"http://127.0.0.1:{port}/v1", key_required=False
        )
    assert multitask.Client("mine-test:m").provider.base_url == "http://127.0.0.1:2/v1"


# -- what a user sees --------------------------------------------------------------------------


async def test_item_stream_repr_says_what_and_how_far() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key=KEY
        ) as client:
            stream = client.extract_stream(User, "text")
            assert repr(stream) == (
                "<ItemStream[User] model='openai:m' not started items=0 attempts=0>"
            )
            async with stream:
                await stream.__anext__()
                assert re.fullmatch(
                    r"<ItemStream\[User\] model='openai:m' streaming items=\d attempts=1>",
                    repr(stream),
                )
            assert repr(stream).endswith("ended items=1 attempts=1>")  # closed after one
            events = client.extract_events(User | int, "text")
            assert repr(events).startswith("<EventStream[UserOrint] model='openai:m' not started")
            await events.aclose()
            one_call = multitask.extract_stream(
                str, "t", model="openai:m", base_url=server.openai_base_url, api_key=KEY
            )
            assert repr(one_call).startswith("<ItemStream[str] model='openai:m'")
            await one_call.aclose()


async def test_recorded_request_repr_hides_the_credentials() -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        for model, base_url in (
            ("openai:m", server.openai_base_url),
            ("anthropic:m", server.anthropic_base_url),
        ):
            async with multitask.Client(model, base_url=base_url, api_key=KEY) as client:
                await client.extract(User, "text")
    for request in server.requests:
        shown = repr(request)
        assert KEY not in shown
        assert "[redacted]" in shown
        assert KEY in str(request.headers)  # the record itself keeps them, for the tests
    assert "'authorization': '[redacted]'" in repr(server.requests[0])
    assert "'x-api-key': '[redacted]'" in repr(server.requests[1])
    assert repr(server.requests[0]).startswith("RecordedRequest(method='POST', path='/v1/")


def test_multitask_of_str_is_named_in_camel_case() -> None:
    assert multitask.MultiTask(str).__name__ == "MultiStr"
    assert multitask.MultiTask(int).__name__ == "MultiInt"
    assert multitask.MultiTask(User).__name__ == "MultiUser"
    assert multitask.MultiTask(str).task_name == "str"  # the prompt still says `str`
