"""Off-policy estimators for logged bandit data: replay, IPS, SNIPS, direct method, DR.

The module is longer than ~500 lines (a checkout tool, not product code) because each
estimator's docstring carries its assumptions and a worked example; the code per estimator
is short.

Pure functions, no I/O. A *round* is one logged decision: the context ``x`` the logging
policy saw, the action ``a`` it chose with probability ``p(a|x)`` (the propensity), and
the reward ``r`` observed for that action (e.g. a quality play after an artwork
impression). A *target* policy ``pi`` is the policy we would like to evaluate without
deploying it. Every estimator returns an :class:`Estimate` with a 95% confidence
interval by default.

Two ways to give the logs:

- a sequence of :class:`LoggedRound` (actions are labels, contexts are mappings), or
- a :class:`BanditLogs` of parallel numpy arrays (``BanditLogs.from_rounds`` converts).

Two ways to give a target policy:

- callables of the round's context (``target_probs(context, action) -> float``,
  ``target_dist(context) -> {action: prob}``, ``target_action(context) -> action``), or
- precomputed arrays: per-round probabilities of the *logged* action, shape ``(n,)``, or
  whole distributions of shape ``(n, K)`` when actions are integers ``0..K-1`` (the form
  Open Bandit Pipeline uses; :func:`per_position` slices obp's ``(n, K, len_list)``
  action distributions at the logged positions).

Intervals are normal approximations on per-round terms: ``value ± z * sd / sqrt(n)``
(``z = 1.96`` at 95%). They need many rounds, and with rare rewards they can collapse
(all matched rewards zero gives a zero-width interval): read ``n_effective`` next to them.
All estimators other than replay assume common support: the logging policy gives every
action the target may take a positive probability.

Examples
--------
Four rounds logged uniformly over two artworks; the target always shows ``"A"``.

>>> logs = [
...     LoggedRound({"member": 1}, "A", 1.0, 0.5),
...     LoggedRound({"member": 2}, "B", 0.0, 0.5),
...     LoggedRound({"member": 3}, "A", 0.0, 0.5),
...     LoggedRound({"member": 4}, "B", 1.0, 0.5),
... ]
>>> always_a = lambda context, action: 1.0 if action == "A" else 0.0
>>> round(ips(logs, always_a).value, 4), replay(logs, lambda context: "A").n_effective
(0.5, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np

from evaluation.stats import Interval, z_value

Context: TypeAlias = Any
Action: TypeAlias = Hashable
TargetProbs: TypeAlias = Callable[[Context, Action], float] | np.ndarray | Sequence[float]
TargetDist: TypeAlias = Callable[[Context], Mapping[Action, float]] | np.ndarray
RewardModel: TypeAlias = Callable[[Context, Action], float] | np.ndarray

_DIST_TOL = 1e-6  # how far a target distribution may sum from 1 (float round-off)


@dataclass(frozen=True)
class LoggedRound:
    """One logged bandit decision.

    Parameters
    ----------
    context : Mapping
        What the logging policy saw (member features, device, time, ...).
    action : str
        The action it chose (e.g. an artwork id).
    reward : float
        The reward observed for that action (e.g. 1.0 for a quality play, else 0.0).
    propensity : float
        ``p(action | context)`` under the logging policy, in ``(0, 1]``.
    position : int or None, default None
        Slot of the action on the page for slate logs (metadata; estimators take
        position-aware target probabilities as arrays, see :func:`per_position`).

    Raises
    ------
    ValueError
        If ``propensity`` is not in ``(0, 1]`` or ``reward`` is not finite.

    Examples
    --------
    >>> LoggedRound({"country": "NL"}, "art-2", 1.0, 0.25).propensity
    0.25
    >>> LoggedRound({}, "art-2", 1.0, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: propensity must be in (0, 1], got 0.0
    """

    context: Mapping[str, Any]
    action: str
    reward: float
    propensity: float
    position: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.propensity) and 0.0 < self.propensity <= 1.0):
            raise ValueError(f"propensity must be in (0, 1], got {self.propensity}")
        if not math.isfinite(self.reward):
            raise ValueError(f"reward must be finite, got {self.reward}")


@dataclass(frozen=True, eq=False)
class BanditLogs:
    """Logged rounds as parallel arrays (the fast path; OBD loads into this).

    Parameters
    ----------
    actions : array_like, shape (n,)
        Logged actions: labels, or integers ``0..K-1`` for array-form target policies.
    rewards : array_like of float, shape (n,)
        Observed rewards, finite.
    propensities : array_like of float, shape (n,)
        Logging probabilities of the logged actions, each in ``(0, 1]``.
    contexts : sequence, optional
        One context per round (mappings, or rows of a 2-D array). Needed only by
        callable target policies and reward models.
    positions : array_like of int, shape (n,), optional
        Slot of each logged action for slate logs.

    Raises
    ------
    ValueError
        If the logs are empty, lengths differ, a propensity is outside ``(0, 1]`` or a
        reward is not finite.

    Examples
    --------
    >>> logs = BanditLogs(actions=[0, 1, 1], rewards=[1, 0, 0], propensities=[0.5] * 3)
    >>> len(logs), logs.rewards.dtype
    (3, dtype('float64'))
    >>> BanditLogs(actions=[0, 1], rewards=[1.0], propensities=[0.5, 0.5])
    Traceback (most recent call last):
    ...
    ValueError: rewards has 1 entries, expected 2 (one per logged action)
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    contexts: Sequence[Context] | np.ndarray | None = None
    positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions)
        if actions.ndim != 1 or len(actions) == 0:
            raise ValueError("actions must be a non-empty one-dimensional array")
        n = len(actions)
        rewards = _vector(self.rewards, "rewards", n)
        propensities = _vector(self.propensities, "propensities", n)
        if not np.all(np.isfinite(rewards)):
            raise ValueError("rewards must be finite")
        bad = ~(np.isfinite(propensities) & (propensities > 0.0) & (propensities <= 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"propensities must be in (0, 1]; round {i} has {propensities[i]}")
        if self.contexts is not None and len(self.contexts) != n:
            raise ValueError(
                f"contexts has {len(self.contexts)} entries, expected {n} (one per action)"
            )
        positions = None
        if self.positions is not None:
            positions = np.asarray(self.positions)
            if positions.shape != (n,) or not np.issubdtype(positions.dtype, np.integer):
                raise ValueError(f"positions must be {n} integers")
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "propensities", propensities)
        object.__setattr__(self, "positions", positions)

    @classmethod
    def from_rounds(cls, rounds: Sequence[LoggedRound]) -> BanditLogs:
        """Convert a sequence of :class:`LoggedRound` to arrays.

        Examples
        --------
        >>> logs = BanditLogs.from_rounds([LoggedRound({}, "A", 1.0, 0.5, position=0)])
        >>> logs.actions.tolist(), logs.positions.tolist()
        (['A'], [0])
        """
        rounds = list(rounds)
        if not rounds:
            raise ValueError("no logged rounds")
        actions = np.empty(len(rounds), dtype=object)
        actions[:] = [r.action for r in rounds]
        has_pos = [r.position is not None for r in rounds]
        if any(has_pos) and not all(has_pos):
            raise ValueError("either every round has a position or none has")
        return cls(
            actions=actions,
            rewards=[r.reward for r in rounds],
            propensities=[r.propensity for r in rounds],
            contexts=[r.context for r in rounds],
            positions=[r.position for r in rounds] if all(has_pos) else None,
        )

    def __len__(self) -> int:
        return len(self.actions)

    def require_contexts(self) -> Sequence[Context] | np.ndarray:
        """The contexts, or a ValueError naming why they are needed."""
        if self.contexts is None:
            raise ValueError("callable target policies and reward models need contexts")
        return self.contexts


Logs: TypeAlias = BanditLogs | Sequence[LoggedRound]


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with a normal-approximation confidence interval.

    Attributes
    ----------
    value : float
        The estimated expected reward per round of the target policy.
    ci_low, ci_high : float
        ``value ± z * std_error`` at ``confidence``.
    n : int
        Logged rounds used.
    n_effective : float
        Replay: the number of matched rounds (the rounds the estimate averages over).
        IPS / SNIPS / DR: Kish's effective sample size of the importance weights,
        ``(sum w)^2 / sum w^2``. DM and on-policy: ``n``.
    std_error : float
        Standard error of ``value``.
    method : str
        Estimator name.
    confidence : float
        Coverage of the interval.
    influence : numpy.ndarray or None
        Per-round terms whose sample standard deviation over ``sqrt(n)`` is
        ``std_error`` (IPS/DM/DR: the terms averaged; SNIPS: the delta-method terms);
        :func:`paired_difference` uses them. Not shown in ``repr``.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_effective: float
    std_error: float
    method: str
    confidence: float = 0.95
    influence: np.ndarray | None = field(default=None, repr=False, compare=False)

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the interval (ends included).

        Examples
        --------
        >>> Estimate(0.5, 0.4, 0.6, 10, 10.0, 0.05, "ips").contains(0.6)
        True
        """
        return self.ci_low <= x <= self.ci_high

    @property
    def interval(self) -> Interval:
        """The interval as the evaluations' one interval type."""
        return Interval(self.value, self.ci_low, self.ci_high, self.std_error, self.confidence)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (without ``influence``)."""
        return {
            "method": self.method,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_error": self.std_error,
            "n": self.n,
            "n_effective": self.n_effective,
            "confidence": self.confidence,
        }

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return (
            f"{self.method}: {self.value:.6f} [{self.ci_low:.6f}, {self.ci_high:.6f}] "
            f"({pct}% CI, n={self.n}, n_eff={self.n_effective:.1f})"
        )


# ----------------------------------------------------------------------------- estimators


def on_policy(logs: Logs, *, confidence: float = 0.95) -> Estimate:
    """Mean logged reward: the on-policy value of the logging policy itself.

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        At least two rounds.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``method="on-policy"``.

    Examples
    --------
    >>> est = on_policy(BanditLogs(actions=[0, 1, 0, 1], rewards=[1, 0, 0, 1],
    ...                            propensities=[0.5] * 4))
    >>> round(est.value, 4), round(est.std_error, 4)
    (0.5, 0.2887)
    """
    b = _as_logs(logs)
    return _mean_estimate("on-policy", b.rewards, float(len(b)), confidence)


def _target_actions(b: BanditLogs,
                    target_action: Callable[[Context], Action] | np.ndarray | Sequence[Action]
                    ) -> list[Action]:
    """The target policy's action for each logged round (called on its context, or given)."""
    if callable(target_action):
        return [target_action(c) for c in b.require_contexts()]
    chosen = list(np.asarray(target_action, dtype=object))
    if len(chosen) != len(b):
        raise ValueError(f"got {len(chosen)} target actions for {len(b)} rounds")
    return chosen


def replay(
    logs: Logs,
    target_action: Callable[[Context], Action] | np.ndarray | Sequence[Action],
    *,
    confidence: float = 0.95,
    require_uniform: bool = True,
    interval: Literal["normal", "wilson"] = "normal",
) -> Estimate:
    """Li et al. (2011) replay: mean reward on the rounds where the target agrees.

    Keeps the logged rounds whose logged action equals the target policy's action for
    that context and averages their rewards (with plays as rewards, the *take fraction*
    of the target policy). Unbiased when the logging policy chose uniformly at random
    among a fixed set of actions: then a round matches with the same probability
    ``1/K`` whatever the context, so the matched rounds are a random sample of contexts
    in which the target's action was shown. With any other logging policy the matched
    subset over-represents contexts and actions the logger favoured, which biases the
    estimate; use :func:`ips`, :func:`snips` or :func:`doubly_robust` there.

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        The logged rounds.
    target_action : callable or array_like
        ``target_action(context) -> action``, or the target's action for every round.
        A stochastic target may sample inside the callable.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.
    require_uniform : bool, default True
        Check that all propensities are equal (uniform random logging) and raise
        otherwise. ``False`` accepts the bias.
    interval : {"normal", "wilson"}, default "normal"
        ``"normal"``: ``mean ± z * sd / sqrt(n_matched)``. ``"wilson"``: the Wilson score
        interval for a proportion (rewards must be 0 or 1), which stays meaningful with
        few or no matched rewards, where the normal interval collapses to a point.

    Returns
    -------
    Estimate
        ``value`` = mean matched reward; ``n_effective`` = number of matched rounds;
        ``std_error`` = ``sd / sqrt(n_matched)`` (normal) or ``sqrt(p (1 - p) / n_matched)``
        (Wilson).

    Raises
    ------
    ValueError
        If logging was not uniform (with ``require_uniform``), fewer than two rounds
        match, or the targets do not line up with the rounds.

    Examples
    --------
    >>> logs = BanditLogs(actions=["A", "B", "A", "B"], rewards=[1, 0, 0, 1],
    ...                   propensities=[0.5] * 4)
    >>> est = replay(logs, ["A", "A", "A", "A"])
    >>> est.value, est.n_effective, round(est.ci_low, 4), round(est.ci_high, 4)
    (0.5, 2.0, -0.48, 1.48)

    No matched reward: the normal interval is the point 0, Wilson's is ``[0, z^2/(m+z^2)]``.

    >>> est = replay(logs, ["B", "B", "A", "A"], interval="wilson")
    >>> est.value, est.ci_low, round(est.ci_high, 4)
    (0.0, 0.0, 0.6576)
    >>> replay(BanditLogs(actions=["A", "B"], rewards=[1, 0], propensities=[0.9, 0.1]),
    ...        ["A", "A"])
    Traceback (most recent call last):
    ...
    ValueError: replay is unbiased only under uniform random logging (all propensities \
equal); propensities range from 0.1 to 0.9. Use ips/snips/doubly_robust, or pass \
require_uniform=False to accept the bias
    """
    b = _as_logs(logs)
    if require_uniform:
        _check_uniform(b.propensities)
    chosen = _target_actions(b, target_action)
    matched = np.fromiter(
        (bool(t == a) for t, a in zip(chosen, b.actions, strict=True)), dtype=bool, count=len(b)
    )
    m = int(matched.sum())
    if m < 2:
        raise ValueError(f"replay needs at least two matched rounds, got {m}")
    value, lo, hi, se = _replay_interval(b.rewards[matched], interval, confidence)
    return Estimate(value, lo, hi, len(b), float(m), se, "replay", confidence)


def _check_uniform(p: np.ndarray) -> None:
    """Raise unless every propensity is the same (uniform random logging)."""
    if not np.allclose(p, p[0], rtol=1e-9, atol=0.0):
        raise ValueError(
            "replay is unbiased only under uniform random logging (all propensities "
            f"equal); propensities range from {p.min():.6g} to {p.max():.6g}. Use "
            "ips/snips/doubly_robust, or pass require_uniform=False to accept the bias"
        )


def _replay_interval(r: np.ndarray, interval: str,
                     confidence: float) -> tuple[float, float, float, float]:
    """``(mean, low, high, standard error)`` of the matched rewards ``r`` (see :func:`replay`)."""
    m = len(r)
    value = float(r.mean())
    if interval == "wilson":
        if not np.all((r == 0.0) | (r == 1.0)):
            raise ValueError("the Wilson interval needs rewards that are 0 or 1")
        se = math.sqrt(value * (1.0 - value) / m)
        lo, hi = _wilson(value, m, confidence)
    elif interval == "normal":
        se = float(r.std(ddof=1) / math.sqrt(m))
        lo, hi = _interval(value, se, confidence)
    else:
        raise ValueError(f"interval must be 'normal' or 'wilson', got {interval!r}")
    return value, lo, hi, se


def ips(logs: Logs, target_probs: TargetProbs, *, confidence: float = 0.95) -> Estimate:
    """Inverse propensity scoring: ``mean(w * r)`` with ``w = pi(a|x) / p(a|x)``.

    Unbiased under common support for any logging policy with known propensities;
    variance grows with the weights.

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        At least two rounds.
    target_probs : callable or array_like
        ``target_probs(context, action) -> pi(action | context)``; or an array of shape
        ``(n,)`` with the target probability of each round's *logged* action; or an
        ``(n, K)`` array of target distributions when actions are integers ``0..K-1``.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``n_effective`` is Kish's effective sample size of the weights.

    Raises
    ------
    ValueError
        If a target probability is outside ``[0, 1]``, an ``(n, K)`` row does not sum to
        one, or shapes do not match the logs.

    Examples
    --------
    Weights ``[2, 0, 2, 0]``, terms ``[2, 0, 0, 0]``: mean 0.5, sd 1, se 0.5.

    >>> logs = BanditLogs(actions=[0, 1, 0, 1], rewards=[1, 0, 0, 1], propensities=[0.5] * 4)
    >>> est = ips(logs, [1.0, 0.0, 1.0, 0.0])
    >>> est.value, est.std_error, est.n_effective, round(est.ci_high, 4)
    (0.5, 0.5, 2.0, 1.48)
    >>> ips(logs, [[1.0, 0.0]] * 4).value
    0.5
    """
    b = _as_logs(logs)
    w = _target_logged_probs(b, target_probs) / b.propensities
    terms = w * b.rewards
    return _mean_estimate("ips", terms, _kish(w), confidence)


def snips(logs: Logs, target_probs: TargetProbs, *, confidence: float = 0.95) -> Estimate:
    """Self-normalized IPS: ``sum(w * r) / sum(w)``.

    Slightly biased, usually much lower variance than :func:`ips`, and always inside the
    reward range. The interval uses the delta method for the ratio: the standard error
    is ``sd(w * (r - value) / mean(w)) / sqrt(n)`` (no resampling, deterministic).

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        At least two rounds.
    target_probs : callable or array_like
        As for :func:`ips`.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``n_effective`` is Kish's effective sample size of the weights.

    Raises
    ------
    ValueError
        As :func:`ips`, and when the target gives zero probability to every logged action.

    Examples
    --------
    Weights ``[2, 0, 2, 0]``: value ``2 / 4 = 0.5``; delta-method terms
    ``w * (r - 0.5) / 1 = [1, 0, -1, 0]``, sd ``sqrt(2/3)``, se ``sqrt(2/3) / 2``.

    >>> logs = BanditLogs(actions=[0, 1, 0, 1], rewards=[1, 0, 0, 1], propensities=[0.5] * 4)
    >>> est = snips(logs, [1.0, 0.0, 1.0, 0.0])
    >>> est.value, round(est.std_error, 4)
    (0.5, 0.4082)
    """
    b = _as_logs(logs)
    w = _target_logged_probs(b, target_probs) / b.propensities
    total = float(w.sum())
    if total <= 0.0:
        raise ValueError("the target policy gives zero probability to every logged action")
    value = float((w * b.rewards).sum() / total)
    influence = w * (b.rewards - value) / w.mean()
    return _linear_estimate("snips", value, influence, _kish(w), confidence)


def direct_method(
    logs: Logs, target_dist: TargetDist, reward_model: RewardModel, *, confidence: float = 0.95
) -> Estimate:
    """Direct method: ``mean(sum_a pi(a|x) q(x, a))`` over the logged contexts.

    Uses only the contexts and a reward model ``q``; biased whenever ``q`` is. For
    reference next to :func:`doubly_robust`. The interval reflects only the sampling of
    contexts, not the reward model's error, so it is optimistic.

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        At least two rounds.
    target_dist : callable or ndarray
        ``target_dist(context) -> {action: probability}`` (sums to one), or an ``(n, K)``
        array of distributions when actions are integers ``0..K-1``.
    reward_model : callable or ndarray
        ``reward_model(context, action) -> expected reward``, or an ``(n, K)`` array;
        must be of the same kind as ``target_dist``. Fit it on other data than the logs
        evaluated (or cross-fit).
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``n_effective = n``.

    Examples
    --------
    >>> logs = [LoggedRound({}, "A", 1.0, 0.5), LoggedRound({}, "B", 0.0, 0.5)]
    >>> q = lambda context, action: {"A": 0.4, "B": 0.6}[action]
    >>> direct_method(logs, lambda context: {"A": 1.0}, q).value
    0.4
    """
    b = _as_logs(logs)
    _, _, v_hat = _dist_and_model(b, target_dist, reward_model)
    return _mean_estimate("dm", v_hat, float(len(b)), confidence)


def doubly_robust(
    logs: Logs, target_dist: TargetDist, reward_model: RewardModel, *, confidence: float = 0.95
) -> Estimate:
    """Doubly robust: ``mean(sum_a pi(a|x) q(x,a) + w * (r - q(x, a_logged)))``.

    Unbiased if either the propensities or the reward model are right; lower variance
    than :func:`ips` when ``q`` is good.

    Parameters
    ----------
    logs : BanditLogs or sequence of LoggedRound
        At least two rounds.
    target_dist : callable or ndarray
        As for :func:`direct_method`.
    reward_model : callable or ndarray
        As for :func:`direct_method`.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``n_effective`` is Kish's effective sample size of the weights.

    Examples
    --------
    Terms ``0.4 + 2 * (1 - 0.4)``, ``0.4``, ``0.4 + 2 * (0 - 0.4)``, ``0.4``: mean 0.5.

    >>> logs = [LoggedRound({}, "A", 1.0, 0.5), LoggedRound({}, "B", 0.0, 0.5),
    ...         LoggedRound({}, "A", 0.0, 0.5), LoggedRound({}, "B", 1.0, 0.5)]
    >>> q = lambda context, action: {"A": 0.4, "B": 0.6}[action]
    >>> round(doubly_robust(logs, lambda context: {"A": 1.0}, q).value, 6)
    0.5
    """
    b = _as_logs(logs)
    pi_logged, q_logged, v_hat = _dist_and_model(b, target_dist, reward_model)
    w = pi_logged / b.propensities
    terms = v_hat + w * (b.rewards - q_logged)
    return _mean_estimate("dr", terms, _kish(w), confidence)


def paired_difference(a: Estimate, b: Estimate, *, confidence: float = 0.95) -> Estimate:
    """``a - b`` for two estimates computed on the *same* logged rounds, paired per round.

    The standard error is ``sd(influence_a - influence_b) / sqrt(n)``: pairing removes the
    shared noise (e.g. the same clicks), so the interval is much narrower than the two
    separate intervals suggest. Replay estimates carry no per-round terms and cannot be
    paired.

    Parameters
    ----------
    a, b : Estimate
        From :func:`ips`, :func:`snips`, :func:`direct_method`, :func:`doubly_robust` or
        :func:`on_policy` on the same rounds in the same order.
    confidence : float, default 0.95
        Interval coverage, in ``(0, 1)``.

    Returns
    -------
    Estimate
        ``method="<a> - <b>"``, ``n_effective = min`` of the two.

    Raises
    ------
    ValueError
        If either estimate lacks per-round terms or they cover different numbers of rounds.

    Examples
    --------
    >>> logs = BanditLogs(actions=[0, 1, 0, 1], rewards=[1, 0, 0, 1], propensities=[0.5] * 4)
    >>> d = paired_difference(ips(logs, [1.0, 0.0, 1.0, 0.0]), on_policy(logs))
    >>> d.method, d.value
    ('ips - on-policy', 0.0)
    """
    if a.influence is None or b.influence is None:
        raise ValueError("both estimates need per-round terms (replay has none)")
    if len(a.influence) != len(b.influence):
        raise ValueError(
            f"estimates cover different rounds ({len(a.influence)} vs {len(b.influence)})"
        )
    d = a.influence - b.influence
    return _linear_estimate(
        f"{a.method} - {b.method}",
        a.value - b.value,
        d,
        min(a.n_effective, b.n_effective),
        confidence,
    )


def per_position(action_dist: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Slice slate action distributions at each round's logged position.

    Parameters
    ----------
    action_dist : ndarray, shape (K, L) or (n, K, L)
        ``action_dist[..., a, l]`` = probability that the target puts action ``a`` in
        slot ``l`` (obp's layout; a ``(K, L)`` array is the same for every round).
    positions : array_like of int, shape (n,)
        The logged slot of each round, ``0..L-1``.

    Returns
    -------
    ndarray, shape (n, K)
        Row ``i`` is the target's distribution over actions for slot ``positions[i]``,
        usable as ``target_probs`` / ``target_dist``.

    Examples
    --------
    >>> dist = np.array([[0.5, 0.1], [0.5, 0.9]])  # 2 actions x 2 slots
    >>> per_position(dist, np.array([1, 0, 1])).tolist()
    [[0.1, 0.9], [0.5, 0.5], [0.1, 0.9]]
    """
    positions = np.asarray(positions)
    dist = np.asarray(action_dist, dtype=float)
    if dist.ndim == 2:
        if positions.size and (positions.min() < 0 or positions.max() >= dist.shape[1]):
            raise ValueError(f"positions must be in [0, {dist.shape[1]})")
        return dist[:, positions].T.copy()
    if dist.ndim == 3:
        if dist.shape[0] != len(positions):
            raise ValueError(f"action_dist has {dist.shape[0]} rounds, got {len(positions)}")
        return dist[np.arange(len(positions)), :, positions]
    raise ValueError(f"action_dist must have 2 or 3 dimensions, got {dist.ndim}")


# ------------------------------------------------------------------------------- helpers


def _as_logs(logs: Logs) -> BanditLogs:
    b = logs if isinstance(logs, BanditLogs) else BanditLogs.from_rounds(logs)
    if len(b) < 2:
        raise ValueError(f"need at least two logged rounds for an interval, got {len(b)}")
    return b


def _vector(values: Any, name: str, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries, expected {n} (one per logged action)")
    return arr


def _integer_actions(b: BanditLogs, k: int) -> np.ndarray:
    a = b.actions
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= k:
        raise ValueError(
            f"array-form (n, K) targets index actions by number: actions must be "
            f"integers in [0, {k})"
        )
    return a


def _check_probs(p: np.ndarray, what: str) -> None:
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0 + _DIST_TOL))
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), p.shape)
        raise ValueError(f"{what} must be probabilities in [0, 1]; got {p[i]} at {i}")


def _check_rows_sum_to_one(dist: np.ndarray) -> None:
    sums = dist.sum(axis=1)
    off = np.abs(sums - 1.0) > _DIST_TOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(f"target distribution of round {i} sums to {sums[i]}, not 1")


def _target_logged_probs(b: BanditLogs, target_probs: TargetProbs) -> np.ndarray:
    n = len(b)
    if callable(target_probs):
        contexts = b.require_contexts()
        probs = np.array(
            [float(target_probs(c, a)) for c, a in zip(contexts, b.actions, strict=True)]
        )
    else:
        arr = np.asarray(target_probs, dtype=float)
        if arr.ndim == 1:
            if len(arr) != n:
                raise ValueError(f"got {len(arr)} target probabilities for {n} rounds")
            probs = arr
        elif arr.ndim == 2:
            if arr.shape[0] != n:
                raise ValueError(f"target distributions have {arr.shape[0]} rows for {n} rounds")
            _check_probs(arr, "target distributions")
            _check_rows_sum_to_one(arr)
            probs = arr[np.arange(n), _integer_actions(b, arr.shape[1])]
        else:
            raise ValueError("target probabilities must be a callable, an (n,) or an (n, K) array")
    _check_probs(probs, "target probabilities")
    return np.minimum(probs, 1.0)


def _dist_and_model(
    b: BanditLogs, target_dist: TargetDist, reward_model: RewardModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per round: pi(a_logged|x), q(x, a_logged), and sum_a pi(a|x) q(x, a)."""
    n = len(b)
    if callable(target_dist) != callable(reward_model):
        raise ValueError("give target_dist and reward_model both as callables or both as arrays")
    if callable(target_dist):
        contexts = b.require_contexts()
        pi_logged, q_logged, v_hat = np.empty(n), np.empty(n), np.empty(n)
        for i, (c, a) in enumerate(zip(contexts, b.actions, strict=True)):
            dist = target_dist(c)
            probs = np.array([float(p) for p in dist.values()])
            _check_probs(probs, f"target distribution of round {i}")
            if abs(probs.sum() - 1.0) > _DIST_TOL:
                raise ValueError(f"target distribution of round {i} sums to {probs.sum()}, not 1")
            pi_logged[i] = float(dist.get(a, 0.0))
            q_logged[i] = float(reward_model(c, a))
            v_hat[i] = sum(
                float(p) * float(reward_model(c, act)) for act, p in dist.items() if p > 0.0
            )
    else:
        dist = np.asarray(target_dist, dtype=float)
        q = np.asarray(reward_model, dtype=float)
        if dist.ndim != 2 or dist.shape[0] != n:
            raise ValueError(f"target_dist must have shape (n={n}, K), got {dist.shape}")
        if q.shape != dist.shape:
            raise ValueError(f"reward_model has shape {q.shape}, expected {dist.shape}")
        _check_probs(dist, "target distributions")
        _check_rows_sum_to_one(dist)
        rows = np.arange(n)
        actions = _integer_actions(b, dist.shape[1])
        pi_logged, q_logged = dist[rows, actions], q[rows, actions]
        v_hat = (dist * q).sum(axis=1)
    if not (np.all(np.isfinite(q_logged)) and np.all(np.isfinite(v_hat))):
        raise ValueError("reward model predictions must be finite")
    return np.minimum(pi_logged, 1.0), q_logged, v_hat


def _kish(w: np.ndarray) -> float:
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0.0 else 0.0


def _interval(value: float, se: float, confidence: float) -> tuple[float, float]:
    ci = Interval.normal(value, se, confidence)
    return ci.low, ci.high


def _wilson(p: float, m: int, confidence: float) -> tuple[float, float]:
    z2 = z_value(confidence) ** 2
    center = (p + z2 / (2 * m)) / (1 + z2 / m)
    half = math.sqrt(z2) / (1 + z2 / m) * math.sqrt(p * (1 - p) / m + z2 / (4 * m * m))
    # clamp round-off: the Wilson interval always contains p and stays in [0, 1]
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


def _linear_estimate(
    method: str, value: float, influence: np.ndarray, n_eff: float, confidence: float
) -> Estimate:
    n = len(influence)
    se = float(influence.std(ddof=1) / math.sqrt(n))
    lo, hi = _interval(value, se, confidence)
    return Estimate(value, lo, hi, n, n_eff, se, method, confidence, influence)


def _mean_estimate(method: str, terms: np.ndarray, n_eff: float, confidence: float) -> Estimate:
    return _linear_estimate(method, float(terms.mean()), terms, n_eff, confidence)
