"""Hybrid LinUCB with an exploration floor.

Scores each candidate by the upper confidence bound of its expected reward under
:class:`~online_models.bandits.hybrid.HybridRidge` (shared weights on hashed context x tag
crosses plus a per-artwork intercept): ``mean + alpha * std``. A new title's images are scored
from the first impression by the shared part; their unknown intercepts add ``1 / l2`` to the
variance, which is the optimism that gets them tried. Unlike river's ``bandit.LinUCBDisjoint``
(one regression per arm, nothing shared) this generalizes across titles.

Plain LinUCB is deterministic: the non-greedy arms would have propensity 0, and IPS / DR
estimates divide by the propensity. So a uniform choice is mixed in with probability
``exploration_floor``; the propensity of an arm is

``exploration_floor / K + (1 - exploration_floor) * [arm has the highest UCB] / G``

(``G`` arms tied for the highest bound), exact and at least ``exploration_floor / K``.

>>> from online_models.bandits.base import Arm
>>> policy = LinUCB(alpha=0.5, exploration_floor=0.1, seed=1)
>>> comedy_fan = {"genre:Comedy": 0.9, "country": "US"}
>>> for t in range(40):
...     comic, romantic = Arm(f"t{t}-a", ("comedy",)), Arm(f"t{t}-b", ("romance",))
...     policy.learn_one(comedy_fan, comic, 1.0)
...     policy.learn_one(comedy_fan, romantic, 0.0)
>>> new = [Arm("new-a", ("romance",)), Arm("new-b", ("comedy",))]
>>> {k: round(v, 2) for k, v in policy.propensities(comedy_fan, new).items()}
{'new-a': 0.05, 'new-b': 0.95}
"""

from __future__ import annotations

import numpy as np

from online_models.bandits.base import (
    Arm,
    Context,
    greedy_matrix,
    greedy_with_exploration,
    split_groups,
)
from online_models.bandits.features import Featurizer
from online_models.bandits.hybrid import HybridRidge
from online_models.bandits.ridge_policy import RidgePolicy

__all__ = ["LinUCB"]


class LinUCB(RidgePolicy):
    """Hybrid LinUCB (shared crosses + per-artwork intercept) with a uniform floor.

    Parameters
    ----------
    alpha
        Width of the confidence bound, in posterior standard deviations (noise units).
    l2
        Prior precision (ridge penalty) of the shared weights.
    intercept_l2
        Prior precision of each artwork's own intercept (its appeal beyond its tags); the
        default says images differ by about 0.2 noise units beyond their tags, so a cold
        image is scored mostly by the shared model rather than explored for its own sake.
    exploration_floor
        Probability of a uniformly random candidate instead of the UCB winner; must be > 0.
    featurizer
        Shared features; by default without the ``art:<id>`` indicator, which the model's
        per-artwork intercept replaces.
    seed
        Seeds the draws of :meth:`select`.
    """

    name = "lin_ucb"
    titles_independent = True

    def __init__(self, alpha: float = 0.3, l2: float = 1.0, intercept_l2: float = 25.0,
                 exploration_floor: float = 0.05, featurizer: Featurizer | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed=seed)
        if not 0.0 < exploration_floor <= 1.0:
            raise ValueError("exploration_floor must be in (0, 1] (IPS needs propensities > 0)")
        self.alpha = alpha
        self.l2 = l2
        self.intercept_l2 = intercept_l2
        self.exploration_floor = exploration_floor
        self.featurizer = featurizer or Featurizer(arm_id_feature=False)
        self._model = HybridRidge(l2=l2, intercept_l2=intercept_l2)

    def upper_bounds(self, context: Context, arms: list[Arm]) -> np.ndarray:
        """``mean + alpha * std`` of each candidate's expected reward."""
        mean, var = self._model.posterior_marginals(self.featurizer.many(context, arms),
                                                    [a.artwork_id for a in arms])
        return mean + self.alpha * np.sqrt(np.clip(var, 0.0, None))

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        return greedy_with_exploration(self.upper_bounds(context, arms).tolist(),
                                       self.exploration_floor)

    def _propensities_many(self, context: Context,
                           groups: list[list[Arm]]) -> list[list[float]] | np.ndarray:
        """Upper bounds of every arm of every group from one joint posterior, turned into
        propensities in one matrix step."""
        bounds = self.upper_bounds(context, [a for arms in groups for a in arms])
        matrix = greedy_matrix(bounds, [len(arms) for arms in groups], self.exploration_floor)
        if matrix is not None:
            return matrix
        return [greedy_with_exploration(b.tolist(), self.exploration_floor)
                for b in split_groups(bounds, groups)]
