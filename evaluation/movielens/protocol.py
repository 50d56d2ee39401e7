"""The prequential (test-then-train) page protocol on a timestamped interaction log. Pure.

Interactions are processed in stable timestamp order, in *chunks* (one simulated UTC day by
default, see :func:`chunks_by_day`). For every chunk:

1. **Test.** Every member who interacts in the chunk and is past the warm-up is asked for the
   page the recommender would serve them *now* (before the chunk). Warm-up: the chunk starts
   after the first ``warmup_fraction`` (10%) of all interactions, and the member has at least
   ``min_history`` (5) interactions before the chunk.
2. The page is scored against the member's **relevant set**: the titles they interact with
   (rate, i.e. play) in the chunk, minus titles they interacted with before the chunk (a
   title already seen cannot be a *new* find; MovieLens never re-rates, so this removes
   nothing there). Pages may still show already-seen titles (Continue Watching); those are
   simply misses. With ``min_rating`` set, only interactions rated at least that count as
   relevant. A member whose relevant set is empty is not scored in that chunk.
3. **Train.** The chunk is fed to the recommender (:meth:`Recommender.learn`).

One scored (member, chunk) pair is one *page view*; every metric is the mean over page views
with a 95% normal-approximation interval (:func:`evaluation.metrics.mean_and_ci`):

* Recall@M-by-N (:func:`~evaluation.metrics.recall_at_m_by_n`) for ``M = 1..10`` with
  ``N = 5``, and 3-by-4.
* The same with Continue Watching rows removed (the remaining rows move up), for pages whose
  row kinds are known (:class:`Page`); equal to the above for pages without such rows.
* NDCG@10 (binary gains) of the page's *primary row*: the ``top_picks`` row when the page
  has one, else its first row that is not Continue Watching; for a page without row kinds
  (a baseline's rows cut from one ranking) its titles in reading order.
* Catalog coverage of the titles in the 10-by-5 blocks of all page views, and mean
  intra-page genre diversity of each page view's 10-by-5 block.
* For pages with row kinds, how many rows of each kind the 10-by-5 blocks showed and how
  many relevant titles each kind held (where a page's hits come from).
* The expected Recall@5-by-5 of a uniformly random page of 25 titles the member has not
  seen: ``min(1, 25 / (catalog size - titles seen))`` per page view.

>>> log = [Interaction("a", "x", 5.0, 0), Interaction("a", "y", 4.0, 86_400),
...        Interaction("b", "x", 3.0, 86_401)]
>>> [len(c) for c in chunks_by_day(log)]
[1, 2]
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from evaluation.metrics import (
    catalog_coverage,
    intra_page_diversity,
    mean_and_ci,
    ndcg_at_k,
    recall_at_m_by_n,
)
from features.rows import RowKind

#: Rows considered in the Recall@M-by-N sweep.
M_MAX = 10
#: Columns of the sweep.
N_COLS = 5
#: The extra block reported besides the sweep.
EXTRA_BLOCK = (3, 4)
#: Cutoff of the primary-row NDCG.
NDCG_K = 10
#: Row kinds that are functional rather than recommendations.
FUNCTIONAL_ROWS = frozenset({RowKind.CONTINUE_WATCHING.value})
DAY_S = 86_400


class InteractionLike(Protocol):
    """What the protocol needs of an interaction (:class:`Interaction`, or
    :class:`~evaluation.movielens.data.Rating`)."""

    @property
    def user(self) -> str: ...
    @property
    def item(self) -> str: ...
    @property
    def rating(self) -> float: ...
    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Interaction:
    """A plain interaction: ``user`` rated (played) ``item`` at ``timestamp`` (seconds)."""

    user: str
    item: str
    rating: float
    timestamp: int


class Page(list):
    """A page as a grid of title ids (a list of rows), optionally with each row's kind.

    ``kinds[i]`` is the kind of row ``i`` (``continue_watching``, ``top_picks``, ...) when
    the recommender knows it, else ``None`` (a ranking cut into rows).

    >>> p = Page([["a", "b"], ["c"]], kinds=["continue_watching", "top_picks"])
    >>> p.recommendation_rows(), p.primary_row()
    ([['c']], ['c'])
    """

    def __init__(
        self, rows: Iterable[Sequence[str]] = (), kinds: Sequence[str] | None = None
    ) -> None:
        super().__init__(list(r) for r in rows)
        if kinds is not None and len(kinds) != len(self):
            raise ValueError(f"{len(kinds)} row kinds for {len(self)} rows")
        self.kinds: list[str] | None = list(kinds) if kinds is not None else None

    def recommendation_rows(self) -> list[list[str]]:
        """The rows that are not functional (Continue Watching), in page order."""
        if self.kinds is None:
            return list(self)
        return [r for r, k in zip(self, self.kinds, strict=True) if k not in FUNCTIONAL_ROWS]

    def primary_row(self) -> list[str]:
        """The ranked list NDCG is computed on (see the module docstring)."""
        if self.kinds is None:
            return [t for row in self for t in row]
        for row, kind in zip(self, self.kinds, strict=True):
            if kind == RowKind.TOP_PICKS:
                return list(row)
        rows = self.recommendation_rows()
        return list(rows[0]) if rows else []


def rows_from_ranking(ranking: Sequence[str], rows: int = M_MAX, cols: int = N_COLS) -> Page:
    """A baseline's page: its ranking cut into ``rows`` rows of ``cols`` titles, so
    Recall@M-by-``cols`` of the page is recall@(M x cols) of the ranking.

    >>> rows_from_ranking(list("abcdefg"), rows=2, cols=3)
    [['a', 'b', 'c'], ['d', 'e', 'f']]
    """
    top = list(ranking[: rows * cols])
    return Page(top[i : i + cols] for i in range(0, len(top), cols))


@runtime_checkable
class Recommender(Protocol):
    """What the protocol evaluates."""

    name: str

    def page(self, member: str, now_ts: int) -> list[list[str]]:
        """The page (rows of title ids, best row first) ``member`` would be served at
        ``now_ts`` (seconds, the data set's clock). A :class:`Page` may carry row kinds."""
        ...

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        """Take in the chunk's interactions (after its pages were scored)."""
        ...


# A recommender may also define ``prepare(members, now_ts)``: called once per chunk with the
# members about to be asked for pages, before the first ``page`` call (batching, refreshes).


def chunks_by_day(
    interactions: Sequence[InteractionLike], day_s: int = DAY_S
) -> list[list[InteractionLike]]:
    """Consecutive runs of interactions in the same UTC day (``timestamp // day_s``).
    The input must be sorted by timestamp."""
    out: list[list[InteractionLike]] = []
    current = None
    for it in interactions:
        day = it.timestamp // day_s
        if day != current:
            out.append([])
            current = day
        out[-1].append(it)
    return out


def chunks_of(interactions: Sequence[InteractionLike], size: int) -> list[list[InteractionLike]]:
    """Consecutive runs of ``size`` interactions (the last one may be shorter)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [list(interactions[i : i + size]) for i in range(0, len(interactions), size)]


Stat = tuple[float, float, float]
"""``(mean, low, high)`` of a 95% interval."""


@dataclass
class PageMetrics:
    """The protocol's outcome for one recommender."""

    name: str
    page_views: int = 0
    members: int = 0
    chunks: int = 0
    scored_chunks: int = 0
    recall: dict[int, Stat] = field(default_factory=dict)
    recall_reco_rows: dict[int, Stat] = field(default_factory=dict)
    recall_3x4: Stat = (math.nan, math.nan, math.nan)
    ndcg10: Stat = (math.nan, math.nan, math.nan)
    coverage: float = math.nan
    diversity: Stat = (math.nan, math.nan, math.nan)
    random_recall_5x5: float = math.nan
    mean_relevant: float = math.nan
    #: For pages with row kinds: rows of each kind among the first 10 rows of all page views,
    #: and relevant titles found in their first 5 columns.
    kind_rows: dict[str, int] = field(default_factory=dict)
    kind_hits: dict[str, int] = field(default_factory=dict)
    #: Each kind's marginal gain summed over its rows: the share of the page view's relevant
    #: titles the row's first 5 columns add to the rows above it (a title in view twice
    #: counts once, in its first row).
    kind_gain: dict[str, float] = field(default_factory=dict)
    #: Recall@M-by-5 over the page views of the second half of the timeline only (chunks
    #: starting after ``holdout_fraction`` of the interactions), and how many there are.
    recall_late: dict[int, Stat] = field(default_factory=dict)
    late_page_views: int = 0
    #: Seconds spent asking for pages and in ``learn``.
    page_seconds: float = 0.0
    learn_seconds: float = 0.0

    def row(self, m: int) -> float:
        """Mean Recall@``m``-by-5."""
        return self.recall[m][0]


def _stat(values: Sequence[float]) -> Stat:
    if len(values) >= 2:
        return mean_and_ci(values)
    if len(values) == 1:
        return (values[0], values[0], values[0])
    return (math.nan, math.nan, math.nan)


ProgressFn = Callable[[int, int, int, int], None]
"""``progress(chunks_done, chunks_total, interactions_done, interactions_total)``."""


def evaluate(
    recommender: Recommender,
    chunks: Sequence[Sequence[InteractionLike]],
    *,
    catalog_size: int,
    genres_of: Callable[[str], Collection[str]],
    min_history: int = 5,
    warmup_fraction: float = 0.1,
    min_rating: float | None = None,
    holdout_fraction: float = 0.5,
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PageMetrics:
    """Run the protocol (module docstring) over ``chunks`` and return the metrics.

    Parameters
    ----------
    recommender
        The :class:`Recommender` under test; it starts empty and learns only from chunks.
    chunks
        The interaction log cut into consecutive chunks, in timestamp order.
    catalog_size
        Titles in the catalog (coverage denominator, random-page expectation).
    genres_of
        Title id to genres (intra-page diversity).
    min_history, warmup_fraction
        The warm-up: members with fewer prior interactions, and chunks starting within the
        first ``warmup_fraction`` of all interactions, are not scored (but are learned).
    min_rating
        Only interactions rated at least this count as relevant (``None``: all).
    holdout_fraction
        Page views of chunks starting after this share of all interactions are also
        summarized apart (``recall_late``): the part of the timeline parameters chosen on
        the earlier part are reported on.
    """
    total = sum(len(c) for c in chunks)
    warm_from = math.ceil(warmup_fraction * total)
    late_from = math.ceil(holdout_fraction * total)
    seen: dict[str, set[str]] = defaultdict(set)
    scores = _Scores()
    result = PageMetrics(getattr(recommender, "name", type(recommender).__name__))
    done = 0
    for index, chunk in enumerate(chunks):
        if not chunk:
            continue
        result.chunks += 1
        if done >= warm_from:
            now_ts = chunk[0].timestamp
            relevant = _relevant(chunk, seen, min_history, min_rating)
            t0 = clock()
            asked = [u for u, rel in relevant.items() if rel]
            prepare = getattr(recommender, "prepare", None)
            if prepare is not None and asked:
                prepare(asked, now_ts)
            pages = {u: recommender.page(u, now_ts) for u in asked}
            result.page_seconds += clock() - t0
            if pages:
                result.scored_chunks += 1
            for user, grid in pages.items():
                page = grid if isinstance(grid, Page) else Page(grid)
                scores.add(user, page, relevant[user], genres_of,
                           max(1, catalog_size - len(seen[user])), late=done >= late_from)
        t0 = clock()
        recommender.learn(chunk)
        result.learn_seconds += clock() - t0
        for it in chunk:
            seen[it.user].add(it.item)
        done += len(chunk)
        if progress is not None:
            progress(index + 1, len(chunks), done, total)
    scores.fill(result, catalog_size)
    return result


def _relevant(chunk: Sequence[InteractionLike], seen: Mapping[str, set[str]],
              min_history: int, min_rating: float | None) -> dict[str, set[str]]:
    """Each scored member's relevant titles in ``chunk``: new to them, rated at least
    ``min_rating``; members with fewer than ``min_history`` prior titles are left out."""
    relevant: dict[str, set[str]] = {}
    for it in chunk:
        if len(seen[it.user]) < min_history or it.item in seen[it.user]:
            continue
        rel = relevant.setdefault(it.user, set())
        if min_rating is None or it.rating >= min_rating:
            rel.add(it.item)
    return relevant


@dataclass
class _Scores:
    """Per-page-view metric values, summarized into a :class:`PageMetrics` at the end."""

    recalls: dict[int, list[float]] = field(
        default_factory=lambda: {m: [] for m in range(1, M_MAX + 1)})
    recalls_reco: dict[int, list[float]] = field(
        default_factory=lambda: {m: [] for m in range(1, M_MAX + 1)})
    r34: list[float] = field(default_factory=list)
    ndcgs: list[float] = field(default_factory=list)
    divs: list[float] = field(default_factory=list)
    rand: list[float] = field(default_factory=list)
    n_rel: list[int] = field(default_factory=list)
    blocks: list[list[list[str]]] = field(default_factory=list)
    kind_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kind_hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kind_gain: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    recalls_late: dict[int, list[float]] = field(
        default_factory=lambda: {m: [] for m in range(1, M_MAX + 1)})
    members: set[str] = field(default_factory=set)

    def add(self, user: str, page: Page, rel: set[str],
            genres_of: Callable[[str], Collection[str]], unseen: int,
            late: bool = False) -> None:
        """Score one page view of ``user`` against their relevant titles ``rel`` (``late``:
        a page view of the second half of the timeline)."""
        reco = page.recommendation_rows()
        for m in range(1, M_MAX + 1):
            self.recalls[m].append(recall_at_m_by_n(page, rel, m, N_COLS))
            self.recalls_reco[m].append(recall_at_m_by_n(reco, rel, m, N_COLS) if reco else 0.0)
            if late:
                self.recalls_late[m].append(self.recalls[m][-1])
        self.r34.append(recall_at_m_by_n(page, rel, *EXTRA_BLOCK))
        self.ndcgs.append(ndcg_at_k(page.primary_row(), rel, NDCG_K))
        block = [list(row[:N_COLS]) for row in page[:M_MAX]]
        self.blocks.append(block)
        if page.kinds is not None:
            found: set[str] = set()
            for row, kind in zip(block, page.kinds, strict=False):
                hits = rel.intersection(row)
                self.kind_rows[kind] += 1
                self.kind_hits[kind] += len(hits)
                self.kind_gain[kind] += len(hits - found) / len(rel) if rel else 0.0
                found |= hits
        self.divs.append(intra_page_diversity(block, genres_of))
        self.rand.append(min(1.0, 5 * N_COLS / unseen))
        self.n_rel.append(len(rel))
        self.members.add(user)

    def fill(self, result: PageMetrics, catalog_size: int) -> None:
        """Write the summaries into ``result``."""
        result.page_views = len(self.r34)
        result.members = len(self.members)
        result.recall = {m: _stat(v) for m, v in self.recalls.items()}
        result.recall_reco_rows = {m: _stat(v) for m, v in self.recalls_reco.items()}
        result.recall_3x4 = _stat(self.r34)
        result.ndcg10 = _stat(self.ndcgs)
        result.diversity = _stat(self.divs)
        result.coverage = (catalog_coverage(self.blocks, catalog_size) if self.blocks
                           else math.nan)
        result.random_recall_5x5 = sum(self.rand) / len(self.rand) if self.rand else math.nan
        result.mean_relevant = sum(self.n_rel) / len(self.n_rel) if self.n_rel else math.nan
        result.kind_rows, result.kind_hits = dict(self.kind_rows), dict(self.kind_hits)
        result.kind_gain = dict(self.kind_gain)
        result.late_page_views = len(self.recalls_late[1])
        result.recall_late = ({m: _stat(v) for m, v in self.recalls_late.items()}
                              if result.late_page_views else {})
