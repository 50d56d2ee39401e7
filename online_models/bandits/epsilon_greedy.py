"""Contextual epsilon-greedy over the hybrid ridge reward model that LinUCB uses.

The reward model is :class:`~online_models.bandits.hybrid.HybridRidge` over the hashed
context x tag crosses of :class:`~online_models.bandits.features.Featurizer` (shared by every
title) plus a per-artwork intercept: what it learns about "comedy fans take comedic art" on old
titles scores a new title's images at their first impression. The greedy candidate is the one
with the highest posterior mean (LinUCB adds ``alpha`` standard deviations to it; here the
exploration is the uniform draw instead). River's own ``bandit.EpsilonGreedy`` is not
contextual, so only the rule is taken from it: the greedy candidate with probability
``1 - epsilon_n``, a uniformly random one with probability ``epsilon_n``, where ``n`` is the
number of rewards learned so far (the policy's version) and

``epsilon_n = max(epsilon_min, epsilon / sqrt(1 + n / decay_rewards))``

(constant ``epsilon`` when ``decay_rewards`` is ``None``). Propensity of an arm:

``epsilon_n / K + (1 - epsilon_n) * [arm is greedy] / G``   (``G`` arms tied for the best mean)

which is exact (no estimate: ``epsilon_n`` is a function of the policy's state, which the
checkpoint carries) and at least ``epsilon_min / K``.

>>> from online_models.bandits.base import Arm
>>> policy = ContextualEpsilonGreedy(epsilon=0.2, decay_rewards=None, seed=1)
>>> arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",))]
>>> fan = {"genre:Comedy": 0.9}
>>> {k: round(v, 2) for k, v in policy.propensities(fan, arms).items()}  # cold: a tie
{'t1-a': 0.5, 't1-b': 0.5}
>>> for _ in range(30):
...     policy.learn_one(fan, arms[0], 1.0)
...     policy.learn_one(fan, arms[1], 0.0)
>>> {k: round(v, 2) for k, v in policy.propensities(fan, arms).items()}
{'t1-a': 0.9, 't1-b': 0.1}

A new title's images, never shown, are scored by their tags:

>>> new = [Arm("t2-x", ("romance",)), Arm("t2-y", ("comedy",))]
>>> {k: round(v, 2) for k, v in policy.propensities(fan, new).items()}
{'t2-x': 0.1, 't2-y': 0.9}

With the default decay, exploration shrinks as rewards come in, down to ``epsilon_min``:

>>> decaying = ContextualEpsilonGreedy(seed=1)
>>> decaying.current_epsilon()
0.2
>>> for _ in range(6000):
...     decaying.learn_one(fan, arms[0], 1.0)
>>> decaying.current_epsilon()
0.1
"""

from __future__ import annotations

import math

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

__all__ = ["ContextualEpsilonGreedy"]


class ContextualEpsilonGreedy(RidgePolicy):
    """Epsilon-greedy on the posterior mean of a hybrid ridge model of the reward.

    Parameters
    ----------
    epsilon
        Probability of a uniformly random candidate before any reward was learned.
    epsilon_min
        The floor the decaying exploration probability never goes below (> 0).
    decay_rewards
        Rewards over which the exploration probability falls as ``1 / sqrt(1 + n /
        decay_rewards)``; ``None`` keeps it at ``epsilon``.
    l2, intercept_l2
        Prior precisions of the shared weights and of each artwork's intercept (as in
        :class:`~online_models.bandits.lin_ucb.LinUCB`).
    featurizer
        Shared features; by default without the ``art:<id>`` indicator, which the model's
        per-artwork intercept replaces.
    seed
        Seeds the draws of :meth:`select`.
    """

    name = "epsilon_greedy"
    titles_independent = True

    def __init__(self, epsilon: float = 0.2, epsilon_min: float = 0.05,
                 decay_rewards: float | None = 2000.0, l2: float = 1.0,
                 intercept_l2: float = 25.0, featurizer: Featurizer | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed=seed)
        if not 0.0 < epsilon <= 1.0 or not 0.0 < epsilon_min <= 1.0:
            raise ValueError("epsilon and epsilon_min must be in (0, 1] so every propensity "
                             "is positive")
        if decay_rewards is not None and decay_rewards <= 0:
            raise ValueError("decay_rewards must be positive (or None: no decay)")
        self.epsilon = epsilon
        self.epsilon_min = epsilon_min
        self.decay_rewards = decay_rewards
        self.l2 = l2
        self.intercept_l2 = intercept_l2
        self.featurizer = featurizer or Featurizer(arm_id_feature=False)
        self._model = HybridRidge(l2=l2, intercept_l2=intercept_l2)

    def current_epsilon(self) -> float:
        """The exploration probability now (a function of the rewards learned)."""
        if self.decay_rewards is None:
            return self.epsilon
        return max(self.epsilon_min, self.epsilon / math.sqrt(1.0 + self.version
                                                               / self.decay_rewards))

    def scores(self, context: Context, arms: list[Arm]) -> np.ndarray:
        """Posterior mean of each arm's expected reward."""
        mean, _ = self._model.posterior_marginals(self.featurizer.many(context, arms),
                                                  [a.artwork_id for a in arms])
        return mean

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        return greedy_with_exploration(self.scores(context, arms).tolist(),
                                       self.current_epsilon())

    def _propensities_many(self, context: Context,
                           groups: list[list[Arm]]) -> list[list[float]] | np.ndarray:
        """Posterior means of every arm of every group from one joint posterior, turned
        into propensities in one matrix step."""
        eps = self.current_epsilon()
        means = self.scores(context, [a for arms in groups for a in arms])
        matrix = greedy_matrix(means, [len(arms) for arms in groups], eps)
        if matrix is not None:
            return matrix
        return [greedy_with_exploration(m.tolist(), eps) for m in split_groups(means, groups)]
