"""A credential the server echoes back never reaches what multitask builds from it, for every
provider: HTTP error exceptions (`Provider.error`), mid-stream error events and other decoder
errors (`StreamError`, `StreamDecodeError`, refusals), the pipeline's parse errors, their
`body` and every other attribute, their causes, and the redactor itself. The end-to-end side
(a server echoing the request's headers) is in `test_hostile.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

import multitask
from _exception_text import exception_text
from multitask._redact import MIN_SECRET, REDACTED, Redactor
from multitask.lowlevel import Extraction
from multitask.providers import (
    Anthropic,
    AzureOpenAI,
    Gemini,
    Ollama,
    OpenAIChat,
    OpenAIResponses,
    Provider,
)

KEY = "sk-proj-Echo0123456789abcdefXYZ"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.azure-ad"


class User(BaseModel):
    name: str
    age: int


def openai_error_event(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_error"}}).encode()


#: Each provider, made with the secret, and a mid-stream error event (as its decoder gets
#: it: the data, and the event type) that echoes a text.
PROVIDERS: dict[str, tuple[Callable[[], Provider], str, Callable[[str], tuple[bytes, str]]]] = {
    "openai": (lambda: OpenAIChat(api_key=KEY), KEY, lambda m: (openai_error_event(m), "message")),
    "anthropic": (
        lambda: Anthropic(api_key=KEY),
        KEY,
        lambda m: (
            json.dumps({"type": "error", "error": {"type": "api_error", "message": m}}).encode(),
            "error",
        ),
    ),
    "openai-responses": (
        lambda: OpenAIResponses(api_key=KEY),
        KEY,
        lambda m: (json.dumps({"type": "error", "code": "x", "message": m}).encode(), "error"),
    ),
    "gemini": (
        lambda: Gemini(api_key=KEY),
        KEY,
        lambda m: (json.dumps({"error": {"status": "INTERNAL", "message": m}}).encode(), "message"),
    ),
    "ollama": (
        lambda: Ollama(api_key=KEY),
        KEY,
        lambda m: (json.dumps({"error": m}).encode(), "message"),
    ),
    "azure-key": (
        lambda: AzureOpenAI(base_url="https://r.openai.azure.com", api_key=KEY),
        KEY,
        lambda m: (openai_error_event(m), "message"),
    ),
    "azure-ad-token": (
        lambda: AzureOpenAI(base_url="https://r.openai.azure.com", azure_ad_token=TOKEN),
        TOKEN,
        lambda m: (openai_error_event(m), "message"),
    ),
    "groq": (
        lambda: multitask.providers.PRESETS["groq"](api_key=KEY),
        KEY,
        lambda m: (openai_error_event(m), "message"),
    ),
}


def echoes(secret: str) -> list[str]:
    """The ways a server spells the credential back."""
    return [secret, f"Bearer {secret}", f"x-api-key: {secret}", f"api-key={secret}"]


def assert_clean(exc: BaseException, secret: str) -> None:
    text = exception_text(exc)
    assert secret not in text, text
    assert REDACTED in text, text


@pytest.mark.parametrize("echo", range(4), ids=["raw", "bearer", "x-api-key", "api-key"])
@pytest.mark.parametrize("name", list(PROVIDERS))
def test_an_http_error_that_echoes_the_credential(name: str, echo: int) -> None:
    make, secret, _ = PROVIDERS[name]
    said = echoes(secret)[echo]
    body = json.dumps({"error": {"message": f"bad: {said}", "type": "auth", "code": said}})
    error = make().error(401, {}, body.encode())
    assert isinstance(error, multitask.APIStatusError)
    assert_clean(error, secret)
    assert error.body["error"]["message"] == f"bad: {said.replace(secret, REDACTED)}"
    # Not JSON: the body is kept as text, redacted too.
    error = make().error(502, {}, f"<html>proxy says {said}</html>".encode())
    assert secret not in exception_text(error)
    # A redirect names its location in the message.
    error = make().error(302, {"location": f"https://x.example/?key={secret}"}, b"")
    assert_clean(error, secret)


def test_azure_content_filter_errors_are_redacted() -> None:
    body = json.dumps({"error": {"code": "content_filter", "message": f"no: {KEY}"}})
    error = AzureOpenAI(base_url="https://r.openai.azure.com", api_key=KEY).error(
        400, {}, body.encode()
    )
    assert isinstance(error, multitask.ContentFilterError)
    assert_clean(error, KEY)


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_a_mid_stream_error_event_that_echoes_the_credential(name: str) -> None:
    make, secret, error_event = PROVIDERS[name]
    data, event = error_event(f"upstream rejected Bearer {secret}")
    decoder = make().decoder("json_schema" if name in ("gemini", "ollama") else "tools")
    with pytest.raises(multitask.StreamError) as info:
        decoder.data(data, event)
    assert_clean(info.value, secret)


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_other_decoder_errors_that_echo_the_credential(name: str) -> None:
    make, secret, _ = PROVIDERS[name]
    for data in (f"not json {secret}".encode(), json.dumps([secret]).encode()):
        decoder = make().decoder("json_schema" if name in ("gemini", "ollama") else "tools")
        with pytest.raises(multitask.StreamDecodeError) as info:
            decoder.data(data)
        assert_clean(info.value, secret)


def read_whole(extraction: Extraction[Any], answer: str) -> None:
    extraction.feed_text(answer)
    extraction.close()
    extraction.raise_for_outcome()


@pytest.mark.parametrize("name", ["openai", "azure-ad-token", "groq"])
def test_pipeline_errors_that_echo_the_credential(name: str) -> None:
    """The answer itself may hold the echo: a malformed-JSON excerpt, an invalid item, a
    refusal; the pipeline redacts with its decoder's redactor."""
    make, secret, _ = PROVIDERS[name]
    provider = make()
    adapter = TypeAdapter(User)
    cases: list[tuple[str, type[multitask.MultitaskError]]] = [
        ('{"tasks": [{"name": "' + secret + '", "age": x}]}', multitask.MalformedOutputError),
        ('{"tasks": [{"name": "a", "age": "' + secret + '"}]}', multitask.ItemValidationError),
        ("no JSON here, only " + secret, multitask.MalformedOutputError),
    ]
    for answer, kind in cases:
        extraction = Extraction(adapter, provider.decoder("json"))
        with pytest.raises(kind) as info:
            read_whole(extraction, answer)
        assert_clean(info.value, secret)
    # A refusal streamed by the model, ending the answer.
    extraction = Extraction(adapter, provider.decoder("tools"))
    chunk = {"choices": [{"index": 0, "delta": {"refusal": f"I will not use {secret}"}}]}
    extraction.feed_payload(chunk)
    extraction.close()
    with pytest.raises(multitask.RefusalError) as refused:
        extraction.raise_for_outcome()
    assert_clean(refused.value, secret)
    assert secret not in (refused.value.refusal or "")


def chained() -> multitask.APIConnectionError:
    try:
        raise ValueError(f"inner {KEY}")
    except ValueError as inner:
        outer = multitask.APIConnectionError(f"outer {KEY}")
        outer.__cause__ = inner
        outer.__context__ = inner
        return outer


def test_causes_and_contexts_are_redacted() -> None:
    outer = chained()
    outer.add_note(f"a note with {KEY}")
    assert OpenAIChat(api_key=KEY).redact(outer) is outer
    assert_clean(outer, KEY)
    assert outer.__notes__ == [f"a note with {REDACTED}"]


def test_the_redactor() -> None:
    redactor = Redactor([KEY, None, "", "short"])
    assert repr(redactor) == "<Redactor of 1 secret(s)>"  # never the secrets themselves
    assert redactor.text(f"a {KEY} b {KEY}") == f"a {REDACTED} b {REDACTED}"
    assert redactor.text("short stays: a key under 8 characters garbles, not guards") == (
        "short stays: a key under 8 characters garbles, not guards"
    )
    assert MIN_SECRET == 8
    assert redactor.value(KEY.encode() + b"!") == REDACTED.encode() + b"!"
    # A part of the key (a parser's excerpt cuts it anywhere) is replaced too, down to 8.
    assert redactor.text(f"..{KEY[11:]}, x") == f"..{REDACTED}, x"
    assert redactor.text(f"[{KEY[:9]}]") == f"[{REDACTED}]"
    assert redactor.text(f"[{KEY[3:10]}]") == f"[{KEY[3:10]}]"  # 7 characters: not a secret
    nested: Any = [KEY]
    for _ in range(5000):  # deeper than any recursion could follow
        nested = {"x": nested}
    clean = redactor.value(nested)
    node = clean
    while isinstance(node, dict):
        node = node["x"]
    assert node in ([REDACTED], REDACTED)
    same = {"a": [1, "b"]}
    assert redactor.value(same) is same  # nothing to hide: not copied
    assert not Redactor([None, "tiny"])
    both = Redactor([KEY, KEY[:12]])
    assert both.text(KEY) == REDACTED  # the longer secret first, whole


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_a_provider_without_a_key_redacts_nothing(name: str) -> None:
    make, _, _ = PROVIDERS[name]
    provider = make()
    provider._api_key = None
    if isinstance(provider, AzureOpenAI):
        provider._ad_token = None
    assert provider.redactor is None
    error = provider.error(401, {}, b'{"error": {"message": "no key"}}')
    assert "no key" in str(error)
