"""The artwork-policy interface: arms, choices, and what every policy promises.

A policy sees a member's context and the artwork candidates (:class:`Arm`) of one title and
gives, for every candidate, the probability that it would show it (:meth:`ArtworkPolicy.
propensities`). :meth:`ArtworkPolicy.select` draws one candidate from exactly that
distribution with the policy's seeded ``random.Random`` and returns a :class:`Choice` whose
``propensity`` is the probability the drawn candidate had, which is what the impression log
needs for replay / IPS / SNIPS / DR evaluation. Every propensity is strictly positive (each
policy mixes in some uniform exploration where its own rule could give 0), because inverse
propensity weighting divides by it.

The shape follows ``river.bandit.base.Policy`` (a ``river.base.Base`` with constructor
settings as public attributes, learned state underscored, a ``seed``), but the verbs differ:
river's ``pull`` returns an arm without saying how likely it was, so it cannot feed an
impression log; here ``propensities`` is the primitive and ``select`` is a draw from it.

>>> class FirstArm(ArtworkPolicy):
...     name = "first"
...     def _propensities(self, context, arms):
...         return greedy_with_exploration([1.0] + [0.0] * (len(arms) - 1), epsilon=0.5)
...     def _learn_one(self, context, arm, reward):
...         pass
>>> arms = [Arm("a1", ("comedy",)), Arm("a2", ("romance",))]
>>> FirstArm(seed=1).propensities({"country": "US"}, arms)
{'a1': 0.75, 'a2': 0.25}
>>> FirstArm(seed=1).select({}, arms)
Choice(artwork_id='a1', propensity=0.75, policy='first', policy_version=0)
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from river import base as river_base

from online_models.checkpoint import (
    CheckpointError,
    dumps,
    random_state,
    require,
    restore_any,
    set_random_state,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "Arm",
    "ArtworkPolicy",
    "Choice",
    "Context",
    "argmax_shares",
    "check_arms",
    "greedy_matrix",
    "greedy_with_exploration",
    "mix_with_uniform",
    "monte_carlo_rng",
]

#: Member features: numeric affinities / counts, or categorical strings.
Context = dict[str, float | str]

#: Version of the state layout :meth:`ArtworkPolicy.to_state` writes (the checkpoint format
#: itself is :mod:`online_models.checkpoint`).
CHECKPOINT_FORMAT = 1

#: Relative tolerance under which two scores count as a tie (ties split the greedy mass).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Arm:
    """One artwork candidate of a title.

    Parameters
    ----------
    artwork_id
        Unique among the candidates of a title (and, in practice, globally).
    tags
        What the image highlights, e.g. ``("comedy",)``, ``("cast",)``, ``("scenic",)``.
        Tags are shared across titles; artwork ids are not.
    """

    artwork_id: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    """The artwork a policy chose, with the probability it had of choosing it.

    ``policy_version`` is the policy's :attr:`ArtworkPolicy.version` at selection time (the
    number of rewards it had learned), so a log line says which state made the decision.
    """

    artwork_id: str
    propensity: float
    policy: str
    policy_version: int


def check_arms(arms: Sequence[Arm]) -> list[Arm]:
    """Return ``arms`` as a list; reject an empty list and duplicate artwork ids.

    >>> check_arms([Arm("a"), Arm("a")])
    Traceback (most recent call last):
    ...
    ValueError: duplicate artwork ids among the arms: ['a']
    """
    arms = list(arms)
    if not arms:
        raise ValueError("at least one arm is needed")
    if len(arms) == 1 or len({a.artwork_id for a in arms}) == len(arms):
        return arms
    ids = [a.artwork_id for a in arms]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate artwork ids among the arms: {dupes}")
    return arms


def mix_with_uniform(probs: Sequence[float], epsilon: float) -> list[float]:
    """``(1 - epsilon) * probs + epsilon / K``: the exploration floor that keeps every
    propensity at least ``epsilon / K`` (IPS divides by propensities, so none may be 0).

    >>> [round(p, 6) for p in mix_with_uniform([1.0, 0.0], 0.1)]
    [0.95, 0.05]
    """
    k = len(probs)
    total = float(sum(probs))
    return [(1.0 - epsilon) * p / total + epsilon / k for p in probs]


def greedy_with_exploration(scores: Sequence[float], epsilon: float) -> list[float]:
    """Epsilon-greedy propensities: ``epsilon / K + (1 - epsilon) * [arm is greedy] / G``
    where ``G`` is the number of arms tied for the best score (ties split the greedy mass).

    >>> [round(p, 6) for p in greedy_with_exploration([0.2, 0.5, 0.5], epsilon=0.3)]
    [0.1, 0.45, 0.45]
    """
    best = max(scores)
    tol = TIE_TOLERANCE * max(1.0, abs(best))
    greedy = [1.0 if best - s <= tol else 0.0 for s in scores]
    return mix_with_uniform(greedy, epsilon)


def greedy_matrix(scores: np.ndarray, sizes: Sequence[int], epsilon: float
                  ) -> np.ndarray | None:
    """:func:`greedy_with_exploration` of several groups at once: ``scores`` holds every
    group's scores in order (``sizes`` says how many each), the result is a
    ``(groups, max size)`` matrix, zero past each group's size, with the same numbers bit
    for bit (the same operations in the same order). ``None`` when a score is NaN: the
    caller then asks group by group, as before.

    >>> greedy_matrix(np.array([0.2, 0.5, 0.5, 1.0]), [3, 1], 0.3).round(6).tolist()
    [[0.1, 0.45, 0.45], [1.0, 0.0, 0.0]]
    """
    if np.isnan(scores).any():
        return None
    sizes_a = np.asarray(sizes, dtype=np.intp)
    n_groups, width = len(sizes_a), int(sizes_a.max())
    row = np.repeat(np.arange(n_groups), sizes_a)
    col = np.arange(len(scores)) - np.repeat(np.cumsum(sizes_a) - sizes_a, sizes_a)
    padded = np.full((n_groups, width), -np.inf)
    padded[row, col] = scores
    best = padded.max(axis=1)
    tol = TIE_TOLERANCE * np.maximum(1.0, np.abs(best))
    greedy = np.zeros((n_groups, width))
    greedy[row, col] = best[row] - scores <= tol[row]
    count = greedy.sum(axis=1)[:, None]
    out = np.zeros((n_groups, width))
    out[row, col] = ((1.0 - epsilon) * greedy / count + epsilon / sizes_a[:, None])[row, col]
    return out


def argmax_shares(samples: np.ndarray) -> np.ndarray:
    """Share of columns in which each row holds the maximum, for a ``(K, n)`` sample matrix:
    the Monte Carlo estimate of each arm's probability of being the best.

    >>> argmax_shares(np.array([[1.0, 0.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]])).tolist()
    [0.5, 0.5]
    """
    k, n = samples.shape
    return np.bincount(np.argmax(samples, axis=0), minlength=k) / n


def split_groups(values: np.ndarray, groups: Sequence[Sequence[object]]) -> list[np.ndarray]:
    """``values`` (one per arm of all groups, in order) cut back into one array per group.

    >>> [v.tolist() for v in split_groups(np.arange(5.0), [[1, 2], [3], [4, 5]])]
    [[0.0, 1.0], [2.0], [3.0, 4.0]]
    """
    bounds = np.cumsum([len(g) for g in groups])[:-1]
    return np.split(values, bounds)


def monte_carlo_rng(seed: int | None, version: int, *parts: object) -> np.random.Generator:
    """A numpy Generator determined by the policy's seed, its version and the request.

    Policies whose propensities are Monte Carlo estimates draw their samples from this, so
    asking twice in the same state gives the same estimate: :meth:`ArtworkPolicy.select` then
    draws from exactly the distribution it logs, and an offline evaluator recomputing
    ``propensities`` for a logged (state, context) gets the logged numbers back. A ``seed``
    of None counts as 0 here.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.random.default_rng([seed or 0, version, int.from_bytes(digest, "little")])


def context_key(context: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """A canonical, hashable form of a context (for seeding Monte Carlo draws)."""
    return tuple(sorted((str(k), repr(v)) for k, v in context.items()))


def binarize(reward: float, rng: random.Random) -> bool:
    """A reward in [0, 1] as a Bernoulli outcome: 0 and 1 as is, a fraction ``r`` a success
    with probability ``r`` (drawn with ``rng``), which keeps the expected reward unchanged."""
    if reward in (0.0, 1.0):
        return reward == 1.0
    return rng.random() < reward


class ArtworkPolicy(river_base.Base, abc.ABC):
    """Base class of the artwork-selection policies.

    Subclasses implement :meth:`_propensities` (a list aligned with the arms, positive,
    summing to 1) and :meth:`_learn_one`; selection, versioning and checkpoints live here.

    Parameters
    ----------
    seed
        Seeds the private ``random.Random`` used by :meth:`select` (and any Monte Carlo).
    """

    name: ClassVar[str] = "abstract"
    #: Whether a title's propensities are the same whichever titles are asked about with it
    #: in :meth:`propensities_many` (not so for Monte Carlo estimates seeded by the whole
    #: page): callers may then keep them per title and context.
    titles_independent: ClassVar[bool] = False

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._version = 0

    @property
    def version(self) -> int:
        """Number of rewards learned so far (:meth:`learn_one` calls); bumps on every update
        and is logged with each :class:`Choice`."""
        return self._version

    # -- choosing -------------------------------------------------------------------------
    @abc.abstractmethod
    def _propensities(self, context: Context, arms: list[Arm]) -> Sequence[float]: ...

    def propensities(self, context: Context, arms: Sequence[Arm]) -> dict[str, float]:
        """Probability that this policy shows each arm in this context (keyed by artwork id,
        in the order of ``arms``); every value is > 0 and they sum to 1. Does not change the
        policy's state."""
        arms = check_arms(arms)
        return self._normalized(arms, self._propensities(context, arms))

    def _propensities_many(self, context: Context,
                           groups: list[list[Arm]]) -> list[Sequence[float]] | np.ndarray:
        """Unnormalized propensities of every group; policies over one shared reward model
        override this to score all groups in one matrix step, and may answer with a
        ``(groups, max size)`` matrix, zero past each group's size (:func:`greedy_matrix`)."""
        return [self._propensities(context, arms) for arms in groups]

    def propensities_many(self, context: Context,
                          groups: Sequence[Sequence[Arm]]) -> list[dict[str, float]]:
        """:meth:`propensities` of several titles' candidates (one list of arms per title)
        in one step: the same numbers as asking for each title on its own, for the cost of
        one posterior over all of them. Does not change the policy's state."""
        checked = [check_arms(arms) for arms in groups]
        if not checked:
            return []
        raw = self._propensities_many(context, checked)
        if isinstance(raw, np.ndarray):
            return self._normalized_matrix(checked, raw)
        return [self._normalized(arms, probs) for arms, probs
                in zip(checked, raw, strict=True)]

    def _normalized_matrix(self, groups: list[list[Arm]], raw: np.ndarray
                           ) -> list[dict[str, float]]:
        """:meth:`_normalized` of every row of ``raw`` (one group a row, zero-padded): the
        same numbers, each total summed left to right as ``sum`` does."""
        sizes = np.fromiter(map(len, groups), np.intp, len(groups))
        valid = np.arange(raw.shape[1]) < sizes[:, None]
        total = raw[:, 0].copy()
        for j in range(1, raw.shape[1]):
            total += raw[:, j]  # zero padding leaves a total as it is
        ok = (((raw > 0.0) & np.isfinite(raw)) | ~valid).all(axis=1) & np.isfinite(total)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise RuntimeError(f"{self.name}: invalid propensities "
                               f"{raw[bad, :sizes[bad]].tolist()}")
        rows = (raw / total[:, None]).tolist()
        return [dict(zip([a.artwork_id for a in arms], row[:len(arms)], strict=True))
                for arms, row in zip(groups, rows, strict=True)]

    def _normalized(self, arms: list[Arm], raw: Sequence[float]) -> dict[str, float]:
        probs = [float(p) for p in raw]
        total = sum(probs)
        if not all(p > 0.0 and math.isfinite(p) for p in probs) or not math.isfinite(total):
            raise RuntimeError(f"{self.name}: invalid propensities {probs}")
        return {a.artwork_id: p / total for a, p in zip(arms, probs, strict=True)}

    def draw(self, propensities: Mapping[str, float]) -> Choice:
        """Draw one artwork id from ``propensities`` with the policy's RNG (inverse CDF over
        the given order). :meth:`select` is ``draw(propensities(context, arms))``."""
        u = self._rng.random()
        cumulative = 0.0
        last = None
        for artwork_id, p in propensities.items():
            cumulative += p
            last = artwork_id
            if u < cumulative:
                break
        if last is None:
            raise ValueError("no propensities to draw from")
        return Choice(last, propensities[last], self.name, self._version)

    def uniforms(self, n: int) -> list[float]:
        """``n`` draws in [0, 1) from the policy's RNG, the ones :meth:`draw` would use, for
        callers that invert cumulative propensities they prepared once (many titles at a
        time: ``bisect.bisect_right(cumulative, u)`` is the drawn index).

        >>> from online_models.bandits import make_policy
        >>> a, b = make_policy("uniform", seed=3), make_policy("uniform", seed=3)
        >>> a.uniforms(2) == [b._rng.random(), b._rng.random()]
        True
        """
        return list(itertools.starmap(self._rng.random, itertools.repeat((), n)))

    def select(self, context: Context, arms: Sequence[Arm]) -> Choice:
        """Choose the artwork to show: a draw from :meth:`propensities` with the seeded RNG;
        ``Choice.propensity`` is the drawn arm's probability."""
        return self.draw(self.propensities(context, arms))

    # -- learning -------------------------------------------------------------------------
    @abc.abstractmethod
    def _learn_one(self, context: Context, arm: Arm, reward: float) -> None: ...

    def learn_one(self, context: Context, arm: Arm, reward: float) -> None:
        """Learn the reward (in [0, 1], e.g. 1 for a quality play) of showing ``arm`` in
        ``context``; bumps :attr:`version`."""
        reward = _checked_reward(reward)
        self._learn_one(context, arm, reward)
        self._version += 1

    def learn_many(self, contexts: Sequence[Context], arms: Sequence[Arm],
                   rewards: Sequence[float]) -> None:
        """:meth:`learn_one` of each ``(context, arm, reward)`` in order, as one update where
        the policy can (a ridge policy's is ~10x cheaper than one by one); :attr:`version`
        bumps once per reward."""
        values = [_checked_reward(r) for r in rewards]
        if len(contexts) != len(arms) or len(arms) != len(values):
            raise ValueError("learn_many needs as many contexts and arms as rewards")
        self._learn_many(contexts, arms, values)
        self._version += len(values)

    def _learn_many(self, contexts: Sequence[Context], arms: Sequence[Arm],
                    rewards: Sequence[float]) -> None:
        for context, arm, reward in zip(contexts, arms, rewards, strict=True):
            self._learn_one(context, arm, reward)

    # -- checkpoints ----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Settings, learned state and RNG state as JSON values and arrays: the registry
        name, the constructor's scalar settings, the seed, the version, the RNG, and what
        :meth:`_learned_state` adds."""
        params = {}
        for p in inspect.signature(type(self).__init__).parameters:
            value = getattr(self, p, params)  # params: a marker for "no such attribute"
            if p not in ("self", "seed") and (value is None or isinstance(
                    value, (int, float, str, bool))):
                params[p] = value
        return {"name": self.name, "params": params, "seed": self.seed,
                "version": self._version, "rng": random_state(self._rng),
                **self._learned_state()}

    def _learned_state(self) -> dict[str, Any]:
        """What a policy learned, for :meth:`to_state` (nothing, unless overridden)."""
        return {}

    def _restore_learned(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`_learned_state` wrote (nothing, unless overridden)."""

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ArtworkPolicy:
        """The policy :meth:`to_state` described, built by its registered class with the
        saved settings; :class:`CheckpointError` for an unknown name or a bad value."""
        from online_models.bandits import POLICIES  # the registry imports every policy

        name = require(state, cls.__name__, "name", str)
        policy_cls = POLICIES.get(name)
        if policy_cls is None or not issubclass(policy_cls, cls):
            raise CheckpointError(f"artwork checkpoint holds policy {name!r}, not a "
                                  f"{cls.__name__} ({', '.join(sorted(POLICIES))})")
        seed = state.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise CheckpointError(f"artwork checkpoint seed is {type(seed).__name__}")
        policy = policy_cls(seed=seed, **_checked_params(
            policy_cls, require(state, name, "params", dict)))
        policy._version = require(state, name, "version", int)
        set_random_state(policy._rng, state.get("rng"), name)
        policy._restore_learned(state)
        return policy

    def to_bytes(self) -> bytes:
        """A checkpoint of settings, learned state and RNG state
        (:mod:`online_models.checkpoint`: data, never code)."""
        return dumps(type(self).__name__, CHECKPOINT_FORMAT, self.to_state())

    @classmethod
    def from_bytes(cls, data: bytes) -> ArtworkPolicy:
        """Restore a checkpoint written by :meth:`to_bytes`; the restored policy continues
        exactly where the saved one was (same propensities, same next draws). Called on a
        subclass, the checkpoint must hold that subclass; :class:`CheckpointError` (a
        ``ValueError``) for anything else."""
        from online_models.bandits import POLICIES

        allowed = {c.__name__: c for c in POLICIES.values() if issubclass(c, cls)}

        def build(ck: Any) -> ArtworkPolicy:
            policy = allowed[ck.model].from_state(ck.state)
            if type(policy).__name__ != ck.model:
                raise CheckpointError(f"checkpoint of {ck.model} names policy {policy.name}")
            return policy

        return restore_any(data, allowed, {CHECKPOINT_FORMAT}, build)


def _checked_params(cls: type[ArtworkPolicy], params: dict[str, Any]) -> dict[str, Any]:
    """Saved constructor settings that ``cls`` takes, each of its default's kind (a finite
    number, None only where the setting is optional, a string or a flag); else
    :class:`CheckpointError`."""
    signature = inspect.signature(cls.__init__).parameters
    for key, value in params.items():
        p = signature.get(key)
        if p is None or key in ("self", "seed"):
            raise CheckpointError(f"artwork checkpoint sets {key!r}, which {cls.__name__} "
                                  "does not take")
        default = p.default
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:  # numbers, or None where the setting is optional
            ok = (value is None and (default is None or "None" in str(p.annotation))) or (
                isinstance(value, (int, float)) and math.isfinite(value))
        if not ok:
            raise CheckpointError(f"artwork checkpoint {key!r} is {value!r}, not a "
                                  f"{type(default).__name__} like its default")
    return params


def _checked_reward(reward: float) -> float:
    """``reward`` as a float, :class:`ValueError` unless it is in [0, 1]."""
    value = float(reward)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"reward must be in [0, 1], got {value}")
    return value
