"""multitask: stream validated items out of an LLM's structured answer, one at a time.

The top level is for users: the functions and `Client`, what they return and raise, the
classic `MultiTask` API and the provider registry. The other public modules serve other
readers: `multitask.providers` provider authors (`Provider`, `ProviderDecoder`, the built-in
providers), `multitask.lowlevel` sans-IO users (decoders, parsers, pipelines, the transport),
`multitask.testing` tests (scripted and hostile servers); `multitask.web` and `multitask.ray`
integrations.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from . import lowlevel, providers
from ._api import extract, extract_many_sync, extract_stream, extract_stream_sync, extract_sync
from ._client import Client, Options
from ._events import (
    EventStream,
    ExtractionEvent,
    Finished,
    ItemDone,
    ItemSkipped,
    ItemStarted,
    ItemUpdated,
)
from ._exceptions import (
    AnswerTooLargeError,
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
from ._many import Progress, Result, Results
from ._parts import PDF, Image
from ._patch import patch
from ._providers import (
    Usage,
    provider_names,
    register_openai_compatible,
    register_provider,
)
from ._quote import Quote
from ._ratelimit import RateLimiter
from ._schema import SchemaError
from ._sources import Document
from ._stream import ItemStream, StreamInfo
from ._taskmodel import MultiTask, MultiTaskModel
from ._validation import InvalidItem, OnInvalid

try:
    __version__: str = _version("multitask")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
del PackageNotFoundError, _version

__all__ = [
    "PDF",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerTooLargeError",
    "Client",
    "ConfigurationError",
    "ContentFilterError",
    "Document",
    "EventStream",
    "EventTooLargeError",
    "ExtractionEvent",
    "Finished",
    "Image",
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
    "Progress",
    "ProviderError",
    "Quote",
    "RateLimiter",
    "RefusalError",
    "Result",
    "Results",
    "RetryDivergedError",
    "SchemaError",
    "StreamDecodeError",
    "StreamError",
    "StreamInfo",
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

#: Names that left the top level, importable from it (with a `DeprecationWarning`) for one
#: release: old name -> (its home now, its name there).
_MOVED = {
    "EventExtraction": (lowlevel, "PartialExtraction"),
    "Extraction": (lowlevel, "Extraction"),
    "PartialTaskParser": (lowlevel, "PartialTaskParser"),
    "SSEDecoder": (lowlevel, "SSEDecoder"),
    "ServerSentEvent": (lowlevel, "ServerSentEvent"),
    "StreamingTransport": (lowlevel, "StreamingTransport"),
    "TaskParser": (lowlevel, "TaskParser"),
    "HTTPRequest": (providers, "HTTPRequest"),
    "Provider": (providers, "Provider"),
    "ProviderDecoder": (providers, "ProviderDecoder"),
    "RequestSpec": (providers, "RequestSpec"),
    "StreamDecoder": (providers, "ProviderDecoder"),
}

if TYPE_CHECKING:
    # A checker sees the old names too, so that typed code keeps passing for that release.
    from .lowlevel import Extraction as Extraction
    from .lowlevel import PartialTaskParser as PartialTaskParser
    from .lowlevel import ServerSentEvent as ServerSentEvent
    from .lowlevel import SSEDecoder as SSEDecoder
    from .lowlevel import StreamingTransport as StreamingTransport
    from .lowlevel import TaskParser as TaskParser
    from .providers import HTTPRequest as HTTPRequest
    from .providers import Provider as Provider
    from .providers import ProviderDecoder as ProviderDecoder
    from .providers import RequestSpec as RequestSpec

    EventExtraction = lowlevel.PartialExtraction
    StreamDecoder = providers.ProviderDecoder
else:

    def __getattr__(name: str) -> object:
        """A moved name: its object, with a warning that names its new home."""
        moved = _MOVED.get(name)
        if moved is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        home, new = moved
        import warnings

        warnings.warn(
            f"multitask.{name} is deprecated: use {home.__name__}.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(home, new)


del TYPE_CHECKING
