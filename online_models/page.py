"""Home-page assembly: candidate rows, row utility, greedy diverse selection, de-duplication.

The module is longer than ~500 lines because the steps above are one algorithm over one
candidate-row type, read in order; the shapes it returns (:class:`Page`, :class:`PageRow`,
:class:`PageItem`) are defined here once, row ids in :mod:`features.rows`.

Pure. For one member it (1) scores every allowed title's *relevance* in [0, 1] by blending
the online Top Picks model, content match and popularity (the model's weight grows with
the member's history, so new members get popular and content-matched titles); (2) builds
candidate rows (Continue Watching, Top Picks, Because You Watched X, Because You Like
<genre>, Top 10, Trending, New Releases, More Like X); (3) gives each row a utility = the
row kind's weight (learned from the population's plays, adjusted by the member's own,
:mod:`online_models.row_affinity`) x the mean relevance of its leading titles; (4) picks
rows greedily by their marginal gain: the utility of the titles each row would show in view
that are not in view above, minus ``diversity_penalty`` x the row's largest similarity to
rows already picked (the required kinds keep a place unless the member never plays from
them); (5) fills the picked rows in view first (:func:`fill_rows`), so no title appears
twice on the page and each row's best titles not shown above are where members look.
Guardrails (:class:`~online_models.rules.Rules`) filter every candidate.

>>> import datetime as dt
>>> from features.catalog import Catalog
>>> from topics.models import Artwork, Title
>>> cat = Catalog([Title(title_id=f"t{i}", name=f"T{i}", genres=["Drama"],
...     maturity_rating="PG", release_date=dt.date(2024, 1, i + 1), duration_s=60.0,
...     artwork=[Artwork(artwork_id=f"t{i}-a", url=f"u{i}")]) for i in range(5)])
>>> page = assemble_page(None, cat, trending=[("t3", 9.0)], scorer=None,
...                      config=PageConfig(row_length=3), country="US", now_ms=0)
>>> ids = [i["title_id"] for r in page["rows"] for i in r["items"]]
>>> ids[0], len(ids) == len(set(ids)) == 5
('t3', True)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NotRequired, TypedDict

import numpy as np

from features.catalog import Catalog, CatalogArrays
from features.profile import ProfileState
from features.rows import RowKind, genre_row_id, row_id
from online_models.content import content_scores_indexed
from online_models.page_arrays import (
    RankedTitles,
    RowSimilarities,
    genre_counts,
    genre_mask,
    new_release_mask,
    popularity_by_position,
)
from online_models.page_view import discount_ignored, fill_rows, required_kinds
from online_models.row_affinity import member_row_weights
from online_models.rules import ProfileMeta, Rules
from online_models.similarity import CoWatchSimilarity
from topics.models import Title

try:  # the compiled row selection and filling (setup.py builds it when a C compiler is there)
    from online_models import _page_core
except ImportError:  # pragma: no cover - an install without a compiler: the Python reference
    _page_core = None

Scorer = Callable[[str, Sequence[str]], np.ndarray]


class PageItem(TypedDict):
    """One title on a page: what the worker materializes and the server returns (the
    artwork is the title's first until the server decides it for the member)."""

    title_id: str
    name: str
    artwork_id: str
    artwork_url: str
    score: float
    maturity_rating: str
    genres: list[str]
    availability: list[str]
    #: Continue Watching: where playback resumes, in seconds.
    resume_position_s: NotRequired[float]
    #: Set by the server when it decides the artwork: the logging propensity, the policy
    #: that decided and its version.
    propensity: NotRequired[float]
    policy: NotRequired[str]
    policy_version: NotRequired[int]


class PageRow(TypedDict):
    """One row of a page, its items in display order."""

    row_id: str
    kind: str
    title: str
    explanation: str
    utility: float
    adjusted_utility: float
    items: list[PageItem]


class Page(TypedDict):
    """A home page: materialized by the worker (``assemble_page`` plus ``variant`` and
    ``context`` for a member's page), stored in Redis, served (plus the request's fields)
    and published on the page-updates topic. The one definition of its shape."""

    profile_id: str | None
    personalized: bool
    country: str
    max_rating: str
    kids: bool
    #: When it was generated: the stream's event time in ``assemble_page``, the wall clock
    #: once the worker stamps it.
    generated_at_ms: int
    #: The newest event of the member's state it reflects (0: the default page).
    as_of_event_ts_ms: int
    rows: list[PageRow]
    #: The member's experiment variant.
    variant: NotRequired[str]
    #: The member's artwork context (features the artwork policy decides with).
    context: NotRequired[dict[str, Any]]
    #: Served pages: the request's id, when it was served and where the page came from.
    request_id: NotRequired[str]
    served_at_ms: NotRequired[int]
    source: NotRequired[str]
#: Leading titles of a row that decide its utility.
UTILITY_DEPTH = 5
#: Rows taken before short rows are dropped (see :func:`select_rows`).
SHORT_ROWS_KEPT = 3
#: Rows that serve a function (resume playback) rather than recommend: never too short.
FUNCTIONAL_KINDS = frozenset({RowKind.CONTINUE_WATCHING.value})


@dataclass(frozen=True)
class PageConfig:
    """Shape of a materialized page."""

    row_length: int = 20
    affinity_half_life_s: float = 14 * 24 * 3600.0
    rules: Rules = field(default_factory=Rules)
    #: Row-kind weights to use instead of ``rules.row_weights`` (learned ones).
    row_weights: Mapping[str, float] | None = None


@dataclass
class CandidateRow:
    """A row before selection: its ranked titles and its utility for the member."""

    row_id: str
    kind: str
    title: str
    explanation: str
    ranked: list[tuple[str, float]]
    utility: float = 0.0
    adjusted_utility: float = 0.0
    extra: Callable[[str], dict[str, Any]] | None = None
    #: With ``rels`` (each ranked title's relevance), the utility is recomputed during
    #: selection as ``weight`` x the mean relevance of the first titles not yet placed.
    weight: float = 0.0
    rels: list[float] | np.ndarray | None = None
    #: A row built over catalog positions (:mod:`online_models.page_positions`, for the
    #: compiled core): its titles' positions and scores instead of ``ranked``.
    positions: np.ndarray | None = None
    scores: np.ndarray | None = None

    _head: set[str] | None = None
    _genres: dict[str, float] | None = None
    _square: float | None = None

    def head(self) -> set[str]:
        if self._head is None:
            self._head = {t for t, _ in self.ranked[: 2 * UTILITY_DEPTH]}
        return self._head

    def genre_mix(self, catalog: Catalog) -> dict[str, float]:
        if self._genres is None:
            self._genres = _genre_vector(self.head(), catalog)
        return self._genres

    def genre_square(self, catalog: Catalog) -> float:
        """The squared norm of :meth:`genre_mix`."""
        if self._square is None:
            self._square = sum(v * v for v in self.genre_mix(catalog).values())
        return self._square


def _minmax(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    return np.full_like(x, 0.5) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def relevance(state: ProfileState | None, titles: Sequence[Title],
              popularity: dict[str, float], scorer: Scorer | None, now_ms: int,
              config: PageConfig, cowatch: CoWatchSimilarity | None = None) -> dict[str, float]:
    """Each title's relevance for the member in [0, 1] (see :func:`relevance_indexed`)."""
    if not titles:
        return {}
    arr = CatalogArrays(list(titles))
    rel = relevance_indexed(state, arr, np.arange(len(arr)), popularity, scorer, now_ms, config,
                            cowatch)
    return dict(zip(arr.ids, rel.tolist(), strict=True))


def relevance_indexed(state: ProfileState | None, arr: CatalogArrays, idx: np.ndarray,
                      popularity: dict[str, float], scorer: Scorer | None, now_ms: int,
                      config: PageConfig,
                      cowatch: CoWatchSimilarity | None = None,
                      pop_full: np.ndarray | None = None) -> np.ndarray:
    """Relevance in [0, 1] of the titles at positions ``idx`` of ``arr``, vectorized
    (``pop_full``: ``popularity`` by catalog position, when already known).

    A weighted mean (weights: ``config.rules.relevance_weights``) of four signals, each
    scaled to [0, 1] over the titles scored: the Top Picks model's score, the co-watch
    similarity to the member's recent titles, the content match and popularity. The two
    personal signals' weights are multiplied by ``n / (n + personal_ramp)`` for a member
    with ``n`` titles engaged or rated, so a new member is ranked by content and popularity.
    """
    if len(idx) == 0:
        return np.zeros(0)
    if pop_full is not None:
        pop = pop_full[idx]
    else:
        ids, get = arr.ids, popularity.get
        pop = np.fromiter([get(ids[i], 0.0) for i in idx.tolist()], float, len(idx))
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    rules = config.rules
    days = rules.new_release_days
    w = rules.relevance_weights
    if state is None:
        content = content_scores_indexed(arr, idx, {}, {}, today, days)
        signals = [(w.get("content", 0.0), content), (w.get("popularity", 0.0), pop)]
    else:
        hl = config.affinity_half_life_s
        content = content_scores_indexed(arr, idx, state.genre_affinity(now_ms, hl),
                                         state.cast_scores(now_ms, hl), today, days)
        n = len(state.engaged) + len(state.explicit)
        ramp = n / (n + rules.personal_ramp)
        signals = [(w.get("content", 0.0), content), (w.get("popularity", 0.0), pop)]
        w_mf = w.get("model", 0.0) * ramp
        if w_mf > 0 and scorer is not None:
            # scored against the whole catalog (the same title list for every member, so the
            # scorer's per-list cache holds across members of different countries/ratings)
            scores = np.asarray(scorer(state.profile_id, arr.ids))[idx]
            signals.append((w_mf, _minmax(scores)))
        w_cw = w.get("cowatch", 0.0) * ramp
        if w_cw > 0 and cowatch is not None:
            knn = cowatch.score_history(state.recent_title_ids(), arr.pos, len(arr),
                                        rules.history_decay)[idx]
            top = float(knn.max()) if len(knn) else 0.0
            if top > 0:
                signals.append((w_cw, knn / top))
    blended = (_page_core.blend if _page_core is not None else blend)(signals)
    return np.zeros(len(idx)) if blended is None else blended


def blend(signals: list[tuple[float, np.ndarray]]) -> np.ndarray | None:
    """The weighted mean of the ``(weight, scores)`` signals, clipped to [0, 1] (``None``
    when the weights total nothing); a signal equal for every title (no plays yet, say)
    says nothing and is left out unless every one is. The reference of the compiled
    ``_page_core.blend``."""
    signals = [(wt, x) for wt, x in signals
               if float(x.max() - x.min()) > 1e-12] or signals
    total = sum(wt for wt, _ in signals)
    if total <= 0:
        return None
    rel = sum(wt * x for wt, x in signals) / total
    return np.clip(rel, 0.0, 1.0)


def content_neighbors(catalog: Catalog, title_id: str, k: int = 100) -> list[tuple[str, float]]:
    """The ``k`` titles most similar to ``title_id`` by genre and cast
    (:func:`~online_models.similarity.content_similarity`), cached per catalog version."""

    def build() -> list[tuple[str, float]]:
        arr = catalog.arrays()
        i = arr.pos.get(title_id)
        if i is None:
            return []
        g = arr.genres
        inter = (g & g[i]).sum(axis=1)
        union = (g | g[i]).sum(axis=1)
        sim = 0.8 * np.divide(inter, union, out=np.zeros(len(arr)), where=union > 0)
        title = catalog.get(title_id)
        for c in title.cast if title else ():
            sim[arr.cast_index[c]] = np.maximum(sim[arr.cast_index[c]], 0.0)
        shared = np.zeros(len(arr), dtype=bool)
        for c in title.cast if title else ():
            shared[arr.cast_index[c]] = True
        sim = np.round(sim + 0.2 * shared, 6)
        sim[i] = 0.0
        order = np.argsort(-sim, kind="stable")[:k]
        return [(arr.ids[j], float(sim[j])) for j in order if sim[j] > 0]

    return catalog.derived(("content-neighbors", title_id, k), build)


def _similar_fast(catalog: Catalog, seed: str, cowatch: CoWatchSimilarity | None, k: int,
                  allowed: Collection[str], exclude: set[str]) -> list[tuple[str, float]]:
    """Like :func:`~online_models.similarity.similar_titles` over the allowed titles, with
    cached content neighbours."""
    out = [(t, s) for t, s in (cowatch.most_similar(seed, 2 * k, exclude=exclude)
                              if cowatch else []) if t in allowed][:k]
    if len(out) < k:
        taken = {t for t, _ in out} | exclude | {seed}
        floor = 0.5 * out[-1][1] if out else 1.0
        for t, s in content_neighbors(catalog, seed):
            if t in allowed and t not in taken:
                out.append((t, s * floor))
                if len(out) >= k:
                    break
    return out


def _more_like(catalog: Catalog, seed: str, cowatch: CoWatchSimilarity | None, k: int,
               allowed: Collection[str], exclude: set[str]) -> list[tuple[str, float]]:
    """More Like X: titles sharing genres or cast with ``seed``, scored
    ``0.6 x content similarity + 0.4 x co-watch similarity`` (relative to the seed's best
    co-watched title); co-watched titles count only when they share a genre with ``seed``.

    >>> import datetime as dt
    >>> from topics.models import Artwork, Title
    >>> cat = Catalog([Title(title_id=t, name=t, genres=g, maturity_rating="PG",
    ...     release_date=dt.date(2024, 1, 1), duration_s=60.0,
    ...     artwork=[Artwork(artwork_id=t + "a", url="u")])
    ...     for t, g in [("x", ["Drama"]), ("a", ["Drama"]), ("b", ["Drama"]), ("c", ["Comedy"])]])
    >>> cw = CoWatchSimilarity()
    >>> for history, title in [(["x"], "b"), (["x"], "c")]:
    ...     _ = cw.learn_one(history, title)
    >>> [t for t, _ in _more_like(cat, "x", cw, 5, {"a", "b", "c"}, set())]
    ['b', 'a']
    """
    seed_genres = set(catalog.genres_of(seed))
    content, content_order = catalog.derived(("more-like-order", seed),
                                             lambda: _content_order(catalog, seed))
    # (-score, id) tuples sort natively: the order of key=(-score, id)
    keyed: dict[str, float] = {}  # the co-watched titles' scores, over their content's
    if cowatch is not None:
        near = [(t, s) for t, s in cowatch.most_similar(seed, 2 * k, exclude=exclude)
                if t in allowed and not seed_genres.isdisjoint(catalog.genres_of(t))]
        top = max((s for _, s in near), default=0.0) or 1.0
        for t, s in near:
            keyed[t] = -round(0.6 * content.get(t, 0.0) + 0.4 * (s / top), 6)
    keyed.pop(seed, None)
    # the best k content-only titles kept are all the content can add to the best k
    head: list[tuple[float, str]] = []
    for v, t in content_order:
        if t in allowed and t not in exclude and t not in keyed and t != seed:
            head.append((v, t))
            if len(head) == k:
                break
    order = sorted([*head, *((v, t) for t, v in keyed.items())])
    return [(t, -v) for v, t in order[:k]]


def _content_order(catalog: Catalog, seed: str
                   ) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """``seed``'s content neighbours' similarity, and their More Like X scores without
    co-watch (0.6 x the similarity, + 0.4 x 0.0) as ``(-score, id)``, best first."""
    neighbours = content_neighbors(catalog, seed)
    content_only = {t: round(0.6 * s, 6) for t, s in neighbours}
    return dict(neighbours), sorted((-v, t) for t, v in content_only.items())


def _genre_vector(ids: Iterable[str], catalog: Catalog) -> dict[str, float]:
    vec: dict[str, float] = {}
    for t in ids:
        for g in catalog.genres_of(t):
            vec[g] = vec.get(g, 0.0) + 1.0
    return vec


def row_similarity(a: CandidateRow, b: CandidateRow, catalog: Catalog) -> float:
    """Similarity of two rows in [0, 1]: half title overlap (Jaccard of their leading
    titles), half genre mix (cosine of genre counts)."""
    ha, hb = a.head(), b.head()
    inter = len(ha & hb)
    union = len(ha) + len(hb) - inter
    jac = inter / union if union else 0.0
    va, vb = a.genre_mix(catalog), b.genre_mix(catalog)
    if len(vb) < len(va):
        va, vb = vb, va  # the dot product over the shorter mix (the same sum)
    dot = sum(v * vb.get(g, 0.0) for g, v in va.items() if g in vb)
    norm = math.sqrt(a.genre_square(catalog) * b.genre_square(catalog))
    return 0.5 * jac + 0.5 * (dot / norm if norm else 0.0)


def select_rows(cands: Sequence[CandidateRow], catalog: Catalog, penalty: float,
                max_rows: int, row_length: int | None = None,
                min_items: int = 1, required: Collection[str] = (),
                visible: int | None = None) -> list[CandidateRow]:
    """Greedy selection: repeatedly take the row with the highest utility minus
    ``penalty`` x its largest similarity to rows taken so far.

    Kinds in ``required`` are kept: once the free rows are no more than the required kinds
    still missing (that have a candidate left), only rows of those kinds compete for them.

    With ``row_length``, the titles each taken row will show in view (its first ``visible``
    not in view above, default ``row_length``; see :func:`fill_rows`) are set aside, and
    the utility of every row with ``rels`` is recomputed
    from the titles it still has to offer: a row whose best titles are already on the page
    is worth less; once ``SHORT_ROWS_KEPT`` rows holding two rows' worth of titles are
    taken, a recommendation row left with fewer than ``min_items`` titles is dropped (a
    small catalog still fills a page).
    Utilities only fall and penalties only grow as rows are taken, so the adjusted
    utilities of the rows taken are non-increasing.
    """

    def too_short(c: CandidateRow, used: set[str]) -> bool:
        if c.kind in FUNCTIONAL_KINDS:
            return not c.ranked
        # fewer than min_items titles not used (stops counting once there are enough)
        return next(islice((1 for t, _ in c.ranked if t not in used), min_items - 1, None),
                    None) is None

    left = [c for c in cands if c.ranked]  # the first row may be short (a tiny catalog)
    order = {id(c): i for i, c in enumerate(cands)}  # ties go to the earlier candidate
    chosen: list[CandidateRow] = []
    max_sim = {id(c): 0.0 for c in left}
    used: set[str] = set()
    #: Each row's titles its utility was last recomputed from: until one of them is shown
    #: above, the recomputed utility would be the same.
    heads: dict[int, set[str]] = {}
    depth = visible or row_length or 0
    similarity = RowSimilarities(left, catalog)
    while left and len(chosen) < max_rows:
        taken_kinds = {c.kind for c in chosen}
        missing = {c.kind for c in left if c.kind in required} - taken_kinds
        pool = ([c for c in left if c.kind in missing]
                if missing and max_rows - len(chosen) <= len(missing) else left)
        best = max(pool, key=lambda c: (c.utility - penalty * max_sim[id(c)], -order[id(c)]))
        best.adjusted_utility = best.utility - penalty * max_sim[id(best)]
        chosen.append(best)
        left = [c for c in left if c is not best]  # by identity: no field-by-field __eq__
        if row_length is not None:
            shown = list(islice((t for t, _ in best.ranked if t not in used), depth))
            used.update(shown)
            if len(chosen) >= SHORT_ROWS_KEPT and len(used) >= 2 * depth:
                left = [c for c in left if not too_short(c, used)]
            for c in left:
                if c.rels is not None:
                    head = heads.get(id(c))
                    if head is None or not head.isdisjoint(shown):
                        heads[id(c)] = _rescore(c, used)
        if best.kind == RowKind.CONTINUE_WATCHING or len(chosen) >= max_rows:
            continue  # a functional row does not make recommendation rows redundant
        for c in left:
            max_sim[id(c)] = max(max_sim[id(c)], similarity(c, best))
    return chosen


def _rescore(c: CandidateRow, used: set[str]) -> set[str]:
    """Lower ``c``'s utility to its weight x the mean relevance of its first UTILITY_DEPTH
    titles not in ``used`` (never up: a row not sorted by relevance, Top 10, can lose weak
    titles); returns those titles."""
    pairs = zip(c.ranked, c.rels or (), strict=True)
    head = list(islice(((t, r) for (t, _), r in pairs if t not in used), UTILITY_DEPTH))
    rels = [r for _, r in head]
    c.utility = min(c.utility, round(c.weight * sum(rels) / len(rels), 6) if rels else 0.0)
    return {t for t, _ in head}


def title_item(title: Title, score: float, **extra: Any) -> PageItem:
    """A title as a page item: what the server returns for it (the artwork is the first
    candidate until the server chooses one)."""
    art = title.artwork[0]
    return {
        "title_id": title.title_id,
        "name": title.name,
        "artwork_id": art.artwork_id,
        "artwork_url": art.url,
        "score": round(float(score), 6),
        "maturity_rating": title.maturity_rating,
        "genres": list(title.genres),
        "availability": list(title.availability),
        **extra,
    }


def _base_items(catalog: Catalog) -> dict[str, PageItem]:
    """Every title's page item with a score of 0, built once per catalog version: a page's
    items are shallow copies of these (the same keys in the same order as
    :func:`title_item`, the genre and availability lists shared)."""
    return catalog.derived(("items",), lambda: {t.title_id: title_item(t, 0.0)
                                                 for t in catalog.titles()})


def _row_items(base: Mapping[str, PageItem], picked: Sequence[tuple[Title, float]],
               extra: Callable[[str], dict[str, Any]] | None) -> list[PageItem]:
    """A row's page items from the titles :func:`fill_rows` picked for it."""
    # the scores to 6 decimals in one formatting: "%.6f" and float() round as round(x, 6)
    # does (both the correctly rounded decimal string), at half its cost
    scores = map(float, ("%.6f " * len(picked) % tuple(s for _, s in picked)).split())
    if extra is None:  # a copy with its score replaced: the keys keep their order
        items = [base[title.title_id].copy() for title, _ in picked]
        for item, score in zip(items, scores, strict=True):
            item["score"] = score
        return items
    return [{**base[title.title_id], "score": score, **extra(title.title_id)}
            for (title, _), score in zip(picked, scores, strict=True)]


class ByRelevance(list[tuple[str, float]]):
    """A row's ranked titles whose scores are their relevance (:meth:`_Rows.by_rel`)."""


class _Rows:
    """The candidate rows of one page as they are built: ranking by the member's relevance
    and a row's utility (see :func:`candidate_rows`)."""

    def __init__(self, rel: Mapping[str, float], allowed_ids: Collection[str],
                 engaged: set[str], depth: int, weights: Mapping[str, float]) -> None:
        self.rel, self.allowed, self.engaged = rel, allowed_ids, engaged
        self.depth, self.weights = depth, weights
        self.similarity_weight = 0.5
        self.rows: list[CandidateRow] = []
        self._order: list[tuple[float, str]] | None = None
        #: With :class:`RankedTitles`: the positions of the allowed titles not engaged, by
        #: relevance (rows are read off them through masks).
        self._ranked: RankedTitles | None = None
        self._pos: np.ndarray | None = None

    def use_ranked(self, ranked: RankedTitles) -> None:
        """Read rows off ``ranked`` (the titles of ``self.allowed``), less the engaged."""
        keep, where = ranked.pos, ranked.arrays.pos
        hit = [p for t in self.engaged if (p := where.get(t)) is not None]
        if hit:
            mask = np.ones(len(ranked.arrays), dtype=bool)
            mask[hit] = False
            keep = keep[mask[keep]]
        self._ranked, self._pos = ranked, keep

    def _read(self, positions: np.ndarray) -> list[tuple[str, float]]:
        ids, rel = self._ranked.arrays.ids, self._ranked.rel  # type: ignore[union-attr]
        return ByRelevance([(ids[p], rel[p]) for p in positions[: self.depth].tolist()])

    def by_mask(self, mask: np.ndarray) -> list[tuple[str, float]] | None:
        """:meth:`by_rel` of the catalog titles ``mask`` holds (``None`` without ranked
        positions)."""
        if self._pos is None:
            return None
        pos = self._pos
        return self._read(pos[mask[pos]])

    def by_genre(self, catalog: Catalog, genre: str) -> list[tuple[str, float]]:
        """:meth:`by_rel` of the titles of ``genre``."""
        if self._pos is None:
            return self.by_rel(catalog.by_genre(genre))
        pos = self._pos
        return self._read(pos[genre_mask(catalog, genre)[pos]])

    def _sorted(self, ids: Iterable[str]) -> list[tuple[float, str]]:
        rel, allowed, engaged = self.rel, self.allowed, self.engaged
        # (-relevance, id) tuples sort natively: the order of key=(-rel, id), without a
        # Python call per title
        keyed = [(-rel[t], t) for t in ids if t in allowed and t not in engaged]
        keyed.sort()
        return keyed

    def by_rel(self, ids: Iterable[str]) -> list[tuple[str, float]]:
        """The allowed titles of ``ids`` not engaged yet, by relevance (ties by id).

        The page's titles are sorted once; a large subset (a genre) is read off that
        order until the row is deep enough, a small one is sorted on its own."""
        if self._pos is not None:
            return self._by_rel_positions(ids)
        if self._order is None:
            self._order = self._sorted(self.allowed)
        order, depth = self._order, self.depth
        if ids is self.allowed:
            return ByRelevance([(t, -neg) for neg, t in order[:depth]])
        subset = ids if isinstance(ids, set | frozenset) else set(ids)
        if 8 * len(subset) < len(order):
            return ByRelevance([(t, -neg) for neg, t in self._sorted(subset)[:depth]])
        out = ByRelevance()
        for neg, t in order:
            if t in subset:
                out.append((t, -neg))
                if len(out) >= depth:
                    break
        return out

    def _by_rel_positions(self, ids: Iterable[str]) -> list[tuple[str, float]]:
        """:meth:`by_rel` read off the ranked positions: the titles sorted by (-relevance,
        id) are the ranked positions' titles of ``ids``, in their order."""
        pos = self._pos
        assert pos is not None and self._ranked is not None
        if ids is self.allowed:
            return self._read(pos)
        where = self._ranked.arrays.pos
        hit = [p for t in ids if (p := where.get(t)) is not None]
        mask = np.zeros(len(self._ranked.arrays), dtype=bool)
        mask[hit] = True
        return self._read(pos[mask[pos]])

    def popular_rows(self, trending: Sequence[tuple[str, float]]
                     ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The Top 10's titles and Trending's: the allowed titles of ``trending`` not
        engaged, scored relative to its first; Trending's are its first ``depth`` ranked
        by the mean of that score and the member's relevance."""
        top_score = trending[0][1] if trending else 1.0
        allowed, engaged, rel = self.allowed, self.engaged, self.rel
        popular = [(t, s / top_score) for t, s in trending if t in allowed and t not in engaged]
        return popular[:10], sorted(((t, 0.5 * s + 0.5 * rel.get(t, 0.0))
                                     for t, s in popular[: self.depth]), key=lambda kv: -kv[1])

    def by_rel_near(self, near: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """A seed's neighbours ranked for the member: relevance x (1 - a + a x similarity),
        ``a`` the rules' ``neighbour_similarity``."""
        a = self.similarity_weight
        get = self.rel.get
        # (-score, id) tuples sort natively: the order of key=(-score, id)
        keyed = [(-(get(t, 0.0) * (1.0 - a + a * min(1.0, s))), t) for t, s in near]
        keyed.sort()
        return [(t, -neg) for neg, t in keyed]

    def add(self, row_id: str, kind: RowKind, title: str, why: str,
            ranked: list[tuple[str, float]], quality: float | None = None, extra=None,
            factor: float = 1.0) -> None:
        """Add a row (none when ``ranked`` is empty); its utility is the kind's weight x
        ``factor`` x ``quality`` (default: the mean relevance of its leading titles)."""
        if not ranked:
            return
        if quality is not None:
            rels = None
            q = quality
        else:
            # a row ranked by relevance scores each title with it
            rels = ([s for _, s in ranked] if isinstance(ranked, ByRelevance)
                    else [self.rel.get(t, 0.0) for t, _ in ranked])
            head = rels[:UTILITY_DEPTH]
            q = sum(head) / len(head)
        weight = self.weights.get(kind.value, 0.5) * factor
        self.rows.append(CandidateRow(row_id, kind.value, title, why, ranked,
                                      utility=round(weight * q, 6), extra=extra,
                                      weight=weight, rels=rels))


def candidate_rows(state: ProfileState | None, catalog: Catalog,
                   allowed_ids: set[str] | frozenset[str],
                   rel: Mapping[str, float], trending: Sequence[tuple[str, float]],
                   cowatch: CoWatchSimilarity | None, config: PageConfig, country: str,
                   now_ms: int, ranked: RankedTitles | None = None,
                   builder: type[_Rows] | None = None) -> list[CandidateRow]:
    """Every row the member could be shown, each ranked and scored for utility (``ranked``:
    the titles of ``allowed_ids`` by relevance, when already known; ``builder``: rows built
    another way, :class:`online_models.page_positions.PositionRows`)."""
    rules = config.rules
    w = config.row_weights if config.row_weights is not None else rules.row_weights
    if state is not None and state.row_counts:
        w = member_row_weights(w, state.row_counts, rules.member_row_strength)
    engaged = (set(state.engaged) | set(state.finished)) if state else set()
    b = (builder or _Rows)(rel, allowed_ids, engaged, max(3 * config.row_length, 30), w)
    b.similarity_weight = rules.neighbour_similarity
    if ranked is not None:
        b.use_ranked(ranked)
    if state is not None:
        _personal_rows(b, state, catalog, cowatch, config, now_ms)
    if state is None or not (state.engaged or state.explicit):
        # no plays or ratings yet (the default page, or a member who only browsed): the
        # popular rows, so a new member's page is as full as the default page
        _popular_rows(b, catalog, trending, config)
    _shared_rows(b, catalog, trending, config, country, now_ms)
    return b.rows


def _personal_rows(b: _Rows, state: ProfileState, catalog: Catalog,
                   cowatch: CoWatchSimilarity | None, config: PageConfig, now_ms: int) -> None:
    """Continue Watching, Top Picks, Because You Watched, More Like and the member's genres."""
    rules, n, allowed_ids, engaged = config.rules, b.depth, b.allowed, b.engaged
    cw = [t for t in state.continue_watching() if t in allowed_ids]
    b.add(row_id(RowKind.CONTINUE_WATCHING), RowKind.CONTINUE_WATCHING, "Continue Watching",
          "Pick up where you left off",
          [(t, 1.0 - i / max(1, len(cw))) for i, t in enumerate(cw)], quality=1.0,
          extra=lambda t: {"resume_position_s": state.resume_position(t)})
    if state.engaged or state.explicit:
        b.add(row_id(RowKind.TOP_PICKS), RowKind.TOP_PICKS, "Top Picks for You",
              "Learned from what you watched and rated", b.by_rel(allowed_ids))
    for seed in state.watched_recently(rules.because_you_watched_rows):
        seed_t = catalog.get(seed)
        if seed_t is None:
            continue
        ranked = b.by_rel_near(_similar_fast(catalog, seed, cowatch, n, allowed_ids, engaged))
        b.add(row_id(RowKind.BECAUSE_YOU_WATCHED, seed), RowKind.BECAUSE_YOU_WATCHED,
              f"Because You Watched {seed_t.name}",
              f"Members who watched {seed_t.name} also watched these", ranked)
    liked = [t for t, y in sorted(state.explicit.items(), key=lambda kv: -kv[1]) if y >= 0.75]
    clicked = [t for t in state.recent_title_ids() if state.engaged.get(t) == 1]
    for seed in (liked or clicked)[:1]:
        seed_t = catalog.get(seed)
        if seed_t is not None:
            b.add(row_id(RowKind.MORE_LIKE, seed), RowKind.MORE_LIKE, f"More Like {seed_t.name}",
                  f"Similar in genre and cast to {seed_t.name}, and watched by its fans",
                  b.by_rel_near(_more_like(catalog, seed, cowatch, n, allowed_ids, engaged)))
    affinity = state.genre_affinity(now_ms, config.affinity_half_life_s)
    genres = [g for g, s in sorted(affinity.items(), key=lambda kv: (-kv[1], kv[0]))
              if s > 0][: rules.genre_rows]
    top = max((affinity[g] for g in genres), default=1.0) or 1.0
    for g in genres:
        ranked = b.by_genre(catalog, g)
        if ranked:
            b.add(genre_row_id(g), RowKind.GENRE, f"Because You Like {g}",
                  f"You have been watching {g}", ranked,
                  factor=0.5 + 0.5 * affinity[g] / top)


def _popular_rows(b: _Rows, catalog: Catalog, trending: Sequence[tuple[str, float]],
                  config: PageConfig) -> None:
    """Popular Picks and the most played genres (pages without plays or ratings)."""
    b.add(row_id(RowKind.POPULAR), RowKind.POPULAR, "Popular Picks",
          "Popular and new titles for everyone",
          b.by_rel(b.allowed))
    pop_genre: dict[str, float] = {}
    for t, s in trending:
        for g in catalog.genres_of(t):
            pop_genre[g] = pop_genre.get(g, 0.0) + s
    have = {r.row_id for r in b.rows}
    for g in sorted(catalog.genres(), key=lambda g: (-pop_genre.get(g, 0.0), g))[
            : config.rules.genre_rows]:
        if genre_row_id(g) not in have:
            b.add(genre_row_id(g), RowKind.GENRE, f"Popular {g}", f"Popular {g} titles",
                  b.by_genre(catalog, g))


def _shared_rows(b: _Rows, catalog: Catalog, trending: Sequence[tuple[str, float]],
                 config: PageConfig, country: str, now_ms: int) -> None:
    """Top 10, Trending and New Releases (every page)."""
    n, allowed_ids, engaged = b.depth, b.allowed, b.engaged
    where = country if country not in ("ALL", "ZZ") else "Your Region"
    top10, trending_row = b.popular_rows(trending)
    b.add(row_id(RowKind.TOP10, country), RowKind.TOP10, f"Top 10 in {where}",
          "The most played titles today", top10)
    b.add(row_id(RowKind.TRENDING, country), RowKind.TRENDING, f"Trending Now in {where}",
          "Popular right now, picked for you", trending_row)
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date().toordinal()
    recent = new_release_mask(catalog, today, config.rules.new_release_days)
    ranked = b.by_mask(recent)
    if ranked is None:
        arr = catalog.arrays()
        new = [arr.ids[i] for i in np.flatnonzero(recent)
               if arr.ids[i] in allowed_ids and arr.ids[i] not in engaged]
        ranked = b.by_rel(new)
    if not ranked:  # nothing released lately: the newest titles
        ranked = b.by_rel([t for t in catalog.newest(n) if t in allowed_ids and t not in engaged])
    b.add(row_id(RowKind.NEW_RELEASES), RowKind.NEW_RELEASES, "New Releases", "Recently added",
          ranked)


def _id_ranks(catalog: Catalog) -> np.ndarray:
    """Each title's rank among the catalog's ids in string order (catalog order), cached
    per catalog version: the tie-break of a vectorized sort by relevance."""

    def build() -> np.ndarray:
        ids = catalog.arrays().ids
        ranks = np.empty(len(ids), dtype=np.int64)
        ranks[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        return ranks

    return catalog.derived(("id-ranks",), build)


def _allowed(catalog: Catalog, mask: np.ndarray
             ) -> tuple[np.ndarray, list[str], frozenset[str]]:
    """The allowed titles of ``mask`` (one of :meth:`Rules.allowed_mask`'s cached masks) as
    catalog positions, ids and a set of ids, cached with it (the entry lives and goes with
    the catalog version that holds the mask, so its ``id`` is never another mask's)."""

    def build() -> tuple[np.ndarray, list[str], frozenset[str]]:
        idx = np.flatnonzero(mask)
        idx.flags.writeable = False  # shared by every page of the mask
        ids = catalog.arrays().ids
        allowed_ids = [ids[i] for i in idx.tolist()]
        return idx, allowed_ids, frozenset(allowed_ids)

    return catalog.derived(("allowed-ids", id(mask)), build)


def _select_fill_compiled(cands: list[CandidateRow], catalog: Catalog, rules: Rules,
                          row_length: int, min_items: int, required: Collection[str],
                          visible: int) -> tuple[list[CandidateRow], list[list[PageItem]]] | None:
    """:func:`select_rows`, :func:`~online_models.page_view.fill_rows` and
    :func:`_row_items` in one compiled call (``online_models._page_core``; ``None`` when a
    row holds a title the catalog does not: the caller takes the Python path)."""
    arr = catalog.arrays()
    base = _base_items(catalog)
    by_pos = catalog.derived(("items-by-position",), lambda: [base[t] for t in arr.ids])
    return _page_core.select_fill(  # type: ignore[union-attr]
        cands, arr.pos, genre_counts(catalog), by_pos, arr.ids, rules.diversity_penalty,
        rules.max_rows, row_length, min_items, frozenset(required), visible,
        RowKind.CONTINUE_WATCHING.value)


def assemble_page(state: ProfileState | None, catalog: Catalog,
                  trending: Sequence[tuple[str, float]], scorer: Scorer | None,
                  config: PageConfig, country: str, now_ms: int,
                  meta: ProfileMeta | None = None,
                  cowatch: CoWatchSimilarity | None = None,
                  popular: Sequence[tuple[str, float]] | None = None) -> Page:
    """Build one member's page (or the default page when ``state`` is ``None``).

    ``trending`` (short half-life) feeds the Top 10 and Trending rows; ``popular`` (long
    half-life, default ``trending``) is the popularity signal of relevance."""
    meta = meta or ProfileMeta()
    rules = config.rules
    arr = catalog.arrays()
    idx, allowed_ids, allowed_set = _allowed(catalog, rules.allowed_mask(catalog, meta, country))
    pop_full = popularity_by_position(arr, popular if popular else trending)
    rel_arr = relevance_indexed(state, arr, idx, {}, scorer, now_ms, config, cowatch,
                                pop_full)
    if state is not None and rules.impression_discount < 1.0:
        discount_ignored(rel_arr, idx, arr, state, rules.impression_discount)
    rel_full = np.zeros(len(arr))
    rel_full[idx] = rel_arr
    # the allowed titles by relevance, ties by id: what sorting (-relevance, id) gives
    id_ranks = _id_ranks(catalog)
    ranked = RankedTitles(arr, idx[np.lexsort((id_ranks[idx], -rel_arr))], rel_full.tolist(),
                          rel_full, id_ranks)
    min_items = min(rules.min_row_items, config.row_length)
    visible = min(rules.visible_columns, config.row_length)
    required = required_kinds(rules, state)
    selected = None
    if _page_core is not None and min_items >= 1:  # the compiled core, over positions
        from online_models.page_positions import PositionRows, RelevanceByPosition, Unplaced
        with contextlib.suppress(Unplaced):  # a title not in the catalog: the reference
            cands = candidate_rows(state, catalog, allowed_set, RelevanceByPosition(ranked),
                                   trending, cowatch, config, country, now_ms, ranked,
                                   PositionRows)
            selected = _select_fill_compiled(cands, catalog, rules, config.row_length,
                                             min_items, required, visible)
    if selected is None:  # the Python reference
        rel = dict(zip(allowed_ids, rel_arr.tolist(), strict=True))
        cands = candidate_rows(state, catalog, allowed_set, rel, trending, cowatch, config,
                               country, now_ms, ranked)
        chosen = select_rows(cands, catalog, rules.diversity_penalty, rules.max_rows,
                             config.row_length, min_items, required, visible)
        base = _base_items(catalog)
        selected = (chosen, [_row_items(base, picked, c.extra) for c, picked in zip(
            chosen, fill_rows(chosen, catalog, config.row_length, visible), strict=True)])
    rows: list[PageRow] = []
    for c, items in zip(*selected, strict=True):
        if items:
            rows.append({"row_id": c.row_id, "kind": c.kind, "title": c.title,
                         "explanation": c.explanation, "utility": c.utility,
                         "adjusted_utility": round(c.adjusted_utility, 6), "items": items})
    return {
        "profile_id": state.profile_id if state else None,
        "personalized": state is not None,
        "country": country,
        "max_rating": rules.max_rating_for(meta),
        "kids": meta.kids,
        "generated_at_ms": now_ms,
        "as_of_event_ts_ms": state.last_event_ts_ms if state else 0,
        "rows": rows,
    }
