"""OpenAI's Responses API: `POST {base_url}/responses`, with `event:`-named SSE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._exceptions import StreamError
from .._parts import Parts
from .._prompt import Message, json_instructions
from ._base import AnswerSource, ProviderDecoder, Usage
from ._content import OPENAI_LIMITS, responses_message
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["OpenAIResponses", "OpenAIResponsesDecoder"]


class OpenAIResponsesDecoder(ProviderDecoder):
    """Decodes `response.*` events.

    The answer is the first function call's `response.function_call_arguments.delta`s, or
    the `response.output_text.delta`s. The stream ends with `response.completed`,
    `response.incomplete` (its reason becomes the finish reason) or `response.failed`.
    """

    TRUNCATED = frozenset({"max_output_tokens"})
    FILTERED = frozenset({"content_filter"})

    def __init__(self, source: AnswerSource = "auto", *, fast: bool | None = None) -> None:
        super().__init__(source, fast=fast)
        self._answer: Any = None  # item_id (or output_index) of the call that is the answer

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        kind = obj.get("type") or event
        if kind == "response.function_call_arguments.delta":
            key = obj.get("item_id", obj.get("output_index"))
            if self.source == "calls":
                self._call(key, str(obj.get("delta") or ""))
                return ""
            if not self._tool():
                return ""
            if self._answer is None:
                self._answer = key
            elif key != self._answer:
                return ""
            return str(obj.get("delta") or "")
        if kind == "response.output_text.delta":
            return self._content(str(obj.get("delta") or ""))
        if kind == "response.refusal.delta":
            self.refusal += str(obj.get("delta") or "")
            return ""
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._finish(kind, obj.get("response") or {})
            return ""
        if kind == "error":
            error = obj.get("error")
            if not isinstance(error, Mapping):
                error = obj
            code = error.get("code") or error.get("type")
            raise StreamError(
                f"the provider reported an error mid-stream: {code}: "
                f"{error.get('message') or 'error'}",
                error_type=str(code) if code else None,
                body=dict(obj),
            )
        return ""

    def _finish(self, kind: str, response: Mapping[str, Any]) -> None:
        self.ended = True
        usage = response.get("usage")
        if usage:
            self.usage = Usage(
                usage.get("input_tokens") or 0, usage.get("output_tokens") or 0, dict(usage)
            )
        if kind == "response.completed":
            self.finish_reason = str(response.get("status") or "completed")
        elif kind == "response.incomplete":
            details = response.get("incomplete_details") or {}
            self.finish_reason = str(details.get("reason") or "incomplete")
        else:
            error = response.get("error") or {}
            code = error.get("code")
            raise StreamError(
                f"the response failed: {code}: {error.get('message') or 'no message'}",
                error_type=str(code) if code else None,
                body=dict(response),
            )


class OpenAIResponses(Provider):
    """OpenAI's Responses API (`openai-responses:`): a function tool or `text.format`."""

    name = "openai-responses"
    default_base_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    api_key_env = ("OPENAI_API_KEY",)
    modes = frozenset({"tools", "json_schema", "json", "parallel_tools"})
    part_limits = OPENAI_LIMITS

    def endpoint(self, spec: RequestSpec) -> str:
        return f"{self.base_url}/responses"

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        schema = spec.schema
        function = schema.openai_schema
        instructions = spec.system
        body: dict[str, Any] = {"model": spec.model, "stream": True}
        if spec.mode == "tools":
            body["tools"] = [
                {
                    "type": "function",
                    "name": function["name"],
                    "description": function["description"],
                    "parameters": function["parameters"],
                    "strict": False,
                }
            ]
            body["tool_choice"] = {"type": "function", "name": function["name"]}
            body["parallel_tool_calls"] = False
        elif spec.mode == "parallel_tools":
            item = schema.item_function
            body["tools"] = [{"type": "function", **item, "strict": False}]
            body["tool_choice"] = "required"
            body["parallel_tool_calls"] = True
        elif spec.mode == "json_schema":
            body["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": function["name"],
                    "description": function["description"],
                    "schema": schema.openai_strict_schema,
                    "strict": True,
                }
            }
        else:
            body["text"] = {"format": {"type": "json_object"}}
            instructions = f"{instructions}\n\n{json_instructions(function['parameters'])}"
        body["instructions"] = instructions
        body["input"] = list(spec.messages)
        if spec.max_tokens is not None:
            body["max_output_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        return body

    def parts_message(self, parts: Parts) -> Message:
        """`input_text`, `input_image` and `input_file` (PDF) content parts."""
        return responses_message(parts, self.part_limits)

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        return OpenAIResponsesDecoder(source)


register_provider("openai-responses", OpenAIResponses)
