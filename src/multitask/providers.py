"""The providers multitask speaks, for configuring one by hand or writing your own.

from multitask.providers import AzureOpenAI
client = multitask.Client("azure:my-deployment", provider=AzureOpenAI(api_version="..."))
"""

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
    RequestSpec,
    StreamDecoder,
    Usage,
    provider_names,
    register_openai_compatible,
    register_provider,
)

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
    "RequestSpec",
    "StreamDecoder",
    "Usage",
    "provider_names",
    "register_openai_compatible",
    "register_provider",
]
