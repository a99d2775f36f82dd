"""Per-extraction options: what they are, their defaults, and the check of what a caller gave.

Checked where the caller passed them, so that `timeout="5"` or a misspelt `mode` is one line
at the call, not a `TypeError` from deep inside the first request.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints

import httpx2

from ._exceptions import ConfigurationError
from ._prompt import Message
from ._providers import Mode
from ._taskparser import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEM_BYTES
from ._validation import OnInvalid

__all__ = ["DEFAULT_OPTIONS", "DEFAULT_TIMEOUT", "Options", "merge_options"]

#: Ten seconds to connect; up to ten minutes between two chunks (a model may think long).
DEFAULT_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)


@dataclass(frozen=True, slots=True)
class Options:
    """Per-extraction settings; the client's are the defaults for every call."""

    mode: Mode | None = None  # None: the provider's default ("tools" for most)
    system: str | None = None
    messages: Sequence[Message] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    on_invalid: OnInvalid = "raise"
    validation_context: Any = None
    timeout: float | httpx2.Timeout | None = None  # None: the client's (see DEFAULT_TIMEOUT)
    deadline: float | None = None
    max_retries: int = 2
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    extra_body: Mapping[str, Any] | None = None
    #: A long text in chunks of at most this many characters, a request each (None: one).
    chunk_chars: int | None = None
    #: Characters each chunk's request reads past its end (and shows before its start).
    overlap_chars: int = 0
    #: Further requests for a chunk whose answer was cut at the output limit (0: none).
    max_continuations: int = 0
    #: Items of a chunked text in text order ("document", each when no earlier one can
    #: still come) or each the moment it is read ("arrival").
    order: Literal["document", "arrival"] = "document"
    #: Chunks read at once (above 1: the stream must be used with `async with`).
    chunk_concurrency: int = 1
    #: What makes two items the same one (`key(item)`, hashable): an item whose key came
    #: before is dropped, across chunks, overlaps and continuations.
    key: Callable[[Any], Hashable] | None = None


#: The defaults of every option.
DEFAULT_OPTIONS: Final = Options()


def merge_options(base: Options, given: Mapping[str, Any]) -> Options:
    """`base` with the `given` fields replaced, each name known and each value of its type."""
    types = _option_types()
    for name, value in given.items():
        expected = types.get(name)
        if expected is None:
            close = difflib.get_close_matches(name, [*types, *_KEYWORDS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"unknown option {name!r}{hint}; the options are: {', '.join(types)}"
            )
        if not _is_a(value, expected):
            raise ConfigurationError(
                f"option {name!r} must be {_describe(expected)}, not {type(value).__name__} "
                f"({_short(value)})"
            )
    return replace(base, **given) if given else base


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


_PLAIN: Final[dict[Any, str]] = {
    float: "a number",
    int: "an integer",
    str: "a string",
    # By name: openai sets `__module__` of what it re-exports (httpx2.Timeout) to "openai".
    httpx2.Timeout: "httpx2.Timeout",
}


#: The keywords beside the options that a call may take, for "did you mean" (not options).
_KEYWORDS: Final = (
    "model",
    "base_url",
    "api_key",
    "headers",
    "provider",
    "http_client",
    "backend",
    "max_concurrency",
    "buffer",
    "on_progress",
    "rpm",
    "tpm",
    "limiter",
    "max_connections",
    "tracer_provider",
    "trace_content",
    "min_interval",
    "partial_strings",
    "max_snapshot_values",
)


@lru_cache(maxsize=1)
def _option_types() -> dict[str, Any]:
    """Each `Options` field's type, in the order they are declared."""
    hints = get_type_hints(Options)
    return {f.name: hints[f.name] for f in fields(Options)}


def _is_a(value: object, tp: Any) -> bool:
    """Whether `value` is of the (simple) annotated type `tp`, as `Options` spells types."""
    origin = get_origin(tp)
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    if origin is Union or origin is UnionType:
        return any(_is_a(value, arg) for arg in get_args(tp))
    if origin is Literal:
        return isinstance(value, str) and value in get_args(tp)
    if isinstance(value, bool) and tp in (int, float):
        return False  # `max_retries=True` is a slip, not a count
    if tp is float:
        return isinstance(value, int | float)
    if origin is Sequence:
        return isinstance(value, Sequence) and not isinstance(value, str | bytes)
    check = origin or tp
    return not isinstance(check, type) or isinstance(value, check)


def _describe(tp: Any) -> str:
    """`tp` as the message for a wrong value says it: "a number or None"."""
    if tp in _PLAIN:
        return _PLAIN[tp]
    origin = get_origin(tp)
    if origin is Union or origin is UnionType:
        return " or ".join(_describe(arg) for arg in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in get_args(tp))
    if tp is type(None):
        return "None"
    if origin is Callable:
        return "a function"
    kind = origin or tp
    module = getattr(kind, "__module__", "")
    name = getattr(kind, "__qualname__", str(kind))
    return (
        name if module in ("builtins", "collections.abc") else f"{module.partition('.')[0]}.{name}"
    )
