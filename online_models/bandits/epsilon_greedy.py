"""Contextual epsilon-greedy over one shared logistic reward model.

The reward model is ``river.linear_model.LogisticRegression`` (SGD on log loss) over the
hashed context x tag crosses of :class:`~online_models.bandits.features.Featurizer`, shared by
every title: what it learns about "comedy fans take comedic art" on old titles scores a new
title's images at their first impression (a cold image's ``art:<id>`` weight is 0, so its
score is the shared tag part). River's own ``bandit.EpsilonGreedy`` is not contextual, so only
the rule is taken from it: the greedy candidate with probability ``1 - epsilon``, a uniformly
random one with probability ``epsilon``. Propensity of an arm:

``epsilon / K + (1 - epsilon) * [arm is greedy] / G``   (``G`` arms tied for the best score)

which is exact (no estimate) and at least ``epsilon / K``.

>>> from online_models.bandits.base import Arm
>>> policy = ContextualEpsilonGreedy(epsilon=0.2, seed=1)
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
"""

from __future__ import annotations

from river import linear_model, optim

from online_models.bandits.base import (
    Arm,
    ArtworkPolicy,
    Context,
    binarize,
    greedy_with_exploration,
)
from online_models.bandits.features import Featurizer

__all__ = ["ContextualEpsilonGreedy"]


class ContextualEpsilonGreedy(ArtworkPolicy):
    """Epsilon-greedy on a shared logistic model of P(quality play | context, artwork).

    Parameters
    ----------
    epsilon
        Probability of showing a uniformly random candidate instead of the greedy one.
    learning_rate
        SGD step of the logistic model's weights.
    l2
        L2 penalty of the logistic model.
    featurizer
        Turns (context, arm) into hashed crosses; includes the ``art:<id>`` feature by default.
    seed
        Seeds the draws of :meth:`select` and the Bernoulli rounding of fractional rewards.
    """

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1, learning_rate: float = 0.1, l2: float = 0.0,
                 featurizer: Featurizer | None = None, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        if not 0.0 < epsilon <= 1.0:
            raise ValueError("epsilon must be in (0, 1] so every propensity is positive")
        self.epsilon = epsilon
        self.learning_rate = learning_rate
        self.l2 = l2
        self.featurizer = featurizer or Featurizer()
        self._model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate)

    def scores(self, context: Context, arms: list[Arm]) -> list[float]:
        """Predicted probability of a quality play for each arm."""
        return [self._model.predict_proba_one(x)[True]
                for x in self.featurizer.many(context, arms)]

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        return greedy_with_exploration(self.scores(context, arms), self.epsilon)

    def _learn_one(self, context: Context, arm: Arm, reward: float) -> None:
        self._model.learn_one(self.featurizer(context, arm), binarize(reward, self._rng))
