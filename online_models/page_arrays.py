"""Arrays page assembly reads its rows off: per-catalog masks and counts, a page's titles
ranked as catalog positions, popularity lists by position and row similarities from one
matrix product.

Pure helpers of :mod:`online_models.page`; every value equals what the id-and-set forms
give (tests/unit/test_page_caches.py and test_page_rows.py compare pages).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from features.catalog import Catalog, CatalogArrays

if TYPE_CHECKING:
    from online_models.page import CandidateRow

T = TypeVar("T")


@dataclass(frozen=True)
class RankedTitles:
    """A page's allowed titles by relevance as catalog positions: what
    :func:`candidate_rows` reads its rows off with masks instead of sets of ids."""

    arrays: CatalogArrays
    #: The allowed titles' positions, by relevance (ties by id).
    pos: np.ndarray
    #: Each catalog title's relevance by position (0 for titles not allowed).
    rel: list[float]
    #: ``rel`` as an array, and each position's rank in id order (rows over positions).
    rel_array: np.ndarray | None = None
    id_ranks: np.ndarray | None = None


def genre_mask(catalog: Catalog, genre: str) -> np.ndarray:
    """Which catalog titles (by position) have ``genre``, cached per catalog version."""

    def build() -> np.ndarray:
        arr = catalog.arrays()
        g = arr.genre_pos.get(genre)
        mask = (np.ascontiguousarray(arr.genres[:, g]) if g is not None
                else np.zeros(len(arr), dtype=bool))
        mask.flags.writeable = False
        return mask

    return catalog.derived(("genre-mask", genre), build)


def new_release_mask(catalog: Catalog, today: int, days: int) -> np.ndarray:
    """Which catalog titles (by position) were released in the ``days`` up to ``today`` (an
    ordinal), cached per catalog version and day."""

    def build() -> np.ndarray:
        age = today - catalog.arrays().release_ordinal
        mask = (age >= 0) & (age < days)
        mask.flags.writeable = False
        return mask

    return catalog.derived(("new-releases", today, days), build)


#: Arrays made of popularity lists (:func:`popularity_by_position`, :func:`listed_positions`),
#: each cache keyed by the list's id (:func:`_per_list`).
_POPULARITY: OrderedDict[int, tuple[object, CatalogArrays, int, object]] = OrderedDict()
_LISTED: OrderedDict[int, tuple[object, CatalogArrays, int, object]] = OrderedDict()
_POPULARITY_KEPT = 64


def _per_list(cache: OrderedDict[int, tuple[object, CatalogArrays, int, object]],
              arr: CatalogArrays, src: Sequence[tuple[str, float]],
              build: Callable[[], T]) -> T:
    """``build()`` for the list ``src``, kept in ``cache`` for the last ``_POPULARITY_KEPT``
    lists: a worker ranks every page of a country with the same list object for up to a
    render window. An entry holds its list, its length and the catalog arrays and is used
    only for those very objects (a list's id is not reused while the entry holds it; the
    lists are not changed in place)."""
    hit = cache.get(id(src))
    if hit is not None and hit[0] is src and hit[1] is arr and hit[2] == len(src):
        cache.move_to_end(id(src))
        return hit[3]  # type: ignore[return-value]
    made = build()
    cache[id(src)] = (src, arr, len(src), made)
    while len(cache) > _POPULARITY_KEPT:
        cache.popitem(last=False)
    return made


def popularity_by_position(arr: CatalogArrays, src: Sequence[tuple[str, float]]
                            ) -> np.ndarray:
    """Each catalog title's popularity (its score in ``src`` over the first's, 0 when not
    listed), kept per list (:func:`_per_list`)."""

    def build() -> np.ndarray:
        top = src[0][1] if src and src[0][1] > 0 else 1.0
        full = np.zeros(len(arr))
        pos = arr.pos
        for t, s in src:  # a title listed twice keeps its last score, as a dict would
            i = pos.get(t)
            if i is not None:
                full[i] = s / top
        full.flags.writeable = False
        return full

    return _per_list(_POPULARITY, arr, src, build)


def listed_positions(arr: CatalogArrays, src: Sequence[tuple[str, float]]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The titles of ``src`` as catalog positions (``len(arr)`` for a title the catalog
    does not hold) and their scores, in the list's order, kept per list
    (:func:`_per_list`)."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        missing, where = len(arr), arr.pos
        pos = np.array([where.get(t, missing) for t, _ in src], dtype=np.int64)
        scores = np.array([s for _, s in src], dtype=float)
        pos.flags.writeable = scores.flags.writeable = False
        return pos, scores

    return _per_list(_LISTED, arr, src, build)


def genre_counts(catalog: Catalog) -> np.ndarray:
    """Each catalog title's genre counts (a row per position, a column per genre of
    ``genre_names``), cached per catalog version."""

    def build() -> np.ndarray:
        arr = catalog.arrays()
        counts = np.zeros((len(arr), len(arr.genre_names)))
        for i, tid in enumerate(arr.ids):
            for g in catalog.genres_of(tid):
                counts[i, arr.genre_pos[g]] += 1.0
        counts.flags.writeable = False
        return counts

    return catalog.derived(("genre-counts",), build)


class RowSimilarities:
    """:func:`row_similarity` of candidate rows, the genre dot products of every pair from
    one matrix product (the counts are small integers: the sums are exact, the same as
    summing the genre mixes' products one by one)."""

    def __init__(self, rows: Sequence[CandidateRow], catalog: Catalog) -> None:
        arr = catalog.arrays()
        where = arr.pos
        heads = np.zeros((len(rows), len(arr)))  # which titles lead each row
        at = [(r, p) for r, c in enumerate(rows) for t in c.head()
              if (p := where.get(t)) is not None]
        if at:
            heads[tuple(zip(*at, strict=True))] = 1.0
        mixes = heads @ genre_counts(catalog)
        self.index = {id(c): r for r, c in enumerate(rows)}
        self.dots = (mixes @ mixes.T).tolist()

    def __call__(self, a: CandidateRow, b: CandidateRow) -> float:
        ha, hb = a.head(), b.head()
        inter = len(ha & hb)
        union = len(ha) + len(hb) - inter
        jac = inter / union if union else 0.0
        i, j = self.index[id(a)], self.index[id(b)]
        dots = self.dots
        norm = math.sqrt(dots[i][i] * dots[j][j])
        return 0.5 * jac + 0.5 * (dots[i][j] / norm if norm else 0.0)
