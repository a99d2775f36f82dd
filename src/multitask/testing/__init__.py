"""A scripted model server for testing offline: real HTTP, the providers' real stream formats.

`ScriptedModelServer` listens on 127.0.0.1 and answers OpenAI chat-completions
(`/v1/chat/completions`, also for OpenAI-compatible servers, with their `quirks`), OpenAI
Responses (`/v1/responses`), Anthropic messages (`/v1/messages`), Gemini
(`/v1beta/models/{model}:streamGenerateContent`), Ollama (`/api/chat`, NDJSON) and Azure OpenAI
(`/openai/deployments/{deployment}/chat/completions`) requests, streamed or not, with the
answer a `Script` describes: `{"tasks": items}` (or one tool call per item) delivered delta by
delta, paced, truncated, dropped, stalled, filtered, refused or failed on cue. It needs nothing
beyond anyio::

    async with ScriptedModelServer(Script(items=[{"name": "Ada"}])) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test")
        ...
        assert server.requests[0].completed

Run `python -m multitask.testing --port 8000` to serve from the command line.

`ReadingModel` is a script that reads: its answer is every match of a pattern in the text
each request carries, cut at the request's output limit as a real model's is.

`HostileServer` is its opposite: it answers each request with the raw bytes a `Reply` gives
(any status, headers and body, framed or not, paced, endless, or no answer at all), for
testing what a client does with a broken or malicious server.
"""

from __future__ import annotations

from multitask.testing._hostile import HostileServer, Reply, ReplySource
from multitask.testing._reading import ReadingModel
from multitask.testing._script import QUIRKS, SAMPLE_ITEMS, Script
from multitask.testing._server import RecordedRequest, ScriptedModelServer, ScriptSource

__all__ = [
    "QUIRKS",
    "SAMPLE_ITEMS",
    "HostileServer",
    "ReadingModel",
    "RecordedRequest",
    "Reply",
    "ReplySource",
    "Script",
    "ScriptSource",
    "ScriptedModelServer",
]
