"""Reading OpenAI chat-completions streams (and the many servers that copy them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._exceptions import StreamError
from .._parts import Parts
from .._prompt import Message, json_instructions
from ._base import AnswerSource, ProviderDecoder, Usage
from ._content import OPENAI_LIMITS, PartLimits, openai_chat_message
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["OpenAIChat", "OpenAIChatDecoder"]

_ABSENT = object()


class OpenAIChatDecoder(ProviderDecoder):
    """Decodes `chat.completion.chunk` events.

    The answer is the first tool call's (or legacy `function_call`'s) arguments, or the
    message content. Tolerates what compatible servers do: tool calls without `index`, the
    whole arguments in one chunk, usage on the last content chunk, `reasoning_content`.
    """

    TRUNCATED = frozenset({"length"})
    FILTERED = frozenset({"content_filter"})
    IGNORED_LAST_MEMBER = b',"obfuscation":"'

    def __init__(self, source: Any = "auto", *, fast: bool | None = None) -> None:
        super().__init__(source, fast=fast)
        self._answer: object = None  # the index (or id) of the tool call that is the answer
        self._ids: dict[str, int] = {}  # under "calls", for servers that send no index
        self._last: object = 0

    def _parallel(self, calls: list[Any]) -> None:
        """Under "calls": each tool call's arguments, keyed by index (or id, or the last)."""
        for call in calls:
            key = call.get("index")
            if key is None:
                call_id = call.get("id")
                key = self._ids.setdefault(call_id, len(self._ids)) if call_id else self._last
            self._last = key
            function = call.get("function") or {}
            self._call(key, function.get("arguments") or "")

    def _not_json(self, data: str, event: str) -> str:
        if data == "[DONE]":
            self.ended = True
            return ""
        return super()._not_json(data, event)

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        choices = obj.get("choices")
        if not choices:
            error = obj.get("error")
            if error is not None:
                raise _stream_error(error)
            usage = obj.get("usage")
            if usage:
                self._usage(usage)
            return ""
        usage = obj.get("usage")
        if usage:
            self._usage(usage)
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
            if self.source == "calls":
                self._parallel(calls)
                return ""
            if not self._tool():
                return ""
            text = ""
            for call in calls:
                key = call.get("index", call.get("id"))
                if self._answer is None:
                    self._answer = key
                elif key is not None and key != self._answer:
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

    def _usage(self, usage: Any) -> None:
        self.usage = Usage(
            usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, usage
        )

    # pyright 1.1.414 takes this method for a callable of (self, obj) against the base's
    # `Callable | None` (it binds self only for a plain `Callable`); mypy accepts it.
    def answer_fragment(self, obj: Mapping[str, Any]) -> str | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The fast hook (see `ProviderDecoder`): a chunk that is one fragment of the answer
        (the answer call's arguments, or the content once the content is the answer) and
        nothing else: no finish reason, usage, other choice or call, or refusal that an
        empty fragment would let through. `payload`'s own lookups, on its common path."""
        choices = obj.get("choices")
        if not choices or obj.get("usage"):
            return None
        choice = choices[0]
        if choice.get("index", 0) or choice.get("finish_reason"):
            return None
        delta = choice.get("delta")
        if not delta:
            return None
        source = self.source
        if source == "tool":
            # `_tool()` says yes and changes nothing; one call, the answer's.
            if self._answer is None or not self._tool_seen:
                return None
            calls = delta.get("tool_calls")
            if not calls:
                return None
            [call] = calls  # (more than one: declined, by raising)
            key = call.get("index", _ABSENT)
            if key is _ABSENT:  # `payload`'s key; its `id` is looked up only if needed
                key = call.get("id")
            if key != self._answer:
                return None
            function = call.get("function")
            arguments = function.get("arguments") if function else None
        elif source == "content":
            if delta.get("tool_calls") or delta.get("function_call") or delta.get("refusal"):
                return None
            arguments = delta.get("content")
        else:
            return None
        return arguments if type(arguments) is str else None


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

    `base_url` ends in `/v1`, as `OPENAI_BASE_URL` does for the official SDK. The class
    attributes below are the quirks OpenAI-compatible servers differ in.
    """

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    api_key_env = ("OPENAI_API_KEY",)
    modes = frozenset({"tools", "json_schema", "json", "functions", "parallel_tools"})
    #: How to force the tool: OpenAI's `{"type": "function", ...}` object, or a string
    #: (`"required"`, `"any"`) for servers that take no object.
    tool_choice: ClassVar[str] = "function"
    #: Whether to ask for usage on the last chunk with `stream_options` (some servers reject it).
    stream_usage: ClassVar[bool] = True
    #: Whether to send `parallel_tool_calls: false` (some servers reject the field).
    parallel_tool_calls: ClassVar[bool] = True
    #: The body field for the output token limit; None: `max_completion_tokens` on
    #: api.openai.com and `max_tokens` elsewhere.
    max_tokens_field: ClassVar[str | None] = None
    part_limits: ClassVar[PartLimits | None] = OPENAI_LIMITS

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
            body["tool_choice"] = (
                {"type": "function", "function": {"name": name}}
                if self.tool_choice == "function"
                else self.tool_choice
            )
            if self.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        elif spec.mode == "parallel_tools":
            body["tools"] = [{"type": "function", "function": schema.item_function}]
            body["tool_choice"] = "required"
            if self.parallel_tool_calls:
                body["parallel_tool_calls"] = True
        elif spec.mode == "functions":
            body["functions"] = [schema.openai_schema]
            body["function_call"] = {"name": name}
        elif spec.mode == "json_schema":
            body["response_format"] = schema.openai_response_format
        else:
            body["response_format"] = {"type": "json_object"}
            system = f"{system}\n\n{json_instructions(schema.openai_schema['parameters'])}"
        body["messages"] = [{"role": "system", "content": system}, *spec.messages]
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if spec.max_tokens is not None:
            field = self.max_tokens_field or (
                "max_completion_tokens"
                if self.base_url == OpenAIChat.default_base_url
                else "max_tokens"
            )
            body[field] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        return body

    def parts_message(self, parts: Parts) -> Message:
        """`text`, `image_url` and `file` (PDF) content parts."""
        return openai_chat_message(parts, self.part_limits)

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        return OpenAIChatDecoder(source)


register_provider("openai", OpenAIChat)
