"""Beta-Bernoulli Thompson sampling per artwork id, ignoring the member: the "simple bandit"
that finds each title's best image for the whole population.

State is a ``river.bandit.ThompsonSampling(reward_obj=proba.Beta())``: its ``update`` keeps
one ``river.proba.Beta`` posterior (and a pull count) per artwork id. River's ``pull`` is not
used because it says nothing about how likely its pick was; instead the probability that each
candidate's posterior draw is the largest is estimated by Monte Carlo (``n_samples`` draws,
seeded from the policy's seed, version and the candidate ids, so the estimate is the same
each time it is asked in the same state), mixed with ``exploration_floor`` of uniform so no
propensity is 0. :meth:`select` draws from that very distribution, so the logged propensity
is exact for the draw that was made, and an estimate (within about
``sqrt(p (1 - p) / n_samples)``) of the ideal Thompson probability.

Artwork ids are per title, so a new title's images start at the prior Beta(1, 1) and share
nothing with other titles: this policy can only learn within a title.

>>> from online_models.bandits.base import Arm
>>> policy = NonContextualThompson(seed=3)
>>> arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",))]
>>> for _ in range(20):
...     policy.learn_one({}, arms[0], 1.0)
...     policy.learn_one({}, arms[1], 0.0)
>>> p = policy.propensities({"genre:Romance": 1.0}, arms)
>>> p["t1-a"] > 0.9 > 0.0 < p["t1-b"]
True
>>> p == policy.propensities({"genre:Comedy": 1.0}, arms)   # context is ignored
True
>>> policy.select({}, arms).artwork_id
't1-a'
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import bandit, proba

from online_models.bandits.base import (
    Arm,
    ArtworkPolicy,
    Context,
    argmax_shares,
    binarize,
    mix_with_uniform,
    monte_carlo_rng,
)
from online_models.checkpoint import (
    CheckpointError,
    random_state,
    require,
    require_array,
    require_strings,
    set_random_state,
)

__all__ = ["NonContextualThompson"]


class NonContextualThompson(ArtworkPolicy):
    """Per-artwork Beta-Bernoulli Thompson sampling with Monte Carlo propensities.

    Parameters
    ----------
    prior_alpha
        Prior successes of every artwork's Beta posterior.
    prior_beta
        Prior failures of every artwork's Beta posterior.
    n_samples
        Monte Carlo draws per propensity estimate.
    exploration_floor
        Share of uniform exploration mixed in (each propensity is at least this / K).
    seed
        Seeds the draws of :meth:`select`, the Monte Carlo estimates and the Bernoulli
        rounding of fractional rewards.
    """

    name = "non_contextual"
    titles_independent = True

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0, n_samples: int = 1000,
                 exploration_floor: float = 0.01, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.n_samples = n_samples
        self.exploration_floor = exploration_floor
        self._bandit = bandit.ThompsonSampling(
            reward_obj=proba.Beta(prior_alpha, prior_beta), seed=seed)

    def posterior(self, artwork_id: str) -> tuple[float, float]:
        """(alpha, beta) of the artwork's Beta posterior (the prior when never shown)."""
        beta = self._bandit._rewards.get(artwork_id)  # river's per-arm Beta, if any
        if beta is None:
            return self.prior_alpha, self.prior_beta
        return float(beta.alpha), float(beta.beta)

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        if len(arms) == 1:
            return [1.0]
        ab = np.array([self.posterior(a.artwork_id) for a in arms])
        rng = monte_carlo_rng(self.seed, self._version, [a.artwork_id for a in arms])
        draws = rng.beta(ab[:, :1], ab[:, 1:], size=(len(arms), self.n_samples))
        return mix_with_uniform(argmax_shares(draws).tolist(), self.exploration_floor)

    def _learn_one(self, context: Context, arm: Arm, reward: float) -> None:
        self._bandit.update(arm.artwork_id, binarize(reward, self._rng))

    def _learned_state(self) -> dict[str, Any]:
        """River's Thompson state: per artwork its Beta posterior (alpha, beta) and seed and
        its update count, the update total and the generator that seeds new artworks'
        Betas (each Beta's own generator is not kept: its draws are never used here)."""
        b = self._bandit
        ids = list(b._rewards)
        return {"arm_ids": ids,
                "arm_posterior": np.array([[r.alpha, r.beta] for r in b._rewards.values()],
                                          dtype=float).reshape(len(ids), 2),
                "arm_seeds": [r.seed for r in b._rewards.values()],
                "arm_counts": np.array([b._counts.get(a, 0) for a in ids], dtype=np.int64),
                "n_updates": b._n, "bandit_rng": random_state(b._rng)}

    def _restore_learned(self, state: dict[str, Any]) -> None:
        name = self.name
        ids = require_strings(state, name, "arm_ids")
        posterior = require_array(state, name, "arm_posterior", (len(ids), 2))
        counts = require_array(state, name, "arm_counts", (len(ids),), "i")
        seeds = require(state, name, "arm_seeds", list)
        if len(seeds) != len(ids) or not all(s is None or isinstance(s, int) for s in seeds):
            raise CheckpointError(f"{name} checkpoint arm_seeds do not fit arm_ids")
        b = self._bandit
        for a, (alpha, beta), seed, n in zip(ids, posterior.tolist(), seeds, counts.tolist(),
                                             strict=True):
            r = proba.Beta(self.prior_alpha, self.prior_beta, seed=seed)
            r.alpha, r.beta = alpha, beta
            b._rewards[a] = r
            b._counts[a] = n
        b._n = require(state, name, "n_updates", int)
        set_random_state(b._rng, state.get("bandit_rng"), name)
