"""`multitask._document`: chunk bounds, windows, who delivers each item, and continuation."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multitask import ConfigurationError, IncompleteOutputError
from multitask._document import MIN_WINDOW, DocumentPlan, Place, Window, chunk_bounds


@dataclass(frozen=True)
class At:
    start: int
    end: int


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# -- chunk bounds -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=600), size=st.integers(1, 120))
def test_chunks_cover_the_text_in_order_within_the_size(text: str, size: int) -> None:
    bounds = chunk_bounds(text, size)
    assert bounds[0][0] == 0
    assert bounds[-1][1] == len(text)
    for (_, b), (c, _) in itertools.pairwise(bounds):
        assert b == c
    for a, b in bounds:
        assert 0 < b - a <= size or len(text) == 0


def test_a_chunk_never_ends_inside_a_word() -> None:
    text = words(500)
    for size in (17, 50, 101, 333):
        for _, b in chunk_bounds(text, size):
            assert b == len(text) or text[b - 1] == " "


def test_a_chunk_prefers_a_sentence_end() -> None:
    text = "Alpha beta gamma delta epsilon. Zeta eta theta iota kappa lambda mu nu."
    (_, b), *_ = chunk_bounds(text, 40)
    assert text[:b] == "Alpha beta gamma delta epsilon. "


def test_a_text_without_spaces_is_cut_at_characters_but_not_before_a_combining_mark() -> None:
    text = "日本語の文章です" * 20
    assert all(b - a <= 16 for a, b in chunk_bounds(text, 16))
    accented = "e\u0301" * 50  # e + combining acute, 50 times
    for _, b in chunk_bounds(accented, 7):
        assert b == len(accented) or accented[b] == "e"


def test_cjk_sentences_end_at_their_full_stop() -> None:
    text = "今日は晴れです。明日は雨でしょう。" * 10
    for _, b in chunk_bounds(text, 20)[:-1]:
        assert text[b - 1] == "。"


# -- windows and places ---------------------------------------------------------------------------


def test_no_chunking_is_one_chunk_of_the_whole_text() -> None:
    plan = DocumentPlan("abc def", chunk_chars=None)
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 7)]
    assert plan.chunks[0].window() == Window(0, 0, 7)


def test_a_window_reads_past_the_chunk_by_the_overlap_with_context_before() -> None:
    text = words(200)
    plan = DocumentPlan(text, chunk_chars=100, overlap_chars=20)
    first, second = plan.chunks[:2]
    assert first.window() == Window(0, 0, first.end + 20)
    assert second.window() == Window(second.start - 20, second.start, second.end + 20)


def test_each_item_is_delivered_once_by_the_chunk_owning_its_start() -> None:
    text = words(300)
    plan = DocumentPlan(text, chunk_chars=120, overlap_chars=30)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    delivered: list[At] = []
    for chunk in plan.chunks:
        window = chunk.window()
        # A model that reads the whole window, context included (it ignores instructions).
        for span in mentions:
            if window.context <= span.start < window.end and chunk.place(span) is Place.DELIVER:
                delivered.append(span)
        assert chunk.answered(cut=False) is None
        assert chunk.done
    assert delivered == mentions
    assert plan.chunk_of(mentions[-1].start) is plan.chunks[-1]
    assert plan.chunk_of(0) is plan.chunks[0]


def test_a_span_seen_again_is_a_repeat() -> None:
    chunk = DocumentPlan(words(10), chunk_chars=None).chunks[0]
    chunk.window()
    assert chunk.place(At(0, 2)) is Place.DELIVER
    assert chunk.place(At(0, 2)) is Place.REPEAT
    assert chunk.place(At(3, 5)) is Place.DELIVER
    assert chunk.delivered == 2


# -- continuation ----------------------------------------------------------------------------------


def read(chunk_window: Window, mentions: list[At], budget: int, *, everything: bool) -> list[At]:
    """A model with an output limit of `budget` items: it reads its window in order (from the
    context on, when `everything`) and stops at the limit."""
    lo = chunk_window.context if everything else chunk_window.start
    seen = [m for m in mentions if lo <= m.start and m.end <= chunk_window.end]
    return seen[:budget]


@pytest.mark.parametrize("everything", [False, True], ids=["obeys", "rereads-context"])
def test_continuation_covers_the_chunk_after_cuts(everything: bool) -> None:
    text = words(300)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    chunk = DocumentPlan(text, chunk_chars=None, overlap_chars=40, max_continuations=100).chunks[0]
    delivered: list[At] = []
    window: Window | None = chunk.window()
    while window is not None:
        answer = read(window, mentions, 25, everything=everything)
        delivered += [s for s in answer if chunk.place(s) is Place.DELIVER]
        window = chunk.answered(cut=len(answer) == 25)
    assert delivered == mentions


def test_no_continuation_raises_at_the_first_cut() -> None:
    chunk = DocumentPlan(words(50), chunk_chars=None).chunks[0]
    chunk.window()
    chunk.place(At(0, 2))
    with pytest.raises(IncompleteOutputError, match="max_continuations=0") as caught:
        chunk.answered(cut=True)
    assert caught.value.items_delivered == 1
    assert chunk.done


def test_a_model_that_makes_no_progress_ends_in_bounded_requests() -> None:
    text = words(300)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    chunk = DocumentPlan(text, chunk_chars=None, overlap_chars=0, max_continuations=50).chunks[0]
    chunk.window()
    for span in mentions[:25]:
        chunk.place(span)
    chunk.answered(cut=True)
    # It starts from the very beginning every time, whatever it is sent.
    for span in mentions[:25]:
        assert chunk.place(span) is Place.REPEAT
    with pytest.raises(IncompleteOutputError, match="no progress"):
        chunk.answered(cut=True)
    assert chunk.requests == 2


def test_an_answer_out_of_order_is_re_read_in_halves() -> None:
    text = words(400)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    chunk = DocumentPlan(text, chunk_chars=None, max_continuations=100).chunks[0]
    delivered: set[At] = set()
    window: Window | None = chunk.window()
    budget = 120
    while window is not None:
        # A model that lists the odd mentions first, then the even ones (grouping by kind).
        seen = [m for m in mentions if window.start <= m.start and m.end <= window.end]
        answer = (seen[1::2] + seen[::2])[:budget]
        delivered |= {s for s in answer if chunk.place(s) is Place.DELIVER}
        window = chunk.answered(cut=len(answer) == budget and len(seen) > budget)
    assert delivered == set(mentions)
    assert chunk.delivered == len(mentions)


def test_out_of_order_answers_cut_in_tiny_windows_give_up() -> None:
    text = words(2000)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    chunk = DocumentPlan(text, chunk_chars=None, max_continuations=1000).chunks[0]
    given: set[At] = set()
    window = chunk.window()

    def read_backwards_and_cut() -> Window | None:
        # Two new mentions of the window each time, backwards, and always cut.
        seen = [m for m in mentions if window.start <= m.start and m.end <= window.end]
        answer = [m for m in seen if m not in given][:2][::-1]
        given.update(answer)
        for span in answer:
            chunk.place(span)
        return chunk.answered(cut=True)

    with pytest.raises(IncompleteOutputError, match="out of order"):  # noqa: PT012
        while True:
            window = read_backwards_and_cut()  # type: ignore[assignment]
    assert chunk.requests < 2 * len(text) // MIN_WINDOW


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chunk_chars": 0}, "chunk_chars must be at least 1"),
        ({"chunk_chars": 10, "overlap_chars": -1}, "overlap_chars must not be negative"),
        ({"chunk_chars": 10, "max_continuations": -2}, "max_continuations must not be negative"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DocumentPlan("text", **options)  # type: ignore[arg-type]


# -- resuming after an item a reader already has ---------------------------------------------------


def read_plan(plan: DocumentPlan, mentions: list[At], *, everything: bool) -> list[At]:
    """Every chunk still to read, by a model that reads its whole window (its context too,
    when `everything`); what was delivered, in order."""
    delivered: list[At] = []
    for chunk in plan.todo:
        window: Window | None = chunk.window()
        while window is not None:
            lo = window.context if everything else window.start
            answer = [m for m in mentions if lo <= m.start and m.end <= window.end]
            delivered += [s for s in answer if chunk.place(s) is Place.DELIVER]
            window = chunk.answered(cut=False)
    return delivered


@pytest.mark.parametrize("everything", [False, True], ids=["obeys", "rereads-context"])
def test_resuming_after_any_item_delivers_exactly_the_rest(everything: bool) -> None:
    text = words(300)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    for last in range(0, len(mentions), 7):
        at = mentions[last]
        plan = DocumentPlan(
            text, chunk_chars=120, overlap_chars=30, resume_after=(at.start, at.end)
        )
        holder = plan.chunk_of(at.start)
        assert plan.todo[0] is holder or holder.done
        assert all(c.done for c in plan.chunks if c.end <= at.start)
        assert read_plan(plan, mentions, everything=everything) == mentions[last + 1 :], last


def test_a_resumed_chunk_reads_from_after_the_item_with_no_context() -> None:
    text = words(300)
    plan = DocumentPlan(text, chunk_chars=120, overlap_chars=30)
    third = plan.chunks[2]
    inside = text.index(" ", third.start + 20)  # a word's end inside the third chunk
    word = (text.rindex(" ", 0, inside) + 1, inside)
    plan = DocumentPlan(text, chunk_chars=120, overlap_chars=30, resume_after=word)
    assert [c.index for c in plan.todo] == list(range(2, len(plan.chunks)))
    chunk = plan.todo[0]
    assert chunk.window() == Window(word[1], word[1], chunk.end + 30)  # no context before it
    assert chunk.place(At(*word)) is Place.REPEAT  # the item it resumed after
    assert chunk.place(At(chunk.start, chunk.start + 2)) is Place.REPEAT  # before it
    assert chunk.place(At(word[1] + 1, word[1] + 3)) is Place.DELIVER
    # The next chunk is read as usual: its first request shows the context before it, but
    # none from before the item's end.
    after = plan.todo[1]
    assert after.window().context == after.start - 30
    near_end = (plan.chunks[1].end - 5, plan.chunks[1].end - 2)
    plan = DocumentPlan(text, chunk_chars=120, overlap_chars=30, resume_after=near_end)
    assert plan.todo[1].window() == Window(
        near_end[1], plan.chunks[2].start, plan.chunks[2].end + 30
    )


def test_resuming_after_a_chunks_last_item_may_leave_nothing_of_it() -> None:
    text = "aaa bbb. ccc ddd."
    plan = DocumentPlan(text, chunk_chars=9, resume_after=(4, 9))  # runs to the chunk's end
    assert plan.chunks[0].done
    assert [c.index for c in plan.todo] == [1]


def test_a_resumed_chunk_cut_and_out_of_order_re_reads_only_what_is_after_the_item() -> None:
    text = words(400)
    mentions = [At(m.start(), m.end()) for m in re.finditer(r"w\d+", text)]
    at = mentions[99]
    plan = DocumentPlan(
        text, chunk_chars=None, max_continuations=100, resume_after=(at.start, at.end)
    )
    (chunk,) = plan.todo
    delivered: set[At] = set()
    halves = 0
    window: Window | None = chunk.window()
    while window is not None:
        assert window.context >= at.end  # nothing before the item is read again
        seen = [m for m in mentions if window.start <= m.start and m.end <= window.end]
        answer = (seen[1::2] + seen[::2])[:180]  # the odd ones first, and cut
        delivered |= {s for s in answer if chunk.place(s) is Place.DELIVER}
        window = chunk.answered(cut=len(seen) > 180)
        halves += window is not None and window.end < chunk.end
    assert delivered == set(mentions[100:])
    assert halves > 0


@pytest.mark.parametrize("span", [(-1, 2), (5, 3), (0, 999), (8, 8)])
def test_a_resume_span_outside_the_text_is_a_configuration_error(span: tuple[int, int]) -> None:
    with pytest.raises(ConfigurationError, match="is not a span of the text"):
        DocumentPlan("abc defg", chunk_chars=4, resume_after=span)
