"""The providers multitask speaks, for configuring one by hand or writing your own.

    from multitask.providers import AzureOpenAI
    client = multitask.Client("azure:my-deployment", provider=AzureOpenAI(api_version="..."))

A provider author subclasses `Provider` (how a request is built: `RequestSpec` in,
`HTTPRequest` out) and `ProviderDecoder` (how its stream is read: the decoder contract is in
that class's docstring; an `event` override gets `ServerSentEvent`s), and registers it with
`register_provider`. The built-in providers and their decoders are here as examples and bases.
"""

from typing import TYPE_CHECKING

from ._providers import (
    PRESETS,
    AnswerSource,
    Anthropic,
    AnthropicDecoder,
    AzureOpenAI,
    Gemini,
    GeminiDecoder,
    HTTPRequest,
    Mode,
    Ollama,
    OllamaDecoder,
    OpenAIChat,
    OpenAIChatDecoder,
    OpenAIResponses,
    OpenAIResponsesDecoder,
    Provider,
    ProviderDecoder,
    RequestSpec,
    TaskSchema,
    Usage,
    get_provider,
    provider_names,
    register_openai_compatible,
    register_provider,
    split_model,
)
from ._providers._base import deprecated_name as _deprecated_name
from ._sse import ServerSentEvent

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
    "ServerSentEvent",
    "TaskSchema",
    "Usage",
    "get_provider",
    "provider_names",
    "register_openai_compatible",
    "register_provider",
    "split_model",
]


if TYPE_CHECKING:
    # A checker sees the old names too, so that typed code keeps passing for that release.
    StreamDecoder = ProviderDecoder
else:

    def __getattr__(name: str) -> object:
        """Deprecated names, kept for one release (`StreamDecoder` is now `ProviderDecoder`)."""
        return _deprecated_name(__name__, name)


del TYPE_CHECKING
