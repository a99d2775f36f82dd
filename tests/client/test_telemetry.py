"""Tracing: the spans an extraction makes, read back from the OpenTelemetry SDK's in-memory
exporter, against the scripted server over real sockets, on asyncio, uvloop and trio.

Each test has a `TracerProvider` of its own, given to the client (`tracer_provider=`): the
global provider is never set here (it can be set once per process), so nothing leaks from
one test to the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import multitask
from multitask.testing import ReadingModel, Script, ScriptedModelServer

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs opentelemetry-sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

pytestmark = pytest.mark.anyio

KEY = "sk-test-SECRET-0123456789abcdef"
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TEXT = "Our users: user0 (20), user1 (21) and the rest; a confidential sentence."


class User(BaseModel):
    name: str
    age: int


USERS = [{"name": f"user{i}", "age": 20 + i} for i in range(6)]


class Mention(BaseModel):
    quote: multitask.Quote


class Tracing:
    """A tracer provider of one test's own, and the spans it finished."""

    def __init__(self) -> None:
        self.provider = TracerProvider()
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def extraction(self) -> ReadableSpan:
        (span,) = self.named("extract ")
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        parent_id = parent.context.span_id
        found = [s for s in self.spans if s.parent is not None and s.parent.span_id == parent_id]
        return sorted(found, key=lambda s: s.start_time or 0)

    def dump(self) -> str:
        """Everything the spans say (names, attributes, events, statuses), as one text."""
        return "\n".join(s.to_json() for s in self.spans)


@pytest.fixture(autouse=True)
def _no_content_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONTENT_ENV, raising=False)


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    found = Tracing()
    yield found
    found.provider.shutdown()


def openai(server: ScriptedModelServer, tracing: Tracing, **options: Any) -> multitask.Client:
    return multitask.Client(
        "openai:gpt-test",
        base_url=server.openai_base_url,
        api_key=KEY,
        tracer_provider=tracing.provider,
        **options,
    )


def anthropic(server: ScriptedModelServer, tracing: Tracing, **options: Any) -> multitask.Client:
    return multitask.Client(
        "anthropic:claude-test",
        base_url=server.anthropic_base_url,
        api_key=KEY,
        tracer_provider=tracing.provider,
        **options,
    )


def gemini(server: ScriptedModelServer, tracing: Tracing, **options: Any) -> multitask.Client:
    return multitask.Client(
        "gemini:gemini-test",
        base_url=server.url,
        api_key=KEY,
        tracer_provider=tracing.provider,
        **options,
    )


# -- one extraction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "provider", "operation"),
    [
        (openai, "openai", "chat"),
        (anthropic, "anthropic", "chat"),
        (gemini, "gcp.gemini", "generate_content"),
    ],
)
async def test_an_extraction_is_a_span_with_its_request_under_it(
    tracing: Tracing, make: Any, provider: str, operation: str
) -> None:
    script = Script(items=USERS, usage=(123, 45))
    async with ScriptedModelServer(script) as server, make(server, tracing) as client:
        stream = client.extract_stream(User, TEXT, max_tokens=500, temperature=0.25)
        async with stream:
            got = [user async for user in stream]
        port = server.port
    assert len(got) == 6
    extraction = tracing.extraction()
    model = client.model_name
    assert extraction.name == f"extract {model}"
    assert extraction.kind is SpanKind.INTERNAL
    assert extraction.parent is None  # no span was current
    assert extraction.status.status_code is StatusCode.UNSET
    attrs = dict(extraction.attributes or {})
    assert attrs["gen_ai.operation.name"] == "extract"
    assert attrs["gen_ai.provider.name"] == provider
    assert attrs["gen_ai.request.model"] == model
    assert attrs["multitask.item_type"] == "User"
    assert attrs["multitask.items"] == 6
    assert attrs["multitask.requests"] == 1
    assert attrs["multitask.retries"] == 0
    assert attrs["multitask.skipped"] == 0
    # The totals under multitask.*: gen_ai.usage.* is on the request spans alone, so that a
    # backend adding up the GenAI spans' tokens counts each once.
    assert attrs["multitask.usage.input_tokens"] == 123
    assert attrs["multitask.usage.output_tokens"] == 45
    assert "gen_ai.usage.input_tokens" not in attrs

    (request,) = tracing.children(extraction)
    assert request.name == f"{operation} {model}"
    assert request.kind is SpanKind.CLIENT
    assert request.status.status_code is StatusCode.UNSET
    assert request.context.trace_id == extraction.context.trace_id
    attrs = dict(request.attributes or {})
    assert attrs["gen_ai.operation.name"] == operation
    assert attrs["gen_ai.provider.name"] == provider
    assert attrs["gen_ai.request.model"] == model
    assert attrs["gen_ai.request.max_tokens"] == 500
    assert attrs["gen_ai.request.temperature"] == 0.25
    assert attrs["gen_ai.output.type"] == "json"
    assert attrs["gen_ai.usage.input_tokens"] == 123
    assert attrs["gen_ai.usage.output_tokens"] == 45
    assert attrs["gen_ai.response.finish_reasons"] == (stream.finish_reason,)
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == port
    assert attrs["http.response.status_code"] == 200
    assert attrs["multitask.attempt"] == 1
    assert attrs["multitask.items"] == 6
    assert len(tracing.spans) == 2


async def test_the_span_current_where_the_stream_is_read_is_the_parent(tracing: Tracing) -> None:
    tracer = tracing.provider.get_tracer("the-app")
    async with ScriptedModelServer(Script(items=USERS)) as server, openai(server, tracing) as c:
        with tracer.start_as_current_span("job") as job:
            got = [user async for user in c.extract_stream(User, TEXT)]
            # Nothing of ours was left current: the caller's span is still the current one.
            from opentelemetry import trace

            assert trace.get_current_span() is job
            assert await c.extract(User, TEXT) == got
    (job_span,) = tracing.named("job")
    extractions = tracing.named("extract ")
    assert len(extractions) == 2
    for extraction in extractions:
        assert extraction.parent is not None
        assert extraction.parent.span_id == job_span.context.span_id
        assert len(tracing.children(extraction)) == 1


async def test_a_retried_request_is_two_request_spans_and_a_retry_event(tracing: Tracing) -> None:
    scripts = [Script(status=500, retry_after=0.01), Script(items=USERS, usage=(10, 20))]
    async with ScriptedModelServer(scripts) as server, openai(server, tracing) as client:
        got = await client.extract(User, TEXT)
    assert len(got) == 6
    extraction = tracing.extraction()
    failed, succeeded = tracing.children(extraction)
    assert failed.attributes is not None
    assert succeeded.attributes is not None
    assert failed.attributes["multitask.attempt"] == 1
    assert failed.attributes["error.type"] == "500"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description is not None
    assert failed.status.description.startswith("APIStatusError: HTTP 500")
    assert succeeded.attributes["multitask.attempt"] == 2
    assert succeeded.status.status_code is StatusCode.UNSET
    assert succeeded.attributes["gen_ai.usage.output_tokens"] == 20
    (event,) = extraction.events
    assert event.name == "multitask.retry"
    assert event.attributes is not None
    assert event.attributes["error.type"] == "500"
    assert event.attributes["multitask.attempt"] == 1
    assert event.attributes["multitask.retry.delay"] == pytest.approx(0.01)
    assert extraction.attributes is not None
    assert extraction.attributes["multitask.requests"] == 2
    assert extraction.attributes["multitask.retries"] == 1
    assert extraction.status.status_code is StatusCode.UNSET


async def test_a_failed_extraction_says_how_on_both_spans(tracing: Tracing) -> None:
    body = {"error": {"message": f"bad request about {TEXT}", "type": "invalid_request_error"}}
    async with (
        ScriptedModelServer(Script(status=400, error_body=body)) as server,
        openai(server, tracing) as client,
    ):
        with pytest.raises(multitask.APIStatusError):
            await client.extract(User, TEXT)
    extraction = tracing.extraction()
    (request,) = tracing.children(extraction)
    for span in (extraction, request):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "400"
        # The error's message may quote the text: with content off, only its kind is said.
        assert span.status.description == "APIStatusError: HTTP 400 (invalid_request_error)"
        assert not span.events
    assert "confidential" not in tracing.dump()


async def test_a_cut_answer_is_an_incomplete_extraction(tracing: Tracing) -> None:
    async with (
        ScriptedModelServer(Script(items=USERS, truncate_after=60)) as server,
        openai(server, tracing) as client,
    ):
        with pytest.raises(multitask.IncompleteOutputError):
            await client.extract(User, TEXT)
    extraction = tracing.extraction()
    assert extraction.attributes is not None
    assert extraction.attributes["error.type"] == "multitask.IncompleteOutputError"
    assert extraction.attributes["multitask.items"] >= 1
    (request,) = tracing.children(extraction)
    assert request.attributes is not None
    assert request.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert request.status.status_code is StatusCode.ERROR


async def test_skipped_items_are_counted(tracing: Tracing) -> None:
    items = [USERS[0], {"name": "bad", "age": "not a number"}, USERS[1]]
    async with ScriptedModelServer(Script(items=items)) as server, openai(server, tracing) as c:
        got = await c.extract(User, TEXT, on_invalid="skip")
    assert len(got) == 2
    attrs = tracing.extraction().attributes or {}
    assert attrs["multitask.items"] == 2
    assert attrs["multitask.skipped"] == 1
    assert "not a number" not in tracing.dump()


# -- streams that end early --------------------------------------------------------------------


async def test_a_stream_left_early_ends_its_spans_as_cancelled(tracing: Tracing) -> None:
    script = Script(items=USERS, tokens_per_second=400)
    async with ScriptedModelServer(script) as server, openai(server, tracing) as client:
        async with client.extract_stream(User, TEXT) as stream:
            async for _ in stream:
                break
    extraction = tracing.extraction()
    (request,) = tracing.children(extraction)
    for span in (extraction, request):
        assert span.end_time is not None
        assert span.attributes is not None
        assert span.attributes["multitask.cancelled"] is True
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
    assert extraction.attributes is not None
    assert extraction.attributes["multitask.items"] == 1


async def test_a_cancelled_stream_ends_its_spans(tracing: Tracing) -> None:
    script = Script(items=USERS, tokens_per_second=50)
    async with ScriptedModelServer(script) as server, openai(server, tracing) as client:
        with anyio.move_on_after(0.3) as scope:
            async with client.extract_stream(User, TEXT) as stream:
                async for _ in stream:
                    pass
        assert scope.cancelled_caught
    extraction = tracing.extraction()
    (request,) = tracing.children(extraction)
    for span in (extraction, request):
        assert span.attributes is not None
        assert span.attributes["multitask.cancelled"] is True


async def test_a_stream_cancelled_in_its_back_off_ends_its_spans(tracing: Tracing) -> None:
    scripts = [Script(status=503, retry_after=30), Script(items=USERS)]
    async with ScriptedModelServer(scripts) as server, openai(server, tracing) as client:
        with anyio.move_on_after(0.5) as scope:
            await client.extract(User, TEXT)
        assert scope.cancelled_caught
    extraction = tracing.extraction()
    assert extraction.attributes is not None
    assert extraction.attributes["multitask.cancelled"] is True
    assert extraction.attributes["multitask.retries"] == 1
    (request,) = tracing.children(extraction)
    assert request.attributes is not None
    assert request.attributes["error.type"] == "503"


async def test_a_stream_never_read_makes_no_span(tracing: Tracing) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, openai(server, tracing) as c:
        async with c.extract_stream(User, TEXT):
            pass
        c.extract_stream(User, TEXT)  # made and dropped
        assert server.requests == []
    assert tracing.spans == []


# -- many documents, long texts, events --------------------------------------------------------


async def test_extract_many_is_one_extraction_span_per_document(tracing: Tracing) -> None:
    tracer = tracing.provider.get_tracer("the-app")
    documents = {f"doc{i}": TEXT for i in range(4)}
    scripts = [Script(status=500, retry_after=0.01), *[Script(items=USERS[:2])] * 4]
    async with ScriptedModelServer(scripts) as server, openai(server, tracing) as client:
        with tracer.start_as_current_span("batch"):
            async with client.extract_many(User, documents, max_concurrency=1) as results:
                ends = [r async for r in results if r.done]
    assert all(r.ok for r in ends)
    assert len(ends) == 4
    (batch,) = tracing.named("batch")
    extractions = tracing.named("extract ")
    assert len(extractions) == 4
    requests = 0
    for extraction in extractions:
        assert extraction.parent is not None
        assert extraction.parent.span_id == batch.context.span_id
        children = tracing.children(extraction)
        assert extraction.attributes is not None
        assert extraction.attributes["multitask.requests"] == len(children)
        assert extraction.attributes["multitask.items"] == 2
        requests += len(children)
    assert requests == 5  # the first document's first request failed, and was retried


async def test_a_chunked_text_is_one_extraction_with_every_request_under_it(
    tracing: Tracing,
) -> None:
    text = " ".join(f"Here Name{i} said things." for i in range(120))
    model = ReadingModel(r"Name\d+", script=Script(chunk_size=64))
    async with ScriptedModelServer(model) as server, openai(server, tracing) as client:
        stream = client.extract_stream(
            Mention, text, chunk_chars=800, max_continuations=20, max_tokens=60
        )
        async with stream:
            got = [m async for m in stream]
    assert len(got) == 120
    extraction = tracing.extraction()
    requests = tracing.children(extraction)
    assert len(requests) == len(server.requests) == len(tracing.spans) - 1
    attrs = dict(extraction.attributes or {})
    chunks = {r.attributes["multitask.chunk"] for r in requests if r.attributes}
    assert attrs["multitask.chunks"] == len(chunks) > 1
    continued = [r for r in requests if (r.attributes or {})["multitask.chunk.request"] > 1]
    assert attrs["multitask.continuations"] == len(continued) > 0
    assert attrs["multitask.requests"] == len(requests)
    assert attrs["multitask.items"] == 120
    # A cut answer that was continued is no error, of the request or of the text.
    assert extraction.status.status_code is StatusCode.UNSET
    assert all(r.status.status_code is StatusCode.UNSET for r in requests)
    assert any(
        r.attributes and r.attributes["gen_ai.response.finish_reasons"] == ("length",)
        for r in requests
    )
    total = sum(int((r.attributes or {})["gen_ai.usage.output_tokens"]) for r in requests)
    assert attrs["multitask.usage.output_tokens"] == total


async def test_chunks_read_side_by_side_are_traced_the_same(tracing: Tracing) -> None:
    text = " ".join(f"Here Name{i} said things." for i in range(60))
    model = ReadingModel(r"Name\d+", script=Script(chunk_size=64))
    async with ScriptedModelServer(model) as server, openai(server, tracing) as client:
        stream = client.extract_stream(Mention, text, chunk_chars=300, chunk_concurrency=3)
        async with stream:
            got = [m async for m in stream]
    assert len(got) == 60
    extraction = tracing.extraction()
    assert len(tracing.children(extraction)) == len(server.requests) > 3
    assert extraction.attributes is not None
    assert extraction.attributes["multitask.items"] == 60


async def test_extract_events_is_traced_too(tracing: Tracing) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai(server, tracing, trace_content=True) as client:
            async with client.extract_events(User, TEXT) as events:
                seen = [e async for e in events]
    assert isinstance(seen[-1], multitask.Finished)
    extraction = tracing.extraction()
    (request,) = tracing.children(extraction)
    assert request.attributes is not None
    output = json.loads(str(request.attributes["gen_ai.output.messages"]))
    answer = json.loads(output[0]["parts"][0]["content"])
    assert answer == {"tasks": USERS}


# -- content -----------------------------------------------------------------------------------


async def test_content_is_left_out_by_default(tracing: Tracing) -> None:
    async with ScriptedModelServer(Script(items=USERS)) as server, openai(server, tracing) as c:
        await c.extract(User, TEXT, system="A system prompt of ours.")
    dump = tracing.dump()
    assert len(tracing.spans) == 2
    for words in ("confidential", "user0", "user5", "system prompt", "tasks"):
        assert words not in dump
    for span in tracing.spans:
        assert not any(key.endswith("messages") for key in span.attributes or {})


@pytest.mark.parametrize("switch", ["option", "environment"])
async def test_content_when_asked_for(
    tracing: Tracing, switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, Any] = {}
    if switch == "option":
        options["trace_content"] = True
    else:
        monkeypatch.setenv(CONTENT_ENV, "true")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai(server, tracing, **options) as client:
            await client.extract(User, TEXT, system="A system prompt of ours.")
    (request,) = tracing.children(tracing.extraction())
    attrs = request.attributes or {}
    assert json.loads(str(attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "A system prompt of ours."}
    ]
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": TEXT}]}
    ]
    (message,) = json.loads(str(attrs["gen_ai.output.messages"]))
    assert message["role"] == "assistant"
    assert message["finish_reason"] == "tool_calls"
    assert json.loads(message["parts"][0]["content"]) == {"tasks": USERS}


async def test_the_option_overrides_the_environment(
    tracing: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONTENT_ENV, "true")
    async with ScriptedModelServer(Script(items=USERS)) as server:
        async with openai(server, tracing, trace_content=False) as client:
            await client.extract(User, TEXT)
    assert "confidential" not in tracing.dump()


async def test_an_error_message_is_there_with_content_on(tracing: Tracing) -> None:
    body = {"error": {"message": "no such model here", "type": "not_found_error"}}
    async with ScriptedModelServer(Script(status=404, error_body=body)) as server:
        async with openai(server, tracing, trace_content=True) as client:
            with pytest.raises(multitask.APIStatusError):
                await client.extract(User, TEXT)
    extraction = tracing.extraction()
    assert "no such model here" in (extraction.status.description or "")
    assert [e.name for e in extraction.events] == ["exception"]


@pytest.mark.parametrize("make", [openai, anthropic, gemini])
async def test_no_span_ever_carries_the_key(tracing: Tracing, make: Any) -> None:
    """Not with content on, not from a text that holds it, not from an error that echoes it."""
    text = f"{TEXT} The key is {KEY}."
    body = {"error": {"message": f"invalid key {KEY}", "type": "invalid_request_error"}}
    failing = Script(status=500, error_body=body, retry_after=0.01)
    async with ScriptedModelServer([failing, Script(items=USERS), failing]) as server:
        async with make(server, tracing, trace_content=True) as client:
            await client.extract(User, text)
            with pytest.raises(multitask.APIStatusError):
                await client.extract(User, text, max_retries=0)
    dump = tracing.dump()
    assert len(tracing.named("extract ")) == 2
    assert "confidential" in dump  # content is on
    assert "[redacted]" in dump
    assert KEY not in dump
    assert "SECRET-0123" not in dump
    assert "authorization" not in dump.lower()
    assert "api-key" not in dump.lower()


# -- without opentelemetry ---------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_import_multitask_imports_no_opentelemetry() -> None:
    done = _run(
        "import sys, multitask\n"
        "multitask.Client('openai:m', api_key='k')\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_opentelemetry_extraction_works_and_traces_nothing() -> None:
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import anyio, multitask
from pydantic import BaseModel
from multitask.testing import Script, ScriptedModelServer

class User(BaseModel):
    name: str
    age: int

async def main():
    async with ScriptedModelServer(Script(items=[{"name": "a", "age": 1}])) as server:
        async with multitask.Client(
            "openai:m", base_url=server.openai_base_url, api_key="k", trace_content=True
        ) as client:
            print(await client.extract(User, "a is 1"))

anyio.run(main)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry.")))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[User(name='a', age=1)]", "[]"]
