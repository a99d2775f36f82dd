"""Atheris (libFuzzer) harness for multitask's sans-IO core: the long fuzzing run.

One input picks a target, how to split the body, and the body:

    byte 0        the target: the SSE decoder, the NDJSON decoder, TaskParser (list or whole
                  item), or an `Extraction` with one provider decoder in one answer source
    byte 1        how many cut points follow (0-7)
    2 bytes each  the cut points, modulo the body's length
    the rest      the body

For every input, nothing may raise but a `multitask.MultitaskError`, and feeding the body in
pieces must give what feeding it whole gives. The bugs tests/sansio/test_fuzz.py shows as xfail are
skipped so that the fuzzer can look past them; `MULTITASK_FUZZ_STRICT=1` stops on them too.

    pip install atheris -e .
    python fuzz/fuzz_core.py -max_total_time=600            # seeds itself, see README.md
    python fuzz/fuzz_core.py -max_total_time=600 corpus/    # keeps what it learns in corpus/
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

with atheris.instrument_imports():
    from pydantic import BaseModel

    from multitask import MultiTask, MultitaskError, SSEDecoder, TaskParser
    from multitask._ndjson import NDJSONDecoder
    from multitask._providers import (
        AnswerSource,
        AnthropicDecoder,
        GeminiDecoder,
        OllamaDecoder,
        OpenAIChatDecoder,
        OpenAIResponsesDecoder,
        StreamDecoder,
    )


class User(BaseModel):
    name: str
    age: int


MULTI = MultiTask(User)
DECODERS: list[type[StreamDecoder]] = [
    OpenAIChatDecoder,
    AnthropicDecoder,
    OpenAIResponsesDecoder,
    GeminiDecoder,
    OllamaDecoder,
]
SOURCES: list[AnswerSource] = ["tool", "content", "auto", "calls"]
TARGETS = ["sse", "ndjson", "taskparser", "taskparser-whole"] + [
    f"{d.__name__}:{s}" for d in DECODERS for s in SOURCES
]
STRICT = os.environ.get("MULTITASK_FUZZ_STRICT") == "1"
SHAPE_ERRORS = (AttributeError, KeyError, IndexError, TypeError)


class KnownBug(Exception):
    """One of the bugs tests/sansio/test_fuzz.py shows as xfail."""


def tolerant(cls: type[StreamDecoder]) -> type[StreamDecoder]:
    """`cls`, raising `KnownBug` where it trusts the shape of a well-formed JSON event."""

    def payload(self: StreamDecoder, obj: Any, event: str = "message") -> str:
        try:
            text = cls.payload(self, obj, event)
        except SHAPE_ERRORS as exc:
            raise KnownBug(f"shape: {obj!r:.200}") from exc
        try:
            hash(self.finish_reason)
            ok = isinstance(text, str) and isinstance(self.refusal, str)
            ok = ok and all(isinstance(t, str) and hash(k) is not None for k, t in self.calls)
        except TypeError:
            ok = False
        if not ok:
            raise KnownBug(f"shape: {obj!r:.200}")
        return text

    return type(f"Tolerant{cls.__name__}", (cls,), {"payload": payload})


TOLERANT = {cls: tolerant(cls) for cls in DECODERS}


#: How often each known bug was met (printed when one is first met, then every 20,000 runs;
#: libFuzzer ends the process without running atexit handlers).
SKIPPED: collections.Counter[str] = collections.Counter()
RUNS = [0]


def skip(name: str) -> None:
    SKIPPED[name] += 1
    if SKIPPED[name] == 1:
        print(f"known bug met (skipped): {name}", file=sys.stderr)


def known(exc: BaseException) -> bool:
    """Whether `exc` is a known bug (counted), unless MULTITASK_FUZZ_STRICT is set."""
    files = [(f.filename, f.name) for f in traceback.extract_tb(exc.__traceback__)]
    name = ""
    if isinstance(exc, KnownBug):
        name = "decoder trusts event shapes"
    elif isinstance(exc, UnicodeDecodeError) and any(
        path.endswith("_taskparser.py") and function == "_send" for path, function in files
    ):
        name = "lone low surrogate escape in the answer"
    elif (
        isinstance(exc, ValueError)
        and "integer string conversion" in str(exc)
        and any(path.endswith("_sse.py") for path, _ in files)
    ):
        name = "retry: field of 4300+ digits"
    if not name or STRICT:
        return False
    skip(name)
    return True


def pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points)]


def outcome_of(target: str, chunks: list[bytes]) -> tuple[Any, str | None]:
    """What feeding `chunks` gives, and the error's name; raises only on a bug."""
    if target in ("sse", "ndjson"):
        decoder = SSEDecoder(max_event_bytes=4096) if target == "sse" else NDJSONDecoder()
        events: list[Any] = []
        try:
            for chunk in chunks:
                events += decoder.feed(chunk)
            events += decoder.end()
        except MultitaskError as exc:
            return (None, type(exc).__name__)
        return (events, None)
    if target.startswith("taskparser"):
        parser = TaskParser(whole=target.endswith("whole"), max_item_bytes=8192)
        text = b"".join(chunks).decode("utf-8", "replace")
        bounds = [0]
        for chunk in chunks:  # cut the text where the bytes were cut (roughly)
            bounds.append(min(len(text), bounds[-1] + len(chunk)))
        items: list[Any] = []
        try:
            for a, b in itertools.pairwise(bounds):
                items += parser.feed(text[a:b])
        except MultitaskError as exc:  # raised by a feed, or said by close(): the same
            return (json.dumps(items, default=repr), type(exc).__name__)
        items += parser.close()
        error = type(parser.error).__name__ if parser.error else None
        return (json.dumps(items, default=repr), error)
    name, source = target.split(":")
    cls = next(d for d in DECODERS if d.__name__ == name)
    extraction = MULTI.extraction(TOLERANT[cls](source))  # type: ignore[arg-type]
    users: list[User] = []
    try:
        for chunk in chunks:
            users += extraction.feed_bytes(chunk)
        users += extraction.close()
        extraction.raise_for_outcome()
    except MultitaskError as exc:
        return (users, type(exc).__name__)
    return (users, None)


def test_one_input(data: bytes) -> None:
    RUNS[0] += 1
    if RUNS[0] % 20_000 == 0 and SKIPPED:
        print(f"known bugs skipped so far: {dict(SKIPPED)}", file=sys.stderr)
    if len(data) < 2:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    count = data[1] % 8
    header = 2 + 2 * count
    cuts = [int.from_bytes(data[2 + 2 * i : 4 + 2 * i], "big") for i in range(count)]
    body = data[header:]
    try:
        whole = outcome_of(target, [body])
        split = outcome_of(target, pieces(body, cuts))
    except Exception as exc:
        if known(exc):
            return
        raise
    if whole == split:
        return
    if probe_bug(whole, split, body) and not STRICT:
        skip("'tasks' key found by substring")
        return
    raise AssertionError(f"{target}: split {cuts} changed the outcome: {whole} != {split}")


def probe_bug(whole: tuple[Any, str | None], split: tuple[Any, str | None], body: bytes) -> bool:
    """test_tasks_key_found_by_substring: no items either way, and one of the two outcomes
    took a `"tasks"` seen after the JSON (or nested in it) for the answer's list."""
    no_items = whole[0] in ("[]", []) and split[0] in ("[]", [])
    errors = {whole[1], split[1]}
    return b'"tasks"' in body and no_items and errors == {None, "MalformedOutputError"}


# -- seeds -------------------------------------------------------------------------------------

WIRE = Path(__file__).resolve().parents[2] / "shared" / "wire"


def seed_bodies() -> list[tuple[int, bytes]]:
    """(target, body) pairs: the captures, every provider's rendered stream, answers."""
    from multitask._providers import RequestSpec, get_provider
    from multitask.testing import Script, _wire

    out: list[tuple[int, bytes]] = []
    captures = sorted(WIRE.glob("*/*.sse")) if WIRE.is_dir() else []
    users = [{"name": "Ada", "age": 36}, {"name": 'Al"an', "age": 41}]
    script = Script(items=users, chunk_size=5)
    for target, name in enumerate(TARGETS):
        if name == "sse":
            out += [(target, p.read_bytes()) for p in captures]
        elif name.startswith("taskparser"):
            out.append((target, json.dumps({"tasks": users}).encode()))
            out.append((target, b'Sure:\n```json\n[1, "a", {"b": null}]\n```'))
        elif ":" in name:
            out += [(target, p.read_bytes()) for p in captures]
    for provider in _wire.PROVIDERS:
        p = get_provider(provider, base_url="http://x", api_key="k")
        for mode in sorted(p.modes):
            spec = RequestSpec("m", MULTI, mode, "s", [{"role": "user", "content": "t"}])  # type: ignore[arg-type]
            plan = _wire.stream_plan(
                provider, dict(p.request(spec).json), script, ids=_wire.Ids(1), now=0, model="m"
            )
            decoder = p.decoder(mode)  # type: ignore[arg-type]
            target = TARGETS.index(f"{type(decoder).__name__}:{decoder.source}")
            out.append((target, plan.body))
            if provider == "ollama":
                out.append((TARGETS.index("ndjson"), plan.body))
    return out


def seed_corpus() -> str:
    directory = tempfile.mkdtemp(prefix="multitask-fuzz-seeds-")
    for i, (target, body) in enumerate(seed_bodies()):
        Path(directory, f"seed-{i:03d}").write_bytes(bytes([target, 0]) + body)
    return directory


def main() -> None:
    args = sys.argv[:]
    if not any(os.path.isdir(a) for a in args[1:] if not a.startswith("-")):
        args.append(seed_corpus())
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
