"""httpx2's failures as multitask's exceptions, each saying what went wrong in its words."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import httpx2

from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    MultitaskError,
    StreamDecodeError,
)
from ._providers import AzureOpenAI, HTTPRequest, OpenAIChat, OpenAIResponses, Provider

__all__ = ["HTTPX2_ERRORS", "name_request", "translate"]

#: What httpx2 raises while sending or reading (anything else of its is a bug of ours).
HTTPX2_ERRORS: Final = (httpx2.HTTPError, httpx2.StreamError, httpx2.InvalidURL)


def translate(exc: BaseException, delivered: int) -> MultitaskError:
    """Our exception for a transport failure (a provider error passes through)."""
    if isinstance(exc, MultitaskError):
        return exc
    after = f" after {delivered} item(s)" if delivered else ""
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"the total deadline passed{after}")
    if isinstance(exc, httpx2.ConnectTimeout):
        return APITimeoutError(f"timed out connecting to the provider: {exc}")
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(f"timed out waiting for the provider{after}: {type(exc).__name__}")
    if isinstance(exc, httpx2.ConnectError):
        return APIConnectionError(f"could not connect to the provider: {exc}")
    if isinstance(exc, httpx2.DecodingError):
        return StreamDecodeError(f"could not decode the response body{after}: {exc}")
    if isinstance(exc, httpx2.InvalidURL | httpx2.UnsupportedProtocol):
        return ConfigurationError(f"the request URL is not usable (check base_url): {exc}")
    if isinstance(exc, httpx2.StreamError):
        return MultitaskError(f"the HTTP client could not read the response{after}: {exc!r}")
    if isinstance(exc, httpx2.RemoteProtocolError):
        # Retried as a dropped connection is, but said as what it is: a connection closed
        # before the response's end, or bytes that are not HTTP (a proxy in the way, a server
        # that is not the API, a bad chunk size).
        if any(word in str(exc) for word in _CLOSED):
            return APIConnectionError(f"the connection dropped mid-response{after}: {exc}")
        return APIConnectionError(f"the server broke HTTP framing{after}: {exc}")
    if not isinstance(exc, httpx2.TransportError):
        return MultitaskError(f"the HTTP request failed{after}: {exc!r}")
    return APIConnectionError(f"the connection dropped mid-stream{after}: {exc}")


#: How a framing error says that the server closed the connection: ours ("the server closed
#: the connection in the middle of a chunked body"), h11's ("peer closed connection without
#: sending complete message body"), httpcore's ("Server disconnected without ...").
_CLOSED: Final = ("closed the connection", "closed connection", "disconnected")


def name_request(error: MultitaskError, provider: Provider, request: HTTPRequest) -> MultitaskError:
    """A 404 or 405 with the method and URL it answered, and a hint at a base_url without
    its `/v1`: the answer alone ("Not Found") does not say which URL was wrong."""
    if not isinstance(error, APIStatusError) or error.status_code not in (404, 405):
        return error
    text = f"{error} ({request.method} {request.url}"
    base = provider.base_url
    if (
        isinstance(provider, OpenAIChat | OpenAIResponses)
        and not isinstance(provider, AzureOpenAI)  # its URL has no /v1: it adds its own path
        and "/v1" not in urlsplit(base).path
    ):
        text += f"; is /v1 missing from base_url? try base_url={base + '/v1'!r}"
    error.args = (text + ")",)
    return error
