"""Providers: how each model API is asked for an answer, and how its stream is read.

Importing this package registers the built-in providers.
"""

from typing import Any

from ._anthropic import Anthropic, AnthropicDecoder
from ._azure import AzureOpenAI
from ._base import AnswerSource, ProviderDecoder, Usage, deprecated_name
from ._compatible import PRESETS, register_openai_compatible
from ._gemini import Gemini, GeminiDecoder
from ._ollama import Ollama, OllamaDecoder
from ._openai_chat import OpenAIChat, OpenAIChatDecoder
from ._openai_responses import OpenAIResponses, OpenAIResponsesDecoder
from ._provider import (
    Provider,
    freeze_builtins,
    get_provider,
    provider_names,
    register_provider,
    split_model,
)
from ._request import HTTPRequest, Mode, RequestSpec, TaskSchema

freeze_builtins()

__all__ = [
    "PRESETS",
    "AnswerSource",
    "Anthropic",
    "AnthropicDecoder",
    "AzureOpenAI",
    "Gemini",
    "GeminiDecoder",
    "HTTPRequest",
    "Mode",
    "Ollama",
    "OllamaDecoder",
    "OpenAIChat",
    "OpenAIChatDecoder",
    "OpenAIResponses",
    "OpenAIResponsesDecoder",
    "Provider",
    "ProviderDecoder",
    "RequestSpec",
    "TaskSchema",
    "Usage",
    "get_provider",
    "provider_names",
    "register_openai_compatible",
    "register_provider",
    "split_model",
]


def __getattr__(name: str) -> Any:
    """Deprecated names, kept for one release (`StreamDecoder` is now `ProviderDecoder`)."""
    return deprecated_name(__name__, name)
