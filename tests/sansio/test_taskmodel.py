"""The classic API: `MultiTask(T)`, its schemas, `from_response` and the streaming parsers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Annotated, Any, Literal, Union

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, Field, TypeAdapter, ValidationInfo, field_validator
from typing_extensions import TypedDict

from multitask import (
    ContentFilterError,
    IncompleteOutputError,
    ItemValidationError,
    MalformedOutputError,
    MultiTask,
    MultiTaskModel,
    RefusalError,
    StreamError,
)

# -- item types ----------------------------------------------------------------------------------


class User(BaseModel):
    name: str
    age: int


class Address(BaseModel):
    street: str
    city: str


class Contact(BaseModel):
    """Someone to reach."""

    name: str
    email: str | None = None
    tags: list[str] = []
    address: Address | None = None
    home: Address = Field(description="Where they live")


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


MultiUser = MultiTask(User)

USERS = [
    {"name": "Ann", "age": 31},
    {"name": "Bob", "age": 42},
    {"name": "Cy", "age": 7},
]
ARGS = json.dumps({"tasks": USERS}, separators=(",", ":"))


def dumped(items: Iterable[BaseModel]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


# -- the model -----------------------------------------------------------------------------------


def test_multitask_names_and_texts() -> None:
    assert MultiUser.__name__ == "MultiUser"
    assert issubclass(MultiUser, MultiTaskModel)
    assert MultiUser.__doc__ == "Correct segmentation of `User` tasks"
    assert list(MultiUser.model_fields) == ["tasks"]
    field = MultiUser.model_fields["tasks"]
    assert field.description == "Correctly segmented list of `User` tasks"
    assert field.is_required()
    assert MultiUser.item_type is User
    assert MultiUser.task_name == "User"


def test_multitask_validates_like_a_model() -> None:
    model = MultiUser.model_validate({"tasks": USERS})
    assert all(isinstance(u, User) for u in model.tasks)
    assert dumped(model.tasks) == USERS
    with pytest.raises(ValueError, match="tasks"):
        MultiUser.model_validate({})


def test_name_override() -> None:
    multi = MultiTask(User, name="Person")
    assert multi.__name__ == "MultiPerson"
    assert multi.__doc__ == "Correct segmentation of `Person` tasks"
    assert multi.model_fields["tasks"].description == "Correctly segmented list of `Person` tasks"
    assert multi.openai_schema["name"] == "MultiPerson"
    assert multi.openai_schema["description"] == "Correct segmentation of `Person` tasks"


def test_description_override() -> None:
    multi = MultiTask(User, description="Every user mentioned in the text")
    assert multi.__name__ == "MultiUser"
    assert multi.__doc__ == "Every user mentioned in the text"
    assert multi.openai_schema["description"] == "Every user mentioned in the text"
    assert multi.anthropic_schema["description"] == "Every user mentioned in the text"
    assert multi.model_fields["tasks"].description == "Correctly segmented list of `User` tasks"


@pytest.mark.parametrize(
    "item_type",
    [Cat | Dog, Union[Cat, Dog], Annotated[Cat | Dog, Field(discriminator="kind")]],  # noqa: UP007
    ids=["pipe", "Union", "discriminated"],
)
def test_union_items(item_type: Any) -> None:
    multi = MultiTask(item_type)
    assert multi.__name__ == "MultiCatOrDog"
    assert multi.__doc__ == "Correct segmentation of `CatOrDog` tasks"
    assert multi.model_fields["tasks"].description == "Correctly segmented list of `CatOrDog` tasks"
    answer = {"tasks": [{"kind": "dog", "good": True}, {"kind": "cat", "lives": 9}]}
    got = multi.from_response(_completion({"content": json.dumps(answer)})).tasks
    assert [type(x) for x in got] == [Dog, Cat]
    assert got[0].good is True
    assert got[1].lives == 9
    items = multi.openai_schema["parameters"]["properties"]["tasks"]["items"]
    variants = items.get("anyOf") or items.get("oneOf")
    if "discriminator" in items:  # its mapping names the models: they stay in $defs
        assert sorted(v["$ref"] for v in variants) == ["#/$defs/Cat", "#/$defs/Dog"]
        return
    # Each model is used once: written in place, without the titles pydantic made up.
    assert sorted(v["properties"]["kind"]["const"] for v in variants) == ["cat", "dog"]
    assert not any("title" in v or "title" in v["properties"]["kind"] for v in variants)


def test_discriminated_union_keeps_its_discriminator() -> None:
    multi = MultiTask(Annotated[Cat | Dog, Field(discriminator="kind")])
    items = multi.openai_schema["parameters"]["properties"]["tasks"]["items"]
    assert items["discriminator"]["propertyName"] == "kind"
    with pytest.raises(ItemValidationError) as info:
        multi.from_response(_completion({"content": '{"tasks":[{"kind":"cow"}]}'}))
    assert info.value.index == 0
    assert info.value.errors[0]["type"] == "union_tag_invalid"


def test_dataclass_items() -> None:
    multi = MultiTask(Point)
    assert multi.__name__ == "MultiPoint"
    got = multi.from_response(_completion({"content": '{"tasks":[{"x":1,"y":2},{"x":3,"y":4}]}'}))
    assert got.tasks == [Point(1, 2), Point(3, 4)]
    schema = multi.openai_strict_schema
    assert schema["properties"]["tasks"]["items"]["required"] == ["x", "y"]


def test_typeddict_items() -> None:
    multi = MultiTask(Movie)
    assert multi.__name__ == "MultiMovie"
    answer = '{"tasks":[{"title":"Alien","year":1979},{"title":"Heat","year":"1995"}]}'
    got = multi.from_response(_completion({"content": answer}))
    assert got.tasks == [{"title": "Alien", "year": 1979}, {"title": "Heat", "year": 1995}]


def test_str_items() -> None:
    multi = MultiTask(str)
    assert multi.__name__ == "MultiStr"  # CamelCase, as every other `Multi{Name}`
    assert multi.__doc__ == "Correct segmentation of `str` tasks"
    parameters = multi.openai_schema["parameters"]
    assert parameters["properties"]["tasks"]["items"] == {"type": "string"}
    chunks = _tool_chunks(_pieces('{"tasks":["buy milk","call \\"Bob\\"","a, b"]}', 3))
    assert list(multi.from_streaming_response(chunks)) == ["buy milk", 'call "Bob"', "a, b"]


# -- schemas -------------------------------------------------------------------------------------


def test_openai_schema() -> None:
    schema = MultiUser.openai_schema
    assert set(schema) == {"name", "description", "parameters"}
    assert schema["name"] == "MultiUser"
    assert schema["description"] == "Correct segmentation of `User` tasks"
    parameters = schema["parameters"]
    assert parameters["type"] == "object"
    assert parameters["required"] == ["tasks"]
    assert "title" not in parameters
    assert "description" not in parameters
    tasks = parameters["properties"]["tasks"]
    assert tasks["type"] == "array"
    assert tasks["description"] == "Correctly segmented list of `User` tasks"
    user = tasks["items"]  # used once: in place, not in $defs
    assert "$defs" not in parameters
    assert user["required"] == ["name", "age"]
    assert user["properties"]["age"] == {"type": "integer"}  # no title pydantic made up
    json.dumps(schema)  # plain JSON


def test_openai_tool() -> None:
    assert MultiUser.openai_tool == {"type": "function", "function": MultiUser.openai_schema}


def test_anthropic_schema() -> None:
    schema = MultiUser.anthropic_schema
    assert set(schema) == {"name", "description", "input_schema"}
    assert schema["name"] == "MultiUser"
    assert schema["description"] == "Correct segmentation of `User` tasks"
    assert schema["input_schema"] == MultiUser.openai_schema["parameters"]
    assert schema["input_schema"]["type"] == "object"
    assert schema["input_schema"]["required"] == ["tasks"]


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object schema in a JSON schema, with where it is."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}/{i}")


def _assert_strict(schema: dict[str, Any]) -> int:
    objects = list(_objects(schema))
    for path, obj in objects:
        assert obj.get("additionalProperties") is False, path
        assert sorted(obj.get("required", [])) == sorted(obj.get("properties", {})), path
    return len(objects)


@pytest.mark.parametrize("item_type", [User, Contact, Cat | Dog, Point])
def test_openai_strict_tool(item_type: Any) -> None:
    multi = MultiTask(item_type)
    tool = multi.openai_strict_tool
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["strict"] is True
    assert function["name"] == multi.__name__
    assert function["description"] == multi.__doc__
    assert function["parameters"] == multi.openai_strict_schema
    assert _assert_strict(function["parameters"]) >= 2


@pytest.mark.parametrize("item_type", [User, Contact, Cat | Dog, Point])
def test_openai_response_format(item_type: Any) -> None:
    multi = MultiTask(item_type)
    response_format = multi.openai_response_format
    assert response_format["type"] == "json_schema"
    json_schema = response_format["json_schema"]
    assert json_schema["strict"] is True
    assert json_schema["name"] == multi.__name__
    assert json_schema["description"] == multi.__doc__
    assert json_schema["schema"] == multi.openai_strict_schema
    assert _assert_strict(json_schema["schema"]) >= 2


def test_strict_schema_of_nested_model_requires_optional_fields() -> None:
    schema = MultiTask(Contact).openai_strict_schema
    # root, Contact, Address, and `home`: a $ref with a description is inlined
    assert _assert_strict(schema) == 4
    contact = schema["properties"]["tasks"]["items"]  # used once: in place
    assert contact["properties"]["home"]["description"] == "Where they live"
    assert contact["required"] == ["name", "email", "tags", "address", "home"]
    # An optional field stays optional by allowing null, now that it must be present.
    email = json.dumps(contact["properties"]["email"])
    assert '"null"' in email
    # The non-strict schema is untouched.
    loose = MultiTask(Contact).openai_schema["parameters"]["properties"]["tasks"]["items"]
    assert loose["required"] == ["name", "home"]
    assert "additionalProperties" not in loose


# -- from_response -------------------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr",
        "object": "chat.completion",
        "created": 1727346176,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_7568d46099",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 76, "completion_tokens": 24, "total_tokens": 100},
    }


def _tool_call(arguments: str, call_id: str = "call_c91SqDXlYFuETYv8mUHzz6pp") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "MultiUser", "arguments": arguments},
    }


OPENAI_ANSWERS = {
    "tool_calls": _completion({"tool_calls": [_tool_call(ARGS)]}, "tool_calls"),
    "function_call": _completion(
        {"function_call": {"name": "MultiUser", "arguments": ARGS}}, "function_call"
    ),
    "content": _completion({"content": ARGS}),
    "fenced": _completion(
        {"content": f"Sure! Here are the users:\n\n```json\n{ARGS}\n```\n\nAnything else?"}
    ),
    "pretty": _completion({"content": json.dumps({"tasks": USERS}, indent=2)}),
    "parallel": _completion(
        {"tool_calls": [_tool_call(ARGS), _tool_call('{"tasks":[]}', "call_2")]}, "tool_calls"
    ),
    "prose_and_tool": _completion(
        {"content": "Let me see [thinking]...", "tool_calls": [_tool_call(ARGS)]}, "tool_calls"
    ),
}


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
@pytest.mark.parametrize("kind", list(OPENAI_ANSWERS))
def test_from_response_openai(kind: str, sdk: bool) -> None:
    raw = OPENAI_ANSWERS[kind]
    completion = ChatCompletion.model_validate(raw) if sdk else raw
    result = MultiUser.from_response(completion)
    assert isinstance(result, MultiUser)
    assert all(type(u) is User for u in result.tasks)
    assert dumped(result.tasks) == USERS


def _message(content: list[dict[str, Any]], stop: str = "end_turn", **extra: Any) -> dict:
    return {
        "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 377, "output_tokens": 65},
        **extra,
    }


def _tool_use(arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_01", "name": "MultiUser", "input": arguments}


ANTHROPIC_ANSWERS = {
    "text": _message([{"type": "text", "text": ARGS}]),
    "fenced_text": _message([{"type": "text", "text": f"Here:\n```json\n{ARGS}\n```"}]),
    "tool_use": _message(
        [
            {"type": "text", "text": "I'll record the users [all three]."},
            _tool_use({"tasks": USERS}),
        ],
        "tool_use",
    ),
}


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
@pytest.mark.parametrize("kind", list(ANTHROPIC_ANSWERS))
def test_from_response_anthropic(kind: str, sdk: bool) -> None:
    raw = ANTHROPIC_ANSWERS[kind]
    message = Message.model_validate(raw) if sdk else raw
    result = MultiUser.from_response(message)
    assert isinstance(result, MultiUser)
    assert dumped(result.tasks) == USERS


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
def test_from_response_openai_length_is_incomplete(sdk: bool) -> None:
    cut = ARGS[: ARGS.index('{"name":"Bob"') + 5]
    raw = _completion({"tool_calls": [_tool_call(cut)]}, "length")
    with pytest.raises(IncompleteOutputError) as info:
        MultiUser.from_response(ChatCompletion.model_validate(raw) if sdk else raw)
    assert info.value.finish_reason == "length"
    assert info.value.items_delivered == 1


def test_from_response_anthropic_max_tokens_text_is_incomplete() -> None:
    raw = _message([{"type": "text", "text": ARGS[:30]}], "max_tokens")
    with pytest.raises(IncompleteOutputError) as info:
        MultiUser.from_response(Message.model_validate(raw))
    assert info.value.finish_reason == "max_tokens"


@pytest.mark.parametrize(
    "arguments",
    [{}, {"tasks": USERS[:1]}, {"tasks": [*USERS[:1], {"name": "Bo"}]}],
    ids=["empty", "leading-items", "partial-item"],
)
def test_from_response_anthropic_max_tokens_tool_use_is_incomplete(arguments: Any) -> None:
    """A cut-off tool input comes back parsed as far as it went, often `{}`: still cut off."""
    raw = _message([_tool_use(arguments)], "max_tokens")
    with pytest.raises(IncompleteOutputError) as info:
        MultiUser.from_response(Message.model_validate(raw))
    assert info.value.finish_reason == "max_tokens"


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
def test_from_response_openai_refusal(sdk: bool) -> None:
    raw = _completion({"refusal": "I'm sorry, I can't assist with that request."})
    with pytest.raises(RefusalError) as info:
        MultiUser.from_response(ChatCompletion.model_validate(raw) if sdk else raw)
    assert type(info.value) is RefusalError
    assert info.value.refusal == "I'm sorry, I can't assist with that request."


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
def test_from_response_anthropic_refusal(sdk: bool) -> None:
    details = {"type": "refusal", "category": "cyber", "explanation": "Refused due to policy."}
    raw = _message([], "refusal", stop_details=details)
    with pytest.raises(RefusalError) as info:
        MultiUser.from_response(Message.model_validate(raw) if sdk else raw)
    assert info.value.refusal == "Refused due to policy."
    bare = _message([], "refusal")
    with pytest.raises(RefusalError):
        MultiUser.from_response(Message.model_validate(bare) if sdk else bare)


@pytest.mark.parametrize("content", [None, ARGS[:25]], ids=["empty", "partial"])
def test_from_response_content_filter(content: str | None) -> None:
    raw = _completion({"content": content}, "content_filter")
    with pytest.raises(ContentFilterError) as info:
        MultiUser.from_response(ChatCompletion.model_validate(raw))
    assert "content filter" in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        _completion({"content": None}),
        _completion({"content": "I could not find any users."}),
        _completion({"content": '{"users": []}'}),
        {**_completion({}), "choices": []},
        _message([], "end_turn"),
    ],
    ids=["no-content", "prose", "no-tasks-key", "no-choices", "anthropic-empty"],
)
def test_from_response_without_an_answer_is_malformed(raw: dict[str, Any]) -> None:
    with pytest.raises(MalformedOutputError):
        MultiUser.from_response(raw)


def test_from_response_not_a_response() -> None:
    with pytest.raises(MalformedOutputError, match="not a chat completion or message"):
        MultiUser.from_response({"hello": "world"})
    with pytest.raises(TypeError):
        MultiUser.from_response(42)


def test_from_response_empty_list_is_fine() -> None:
    assert MultiUser.from_response(_completion({"content": '{"tasks": []}'})).tasks == []


BAD = json.dumps({"tasks": [USERS[0], {"name": "Bob", "age": "forty-two"}, USERS[2]]})


def test_from_response_invalid_item() -> None:
    with pytest.raises(ItemValidationError) as info:
        MultiUser.from_response(_completion({"content": BAD}))
    assert info.value.index == 1
    assert info.value.raw == {"name": "Bob", "age": "forty-two"}
    assert info.value.errors[0]["loc"] == ("age",)
    assert "item 1" in str(info.value)


def test_from_response_skip_invalid() -> None:
    result = MultiUser.from_response(_completion({"content": BAD}), on_invalid="skip")
    assert dumped(result.tasks) == [USERS[0], USERS[2]]


class Tagged(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def add_suffix(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        if value in context.get("banned", ()):
            raise ValueError(f"{value} is banned")
        return value + context.get("suffix", "")


def test_from_response_validation_context() -> None:
    multi = MultiTask(Tagged)
    raw = _completion({"content": '{"tasks":[{"name":"a"},{"name":"b"}]}'})
    result = multi.from_response(raw, validation_context={"suffix": "!"})
    assert [t.name for t in result.tasks] == ["a!", "b!"]
    assert [t.name for t in multi.from_response(raw).tasks] == ["a", "b"]
    with pytest.raises(ItemValidationError) as info:
        multi.from_response(raw, validation_context={"banned": ["b"]})
    assert info.value.index == 1


# -- streaming: chunks shaped like chat_tools_c6aa7e39.sse ----------------------------------------

CHUNK_BASE = {
    "id": "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr",
    "object": "chat.completion.chunk",
    "created": 1727346176,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_7568d46099",
}


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**CHUNK_BASE, "choices": [choice]}


def _tool_chunks(deltas: list[str], finish: str | None = "tool_calls") -> list[dict[str, Any]]:
    first = {
        "index": 0,
        "id": "call_c91SqDXlYFuETYv8mUHzz6pp",
        "type": "function",
        "function": {"name": "MultiUser", "arguments": ""},
    }
    chunks = [
        _chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})
    ]
    chunks += [
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": text}}]}) for text in deltas
    ]
    if finish is not None:
        chunks.append(_chunk({}, finish))
    usage = {
        "prompt_tokens": 76,
        "completion_tokens": 24,
        "total_tokens": 100,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    chunks.append({**CHUNK_BASE, "choices": [], "usage": usage})
    return chunks


DELTAS = _pieces(ARGS, 4)
RAW_CHUNKS = _tool_chunks(DELTAS)
SDK_CHUNKS = [ChatCompletionChunk.model_validate(c) for c in RAW_CHUNKS]

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def _anthropic_events(
    deltas: list[str], stop: str = "tool_use", prose: str | None = None
) -> list[dict[str, Any]]:
    message = {
        "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 377, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    index = 0
    if prose is not None:
        text_block = {"type": "text", "text": ""}
        events += [
            {"type": "content_block_start", "index": 0, "content_block": text_block},
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": prose},
            },
            {"type": "content_block_stop", "index": 0},
        ]
        index = 1
    block = {"type": "tool_use", "id": "toolu_01", "name": "MultiUser", "input": {}}
    events.append({"type": "content_block_start", "index": index, "content_block": block})
    events += [
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": text},
        }
        for text in deltas
    ]
    events += [
        {"type": "content_block_stop", "index": index},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 65},
        },
        {"type": "message_stop"},
    ]
    return events


def _sdk_events(events: list[dict[str, Any]]) -> list[Any]:
    # The SDK's event union has no `ping` (its client drops them): leave them out.
    return [STREAM_EVENT.validate_python(e) for e in events if e["type"] != "ping"]


def test_seed_example_sdk_chunks() -> None:
    completion = SDK_CHUNKS
    assert all(isinstance(c, ChatCompletionChunk) for c in completion)
    seen = []

    MultiUser = MultiTask(User)
    for user in MultiUser.from_streaming_response(completion):
        assert isinstance(user, User)
        seen.append(user)

    assert dumped(seen) == USERS


def test_seed_example_dict_chunks() -> None:
    completion = RAW_CHUNKS
    seen = []

    MultiUser = MultiTask(User)
    for user in MultiUser.from_streaming_response(completion):
        assert isinstance(user, User)
        seen.append(user)

    assert dumped(seen) == USERS


def test_seed_example_anthropic_events() -> None:
    completion = _sdk_events(_anthropic_events(_pieces(ARGS, 5), prose="Let me list them."))
    assert type(completion[0]).__name__ == "RawMessageStartEvent"
    seen = []

    MultiUser = MultiTask(User)
    for user in MultiUser.from_streaming_response(completion):
        assert isinstance(user, User)
        seen.append(user)

    assert dumped(seen) == USERS


def test_anthropic_dict_events() -> None:
    events = _anthropic_events(_pieces(ARGS, 3))
    assert dumped(MultiUser.from_streaming_response(events)) == USERS


def test_anthropic_prose_with_brackets_before_the_tool_call() -> None:
    prose = "I'll record the users [Ann, Bob and Cy] as {name, age} pairs."
    events = _sdk_events(_anthropic_events(_pieces(ARGS, 5), prose=prose))
    assert dumped(MultiUser.from_streaming_response(events)) == USERS


def test_openai_content_stream() -> None:
    chunks = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [_chunk({"content": text}) for text in _pieces(f"```json\n{ARGS}\n```", 3)]
    chunks.append(_chunk({}, "stop"))
    sdk = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert dumped(MultiUser.from_streaming_response(sdk)) == USERS


def _drain(items: Iterable[Any], seen: list[Any]) -> None:
    seen.extend(items)  # item by item, so what came before an error is kept


async def _adrain(items: AsyncIterator[Any], seen: list[Any]) -> None:
    async for item in items:
        seen.append(item)


def _recording(chunks: Iterable[Any], log: list[int]) -> Iterator[Any]:
    """Yield the chunks, logging how many were consumed so far."""
    for i, chunk in enumerate(chunks, 1):
        log[0] = i
        yield chunk


def _closing_chunks(deltas: list[str], lead: int) -> list[int]:
    """How many chunks were consumed once each user's closing brace was in."""
    ends, offset = [], 0
    for user in USERS:
        text = json.dumps(user, separators=(",", ":"))
        offset = ARGS.index(text, offset) + len(text)
        ends.append(offset)
    out, seen = [], 0
    for i, text in enumerate(deltas):
        seen += len(text)
        out += [lead + i + 1 for end in ends if seen - len(text) < end <= seen]
    return out


@pytest.mark.parametrize("size", [1, 4, 7, 200])
@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
def test_streaming_is_incremental(size: int, sdk: bool) -> None:
    deltas = _pieces(ARGS, size)
    chunks = _tool_chunks(deltas)
    if sdk:
        chunks = [ChatCompletionChunk.model_validate(c) for c in chunks]
    log = [0]
    consumed = []
    for user in MultiUser.from_streaming_response(_recording(chunks, log)):
        assert isinstance(user, User)
        consumed.append(log[0])
    assert consumed == _closing_chunks(deltas, lead=1)
    assert len(consumed) == 3
    if size < 50:
        assert consumed[0] < consumed[1] < consumed[2] < len(chunks)


def test_anthropic_streaming_is_incremental() -> None:
    deltas = _pieces(ARGS, 6)
    events = _sdk_events(_anthropic_events(deltas, prose="Here they are."))
    log = [0]
    consumed = [log[0] for _ in MultiUser.from_streaming_response(_recording(events, log))]
    # message_start, text block start / delta / stop, tool_use block start
    assert consumed == _closing_chunks(deltas, lead=5)
    dict_events = _anthropic_events(deltas, prose="Here they are.")
    consumed = [log[0] for _ in MultiUser.from_streaming_response(_recording(dict_events, log))]
    assert consumed == _closing_chunks(deltas, lead=6)  # ... and a ping


async def _agen(chunks: list[Any], log: list[int]) -> AsyncIterator[Any]:
    for i, chunk in enumerate(chunks, 1):
        log[0] = i
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
async def test_from_streaming_response_async(sdk: bool) -> None:
    chunks = SDK_CHUNKS if sdk else RAW_CHUNKS
    log = [0]
    seen, consumed = [], []
    async for user in MultiUser.from_streaming_response_async(_agen(chunks, log)):
        assert isinstance(user, User)
        seen.append(user)
        consumed.append(log[0])
    assert dumped(seen) == USERS
    assert consumed == _closing_chunks(DELTAS, lead=1)


@pytest.mark.anyio
async def test_from_streaming_response_async_anthropic() -> None:
    events = _sdk_events(_anthropic_events(_pieces(ARGS, 5)))
    seen = [u async for u in MultiUser.from_streaming_response_async(_agen(events, [0]))]
    assert dumped(seen) == USERS


@pytest.mark.anyio
async def test_from_streaming_response_async_truncated() -> None:
    cut = ARGS.index('{"name":"Cy"') + 4
    chunks = _tool_chunks(_pieces(ARGS[:cut], 4), finish="length")
    seen = []
    with pytest.raises(IncompleteOutputError) as info:
        await _adrain(MultiUser.from_streaming_response_async(_agen(chunks, [0])), seen)
    assert dumped(seen) == USERS[:2]
    assert info.value.items_delivered == 2


@pytest.mark.anyio
async def test_from_streaming_response_async_empty() -> None:
    with pytest.raises(MalformedOutputError, match="empty"):
        async for _ in MultiUser.from_streaming_response_async(_agen([], [0])):
            pass


@pytest.mark.parametrize("sdk", [True, False], ids=["sdk", "dict"])
def test_stream_truncated_by_length(sdk: bool) -> None:
    cut = ARGS.index('{"name":"Cy"') + 4
    chunks: list[Any] = _tool_chunks(_pieces(ARGS[:cut], 4), finish="length")
    if sdk:
        chunks = [ChatCompletionChunk.model_validate(c) for c in chunks]
    seen = []
    with pytest.raises(IncompleteOutputError) as info:
        _drain(MultiUser.from_streaming_response(chunks), seen)
    assert dumped(seen) == USERS[:2]
    assert info.value.finish_reason == "length"
    assert info.value.items_delivered == 2


def test_stream_truncated_by_max_tokens_anthropic() -> None:
    cut = ARGS.index('{"name":"Bob"') + 2
    events = _sdk_events(_anthropic_events(_pieces(ARGS[:cut], 4), stop="max_tokens"))
    seen = []
    with pytest.raises(IncompleteOutputError) as info:
        _drain(MultiUser.from_streaming_response(events), seen)
    assert dumped(seen) == USERS[:1]
    assert info.value.finish_reason == "max_tokens"


@pytest.mark.parametrize("cut", [ARGS.index('{"name":"Bob"') + 9, len(ARGS) - 2, len(ARGS) - 1])
def test_stream_that_just_stops_inside_the_list(cut: int) -> None:
    chunks = _tool_chunks(_pieces(ARGS[:cut], 4), finish=None)[:-1]  # no finish, no usage
    seen = []
    with pytest.raises(IncompleteOutputError) as info:
        _drain(MultiUser.from_streaming_response(chunks), seen)
    expected = 1 if cut < len(ARGS) - 2 else 3
    assert dumped(seen) == USERS[:expected]
    assert info.value.items_delivered == expected
    assert info.value.finish_reason is None


def test_stream_that_stops_after_the_list_closed_is_complete() -> None:
    chunks = _tool_chunks(_pieces(ARGS, 4), finish=None)[:-1]
    assert dumped(MultiUser.from_streaming_response(chunks)) == USERS


def test_stream_refusal() -> None:
    chunks = [_chunk({"role": "assistant", "content": None, "refusal": ""})]
    chunks += [_chunk({"refusal": text}) for text in ["I'm", " sorry", "."]]
    chunks.append(_chunk({}, "stop"))
    with pytest.raises(RefusalError) as info:
        list(MultiUser.from_streaming_response(chunks))
    assert info.value.refusal == "I'm sorry."


def test_stream_anthropic_refusal() -> None:
    events = _anthropic_events([], stop="refusal")[:1]
    events += [
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": "refusal",
                "stop_sequence": None,
                "stop_details": {"type": "refusal", "explanation": "Not allowed."},
            },
            "usage": {"output_tokens": 0},
        },
        {"type": "message_stop"},
    ]
    with pytest.raises(RefusalError) as info:
        list(MultiUser.from_streaming_response(events))
    assert info.value.refusal == "Not allowed."


def test_stream_invalid_item_raises_after_the_valid_ones() -> None:
    chunks = _tool_chunks(_pieces(BAD, 5))
    seen = []
    with pytest.raises(ItemValidationError) as info:
        _drain(MultiUser.from_streaming_response(chunks), seen)
    assert dumped(seen) == USERS[:1]
    assert info.value.index == 1


def test_stream_skip_invalid() -> None:
    chunks = _tool_chunks(_pieces(BAD, 5))
    got = MultiUser.from_streaming_response(chunks, on_invalid="skip")
    assert dumped(got) == [USERS[0], USERS[2]]


def test_stream_validation_context() -> None:
    chunks = _tool_chunks(_pieces('{"tasks":[{"name":"a"},{"name":"b"}]}', 3))
    got = MultiTask(Tagged).from_streaming_response(chunks, validation_context={"suffix": "?"})
    assert [t.name for t in got] == ["a?", "b?"]


def test_stream_error_chunk_after_items() -> None:
    cut = ARGS.index('{"name":"Bob"') + len('{"name":"Bob","age":42},{"na')
    chunks: list[Any] = _tool_chunks(_pieces(ARGS[:cut], 4), finish=None)[:-1]
    chunks.append({"error": {"message": "Overloaded", "type": "server_error", "code": None}})
    seen = []
    with pytest.raises(StreamError) as info:
        _drain(MultiUser.from_streaming_response(chunks), seen)
    assert dumped(seen) == USERS[:2]
    assert info.value.error_type == "server_error"


def test_empty_stream() -> None:
    with pytest.raises(MalformedOutputError, match="empty"):
        list(MultiUser.from_streaming_response([]))


def test_extraction_factory() -> None:
    from multitask.providers import OpenAIChatDecoder

    extraction = MultiUser.extraction(OpenAIChatDecoder("content"), on_invalid="skip")
    got = extraction.feed_text(ARGS[:20]) + extraction.feed_text(ARGS[20:])
    assert dumped(got) == USERS
    assert extraction.close() == []
    extraction.raise_for_outcome()
