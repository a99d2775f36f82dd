"""Where the answer is in a provider's finished response, and which decoder reads its stream.

`MultiTaskModel.from_response` and `from_streaming_response` take what an SDK returned rather
than a stream we asked for; what those objects look like is provider knowledge, so it lives
here beside the decoders. One function per shape: an OpenAI chat completion, an Anthropic
message, and the first chunk of either's stream. Each takes the response as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from .._exceptions import MalformedOutputError
from ._anthropic import AnthropicDecoder
from ._base import ProviderDecoder
from ._openai_chat import OpenAIChatDecoder

__all__ = [
    "ANTHROPIC_EVENTS",
    "anthropic_message_answer",
    "finished_answer",
    "openai_chat_answer",
    "stream_decoder",
]

#: The `type` of every event in an Anthropic stream: what tells its chunks from OpenAI's.
ANTHROPIC_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)


def finished_answer(response: Mapping[str, Any]) -> tuple[ProviderDecoder, str]:
    """The answer's JSON text in a finished response, and a decoder holding how it ended.

    The decoder carries the finish reason and any refusal, for the extraction's outcome.
    Raises `MalformedOutputError` for a response of neither shape.
    """
    if "choices" in response:
        return openai_chat_answer(response)
    if isinstance(response.get("content"), list):
        return anthropic_message_answer(response)
    raise MalformedOutputError(
        "not a chat completion or message: expected 'choices' (OpenAI) or a 'content' "
        f"list (Anthropic), got keys {sorted(response)}"
    )


def openai_chat_answer(response: Mapping[str, Any]) -> tuple[OpenAIChatDecoder, str]:
    """An OpenAI `ChatCompletion`: the answer in `tool_calls`, `function_call` or `content`."""
    decoder = OpenAIChatDecoder()
    choices = response.get("choices") or []
    if not choices:
        raise MalformedOutputError("the completion has no choices")
    choice = choices[0]
    decoder.finish_reason = choice.get("finish_reason")
    message = choice.get("message") or {}
    decoder.refusal = message.get("refusal") or ""
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        return decoder, str(function.get("arguments") or "")
    function_call = message.get("function_call")
    if function_call:
        return decoder, str(function_call.get("arguments") or "")
    return decoder, str(message.get("content") or "")


def anthropic_message_answer(response: Mapping[str, Any]) -> tuple[AnthropicDecoder, str]:
    """An Anthropic `Message`: the first `tool_use` block's input, else its text blocks."""
    decoder = AnthropicDecoder()
    decoder.finish_reason = response.get("stop_reason")
    if decoder.finish_reason == "refusal":
        details = response.get("stop_details") or {}
        decoder.refusal = str(details.get("explanation") or "") if details else ""
    text = []
    for block in response["content"]:
        if block.get("type") == "tool_use":
            # A cut-off tool input comes back parsed as far as it went (often `{}`), so its
            # JSON looks whole: the stop reason is the only sign it was cut off.
            cut_off = (
                decoder.outcome_error(0) if decoder.finish_reason in decoder.TRUNCATED else None
            )
            if cut_off is not None:
                raise cut_off
            return decoder, to_json(block.get("input") or {}).decode()
        if block.get("type") == "text":
            text.append(block.get("text") or "")
    return decoder, "".join(text)


def stream_decoder(first_chunk: Mapping[str, Any]) -> ProviderDecoder:
    """The decoder for an SDK's stream, judged by its first chunk (Anthropic's or OpenAI's).

    It reads the answer from whichever comes first, a tool call or JSON in the text.
    """
    if first_chunk.get("type") in ANTHROPIC_EVENTS:
        return AnthropicDecoder("auto")
    return OpenAIChatDecoder("auto")
