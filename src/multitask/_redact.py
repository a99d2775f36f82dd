"""The client's own credentials, kept out of everything multitask says.

A server (or a proxy in front of it) may echo the API key back: in an error body ("invalid
key: Bearer sk-..."), a mid-stream error event, a header, a redirect's location, the answer
itself. Whatever multitask builds from those bytes (an exception's message, its `body`, its
causes and their messages) goes through a `Redactor` holding the secrets the provider sends,
which replaces each with `[redacted]`.

A secret is found whole or in part: any run of `MIN_SECRET` characters or more of it is
replaced (a parser's excerpt of the text around an error may cut the key at either end). A
secret shorter than that is not looked for: replacing a word like `test` in every message
would garble them, and a key that short guards nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeVar

__all__ = ["MIN_SECRET", "REDACTED", "Redactor"]

#: What a secret is replaced with.
REDACTED: Final = "[redacted]"
#: The shortest secret looked for, and the shortest part of one that is replaced.
MIN_SECRET: Final = 8
# How deep a body is walked (error bodies come from JSON parsers with limits far below this).
_MAX_DEPTH: Final = 200

E = TypeVar("E", bound=BaseException)


class Redactor:
    """Replaces given secrets in text, JSON-like values and exceptions (with their causes)."""

    __slots__ = ("_count", "_grams", "_raw_grams")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = sorted({s for s in secrets if s and len(s) >= MIN_SECRET})
        self._count = len(found)
        # Every run of MIN_SECRET characters of every secret: text covered by them is a part
        # of a secret at least that long (and a whole secret is covered by its runs).
        grams = {s[i : i + MIN_SECRET] for s in found for i in range(len(s) - MIN_SECRET + 1)}
        self._grams = tuple(sorted(grams))
        self._raw_grams = tuple(g.encode("utf-8", "replace") for g in self._grams)

    def __bool__(self) -> bool:
        return bool(self._count)

    def __repr__(self) -> str:
        return f"<Redactor of {self._count} secret(s)>"

    def text(self, text: str) -> str:
        """`text` with every secret, and every part of one of `MIN_SECRET` characters or
        more, replaced."""
        if not any(gram in text for gram in self._grams):
            return text
        return _replaced(text, self._grams, REDACTED)

    def value(self, value: Any) -> Any:
        """A string, bytes or JSON-like value (dicts, lists, tuples) without the secrets: the
        value itself when it holds none, else a copy; anything else as it is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            if not any(gram in value for gram in self._raw_grams):
                return value
            return _replaced(bytes(value), self._raw_grams, REDACTED.encode())
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
                if any(gram in current for gram in self._grams):
                    return True
            elif isinstance(current, bytes | bytearray):
                if any(gram in current for gram in self._raw_grams):
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
        if not self._count:
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


S = TypeVar("S", str, bytes)


def _replaced(text: S, grams: tuple[S, ...], mark: S) -> S:
    """`text` with every stretch covered by occurrences of `grams` replaced by `mark`."""
    covered = bytearray(len(text))
    for gram in grams:
        at = text.find(gram)
        while at >= 0:
            covered[at : at + len(gram)] = b"\x01" * len(gram)
            at = text.find(gram, at + 1)
    parts: list[S] = []
    pos, size = 0, len(text)
    while pos < size:
        start = covered.find(1, pos)
        if start < 0:
            parts.append(text[pos:])
            break
        end = covered.find(0, start)
        end = size if end < 0 else end
        parts += (text[pos:start], mark)
        pos = end
    # An iterator: pyright matches `Iterator[S]` to `join` for each of S's types, not `list[S]`.
    return text[:0].join(iter(parts))
