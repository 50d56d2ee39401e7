"""Linear Thompson sampling with Monte Carlo propensities.

The reward model is :class:`~online_models.bandits.hybrid.HybridRidge`: a Gaussian posterior
on shared weights over hashed context x tag crosses plus a per-artwork intercept. Thompson
sampling shows the candidate whose *sampled* expected reward is highest. The candidates'
expected rewards are jointly Gaussian, ``N(mean, scale^2 * cov)`` with a ``K x K`` covariance
(candidates share features, so their draws are correlated), which is what is sampled.

The probability that a candidate wins has no closed form, so it is **estimated** by Monte
Carlo: ``n_samples`` joint draws, the share of draws each candidate wins, mixed with
``exploration_floor`` of uniform so no propensity is 0 (IPS divides by it). The draws come from
a numpy Generator seeded by the policy's ``seed``, its :attr:`version`, the context and the
candidates, so the estimate is a deterministic function of (state, request): asking again
gives the same numbers, :meth:`select` draws from exactly the distribution it logs (so the
logged propensity is the true probability of the draw that was made), and it is an estimate,
within about ``sqrt(p (1 - p) / n_samples)``, of the ideal Thompson probability.

>>> from online_models.bandits.base import Arm
>>> policy = LinearThompson(n_samples=2000, seed=1)
>>> romance_fan = {"genre:Romance": 0.9, "device": "tv"}
>>> for t in range(40):
...     comic, romantic = Arm(f"t{t}-a", ("comedy",)), Arm(f"t{t}-b", ("romance",))
...     policy.learn_one(romance_fan, comic, 0.0)
...     policy.learn_one(romance_fan, romantic, 1.0)
>>> new = [Arm("new-a", ("comedy",)), Arm("new-b", ("romance",))]
>>> p = policy.propensities(romance_fan, new)
>>> p["new-b"] > 0.9, p == policy.propensities(romance_fan, new)
(True, True)
"""

from __future__ import annotations

import numpy as np

from online_models.bandits.base import (
    Arm,
    Context,
    argmax_shares,
    context_key,
    mix_with_uniform,
    monte_carlo_rng,
)
from online_models.bandits.features import Featurizer
from online_models.bandits.hybrid import HybridRidge
from online_models.bandits.ridge_policy import RidgePolicy

__all__ = ["LinearThompson"]


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor, with growing jitter if rounding made ``cov`` slightly indefinite."""
    jitter = 0.0
    scale = float(np.mean(np.diag(cov))) or 1.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter = scale * 1e-10 if jitter == 0.0 else jitter * 100.0
    values, vectors = np.linalg.eigh(cov)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


class LinearThompson(RidgePolicy):
    """Thompson sampling on a Gaussian posterior over shared crosses + artwork intercepts.

    Parameters
    ----------
    scale
        Posterior standard-deviation multiplier (the reward noise ``sigma``; larger explores
        more).
    l2
        Prior precision (ridge penalty) of the shared weights.
    intercept_l2
        Prior precision of each artwork's own intercept (its appeal beyond its tags); the
        default says images differ by about 0.2 noise units beyond their tags, so a cold
        image is scored mostly by the shared model rather than explored for its own sake.
    n_samples
        Monte Carlo draws per propensity estimate.
    exploration_floor
        Share of uniform exploration mixed in; must be > 0.
    featurizer
        Shared features; by default without the ``art:<id>`` indicator, which the model's
        per-artwork intercept replaces.
    seed
        Seeds the draws of :meth:`select` and the Monte Carlo estimates.
    """

    name = "thompson"

    def __init__(self, scale: float = 0.2, l2: float = 1.0, intercept_l2: float = 25.0,
                 n_samples: int = 1000, exploration_floor: float = 0.01,
                 featurizer: Featurizer | None = None, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        if not 0.0 < exploration_floor <= 1.0:
            raise ValueError("exploration_floor must be in (0, 1] (IPS needs propensities > 0)")
        self.scale = scale
        self.l2 = l2
        self.intercept_l2 = intercept_l2
        self.n_samples = n_samples
        self.exploration_floor = exploration_floor
        self.featurizer = featurizer or Featurizer(arm_id_feature=False)
        self._model = HybridRidge(l2=l2, intercept_l2=intercept_l2)

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        return self._propensities_many(context, [arms])[0]

    def _propensities_many(self, context: Context,
                           groups: list[list[Arm]]) -> list[list[float]]:
        """One joint posterior over every arm of every group; each group's own block is
        sampled with the draws seeded for that group (as when asked alone)."""
        if all(len(arms) == 1 for arms in groups):
            return [[1.0] for _ in groups]
        mean, cov = self._model.posterior(
            self.featurizer.many(context, [a for arms in groups for a in arms]),
            [a.artwork_id for arms in groups for a in arms])
        ctx_key = context_key(context)
        out: list[list[float]] = []
        start = 0
        for arms in groups:
            k = len(arms)
            stop = start + k
            if k == 1:
                out.append([1.0])
            else:
                rng = monte_carlo_rng(self.seed, self._version, ctx_key,
                                      [(a.artwork_id, a.tags) for a in arms])
                noise = rng.standard_normal((k, self.n_samples))
                block = cov[start:stop, start:stop]
                draws = mean[start:stop, None] + self.scale * (_cholesky(block) @ noise)
                out.append(mix_with_uniform(argmax_shares(draws).tolist(),
                                            self.exploration_floor))
            start = stop
        return out
