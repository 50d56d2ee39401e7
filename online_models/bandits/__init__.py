"""Contextual bandits that choose which artwork of a title a member sees.

Every policy gives a propensity for every candidate (> 0, summing to 1), draws its choice from
exactly those propensities with its seeded RNG, learns from (context, artwork, reward) and
checkpoints to bytes. See ``base`` for the interface and each module for its propensity
semantics.

=====================  ===========================================  =======================
registry name          class                                        propensity
=====================  ===========================================  =======================
``uniform``            :class:`UniformRandom`                       ``1 / K`` (exact)
``non_contextual``     :class:`NonContextualThompson`               Monte Carlo + floor
``epsilon_greedy``     :class:`ContextualEpsilonGreedy`             ``eps/K + (1-eps)[greedy]``
``lin_ucb``            :class:`LinUCB`                              ``f/K + (1-f)[max UCB]``
``thompson``           :class:`LinearThompson`                      Monte Carlo + floor
=====================  ===========================================  =======================

>>> policy = make_policy("lin_ucb", seed=1, alpha=1.0)
>>> policy.name, policy.alpha, policy.seed
('lin_ucb', 1.0, 1)
>>> arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",))]
>>> choice = policy.select({"genre:Comedy": 0.7}, arms)
>>> choice.policy, choice.policy_version, round(choice.propensity, 3)
('lin_ucb', 0, 0.5)
>>> restored = ArtworkPolicy.from_bytes(policy.to_bytes())
>>> restored.propensities({"genre:Comedy": 0.7}, arms) == policy.propensities(
...     {"genre:Comedy": 0.7}, arms)
True
"""

from __future__ import annotations

from typing import Any

from online_models.bandits.base import CHECKPOINT_FORMAT, Arm, ArtworkPolicy, Choice, Context
from online_models.bandits.epsilon_greedy import ContextualEpsilonGreedy
from online_models.bandits.features import Featurizer
from online_models.bandits.hybrid import HybridRidge
from online_models.bandits.lin_ucb import LinUCB
from online_models.bandits.non_contextual import NonContextualThompson
from online_models.bandits.sticky import Assignment, StickyAssignment, StickyDecision
from online_models.bandits.thompson import LinearThompson
from online_models.bandits.uniform import UniformRandom

__all__ = [
    "CHECKPOINT_FORMAT",
    "POLICIES",
    "Arm",
    "ArtworkPolicy",
    "Assignment",
    "Choice",
    "Context",
    "ContextualEpsilonGreedy",
    "Featurizer",
    "HybridRidge",
    "LinUCB",
    "LinearThompson",
    "NonContextualThompson",
    "StickyAssignment",
    "StickyDecision",
    "UniformRandom",
    "make_policy",
]

#: Registry: policy name -> class (``cls.name`` is the key).
POLICIES: dict[str, type[ArtworkPolicy]] = {
    cls.name: cls
    for cls in (UniformRandom, NonContextualThompson, ContextualEpsilonGreedy, LinUCB,
                LinearThompson)
}


def make_policy(name: str, seed: int, **kw: Any) -> ArtworkPolicy:
    """Build the policy registered as ``name`` with ``seed`` and constructor settings ``kw``.

    >>> make_policy("nope", seed=0)
    Traceback (most recent call last):
    ...
    ValueError: unknown artwork policy 'nope'; known: epsilon_greedy, lin_ucb, non_contextual, thompson, uniform
    """  # noqa: E501
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown artwork policy {name!r}; known: "
                         f"{', '.join(sorted(POLICIES))}") from None
    return cls(seed=seed, **kw)
