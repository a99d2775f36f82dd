"""Finding a model's quote in the text it was given: exact, then normalised, then fuzzy.

Sans-IO and synchronous: `Aligner(text).align(quote)` returns the `Span` of the source words
(offsets into `text`, whatever the match) and claims it, so that the same words quoted again
map to the next occurrence not already claimed. Nothing here knows pydantic or a stream.

    exact       the quote's places in the window, from a per-string cursor (repeats)
    normalized  the same over a folded copy of the text (casefold, NFKC, whitespace runs,
                typographic quotes and dashes, invisible characters), built once on first
                use, with a map back to the text's offsets
    fuzzy       parts of the folded quote found in the window vote for places; the few most
                voted for are scored with difflib on a window of about the quote's length;
                accepted at `FUZZY_THRESHOLD` or better

Places are found with `str.find` in a window of up to `INDEX_MIN_CHARS`, and through a
sampled index of the text (built once, on first need) in a longer one: the cost of a quote
is bounded by the window or by the quote, never a comparison with the whole text character
by character.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count, repeat
from typing import Final, Literal

__all__ = [
    "FUZZY_MAX_CHARS",
    "FUZZY_MIN_CHARS",
    "FUZZY_THRESHOLD",
    "INDEX_MIN_CHARS",
    "Aligner",
    "Folded",
    "MatchKind",
    "Span",
    "fold",
]

#: How a quote was found: as written, after normalisation, or approximately.
MatchKind = Literal["exact", "normalized", "fuzzy"]

#: The least similarity a fuzzy match needs: difflib's ratio, 2*M / (len(quote) + len(span))
#: over the folded strings (M: the characters difflib's blocks have in common). At 0.85 a
#: quote of 40 characters may leave out up to 14 characters of the source (a word or two) or
#: change a word of 5; errors scattered over the quote score lower (difflib's greedy blocks).
FUZZY_THRESHOLD: Final = 0.85
#: Quotes shorter than this (folded) are not looked for fuzzily: too few characters to tell
#: a near miss from a coincidence.
FUZZY_MIN_CHARS: Final = 8
#: Nor quotes longer than this: the scoring window grows with the quote.
FUZZY_MAX_CHARS: Final = 2000
#: Pieces of the quote looked for, and the hits one may have before it counts as too common
#: to point anywhere (those of a piece past it are not used unless every piece is common).
_FUZZY_PIECES: Final = 6
_FUZZY_PIECE_HITS: Final = 64
#: Places scored per fuzzy search (difflib on a window of about the quote's length each), the
#: ones most parts of the quote point at.
_FUZZY_PLACES: Final = 8


@dataclass(frozen=True, slots=True)
class Span:
    """Where a quote is: `text[start:end]` are the source words; `match` says how it matched."""

    start: int
    end: int
    match: MatchKind


# -- folding -------------------------------------------------------------------------------------

# What folding changes, beyond lowering ASCII letters: a whitespace run other than one space,
# and a run of non-ASCII characters (with the ASCII character before it, which a combining
# mark after it may compose with).
_IRREGULAR: Final = re.compile(r"\s{2,}|[^\S ]|[\x21-\x7e]?[^\x00-\x7f\s]+")
_CASEFOLD_RUN_CACHE: Final = 4096

#: Characters that show nothing: soft hyphen, zero-width space and joiners, word joiner, BOM.
_INVISIBLE: Final = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_DROP_INVISIBLE: Final = str.maketrans(dict.fromkeys(_INVISIBLE))
#: Typographic quotes and dashes, to their ASCII forms; invisible characters, out.
_PUNCTUATION: Final = str.maketrans(
    {
        **dict.fromkeys("‘’‚‛′‵‹›", "'"),
        **dict.fromkeys("“”„‟″‶«»", '"'),
        **dict.fromkeys("‐‑‒–—―−﹘﹣－⁃", "-"),
        **dict.fromkeys(_INVISIBLE),
    }
)


def _fold_piece(piece: str) -> str:
    """Fold a few characters: compatibility caseless form, ASCII quotes and dashes."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", piece).casefold())
    return folded.translate(_PUNCTUATION)


def _is_mark(char: str) -> bool:
    """A combining mark, or a character NFKC makes one (half-width kana sound marks)."""
    if unicodedata.category(char)[0] == "M":
        return True
    folded = unicodedata.normalize("NFKC", char)
    return bool(folded) and unicodedata.category(folded[0])[0] == "M"


def _clusters(run: str) -> list[str]:
    """A run cut into a base character and the marks after it: the units NFKC composes."""
    out: list[str] = []
    for char in run:
        if out and _is_mark(char):
            out[-1] += char
        else:
            out.append(char)
    return out


class Folded:
    """The text folded for comparison, and the map from its offsets back to the text's.

    The map is a list of the places where folding did not keep one character for one
    (a whitespace run, "ß" -> "ss", "ﬁ" -> "fi", "e" + combining acute -> "é", a soft hyphen
    dropped): each is an atom, of `olen` characters of the text and `nlen` folded ones. Between
    atoms the folded text is the text's character for character. A folded offset inside an
    atom maps to the whole atom (a match starting in "ß"'s second "s" starts at "ß").
    """

    __slots__ = ("_n0", "_nlen", "_o0", "_olen", "text")

    def __init__(self, text: str) -> None:
        pieces: list[str] = []
        n0: list[int] = []
        o0: list[int] = []
        nlen: list[int] = []
        olen: list[int] = []
        pos = 0  # in the text
        npos = 0  # in the folded text

        def atom(folded: str, start: int, length: int) -> None:
            nonlocal npos
            n0.append(npos)
            o0.append(start)
            nlen.append(len(folded))
            olen.append(length)
            pieces.append(folded)
            npos += len(folded)

        for m in _IRREGULAR.finditer(text):
            a, b = m.span()
            if a > pos:  # ASCII, and single spaces: lowered, one for one
                pieces.append(text[pos:a].lower())
                npos += a - pos
            run = m.group()
            if run[-1].isspace():
                if b - a == 1:
                    pieces.append(" ")
                    npos += 1
                else:
                    atom(" ", a, b - a)
            else:
                folded = _fold_run(run)
                if folded is not None:
                    pieces.append(folded)
                    npos += len(folded)
                else:  # some character changed length: atom by atom, where it did
                    at = a
                    for cluster in _clusters(run):
                        folded = _fold_piece(cluster)
                        if len(folded) == len(cluster) == 1:
                            pieces.append(folded)
                            npos += 1
                        else:
                            atom(folded, at, len(cluster))
                        at += len(cluster)
            pos = b
        if pos < len(text):
            pieces.append(text[pos:].lower())
        #: The folded text.
        self.text = "".join(pieces)
        self._n0, self._o0, self._nlen, self._olen = n0, o0, nlen, olen

    def start(self, j: int) -> int:
        """The text offset where the folded character `j` comes from."""
        i = bisect_right(self._n0, j) - 1
        if i < 0:
            return j
        n0, o0 = self._n0[i], self._o0[i]
        if j < n0 + self._nlen[i]:
            return o0
        return o0 + self._olen[i] + (j - n0 - self._nlen[i])

    def end(self, k: int) -> int:
        """The text offset just after the folded character `k - 1` (the end of a span)."""
        i = bisect_right(self._n0, k - 1) - 1
        if i < 0:
            return k
        n0, o0 = self._n0[i], self._o0[i]
        if k - 1 < n0 + self._nlen[i]:
            return o0 + self._olen[i]
        return o0 + self._olen[i] + (k - n0 - self._nlen[i])

    def folded_offset(self, p: int, *, after: bool) -> int:
        """The folded offset of text offset `p`; inside an atom, past it if `after`, else at
        its start (a window's start excludes an atom it cuts, and so does its end)."""
        i = bisect_right(self._o0, p) - 1
        if i < 0:
            return p
        n0, o0 = self._n0[i], self._o0[i]
        if p < o0 + self._olen[i]:
            return n0 + self._nlen[i] if after and p > o0 else n0
        return n0 + self._nlen[i] + (p - o0 - self._olen[i])


_run_cache: dict[str, str | None] = {}


def _fold_run(run: str) -> str | None:
    """A non-ASCII run folded, if every character of it folds to one; else None."""
    cached = _run_cache.get(run, "")
    if cached != "":
        return cached
    folded: str | None = None
    if unicodedata.is_normalized("NFKC", run):
        lowered = run.casefold()
        if len(lowered) == len(run):
            out = unicodedata.normalize("NFKC", lowered).translate(_PUNCTUATION)
            if len(out) == len(run):
                folded = out
    if len(run) <= 8:
        if len(_run_cache) >= _CASEFOLD_RUN_CACHE:
            _run_cache.clear()
        _run_cache[run] = folded
    return folded


def fold(s: str) -> str:
    """`s` as the normalised search compares it: casefolded, NFKC, typographic quotes and
    dashes made ASCII, invisible characters dropped, whitespace runs made one space, stripped.

    A quote is folded this way and looked for in the text folded the same way."""
    return Folded(s).text.strip(" ")


# -- the aligner ---------------------------------------------------------------------------------


class Aligner:
    """Finds quotes in one text and records the spans it handed out (owned spans).

    `align(quote, lo, hi)` looks in `text[lo:hi]` (offsets stay the whole text's): exact
    first, then normalised, then fuzzy; the span it returns is claimed. The same words quoted
    again map to the next occurrence whose span is not owned yet; once every occurrence is,
    a repeat is not found (None). `find` looks without claiming. `checkpoint()` and
    `restore()` undo the claims and releases made since a point (a retried request re-reads
    its answer from the start).
    """

    __slots__ = (
        "_exact_cursor",
        "_folded",
        "_folded_cursor",
        "_index",
        "_log",
        "_owned",
        "_raw_index",
        "_word_cursor",
        "fuzzy_threshold",
        "offset",
        "page_of",
        "read_from",
        "text",
    )

    def __init__(
        self,
        text: str,
        *,
        fuzzy_threshold: float = FUZZY_THRESHOLD,
        offset: int = 0,
        read_from: int = 0,
        page_of: Callable[[int], int | None] | None = None,
    ) -> None:
        if not 0.0 < fuzzy_threshold <= 1.0:
            raise ValueError(f"fuzzy_threshold must be in (0, 1], not {fuzzy_threshold}")
        self.text = text
        #: Where `text` begins in the document the quotes' offsets are into (a part of a long
        #: text read alone): the spans found here are this much further on there.
        self.offset = offset
        #: Where in `text` the part to extract from begins: quotes are looked for there first,
        #: and in the context before it only if they are not there.
        self.read_from = read_from
        #: The page of an offset into the document (a `Document`'s `page_of`), for the
        #: Quotes grounded here; None when the text has no pages.
        self.page_of = page_of
        self.fuzzy_threshold = fuzzy_threshold
        self._folded: Folded | None = None
        # Indexes of the text and of the folded text, for windows too long to scan per quote:
        # built on first need.
        self._raw_index: _Index | None = None
        self._index: _Index | None = None
        self._owned: set[tuple[int, int]] = set()
        # (span, claimed) in order, for `restore`.
        self._log: list[tuple[tuple[int, int], bool]] = []
        # needle -> {window start -> offset}: every occurrence of the needle from the window's
        # start up to that offset is owned, so the next search starts there (repeats).
        self._exact_cursor: dict[str, dict[int, int]] = {}
        # The same for the whole-word places of the needle (`_exact` looks for those first).
        self._word_cursor: dict[str, dict[int, int]] = {}
        self._folded_cursor: dict[str, dict[int, int]] = {}

    @property
    def folded(self) -> Folded:
        """The text folded for normalised and fuzzy search: built on first use, once."""
        if self._folded is None:
            self._folded = Folded(self.text)
        return self._folded

    # -- owned spans -----------------------------------------------------------------------------

    def owns(self, start: int, end: int) -> bool:
        """Whether the span `[start, end)` was handed out."""
        return (start, end) in self._owned

    @property
    def owned(self) -> list[tuple[int, int]]:
        """The owned spans, in text order."""
        return sorted(self._owned)

    def claim(self, start: int, end: int) -> None:
        """Mark `[start, end)` owned: the same words quoted again will map elsewhere."""
        span = (start, end)
        if span in self._owned:
            raise ValueError(f"span {span} is already owned")
        self._owned.add(span)
        self._log.append((span, True))

    def release(self, start: int, end: int) -> None:
        """Hand `[start, end)` back: the next quote of those words may map to it again."""
        span = (start, end)
        if span not in self._owned:
            raise ValueError(f"span {span} is not owned")
        self._unclaim(span)
        self._log.append((span, False))

    def checkpoint(self) -> int:
        """A point to `restore` the owned spans to."""
        return len(self._log)

    def restore(self, checkpoint: int) -> None:
        """Undo every claim and release made since `checkpoint`, last first."""
        if not 0 <= checkpoint <= len(self._log):
            raise ValueError(f"no checkpoint {checkpoint}")
        log = self._log
        while len(log) > checkpoint:
            span, claimed = log.pop()
            if claimed:
                self._unclaim(span)
            else:
                self._owned.add(span)

    def _unclaim(self, span: tuple[int, int]) -> None:
        """Drop an owned span, and move back the cursors that may have stepped over it."""
        self._owned.discard(span)
        start, end = span
        words = self.text[start:end]
        for cursors in (self._exact_cursor.get(words), self._word_cursor.get(words)):
            if cursors:
                _lower(cursors, start, start)
        if self._folded is not None and self._folded_cursor:
            folded = self._folded
            ns = folded.folded_offset(start, after=False)
            ne = folded.folded_offset(end, after=False)
            cursors = self._folded_cursor.get(folded.text[ns:ne])
            if cursors:
                _lower(cursors, start, ns)

    # -- searching -------------------------------------------------------------------------------

    def align(
        self, quote: str, lo: int = 0, hi: int | None = None, *, whole_words: bool = False
    ) -> Span | None:
        """The span of `quote` in `text[lo:hi]`, claimed; None if it is not there (or every
        place it is at is owned). Empty and whitespace-only quotes are never found.
        `whole_words`: only an exact match that is not part of a longer word."""
        span = self.find(quote, lo, hi, whole_words=whole_words)
        if span is not None:
            self.claim(span.start, span.end)
        return span

    def find(
        self, quote: str, lo: int = 0, hi: int | None = None, *, whole_words: bool = False
    ) -> Span | None:
        """`align` without the claim."""
        n = len(self.text)
        hi = n if hi is None else max(0, min(hi, n))
        lo = max(0, min(lo, hi))
        words = quote.strip()
        if not words or not words.translate(_DROP_INVISIBLE).strip():
            return None
        span = self._exact(words, lo, hi, whole_words=whole_words)
        if span is None and not whole_words:
            needle = fold(words)
            if not needle:
                return None
            span = self._normalized(needle, lo, hi)
            if span is None and FUZZY_MIN_CHARS <= len(needle) <= FUZZY_MAX_CHARS:
                span = self._fuzzy(needle, lo, hi)
        return span

    def _exact(self, words: str, lo: int, hi: int, *, whole_words: bool = False) -> Span | None:
        """The first unowned occurrence that is not part of a longer word ("Name1" is not
        the start of "Name10"), else (unless `whole_words`) the first unowned one (a text
        without spaces). Each kind has its cursor, so repeats of a name that is also the
        start of longer words do not rescan those."""
        owned, size, text = self._owned, len(words), self.text
        head, tail = _is_word(words[0]), _is_word(words[-1])
        n = len(text)
        index = self._text_index(lo, hi)
        cursors = self._word_cursor.get(words)
        at = lo if cursors is None else cursors.get(lo, lo)
        for i in _places(text, words, at, hi, index):
            if (i, i + size) in owned:
                continue
            if not (head and i > 0 and _is_word(text[i - 1])) and not (
                tail and i + size < n and _is_word(text[i + size])
            ):
                if cursors is None:
                    cursors = self._word_cursor[words] = {}
                cursors[lo] = i  # every whole-word place before it is owned
                return Span(i, i + size, "exact")
        if whole_words:
            return None
        cursors = self._exact_cursor.get(words)
        at = lo if cursors is None else cursors.get(lo, lo)
        for i in _places(text, words, at, hi, index):
            if (i, i + size) in owned:
                continue
            if cursors is None:
                cursors = self._exact_cursor[words] = {}
            cursors[lo] = i  # every place before it is owned
            return Span(i, i + size, "exact")
        return None

    def _normalized(self, needle: str, lo: int, hi: int) -> Span | None:
        folded = self.folded
        nlo = folded.folded_offset(lo, after=True)
        nhi = folded.folded_offset(hi, after=False)
        cursors = self._folded_cursor.get(needle)
        at = nlo if cursors is None else cursors.get(lo, nlo)
        owned, size = self._owned, len(needle)
        for j in _places(folded.text, needle, at, nhi, self._folded_index(nlo, nhi)):
            start, end = folded.start(j), folded.end(j + size)
            if (start, end) not in owned and lo <= start and end <= hi:
                if cursors is None:
                    cursors = self._folded_cursor[needle] = {}
                cursors[lo] = j
                return Span(start, end, "normalized")
        return None

    def _text_index(self, lo: int, hi: int) -> _Index | None:
        """The text's index, for a window too long to scan per quote (built once)."""
        if hi - lo <= INDEX_MIN_CHARS:
            return None
        if self._raw_index is None:
            self._raw_index = _Index(self.text)
        return self._raw_index

    def _folded_index(self, nlo: int, nhi: int) -> _Index | None:
        """The folded text's index, for a window too long to scan per quote (built once)."""
        if nhi - nlo <= INDEX_MIN_CHARS:
            return None
        if self._index is None:
            self._index = _Index(self.folded.text)
        return self._index

    def _fuzzy(self, needle: str, lo: int, hi: int) -> Span | None:
        """The best-scoring unowned place near where parts of the quote occur, if it scores
        `fuzzy_threshold` or better (the earliest, on a tie).

        Where the parts are looked for: in a window of up to `INDEX_MIN_CHARS`, and for a
        quote under 17 characters, pieces of the quote (a sixth of it, 3 to 12 characters)
        each scanned for with `str.find`; in a longer window, every 12-character gram of the
        quote looked up in the index (so some 17 characters in a row must have survived).
        Either way a part too common to point anywhere is not used."""
        folded = self.folded
        text = folded.text
        nlo = folded.folded_offset(lo, after=True)
        nhi = folded.folded_offset(hi, after=False)
        m = len(needle)
        if nhi - nlo < m // 2:
            return None
        index = self._folded_index(nlo, nhi)
        if index is not None and m >= _GRAM + _STEP - 1:
            votes = _votes_indexed(index, needle, nlo, nhi)
        else:  # a short window, or a quote too short for the index to find a part of
            votes = _votes(text, needle, nlo, nhi)
        if not votes:
            return None
        # Places within a few characters of each other are one place: what the parts after a
        # dropped word point at is shifted by its length.
        slack = int(m * (1 - self.fuzzy_threshold) / self.fuzzy_threshold * 2) + 2
        places: list[tuple[int, int, int]] = []  # (votes, first, last)
        for c in sorted(votes):
            if places and c - places[-1][2] <= slack:
                v, first, _ = places[-1]
                places[-1] = (v + votes[c], first, c)
            else:
                places.append((votes[c], c, c))
        places.sort(key=lambda p: (-p[0], p[1]))
        # The places at least half as many parts point at as the most pointed at: the others
        # are what a common part of the quote happens to meet.
        top = places[0][0]
        places = [p for p in places[:_FUZZY_PLACES] if 2 * p[0] >= top]
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(needle)
        best: tuple[float, int, int] | None = None  # (-score, start, end)
        for _, first, last in places:
            w0 = max(nlo, first - slack)
            w1 = min(nhi, last + m + slack)
            if w1 <= w0:
                continue
            matcher.set_seq1(text[w0:w1])
            scored = _best_run(matcher.get_matching_blocks(), m)
            if scored is None:
                continue
            score, b0, b1 = scored
            if score < self.fuzzy_threshold:
                continue
            fs, fe = w0 + b0, w0 + b1
            while fs < fe and text[fs] == " ":
                fs += 1
            while fe > fs and text[fe - 1] == " ":
                fe -= 1
            start, end = folded.start(fs), folded.end(fe)
            if (start, end) in self._owned or start < lo or end > hi:
                continue
            if best is None or (-score, start, end) < best:
                best = (-score, start, end)
        if best is None:
            return None
        return Span(best[1], best[2], "fuzzy")


class _Index:
    """Where the `_GRAM`-character strings at every `_STEP`-th offset of a text are.

    A sorted array of their hashes beside one of their offsets (in text order for equal
    hashes): a lookup is a binary search, and the index takes 16 bytes per `_STEP` characters.
    A needle of at least `_GRAM + _STEP - 1` characters has, at any place it occurs, one of
    its first `_STEP` grams at an indexed offset: those grams' offsets are all the candidate
    places, each checked with `startswith` (a hash collision is only a failed check).
    """

    __slots__ = ("hashes", "offsets")

    def __init__(self, text: str) -> None:
        # In C-level maps, not Python loops: 1 MB of text is 167K entries.
        starts = range(0, len(text) - _GRAM + 1, _STEP)
        grams = map(text.__getitem__, map(slice, starts, range(_GRAM, len(text) + 1, _STEP)))
        hashed = map(_HASH_MASK.__and__, map(hash, grams))
        if len(starts) <= _ENTRY_MASK:
            # One sort of (hash, entry) packed in an int below 2**60 (two digits: a fast
            # compare), the list of them the only copy.
            keys = sorted(
                map(int.__or__, map(int.__lshift__, hashed, repeat(_ENTRY_BITS)), count())
            )
            self.hashes = array("q", map(int.__rshift__, keys, repeat(_ENTRY_BITS)))
            self.offsets = array(
                "q", map(_STEP.__mul__, map(int.__and__, keys, repeat(_ENTRY_MASK)))
            )
        else:  # more than 16M entries: a text of 100 MB or more
            hashes = array("q", hashed)
            order = sorted(range(len(hashes)), key=hashes.__getitem__)
            self.hashes = array("q", map(hashes.__getitem__, order))
            self.offsets = array("q", map(_STEP.__mul__, order))

    def lookup(self, gram: str) -> tuple[int, int]:
        """The range of entries (in `offsets`) whose gram may be `gram`."""
        h = hash(gram) & _HASH_MASK
        a = bisect_left(self.hashes, h)
        return a, bisect_right(self.hashes, h, a)

    def candidates(self, needle: str, start: int, hi: int) -> list[int] | None:
        """The places in `[start, hi)` where `needle` may occur, in order; None when the
        index cannot say (a needle too short, or made of grams too common to list)."""
        m = len(needle)
        if m < _GRAM + _STEP - 1:
            return None
        # The first `_STEP` grams, or the last: whichever of the two lists fewer places.
        best: list[tuple[int, int, int]] | None = None
        for first in (0, m - _GRAM - _STEP + 1):
            ranges = []
            total = 0
            for j in range(first, first + _STEP):
                a, b = self.lookup(needle[j : j + _GRAM])
                ranges.append((j, a, b))
                total += b - a
            if best is None or total < sum(b - a for _, a, b in best):
                best = ranges
            if total <= _INDEX_MAX_PLACES:
                break
        assert best is not None
        if sum(b - a for _, a, b in best) > _INDEX_MAX_PLACES:
            return None
        offsets = self.offsets
        out = [
            c
            for j, a, b in best
            for c in (offsets[k] - j for k in range(a, b))
            if start <= c and c + m <= hi
        ]
        out.sort()
        return out


#: The bits of a gram's hash the index keeps (a collision is only a failed check), and of an
#: entry's number beside it in a sort key.
_HASH_MASK: Final = (1 << 36) - 1
_ENTRY_BITS: Final = 24
_ENTRY_MASK: Final = (1 << _ENTRY_BITS) - 1
#: Characters of the grams the index holds, and how far apart the indexed ones are.
_GRAM: Final = 12
_STEP: Final = 6
#: A window longer than this is searched through the index, not scanned per quote.
INDEX_MIN_CHARS: Final = 65_536
#: Candidate places a lookup may list before the index gives up on a needle (a scan then).
_INDEX_MAX_PLACES: Final = 4096
#: Entries of one gram past which it is too common to vote for a fuzzy place.
_GRAM_VOTE_MAX: Final = 32


def _places(text: str, needle: str, start: int, hi: int, index: _Index | None) -> Iterator[int]:
    """The offsets where `needle` occurs in `text[start:hi]`, in order: from the index's
    candidates when it has them, else by scanning with `str.find`."""
    candidates = None if index is None else index.candidates(needle, start, hi)
    if candidates is not None:
        for c in candidates:
            if text.startswith(needle, c):
                yield c
        return
    find = text.find
    i = find(needle, start, hi)
    while i >= 0:
        yield i
        i = find(needle, i + 1, hi)


def _votes(text: str, needle: str, lo: int, hi: int) -> dict[int, int]:
    """Candidate starts of `needle` in `text[lo:hi]`: where pieces of it occur, scanned for.

    Pieces spread over the quote: one the model kept intact points at the place, whatever it
    dropped or changed elsewhere. A piece with more than `_FUZZY_PIECE_HITS` hits is too
    common to point anywhere; those are used only if every piece is."""
    m = len(needle)
    size = max(3, min(12, m // _FUZZY_PIECES))
    count = min(_FUZZY_PIECES, m // size)
    step = (m - size) / max(1, count - 1)
    votes: dict[int, int] = {}
    common: list[list[int]] = []
    for p in range(count):
        offset = round(p * step)
        piece = needle[offset : offset + size]
        if not piece.strip():
            continue
        hits: list[int] = []
        at = lo
        while True:
            i = text.find(piece, at, hi)
            if i < 0:
                break
            hits.append(i - offset)
            if len(hits) > _FUZZY_PIECE_HITS:
                break
            at = i + 1
        if len(hits) > _FUZZY_PIECE_HITS:
            common.append(hits[:_FUZZY_PIECE_HITS])
            continue
        for c in hits:
            votes[c] = votes.get(c, 0) + 1
    if not votes:
        for hits in common:
            for c in hits:
                votes[c] = votes.get(c, 0) + 1
    return votes


def _votes_indexed(index: _Index, needle: str, lo: int, hi: int) -> dict[int, int]:
    """Candidate starts of `needle` in `[lo, hi)`: where its grams are, looked up."""
    votes: dict[int, int] = {}
    offsets = index.offsets
    m = len(needle)
    for j in range(m - _GRAM + 1):
        a, b = index.lookup(needle[j : j + _GRAM])
        if b - a > _GRAM_VOTE_MAX:
            continue
        for k in range(a, b):
            c = offsets[k] - j
            if lo - m <= c < hi:
                votes[c] = votes.get(c, 0) + 1
    return votes


def _best_run(blocks: list[difflib.Match], m: int) -> tuple[float, int, int] | None:
    """Of difflib's matching blocks (a: the window, b: the quote), the run of them whose span
    in the window scores best, 2*matched / (m + span length): (score, start, end) in the
    window. Edge blocks are dropped while that raises the score (stray matches far out)."""
    runs = [b for b in blocks if b.size]
    if not runs:
        return None
    i, j = 0, len(runs) - 1
    matched = sum(b.size for b in runs)

    def score(i: int, j: int, matched: int) -> float:
        return 2 * matched / (m + runs[j].a + runs[j].size - runs[i].a)

    current = score(i, j, matched)
    while i < j:
        left = score(i + 1, j, matched - runs[i].size)
        right = score(i, j - 1, matched - runs[j].size)
        if max(left, right) <= current:
            break
        if left >= right:
            matched -= runs[i].size
            i += 1
            current = left
        else:
            matched -= runs[j].size
            j -= 1
            current = right
    return current, runs[i].a, runs[j].a + runs[j].size


def _lower(cursors: dict[int, int], start: int, to: int) -> None:
    """Move back to `to` every cursor whose window starts at or before `start` and has
    stepped past it (an occurrence there is free again)."""
    for lo, at in cursors.items():
        if lo <= start and at > to:
            cursors[lo] = to


def _is_word(char: str) -> bool:
    """Whether a character is part of a word (so two such side by side are one word)."""
    return char.isalnum() or char == "_"
