"""A Bayesian linear reward model shared across titles, with a per-artwork intercept.

Expected reward of showing artwork ``a`` with shared features ``z`` (hashed context x tag
crosses): ``z . beta + theta_a``. ``beta`` is shared by all titles; ``theta_a`` is the image's
own appeal. With Gaussian priors (precision ``l2`` on ``beta``, ``intercept_l2`` on each
``theta_a``) and squared loss, this is the *hybrid* model of LinUCB (Li et al. 2010,
algorithm 2) with per-arm features ``x_a = [1]``. The per-arm blocks are marginalized out as in
that algorithm, so the shared precision matrix ``A0`` (the Schur complement) is the only
square matrix; each artwork keeps ``A_a = intercept_l2 + n_a``, ``B_a = sum of its z`` (sparse)
and ``b_a = sum of its rewards``. Writing ``w_a = z - B_a / A_a``:

- posterior mean of the expected reward: ``w_a . beta_hat + b_a / A_a``
- posterior covariance of two candidates' expected rewards (in units of the reward noise
  variance): ``w_a' A0^-1 w_b + [a == b] / A_a``

so a cold image (``A_a = intercept_l2``, ``B_a = 0``) gets the shared prediction
``z . beta_hat`` and the shared uncertainty plus ``1 / intercept_l2``. This equals a joint ridge
regression over ``[z, one-hot(artwork)]`` exactly, without a matrix that grows with the
number of artworks. River's ``bandit.LinUCBDisjoint`` keeps one ``BayesianLinearRegression``
per arm, which cannot carry anything from one title's images to the next, hence this model.

``A0`` itself is what learning updates: every term is a sum, so a batch of rewards adds
``Z'Z`` and, per artwork it touched, its marginalization before the batch minus the one after
(O(k^2) for the ``k`` buckets the batch touches, in a few array operations however many
rewards); ``A0^-1`` is computed when asked (a posterior, a checkpoint) and kept until the
next learning, or updated with Sherman-Morrison when one reward is learned between two
questions (a replay that chooses and learns in turn). Features enter lazily: a hashed
bucket gets a row the first time a reward is learned with it (an unseen bucket has prior
variance ``1 / l2`` and no correlation), so memory is ``8 d^2`` bytes for the ``d``
distinct crosses actually seen (at most the featurizer's ``n_dims``; twice that while both
``A0`` and its inverse are kept), plus a small record per artwork ever shown (never evicted).

>>> m = HybridRidge(l2=1.0)
>>> for _ in range(50):
...     m.learn_one({1: 1.0, 2: 1.0}, "t1-comedy-art", 1.0)
...     m.learn_one({1: 1.0, 3: 1.0}, "t1-romance-art", 0.0)
>>> mean, cov = m.posterior([{1: 1.0, 2: 1.0}, {1: 1.0, 3: 1.0}], ["t2-a", "t2-b"])
>>> [round(float(v), 2) for v in mean]   # a new title's images, by their shared features
[0.62, 0.13]
>>> bool(cov[0, 0] > 1.0)                 # their own intercepts are still unknown
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online_models.checkpoint import CheckpointError, require, require_array, require_strings

__all__ = ["HybridRidge"]

#: An image's learned terms: ``-B_a / A_a`` as (rows, values), its intercept's posterior mean
#: and variance.
_ArmTerms = tuple[np.ndarray, np.ndarray, float, float]
#: The terms kept for an image that never learned (empty: false).
_NOT_LEARNED: _ArmTerms | tuple[()] = ()
#: Questions (:meth:`HybridRidge.posterior_marginals`) without learning in between after
#: which every image's terms are gathered into one :class:`_ArmIndex`.
_INDEX_AFTER = 4


@dataclass(frozen=True)
class _ArmIndex:
    """Every learned image's terms as flat arrays (image ``j``'s buckets and values at
    ``indptr[j]:indptr[j + 1]``): a page's ~100 images are gathered with a few array
    operations instead of one Python step each."""

    position: dict[str, int]
    indptr: np.ndarray
    rows: np.ndarray
    vals: np.ndarray
    mean: np.ndarray
    var: np.ndarray

    @classmethod
    def of(cls, terms: Mapping[str, _ArmTerms]) -> _ArmIndex:
        """The index of ``terms`` (artwork id -> its learned terms)."""
        ids, parts = list(terms), list(terms.values())
        indptr = np.zeros(len(parts) + 1, np.intp)
        np.cumsum([len(t[0]) for t in parts], out=indptr[1:])
        return cls({a: j for j, a in enumerate(ids)}, indptr,
                   np.concatenate([np.zeros(0, np.intp), *(t[0] for t in parts)]),
                   np.concatenate([np.zeros(0), *(t[1] for t in parts)]),
                   np.fromiter((t[2] for t in parts), float, len(parts)),
                   np.fromiter((t[3] for t in parts), float, len(parts)))

    def gather(self, artwork_ids: Sequence[str]) -> _Gathered:
        """The learned images among ``artwork_ids``: their positions, each bucket's image
        position, buckets and values (image by image, in order), intercept means and
        variances."""
        at = self.position.get
        idx = np.fromiter([at(a, -1) for a in artwork_ids], np.intp, len(artwork_ids))
        arm_at = np.flatnonzero(idx >= 0)
        j = idx[arm_at]
        starts = self.indptr[j]
        lengths = self.indptr[j + 1] - starts
        offsets = np.arange(int(lengths.sum())) + np.repeat(
            starts - np.cumsum(lengths) + lengths, lengths)
        return (arm_at, np.repeat(arm_at, lengths), self.rows[offsets], self.vals[offsets],
                self.mean[j], self.var[j])


#: What :meth:`_ArmIndex.gather` returns.
_Gathered = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class _ArmStats:
    precision: float                                   # A_a = intercept_l2 + n rewards
    feature_sum: dict[int, float] = field(default_factory=dict)   # B_a, by hashed bucket
    reward_sum: float = 0.0                            # b_a


class HybridRidge:
    """Online Bayesian ridge regression: shared sparse features plus per-artwork intercepts.

    Parameters
    ----------
    l2
        Prior precision of every shared weight (ridge penalty).
    intercept_l2
        Prior precision of every artwork's intercept (default ``l2``). Larger says "images
        differ little beyond their tags": a cold image is then explored less for its own
        sake (prior standard deviation ``sqrt(1 / intercept_l2)`` noise units).
    """

    def __init__(self, l2: float = 1.0, intercept_l2: float | None = None) -> None:
        if l2 <= 0 or (intercept_l2 is not None and intercept_l2 <= 0):
            raise ValueError("l2 and intercept_l2 must be positive")
        self.l2 = l2
        self.intercept_l2 = intercept_l2
        self._arm_prior = l2 if intercept_l2 is None else intercept_l2
        self._rows: dict[int, int] = {}         # hashed bucket -> row of the arrays
        #: A0 (capacity >= len(_rows)); ``None`` until first needed after a checkpoint
        self._prec: np.ndarray | None = np.zeros((0, 0))
        self._b0 = np.zeros(0)                  # shared right-hand side (capacity as A0)
        self._cov: np.ndarray | None = None     # A0^-1 (n x n), kept until it learns
        self._arms: dict[str, _ArmStats] = {}
        self._beta: np.ndarray | None = None    # cached A0^-1 b0
        #: Per artwork, ``-B_a / A_a`` as (rows, values) arrays until it learns again.
        self._arm_terms: dict[str, _ArmTerms | tuple[()]] = {}
        #: Every learned image's terms at once, once the model is asked more than it learns.
        self._index: _ArmIndex | None = None
        self._asked = 0                         # questions since it last learned

    # -- internals ------------------------------------------------------------------------
    def _precision(self) -> np.ndarray:
        """``A0`` with room to grow (from ``A0^-1`` when restored from a checkpoint)."""
        if self._prec is None:
            n = len(self._rows)
            self._prec = _symmetric(np.linalg.inv(self._covariance())) if n else np.zeros((0, 0))
            self._b0 = self._b0[:n].copy()
        return self._prec

    def _grow(self, keys: Iterable[int]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._rows]
        if not new:
            return
        prec = self._precision()
        n = len(self._rows)
        need = n + len(new)
        if need > prec.shape[0]:
            cap = max(16, 2 * prec.shape[0], need)
            grown = np.zeros((cap, cap))
            grown[:n, :n] = prec[:n, :n]
            b0 = np.zeros(cap)
            b0[:n] = self._b0[:n]
            self._prec, self._b0, prec = grown, b0, grown
        for k in new:
            row = len(self._rows)
            self._rows[k] = row
            prec[row, :] = 0.0
            prec[:, row] = 0.0
            prec[row, row] = self.l2  # an unseen bucket: its prior only
            self._b0[row] = 0.0

    def _dense(self, x: Mapping[int, float], scale: float = 1.0) -> np.ndarray:
        v = np.zeros(len(self._rows))
        for k, value in x.items():
            v[self._rows[k]] += value * scale
        return v

    def _covariance(self) -> np.ndarray:
        """``A0^-1`` over the learned buckets (computed once after each learning)."""
        if self._cov is None:
            n = len(self._rows)
            prec = self._prec
            assert prec is not None
            self._cov = _symmetric(np.linalg.inv(prec[:n, :n])) if n else np.zeros((0, 0))
        return self._cov

    def _shared_mean(self) -> np.ndarray:
        if self._beta is None:
            n = len(self._rows)
            self._beta = self._covariance() @ self._b0[:n]
        return self._beta

    # -- public ---------------------------------------------------------------------------
    def learn_one(self, z: Mapping[int, float], artwork_id: str, reward: float) -> None:
        """Learn one reward of ``artwork_id`` shown with shared features ``z``.

        When ``A0^-1`` is at hand (asked since the last learning: a replay that chooses and
        learns in turn), it is updated with Sherman-Morrison, three rank-one updates in
        O(d^2) (undo the image's old marginalization, add ``z z'``, redo it), and ``A0`` is
        rebuilt from it only if a batch follows; otherwise this is a batch of one."""
        if self._cov is None:
            self.learn_many([z], [artwork_id], [reward])
            return
        self._grow_inverse(z)
        self._prec = None  # rebuilt from the inverse when a batch needs it
        self._arm_terms.pop(artwork_id, None)
        self._index, self._asked, self._beta = None, 0, None
        stats = self._arms.get(artwork_id)
        if stats is None:
            stats = self._arms[artwork_id] = _ArmStats(precision=self._arm_prior)
        cov, b0 = self._cov, self._b0[:len(self._rows)]
        if stats.feature_sum:  # undo the old marginalization: A0 += B B' / A
            _rank_one(cov, self._dense(stats.feature_sum, 1.0 / np.sqrt(stats.precision)), +1.0)
            b0 += self._dense(stats.feature_sum, stats.reward_sum / stats.precision)
        zd = self._dense(z)
        _rank_one(cov, zd, +1.0)
        b0 += reward * zd
        stats.precision += 1.0
        for k, value in z.items():
            stats.feature_sum[k] = stats.feature_sum.get(k, 0.0) + value
        stats.reward_sum += reward
        _rank_one(cov, self._dense(stats.feature_sum, 1.0 / np.sqrt(stats.precision)), -1.0)
        b0 -= self._dense(stats.feature_sum, stats.reward_sum / stats.precision)

    def _grow_inverse(self, keys: Iterable[int]) -> None:
        """Rows for new buckets in ``A0^-1`` (their prior variance, no correlation) and
        ``b0``."""
        new = [k for k in keys if k not in self._rows]
        if not new:
            return
        assert self._cov is not None
        n, m = len(self._rows), len(new)
        for k in new:
            self._rows[k] = len(self._rows)
        cov = np.zeros((n + m, n + m))
        cov[:n, :n] = self._cov
        cov[n:, n:] = np.eye(m) / self.l2
        b0 = np.zeros(n + m)
        b0[:n] = self._b0[:n]
        self._cov, self._b0 = cov, b0

    def learn_many(self, zs: Sequence[Mapping[int, float]], artwork_ids: Sequence[str],
                   rewards: Sequence[float]) -> None:
        """Learn several rewards at once: the same model as :meth:`learn_one` on each in
        turn (up to rounding), for the cost of a few array operations.

        >>> one, many = HybridRidge(l2=1.0), HybridRidge(l2=1.0)
        >>> data = [({1: 1.0, 2: 1.0}, "a", 1.0), ({1: 1.0, 3: 1.0}, "b", 0.0),
        ...         ({2: 1.0}, "a", 0.0)]
        >>> for z, a, r in data:
        ...     one.learn_one(z, a, r)
        >>> many.learn_many(*zip(*data))
        >>> bool(np.allclose(one.posterior([{2: 1.0}], ["a"])[0],
        ...                  many.posterior([{2: 1.0}], ["a"])[0]))
        True
        """
        if not zs:
            return
        self._grow(k for z in zs for k in z)
        prec = self._precision()
        before = {a: _ArmStats(s.precision, dict(s.feature_sum), s.reward_sum)
                  for a in dict.fromkeys(artwork_ids) if (s := self._arms.get(a)) is not None}
        for z, artwork_id, reward in zip(zs, artwork_ids, rewards, strict=True):
            stats = self._arms.get(artwork_id)
            if stats is None:
                stats = self._arms[artwork_id] = _ArmStats(precision=self._arm_prior)
            stats.precision += 1.0
            feature_sum = stats.feature_sum
            for k, value in z.items():
                feature_sum[k] = feature_sum.get(k, 0.0) + value
            stats.reward_sum += reward
        touched = list(dict.fromkeys(artwork_ids))
        # the buckets touched: every touched artwork's (they include the rewards' own)
        cols = np.fromiter(dict.fromkeys(self._rows[k] for a in touched
                                         for k in self._arms[a].feature_sum), np.intp)
        at = {row: j for j, row in enumerate(cols.tolist())}
        z_mat = _rows_matrix([(z, 1.0) for z in zs], self._rows, at, len(cols))
        r = np.asarray(rewards, dtype=float)
        old = [before[a] for a in touched if a in before and before[a].feature_sum]
        new = [self._arms[a] for a in touched]
        # A0 += Z'Z + (each artwork's B B' / A before) - (after); b0 the same way
        f_old = _rows_matrix([(s.feature_sum, 1.0 / np.sqrt(s.precision)) for s in old],
                             self._rows, at, len(cols))
        f_new = _rows_matrix([(s.feature_sum, 1.0 / np.sqrt(s.precision)) for s in new],
                             self._rows, at, len(cols))
        grid = np.ix_(cols, cols)
        prec[grid] += z_mat.T @ z_mat + f_old.T @ f_old - f_new.T @ f_new
        self._b0[cols] += (z_mat.T @ r
                           + f_old.T @ np.array([s.reward_sum / np.sqrt(s.precision) for s in old])
                           - f_new.T @ np.array([s.reward_sum / np.sqrt(s.precision) for s in new]))
        for a in touched:
            self._arm_terms.pop(a, None)
        self._index, self._asked = None, 0
        self._cov = self._beta = None

    def _design(self, zs: Sequence[Mapping[int, float]], artwork_ids: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray, list[dict[int, float]], np.ndarray,
                           np.ndarray]:
        """``w_a = z_a - B_a / A_a`` of every candidate: its part on learned buckets as a
        dense ``(K, known)`` matrix with those buckets' rows, its part on buckets never
        learned (prior only; ``B_a`` never has any) as dicts, and the intercepts' posterior
        means and variances."""
        k = len(zs)
        intercept_mean = np.zeros(k)
        intercept_var = np.zeros(k)
        known_ws: list[dict[int, float]] = []
        unseen_ws: list[dict[int, float]] = []
        rows = self._rows
        for i, (z, artwork_id) in enumerate(zip(zs, artwork_ids, strict=True)):
            known = {key: v for key, v in z.items() if key in rows}
            unseen_ws.append({key: v for key, v in z.items() if key not in rows}
                             if len(known) < len(z) else {})
            stats = self._arms.get(artwork_id)
            precision = self._arm_prior if stats is None else stats.precision
            if stats is not None:
                for key, value in stats.feature_sum.items():
                    known[key] = known.get(key, 0.0) - value / precision
                intercept_mean[i] = stats.reward_sum / precision
            intercept_var[i] = 1.0 / precision
            known_ws.append(known)
        cols = sorted({key for w in known_ws for key in w})
        col = {key: j for j, key in enumerate(cols)}
        wk = np.zeros((k, len(cols)))
        for i, w in enumerate(known_ws):
            for key, value in w.items():
                wk[i, col[key]] = value
        return (wk, np.array([rows[key] for key in cols], dtype=int), unseen_ws,
                intercept_mean, intercept_var)

    def posterior(self, zs: Sequence[Mapping[int, float]],
                  artwork_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Joint Gaussian posterior of the candidates' expected rewards.

        Returns the mean vector ``(K,)`` and covariance ``(K, K)``; the covariance is in
        units of the reward noise variance (multiply by ``sigma^2``).
        """
        wk, rows, unseen_ws, intercept_mean, intercept_var = self._design(zs, artwork_ids)
        unseen = sorted({key for w in unseen_ws for key in w})
        col = {key: j for j, key in enumerate(unseen)}
        wu = np.zeros((len(zs), len(unseen)))
        for i, w in enumerate(unseen_ws):
            for key, value in w.items():
                wu[i, col[key]] = value
        beta = self._shared_mean()[rows] if len(rows) else np.zeros(0)
        sub = self._covariance()[np.ix_(rows, rows)] if len(rows) else np.zeros((0, 0))
        mean = wk @ beta + intercept_mean
        cov = wk @ sub @ wk.T + (wu @ wu.T) / self.l2 + np.diag(intercept_var)
        return mean, (cov + cov.T) / 2.0

    def posterior_marginals(self, zs: Sequence[Mapping[int, float]],
                            artwork_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the variance of each candidate's expected reward: the diagonal of
        :meth:`posterior` without the ``K x K`` covariance (what an upper confidence bound
        needs; ``O(K d^2)`` for the ``d`` learned buckets the candidates touch). Candidates
        given the same feature dict (:meth:`Featurizer.many
        <online_models.bandits.features.Featurizer.many>` shares one between images with the
        same tags) are featurized once, and each image's ``B_a / A_a`` is kept as arrays
        until it learns again: a page's ~100 candidates in a few array operations.

        >>> m = HybridRidge(l2=1.0)
        >>> m.learn_one({1: 1.0, 2: 1.0}, "a", 1.0)
        >>> z = {1: 1.0, 9: 2.0}
        >>> zs, ids = [{1: 1.0, 2: 1.0}, z, z], ["a", "b", "a"]
        >>> mean, var = m.posterior_marginals(zs, ids)
        >>> full_mean, cov = m.posterior(zs, ids)
        >>> bool(np.allclose(mean, full_mean) and np.allclose(var, np.diag(cov)))
        True
        """
        k = len(zs)
        group, z_rows, z_vals, unseen_sq = self._distinct_rows(zs)
        arm_at, at, arm_rows, arm_vals, arm_mean, arm_var = self._gather(artwork_ids)
        cols = np.unique(np.concatenate([np.zeros(0, np.intp), *z_rows, arm_rows]))
        base = np.zeros((len(z_rows), len(cols)))
        for g, (rows, vals) in enumerate(zip(z_rows, z_vals, strict=True)):
            base[g, np.searchsorted(cols, rows)] = vals
        w = base[group]
        # one value per (image, bucket): an image's buckets are distinct and each image has
        # a row of its own, so this adds as np.add.at would, value by value
        w[at, np.searchsorted(cols, arm_rows)] += arm_vals
        intercept_mean = np.zeros(k)
        intercept_var = np.full(k, 1.0 / self._arm_prior)
        intercept_mean[arm_at] = arm_mean
        intercept_var[arm_at] = arm_var
        beta = self._shared_mean()[cols]
        sub = self._covariance()[np.ix_(cols, cols)]
        var = np.einsum("ij,ij->i", w @ sub, w) + unseen_sq[group] / self.l2 + intercept_var
        return w @ beta + intercept_mean, var

    def _gather(self, artwork_ids: Sequence[str]) -> _Gathered:
        """:meth:`_ArmIndex.gather` of ``artwork_ids``: from the index once the model is
        asked more than it learns, else image by image (the same arrays)."""
        self._asked += 1
        if self._index is None and self._asked >= _INDEX_AFTER:
            self._index = _ArmIndex.of({a: t for a in self._arms if (t := self._learned_terms(a))})
        if self._index is not None:
            return self._index.gather(artwork_ids)
        arm_at: list[int] = []
        terms: list[_ArmTerms] = []
        terms_of, learned = self._arm_terms.get, self._learned_terms
        for i, artwork_id in enumerate(artwork_ids):
            t = terms_of(artwork_id)
            if t is None:
                t = learned(artwork_id)
            if t:  # else it never learned
                arm_at.append(i)
                terms.append(t)
        return (np.asarray(arm_at, np.intp),
                np.repeat(np.asarray(arm_at, np.intp), [len(t[0]) for t in terms]),
                np.concatenate([np.zeros(0, np.intp), *(t[0] for t in terms)]),
                np.concatenate([np.zeros(0), *(t[1] for t in terms)]),
                np.fromiter((t[2] for t in terms), float, len(terms)),
                np.fromiter((t[3] for t in terms), float, len(terms)))

    def _learned_terms(self, artwork_id: str) -> _ArmTerms | tuple[()]:
        """An image's ``-B_a / A_a`` as (rows, values) and its intercept's posterior mean and
        variance, kept until it learns again (:data:`_NOT_LEARNED` for an image that never
        learned)."""
        stats = self._arms.get(artwork_id)
        if stats is None:
            terms = _NOT_LEARNED
        else:
            n = len(stats.feature_sum)
            terms = (np.fromiter((self._rows[key] for key in stats.feature_sum), np.intp, n),
                     -np.fromiter(stats.feature_sum.values(), float, n) / stats.precision,
                     stats.reward_sum / stats.precision, 1.0 / stats.precision)
        self._arm_terms[artwork_id] = terms
        return terms

    def _distinct_rows(self, zs: Sequence[Mapping[int, float]]
                       ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Each candidate's index among the distinct feature dicts of ``zs`` (by identity),
        and per distinct dict its learned buckets' rows and values and the squared norm of
        its never-learned part."""
        rows = self._rows
        ids = list(map(id, zs))
        seen: dict[int, int] = {}
        group = np.fromiter([seen.setdefault(i, len(seen)) for i in ids], np.intp, len(ids))
        distinct = dict(zip(ids, zs, strict=True))  # in order of first appearance
        z_rows: list[np.ndarray] = []
        z_vals: list[np.ndarray] = []
        unseen_sq: list[float] = []
        for z in distinct.values():
            known = [(rows[key], v) for key, v in z.items() if key in rows]
            z_rows.append(np.fromiter((r for r, _ in known), np.intp, len(known)))
            z_vals.append(np.fromiter((v for _, v in known), float, len(known)))
            unseen_sq.append(sum(v * v for key, v in z.items() if key not in rows))
        return group, z_rows, z_vals, np.asarray(unseen_sq, dtype=float)

    # -- checkpoints ----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The learned state as JSON values and arrays: the hashed buckets in row order, the
        ``n x n`` inverse precision ``A0^-1`` and right-hand side ``b0``, and per artwork (in
        the order first shown) its precision, reward sum and sparse feature sum (buckets
        ``arm_keys[arm_indptr[j]:arm_indptr[j+1]]`` with ``arm_values``)."""
        n = len(self._rows)
        stats = list(self._arms.values())
        sizes = [len(s.feature_sum) for s in stats]
        return {
            "l2": self.l2, "intercept_l2": self.intercept_l2,
            "buckets": np.fromiter(self._rows, np.int64, n),
            "cov": self._covariance().copy(), "b0": self._b0[:n].copy(),
            "arm_ids": list(self._arms),
            "arm_precision": np.fromiter((s.precision for s in stats), float, len(stats)),
            "arm_reward_sum": np.fromiter((s.reward_sum for s in stats), float, len(stats)),
            "arm_indptr": np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]),
            "arm_keys": np.fromiter((k for s in stats for k in s.feature_sum), np.int64,
                                    sum(sizes)),
            "arm_values": np.fromiter((v for s in stats for v in s.feature_sum.values()),
                                      float, sum(sizes)),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> HybridRidge:
        """The model :meth:`to_state` described; :class:`CheckpointError` when an array is
        missing or does not fit the others."""
        name = cls.__name__
        intercept_l2 = state.get("intercept_l2")
        model = cls(l2=require(state, name, "l2", float),
                    intercept_l2=None if intercept_l2 is None
                    else require(state, name, "intercept_l2", float))
        buckets = require_array(state, name, "buckets", (None,), "i")
        n = len(buckets)
        model._cov = require_array(state, name, "cov", (n, n)).copy()
        model._prec = None  # A0 from A0^-1 if it learns again
        model._b0 = require_array(state, name, "b0", (n,)).copy()
        model._rows = {int(k): i for i, k in enumerate(buckets.tolist())}
        if len(model._rows) != n:
            raise CheckpointError(f"{name} checkpoint repeats a bucket")
        ids = require_strings(state, name, "arm_ids")
        m = len(ids)
        precision = require_array(state, name, "arm_precision", (m,)).tolist()
        rewards = require_array(state, name, "arm_reward_sum", (m,)).tolist()
        indptr = require_array(state, name, "arm_indptr", (m + 1,), "i")
        keys = require_array(state, name, "arm_keys", (None,), "i")
        values = require_array(state, name, "arm_values", (len(keys),))
        if indptr[0] != 0 or indptr[-1] != len(keys) or (np.diff(indptr) < 0).any():
            raise CheckpointError(f"{name} checkpoint arm_indptr does not split arm_keys")
        if not set(keys.tolist()) <= set(model._rows):
            raise CheckpointError(f"{name} checkpoint arm_keys name a bucket without a row")
        bounds, key_list, value_list = indptr.tolist(), keys.tolist(), values.tolist()
        model._arms = {
            artwork_id: _ArmStats(precision[j], dict(zip(key_list[bounds[j]:bounds[j + 1]],
                                                         value_list[bounds[j]:bounds[j + 1]],
                                                         strict=True)), rewards[j])
            for j, artwork_id in enumerate(ids)}
        return model


def _symmetric(m: np.ndarray) -> np.ndarray:
    """``m`` made exactly symmetric (an inverse is, up to rounding)."""
    return (m + m.T) / 2.0


def _rows_matrix(rows: Sequence[tuple[Mapping[int, float], float]], row_of: Mapping[int, int],
                 col_of: Mapping[int, int], width: int) -> np.ndarray:
    """A dense ``(len(rows), width)`` matrix of sparse vectors times their scales: the value
    of bucket ``k`` at column ``col_of[row_of[k]]``."""
    out = np.zeros((len(rows), width))
    for i, (vec, scale) in enumerate(rows):
        for k, value in vec.items():
            out[i, col_of[row_of[k]]] = value * scale
    return out


def _rank_one(cov: np.ndarray, v: np.ndarray, sign: float) -> None:
    """``A0 += sign v v'``: update ``cov = A0^-1`` in place by Sherman-Morrison."""
    u = cov @ v
    denom = 1.0 + sign * float(v @ u)
    if denom <= 1e-12:
        raise FloatingPointError("precision update would lose positive definiteness")
    cov -= (sign / denom) * np.outer(u, u)
