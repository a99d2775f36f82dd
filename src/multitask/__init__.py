"""multitask: stream validated items out of an LLM's structured answer, one at a time."""

from __future__ import annotations

from ._api import extract, extract_many_sync, extract_stream, extract_stream_sync, extract_sync
from ._client import Client, Options
from ._events import (
    EventExtraction,
    EventStream,
    ExtractionEvent,
    Finished,
    ItemDone,
    ItemSkipped,
    ItemStarted,
    ItemUpdated,
    PartialTaskParser,
)
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ContentFilterError,
    EventTooLargeError,
    IncompleteOutputError,
    ItemTooLargeError,
    ItemValidationError,
    MalformedOutputError,
    MultitaskError,
    ProviderError,
    RefusalError,
    RetryDivergedError,
    StreamDecodeError,
    StreamError,
)
from ._extraction import Extraction
from ._many import Progress, Result, Results
from ._patch import patch
from ._providers import (
    HTTPRequest,
    Provider,
    ProviderDecoder,
    RequestSpec,
    Usage,
    provider_names,
    register_openai_compatible,
    register_provider,
)
from ._ratelimit import RateLimiter
from ._schema import SchemaError
from ._sse import ServerSentEvent, SSEDecoder
from ._stream import ItemStream, StreamInfo
from ._taskmodel import MultiTask, MultiTaskModel
from ._taskparser import TaskParser
from ._transport import StreamingTransport
from ._validation import InvalidItem, OnInvalid

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "Client",
    "ConfigurationError",
    "ContentFilterError",
    "EventExtraction",
    "EventStream",
    "EventTooLargeError",
    "Extraction",
    "ExtractionEvent",
    "Finished",
    "HTTPRequest",
    "IncompleteOutputError",
    "InvalidItem",
    "ItemDone",
    "ItemSkipped",
    "ItemStarted",
    "ItemStream",
    "ItemTooLargeError",
    "ItemUpdated",
    "ItemValidationError",
    "MalformedOutputError",
    "MultiTask",
    "MultiTaskModel",
    "MultitaskError",
    "OnInvalid",
    "Options",
    "PartialTaskParser",
    "Progress",
    "Provider",
    "ProviderDecoder",
    "ProviderError",
    "RateLimiter",
    "RefusalError",
    "RequestSpec",
    "Result",
    "Results",
    "RetryDivergedError",
    "SSEDecoder",
    "SchemaError",
    "ServerSentEvent",
    "StreamDecodeError",
    "StreamError",
    "StreamInfo",
    "StreamingTransport",
    "TaskParser",
    "Usage",
    "extract",
    "extract_many_sync",
    "extract_stream",
    "extract_stream_sync",
    "extract_sync",
    "patch",
    "provider_names",
    "register_openai_compatible",
    "register_provider",
]
