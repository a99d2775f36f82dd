"""The exceptions multitask raises: one tree under `MultitaskError`, importable from `multitask`.

MultitaskError                  anything multitask raises on purpose
  ConfigurationError            the client or a call is set up wrong (also a ValueError)
  SchemaError                   a schema the provider cannot express (`_schema`; ValueError)
  IncompleteOutputError         the answer was cut off; the items before the cut were given
  RetryDivergedError            a retried answer contradicted items already delivered
  MalformedOutputError          the answer is not the JSON asked for
    ItemTooLargeError           an item (or the preamble) grew past its size limit
      AnswerTooLargeError       the whole answer grew past `max_answer_bytes`
  ItemValidationError           an item did not validate against the requested type
  RefusalError                  the model refused to answer
    ContentFilterError          the provider's content filter stopped the answer
  StreamDecodeError             the bytes are not a well-formed event stream
    EventTooLargeError          one event grew past `max_event_bytes`
  ProviderError                 the provider reported an error
    APIStatusError              ... as an HTTP error status
    StreamError                 ... as an error event in the stream
  APIConnectionError            no connection, or it dropped before the answer was whole
    APITimeoutError             a connect, read or total deadline passed
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerTooLargeError",
    "ConfigurationError",
    "ContentFilterError",
    "EventTooLargeError",
    "IncompleteOutputError",
    "ItemTooLargeError",
    "ItemValidationError",
    "MalformedOutputError",
    "MultitaskError",
    "ProviderError",
    "RefusalError",
    "RetryDivergedError",
    "StreamDecodeError",
    "StreamError",
]


class MultitaskError(Exception):
    """Base class of every error multitask raises on purpose."""


class ConfigurationError(MultitaskError, ValueError):
    """The client or a call is set up wrong: no model or key, an unknown provider, a mode
    the provider lacks, a base URL that cannot be one, an unknown or mistyped option.

    Raised at `Client()` when it can be known there, else before the first request goes out
    (once for a whole `extract_many`, never retried): no request could succeed as it is.
    """


# -- the answer itself -------------------------------------------------------------------------


class IncompleteOutputError(MultitaskError):
    """The answer was cut off: a `length`/`max_tokens` finish, or the stream ended in the array.

    Every item completed before the cut was delivered; `items_delivered` says how many.
    """

    def __init__(self, message: str, *, finish_reason: str | None = None, items_delivered: int = 0):
        super().__init__(message)
        self.finish_reason = finish_reason
        self.items_delivered = items_delivered


class RetryDivergedError(MultitaskError):
    """A retried answer contradicted items already delivered from the failed attempt.

    Delivered items are never taken back, so the document stops here; `items_delivered`
    says how many of its items the caller has.
    """

    def __init__(self, message: str, *, items_delivered: int = 0):
        super().__init__(message)
        self.items_delivered = items_delivered


class MalformedOutputError(MultitaskError):
    """The answer is not the JSON it should be (bad syntax, or no `tasks` array)."""

    def __init__(self, message: str, *, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


class ItemTooLargeError(MalformedOutputError):
    """One item, or the whole answer, grew past the configured size limit."""


class AnswerTooLargeError(ItemTooLargeError):
    """The whole answer grew past `max_answer_bytes` (an `ItemTooLargeError`, as it was)."""


class ItemValidationError(MultitaskError):
    """An item did not validate against the requested type.

    `index` is the item's position in the answer's list, `raw` the value the model sent, and
    `errors` pydantic's error list.
    """

    def __init__(self, message: str, *, index: int, raw: Any, errors: list[Any]):
        super().__init__(message)
        self.index = index
        self.raw = raw
        self.errors = errors


class RefusalError(MultitaskError):
    """The model refused to answer; `refusal` holds its words, when it gave any."""

    def __init__(self, message: str, *, refusal: str | None = None):
        super().__init__(message)
        self.refusal = refusal


class ContentFilterError(RefusalError):
    """The provider's content filter stopped the answer."""


# -- the stream and the transport --------------------------------------------------------------


class StreamDecodeError(MultitaskError):
    """The byte stream is not a well-formed event stream."""


class EventTooLargeError(StreamDecodeError):
    """One server-sent event grew past the decoder's size limit."""


class ProviderError(MultitaskError):
    """The provider reported an error, by status code or inside the stream.

    `status_code` is the HTTP status when there was one, `error_type` the provider's own error
    type (`overloaded_error`, `rate_limit_exceeded`, ...), and `retry_after` the delay in
    seconds the provider asked for, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.retry_after = retry_after
        self.body = body


class APIStatusError(ProviderError):
    """The provider answered with an HTTP error status."""


class StreamError(ProviderError):
    """The provider sent an error event in the middle of the stream."""


class APIConnectionError(MultitaskError):
    """The connection could not be made, or dropped before the answer was complete."""


class APITimeoutError(APIConnectionError):
    """A connect, read or total deadline passed."""
