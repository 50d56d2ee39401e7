"""Baselines for the prequential page protocol, and the rating-prediction anchor. Pure.

Page baselines (numpy) rank every catalog title the member has not interacted with yet
(implicit feedback: every rating counts as a play, whatever its stars) and serve the
ranking cut into 10 rows of 5 (:func:`~.protocol.rows_from_ranking`), so their
Recall@M-by-5 is recall@5M of the ranking and 3-by-4 takes ranks 1-4, 6-9 and 11-14.
Ties are broken by popularity so far, then catalog order.

* :class:`RandomPages`: a uniformly random page of unseen titles (seeded).
* :class:`MostPopular`: titles by number of members who played them so far.
* :class:`ItemKNN`: item-to-item cosine on the binary co-occurrence matrix
  ``C = X^T X`` (``S_ij = C_ij / sqrt(C_ii C_jj)``, diagonal zeroed), updated incrementally
  per chunk; a member's score of title ``j`` is ``sum_{i in history} S_ij`` (all
  neighbours).
* :class:`EASE`: Steck's closed-form linear autoencoder, ``P = (X^T X + lambda I)^-1``,
  ``B = -P / diag(P)`` with ``diag(B) = 0``, scores ``x_u B``; an offline batch model
  *retrained once per simulated day* on everything seen so far (``lambda = 300``).

:func:`rating_prequential` reproduces River's published MovieLens-100K example (rating
prediction, predict-then-learn, one pass in timestamp order): ``BiasedMF`` with 10 factors,
``SGD(0.025)`` on biases, ``SGD(0.05)`` on latents, zero bias initialization, latents from
``Normal(0, 0.1, seed=73)``, no L2, predictions clipped to [1, 5]; ``Baseline`` with
``SGD(0.025)``; and the running mean.

>>> items = ["a", "b", "c", "d"]
>>> pop = MostPopular(items)
>>> pop.learn([Interaction("u1", "c", 5.0, 0), Interaction("u2", "c", 3.0, 0),
...            Interaction("u2", "b", 3.0, 0)])
>>> pop.ranking("u2")  # u2 already played b and c
['a', 'd']
>>> pop.page("u9", 0)[0]
['c', 'b', 'a', 'd']
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.movielens.protocol import (
    DAY_S,
    M_MAX,
    N_COLS,
    Interaction,
    InteractionLike,
    Page,
    rows_from_ranking,
)

__all__ = [
    "EASE",
    "Interaction",
    "ItemKNN",
    "MostPopular",
    "RandomPages",
    "RatingScore",
    "rating_prequential",
]

PAGE_SIZE = M_MAX * N_COLS


class _Implicit:
    """Shared state: the catalog index, each member's played titles, popularity so far."""

    name = "implicit"

    def __init__(self, item_ids: Sequence[str]) -> None:
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item ids must be unique")
        self.item_ids = list(item_ids)
        self.index = {t: i for i, t in enumerate(self.item_ids)}
        self.history: dict[str, list[int]] = {}
        self._seen: dict[str, set[int]] = {}
        self.counts = np.zeros(len(self.item_ids))
        self._order: np.ndarray | None = None

    def _absorb(self, chunk: Sequence[InteractionLike]) -> dict[str, list[int]]:
        """Record the chunk; return each member's titles new to them, in chunk order."""
        new: dict[str, list[int]] = {}
        for it in chunk:
            j = self.index.get(it.item)
            if j is None:
                continue  # not in the catalog
            seen = self._seen.setdefault(it.user, set())
            if j in seen:
                continue
            seen.add(j)
            new.setdefault(it.user, []).append(j)
        for user, js in new.items():
            self.history.setdefault(user, []).extend(js)
            self.counts[js] += 1.0
        self._order = None
        return new

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        self._absorb(chunk)

    def popularity_order(self) -> np.ndarray:
        """Item indexes by popularity so far, ties in catalog order."""
        if self._order is None:
            self._order = np.argsort(-self.counts, kind="stable")
        return self._order

    def scores(self, member: str) -> np.ndarray | None:
        """Scores of every item for ``member`` (higher is better); ``None``: popularity."""
        return None

    def ranking(self, member: str, k: int = PAGE_SIZE) -> list[str]:
        """The member's top ``k`` unseen titles."""
        seen_set = self._seen.get(member, set())
        s = self.scores(member)
        if s is None:
            order = self.popularity_order()
        else:
            # tie-break by popularity (scaled below any score gap that matters)
            top = float(self.counts.max()) or 1.0
            s = np.asarray(s, dtype=float) + 1e-9 * self.counts / top
            order = np.argsort(-s, kind="stable")
        out = []
        for j in order:
            if int(j) not in seen_set:
                out.append(self.item_ids[j])
                if len(out) >= k:
                    break
        return out

    def page(self, member: str, now_ts: int) -> Page:
        return rows_from_ranking(self.ranking(member))


class RandomPages(_Implicit):
    """A uniformly random page of titles the member has not played (seeded)."""

    name = "random"

    def __init__(self, item_ids: Sequence[str], seed: int = 7) -> None:
        super().__init__(item_ids)
        self._rng = np.random.default_rng(seed)

    def ranking(self, member: str, k: int = PAGE_SIZE) -> list[str]:
        seen = self._seen.get(member, set())
        pool = np.array([j for j in range(len(self.item_ids)) if j not in seen])
        pick = self._rng.choice(pool, size=min(k, len(pool)), replace=False)
        return [self.item_ids[j] for j in pick]


class MostPopular(_Implicit):
    """Titles by how many members played them so far (ties in catalog order)."""

    name = "most-popular"


class ItemKNN(_Implicit):
    """Item-to-item cosine over co-occurrence, updated incrementally per chunk.

    >>> knn = ItemKNN(["a", "b", "c"])
    >>> knn.learn([Interaction("u1", "a", 5, 0), Interaction("u1", "b", 5, 0),
    ...            Interaction("u2", "a", 5, 0), Interaction("u2", "b", 5, 0),
    ...            Interaction("u3", "c", 5, 0), Interaction("u4", "a", 4, 1)])
    >>> knn.neighbours("a")  # b co-occurs with a twice: 2 / sqrt(3 * 2)
    [('b', 0.8165)]
    >>> knn.ranking("u4")
    ['b', 'c']
    """

    name = "item-knn"

    def __init__(self, item_ids: Sequence[str]) -> None:
        super().__init__(item_ids)
        n = len(self.item_ids)
        self.cooc = np.zeros((n, n))
        self._sim: np.ndarray | None = None

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        before = {u: list(self.history.get(u, [])) for u in {it.user for it in chunk}}
        new = self._absorb(chunk)
        for user, js in new.items():
            old = before.get(user, [])
            nj = np.array(js)
            self.cooc[np.ix_(nj, nj)] += 1.0
            if old:
                oj = np.array(old)
                self.cooc[np.ix_(nj, oj)] += 1.0
                self.cooc[np.ix_(oj, nj)] += 1.0
        self._sim = None

    def similarity(self) -> np.ndarray:
        """The cosine matrix (diagonal zeroed), recomputed after each ``learn``."""
        if self._sim is None:
            d = np.sqrt(np.diag(self.cooc))
            norm = np.outer(d, d)
            sim = np.divide(self.cooc, norm, out=np.zeros_like(self.cooc), where=norm > 0)
            np.fill_diagonal(sim, 0.0)
            self._sim = sim
        return self._sim

    def neighbours(self, item: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most similar titles with a positive similarity."""
        row = self.similarity()[self.index[item]]
        order = np.argsort(-row, kind="stable")[:k]
        return [(self.item_ids[j], round(float(row[j]), 4)) for j in order if row[j] > 0]

    def scores(self, member: str) -> np.ndarray | None:
        hist = self.history.get(member)
        if not hist:
            return None
        return self.similarity()[hist].sum(axis=0)


class EASE(_Implicit):
    """EASE (Steck 2019), retrained from scratch once per simulated day of data.

    Parameters
    ----------
    item_ids
        The catalog.
    l2
        The ridge penalty ``lambda``.
    retrain_every_s
        Retrain when the data's clock entered a new period of this many seconds since the
        last fit (one UTC day by default); between fits the member's *history* is current but
        the weights are the last fit's.

    >>> ease = EASE(["a", "b", "c"], l2=1.0)
    >>> ease.learn([Interaction("u1", "a", 5, 0), Interaction("u1", "b", 5, 0),
    ...             Interaction("u2", "b", 5, 0), Interaction("u2", "c", 5, 0)])
    >>> np.round(ease.weights, 4).tolist()  # hand-computed in tests/unit/test_movielens.py
    [[0.0, 0.5, -0.2], [0.4, 0.0, 0.4], [-0.2, 0.5, 0.0]]
    """

    name = "ease"

    def __init__(self, item_ids: Sequence[str], l2: float = 300.0,
                 retrain_every_s: int = DAY_S) -> None:
        super().__init__(item_ids)
        if l2 <= 0:
            raise ValueError("l2 must be > 0")
        self.l2 = l2
        self.retrain_every_s = retrain_every_s
        self.gram = np.zeros((len(self.item_ids), len(self.item_ids)))
        self.weights = np.zeros_like(self.gram)
        self.fits = 0
        self._period: int | None = None

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        if not chunk:
            return
        before = {u: list(self.history.get(u, [])) for u in {it.user for it in chunk}}
        new = self._absorb(chunk)
        for user, js in new.items():  # G = X^T X, kept incrementally like ItemKNN's
            nj = np.array(js)
            self.gram[np.ix_(nj, nj)] += 1.0
            old = before.get(user, [])
            if old:
                oj = np.array(old)
                self.gram[np.ix_(nj, oj)] += 1.0
                self.gram[np.ix_(oj, nj)] += 1.0
        period = max(it.timestamp for it in chunk) // self.retrain_every_s
        if self._period is None or period > self._period:
            self.fit()
            self._period = period

    def fit(self) -> None:
        """Closed-form fit on everything seen so far."""
        g = self.gram + self.l2 * np.eye(len(self.item_ids))
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights = b
        self.fits += 1

    def scores(self, member: str) -> np.ndarray | None:
        hist = self.history.get(member)
        if not hist or not self.fits:
            return None
        return self.weights[hist].sum(axis=0)


# -- rating prediction --------------------------------------------------------------------
@dataclass(frozen=True)
class RatingScore:
    """Progressive-validation error of one rating model."""

    name: str
    mae: float
    rmse: float
    n: int
    seconds: float


def _river_models() -> dict[str, object]:
    from river import optim, reco

    return {
        "River BiasedMF": reco.BiasedMF(
            n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
            l2_bias=0.0, l2_latent=0.0),
        "River Baseline": reco.Baseline(optimizer=optim.SGD(0.025), l2=0.0,
                                        initializer=optim.initializers.Zeros()),
    }


def rating_prequential(ratings: Sequence[InteractionLike], y_min: float = 1.0,
                       y_max: float = 5.0) -> list[RatingScore]:
    """MAE and RMSE of predict-then-learn over ``ratings`` in the given (timestamp) order:
    River ``BiasedMF``, River ``Baseline`` (both clipped to ``[y_min, y_max]``, as River's
    ``PredClipper``) and the running mean (starting at 0, as River's
    ``dummy.StatisticRegressor(stats.Mean())``)."""
    out = []
    for name, model in _river_models().items():
        t0 = time.perf_counter()
        abs_err = sq_err = 0.0
        for r in ratings:
            y_hat = min(y_max, max(y_min, model.predict_one(r.user, r.item)))  # type: ignore[attr-defined]
            err = r.rating - y_hat
            abs_err += abs(err)
            sq_err += err * err
            model.learn_one(r.user, r.item, r.rating)  # type: ignore[attr-defined]
        n = max(1, len(ratings))
        out.append(RatingScore(name, abs_err / n, math.sqrt(sq_err / n), len(ratings),
                               time.perf_counter() - t0))
    t0 = time.perf_counter()
    total = abs_err = sq_err = 0.0
    for i, r in enumerate(ratings):
        y_hat = total / i if i else 0.0
        err = r.rating - y_hat
        abs_err += abs(err)
        sq_err += err * err
        total += r.rating
    n = max(1, len(ratings))
    out.append(RatingScore("running mean", abs_err / n, math.sqrt(sq_err / n), len(ratings),
                           time.perf_counter() - t0))
    return out
