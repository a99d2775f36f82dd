"""The public API, pinned: each tier's `__all__`, the names that moved between tiers (still
importable from their old place, with a warning, for one release), `__version__`, and the
exception tree drawn in `_exceptions`' docstring.

A change to a tier's names is a change to this file: it should be a decision, not an accident.
"""

from __future__ import annotations

import importlib
import re
import warnings
from importlib.metadata import version
from types import ModuleType

import pytest

import multitask
import multitask.lowlevel
import multitask.providers
import multitask.testing
import multitask.web
from multitask import _exceptions

TOP = {
    # extracting
    "extract",
    "extract_many_sync",
    "extract_stream",
    "extract_stream_sync",
    "extract_sync",
    "Client",
    "Options",
    "RateLimiter",
    # what comes back
    "ItemStream",
    "StreamInfo",
    "Usage",
    "InvalidItem",
    "OnInvalid",
    "Progress",
    "Result",
    "Results",
    # grounded quotes
    "Quote",
    # documents, images and PDFs as input
    "Document",
    "Image",
    "PDF",
    # partial items
    "EventStream",
    "ExtractionEvent",
    "ItemStarted",
    "ItemUpdated",
    "ItemDone",
    "ItemSkipped",
    "Finished",
    # the classic API
    "MultiTask",
    "MultiTaskModel",
    "patch",
    # providers, by name
    "provider_names",
    "register_openai_compatible",
    "register_provider",
    # what it raises
    "MultitaskError",
    "ConfigurationError",
    "SchemaError",
    "IncompleteOutputError",
    "RetryDivergedError",
    "MalformedOutputError",
    "ItemTooLargeError",
    "AnswerTooLargeError",
    "ItemValidationError",
    "RefusalError",
    "ContentFilterError",
    "StreamDecodeError",
    "EventTooLargeError",
    "ProviderError",
    "APIStatusError",
    "StreamError",
    "APIConnectionError",
    "APITimeoutError",
}

PROVIDERS = {
    "Provider",
    "ProviderDecoder",
    "RequestSpec",
    "HTTPRequest",
    "TaskSchema",
    "ServerSentEvent",
    "AnswerSource",
    "Mode",
    "Usage",
    "PRESETS",
    "get_provider",
    "split_model",
    "provider_names",
    "register_openai_compatible",
    "register_provider",
    "OpenAIChat",
    "OpenAIChatDecoder",
    "OpenAIResponses",
    "OpenAIResponsesDecoder",
    "Anthropic",
    "AnthropicDecoder",
    "Gemini",
    "GeminiDecoder",
    "Ollama",
    "OllamaDecoder",
    "AzureOpenAI",
}

LOWLEVEL = {
    "Extraction",
    "PartialExtraction",
    "Pipeline",
    "TaskParser",
    "PartialTaskParser",
    "SSEDecoder",
    "NDJSONDecoder",
    "ServerSentEvent",
    "StreamingTransport",
}

TESTING = {
    "ScriptedModelServer",
    "Script",
    "ScriptSource",
    "Reply",
    "ReplySource",
    "RecordedRequest",
    "HostileServer",
    "ReadingModel",
    "QUIRKS",
    "SAMPLE_ITEMS",
}

WEB = {"sse_response", "ndjson_response", "SSEResponse", "NDJSONResponse", "safe_error"}
WEB |= {"DEFAULT_KEEP_ALIVE", "highlight"}

RAY = {"Extractor", "Ledger", "RateLimit", "SharedRateLimiter", "output_schema"}

#: Names in two tiers on purpose: what a user and a provider author both reach for.
SHARED = {
    ("multitask", "multitask.providers"): {
        "Usage",
        "provider_names",
        "register_openai_compatible",
        "register_provider",
    },
    ("multitask.providers", "multitask.lowlevel"): {"ServerSentEvent"},
}

TIERS = {
    "multitask": TOP,
    "multitask.providers": PROVIDERS,
    "multitask.lowlevel": LOWLEVEL,
    "multitask.testing": TESTING,
    "multitask.web": WEB,
    "multitask.ray": RAY,
}

#: Old top-level name -> where it lives now.
MOVED = {
    "EventExtraction": "multitask.lowlevel.PartialExtraction",
    "Extraction": "multitask.lowlevel.Extraction",
    "PartialTaskParser": "multitask.lowlevel.PartialTaskParser",
    "SSEDecoder": "multitask.lowlevel.SSEDecoder",
    "ServerSentEvent": "multitask.lowlevel.ServerSentEvent",
    "StreamingTransport": "multitask.lowlevel.StreamingTransport",
    "TaskParser": "multitask.lowlevel.TaskParser",
    "HTTPRequest": "multitask.providers.HTTPRequest",
    "Provider": "multitask.providers.Provider",
    "ProviderDecoder": "multitask.providers.ProviderDecoder",
    "RequestSpec": "multitask.providers.RequestSpec",
    "StreamDecoder": "multitask.providers.ProviderDecoder",
}


def tier(name: str) -> ModuleType:
    if name == "multitask.ray":
        pytest.importorskip("ray")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", TIERS)
def test_all_is_pinned(name: str) -> None:
    module = tier(name)
    assert len(module.__all__) == len(set(module.__all__)), "a name listed twice"
    assert set(module.__all__) == TIERS[name]


@pytest.mark.parametrize("name", TIERS)
def test_every_listed_name_is_there_and_public(name: str) -> None:
    module = tier(name)
    for attr in module.__all__:
        assert not attr.startswith("_")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a listed name is never a deprecated one
            getattr(module, attr)


def test_the_top_level_is_for_users() -> None:
    # 50, and the three input types of issue 20 (Document, Image, PDF).
    assert len(TOP) <= 53
    assert sum(1 for n in TOP if n.endswith("Error")) == 18


def test_tiers_share_only_what_they_mean_to() -> None:
    names = list(TIERS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = TIERS[a] & TIERS[b]
            assert both == SHARED.get((a, b), set()), (a, b)
            for attr in both:  # and then it is the same object
                assert getattr(tier(a), attr) is getattr(tier(b), attr)


@pytest.mark.parametrize(("old", "new"), MOVED.items())
def test_a_moved_name_still_works_for_a_release_with_a_warning(old: str, new: str) -> None:
    home, _, attr = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=re.escape(new)) as caught:
        value = getattr(multitask, old)
    assert value is getattr(importlib.import_module(home), attr)
    assert caught[0].filename == __file__  # the warning points at the code that used it
    assert old not in multitask.__all__


def test_from_import_of_a_moved_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="multitask.lowlevel.TaskParser"):
        from multitask import TaskParser  # noqa: F401


def test_stream_decoder_is_provider_decoder_in_the_providers_tier_too() -> None:
    with pytest.warns(DeprecationWarning, match="ProviderDecoder"):
        old = multitask.providers.StreamDecoder  # type: ignore[attr-defined]
    assert old is multitask.providers.ProviderDecoder


def test_stream_decoder_is_a_deprecated_alias_in_the_private_modules_too() -> None:
    """`StreamDecoder`, the old name of `ProviderDecoder`, still works (with a warning) from
    the private modules provider code used to import it from: `multitask._providers`, `_base`."""
    import multitask._providers as providers
    from multitask._providers import _base

    new = multitask.providers.ProviderDecoder
    for module in (providers, _base):
        with pytest.warns(DeprecationWarning, match="StreamDecoder is deprecated"):
            assert module.StreamDecoder is new  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="now ProviderDecoder"):
        from multitask._providers import StreamDecoder  # noqa: F401
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        providers.Nope  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("name", [*TIERS, "multitask"])
def test_an_unknown_name_is_an_attribute_error(name: str) -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(tier(name), "Nope")  # noqa: B009


def test_version() -> None:
    assert multitask.__version__ == version("multitask")
    assert "__version__" not in multitask.__all__  # as in trio, anyio and httpx


def _drawn_tree() -> list[tuple[int, str]]:
    doc = _exceptions.__doc__ or ""
    rows = []
    for line in doc.splitlines():
        match = re.fullmatch(r"( *)([A-Z]\w+Error) {2,}\S.*", line)
        if match:
            rows.append((len(match[1]) // 2, match[2]))
    return rows


def test_the_exception_tree_in_the_docstring_is_the_real_one() -> None:
    drawn = _drawn_tree()
    names = [name for _, name in drawn]
    assert set(names) == {n for n in TOP if n.endswith("Error")}  # every one, each once
    assert len(names) == len(set(names))
    parents: list[str] = []
    for depth, name in drawn:
        parents[depth:] = [name]
        cls = getattr(multitask, name)
        if depth == 0:
            assert cls is multitask.MultitaskError
            continue
        parent = getattr(multitask, parents[depth - 1])
        bases = [b for b in cls.__bases__ if issubclass(b, multitask.MultitaskError)]
        assert bases == [parent], name
