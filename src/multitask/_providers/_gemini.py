"""Google Gemini: `streamGenerateContent?alt=sse`, JSON output with a response schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from .._exceptions import ContentFilterError, StreamError
from .._parts import Parts
from .._prompt import Message, json_instructions
from .._schema import SchemaError, gemini_schema
from ._base import AnswerSource, ProviderDecoder, Usage
from ._content import GEMINI_LIMITS, gemini_message
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["Gemini", "GeminiDecoder"]


class GeminiDecoder(ProviderDecoder):
    """Decodes `GenerateContentResponse` chunks.

    With a response schema the answer streams as text parts. A function call arrives whole,
    in one chunk, so in "tools" mode every item comes out at once when the call does.
    """

    TRUNCATED = frozenset({"MAX_TOKENS"})
    FILTERED = frozenset(
        {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
    )

    def __init__(self, source: AnswerSource = "auto", *, fast: bool | None = None) -> None:
        super().__init__(source, fast=fast)
        self._called = False
        self._calls_seen = 0

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        error = obj.get("error")
        if error:
            status = error.get("status") if isinstance(error, Mapping) else None
            message = error.get("message") if isinstance(error, Mapping) else error
            raise StreamError(
                f"the provider reported an error mid-stream: {status}: {message}",
                error_type=str(status) if status else None,
                body=dict(obj),
            )
        usage = obj.get("usageMetadata")
        if usage:
            self.usage = Usage(
                usage.get("promptTokenCount") or 0,
                (usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0),
                dict(usage),
            )
        feedback = obj.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            self.finish_reason = str(feedback["blockReason"])
            raise ContentFilterError(
                f"Gemini blocked the prompt: {feedback['blockReason']}",
                refusal=str(feedback.get("blockReasonMessage") or "") or None,
            )
        candidates = obj.get("candidates")
        if not candidates:
            return ""
        candidate = candidates[0]
        reason = candidate.get("finishReason")
        if reason:
            self.finish_reason = str(reason)
        parts = (candidate.get("content") or {}).get("parts") or ()
        text = ""
        for part in parts:
            if part.get("thought"):
                continue
            call = part.get("functionCall")
            if call is not None:
                if self.source == "calls":
                    self._call(self._calls_seen, to_json(call.get("args") or {}).decode())
                    self._calls_seen += 1
                elif self._tool() and not self._called:
                    self._called = True
                    text += to_json(call.get("args") or {}).decode()
            elif "text" in part:
                text += self._content(str(part["text"] or ""))
        return text


class Gemini(Provider):
    """Google Gemini (`gemini:`): `x-goog-api-key`, `GEMINI_API_KEY` or `GOOGLE_API_KEY`.

    The default mode, "json_schema", sets `responseMimeType: application/json` and a
    `responseSchema` converted to the subset Gemini accepts, and streams. "tools" uses
    function calling, whose arguments Gemini sends whole: items then arrive all at once.
    """

    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    base_url_env = "GOOGLE_GEMINI_BASE_URL"
    api_key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    modes = frozenset({"json_schema", "json", "tools", "parallel_tools"})
    default_mode = "json_schema"
    api_version = "v1beta"
    part_limits = GEMINI_LIMITS

    def endpoint(self, spec: RequestSpec) -> str:
        return (
            f"{self.base_url}/{self.api_version}/models/{spec.model}:streamGenerateContent?alt=sse"
        )

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key} if self._api_key else {}

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        schema = spec.schema
        function = schema.openai_schema
        system = spec.system
        config: dict[str, Any] = {}
        body: dict[str, Any] = {}
        try:
            if spec.mode in ("tools", "parallel_tools"):
                if spec.mode == "parallel_tools":
                    function = schema.item_function
                body["tools"] = [
                    {
                        "functionDeclarations": [
                            {
                                "name": function["name"],
                                "description": function["description"],
                                "parameters": gemini_schema(function["parameters"]),
                            }
                        ]
                    }
                ]
                body["toolConfig"] = {
                    "functionCallingConfig": {
                        "mode": "ANY",
                        "allowedFunctionNames": [function["name"]],
                    }
                }
            elif spec.mode == "json_schema":
                config["responseMimeType"] = "application/json"
                config["responseSchema"] = gemini_schema(function["parameters"])
            else:
                config["responseMimeType"] = "application/json"
                system = f"{system}\n\n{json_instructions(function['parameters'])}"
        except SchemaError as exc:
            raise SchemaError(
                f"Gemini's schema subset cannot express this type: {exc}; mode='json' sends "
                "the full schema in the prompt instead",
                path=exc.path,
            ) from None
        body["systemInstruction"] = {"parts": [{"text": system}]}
        body["contents"] = [_content(m) for m in spec.messages]
        if spec.max_tokens is not None:
            config["maxOutputTokens"] = spec.max_tokens
        if spec.temperature is not None:
            config["temperature"] = spec.temperature
        if config:
            body["generationConfig"] = config
        return body

    def parts_message(self, parts: Parts) -> Message:
        """A user `Content` of `text` and `inline_data` parts."""
        return gemini_message(parts, self.part_limits)

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        return GeminiDecoder(source)


def _content(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message as a Gemini `Content`: roles `user` and `model`."""
    if "parts" in message:
        return dict(message)
    role = "model" if message.get("role") == "assistant" else "user"
    return {"role": role, "parts": [{"text": str(message.get("content") or "")}]}


register_provider("gemini", Gemini)
