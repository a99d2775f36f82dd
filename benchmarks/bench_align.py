"""Grounding quotes, measured: multitask's aligner beside LangExtract's, on the same data.

    python benchmarks/bench_align.py [--json results.json] [--quick] [--budget SECONDS]

The data: a synthetic English text (1 MB by default) of sentences with recurring names,
numbers, typographic quotes and dashes, double spaces and line breaks, and 10,000 quotes of
it in document order, as a model writes them: 4 to 9 words copied exactly (most), the same
with case, spacing, quotes and dashes changed (normalized), with a word dropped or a letter
changed (fuzzy), repeats of a recurring name (the i-th repeat belongs at the i-th
occurrence), and a few sentences that are not in the text at all. Each quote knows where it
came from, so a span is "right" when it is exactly that place.

Reported, per aligner: total and per-quote time, peak memory while aligning (tracemalloc, in
a second pass), how many quotes were found and how many at the right place. multitask's
`Aligner` is timed over the whole text; LangExtract's `Resolver.align` (1.7.1: exact tokens by
an order-preserving DP, then token-LCS fuzzy) is called as its own `annotate` calls it, once
over the whole text and once per ~1,000-character chunk (its default `max_char_buffer`), each
chunk with the quotes that came from it. LangExtract runs in a subprocess with a time budget
(`--budget`, default 120 s); a run past it is reported as not finished. It needs no network.

Then multitask's aligner alone over 1,000 / 10,000 / 100,000 / 1,000,000-character texts, one
quote per 100 characters: the cost per quote and per character, to show it stays linear, with
what of it is the one-off build of the indexes of a long text (an O(n log n) sort, timed
alone) and the cost per quote after it.
Takes a few minutes (most of it LangExtract's). The figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from multitask._align import Aligner

try:
    from run import _fmt, _table
except ImportError:  # run from elsewhere: the benchmarks folder on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import _fmt, _table

# -- the data ------------------------------------------------------------------------------------

_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more what up out who them some could time into only then do about other "
    "than its committee budget report revenue quarter market growth policy council project "
    "company agreement approval contract review meeting board director office statement "
    "results analysis estimate forecast decline increase shares investors customers "
    "products service network system security research study patients treatment trial "
    "evidence court ruling river bridge harbour station winter summer morning evening "
    "northern southern eastern western regional national annual monthly weekly early late "
    "final initial formal public"
)
_WORDS = _VOCABULARY.split()
_NAMES = [
    "Ada Okafor",
    "Jane Doe",
    "Zoë Müller",
    "Acme Corp.",
    "Globex Holdings",
    "Łódź Council",
    "São Paulo",
    "Dr. Émile Durand",
    "Initech",
    "Ngozi Eze",
    "東京電力",
    "Nordbank AG",
]


@dataclass(frozen=True)
class Quote:
    """A quote as the model wrote it, where it came from, and what kind it is."""

    text: str
    kind: str  # exact, normalized, fuzzy, repeat, absent
    start: int | None
    end: int | None


def make_text(chars: int, seed: int) -> str:
    """`chars` characters (about) of sentences, with names, numbers, “quotes” and — dashes."""
    rnd = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < chars:
        n = rnd.randint(8, 22)
        words = [rnd.choice(_WORDS) for _ in range(n)]
        if rnd.random() < 0.5:
            words[rnd.randrange(n)] = rnd.choice(_NAMES)
        if rnd.random() < 0.3:
            words[rnd.randrange(n)] = str(rnd.randint(2, 99_999))
        if rnd.random() < 0.1:
            i = rnd.randrange(n - 2)
            words[i] = "“" + words[i]
            words[i + 2] = words[i + 2] + "”"
        if rnd.random() < 0.1:
            words.insert(rnd.randrange(1, n), "—")
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rnd.choice(".....;!?")
        gap = rnd.choices([" ", "  ", "\n", "\n\n"], weights=[80, 8, 6, 6])[0]
        parts.append(sentence + gap)
        size += len(sentence) + len(gap)
    return "".join(parts)[:chars]


def _word_starts(text: str) -> list[int]:
    return [i for i in range(len(text)) if text[i] != " " and (i == 0 or text[i - 1] in " \n")]


def make_quotes(text: str, n: int, seed: int) -> list[Quote]:
    """`n` quotes of `text`, in document order, of every kind (see the module's docstring)."""
    rnd = random.Random(seed)
    starts = _word_starts(text)
    picks = sorted(rnd.sample(range(len(starts) - 12), min(n, len(starts) - 12)))
    occurrences: dict[str, list[int]] = {}
    for name in _NAMES:
        at = text.find(name)
        while at >= 0:
            occurrences.setdefault(name, []).append(at)
            at = text.find(name, at + 1)
    repeats = {name: 0 for name in occurrences}
    out: list[Quote] = []
    for p in picks:
        roll = rnd.random()
        s = starts[p]
        if roll < 0.05 and occurrences:  # a recurring name: the next of its occurrences
            name = rnd.choice(sorted(occurrences))
            k = repeats[name]
            if k < len(occurrences[name]):
                repeats[name] += 1
                at = occurrences[name][k]
                out.append(Quote(name, "repeat", at, at + len(name)))
                continue
        if roll > 0.98:
            words = " ".join(rnd.choice(_WORDS) for _ in range(7))
            out.append(Quote(f"Zyx {words} qwv", "absent", None, None))
            continue
        count = rnd.randint(4, 9)
        e = starts[p + count] - 1
        while e > s and text[e - 1] in " \n":
            e -= 1
        source = text[s:e]
        if roll < 0.80:
            out.append(Quote(source, "exact", s, e))
        elif roll < 0.90:
            changed = " ".join(source.split())
            changed = changed.upper() if rnd.random() < 0.5 else changed.lower()
            changed = changed.replace("“", '"').replace("”", '"').replace("—", "-")
            out.append(Quote(changed, "normalized", s, e))
        else:
            words = source.split(" ")
            if len(words) >= 6 and rnd.random() < 0.5:
                del words[rnd.randrange(1, len(words) - 1)]
                changed = " ".join(words)
            else:
                i = rnd.randrange(len(source))
                while not source[i].isalpha():
                    i = (i + 1) % len(source)
                changed = source[:i] + ("x" if source[i] != "x" else "y") + source[i + 1 :]
            out.append(Quote(changed, "fuzzy", s, e))
    return out


# -- scoring -------------------------------------------------------------------------------------


def score(quotes: list[Quote], spans: list[tuple[int, int] | None]) -> dict[str, Any]:
    """Found and right-place counts, overall and per kind."""
    kinds: dict[str, dict[str, int]] = {}
    for q, span in zip(quotes, spans, strict=True):
        k = kinds.setdefault(q.kind, {"quotes": 0, "found": 0, "right": 0})
        k["quotes"] += 1
        if span is not None:
            k["found"] += 1
            if q.start is not None and span == (q.start, q.end):
                k["right"] += 1
        elif q.start is None:
            k["right"] += 1  # not in the text, and not found: right
    total = {f: sum(k[f] for k in kinds.values()) for f in ("quotes", "found", "right")}
    return {"total": total, "kinds": kinds}


# -- multitask -----------------------------------------------------------------------------------


def _index_time(text: str) -> float:
    """What building the aligner's indexes of a text takes (once per text, on its first
    quote: the text's and the folded text's, for a text longer than `INDEX_MIN_CHARS`)."""
    t0 = time.perf_counter()
    aligner = Aligner(text)
    if aligner._text_index(0, len(text)) is not None:
        aligner._folded_index(0, len(aligner.folded.text))
    return time.perf_counter() - t0


def run_multitask(text: str, quotes: list[Quote]) -> dict[str, Any]:
    """Time the aligner over all quotes, then measure its peak memory in a second pass."""
    t0 = time.perf_counter()
    aligner = Aligner(text)
    spans: list[tuple[int, int] | None] = []
    for q in quotes:
        span = aligner.align(q.text)
        spans.append(None if span is None else (span.start, span.end))
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    aligner = Aligner(text)
    for q in quotes:
        aligner.align(q.text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "peak_bytes": peak, **score(quotes, spans)}


# -- LangExtract ---------------------------------------------------------------------------------


def _langextract_child(path: str) -> None:
    """In a subprocess: align with LangExtract's resolver as `annotate` does; print JSON."""
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    from langextract import resolver as lx_resolver
    from langextract.core import data

    text: str = job["text"]
    quotes = [Quote(**q) for q in job["quotes"]]
    chunks: list[tuple[int, int]] = job["chunks"]

    def one_pass() -> list[tuple[int, int] | None]:
        res = lx_resolver.Resolver()
        found: list[tuple[int, int] | None] = [None] * len(quotes)
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(quotes):
            where = q.start if q.start is not None else (i * 7919) % max(1, len(text))
            c = next((c for c, (a, b) in enumerate(chunks) if a <= where < b), len(chunks) - 1)
            groups.setdefault(c, []).append(i)
        for c, members in groups.items():
            a, b = chunks[c]
            extractions = [
                data.Extraction(extraction_class="quote", extraction_text=quotes[i].text)
                for i in members
            ]
            aligned = list(res.align(extractions, text[a:b], 0, a))
            for i, ex in zip(members, aligned, strict=True):
                ci = ex.char_interval
                if ci is not None and ci.start_pos is not None and ci.end_pos is not None:
                    found[i] = (ci.start_pos, ci.end_pos)
        return found

    t0 = time.perf_counter()
    spans = one_pass()
    seconds = time.perf_counter() - t0
    peak = None
    if seconds < job["memory_below"]:
        tracemalloc.start()
        one_pass()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "spans": spans}))


def _chunks(text: str, size: int) -> list[tuple[int, int]]:
    """Chunks of about `size` characters, cut after a sentence end where one is near."""
    out: list[tuple[int, int]] = []
    a = 0
    while a < len(text):
        b = min(len(text), a + size)
        if b < len(text):
            cut = max(text.rfind(". ", a, b), text.rfind("\n", a, b))
            if cut > a + size // 2:
                b = cut + 1
        out.append((a, b))
        a = b
    return out


def run_langextract(
    text: str, quotes: list[Quote], chunk: int | None, budget: float
) -> dict[str, Any]:
    """LangExtract's resolver in a subprocess: the whole text as one chunk, or chunked."""
    try:
        import langextract  # noqa: F401
    except ImportError:
        return {"error": "langextract not installed (pip install -e '.[bench]')"}
    chunks = [(0, len(text))] if chunk is None else _chunks(text, chunk)
    job = {
        "text": text,
        "quotes": [asdict(q) for q in quotes],
        "chunks": chunks,
        "memory_below": budget / 3,
    }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--langextract-child", str(path)],
                capture_output=True,
                text=True,
                timeout=budget,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"did not finish in {budget:.0f} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"failed: {tail[0]}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    spans = [None if s is None else (s[0], s[1]) for s in result.pop("spans")]
    return {**result, **score(quotes, spans)}


# -- the report ----------------------------------------------------------------------------------


def _row(name: str, r: dict[str, Any], n: int) -> list[str]:
    if "error" in r:
        return [name, r["error"], "", "", "", ""]
    total = r["total"]
    peak = r.get("peak_bytes")
    return [
        name,
        _fmt(r["seconds"], 2),
        _fmt(r["seconds"] / n * 1e6),
        "n/a" if peak is None else _fmt(peak / 2**20),
        f"{total['found']:,}",
        f"{total['right']:,}",
    ]


def _kinds_table(results: dict[str, dict[str, Any]]) -> str:
    kinds = ["exact", "normalized", "fuzzy", "repeat", "absent"]
    header = ["aligner", *[f"{k} right/quotes" for k in kinds]]
    rows = []
    for name, r in results.items():
        if "error" in r:
            continue
        cells = []
        for k in kinds:
            got = r["kinds"].get(k, {"quotes": 0, "right": 0})
            cells.append(f"{got['right']:,}/{got['quotes']:,}")
        rows.append([name, *cells])
    return _table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--chars", type=int, default=1_000_000, help="text size (characters)")
    parser.add_argument("--quotes", type=int, default=10_000, help="quotes to align")
    parser.add_argument("--budget", type=float, default=120, help="LangExtract time budget (s)")
    parser.add_argument("--quick", action="store_true", help="100 KB and 1,000 quotes")
    parser.add_argument("--langextract-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.langextract_child:
        _langextract_child(args.langextract_child)
        return
    if args.quick:
        args.chars, args.quotes = 100_000, 1_000
    text = make_text(args.chars, seed=1)
    quotes = make_quotes(text, args.quotes, seed=2)
    n = len(quotes)
    kinds = {k: sum(q.kind == k for q in quotes) for k in ("exact", "normalized", "fuzzy")}
    kinds |= {k: sum(q.kind == k for q in quotes) for k in ("repeat", "absent")}
    print(
        f"{len(text):,} characters, {n:,} quotes: "
        + ", ".join(f"{v:,} {k}" for k, v in kinds.items())
    )

    results: dict[str, dict[str, Any]] = {}
    results["multitask Aligner"] = run_multitask(text, quotes)
    print("multitask: done", flush=True)
    for name, chunk in [
        ("LangExtract Resolver.align, per 1,000-char chunk", 1000),
        ("LangExtract Resolver.align, whole text", None),
    ]:
        results[name] = run_langextract(text, quotes, chunk, args.budget)
        print(f"{name}: done", flush=True)

    header = ["aligner", "total s", "µs / quote", "peak MiB", "found", "right place"]
    print()
    print(_table(header, [_row(name, r, n) for name, r in results.items()]))
    print()
    print(_kinds_table(results))

    scaling = []
    for size in (1_000, 10_000, 100_000, 1_000_000):
        t = make_text(size, seed=3)
        qs = make_quotes(t, max(1, size // 100), seed=4)
        r = run_multitask(t, qs)
        scaling.append({"chars": size, "quotes": len(qs), "index_seconds": _index_time(t), **r})
    print()
    header = ["text chars", "quotes", "total ms", "of it indexes ms", "µs / quote after"]
    header += ["ns / char", "peak MiB", "right"]
    print(
        _table(
            header,
            [
                [
                    f"{s['chars']:,}",
                    f"{s['quotes']:,}",
                    _fmt(s["seconds"] * 1e3, 2),
                    _fmt(s["index_seconds"] * 1e3, 2),
                    _fmt((s["seconds"] - s["index_seconds"]) / s["quotes"] * 1e6),
                    _fmt(s["seconds"] / s["chars"] * 1e9),
                    _fmt(s["peak_bytes"] / 2**20, 2),
                    f"{s['total']['right']:,}/{s['quotes']:,}",
                ]
                for s in scaling
            ],
        )
    )
    if args.json:
        out = {"chars": len(text), "quotes": n, "kinds": kinds, "results": results}
        out["scaling"] = scaling
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
