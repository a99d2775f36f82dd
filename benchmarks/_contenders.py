"""The in-memory readers compared by workload 1 (and 3): each takes a stream's SSE events.

- `run_multitask`: `MultiTask(T).extraction(decoder).feed_bytes(event)` per event; and
  `run_multitask_parsed`, `feed_payload(dict)` per already-parsed event, to compare like for
  like with instructor reading already-built SDK objects.
- `run_limit`: what no streaming reader can beat, one C JSON parse of each event plus one
  `validate_json` of the whole answer (it delivers nothing until the end).
- `run_reparse`: the partial-parsing approach of the OpenAI SDK's `parsed_arguments` and of
  pydantic-ai: at every event, `jiter.from_json(accumulated, partial_mode=True)` on the whole
  answer so far, and each item validated once a later one has started.
- `sdk_objects` + `run_instructor`: the official SDK turns the bytes into chunk objects, then
  instructor's `Iterable[T]` parser reads them, the way instructor's handlers call it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import from_json

from _common import Provider
from multitask import MultiTask
from multitask._providers import OpenAIChatDecoder
from multitask._providers._anthropic import AnthropicDecoder
from multitask._providers._base import ProviderDecoder

Loads = Callable[[bytes], Any]


def loaders() -> dict[str, Loads]:
    """The C JSON parsers at hand for the limit: pydantic_core's (jiter), and orjson if there."""
    out: dict[str, Loads] = {"pydantic_core.from_json": from_json}
    try:
        import orjson

        out["orjson.loads"] = orjson.loads
    except ImportError:
        pass
    return out


def _decoder(provider: Provider) -> ProviderDecoder:
    return OpenAIChatDecoder("tool") if provider == "openai" else AnthropicDecoder("tool")


# -- multitask -------------------------------------------------------------------------------


def run_multitask(
    provider: Provider, model: type[BaseModel], events: Iterable[bytes], **limits: Any
) -> int:
    """Feed every event to a fresh extraction; return how many valid items came out."""
    extraction = MultiTask(model).extraction(_decoder(provider), **limits)
    feed = extraction.feed_bytes
    n = 0
    for event in events:
        n += len(feed(event))
    n += len(extraction.close())
    extraction.raise_for_outcome()
    return n


def parsed_events(provider: Provider, events: list[bytes]) -> list[Any]:
    """Each event's JSON, parsed (what an SDK hands over): for the like-for-like parser figure."""
    out = []
    for event in events:
        data = _data(provider, event)
        if data is not None:
            out.append(from_json(data))
    return out


def run_multitask_parsed(provider: Provider, model: type[BaseModel], payloads: list[Any]) -> int:
    """Feed parsed events with `Extraction.feed_payload`: multitask's share past the framing."""
    extraction = MultiTask(model).extraction(_decoder(provider))
    feed = extraction.feed_payload
    n = 0
    for payload in payloads:
        n += len(feed(payload))
    n += len(extraction.close())
    extraction.raise_for_outcome()
    return n


def items_through(provider: Provider, model: type[BaseModel], events: list[bytes], k: int) -> int:
    """How many leading events it takes to complete `k` items (to time a slow peer on a prefix)."""
    extraction = MultiTask(model).extraction(_decoder(provider))
    n = 0
    for i, event in enumerate(events):
        n += len(extraction.feed_bytes(event))
        if n >= k:
            return i + 1
    return len(events)


# -- the limit and the re-parse approach -----------------------------------------------------


def _data(provider: Provider, event: bytes) -> bytes | None:
    """The data line of one whole event, sliced out (the cheapest framing there is)."""
    if provider == "openai":
        data = event[6:-2]
        return None if data == b"[DONE]" else data
    return event[event.index(b"data: ") + 6 : -2]


def _fragment(provider: Provider, obj: Any) -> str:
    """The answer text one parsed event carries ('' for none)."""
    if provider == "openai":
        for choice in obj.get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                return str(call["function"].get("arguments") or "")
        return ""
    if obj.get("type") == "content_block_delta":
        return str(obj["delta"].get("partial_json") or "")
    return ""


@cache
def _answer_adapter(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(MultiTask(model))


@cache
def _item_adapter(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def run_limit(
    provider: Provider, model: type[BaseModel], events: Iterable[bytes], loads: Loads
) -> int:
    """One C parse per event, one validation of the whole answer at the end."""
    parts = []
    for event in events:
        data = _data(provider, event)
        if data is not None:
            parts.append(_fragment(provider, loads(data)))
    answer = _answer_adapter(model).validate_json("".join(parts))
    return len(answer.tasks)


def run_reparse(
    provider: Provider,
    model: type[BaseModel],
    events: Iterable[bytes],
    every: int = 1,
) -> int:
    """Re-parse the whole answer so far (every `every` events), validating completed items.

    An item is known complete once the next one shows up in the partial parse (or the
    stream ends): the parse alone cannot tell a finished last item from a cut one.
    """
    import jiter

    validate = _item_adapter(model).validate_python
    answer = ""
    done = 0
    seen = 0
    for event in events:
        data = _data(provider, event)
        if data is None:
            continue
        text = _fragment(provider, from_json(data))
        if not text:
            continue
        answer += text
        seen += 1
        if seen % every:
            continue
        parsed = jiter.from_json(answer.encode(), partial_mode=True)
        tasks = (parsed.get("tasks") or []) if isinstance(parsed, dict) else []
        while done < len(tasks) - 1:
            validate(tasks[done])
            done += 1
    tasks = jiter.from_json(answer.encode())["tasks"]
    for raw in tasks[done:]:
        validate(raw)
    return len(tasks)


# -- instructor ------------------------------------------------------------------------------


def instructor_version() -> str | None:
    """instructor's version, or None when it cannot be imported."""
    try:
        import instructor
    except ImportError:
        return None
    return str(getattr(instructor, "__version__", "?"))


@cache
def _sdk_clients() -> tuple[Any, Any]:
    import anthropic
    import openai

    return (
        openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1"),
        anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9"),
    )


def sdk_objects(provider: Provider, events: list[bytes]) -> list[Any]:
    """The official SDK's chunk objects for these bytes: its own `Stream` over a response.

    This is what the SDK does with each event before instructor sees it (SSE decoding,
    `json.loads`, building the typed chunk object); nothing goes over the network.
    """
    if provider == "openai":
        import openai
        from openai.types.chat import ChatCompletionChunk

        http = getattr(openai._streaming, "httpx2", None) or sys.modules["httpx"]
        response = http.Response(
            200,
            content=iter(events),
            headers={"content-type": "text/event-stream"},
            request=http.Request("POST", "http://127.0.0.1:9/v1/chat/completions"),
        )
        stream = openai.Stream(
            cast_to=ChatCompletionChunk, response=response, client=_sdk_clients()[0]
        )
        return list(stream)
    import anthropic
    from anthropic.types import RawMessageStreamEvent

    http = getattr(anthropic._streaming, "httpx2", None) or sys.modules["httpx"]
    response = http.Response(
        200,
        content=iter(events),
        headers={"content-type": "text/event-stream"},
        request=http.Request("POST", "http://127.0.0.1:9/v1/messages"),
    )
    events_stream: Any = anthropic.Stream(
        cast_to=RawMessageStreamEvent,  # type: ignore[arg-type]
        response=response,
        client=_sdk_clients()[1],
    )
    return list(events_stream)


@cache
def _instructor_parts(provider: Provider, model: type[BaseModel]) -> tuple[Any, Any]:
    """instructor's `Iterable[T]` model and the stream extractor its tools-mode handler uses."""
    from instructor import IterableModel

    iterable = IterableModel(model)
    if provider == "openai":
        from instructor.v2.providers.openai.handlers import OpenAIToolsHandler

        return iterable, OpenAIToolsHandler().extract_streaming_json
    from instructor.v2.providers.anthropic.handlers import AnthropicToolsHandler

    return iterable, AnthropicToolsHandler().extract_streaming_json


def run_instructor(provider: Provider, model: type[BaseModel], chunks: Iterable[Any]) -> int:
    """instructor's streaming `Iterable[T]` parser over SDK chunk objects, as its handler calls it.

    (`handler._parse_streaming_response` calls `model.from_streaming_response(response,
    stream_extractor=handler.extract_streaming_json)`, which runs `tasks_from_chunks`.)
    """
    iterable, extractor = _instructor_parts(provider, model)
    n = 0
    for _ in iterable.from_streaming_response(chunks, stream_extractor=extractor):
        n += 1
    return n
