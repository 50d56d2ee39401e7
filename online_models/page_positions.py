"""Candidate rows built over catalog positions, for the compiled page core.

:class:`PositionRows` builds the rows :func:`online_models.page.candidate_rows` builds, by
the same row functions, as arrays: each row's titles as catalog positions with their scores
and relevances (read off the page's ranked positions with masks, or ranked by the compiled
:func:`online_models._page_core.near_ranked`), which
:func:`online_models._page_core.select_fill` selects and fills without a title id until the
items. The rows of tuples (:class:`online_models.page._Rows`) stay the reference:
tests/unit/test_page_core.py compares the pages of both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from features.rows import RowKind
from online_models import _page_core
from online_models.page import UTILITY_DEPTH, CandidateRow, _Rows
from online_models.page_arrays import RankedTitles, listed_positions


class Unplaced(LookupError):
    """A row holds a title the catalog does not (the page then takes the Python path)."""


class Placed:
    """A row's titles as catalog positions, best first, with their scores."""

    __slots__ = ("pos", "scores")

    def __init__(self, pos: np.ndarray, scores: np.ndarray) -> None:
        self.pos, self.scores = pos, scores

    def __len__(self) -> int:
        return len(self.pos)


class RelevanceByPosition:
    """The page's relevance by title id, read off its positions (``get`` as a dict's: the
    ``rel`` of :func:`~online_models.page.candidate_rows` without building the dict)."""

    def __init__(self, ranked: RankedTitles) -> None:
        self._where, self._rel = ranked.arrays.pos, ranked.rel

    def get(self, title_id: str, default: float = 0.0) -> float:
        p = self._where.get(title_id)
        return default if p is None else self._rel[p]


class PositionRows(_Rows):
    """:class:`~online_models.page._Rows` whose rows are :class:`Placed` arrays."""

    def use_ranked(self, ranked: RankedTitles) -> None:
        super().use_ranked(ranked)
        assert ranked.rel_array is not None and ranked.id_ranks is not None
        self._rel_array, self._id_ranks = ranked.rel_array, ranked.id_ranks
        self._where = ranked.arrays.pos

    def _read(self, positions: np.ndarray) -> Placed:  # type: ignore[override]
        head = positions[: self.depth]
        return Placed(head, self._rel_array[head])

    def by_rel_near(self, near: list[tuple[str, float]]) -> Placed:  # type: ignore[override]
        placed = _page_core.near_ranked(near, self._where, self._rel_array, self._id_ranks,
                                        self.similarity_weight)
        if placed is None:
            raise Unplaced("a neighbour is not in the catalog")
        return Placed(*placed)

    def popular_rows(self, trending: Sequence[tuple[str, float]]  # type: ignore[override]
                     ) -> tuple[Placed | list[tuple[str, float]],
                                Placed | list[tuple[str, float]]]:
        """:meth:`_Rows.popular_rows` read off the list's catalog positions with the page's
        mask of allowed titles not engaged (a stable sort by descending mean, as the
        reference's ``sorted``)."""
        top_score = trending[0][1] if trending else 1.0
        if self._pos is None or not top_score:  # a zero first score: the reference's error
            return super().popular_rows(trending)
        listed, scores = listed_positions(self._ranked.arrays, trending)  # type: ignore[union-attr]
        keep = np.zeros(len(self._rel_array) + 1, dtype=bool)  # the last: not in the catalog
        keep[self._pos] = True
        hit = keep[listed]
        pos, score = listed[hit], scores[hit] / top_score
        head, head_score = pos[: self.depth], score[: self.depth]
        mean = 0.5 * head_score + 0.5 * self._rel_array[head]
        if np.isnan(mean).any():  # NaN keys do not sort as Python sorts them
            return super().popular_rows(trending)
        order = np.argsort(-mean, kind="stable")
        return Placed(pos[:10], score[:10]), Placed(head[order], mean[order])

    def _placed(self, ranked: Sequence[tuple[str, float]]) -> Placed:
        where = self._where
        pos = [where.get(t) for t, _ in ranked]
        if None in pos:
            raise Unplaced("a row's title is not in the catalog")
        return Placed(np.array(pos, dtype=np.int64),
                      np.array([s for _, s in ranked], dtype=float))

    def add(self, row_id: str, kind: RowKind, title: str, why: str,  # type: ignore[override]
            ranked: Placed | Sequence[tuple[str, float]], quality: float | None = None,
            extra: Callable[[str], dict[str, Any]] | None = None, factor: float = 1.0
            ) -> None:
        """:meth:`_Rows.add` for :class:`Placed` rows (rows of tuples are placed first):
        each title's relevance by position, the same values as the reference's by id."""
        if not len(ranked):
            return
        placed = ranked if isinstance(ranked, Placed) else self._placed(ranked)
        if quality is not None:
            rels, q = None, quality
        else:
            rels = self._rel_array[placed.pos]
            head = rels[:UTILITY_DEPTH].tolist()
            q = sum(head) / len(head)
        weight = self.weights.get(kind.value, 0.5) * factor
        self.rows.append(CandidateRow(row_id, kind.value, title, why, [],
                                      utility=round(weight * q, 6), extra=extra,
                                      weight=weight, rels=rels, positions=placed.pos,
                                      scores=placed.scores))
