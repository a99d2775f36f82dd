"""The provider interface: a sans-IO description of one model API, and the registry of them."""

from __future__ import annotations

import dataclasses
import difflib
import email.utils
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic_core import from_json

from .._exceptions import APIStatusError, ConfigurationError, MultitaskError
from .._parts import Parts
from .._prompt import Message
from .._redact import Redactor
from ._base import AnswerSource, ProviderDecoder
from ._content import PartLimits
from ._request import HTTPRequest, Mode, RequestSpec

__all__ = [
    "Provider",
    "freeze_builtins",
    "get_provider",
    "parse_retry_after",
    "provider_names",
    "register_provider",
    "split_model",
]

E = TypeVar("E", bound=BaseException)


class Provider:
    """How to talk to one model API, with no I/O: build the request, read the stream's events,
    and turn an error response into an exception.

    Subclasses set the class attributes and implement `build_body`, `endpoint`, `auth_headers`
    and `make_decoder`. The client only ever calls `request`, `decoder`, `error` and `redact`.

    What a server sends back may echo the credentials (`secrets()`): every exception a
    provider makes, and its decoders make, has them replaced by `[redacted]`.
    """

    name: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    base_url_env: ClassVar[str | None] = None
    api_key_env: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[frozenset[str]] = frozenset({"tools"})
    #: The mode used when the caller names none.
    default_mode: ClassVar[Mode] = "tools"
    #: Whether the API needs a key even at a custom base URL.
    key_required: ClassVar[bool] = True
    #: The documented limits on the images and files of a request, checked before sending.
    part_limits: ClassVar[PartLimits | None] = None

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None) -> None:
        env_url = os.environ.get(self.base_url_env) if self.base_url_env else None
        self.base_url = (base_url or env_url or self.default_base_url).rstrip("/")
        if api_key is None:
            for var in self.api_key_env:
                api_key = os.environ.get(var) or None
                if api_key:
                    break
        self._api_key = api_key

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"<{type(self).__name__} base_url={self.base_url!r} api_key={key}>"

    # -- what the client calls -----------------------------------------------------------------

    def request(self, spec: RequestSpec) -> HTTPRequest:
        """The HTTP request that asks for `spec`'s answer as a stream."""
        if spec.mode not in self.modes:
            raise unsupported_mode(self, spec.mode)
        self.check_credentials()
        if any(isinstance(m.get("content"), Parts) for m in spec.messages):
            messages = [self._native(m) for m in spec.messages]
            spec = dataclasses.replace(spec, messages=messages)
        body = self.build_body(spec)
        body.update(spec.extra_body)
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            **self.auth_headers(),
        }
        return HTTPRequest("POST", self.endpoint(spec), headers, body)

    def _native(self, message: Message) -> Message:
        content = message.get("content")
        return self.parts_message(content) if isinstance(content, Parts) else message

    def parts_message(self, parts: Parts) -> Message:
        """The user message carrying `parts` (texts, `Image`s, `PDF`s) in this API's own
        content blocks, its size limits checked; `ConfigurationError` for a part it cannot
        take. This one takes text alone: a provider that takes more overrides it."""
        for part in parts.items:
            if not isinstance(part, str):
                raise ConfigurationError(
                    f"the {self.name!r} provider cannot take {part!r}: it takes text only"
                )
        return {
            "role": "user",
            "content": "\n\n".join(p for p in parts.items if isinstance(p, str)),
        }

    def decoder(self, mode: Mode) -> ProviderDecoder:
        """A fresh decoder for one response's stream (its errors redacted, see `redact`)."""
        if mode == "parallel_tools":
            decoder = self.make_decoder("calls")
        else:
            decoder = self.make_decoder("content" if mode in ("json", "json_schema") else "tool")
        decoder.redactor = self.redactor
        return decoder

    def secrets(self) -> tuple[str, ...]:
        """The credentials this provider sends (the key, a token), to keep out of messages."""
        return (self._api_key,) if self._api_key else ()

    @property
    def redactor(self) -> Redactor | None:
        """What replaces `secrets()` in messages, or None when there are none to hide."""
        redactor = Redactor(self.secrets())
        return redactor if redactor else None

    def redact(self, exc: E) -> E:
        """`exc` (with its causes and contexts) without the credentials, changed in place."""
        redactor = self.redactor
        return exc if redactor is None else redactor.exception(exc)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> MultitaskError:
        """The exception for an HTTP error response, with the provider's own message (and
        never the credentials, should the server have echoed them)."""
        message, error_type = _error_details(body)
        retry_after = parse_retry_after(headers)
        if retry_after is None:
            retry_after = _retry_delay_in_body(body)
        text = f"{self.name} answered HTTP {status}"
        if error_type:
            text += f" ({error_type})"
        text += f": {message}" if message else ""
        if 300 <= status < 400:
            text += (
                f" (a redirect to {headers.get('location') or 'nowhere'}, not followed: the API "
                "key would go with it; check base_url)"
            )
        if retry_after is not None:
            text += f" (retry after {retry_after:g}s)"
        return self.redact(
            APIStatusError(
                text,
                status_code=status,
                error_type=error_type,
                retry_after=retry_after,
                body=_safe_json(body),
            )
        )

    def check_credentials(self) -> None:
        """Fail before sending when the request could only be refused (no key, no endpoint)."""
        if not self._api_key and (
            self.key_required and self.base_url == self.default_base_url.rstrip("/")
        ):
            names = " or ".join(self.api_key_env) or "api_key"
            raise ConfigurationError(f"no API key for {self.name!r}: set {names}, or pass api_key")

    # -- what a provider defines ---------------------------------------------------------------

    def endpoint(self, spec: RequestSpec) -> str:
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def build_body(self, spec: RequestSpec) -> dict[str, Any]:
        raise NotImplementedError

    def make_decoder(self, source: AnswerSource) -> ProviderDecoder:
        raise NotImplementedError


_REGISTRY: dict[str, Callable[..., Provider]] = {}
#: The names multitask registers itself (see `freeze_builtins`): replaced only on purpose.
_BUILTIN: frozenset[str] = frozenset()


def register_provider(
    name: str, factory: Callable[..., Provider], *, replace: bool = False
) -> None:
    """Make `name:model` resolve to `factory(base_url=..., api_key=...)`.

    A built-in name (`openai`, `anthropic`, ...) is refused unless `replace=True`: replacing
    it by accident would send every `openai:` model of the process elsewhere.
    """
    if name in _BUILTIN and not replace:
        raise ConfigurationError(
            f"{name!r} is a built-in provider; pick another name, or pass replace=True "
            "to replace it for the whole process"
        )
    _REGISTRY[name] = factory


def freeze_builtins() -> None:
    """Mark every provider registered so far as built-in (called once, by the package)."""
    global _BUILTIN
    _BUILTIN = frozenset(_REGISTRY)


def provider_names() -> list[str]:
    return sorted(_REGISTRY)


#: The provider a bare model name most likely belongs to, by its first letters.
_GUESSES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gemini"),
)


def split_model(model: str) -> tuple[str, str]:
    """`"openai:gpt-4o-mini"` -> `("openai", "gpt-4o-mini")`.

    Space around either part is dropped and a known provider's name is matched whatever its
    case (`"OpenAI: gpt-4o"` is `("openai", "gpt-4o")`); a model with no provider prefix
    (`"gpt-4o-mini"`, `"openai/gpt-4o-mini"`) is a `ConfigurationError` saying what to
    write. A slash after a prefix is left alone: it is part of many model names.
    """
    name, colon, model_name = model.partition(":")
    name, model_name = name.strip(), model_name.strip()
    if not colon or not name or not model_name:
        raise ConfigurationError(_no_provider(model.strip()))
    if name not in _REGISTRY and name.lower() in _REGISTRY:
        name = name.lower()
    return name, model_name


def _no_provider(model: str) -> str:
    """The error for a model string that is not `provider:model_name`."""
    known = ", ".join(provider_names())
    head, slash, rest = model.partition("/")
    if slash and rest and head.strip().lower() in _REGISTRY:
        guess = f"{head.strip().lower()}:{rest.strip()}"
    else:
        bare = model.removesuffix(":").strip()
        provider = next((p for start, p in _GUESSES if bare.lower().startswith(start)), None)
        guess = f"{provider}:{bare}" if provider and bare else ""
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"model must be 'provider:model_name' (providers: {known}), not {model!r}{hint}"


def get_provider(name: str, *, base_url: str | None, api_key: str | None) -> Provider:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(
            f"unknown provider {name!r}{hint}; known: {', '.join(provider_names())}"
        ) from None
    return factory(base_url=base_url, api_key=api_key)


def unsupported_mode(provider: Provider, mode: object) -> ConfigurationError:
    """The error for a mode `provider` lacks."""
    return ConfigurationError(
        f"the {provider.name!r} provider does not support mode {mode!r}; "
        f"it supports {', '.join(sorted(provider.modes))}"
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _safe_json(body: bytes) -> Any:
    try:
        return from_json(body)
    except ValueError:
        return body[:2000].decode("utf-8", "replace")


def _error_details(body: bytes) -> tuple[str, str | None]:
    """The message and type from an error body, in any of the providers' shapes."""
    data = _safe_json(body)
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or ""
            kind = error.get("type") or error.get("status") or error.get("code")
            return str(message), (str(kind) if kind else None)
        if isinstance(error, str):
            return error, None
    text = str(data).strip()
    if text.lstrip().startswith("<"):
        return "the body was an HTML page, not an API error (a proxy or wrong base URL?)", None
    return text[:300], None


def _retry_delay_in_body(body: bytes) -> float | None:
    """Google's `RetryInfo` detail: `{"@type": ".../google.rpc.RetryInfo", "retryDelay": "7s"}`."""
    data = _safe_json(body)
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = str(detail.get("retryDelay") or "")
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None
