"""The sans-IO pieces under the client: decoders, parsers, pipelines, and the transport.

For reading a stream you fetched yourself, or building your own client around multitask's core.
Each layer is pure (bytes or text in, values out; no socket, no event loop, no clock unless you
pass one), so it can be driven from any I/O and tested without any::

    bytes -> SSEDecoder / NDJSONDecoder -> ServerSentEvent -> ProviderDecoder -> answer text
          -> TaskParser / PartialTaskParser -> raw items -> validated items

`Extraction` (validated items) and `PartialExtraction` (`ItemStarted` / `ItemUpdated` /
`ItemDone` events) run that whole chain for one answer; `Pipeline` is what they share.
`StreamingTransport` is the I/O shell: the httpx transport multitask's own clients use.
Decoders for each provider are in `multitask.providers`; the events and errors these pieces
give are in `multitask`.
"""

from __future__ import annotations

from ._events import PartialExtraction
from ._extraction import Extraction, Pipeline
from ._ndjson import NDJSONDecoder
from ._partial import PartialTaskParser
from ._sse import ServerSentEvent, SSEDecoder
from ._taskparser import TaskParser
from ._transport import StreamingTransport

__all__ = [
    "Extraction",
    "NDJSONDecoder",
    "PartialExtraction",
    "PartialTaskParser",
    "Pipeline",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamingTransport",
    "TaskParser",
]
