"""Uniformly random artwork: the exploration baseline and the logging policy of choice for
replay evaluation (every candidate has propensity ``1 / K``).

Mirrors ``river.bandit.RandomPolicy`` (a seeded ``random.Random``, nothing learned), with
propensities exposed so its choices can be logged.

>>> from online_models.bandits.base import Arm
>>> policy = UniformRandom(seed=7)
>>> arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",)), Arm("t1-c", ("scenic",))]
>>> {k: round(v, 3) for k, v in policy.propensities({"country": "US"}, arms).items()}
{'t1-a': 0.333, 't1-b': 0.333, 't1-c': 0.333}
>>> choice = policy.select({"country": "US"}, arms)
>>> choice.artwork_id in {"t1-a", "t1-b", "t1-c"}, round(choice.propensity, 3), choice.policy
(True, 0.333, 'uniform')
>>> policy.learn_one({}, arms[0], 1.0)
>>> policy.version
1
"""

from __future__ import annotations

from online_models.bandits.base import Arm, ArtworkPolicy, Context

__all__ = ["UniformRandom"]


class UniformRandom(ArtworkPolicy):
    """Show each candidate with probability ``1 / K``; learning only bumps :attr:`version`.

    Parameters
    ----------
    seed
        Seeds the draw in :meth:`select`.
    """

    name = "uniform"
    titles_independent = True

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed=seed)

    def _propensities(self, context: Context, arms: list[Arm]) -> list[float]:
        return [1.0 / len(arms)] * len(arms)

    def _learn_one(self, context: Context, arm: Arm, reward: float) -> None:
        return None
