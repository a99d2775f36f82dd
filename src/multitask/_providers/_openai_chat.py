"""Reading OpenAI chat-completions streams (and the many servers that copy them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._exceptions import StreamError
from .._prompt import json_instructions
from .._sse import ServerSentEvent
from ._base import AnswerSource, StreamDecoder, Usage
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["OpenAIChat", "OpenAIChatDecoder"]


class OpenAIChatDecoder(StreamDecoder):
    """Decodes `chat.completion.chunk` events.

    The answer is the first tool call's (or legacy `function_call`'s) arguments, or the
    message content. Tolerates what compatible servers do: tool calls without `index`, the
    whole arguments in one chunk, usage on the last content chunk, `reasoning_content`.
    """

    TRUNCATED = frozenset({"length"})
    FILTERED = frozenset({"content_filter"})

    def __init__(self, source: Any = "auto") -> None:
        super().__init__(source)
        self._call: object = None  # the index (or id) of the tool call that is the answer

    def event(self, event: ServerSentEvent) -> str:
        if event.data == "[DONE]":
            self.ended = True
            return ""
        return super().event(event)

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        error = obj.get("error")
        if error is not None and not obj.get("choices"):
            raise _stream_error(error)
        usage = obj.get("usage")
        if usage:
            self.usage = Usage(
                usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, usage
            )
        choices = obj.get("choices")
        if not choices:
            return ""
        choice = choices[0]
        if choice.get("index", 0):  # with n > 1, the first choice is the answer
            for choice in choices:
                if not choice.get("index", 0):
                    break
            else:
                return ""
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = reason
        delta = choice.get("delta")
        if not delta:
            return ""
        calls = delta.get("tool_calls")
        if calls:
            if not self._tool():
                return ""
            text = ""
            for call in calls:
                key = call.get("index", call.get("id"))
                if self._call is None:
                    self._call = key
                elif key is not None and key != self._call:
                    continue  # a second tool call: not the answer (see parallel mode)
                function = call.get("function")
                if function:
                    text += function.get("arguments") or ""
            return text
        function_call = delta.get("function_call")
        if function_call:
            return (function_call.get("arguments") or "") if self._tool() else ""
        content = delta.get("content")
        if content:
            return self._content(content)
        refusal = delta.get("refusal")
        if refusal:
            self.refusal += refusal
        return ""


def _stream_error(error: Any) -> StreamError:
    if isinstance(error, Mapping):
        message = str(error.get("message") or "error")
        kind = error.get("type") or error.get("code")
        return StreamError(
            f"the provider reported an error mid-stream: {message}",
            error_type=str(kind) if kind else None,
            body=dict(error),
        )
    return StreamError(f"the provider reported an error mid-stream: {error}", body=error)


class OpenAIChat(Provider):
    """OpenAI chat completions: `POST {base_url}/chat/completions`, bearer key, SSE answer.

    `base_url` ends in `/v1`, as `OPENAI_BASE_URL` does for the official SDK.
    """

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    api_key_env = ("OPENAI_API_KEY",)
    modes = frozenset({"tools", "json_schema", "json", "functions"})

    def endpoint(self, spec: RequestSpec) -> str:
        return f"{self.base_url}/chat/completions"

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        schema = spec.schema
        system = spec.system
        body: dict[str, Any] = {"model": spec.model, "stream": True}
        name = schema.openai_schema["name"]
        if spec.mode == "tools":
            body["tools"] = [schema.openai_tool]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
            body["parallel_tool_calls"] = False
        elif spec.mode == "functions":
            body["functions"] = [schema.openai_schema]
            body["function_call"] = {"name": name}
        elif spec.mode == "json_schema":
            body["response_format"] = schema.openai_response_format
        else:
            body["response_format"] = {"type": "json_object"}
            system = f"{system}\n\n{json_instructions(schema.openai_schema['parameters'])}"
        body["messages"] = [{"role": "system", "content": system}, *spec.messages]
        body["stream_options"] = {"include_usage": True}
        if spec.max_tokens is not None:
            key = "max_completion_tokens" if self._official else "max_tokens"
            body[key] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        return body

    @property
    def _official(self) -> bool:
        return self.base_url == self.default_base_url

    def make_decoder(self, source: AnswerSource) -> StreamDecoder:
        return OpenAIChatDecoder(source)


register_provider("openai", OpenAIChat)
