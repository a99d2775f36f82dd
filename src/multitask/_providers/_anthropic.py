"""Reading Anthropic messages streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from .._exceptions import StreamError
from .._parts import Parts
from .._prompt import Message, json_instructions
from ._base import AnswerSource, ProviderDecoder, Usage
from ._content import ANTHROPIC_LIMITS, anthropic_message
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["Anthropic", "AnthropicDecoder"]


class AnthropicDecoder(ProviderDecoder):
    """Decodes `message_start` ... `message_stop` events.

    The answer is the first `tool_use` block's `input_json_delta` fragments (a text block
    before it is ignored), or the text under "content". `ping` is ignored; `error` raises.
    """

    TRUNCATED = frozenset({"max_tokens", "model_context_window_exceeded"})
    REFUSED = frozenset({"refusal"})

    def __init__(self, source: Any = "auto", *, fast: bool | None = None) -> None:
        super().__init__(source, fast=fast)
        self._block: int | None = None  # index of the tool_use block that is the answer
        self._text_blocks: set[int] = set()
        self._call_blocks: set[Any] = set()  # under "calls": every tool_use block

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        kind = obj.get("type", event)
        if kind == "content_block_delta":
            delta = obj["delta"]
            index = obj.get("index")
            dtype = delta.get("type")
            if dtype == "input_json_delta":
                if index in self._call_blocks:
                    self._call(index, delta.get("partial_json") or "")
                    return ""
                return (delta.get("partial_json") or "") if index == self._block else ""
            if dtype == "text_delta" and index in self._text_blocks:
                return self._content(delta.get("text") or "")
            return ""
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            btype = block.get("type")
            if btype == "tool_use" and self.source == "calls":
                index = obj.get("index")
                self._call_blocks.add(index)
                self._call(index, to_json(block["input"]).decode() if block.get("input") else "")
            elif btype == "tool_use" and self._block is None and self._tool():
                self._block = obj.get("index")
                initial = block.get("input")
                if initial:  # a server that sends the whole input at the start
                    return to_json(initial).decode()
            elif btype == "text":
                self._text_blocks.add(obj.get("index", 0))
                return self._content(block.get("text") or "")
            return ""
        if kind == "message_start":
            usage = (obj.get("message") or {}).get("usage")
            if usage:
                self.usage = Usage(_input_tokens(usage), usage.get("output_tokens") or 0, usage)
            return ""
        if kind == "message_delta":
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = reason
                details = (obj.get("delta") or {}).get("stop_details") or {}
                if reason == "refusal" and isinstance(details, Mapping):
                    self.refusal = str(details.get("explanation") or "")
            usage = obj.get("usage")
            if usage:
                previous = self.usage or Usage()
                input_tokens = _input_tokens(usage) or previous.input_tokens
                output = usage.get("output_tokens")
                if output is None:  # absent; 0 is a real count (a refusal's, say)
                    output = previous.output_tokens
                self.usage = Usage(input_tokens, output, {**previous.raw, **usage})
            return ""
        if kind == "message_stop":
            self.ended = True
            return ""
        if kind == "error":
            error = obj.get("error") or {}
            message = error.get("message") or "error"
            etype = error.get("type")
            raise StreamError(
                f"the provider reported an error mid-stream: {etype}: {message}",
                error_type=etype,
                body=dict(obj),
            )
        return ""

    # pyright 1.1.414 takes this method for a callable of (self, obj) against the base's
    # `Callable | None` (it binds self only for a plain `Callable`); mypy accepts it.
    def answer_fragment(self, obj: Mapping[str, Any]) -> str | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The fast hook (see `ProviderDecoder`): a `content_block_delta` of the answer, the
        tool block's `input_json_delta` (outside parallel mode, where no block is the
        answer), or a text block's `text_delta` once the text is the answer."""
        if obj.get("type") != "content_block_delta":
            return None
        delta = obj["delta"]
        dtype = delta.get("type")
        index = obj.get("index")
        if dtype == "input_json_delta":
            if index != self._block or self._block is None:
                return None
            text = delta.get("partial_json")
        elif dtype == "text_delta" and self.source == "content" and index in self._text_blocks:
            text = delta.get("text")
        else:
            return None
        return text if type(text) is str else None


def _input_tokens(usage: Mapping[str, Any]) -> int:
    return int(
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )


#: The API version multitask speaks.
ANTHROPIC_VERSION = "2023-06-01"
#: Anthropic requires max_tokens; this is used when the caller gives none.
DEFAULT_MAX_TOKENS = 8192


class Anthropic(Provider):
    """Anthropic messages: `POST {base_url}/v1/messages`, `x-api-key`, SSE answer.

    `base_url` has no `/v1`, as `ANTHROPIC_BASE_URL` has none for the official SDK. The tool
    is sent with `eager_input_streaming`, so the API streams its input as it is written
    instead of buffering it whole.
    """

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    base_url_env = "ANTHROPIC_BASE_URL"
    api_key_env = ("ANTHROPIC_API_KEY",)
    modes = frozenset({"tools", "json", "parallel_tools"})
    part_limits = ANTHROPIC_LIMITS

    def endpoint(self, spec: RequestSpec) -> str:
        return f"{self.base_url}/v1/messages"

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        schema = spec.schema
        system = spec.system
        body: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": spec.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": True,
        }
        if spec.mode == "tools":
            tool = {**schema.anthropic_schema, "eager_input_streaming": True}
            body["tools"] = [tool]
            body["tool_choice"] = {"type": "tool", "name": tool["name"]}
        elif spec.mode == "parallel_tools":
            function = schema.item_function
            body["tools"] = [
                {
                    "name": function["name"],
                    "description": function["description"],
                    "input_schema": function["parameters"],
                    "eager_input_streaming": True,
                }
            ]
            body["tool_choice"] = {"type": "any"}
        else:
            system = f"{system}\n\n{json_instructions(schema.openai_schema['parameters'])}"
        body["system"] = system
        body["messages"] = list(spec.messages)
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        return body

    def parts_message(self, parts: Parts) -> Message:
        """`text`, `image` (base64 or URL source) and `document` (base64 PDF) blocks."""
        return anthropic_message(parts, self.part_limits)

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        return AnthropicDecoder(source)


register_provider("anthropic", Anthropic)
