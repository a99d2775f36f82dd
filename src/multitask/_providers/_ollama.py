"""Ollama's native API: `POST {host}/api/chat`, streamed as newline-delimited JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

from .._exceptions import StreamError
from .._parts import Parts
from .._prompt import Message, json_instructions
from ._base import AnswerSource, ProviderDecoder, Usage
from ._content import ollama_message
from ._provider import Provider, register_provider
from ._request import RequestSpec

__all__ = ["Ollama", "OllamaDecoder"]


class OllamaDecoder(ProviderDecoder):
    """Decodes `/api/chat` lines: `message.content` pieces, then a `done` line with counts."""

    framing = "ndjson"
    TRUNCATED = frozenset({"length"})

    def payload(self, obj: Mapping[str, Any], event: str = "message") -> str:
        error = obj.get("error")
        if error:
            raise StreamError(f"the provider reported an error mid-stream: {error}", body=dict(obj))
        text = ""
        message = obj.get("message")
        if message:
            calls = message.get("tool_calls")
            if calls and self._tool():
                arguments = (calls[0].get("function") or {}).get("arguments")
                text = arguments if isinstance(arguments, str) else to_json(arguments).decode()
            content = message.get("content")
            if content:
                text += self._content(str(content))
        if obj.get("done"):
            self.ended = True
            self.finish_reason = str(obj.get("done_reason") or "stop")
            self.usage = Usage(
                obj.get("prompt_eval_count") or 0, obj.get("eval_count") or 0, dict(obj)
            )
        return text


class Ollama(Provider):
    """A local Ollama server (`ollama:`), at `OLLAMA_HOST` (default `http://localhost:11434`).

    The default mode, "json_schema", sets `format` to the schema and streams the content.
    "json" sets `format: "json"` with the schema in the prompt.
    """

    name = "ollama"
    default_base_url = "http://localhost:11434"
    base_url_env = "OLLAMA_HOST"
    api_key_env = ("OLLAMA_API_KEY",)
    modes = frozenset({"json_schema", "json"})
    default_mode = "json_schema"
    key_required = False

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None) -> None:
        super().__init__(base_url=base_url, api_key=api_key)
        if "://" not in self.base_url:  # OLLAMA_HOST is often host:port alone
            self.base_url = f"http://{self.base_url}"

    def endpoint(self, spec: RequestSpec) -> str:
        return f"{self.base_url}/api/chat"

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        parameters = spec.schema.openai_schema["parameters"]
        system = spec.system
        if spec.mode == "json_schema":
            answer_format: Any = parameters
        else:
            answer_format = "json"
            system = f"{system}\n\n{json_instructions(parameters)}"
        body: dict[str, Any] = {
            "model": spec.model,
            "stream": True,
            "format": answer_format,
            "messages": [{"role": "system", "content": system}, *spec.messages],
        }
        options: dict[str, Any] = {}
        if spec.max_tokens is not None:
            options["num_predict"] = spec.max_tokens
        if spec.temperature is not None:
            options["temperature"] = spec.temperature
        if options:
            body["options"] = options
        return body

    def parts_message(self, parts: Parts) -> Message:
        """The texts as `content`, the images as a base64 `images` list (no PDFs)."""
        return ollama_message(parts, self.part_limits)

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        return OllamaDecoder(source)


register_provider("ollama", Ollama)
