"""The client's own credentials, kept out of everything multitask says.

A server (or a proxy in front of it) may echo the API key back: in an error body ("invalid
key: Bearer sk-..."), a mid-stream error event, a header, a redirect's location, the answer
itself. Whatever multitask builds from those bytes (an exception's message, its `body`, its
causes and their messages) goes through a `Redactor` holding the secrets the provider sends,
which replaces each with `[redacted]`.

A secret shorter than `MIN_SECRET` characters is not looked for: replacing a word like `test`
in every message would garble them, and a key that short guards nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeVar

__all__ = ["MIN_SECRET", "REDACTED", "Redactor"]

#: What a secret is replaced with.
REDACTED: Final = "[redacted]"
#: The shortest secret looked for.
MIN_SECRET: Final = 8
# How deep a body is walked (error bodies come from JSON parsers with limits far below this).
_MAX_DEPTH: Final = 200

E = TypeVar("E", bound=BaseException)


class Redactor:
    """Replaces given secrets in text, JSON-like values and exceptions (with their causes)."""

    __slots__ = ("_raw", "_secrets")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = tuple(sorted(found, key=len, reverse=True))
        self._raw = tuple(s.encode("utf-8", "replace") for s in self._secrets)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._secrets)} secret(s)>"

    def text(self, text: str) -> str:
        """`text` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A string, bytes or JSON-like value (dicts, lists, tuples) without the secrets: the
        value itself when it holds none, else a copy; anything else as it is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            for secret in self._raw:
                if secret in value:
                    value = value.replace(secret, REDACTED.encode())
            return value
        if not isinstance(value, dict | list | tuple) or not self._found_in(value):
            return value
        return self._copied(value, 0)

    def _found_in(self, value: Any) -> bool:
        """Whether a secret is in a string or bytes anywhere in `value` (without recursing:
        an answer's item may nest thousands deep)."""
        todo = [value]
        while todo:
            current = todo.pop()
            if isinstance(current, str):
                if any(secret in current for secret in self._secrets):
                    return True
            elif isinstance(current, bytes | bytearray):
                if any(secret in current for secret in self._raw):
                    return True
            elif isinstance(current, dict):
                todo += current.keys()
                todo += current.values()
            elif isinstance(current, list | tuple):
                todo += current
        return False

    def _copied(self, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:  # (then the whole part below, if a secret is in it)
            return REDACTED if self._found_in(value) else value
        if isinstance(value, dict):
            return {self.value(k): self._copied(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._copied(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(self._copied(v, depth + 1) for v in value)
        return self.value(value)

    def exception(self, exc: E) -> E:
        """Redact `exc` in place, and every exception in its chain of causes and contexts:
        their messages (`args`, notes) and, for multitask's own, their attributes (`body`,
        `refusal`, `raw`...). Returns `exc`."""
        if not self._secrets:
            return exc
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            try:
                args = self.value(current.args)
                if args != current.args:
                    current.args = args
                notes = getattr(current, "__notes__", None)
                if isinstance(notes, list):
                    current.__notes__ = [self.value(n) for n in notes]
                if type(current).__module__.startswith("multitask."):
                    for name, attribute in vars(current).items():
                        if isinstance(attribute, str | bytes | dict | list | tuple):
                            setattr(current, name, self.value(attribute))
            except (TypeError, AttributeError, ValueError):
                pass  # an exception type that does not let its fields be set: leave it
            todo += [current.__cause__, current.__context__]
        return exc
