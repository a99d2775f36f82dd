"""The aligner: where a model's quote is in the text, by exact, normalised or fuzzy match.

Offsets are always the original text's (`text[start:end]` are the source words), whatever
normalisation changed; the i-th repeat of the same words maps to the i-th occurrence not
already owned; a window (`lo`, `hi`) restricts the search without changing the offsets.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from multitask import _align
from multitask._align import FUZZY_THRESHOLD, Aligner, Folded, Span, fold


def found(text: str, quote: str, **window: int) -> tuple[str, str] | None:
    """(the source words, the match kind) of `quote` in `text`, or None."""
    span = Aligner(text).align(quote, **window)
    return None if span is None else (text[span.start : span.end], span.match)


# -- exact -----------------------------------------------------------------------------------


def test_exact_gives_the_offsets_of_the_words() -> None:
    text = "Jason is 10 and John is 30"
    assert Aligner(text).align("John is 30") == Span(16, 26, "exact")


def test_whitespace_around_a_quote_is_not_part_of_it() -> None:
    assert found("Jason is 10", "  is 10\n") == ("is 10", "exact")


@pytest.mark.parametrize("quote", ["", " ", "\n\t ", "\u3000", "\u00ad", "\u200b\u200b"])
def test_empty_and_blank_quotes_are_not_found(quote: str) -> None:
    text = "a \u00ad\u200b\u3000 b  "
    assert Aligner(text).align(quote) is None


def test_a_quote_longer_than_the_text_is_not_found() -> None:
    assert found("short", "a much longer quote than the text") is None


# -- normalized ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quote", "words"),
    [
        ("Hello JASON there", "jason", "JASON"),  # case
        ("Jason   is\n\t10.", "Jason is 10", "Jason   is\n\t10"),  # whitespace runs
        ("a\u00a0b\u3000c", "a b c", "a\u00a0b\u3000c"),  # other spaces
        ("He said “yes” and ‘no’.", "said \"yes\" and 'no'", "said “yes” and ‘no’"),
        ("1990–2000 — a decade", "1990-2000 - a decade", "1990–2000 — a decade"),  # dashes
        ("the ﬁrst ﬂoor", "first floor", "ﬁrst ﬂoor"),  # NFKC ligatures
        ("ＡＢＣ１２３ ok", "abc123", "ＡＢＣ１２３"),  # fullwidth
        ("x Straße y", "STRASSE", "Straße"),  # casefold lengthens ß
        ("x STRASSE y", "straße", "STRASSE"),  # and the other way
        ("a cafe\u0301 b", "café", "cafe\u0301"),  # composed against decomposed
        ("a café b", "cafe\u0301", "café"),
        ("co\u00adoper\u00adate now", "cooperate", "co\u00adoper\u00adate"),  # soft hyphens
        ("ｶﾞｷﾞ ok", "ガギ", "ｶﾞｷﾞ"),  # half-width kana with their sound marks
    ],
)
def test_normalized_matches_map_back_to_the_source_words(text: str, quote: str, words: str) -> None:
    assert found(text, quote) == (words, "normalized")


def test_offsets_after_length_changes_earlier_in_the_text() -> None:
    # Every kind of length change before the match: the offsets still point at the words.
    text = "ß ﬁ  \n\t e\u0301 \u00ad — ﬀ Straße: The QUICK brown fox"
    span = Aligner(text).align("the quick BROWN")
    assert span is not None
    assert span.match == "normalized"
    assert text[span.start : span.end] == "The QUICK brown"


def test_exact_is_preferred_to_normalized() -> None:
    text = "JASON met Jason"
    assert Aligner(text).align("Jason") == Span(10, 15, "exact")


# -- fuzzy -----------------------------------------------------------------------------------


def test_fuzzy_finds_a_quote_that_dropped_a_word() -> None:
    text = "Intro. The committee approved the revised annual budget on Monday. Outro."
    got = found(text, "The committee approved the annual budget on Monday")
    assert got == ("The committee approved the revised annual budget on Monday", "fuzzy")


def test_fuzzy_finds_a_quote_with_a_changed_letter() -> None:
    text = "Patients received 40 mg of the study drug twice daily for a week."
    got = found(text, "received 40 mg of the studi drug twice daily")
    assert got == ("received 40 mg of the study drug twice daily", "fuzzy")


def test_fuzzy_finds_a_changed_word_among_normalised_differences() -> None:
    text = "He said: “The   Board will MEET again in March.”"
    got = found(text, '"The board will meet again in april."')
    assert got is not None
    assert got[1] == "fuzzy"
    assert got[0].startswith("“The") or got[0].startswith("The")


def test_unrelated_words_are_not_found() -> None:
    text = "The committee approved the revised annual budget on Monday."
    assert found(text, "the weather was lovely in the mountains") is None
    assert found(text, "committee weather lovely mountain budget") is None


def test_the_threshold_is_a_bound() -> None:
    text = "abcdefghij klmnopqrst uvwxyz"
    quote = "abcdefghij klmnXXXXst"  # 17 of 21 characters: a ratio below 0.85
    assert Aligner(text).align(quote) is None
    assert Aligner(text, fuzzy_threshold=0.7).align(quote) is not None
    assert FUZZY_THRESHOLD == 0.85


def test_short_quotes_are_not_matched_fuzzily() -> None:
    assert found("the cat sat", "the cot") is None


def test_the_best_fuzzy_place_wins_over_an_earlier_weaker_one() -> None:
    text = "the annual budget was approved early. the annual budget was approved on Monday."
    got = Aligner(text).align("the annual budget was approvd on Monday")
    assert got is not None
    assert got.match == "fuzzy"
    assert text[got.start : got.end] == "the annual budget was approved on Monday"


# -- any script ------------------------------------------------------------------------------


def test_cjk_is_matched_by_characters() -> None:
    text = "私は東京都に住んでいます。毎日電車で会社に行きます。"
    assert found(text, "電車で会社に") == ("電車で会社に", "exact")
    # One character changed in a long enough quote: fuzzy; two of twelve is too many.
    assert found(text, "毎日電車で会社へ行きます") == ("毎日電車で会社に行きます", "fuzzy")
    assert found(text, "毎日バスで会社に行きます") is None


def test_mixed_scripts() -> None:
    text = "Встреча в Москве, then 東京 (Tōkyō), and ΑΘΗΝΑ at 10:00."
    assert found(text, "в москве") == ("в Москве", "normalized")
    assert found(text, "東京 (Tōkyō)") == ("東京 (Tōkyō)", "exact")
    assert found(text, "αθηνα") == ("ΑΘΗΝΑ", "normalized")


def test_emoji_and_astral_characters() -> None:
    text = "ok 👍🏽 and 𝐁𝐨𝐥𝐝 text"
    assert found(text, "👍🏽") == ("👍🏽", "exact")
    assert found(text, "bold text") == ("𝐁𝐨𝐥𝐝 text", "normalized")


# -- repeats ---------------------------------------------------------------------------------


def test_the_ith_repeat_maps_to_the_ith_occurrence() -> None:
    text = "Jason, then Jason, and Jason again."
    aligner = Aligner(text)
    spans = [aligner.align("Jason") for _ in range(4)]
    assert spans[:3] == [Span(0, 5, "exact"), Span(12, 17, "exact"), Span(23, 28, "exact")]
    assert spans[3] is None  # more repeats than occurrences


def test_repeats_move_on_to_normalized_occurrences() -> None:
    text = "jason met Jason and JASON"
    aligner = Aligner(text)
    assert [aligner.align("Jason") for _ in range(4)] == [
        Span(10, 15, "exact"),
        Span(0, 5, "normalized"),
        Span(20, 25, "normalized"),
        None,
    ]


def test_different_quotes_may_overlap() -> None:
    aligner = Aligner("New York City")
    assert aligner.align("New York") == Span(0, 8, "exact")
    assert aligner.align("York City") == Span(4, 13, "exact")
    assert aligner.align("New York City") == Span(0, 13, "exact")


def test_fuzzy_repeats_take_the_next_place() -> None:
    text = "the committee approved the budget. Later, the committee approved the budget."
    aligner = Aligner(text)
    first = aligner.align("the comittee approved the budget")
    second = aligner.align("the comittee approved the budget")
    assert first is not None
    assert second is not None
    assert first.match == second.match == "fuzzy"
    assert first.start < second.start
    assert aligner.align("the comittee approved the budget") is None


def test_find_does_not_claim() -> None:
    aligner = Aligner("a b a")
    assert aligner.find("a") == aligner.find("a") == Span(0, 1, "exact")
    assert aligner.owned == []


def test_claim_release_checkpoint_restore() -> None:
    aligner = Aligner("x y x y x")
    mark = aligner.checkpoint()
    assert aligner.align("x") == Span(0, 1, "exact")
    assert aligner.align("x") == Span(4, 5, "exact")
    assert aligner.owned == [(0, 1), (4, 5)]
    aligner.release(0, 1)
    assert aligner.align("x") == Span(0, 1, "exact")  # free again: found again
    aligner.restore(mark)
    assert aligner.owned == []
    assert [aligner.align("x") for _ in range(3)] == [
        Span(0, 1, "exact"),
        Span(4, 5, "exact"),
        Span(8, 9, "exact"),
    ]
    with pytest.raises(ValueError, match="already owned"):
        aligner.claim(0, 1)
    with pytest.raises(ValueError, match="not owned"):
        aligner.release(2, 3)


def test_restore_moves_normalized_cursors_back() -> None:
    aligner = Aligner("JASON and JASON")
    mark = aligner.checkpoint()
    assert aligner.align("jason") == Span(0, 5, "normalized")
    assert aligner.align("jason") == Span(10, 15, "normalized")
    aligner.restore(mark)
    assert aligner.align("jason") == Span(0, 5, "normalized")


def test_restore_undoes_a_release_too() -> None:
    aligner = Aligner("a a")
    aligner.align("a")
    mark = aligner.checkpoint()
    aligner.release(0, 1)
    aligner.restore(mark)
    assert aligner.owned == [(0, 1)]
    assert aligner.align("a") == Span(2, 3, "exact")


# -- windows ---------------------------------------------------------------------------------


def test_a_window_restricts_the_search_and_keeps_absolute_offsets() -> None:
    text = "alpha beta gamma beta delta"
    aligner = Aligner(text)
    assert aligner.find("beta", lo=7) == Span(17, 21, "exact")
    assert aligner.find("beta", hi=10) == Span(6, 10, "exact")
    assert aligner.find("beta", lo=7, hi=20) is None  # the second one ends past hi
    assert aligner.find("GAMMA", lo=11, hi=16) == Span(11, 16, "normalized")
    assert aligner.find("gamma", lo=12) is None


def test_repeats_in_windows() -> None:
    text = "x1 A A | x2 A A"
    aligner = Aligner(text)
    assert aligner.align("A", lo=8) == Span(12, 13, "exact")
    assert aligner.align("A") == Span(3, 4, "exact")
    assert aligner.align("A") == Span(5, 6, "exact")
    assert aligner.align("A", lo=8) == Span(14, 15, "exact")
    assert aligner.align("A") is None


def test_a_window_through_a_length_changing_atom() -> None:
    text = "aß  b"
    aligner = Aligner(text)
    assert aligner.find("ss b") == Span(1, 5, "normalized")
    assert aligner.find("ss b", lo=2) is None  # the window starts inside nothing of ß...
    assert aligner.find("b", lo=2) == Span(4, 5, "exact")


def test_out_of_range_windows_are_clamped() -> None:
    aligner = Aligner("abc")
    assert aligner.find("abc", lo=-5, hi=99) == Span(0, 3, "exact")
    assert aligner.find("abc", lo=5) is None


# -- the folded text and its map -------------------------------------------------------------


def test_fold() -> None:
    assert fold("  The  “Quick”—ﬁx\n") == 'the "quick"-fix'
    assert fold("STRASSE") == fold("Straße") == "strasse"


def test_folding_is_built_once_and_only_when_needed() -> None:
    aligner = Aligner("Some TEXT")
    assert aligner.align("Some") is not None
    assert aligner._folded is None  # exact matches never fold the text
    assert aligner.align("text") is not None
    folded = aligner._folded
    assert folded is not None
    aligner.align("some")
    assert aligner._folded is folded


@given(st.text(max_size=60))
@example("ß\u00ad  e\u0301ﬁ")
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_the_map_is_monotone_and_in_range(text: str) -> None:
    folded = Folded(text)
    n = len(folded.text)
    starts = [folded.start(j) for j in range(n)]
    ends = [folded.end(k) for k in range(1, n + 1)]
    assert starts == sorted(starts)
    assert ends == sorted(ends)
    assert all(0 <= s < max(1, len(text)) for s in starts)
    assert all(0 < e <= len(text) for e in ends)
    assert all(folded.start(j) < folded.end(j + 1) for j in range(n))
    offsets = [folded.folded_offset(p, after=False) for p in range(len(text) + 1)]
    assert offsets == sorted(offsets)
    assert all(0 <= o <= n for o in offsets)


# -- properties ------------------------------------------------------------------------------


@given(st.data(), st.text(min_size=1, max_size=200))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_substring_of_any_text_is_found_exact(data: st.DataObject, text: str) -> None:
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i + 1, len(text)))
    quote = text[i:j]
    span = Aligner(text).align(quote)
    if not fold(quote):  # blank: whitespace and invisible characters only
        assert span is None
        return
    assert span is not None
    assert span.match == "exact"
    assert text[span.start : span.end] == quote.strip()

    # The first occurrence that is not part of a longer word, else the first occurrence.
    def _is_word(char: str) -> bool:
        return char.isalnum() or char == "_"

    words = quote.strip()
    places = [k for k in range(len(text)) if text.startswith(words, k)]

    def whole(k: int) -> bool:
        before = k > 0 and _is_word(text[k - 1]) and _is_word(words[0])
        after = (
            k + len(words) < len(text) and _is_word(text[k + len(words)]) and _is_word(words[-1])
        )
        return not (before or after)

    assert span.start == next((k for k in places if whole(k)), places[0])


_WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéÉßñÑΩωЖж東京0123456789.,;'-"
_SPACES = [" ", "  ", "\n", "\t", " \n ", "\u00a0", "\u3000"]


@st.composite
def _worded(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.text(_WORD_CHARS, min_size=1, max_size=8), min_size=1, max_size=30))
    gaps = draw(st.lists(st.sampled_from(_SPACES), min_size=len(words), max_size=len(words)))
    return "".join(w + g for w, g in zip(words, gaps, strict=True))


@given(st.data(), _worded())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_substring_with_case_and_spacing_changed_is_found(data: st.DataObject, text: str) -> None:
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i + 1, len(text)))
    quote = text[i:j]
    if not quote.strip():
        return
    # Change case at random and every whitespace run into another one.
    flips = data.draw(st.lists(st.booleans(), min_size=len(quote), max_size=len(quote)))
    changed = "".join(c.swapcase() if f else c for c, f in zip(quote, flips, strict=True))
    changed = " ".join(changed.split())
    span = Aligner(text).align(changed)
    assert span is not None
    assert span.match in ("exact", "normalized")
    assert fold(text[span.start : span.end]) == fold(changed)
    # Spans never start or end in the middle of a character's folded form or on a space.
    assert not text[span.start : span.end].isspace()
    assert text[span.start : span.end] == text[span.start : span.end].strip()


def test_nfkc_equivalence_is_what_normalized_means() -> None:
    for text in ["ﬃ", "Ⅻ", "㍿", "½"]:
        quote = unicodedata.normalize("NFKC", text)
        assert found(f"x {text} y", quote) == (text, "normalized"), text


# -- long windows: the index ------------------------------------------------------------------


def _long_text(n: int) -> str:
    import random

    rnd = random.Random(5)
    names = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    words = names.split()
    out: list[str] = []
    size = 0
    while size < n:
        w = rnd.choice(words) + (str(rnd.randrange(1000)) if rnd.random() < 0.3 else "")
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def _align_all(text: str, quotes: list[tuple[str, int, int | None]]) -> list[Span | None]:
    aligner = Aligner(text)
    return [aligner.align(q, lo, hi) for q, lo, hi in quotes]


def _workload(text: str) -> list[tuple[str, int, int | None]]:
    """Exact and normalized quotes, repeats, windows: what both ways must agree on."""
    import random

    rnd = random.Random(9)
    out: list[tuple[str, int, int | None]] = []
    for _ in range(300):
        i = rnd.randrange(len(text) - 60)
        quote = text[i : i + rnd.randint(5, 60)]
        roll = rnd.random()
        if roll < 0.2:
            quote = quote.upper()
        elif roll < 0.35:
            quote = "alpha beta"  # a repeat, many times over
        lo = rnd.choice([0, 0, 0, i - 100 if i > 100 else 0])
        hi = rnd.choice([None, None, i + 200])
        out.append((quote, lo, hi))
    return out


def test_the_index_finds_what_a_scan_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _long_text(120_000)
    work = _workload(text)
    monkeypatch.setattr(_align, "INDEX_MIN_CHARS", 10**12)
    scanned = _align_all(text, work)
    monkeypatch.setattr(_align, "INDEX_MIN_CHARS", 0)
    indexed = _align_all(text, work)
    assert indexed == scanned
    assert sum(s is not None and s.match == "exact" for s in indexed) > 100
    assert sum(s is not None and s.match == "normalized" for s in indexed) > 30
    for (quote, _, _), span in zip(work, indexed, strict=True):
        if span is not None and span.match == "exact":
            assert text[span.start : span.end] == quote.strip()


def test_a_long_text_is_indexed_once_and_searched_through_it() -> None:
    text = _long_text(200_000)
    assert len(text) > _align.INDEX_MIN_CHARS
    aligner = Aligner(text)
    quote = text[150_000:150_040].strip()
    assert aligner.find(quote) == Span(150_000, 150_000 + len(quote), "exact")
    index = aligner._raw_index
    assert index is not None
    assert aligner.find(quote.upper()) == Span(150_000, 150_000 + len(quote), "normalized")
    assert aligner._index is not None
    broken = quote[:18] + "%" + quote[19:]
    assert aligner.find(broken) == Span(150_000, 150_000 + len(quote), "fuzzy")
    dropped = quote[:10] + quote[16:]  # a word of six characters left out
    assert aligner.find(dropped) == Span(150_000, 150_000 + len(quote), "fuzzy")
    assert aligner._raw_index is index
    assert aligner.find("zzzz " + quote[5:30] + " qqqq qqqq qqqq") is None


@given(st.data(), st.text(min_size=14, max_size=120))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_the_index_agrees_with_a_scan_on_any_text(data: st.DataObject, text: str) -> None:
    i = data.draw(st.integers(0, len(text) - 13))
    j = data.draw(st.integers(i + 13, len(text)))
    quote = text[i:j]
    saved = _align.INDEX_MIN_CHARS
    try:
        _align.INDEX_MIN_CHARS = 10**12  # type: ignore[misc]
        scanned = Aligner(text).find(quote)
        _align.INDEX_MIN_CHARS = 0  # type: ignore[misc]
        indexed = Aligner(text).find(quote)
    finally:
        _align.INDEX_MIN_CHARS = saved  # type: ignore[misc]
    if scanned is not None and scanned.match == "exact":
        assert indexed == scanned
