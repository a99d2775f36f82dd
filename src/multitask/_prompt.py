"""The prompt multitask sends: a system message that asks for every item, and the text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._parts import Parts

__all__ = ["Message", "build_messages", "default_system", "json_instructions"]

#: A chat message as the providers take it: {"role": ..., "content": ...}.
Message = dict[str, Any]


def default_system(task_name: str, *, parallel: bool = False) -> str:
    """The default instruction: find every item, in order, and answer with the `tasks` list."""
    if parallel:
        return (
            f"Call the `{task_name}` tool once for each `{task_name}` in the user's text, in "
            f"the order they appear. Use only values the text supports."
        )
    return (
        f"Extract every `{task_name}` in the user's text into the `tasks` list, in the order "
        f"they appear. Use only values the text supports."
    )


def json_instructions(parameters: dict[str, Any]) -> str:
    """For JSON-object mode, where the schema can only be given in the prompt."""
    return (
        'Answer with only a JSON object of the form {"tasks": [...]}, with no other text, '
        "that matches this JSON schema:\n" + json.dumps(parameters, separators=(",", ":"))
    )


def build_messages(
    text: str | None,
    *,
    system: str,
    messages: Sequence[Message] | None = None,
    parts: Parts | None = None,
) -> tuple[str, list[Message]]:
    """The system prompt, and the conversation: the caller's messages, then the text (or
    the `parts`, left for the provider to put in its own content blocks)."""
    conversation = [dict(m) for m in messages or ()]
    if parts is not None:
        conversation.append({"role": "user", "content": parts})
    elif text is not None:
        conversation.append({"role": "user", "content": text})
    if not conversation:
        raise ValueError("nothing to extract from: give a text or messages")
    return system, conversation
