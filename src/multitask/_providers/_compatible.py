"""OpenAI-compatible servers: named presets, and a way to name your own.

Each preset is the OpenAI chat provider with another base URL, key variable and quirks. The
decoder is the same one; it already tolerates what these servers do differently in the stream
(tool calls without `index`, whole arguments in one chunk, `: keep-alive` comments, usage on
the last content chunk, `reasoning_content`, a `tool_calls` finish with the answer in content).
"""

from __future__ import annotations

from typing import Any

from ._openai_chat import OpenAIChat
from ._provider import register_provider
from ._request import Mode

__all__ = ["PRESETS", "register_openai_compatible"]


def register_openai_compatible(
    name: str,
    *,
    base_url: str,
    api_key_env: tuple[str, ...] = (),
    base_url_env: str | None = None,
    key_required: bool = True,
    default_mode: Mode = "tools",
    tool_choice: str = "function",
    stream_usage: bool = True,
    parallel_tool_calls: bool = True,
    max_tokens_field: str | None = "max_tokens",
    replace: bool = False,
) -> type[OpenAIChat]:
    """Register `name:` as an OpenAI-compatible endpoint with its own defaults and quirks.

    `default_mode="json_schema"` (or `"json"`) suits servers without tool support;
    `tool_choice="required"` or `"any"` suits servers that reject OpenAI's object form;
    `stream_usage=False` and `parallel_tool_calls=False` leave out fields a server rejects.
    `key_required=False` lets a keyless local server be reached at its default `base_url`.
    A built-in name (`openai`, `vllm`, ...) is refused unless `replace=True`.
    """
    provider = type(
        f"OpenAICompatible_{name}",
        (OpenAIChat,),
        {
            "__doc__": f"The OpenAI-compatible endpoint {name!r} at {base_url}.",
            "name": name,
            "default_base_url": base_url,
            "base_url_env": base_url_env,
            "api_key_env": api_key_env,
            "key_required": key_required,
            "default_mode": default_mode,
            "tool_choice": tool_choice,
            "stream_usage": stream_usage,
            "parallel_tool_calls": parallel_tool_calls,
            "max_tokens_field": max_tokens_field,
            # OpenAI's documented size limits are OpenAI's; another server sets its own.
            "part_limits": None,
        },
    )
    register_provider(name, provider, replace=replace)
    return provider


# Local servers need no key. llama.cpp and LM Studio constrain output with a JSON schema
# reliably, while their tool calling depends on the model's chat template. They read
# `tool_choice` only as a string ("none", "auto", "required"): llama-server ignores OpenAI's
# object form (it logs a warning and uses "auto", so the tool call is not forced), and LM
# Studio documents only the strings; with the one tool, "required" forces it. vLLM takes the
# object form (named function calling). Mistral forces a tool with "any" and reports usage
# without being asked through `stream_options`.
_LOCAL: dict[str, Any] = {"key_required": False}
_PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "vllm": (
        "http://localhost:8000/v1",
        "VLLM_API_KEY",
        {**_LOCAL, "base_url_env": "VLLM_BASE_URL"},
    ),
    "llamacpp": (
        "http://localhost:8080/v1",
        "LLAMA_API_KEY",
        {
            **_LOCAL,
            "base_url_env": "LLAMACPP_BASE_URL",
            "default_mode": "json_schema",
            "tool_choice": "required",
        },
    ),
    "lmstudio": (
        "http://localhost:1234/v1",
        "LM_API_TOKEN",
        {
            **_LOCAL,
            "base_url_env": "LMSTUDIO_BASE_URL",
            "default_mode": "json_schema",
            "tool_choice": "required",
        },
    ),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY", {}),
    "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY", {}),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", {}),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", {}),
    "mistral": (
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        {"tool_choice": "any", "stream_usage": False},
    ),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", {}),
}

#: The registered presets, by name.
PRESETS: dict[str, type[OpenAIChat]] = {
    name: register_openai_compatible(name, base_url=url, api_key_env=(key,), **quirks)
    for name, (url, key, quirks) in _PRESETS.items()
}
