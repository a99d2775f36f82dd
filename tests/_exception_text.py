"""The whole text of an exception, for tests that check a secret appears nowhere in it."""

from __future__ import annotations

import traceback


def exception_text(exc: BaseException) -> str:
    """str, repr, args and attributes of an exception and of every cause and context, and
    the traceback as Python prints it."""
    parts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        parts += [f"{k}={v!r}" for k, v in vars(current).items()]
        todo += [current.__cause__, current.__context__]
    parts += traceback.format_exception(exc)
    return "\n".join(parts)
