"""Policies and click models for the OBD evaluations: obp's Bernoulli Thompson sampling
(slates from its prior) and the contextual CTR models trained on the logs. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from evaluation.obd.data import ObdLogs
from evaluation.published import OBD_BTS_N_SIM, OBD_BTS_SEED


def bts_rankings(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    len_list: int = 3,
    n_sim: int = OBD_BTS_N_SIM,
    seed: int = OBD_BTS_SEED,
    chunk_size: int = 10_000,
) -> np.ndarray:
    """The slates Bernoulli Thompson sampling shows in ``n_sim`` simulated rounds.

    Replicates obp 0.5.10's ``BernoulliTS.select_action`` called ``n_sim`` times without
    updates: draw ``theta ~ Beta(alpha, beta)`` per item from
    ``numpy.random.RandomState(seed)`` (what ``random_state=seed`` gives in obp) and take
    ``theta.argsort()[::-1][:len_list]``. Drawing ``(chunk, K)`` at a time consumes the
    generator in the same order as ``K`` draws per call, so the slates are identical to
    obp's for the same seed, just faster.

    Parameters
    ----------
    alpha, beta : ndarray, shape (K,)
        Beta parameters per item.
    len_list : int, default 3
        Slots per slate.
    n_sim : int, default 100000
        Simulated rounds.
    seed : int, default 12345
        Seed (obp quickstart's ``random_state``).
    chunk_size : int, default 10000
        Rows drawn at once (memory only; results do not depend on it).

    Returns
    -------
    ndarray of int, shape (n_sim, len_list)
        Item in each slot of each simulated slate.

    Examples
    --------
    >>> r = bts_rankings(np.array([1.0, 50.0, 1.0]), np.array([50.0, 1.0, 1.0]),
    ...                  len_list=2, n_sim=4, seed=0)
    >>> r[:, 0].tolist()  # item 1 (mean 50/51) always first
    [1, 1, 1, 1]
    """
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    k = len(alpha)
    if not 1 <= len_list <= k:
        raise ValueError(f"len_list must be in [1, {k}], got {len_list}")
    if n_sim < 1:
        raise ValueError(f"n_sim must be positive, got {n_sim}")
    rng = np.random.RandomState(seed)
    out = np.empty((n_sim, len_list), dtype=np.int64)
    for start in range(0, n_sim, chunk_size):
        m = min(chunk_size, n_sim - start)
        theta = rng.beta(alpha, beta, size=(m, k))
        out[start : start + m] = np.argsort(theta, axis=1)[:, ::-1][:, :len_list]
    return out


def action_dist_from_rankings(rankings: np.ndarray, n_actions: int) -> np.ndarray:
    """``dist[a, l]`` = fraction of slates with item ``a`` in slot ``l``, shape ``(K, L)``.

    obp's ``compute_batch_action_dist(n_rounds, n_sim)`` returns this tiled to
    ``(n_rounds, K, L)``; the rounds are identical, so we keep one copy.

    Examples
    --------
    >>> action_dist_from_rankings(np.array([[0, 1], [1, 0]]), 3).tolist()
    [[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]]
    """
    n_sim, len_list = rankings.shape
    dist = np.zeros((n_actions, len_list))
    for slot in range(len_list):
        dist[:, slot] = np.bincount(rankings[:, slot], minlength=n_actions)
    return dist / n_sim


def bts_action_dist(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    len_list: int = 3,
    n_sim: int = OBD_BTS_N_SIM,
    seed: int = OBD_BTS_SEED,
) -> np.ndarray:
    """obp's ``BernoulliTS(...).compute_batch_action_dist(1, n_sim)[0]``, shape ``(K, L)``.

    Examples
    --------
    >>> d = bts_action_dist(np.ones(4), np.ones(4), len_list=2, n_sim=1000, seed=1)
    >>> d.shape, d.sum(axis=0).tolist()
    ((4, 2), [1.0, 1.0])
    """
    rankings = bts_rankings(alpha, beta, len_list=len_list, n_sim=n_sim, seed=seed)
    return action_dist_from_rankings(rankings, len(alpha))


@dataclass(frozen=True, eq=False)
class SegmentCtrModel:
    """Click-rate model: per-item CTR refined by each user feature's segment, shrunk.

    ``item_ctr[a] = (clicks_a + m * global) / (imps_a + m)`` and, for user feature ``k``
    with value ``v``, ``seg[k][v][a] = (clicks_{k,v,a} + m * item_ctr[a]) / (imps + m)``
    (``m = prior_strength`` pseudo-impressions). The prediction for a user is the mean over
    their ``F`` features of ``seg[k][x_k]`` (an unseen value falls back to ``item_ctr``);
    with no features it is ``item_ctr`` (a context-free greedy policy). Fit on uniform-random
    logs, where raw click rates are unbiased; slots are ignored.

    Examples
    --------
    >>> users = np.array([["m"], ["m"], ["w"], ["w"]])
    >>> model = SegmentCtrModel.fit(users, np.array([0, 1, 0, 1]), np.array([1.0, 0, 0, 1]),
    ...                             n_actions=2, prior_strength=1.0)
    >>> model.rank(np.array([["m"], ["w"]]), 1).ravel().tolist()
    [0, 1]
    """

    global_ctr: float
    item_ctr: np.ndarray
    segment_ctr: tuple[dict[str, np.ndarray], ...]
    prior_strength: float

    @classmethod
    def fit(
        cls,
        user_features: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        n_actions: int,
        prior_strength: float = 100.0,
    ) -> SegmentCtrModel:
        """Count clicks and impressions; ``user_features`` may have zero columns."""
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be positive, got {prior_strength}")
        m = prior_strength
        global_ctr = float(reward.mean())
        imps = np.bincount(action, minlength=n_actions).astype(float)
        clicks = np.bincount(action, weights=reward, minlength=n_actions)
        item_ctr = (clicks + m * global_ctr) / (imps + m)
        segments = []
        for k in range(user_features.shape[1]):
            per_value = {}
            for value in np.unique(user_features[:, k]):
                rows = user_features[:, k] == value
                v_imps = np.bincount(action[rows], minlength=n_actions)
                v_clicks = np.bincount(action[rows], weights=reward[rows], minlength=n_actions)
                per_value[str(value)] = (v_clicks + m * item_ctr) / (v_imps + m)
            segments.append(per_value)
        return cls(global_ctr, item_ctr, tuple(segments), m)

    def predict(self, user_features: np.ndarray) -> np.ndarray:
        """Predicted click rate per item, shape ``(n, K)``."""
        n = len(user_features)
        if not self.segment_ctr:
            return np.tile(self.item_ctr, (n, 1))
        total = np.zeros((n, len(self.item_ctr)))
        for k, per_value in enumerate(self.segment_ctr):
            for i, value in enumerate(user_features[:, k]):
                total[i] += per_value.get(str(value), self.item_ctr)
        return total / len(self.segment_ctr)

    def rank(self, user_features: np.ndarray, len_list: int) -> np.ndarray:
        """Top ``len_list`` items per user by predicted CTR (ties: lower item id first)."""
        scores = self.predict(user_features)
        return np.argsort(-scores, axis=1, kind="stable")[:, :len_list]


@dataclass(frozen=True, eq=False)
class RidgeLogisticCtr:
    """L2-regularized logistic click model over (user, item, slot) features.

    ``logit P(click | x, a, l) = b + w_item[a] + w_f * f_a + w_slot[l] + u . x + (v . x) f_a``
    with ``x`` the one-hot user features (:attr:`ObdLogs.context`), ``f_a`` the item's numeric
    feature (standardized) and ``l`` the slot. ``u`` only calibrates (it is the same for every
    item of a round); ``w_item`` (per-item click rate), ``w_f`` and the user x item-feature
    interaction ``v`` rank items, the last per user (the contextual part). Every weight but
    ``b`` has a Gaussian prior of precision ``l2``; fit by Newton's method on the logged
    (item, slot) of uniform-random rounds, whose click rates are unbiased.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n, k = 4000, 4
    >>> x = rng.integers(0, 2, size=(n, 1)).astype(float)
    >>> a, slot = rng.integers(0, k, n), np.zeros(n, dtype=int)
    >>> p = np.where(a == 2, 0.3, 0.05)
    >>> r = (rng.random(n) < p).astype(float)
    >>> m = RidgeLogisticCtr.fit(x, a, slot, r, np.zeros(k), n_slots=1, l2=1.0)
    >>> probs = m.predict(x[:1], slot[:1])[0]
    >>> int(np.argmax(probs)), bool(0.2 < probs[2] < 0.4)
    (2, True)
    """

    weights: np.ndarray
    n_actions: int
    n_slots: int
    n_context: int
    item_feature: np.ndarray
    l2: float

    @staticmethod
    def _design(context: np.ndarray, action: np.ndarray, slot: np.ndarray,
                item_feature: np.ndarray, n_actions: int, n_slots: int) -> np.ndarray:
        n = len(action)
        f = item_feature[action][:, None]
        return np.hstack([
            np.ones((n, 1)), np.eye(n_actions)[action], f, np.eye(n_slots)[slot][:, 1:],
            context, context * f])

    @classmethod
    def fit(cls, context: np.ndarray, action: np.ndarray, slot: np.ndarray,
            reward: np.ndarray, item_feature: np.ndarray, *, n_slots: int,
            l2: float = 1.0, iterations: int = 50) -> RidgeLogisticCtr:
        """Maximum a posteriori weights (Newton's method; converges in a few steps)."""
        if l2 <= 0:
            raise ValueError(f"l2 must be positive, got {l2}")
        sd = float(item_feature.std()) or 1.0
        feat = (item_feature - item_feature.mean()) / sd
        k = len(item_feature)
        xd = cls._design(context, action, slot, feat, k, n_slots)
        penalty = np.full(xd.shape[1], l2)
        penalty[0] = 1e-6
        w = np.zeros(xd.shape[1])
        rate = float(np.clip(reward.mean(), 1e-4, 1 - 1e-4))
        w[0] = np.log(rate / (1 - rate))
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(xd @ w, -30.0, 30.0)))
            grad = xd.T @ (p - reward) + penalty * w
            hess = (xd * (p * (1 - p))[:, None]).T @ xd + np.diag(penalty)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        return cls(w, k, n_slots, context.shape[1], feat, l2)

    def logits(self, context: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Log-odds of a click for every item in each round's slot, shape ``(n, K)``."""
        k, c = self.n_actions, self.n_context
        w = self.weights
        b, w_item, w_f = w[0], w[1:1 + k], w[1 + k]
        w_slot = np.concatenate([[0.0], w[2 + k:1 + k + self.n_slots]])
        u = w[1 + k + self.n_slots:1 + k + self.n_slots + c]
        v = w[1 + k + self.n_slots + c:]
        per_round = b + w_slot[slot] + context @ u
        slope = w_f + context @ v
        return per_round[:, None] + w_item[None, :] + slope[:, None] * self.item_feature[None, :]

    def predict(self, context: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Click probability of every item in each round's slot, shape ``(n, K)``."""
        return 1.0 / (1.0 + np.exp(-self.logits(context, slot)))

    def softmax_policy(self, context: np.ndarray, slot: np.ndarray,
                       temperature: float = 1.0) -> np.ndarray:
        """``pi(a | x, l)`` proportional to ``exp(logit / temperature)``, shape ``(n, K)``.

        At temperature 1 this is probability matching on the odds: an item twice as likely
        to be clicked is shown about twice as often. Every item keeps a positive share.
        """
        z = self.logits(context, slot) / temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def cross_validated_l2(train: ObdLogs,
                       grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0),
                       folds: int = 5) -> float:
    """The ``l2`` of :class:`RidgeLogisticCtr` with the best held-out log-likelihood over
    ``folds`` contiguous (time-ordered) folds of the *training* rounds only."""
    n = len(train)
    edges = np.linspace(0, n, folds + 1).astype(int)
    best, best_ll = grid[0], -np.inf
    for l2 in grid:
        ll = 0.0
        for lo, hi in itertools.pairwise(edges):
            held = np.zeros(n, dtype=bool)
            held[lo:hi] = True
            model = RidgeLogisticCtr.fit(
                train.context[~held], train.action[~held], train.position[~held],
                train.reward[~held], train.item_feature_0, n_slots=train.len_list, l2=l2)
            p = model.predict(train.context[held], train.position[held])
            p = np.clip(p[np.arange(int(held.sum())), train.action[held]], 1e-9, 1 - 1e-9)
            r = train.reward[held]
            ll += float(np.sum(r * np.log(p) + (1 - r) * np.log(1 - p)))
        if ll > best_ll:
            best, best_ll = l2, ll
    return best

