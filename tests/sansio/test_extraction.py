"""The contract of the sans-IO pipeline, `Extraction`.

* each `feed_*` call returns the items its input completed, the moment they complete;
* an error found partway through a feed is raised only after the items before it were
  returned: by the next call, or by `close()` / `raise_for_outcome()`;
* `close()` returns the last items and `raise_for_outcome()` then says what went wrong;
* a closed extraction takes no more input.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError, field_validator

from multitask import (
    ContentFilterError,
    IncompleteOutputError,
    ItemValidationError,
    MalformedOutputError,
    RefusalError,
    StreamError,
)
from multitask.lowlevel import Extraction, ServerSentEvent
from multitask.providers import AnthropicDecoder, OpenAIChatDecoder, ProviderDecoder


class User(BaseModel):
    name: str
    age: int

    @field_validator("name")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("blank name")
        return value


USER = TypeAdapter(User)
ANN = {"name": "Ann", "age": 31}
BOB = {"name": "Bob", "age": 42}
CY = {"name": "Cy", "age": 7}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


ARGS = compact({"tasks": [ANN, BOB, CY]})


def content(**kwargs: Any) -> Extraction[User]:
    """An extraction whose answer is fed as text (the decoder only matters for the outcome)."""
    return Extraction(USER, OpenAIChatDecoder("content"), **kwargs)


def names(items: list[User]) -> list[str]:
    return [u.name for u in items]


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {compact(payload)}\n\n".encode()


def tool_delta(arguments: str) -> dict[str, Any]:
    call = {"index": 0, "function": {"arguments": arguments}}
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


# -- items the moment they complete ------------------------------------------------------------


def test_each_item_comes_out_with_the_fragment_that_closes_it() -> None:
    extraction = content()
    ends = [ARGS.index(compact(u)) + len(compact(u)) for u in (ANN, BOB, CY)]
    got: dict[int, list[str]] = {}
    for i, char in enumerate(ARGS):
        items = extraction.feed_text(char)
        if items:
            got[i + 1] = names(items)
    assert got == {ends[0]: ["Ann"], ends[1]: ["Bob"], ends[2]: ["Cy"]}
    assert extraction.delivered == 3
    assert extraction.close() == []
    extraction.raise_for_outcome()


def test_one_feed_can_complete_several_items() -> None:
    extraction = content()
    cut = ARGS.index(compact(CY)) + 3
    assert names(extraction.feed_text(ARGS[:cut])) == ["Ann", "Bob"]
    assert names(extraction.feed_text(ARGS[cut:])) == ["Cy"]


def test_nothing_comes_out_before_the_closing_brace() -> None:
    extraction = content()
    item = compact(ANN)
    assert extraction.feed_text('{"tasks": [' + item[:-1]) == []
    assert names(extraction.feed_text(item[-1])) == ["Ann"]


def test_items_are_validated_instances() -> None:
    extraction = content()
    items = extraction.feed_text('{"tasks": [{"name": "Ann", "age": "31"}]}')
    assert items == [User(name="Ann", age=31)]
    assert type(items[0]) is User


def test_feed_bytes_yields_at_the_event_that_closes_an_item() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    pieces = [ARGS[i : i + 7] for i in range(0, len(ARGS), 7)]
    stream = [sse(tool_delta(p)) for p in pieces] + [sse(finish("tool_calls")), b"data: [DONE]\n\n"]
    got = [names(extraction.feed_bytes(event)) for event in stream]
    assert [n for n in got if n] == [["Ann"], ["Bob"], ["Cy"]]
    assert got[-2:] == [[], []]
    assert extraction.finish_reason == "tool_calls"
    assert extraction.close() == []
    extraction.raise_for_outcome()


def test_feed_bytes_any_split_of_an_event() -> None:
    data = b"".join(sse(tool_delta(ARGS[i : i + 5])) for i in range(0, len(ARGS), 5))
    for cut in range(len(data) + 1):
        extraction = Extraction(USER, OpenAIChatDecoder())
        items = extraction.feed_bytes(data[:cut]) + extraction.feed_bytes(data[cut:])
        assert names(items + extraction.close()) == ["Ann", "Bob", "Cy"], cut
        extraction.raise_for_outcome()


def test_feed_event_and_feed_payload() -> None:
    by_event = Extraction(USER, OpenAIChatDecoder())
    by_payload = Extraction(USER, OpenAIChatDecoder())
    half = len(ARGS) // 2
    for part in (ARGS[:half], ARGS[half:]):
        payload = tool_delta(part)
        assert by_event.feed_event(ServerSentEvent(compact(payload))) == by_payload.feed_payload(
            payload
        )
    assert by_event.feed_event(ServerSentEvent("[DONE]")) == []
    assert by_event.decoder.ended
    assert by_event.delivered == by_payload.delivered == 3


def test_anthropic_events_by_name() -> None:
    extraction = Extraction(USER, AnthropicDecoder())
    block = {"type": "tool_use", "id": "toolu_1", "name": "MultiUser", "input": {}}
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    delta = {"type": "input_json_delta", "partial_json": ARGS}
    assert extraction.feed_bytes(sse(start, "content_block_start")) == []
    got = extraction.feed_bytes(
        sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    )
    assert names(got) == ["Ann", "Bob", "Cy"]


# -- errors partway through a feed ----------------------------------------------------------------

BAD_BOB = {"name": "Bob", "age": "forty-two"}


def test_invalid_item_is_raised_after_the_items_before_it() -> None:
    extraction = content()
    text = compact({"tasks": [ANN, BAD_BOB, CY]})
    assert names(extraction.feed_text(text)) == ["Ann"]  # Cy, after the bad one, is not
    with pytest.raises(ItemValidationError) as info:
        extraction.feed_text("")
    assert info.value.index == 1
    assert info.value.raw == BAD_BOB
    assert info.value.errors[0]["loc"] == ("age",)
    # It stays raised: by every later call and by raise_for_outcome.
    with pytest.raises(ItemValidationError):
        extraction.feed_text("more")
    assert extraction.close() == []
    with pytest.raises(ItemValidationError):
        extraction.raise_for_outcome()
    assert extraction.delivered == 1


def test_invalid_item_raised_by_close() -> None:
    extraction = content()
    assert names(extraction.feed_text(compact({"tasks": [ANN, BAD_BOB]}))) == ["Ann"]
    assert extraction.close() == []
    with pytest.raises(ItemValidationError) as info:
        extraction.raise_for_outcome()
    assert info.value.index == 1


def test_invalid_first_item_raises_at_once() -> None:
    extraction = content()
    with pytest.raises(ItemValidationError) as info:
        extraction.feed_text(compact({"tasks": [BAD_BOB, ANN]}))
    assert info.value.index == 0
    assert extraction.delivered == 0


def test_invalid_item_in_a_later_feed_raises_at_once() -> None:
    extraction = content()
    assert names(extraction.feed_text('{"tasks":[' + compact(ANN) + ",")) == ["Ann"]
    with pytest.raises(ItemValidationError) as info:
        extraction.feed_text(compact({"name": " ", "age": 1}) + "]}")
    assert info.value.index == 1
    assert "blank name" in str(info.value)


def test_malformed_json_after_items() -> None:
    extraction = content()
    text = '{"tasks":[' + compact(ANN) + "," + compact(BOB) + ", oops]}"
    assert names(extraction.feed_text(text)) == ["Ann", "Bob"]
    with pytest.raises(MalformedOutputError) as info:
        extraction.feed_text(" more")
    assert info.value.offset is not None
    assert extraction.close() == []
    with pytest.raises(MalformedOutputError):
        extraction.raise_for_outcome()


def test_malformed_json_after_items_raised_by_close() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    text = '{"tasks":[' + compact(ANN) + ", oops]}"
    assert names(extraction.feed_bytes(sse(tool_delta(text)))) == ["Ann"]
    # Events without answer text (finish, usage, [DONE]) do not reach the parser ...
    assert extraction.feed_bytes(sse(finish("tool_calls")) + b"data: [DONE]\n\n") == []
    # ... so close() is where the error comes out.
    assert extraction.close() == []
    with pytest.raises(MalformedOutputError, match="malformed JSON"):
        extraction.raise_for_outcome()


def test_malformed_json_at_the_start_raises_at_once() -> None:
    extraction = content()
    with pytest.raises(MalformedOutputError):
        extraction.feed_text('{"tasks": [nope')


def test_error_event_after_items_in_the_same_feed() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    cut = ARGS.index(compact(BOB)) + len(compact(BOB)) + 4
    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}
    data = sse(tool_delta(ARGS[:cut])) + sse(error) + sse(tool_delta(ARGS[cut:]))
    assert names(extraction.feed_bytes(data)) == ["Ann", "Bob"]
    with pytest.raises(StreamError) as info:
        extraction.feed_bytes(b"data: [DONE]\n\n")
    assert info.value.error_type == "rate_limit_exceeded"
    assert extraction.close() == []
    with pytest.raises(StreamError):
        extraction.raise_for_outcome()


def test_error_event_raised_by_close_after_the_last_feed() -> None:
    extraction = Extraction(USER, AnthropicDecoder())
    block = {"type": "tool_use", "id": "toolu_1", "name": "MultiUser", "input": {}}
    delta = {"type": "input_json_delta", "partial_json": ARGS[: ARGS.index(compact(BOB))]}
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = (
        sse({"type": "content_block_start", "index": 0, "content_block": block})
        + sse({"type": "content_block_delta", "index": 0, "delta": delta})
        + sse(error, "error")
    )
    assert names(extraction.feed_bytes(data)) == ["Ann"]
    assert extraction.close() == []
    with pytest.raises(StreamError) as info:
        extraction.raise_for_outcome()
    assert info.value.error_type == "overloaded_error"


def test_error_payload_before_any_item_raises_at_once() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    with pytest.raises(StreamError) as info:
        extraction.feed_payload({"error": {"message": "boom", "code": "server_error"}})
    assert info.value.error_type == "server_error"
    with pytest.raises(StreamError):
        extraction.feed_payload(tool_delta(ARGS))


def test_undecodable_event_data() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    with pytest.raises(Exception, match="not JSON"):
        extraction.feed_bytes(b"data: {not json\n\n")


# -- close() and raise_for_outcome() --------------------------------------------------------------


def test_complete_answer_has_no_outcome_error() -> None:
    extraction = content()
    assert len(extraction.feed_text(ARGS)) == 3
    assert extraction.close() == []
    extraction.raise_for_outcome()
    extraction.raise_for_outcome()  # idempotent


def test_a_number_at_the_cut_is_not_an_item() -> None:
    """`3` might have been `30`: a scalar is complete only when what follows it is seen."""
    numbers = Extraction(TypeAdapter(int), OpenAIChatDecoder("content"))
    assert numbers.feed_text('{"tasks": [1, 2, 3') == [1, 2]
    assert numbers.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        numbers.raise_for_outcome()
    assert info.value.items_delivered == 2


def test_string_items_come_out_at_their_closing_quote() -> None:
    strings = Extraction(TypeAdapter(str), OpenAIChatDecoder("content"))
    # `c\\` is a backslash: the quote after it closes the string
    assert strings.feed_text('{"tasks": ["a, b", "c\\\\"') == ["a, b", "c\\"]
    assert strings.feed_text(', "d') == []
    assert strings.feed_text('\\"') == []  # an escaped quote closes nothing
    assert strings.feed_text('"]}') == ['d"']


def test_held_prose_comes_out_at_close() -> None:
    """Under "auto", message text that does not start a JSON line is held to the end."""
    extraction = Extraction(USER, OpenAIChatDecoder())
    delta = {"content": "Sure: " + ARGS}
    assert extraction.feed_payload({"choices": [{"index": 0, "delta": delta}]}) == []
    assert names(extraction.close()) == ["Ann", "Bob", "Cy"]
    extraction.raise_for_outcome()
    assert extraction.delivered == 3


def test_truncated_stream_without_finish_reason() -> None:
    extraction = content()
    cut = ARGS.index(compact(BOB)) + 5
    assert names(extraction.feed_text(ARGS[:cut])) == ["Ann"]
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        extraction.raise_for_outcome()
    assert info.value.items_delivered == 1
    assert info.value.finish_reason is None


@pytest.mark.parametrize(
    ("decoder", "reason"),
    [(OpenAIChatDecoder(), "length"), (AnthropicDecoder(), "max_tokens")],
    ids=["openai", "anthropic"],
)
def test_truncated_by_the_token_limit(decoder: ProviderDecoder, reason: str) -> None:
    extraction = Extraction(USER, decoder)
    cut = ARGS.index(compact(CY)) + 2
    assert names(extraction.feed_text(ARGS[:cut])) == ["Ann", "Bob"]
    decoder.finish_reason = reason
    assert extraction.finish_reason == reason
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        extraction.raise_for_outcome()
    assert info.value.finish_reason == reason
    assert info.value.items_delivered == 2
    assert "raise max_tokens" in str(info.value)


def test_length_after_a_complete_answer_is_not_an_error() -> None:
    extraction = content()
    extraction.feed_payload(
        {"choices": [{"index": 0, "delta": {"content": ARGS}, "finish_reason": "length"}]}
    )
    assert extraction.close() == []
    extraction.raise_for_outcome()


def test_refusal() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    for word in ["I'm", " sorry", "."]:
        payload = {"choices": [{"index": 0, "delta": {"refusal": word}}]}
        assert extraction.feed_payload(payload) == []
    extraction.feed_payload(finish("stop"))
    assert extraction.close() == []
    with pytest.raises(RefusalError) as info:
        extraction.raise_for_outcome()
    assert info.value.refusal == "I'm sorry."
    assert not isinstance(info.value, ContentFilterError)


def test_refusal_wins_over_a_truncated_answer() -> None:
    extraction = content()
    assert names(extraction.feed_text(ARGS[: ARGS.index(compact(BOB))])) == ["Ann"]
    extraction.decoder.refusal = "No more."
    assert extraction.close() == []
    with pytest.raises(RefusalError):
        extraction.raise_for_outcome()


def test_content_filter() -> None:
    extraction = content()
    assert names(extraction.feed_text(ARGS[: ARGS.index(compact(BOB)) + 3])) == ["Ann"]
    extraction.feed_payload(finish("content_filter"))
    assert extraction.close() == []
    with pytest.raises(ContentFilterError) as info:
        extraction.raise_for_outcome()
    assert "after 1 item(s)" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no JSON"),
        ("I found no users in the text.", "holds no JSON"),
        ('{"users": []}', "no 'tasks' list"),
    ],
    ids=["nothing", "prose", "no-tasks"],
)
def test_malformed_outcome(text: str, message: str) -> None:
    extraction = content()
    assert extraction.feed_text(text) == []
    assert extraction.close() == []
    with pytest.raises(MalformedOutputError, match=message):
        extraction.raise_for_outcome()


def test_bare_array_is_accepted() -> None:
    extraction = content()
    assert names(extraction.feed_text(compact([ANN, BOB]))) == ["Ann", "Bob"]
    assert extraction.close() == []
    extraction.raise_for_outcome()


def test_other_keys_around_tasks_are_ignored() -> None:
    extraction = content()
    text = compact({"note": "x", "tasks": [ANN], "count": 1})
    assert names(extraction.feed_text(text)) == ["Ann"]
    assert extraction.close() == []
    extraction.raise_for_outcome()


# -- after close -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["feed_text", "feed_bytes", "feed_payload", "feed_event"])
def test_feeding_after_close_raises(method: str) -> None:
    extraction = content()
    extraction.feed_text(ARGS)
    assert extraction.close() == []
    extraction.raise_for_outcome()
    value: Any = {
        "feed_text": "x",
        "feed_bytes": b"data: {}\n\n",
        "feed_payload": {"choices": []},
        "feed_event": ServerSentEvent("{}"),
    }[method]
    with pytest.raises(RuntimeError, match="closed"):
        getattr(extraction, method)(value)


def test_close_twice_returns_nothing_more() -> None:
    extraction = content()
    extraction.feed_text(ARGS[:-2])
    assert extraction.close() == []
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError):
        extraction.raise_for_outcome()


def test_feeding_after_a_pending_error_raises_that_error() -> None:
    extraction = content()
    extraction.feed_text(compact({"tasks": [ANN, BAD_BOB]}))
    extraction.close()
    with pytest.raises(ItemValidationError):
        extraction.feed_text("x")


# -- on_invalid="skip" -----------------------------------------------------------------------------


def test_skip_invalid_items() -> None:
    extraction = content(on_invalid="skip")
    blank = {"name": "  ", "age": 5}
    text = compact({"tasks": [ANN, BAD_BOB, CY, blank, "not an object"]})
    assert names(extraction.feed_text(text[:40])) == ["Ann"]
    assert names(extraction.feed_text(text[40:])) == ["Cy"]
    assert extraction.close() == []
    extraction.raise_for_outcome()
    assert extraction.delivered == 2
    skipped = extraction.skipped
    assert [s.index for s in skipped] == [1, 3, 4]
    assert [s.raw for s in skipped] == [BAD_BOB, blank, "not an object"]
    assert all(isinstance(s.error, ValidationError) for s in skipped)
    assert skipped[0].error.errors()[0]["loc"] == ("age",)


def test_skip_does_not_hide_truncation() -> None:
    extraction = content(on_invalid="skip")
    text = compact({"tasks": [BAD_BOB, ANN, BOB]})
    assert names(extraction.feed_text(text[:-10])) == ["Ann"]
    assert extraction.close() == []
    with pytest.raises(IncompleteOutputError) as info:
        extraction.raise_for_outcome()
    assert info.value.items_delivered == 1
    assert [s.index for s in extraction.skipped] == [0]


def test_raise_mode_skips_nothing() -> None:
    extraction = content()
    extraction.feed_text(compact({"tasks": [ANN, BAD_BOB]}))
    assert extraction.skipped == []


def test_unknown_on_invalid_is_rejected() -> None:
    with pytest.raises(ValueError, match="on_invalid"):
        content(on_invalid="ignore")


def test_validation_context_reaches_validators() -> None:
    class Scaled(BaseModel):
        value: int

        @field_validator("value")
        @classmethod
        def scale(cls, value: int, info: Any) -> int:
            return value * info.context["factor"]

    extraction = Extraction(
        TypeAdapter(Scaled), OpenAIChatDecoder("content"), validation_context={"factor": 10}
    )
    items = extraction.feed_text('{"tasks":[{"value":1},{"value":2}]}')
    assert [s.value for s in items] == [10, 20]


# -- usage -----------------------------------------------------------------------------------------


def test_usage_and_finish_reason() -> None:
    extraction = Extraction(USER, OpenAIChatDecoder())
    assert extraction.usage is None
    assert extraction.finish_reason is None
    extraction.feed_payload(tool_delta(ARGS))
    extraction.feed_payload(finish("tool_calls"))
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    extraction.feed_payload({"choices": [], "usage": usage})
    assert extraction.finish_reason == "tool_calls"
    assert extraction.usage is not None
    assert (extraction.usage.input_tokens, extraction.usage.output_tokens) == (10, 20)
    assert extraction.usage.total_tokens == 30
