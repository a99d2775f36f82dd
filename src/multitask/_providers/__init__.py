"""Providers: how each model API is asked for an answer, and how its stream is read.

Importing this package registers the built-in providers.
"""

from ._anthropic import Anthropic, AnthropicDecoder
from ._base import AnswerSource, StreamDecoder, Usage
from ._openai_chat import OpenAIChat, OpenAIChatDecoder
from ._provider import Provider, get_provider, provider_names, register_provider, split_model
from ._request import HTTPRequest, Mode, RequestSpec

__all__ = [
    "AnswerSource",
    "Anthropic",
    "AnthropicDecoder",
    "HTTPRequest",
    "Mode",
    "OpenAIChat",
    "OpenAIChatDecoder",
    "Provider",
    "RequestSpec",
    "StreamDecoder",
    "Usage",
    "get_provider",
    "provider_names",
    "register_provider",
    "split_model",
]
