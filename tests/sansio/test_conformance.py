"""Public conformance suites, run as data (see `tests/data/*/README.md` for sources and licences).

* JSONTestSuite's parsing tests through both task parsers, each document the only item of
  `{"tasks": [...]}`: every `y_` document yields exactly what `json.loads` gives; every `n_`
  document ends in a `MultitaskError`, in bounded time, and nothing before it is an item a
  strict reader would not give (the reference below reads the same text with Python's
  strict JSON decoder, item by item); every `i_` document does what the table says.
* Server-sent event vectors from web-platform-tests, eventsource-parser and httpx-sse, fed to
  `SSEDecoder` whole, byte by byte, in their sources' chunks and at random splits.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from multitask import ItemDone, MalformedOutputError, MultitaskError
from multitask.lowlevel import PartialTaskParser, ServerSentEvent, SSEDecoder, TaskParser

DATA = Path(__file__).resolve().parents[1] / "data"
SUITE = DATA / "JSONTestSuite" / "test_parsing"
DOCUMENTS = sorted(SUITE.glob("*.json"))
PREFIX = '{"tasks": ['


def _reject(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_STRICT = json.JSONDecoder(parse_constant=_reject)  # (json's whitespace is RFC 8259's)
_SPACE = " \t\n\r"


def strict_items(wrapped: str) -> list[Any]:
    """The items a strict streaming reader gives for `{"tasks": [...]}`: each value of the
    list that Python's strict decoder reads whole, up to the first thing it refuses."""
    items: list[Any] = []
    pos = len(PREFIX)
    while True:
        while pos < len(wrapped) and wrapped[pos] in _SPACE:
            pos += 1
        if wrapped.startswith("]", pos):
            return items
        try:
            value, pos = _STRICT.raw_decode(wrapped, pos)
        except (ValueError, RecursionError):
            return items
        items.append(value)
        while pos < len(wrapped) and wrapped[pos] in _SPACE:
            pos += 1
        if not wrapped.startswith(",", pos):
            return items
        pos += 1


def pieces_of(text: str, seed: int) -> list[list[str]]:
    """`text` whole, in one-character pieces (64 for long texts), and at three random splits."""
    rng = random.Random(seed)
    step = 1 if len(text) <= 20_000 else 64
    out = [[text], [text[i : i + step] for i in range(0, len(text), step)]]
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(text)), min(5, len(text) - 1)))
        out.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    return out


def run_task(pieces: list[str]) -> tuple[list[Any], MultitaskError | None]:
    parser = TaskParser()
    items: list[Any] = []
    try:
        for piece in pieces:
            items += parser.feed(piece)
        items += parser.close()
    except MultitaskError as exc:
        return items, exc
    return items, parser.error


def run_partial(pieces: list[str]) -> tuple[list[Any], MultitaskError | None]:
    parser = PartialTaskParser()
    items: list[Any] = []
    try:
        for piece in pieces:
            items += [e.item for e in parser.feed(piece) if isinstance(e, ItemDone)]
        items += [e.item for e in parser.close() if isinstance(e, ItemDone)]
    except MultitaskError as exc:
        return items, exc
    return items, parser.error


def exact(value: Any) -> str:
    """A value as text that tells 1 from 1.0 and keeps key order."""
    return json.dumps(value, ensure_ascii=True)


def read(path: Path) -> tuple[bytes, str]:
    raw = path.read_bytes()
    # As the pipeline hands the answer over: text decoded from UTF-8, with replacement.
    return raw, PREFIX + raw.decode("utf-8", "replace") + "]}"


def test_the_suite_is_all_there() -> None:
    kinds = [p.name[:2] for p in DOCUMENTS]
    assert (kinds.count("y_"), kinds.count("n_"), kinds.count("i_")) == (95, 188, 35)
    assert (SUITE.parent / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize(
    "path", [p for p in DOCUMENTS if p.name.startswith("y_")], ids=lambda p: p.name
)
def test_every_y_document_yields_what_json_loads_gives(path: Path) -> None:
    raw, wrapped = read(path)
    expected = exact([json.loads(raw)])
    assert exact(strict_items(wrapped)) == expected
    for number, pieces in enumerate(pieces_of(wrapped, zlib.crc32(path.name.encode()))):
        for run in (run_task, run_partial):
            items, error = run(pieces)
            assert error is None, (run.__name__, number, error)
            assert exact(items) == expected, (run.__name__, number)


#: Documents that are nothing (blank): inside the list they make an empty list, which is
#: fine JSON; what matters is that no item comes of them.
BLANK = {"n_single_space.json", "n_structure_no_data.json"}


@pytest.mark.parametrize(
    "path", [p for p in DOCUMENTS if p.name.startswith("n_")], ids=lambda p: p.name
)
def test_every_n_document_is_refused(path: Path) -> None:
    raw, wrapped = read(path)
    with pytest.raises((ValueError, RecursionError)):  # (a RecursionError: nested too deep)
        _STRICT.decode(raw.decode("utf-8"))
    strict = exact(strict_items(wrapped))
    for number, pieces in enumerate(pieces_of(wrapped, zlib.crc32(path.name.encode()))):
        for run in (run_task, run_partial):
            started = time.monotonic()
            items, error = run(pieces)
            assert time.monotonic() - started < 5, "it must never hang"
            if path.name in BLANK:
                assert (items, error) == ([], None)
                continue
            assert isinstance(error, MultitaskError), (run.__name__, number, items)
            # Whatever came before the error is what a strict reader gives (often nothing).
            assert exact(items) == strict, (run.__name__, number)


#: What each implementation-defined document does: its items (as `exact` writes them), or
#: the error. Numbers past a double or int64 are refused (README, Known limits); an unpaired
#: surrogate escape is `?`; invalid UTF-8 was replaced by U+FFFD when the text was decoded;
#: UTF-16 and a byte order mark inside the list are not JSON text.
I_TABLE: dict[str, str] = {
    "i_number_double_huge_neg_exp.json": "[[0.0]]",
    "i_number_huge_exp.json": "MalformedOutputError",
    "i_number_neg_int_huge_exp.json": "MalformedOutputError",
    "i_number_pos_double_huge_exp.json": "MalformedOutputError",
    "i_number_real_neg_overflow.json": "MalformedOutputError",
    "i_number_real_pos_overflow.json": "MalformedOutputError",
    "i_number_real_underflow.json": "[[0.0]]",
    "i_number_too_big_neg_int.json": "MalformedOutputError",
    "i_number_too_big_pos_int.json": "MalformedOutputError",
    "i_number_very_big_negative_int.json": "MalformedOutputError",
    "i_object_key_lone_2nd_surrogate.json": '[{"?": 0}]',
    "i_string_1st_surrogate_but_2nd_missing.json": '[["?"]]',
    "i_string_1st_valid_surrogate_2nd_invalid.json": '[["?\\u1234"]]',
    "i_string_UTF-16LE_with_BOM.json": "MalformedOutputError",
    "i_string_UTF-8_invalid_sequence.json": '[["\\u65e5\\u0448\\ufffd"]]',
    "i_string_UTF8_surrogate_U+D800.json": '[["\\ufffd\\ufffd\\ufffd"]]',
    "i_string_incomplete_surrogate_and_escape_valid.json": '[["?\\n"]]',
    "i_string_incomplete_surrogate_pair.json": '[["?a"]]',
    "i_string_incomplete_surrogates_escape_valid.json": '[["??\\n"]]',
    "i_string_invalid_lonely_surrogate.json": '[["?"]]',
    "i_string_invalid_surrogate.json": '[["?abc"]]',
    "i_string_invalid_utf-8.json": '[["\\ufffd"]]',
    "i_string_inverted_surrogates_U+1D11E.json": '[["??"]]',
    "i_string_iso_latin_1.json": '[["\\ufffd"]]',
    "i_string_lone_second_surrogate.json": '[["?"]]',
    "i_string_lone_utf8_continuation_byte.json": '[["\\ufffd"]]',
    "i_string_not_in_unicode_range.json": '[["\\ufffd\\ufffd\\ufffd\\ufffd"]]',
    "i_string_overlong_sequence_2_bytes.json": '[["\\ufffd\\ufffd"]]',
    "i_string_overlong_sequence_6_bytes.json": '[["\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd"]]',
    "i_string_overlong_sequence_6_bytes_null.json": (
        '[["\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd"]]'
    ),
    "i_string_truncated-utf-8.json": '[["\\ufffd\\ufffd"]]',
    "i_string_utf16BE_no_BOM.json": "MalformedOutputError",
    "i_string_utf16LE_no_BOM.json": "MalformedOutputError",
    "i_structure_500_nested_arrays.json": exact([json.loads("[" * 500 + "]" * 500)]),
    "i_structure_UTF-8_BOM_empty_object.json": "MalformedOutputError",
}


def test_the_i_table_names_every_i_document() -> None:
    assert sorted(I_TABLE) == sorted(p.name for p in DOCUMENTS if p.name.startswith("i_"))


@pytest.mark.parametrize("name", sorted(I_TABLE))
def test_every_i_document_does_what_the_table_says(name: str) -> None:
    _, wrapped = read(SUITE / name)
    for number, pieces in enumerate(pieces_of(wrapped, zlib.crc32(name.encode()))):
        for run in (run_task, run_partial):
            items, error = run(pieces)
            got = type(error).__name__ if error is not None else exact(items)
            assert got == I_TABLE[name], (run.__name__, number)
            if error is not None:
                assert isinstance(error, MalformedOutputError)
                assert items == []


# -- server-sent events ----------------------------------------------------------------------------

VECTORS: list[dict[str, Any]] = json.loads((DATA / "sse" / "vectors.json").read_text("utf-8"))[
    "vectors"
]


def feeds_of(vector: dict[str, Any], seed: int) -> list[list[bytes]]:
    data = vector["input"].encode("utf-8")
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    if "chunks" in vector:
        out.append([c.encode("utf-8") for c in vector["chunks"]])
    rng = random.Random(seed)
    for _ in range(5):
        if len(data) > 1:
            cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
            out.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])
    return out


def expected_events(vector: dict[str, Any]) -> list[ServerSentEvent]:
    return [
        ServerSentEvent(e["data"], e["type"], e["id"], e.get("retry")) for e in vector["events"]
    ]


def test_the_vectors_cover_the_three_suites() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names))
    assert {n.split("-")[0] for n in names} == {"wpt", "ep", "hs"}
    assert all(v["source"] for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_every_sse_vector_whole_bytewise_and_at_random_splits(vector: dict[str, Any]) -> None:
    expected = expected_events(vector)
    frames = [(e.event, e.data) for e in expected]
    for number, feeds in enumerate(feeds_of(vector, zlib.crc32(vector["name"].encode()))):
        decoder = SSEDecoder()
        events: list[ServerSentEvent] = []
        for data in feeds:
            events += decoder.feed(data)
        events += decoder.end()
        assert events == expected, number
        if "last_event_id" in vector:
            assert decoder.last_event_id == vector["last_event_id"], number
        decoder = SSEDecoder()
        got = []
        for data in feeds:
            got += decoder.frames(data)
        got += [(e.event, e.data) for e in decoder.end()]
        as_text = [(n, v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for n, v in got]
        assert as_text == frames, number
