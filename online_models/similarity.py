"""Item-to-item similarity learned online from co-watching, with a content fallback.

Each time a member *watches* a title, it is counted together with the titles they watched
before it (a bounded window). Similarity is the cosine of co-watch counts,
``c(a, b) / sqrt(n(a) * n(b))``. Neighbour lists are pruned to the strongest
``max_neighbors`` so memory stays linear in the catalog. Titles nobody co-watched yet fall
back to content similarity (genre and cast overlap), so new titles get "More Like X" rows
from their first day.

>>> cw = CoWatchSimilarity(window=5)
>>> for history, title in [(["a"], "b"), (["a"], "b"), (["a"], "c"), (["x"], "y")]:
...     _ = cw.learn_one(history, title)
>>> [t for t, _ in cw.most_similar("a", 2)]
['b', 'c']
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from itertools import chain, islice
from typing import Any

import numpy as np

from online_models.checkpoint import (
    CheckpointError,
    dumps,
    require,
    require_array,
    require_strings,
    restore,
)
from topics.models import Title

#: Version of the state layout :meth:`CoWatchSimilarity.to_state` writes.
STATE_VERSION = 1


class CoWatchSimilarity:
    """Online co-watch cosine similarity.

    Parameters
    ----------
    window
        How many previously watched titles pair with a new watch.
    max_neighbors
        Neighbours kept per title after pruning.
    """

    def __init__(self, window: int = 20, max_neighbors: int = 100) -> None:
        self.window = window
        self.max_neighbors = max_neighbors
        self._count: dict[str, int] = {}
        self._co: dict[str, dict[str, int]] = {}
        self.n_learned = 0
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: What ``_arrays`` was built for: ``(n_learned, the position map itself)`` (the map
        #: is held, not its ``id``, which a new map could reuse once the old one is freed).
        self._arrays_for: tuple[int, Mapping[str, int] | None] = (-1, None)
        #: Each title's co-watched titles, best first, as of ``_ranked_for`` (``n_learned``).
        self._ranked: dict[str, list[tuple[str, float]]] = {}
        self._ranked_for = -1

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_arrays", None)  # derived; never copied
        state.pop("_arrays_for", None)
        state.pop("_ranked", None)
        state.pop("_ranked_for", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays, self._arrays_for = {}, (-1, None)
        self._ranked, self._ranked_for = {}, -1

    # -- checkpoints ----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The counts as JSON values and arrays, in the models' own insertion order (which
        breaks ties when neighbour lists are pruned): every title id once (``ids``), the
        watch counts of the ``counted`` titles, and the co-watch counts as a sparse matrix
        (row titles ``co_rows``, their neighbours ``co_cols[co_indptr[r]:co_indptr[r+1]]``
        with counts ``co_counts``)."""
        co = self._co
        ids = list(dict.fromkeys(chain(self._count, co, chain.from_iterable(co.values()))))
        at = {t: i for i, t in enumerate(ids)}.__getitem__
        sizes = np.fromiter(map(len, co.values()), np.int64, len(co))
        total = int(sizes.sum())
        return {
            "window": self.window, "max_neighbors": self.max_neighbors,
            "n_learned": self.n_learned, "ids": ids,
            "counted": np.fromiter(map(at, self._count), np.int32, len(self._count)),
            "counts": np.fromiter(self._count.values(), np.int64, len(self._count)),
            "co_rows": np.fromiter(map(at, co), np.int32, len(co)),
            "co_indptr": np.concatenate([[0], np.cumsum(sizes)]),
            "co_cols": np.fromiter(map(at, chain.from_iterable(co.values())), np.int32, total),
            "co_counts": np.fromiter(chain.from_iterable(n.values() for n in co.values()),
                                     np.int64, total),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CoWatchSimilarity:
        """The model :meth:`to_state` described; :class:`CheckpointError` when a value is
        missing or the arrays do not fit together."""
        name = cls.__name__
        model = cls(window=require(state, name, "window", int),
                    max_neighbors=require(state, name, "max_neighbors", int))
        model.n_learned = require(state, name, "n_learned", int)
        ids = require_strings(state, name, "ids")
        counted = require_array(state, name, "counted", (None,), "i")
        counts = require_array(state, name, "counts", (len(counted),), "i")
        rows = require_array(state, name, "co_rows", (None,), "i")
        indptr = require_array(state, name, "co_indptr", (len(rows) + 1,), "i")
        cols = require_array(state, name, "co_cols", (None,), "i")
        co_counts = require_array(state, name, "co_counts", (len(cols),), "i")
        for key, ix in (("counted", counted), ("co_rows", rows), ("co_cols", cols)):
            if len(ix) and (ix.min() < 0 or ix.max() >= len(ids)):
                raise CheckpointError(f"{name} checkpoint {key!r} points outside the ids")
        if indptr[0] != 0 or indptr[-1] != len(cols) or (np.diff(indptr) < 0).any():
            raise CheckpointError(f"{name} checkpoint co_indptr does not split co_cols")
        model._count = dict(zip([ids[i] for i in counted.tolist()], counts.tolist(),
                                strict=True))
        bounds, col_ids, values = indptr.tolist(), [ids[i] for i in cols.tolist()], \
            co_counts.tolist()
        model._co = {ids[a]: dict(zip(col_ids[bounds[r]:bounds[r + 1]],
                                      values[bounds[r]:bounds[r + 1]], strict=True))
                     for r, a in enumerate(rows.tolist())}
        return model

    def to_bytes(self) -> bytes:
        """A checkpoint of the counts (:mod:`online_models.checkpoint`).

        >>> cw = CoWatchSimilarity()
        >>> _ = cw.learn_one(["a"], "b")
        >>> CoWatchSimilarity.from_bytes(cw.to_bytes()).most_similar("a", 1)
        [('b', 1.0)]
        """
        return dumps(type(self).__name__, STATE_VERSION, self.to_state())

    @classmethod
    def from_bytes(cls, data: bytes) -> CoWatchSimilarity:
        """Restore a checkpoint written by :meth:`to_bytes`; :class:`CheckpointError` (a
        ``ValueError``) naming what it found for anything else."""
        return restore(data, cls.__name__, {STATE_VERSION}, cls.from_state)

    def learn_one(self, history: Sequence[str], title_id: str) -> set[str]:
        """Count a watch of ``title_id`` after ``history`` (most recent first); return the
        titles whose neighbour lists changed."""
        self._count[title_id] = self._count.get(title_id, 0) + 1
        changed = {title_id}
        for h in list(dict.fromkeys(history))[: self.window]:
            if h == title_id:
                continue
            for a, b in ((h, title_id), (title_id, h)):
                nbrs = self._co.setdefault(a, {})
                nbrs[b] = nbrs.get(b, 0) + 1
                if len(nbrs) > 2 * self.max_neighbors:
                    keep = sorted(nbrs.items(), key=lambda kv: -kv[1])[: self.max_neighbors]
                    self._co[a] = dict(keep)
            changed.add(h)
        self.n_learned += 1
        return changed

    def similarity(self, a: str, b: str) -> float:
        """Cosine co-watch similarity of two titles (0 when never co-watched)."""
        c = self._co.get(a, {}).get(b, 0)
        if not c:
            return 0.0
        return c / math.sqrt(self._count.get(a, 1) * self._count.get(b, 1))

    def most_similar(self, title_id: str, k: int,
                     exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` titles most co-watched with ``title_id``, best first (ties by id),
        less those in ``exclude``."""
        ranked = self._ranked_neighbours(title_id)
        if not exclude:
            return ranked[:k]
        return list(islice((p for p in ranked if p[0] not in exclude), k))

    def _ranked_neighbours(self, title_id: str) -> list[tuple[str, float]]:
        """Every title co-watched with ``title_id`` by similarity (ties by id), cached until
        the model learns again: every page with a Because You Watched or More Like row of
        the title shares the scoring and the sort."""
        if self._ranked_for != self.n_learned:
            self._ranked, self._ranked_for = {}, self.n_learned
        got = self._ranked.get(title_id)
        if got is None:
            na = max(1, self._count.get(title_id, 0))
            got = [(b, c / math.sqrt(na * self._count.get(b, 1)))
                   for b, c in self._co.get(title_id, {}).items()]
            got.sort(key=lambda kv: (-kv[1], kv[0]))
            self._ranked[title_id] = got
        return got

    def neighbour_arrays(self, title_id: str,
                         pos: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """``title_id``'s co-watched titles as positions in ``pos`` (title id to index) and
        their cosine similarities. Cached until the model learns again or ``pos`` changes, so
        the pages rendered after one micro-batch share the work."""
        if self._arrays_for[0] != self.n_learned or self._arrays_for[1] is not pos:
            self._arrays, self._arrays_for = {}, (self.n_learned, pos)
        got = self._arrays.get(title_id)
        if got is None:
            na = max(1, self._count.get(title_id, 0))
            nb = [(pos[b], c / math.sqrt(na * self._count.get(b, 1)))
                  for b, c in self._co.get(title_id, {}).items() if b in pos]
            got = (np.fromiter((i for i, _ in nb), np.int64, len(nb)),
                   np.fromiter((v for _, v in nb), float, len(nb)))
            self._arrays[title_id] = got
        return got

    def score_history(self, history: Sequence[str], pos: Mapping[str, int],
                      size: int, decay: float = 1.0) -> np.ndarray:
        """Item-to-item scores of every title (an array of ``size`` indexed by ``pos``): the
        sum of its co-watch similarities to the titles in ``history`` (most recent first),
        the ``i``-th weighted ``decay ** i``.

        >>> cw = CoWatchSimilarity()
        >>> for history, title in [(["a"], "b"), (["a"], "c"), (["b"], "c")]:
        ...     _ = cw.learn_one(history, title)
        >>> pos = {"a": 0, "b": 1, "c": 2}
        >>> [round(float(x), 3) for x in cw.score_history(["a", "b"], pos, 3)]
        [1.0, 1.0, 1.414]
        """
        out = np.zeros(size)
        weight = 1.0
        for h in dict.fromkeys(history):
            ix, sims = self.neighbour_arrays(h, pos)
            out[ix] += weight * sims  # a title's neighbours are distinct: no repeated index
            weight *= decay
        return out


def content_similarity(a: Title, b: Title) -> float:
    """Jaccard overlap of genres, plus a little for shared cast (0..1).

    >>> import datetime as dt
    >>> from topics.models import Artwork
    >>> def t(g, c):
    ...     return Title(title_id="x", name="x", genres=g, cast=c, maturity_rating="PG",
    ...                  release_date=dt.date(2020, 1, 1), duration_s=1.0,
    ...                  artwork=[Artwork(artwork_id="a", url="u")])
    >>> content_similarity(t(["Horror", "Comedy"], ["A"]), t(["Horror"], ["A"]))
    0.6
    """
    ga, gb = set(a.genres), set(b.genres)
    genre = len(ga & gb) / len(ga | gb) if ga | gb else 0.0
    cast = 1.0 if set(a.cast) & set(b.cast) else 0.0
    return round(0.8 * genre + 0.2 * cast, 6)


def similar_titles(title: Title, candidates: Sequence[Title], cowatch: CoWatchSimilarity,
                   k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
    """Co-watch neighbours first, topped up with content neighbours, best first."""
    out = cowatch.most_similar(title.title_id, k, exclude={*exclude, title.title_id})
    if len(out) < k:
        taken = {t for t, _ in out} | {title.title_id, *exclude}
        content = [(c.title_id, content_similarity(title, c)) for c in candidates
                   if c.title_id not in taken]
        content = [kv for kv in content if kv[1] > 0]
        content.sort(key=lambda kv: (-kv[1], kv[0]))
        floor = 0.5 * out[-1][1] if out else 1.0  # content matches rank below co-watches
        out += [(t, s * floor) for t, s in content[: k - len(out)]]
    return out
