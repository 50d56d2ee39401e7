"""Title search that knows when to personalize: *fetch* queries find one title, *explore*
queries browse.

Pure: text matching over a :class:`SearchIndex` built once per catalog version, ranking
with a caller-supplied relevance mapping (``online_models.page.relevance``); guardrails are
the caller's job.

**Normalization.** Text is lower-cased, accents are stripped (NFKD), every run of
characters other than letters and digits becomes one space; *tokens* are the words left.
A query that normalizes to nothing matches nothing.

**Text score** of a title for a normalized query ``q`` with token set ``Q`` (``N`` = the
title's name tokens, ``A`` = ``N`` plus the tokens of its genres and cast); the title's
text score is the largest that applies, and titles scoring 0 are not candidates:

===========  =========================================================  ==========
match        score                                                      range
===========  =========================================================  ==========
exact name   ``1.0``                                                    1.0
name prefix  ``0.8 + 0.1 * len(q) / len(name)``                         [0.8, 0.9)
name words   ``0.6 + 0.1 * |Q| / |N|`` if every query word is in ``N``  (0.6, 0.7]
any words    ``0.6 * |Q∩A| / |Q|`` (genre, cast or name words)          (0, 0.6]
===========  =========================================================  ==========

**Mode** (:func:`classify_query`), first rule that applies:

1. ``q`` equals a title's name: ``fetch``.
2. ``q`` equals a genre or a cast member: ``explore``.
3. ``q`` (at least ``MIN_PREFIX_CHARS`` characters) is a prefix of 1 to
   ``FETCH_MAX_TITLES`` titles' names: ``fetch``.
4. every token of ``q`` is in the name of 1 to ``FETCH_MAX_TITLES`` titles, covering at
   least ``MIN_NAME_COVERAGE`` of that name's tokens: ``fetch``.
5. otherwise (genre or cast words, words shared by many titles): ``explore``.

**Ranking** (:func:`search`, ``rel`` = the member's relevance in [0, 1], 0 when absent):

- ``fetch``: by text score, then ``rel`` (personalization only breaks ties), then title id;
  the reported score is the text score.
- ``explore``: only titles whose text score is at least ``EXPLORE_MIN_SHARE`` of the best
  text score are kept, then ranked by ``0.3 * text + 0.7 * rel`` (then title id), which is
  the reported score.

At most ``MAX_CANDIDATES`` candidates (best text scores first) are ranked.

>>> import datetime as dt
>>> from features.catalog import Catalog
>>> from topics.models import Artwork, Title
>>> def t(i, name, genres, cast=()):
...     return Title(title_id=i, name=name, genres=genres, cast=list(cast),
...                  maturity_rating="PG", release_date=dt.date(2020, 1, 1), duration_s=60.0,
...                  artwork=[Artwork(artwork_id=f"{i}-a", url=f"u/{i}")])
>>> cat = Catalog([t("t1", "Night Watch", ["Horror"], ["Ana Lima"]),
...                t("t2", "Night Watch II", ["Horror"]),
...                t("t3", "Café Society", ["Comedy"], ["Ana Lima"]),
...                t("t4", "The Watchers", ["Horror", "Drama"])])
>>> normalize("  CAFÉ   society! ")
'cafe society'
>>> classify_query("night watch", cat), classify_query("horror", cat)
('fetch', 'explore')
>>> classify_query("cafe soc", cat), classify_query("ana lima", cat)
('fetch', 'explore')

A fetch query: the exact name comes first even when the member prefers its sequel.

>>> search("Night Watch", cat, {"t1": 0.1, "t2": 0.9}, limit=2)
[('t1', 1.0, 'exact title'), ('t2', 0.878571, 'title prefix')]

An explore query: every Horror title matches equally, so relevance decides.

>>> search("horror", cat, {"t1": 0.2, "t2": 0.5, "t4": 0.9}, limit=3)
[('t4', 0.81, 'genre: Horror'), ('t2', 0.53, 'genre: Horror'), ('t1', 0.32, 'genre: Horror')]
>>> search("ana lima", cat, {"t3": 1.0}, limit=5)
[('t3', 0.88, 'cast: Ana Lima'), ('t1', 0.18, 'cast: Ana Lima')]
"""

from __future__ import annotations

import bisect
import heapq
import re
import unicodedata
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from features.catalog import Catalog
from topics.models import Title

Mode = Literal["fetch", "explore"]
MODES: tuple[Mode, ...] = ("fetch", "explore")

EXACT_SCORE = 1.0
PREFIX_BASE, PREFIX_SPAN = 0.8, 0.1
NAME_WORDS_BASE, NAME_WORDS_SPAN = 0.6, 0.1
ANY_WORDS_WEIGHT = 0.6
#: Explore: weights of text score and personal relevance.
EXPLORE_TEXT_WEIGHT, EXPLORE_REL_WEIGHT = 0.3, 0.7
#: Explore: candidates below this share of the best text score are dropped.
EXPLORE_MIN_SHARE = 0.5
#: A prefix or word match names a title only when it matches at most this many titles.
FETCH_MAX_TITLES = 3
MIN_PREFIX_CHARS = 3
MIN_NAME_COVERAGE = 0.5
MAX_CANDIDATES = 1000

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Lower-case, strip accents, keep letters and digits separated by single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", plain).strip()


@dataclass(frozen=True, slots=True)
class _Doc:
    title_id: str
    name: str
    name_tokens: frozenset[str]
    all_tokens: frozenset[str]
    #: ``(normalized tokens, original text, "genre" | "cast")`` of every facet value.
    facets: tuple[tuple[frozenset[str], str, str], ...]


@dataclass(slots=True)
class Match:
    """The text side of a search: the query's mode and each candidate's text score."""

    query: str
    mode: Mode
    #: title_id -> text score, best first (ties by title id).
    scores: dict[str, float] = field(default_factory=dict)
    index: SearchIndex | None = None
    q_tokens: frozenset[str] = frozenset()
    #: title_id -> reason, for the name tiers (the others are explained by their facets).
    name_reasons: dict[str, str] = field(default_factory=dict)

    def reason(self, title_id: str) -> str:
        """Why ``title_id`` matched: ``exact title``, ``title prefix``, ``title words``,
        ``genre: <g>``, ``cast: <name>`` or ``matched words``."""
        why = self.name_reasons.get(title_id)
        if why is not None or self.index is None:
            return why or ""
        return _facet_reason(self.q_tokens, self.index.docs[title_id])


class SearchIndex:
    """Normalized names, an inverted word index and a sorted name list for prefix lookups.

    Build it once per catalog version (:meth:`from_catalog`); it is immutable afterwards,
    so it may be built in a worker thread and shared by concurrent requests.
    """

    def __init__(self, titles: Iterable[Title]) -> None:
        self.docs: dict[str, _Doc] = {}
        self.by_name: dict[str, list[str]] = {}
        self.postings: dict[str, set[str]] = {}
        #: normalized genre / cast value -> ``"genre"`` or ``"cast"``
        self.phrases: dict[str, str] = {}
        for t in titles:
            name = normalize(t.name)
            if not name:
                continue
            name_toks = frozenset(name.split())
            facets = []
            for kind, values in (("genre", t.genres), ("cast", t.cast)):
                for v in values:
                    nv = normalize(v)
                    if nv:
                        facets.append((frozenset(nv.split()), v, kind))
                        self.phrases.setdefault(nv, kind)
            all_toks = name_toks.union(*(f[0] for f in facets))
            doc = _Doc(t.title_id, name, name_toks, all_toks, tuple(facets))
            self.docs[t.title_id] = doc
            self.by_name.setdefault(name, []).append(t.title_id)
            for tok in all_toks:
                self.postings.setdefault(tok, set()).add(t.title_id)
        self.names: list[tuple[str, str]] = sorted((d.name, d.title_id)
                                                   for d in self.docs.values())

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> SearchIndex:
        return cls(catalog.titles())

    def __len__(self) -> int:
        return len(self.docs)

    def prefixed(self, q: str, limit: int | None = None) -> list[str]:
        """Title ids whose normalized name starts with ``q`` (the first ``limit``)."""
        names = self.names
        i = bisect.bisect_left(names, (q, ""))
        out: list[str] = []
        while i < len(names) and names[i][0].startswith(q):
            if limit is not None and len(out) >= limit:
                break
            out.append(names[i][1])
            i += 1
        return out


_INDEXES: weakref.WeakKeyDictionary[Catalog, tuple[int, SearchIndex]] = (
    weakref.WeakKeyDictionary())


def index_of(catalog: Catalog | SearchIndex) -> SearchIndex:
    """``catalog``'s search index, built on first use and again after catalog changes."""
    if isinstance(catalog, SearchIndex):
        return catalog
    cached = _INDEXES.get(catalog)
    if cached is None or cached[0] != catalog.version:
        cached = (catalog.version, SearchIndex.from_catalog(catalog))
        _INDEXES[catalog] = cached
    return cached[1]


def _name_words(q_toks: frozenset[str], doc: _Doc) -> float:
    if not q_toks or not q_toks <= doc.name_tokens:
        return 0.0
    return NAME_WORDS_BASE + NAME_WORDS_SPAN * len(q_toks) / len(doc.name_tokens)


def _facet_reason(q_toks: frozenset[str], doc: _Doc) -> str:
    """Name the genre or cast member sharing the most words with the query."""
    best, reason = 0, "matched words"
    for facet_toks, text, kind in doc.facets:
        n = len(facet_toks & q_toks)
        if n > best:
            best, reason = n, f"{kind}: {text}"
    return reason


def _any_words(q_toks: frozenset[str], doc: _Doc) -> tuple[float, str]:
    common = q_toks & doc.all_tokens
    if not common:
        return 0.0, ""
    return ANY_WORDS_WEIGHT * len(common) / len(q_toks), _facet_reason(q_toks, doc)


def text_score(q: str, doc: _Doc) -> tuple[float, str]:
    """``(score, reason)`` of one indexed title for a normalized query (table above).

    The reference definition: :func:`match` computes the same scores for all candidates
    at once from the inverted index."""
    if doc.name == q:
        return EXACT_SCORE, "exact title"
    best = (0.0, "")
    if doc.name.startswith(q):
        best = (PREFIX_BASE + PREFIX_SPAN * len(q) / len(doc.name), "title prefix")
    q_toks = frozenset(q.split())
    name = _name_words(q_toks, doc)
    if name > best[0]:
        best = (name, "title words")
    words = _any_words(q_toks, doc)
    if words[0] > best[0]:
        best = words
    return round(best[0], 6), best[1]


def _classify(q: str, index: SearchIndex) -> Mode:
    if not q:
        return "explore"
    if q in index.by_name:
        return "fetch"
    if q in index.phrases:
        return "explore"
    if (len(q) >= MIN_PREFIX_CHARS
            and 1 <= len(index.prefixed(q, FETCH_MAX_TITLES + 1)) <= FETCH_MAX_TITLES):
        return "fetch"
    q_toks = frozenset(q.split())
    postings = sorted((index.postings.get(t, set()) for t in q_toks), key=len)
    named = 0
    for tid in postings[0].intersection(*postings[1:]):
        name_toks = index.docs[tid].name_tokens
        if q_toks <= name_toks and len(q_toks) / len(name_toks) >= MIN_NAME_COVERAGE:
            named += 1
            if named > FETCH_MAX_TITLES:
                return "explore"
    return "fetch" if named else "explore"


def classify_query(q: str, catalog: Catalog | SearchIndex) -> Mode:
    """``"fetch"`` when ``q`` clearly names a title, else ``"explore"`` (rules above)."""
    return _classify(normalize(q), index_of(catalog))


def match(q: str, catalog: Catalog | SearchIndex, mode: Mode | None = None) -> Match:
    """Classify ``q`` (unless ``mode`` is given) and text-score its candidates
    (:func:`text_score` for every title sharing a word with ``q`` or prefixed by it).

    Explore candidates below ``EXPLORE_MIN_SHARE`` of the best text score are dropped; at
    most ``MAX_CANDIDATES`` remain, best text scores first (ties by title id).
    """
    index = index_of(catalog)
    nq = normalize(q)
    mode = mode or _classify(nq, index)
    if not nq:
        return Match(q, mode)
    q_toks = frozenset(nq.split())
    n_q = len(q_toks)
    counts: dict[str, int] = {}
    for tok in q_toks:
        for tid in index.postings.get(tok, ()):
            counts[tid] = counts.get(tid, 0) + 1
    any_words = [round(ANY_WORDS_WEIGHT * c / n_q, 6) for c in range(n_q + 1)]
    name_words: dict[int, float] = {}  # by the name's word count
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    docs = index.docs
    for tid, c in counts.items():
        if c == n_q:
            name_toks = docs[tid].name_tokens
            if q_toks <= name_toks:
                n = len(name_toks)
                s = name_words.get(n)
                if s is None:
                    s = name_words[n] = round(NAME_WORDS_BASE + NAME_WORDS_SPAN * n_q / n, 6)
                scores[tid] = s
                reasons[tid] = "title words"
                continue
        scores[tid] = any_words[c]
    for tid in index.prefixed(nq):
        name = docs[tid].name
        if name == nq:
            scores[tid], reasons[tid] = EXACT_SCORE, "exact title"
        else:
            scores[tid] = round(PREFIX_BASE + PREFIX_SPAN * len(nq) / len(name), 6)
            reasons[tid] = "title prefix"
    items = list(scores.items())
    if mode == "explore" and items:
        floor = EXPLORE_MIN_SHARE * max(scores.values())
        items = [kv for kv in items if kv[1] >= floor]
    if len(items) > MAX_CANDIDATES:
        items = heapq.nsmallest(MAX_CANDIDATES, items, key=lambda kv: (-kv[1], kv[0]))
    else:
        items.sort(key=lambda kv: (-kv[1], kv[0]))
    return Match(q, mode, dict(items), index, q_toks,
                 {tid: reasons[tid] for tid, _ in items if tid in reasons})


def rank(m: Match, relevance: Mapping[str, float], limit: int,
         allowed: Iterable[str] | None = None) -> list[tuple[str, float, str]]:
    """Order a :class:`Match` for one member: ``[(title_id, score, reason)]`` best first.

    ``allowed``, when given, restricts the result to those title ids (guardrails).
    """
    keep = None if allowed is None else set(allowed)
    rows = []
    for tid, text in m.scores.items():
        if keep is not None and tid not in keep:
            continue
        rel = float(relevance.get(tid, 0.0))
        if m.mode == "fetch":
            rows.append(((-text, -rel, tid), tid, text))
        else:
            score = round(EXPLORE_TEXT_WEIGHT * text + EXPLORE_REL_WEIGHT * rel, 6)
            rows.append(((-score, tid), tid, score))
    best = heapq.nsmallest(max(0, limit), rows, key=lambda r: r[0])
    return [(tid, score, m.reason(tid)) for _, tid, score in best]


def search(q: str, catalog: Catalog | SearchIndex, relevance: Mapping[str, float],
           limit: int, mode: Mode | None = None) -> list[tuple[str, float, str]]:
    """``[(title_id, score, reason)]`` for query ``q``, best first, no duplicates.

    ``mode`` overrides :func:`classify_query`.
    """
    return rank(match(q, catalog, mode), relevance, limit)
