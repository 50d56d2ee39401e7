"""Power of "policy beats uniform" on OBD-sized uniform-random logs (pure, numpy only).

The module is longer than ~500 lines (a checkout tool, not product code) because the closed
forms and the simulations that check them sit side by side.

The OBD sample's ``random/all`` file has 10,000 rounds and 38 clicks; the report's test
half has 5,000 rounds and 19 clicks. This module asks how often the report's test -- the
paired per-round difference ``ips(policy) - ips(uniform)`` (:func:`~evaluation.offline.ips`
and :func:`~evaluation.offline.paired_difference`, the exact code
:func:`evaluation.obd.check.run_contextual_comparison` uses) having a 95% interval entirely above
0 -- would succeed if the per-item click rates were known.

Simulated logs mirror the real ``random/all`` rounds: one logged (item, slot) per round,
the item uniform over the ``K`` items (propensity ``1/K``, as the file's
``propensity_score`` 0.0125 for ``K = 80``), the slot uniform over the ``L`` slots (the
file: 3,322 / 3,412 / 3,266), and the click ``~ Bernoulli(ctr[item, slot])``.

With uniform logging the per-round paired term is ``d_i = (K pi(a_i | l_i) - 1) r_i``, so
its mean and variance are exact functions of the truth (:func:`paired_moments`):

- ``E d = mean_l [sum_a pi(a|l) c(a,l) - mean_a c(a,l)]`` (the true value difference),
- ``E d^2 = mean_{a,l} (K pi(a|l) - 1)^2 c(a,l)``.

The number of rounds for a given power is then the normal approximation
``n = ((z_{1-alpha/2} + z_power) sd / diff)^2`` (:func:`rounds_for_power`); the simulation
checks the approximation at the actual test size, where it can be poor (a deterministic
policy's estimate rests on the few clicks among the ``n / K`` rounds it matches), and
repeats it with every item at the mean click rate to measure the test's false-positive
rate at that click count (``null_rate``, nominal 0.025).

Over *all* per-item policies the best signal-to-noise ratio ``diff / sd`` has a closed form
(:func:`max_signal_to_noise`, by Cauchy-Schwarz), so :func:`run_obd_power` also states the
fewest rounds any non-contextual policy, however well informed, would need.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from evaluation.obd.models import SegmentCtrModel
from evaluation.offline import BanditLogs, Estimate, ips, paired_difference
from evaluation.stats import z_value

DEFAULT_SEED = 20_240_601


# ---------------------------------------------------------------------------- truth


def zozotown_item_ctr(alpha: np.ndarray, beta: np.ndarray, mean_ctr: float) -> np.ndarray:
    """Per-item click rates from a Beta prior: ``alpha / (alpha + beta)``, rescaled to ``mean_ctr``.

    Examples
    --------
    >>> zozotown_item_ctr(np.array([1.0, 3.0]), np.array([99.0, 97.0]), 0.01).tolist()
    [0.005, 0.015]
    """
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    if alpha.shape != beta.shape or alpha.ndim != 1 or alpha.size == 0:
        raise ValueError("alpha and beta must be non-empty vectors of the same length")
    if (alpha <= 0).any() or (beta <= 0).any():
        raise ValueError("alpha and beta must be positive")
    if not mean_ctr > 0.0:
        raise ValueError(f"mean_ctr must be positive, got {mean_ctr}")
    mean = alpha / (alpha + beta)
    ctr = mean * (mean_ctr / mean.mean())
    if ctr.max() > 1.0:
        raise ValueError(f"mean_ctr {mean_ctr} does not give click rates in (0, 1]")
    return ctr


def _as_slots(values: np.ndarray, len_list: int, what: str) -> np.ndarray:
    """A ``(K,)`` or ``(K, L)`` array as ``(K, L)``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = np.repeat(arr[:, None], len_list, axis=1)
    if arr.ndim != 2 or arr.shape[1] != len_list or arr.shape[0] < 2:
        raise ValueError(f"{what} must have shape (K,) or (K, {len_list}) with K >= 2")
    return arr


def _check_truth(ctr: np.ndarray) -> None:
    if not np.all((ctr > 0.0) & (ctr <= 1.0)):
        raise ValueError("item_ctr must be click rates in (0, 1]")


def _check_policy(dist: np.ndarray, k: int) -> None:
    if dist.shape[0] != k:
        raise ValueError(f"policy_dist has {dist.shape[0]} items, item_ctr has {k}")
    if (dist < 0).any() or not np.allclose(dist.sum(axis=0), 1.0, atol=1e-9):
        raise ValueError("policy_dist must be a distribution over items in every slot")


# ------------------------------------------------------------------------ policies


def best_item_policy(item_ctr: np.ndarray) -> np.ndarray:
    """The oracle deterministic policy: the item with the highest click rate, shape ``(K,)``.

    Examples
    --------
    >>> best_item_policy(np.array([0.1, 0.3, 0.2])).tolist()
    [0.0, 1.0, 0.0]
    """
    ctr = np.asarray(item_ctr, dtype=float)
    out = np.zeros(len(ctr))
    out[int(np.argmax(ctr))] = 1.0
    return out


def softmax_policy(item_ctr: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``pi(a)`` proportional to ``exp(logit(ctr_a) / temperature)``, shape ``(K,)``.

    The same form as :meth:`evaluation.obd.models.RidgeLogisticCtr.softmax_policy` (at temperature
    1 an item's share is proportional to its click odds).

    Examples
    --------
    >>> softmax_policy(np.array([0.2, 0.5]), 1.0).round(4).tolist()  # odds 0.25 and 1
    [0.2, 0.8]
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ctr = np.clip(np.asarray(item_ctr, dtype=float), 1e-12, 1 - 1e-12)
    z = np.log(ctr / (1 - ctr)) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def most_detectable_policy(item_ctr: np.ndarray) -> np.ndarray:
    """The per-item policy with the largest ``diff / sd`` of the paired IPS test, shape ``(K,)``.

    ``pi(a) = (1 + eps (1 - H / c_a)) / K`` with ``H`` the harmonic mean of the click rates
    and ``eps`` as large as keeps every share non-negative (the worst item gets 0). Every
    ``eps > 0`` gives the same signal-to-noise ratio, :func:`max_signal_to_noise`.

    Examples
    --------
    >>> most_detectable_policy(np.array([0.1, 0.1])).tolist()  # no signal: uniform
    [0.5, 0.5]
    """
    c = np.asarray(item_ctr, dtype=float)
    _check_truth(c)
    k = len(c)
    h = k / float(np.sum(1.0 / c))
    direction = 1.0 - h / c
    lowest = float(direction.min())
    if lowest >= -1e-15:  # all click rates equal
        return np.full(k, 1.0 / k)
    pi = (1.0 + direction / -lowest) / k
    pi = np.maximum(pi, 0.0)
    return pi / pi.sum()


# --------------------------------------------------------------------- closed forms


def paired_moments(item_ctr: np.ndarray, policy_dist: np.ndarray,
                   len_list: int = 1) -> tuple[float, float]:
    """Mean and standard deviation of one round's paired term ``(K pi(a|l) - 1) r``.

    Under uniform logging over items and slots; the mean is the true value difference
    ``V(pi) - V(uniform)``.

    Parameters
    ----------
    item_ctr : ndarray, shape (K,) or (K, L)
        True click rate of each item (in each slot).
    policy_dist : ndarray, shape (K,) or (K, L)
        Target policy's distribution over items (in each slot).
    len_list : int, default 1
        Number of slots ``L`` (needed when both arrays are ``(K,)`` only for the shape).

    Returns
    -------
    (float, float)

    Examples
    --------
    >>> diff, sd = paired_moments(np.array([0.2, 0.0 + 1e-9]), np.array([1.0, 0.0]))
    >>> round(diff, 6), round(sd, 6)  # d = r on item 0 (prob 1/2), -r on item 1
    (0.1, 0.3)
    """
    c = _as_slots(item_ctr, len_list, "item_ctr")
    pi = _as_slots(policy_dist, c.shape[1], "policy_dist")
    _check_policy(pi, c.shape[0])
    k = c.shape[0]
    diff = float(np.mean(np.sum(pi * c, axis=0) - c.mean(axis=0)))
    second = float(np.mean((k * pi - 1.0) ** 2 * c))
    return diff, math.sqrt(max(second - diff * diff, 0.0))


def max_signal_to_noise(item_ctr: np.ndarray, len_list: int = 1) -> float:
    """The largest ``diff / sd`` (per round) of the paired IPS test over all per-item policies.

    With ``delta = pi - 1/K`` the mean is ``sum delta (c - H)`` for any constant ``H`` and
    ``E d^2 = K sum delta^2 c``; Cauchy-Schwarz gives ``diff^2 / E d^2 <= R`` with
    ``R = mean_{a,l} (c - H_l)^2 / c`` (``H_l`` the harmonic mean of slot ``l``'s rates),
    attained by :func:`most_detectable_policy`, so ``diff / sd <= sqrt(R / (1 - R))``.

    Examples
    --------
    >>> c = np.array([0.01, 0.02, 0.05])
    >>> diff, sd = paired_moments(c, most_detectable_policy(c))
    >>> round(diff / sd, 9) == round(max_signal_to_noise(c), 9)
    True
    """
    c = _as_slots(item_ctr, len_list, "item_ctr")
    _check_truth(c)
    h = c.shape[0] / np.sum(1.0 / c, axis=0)
    r = float(np.mean((c - h) ** 2 / c))
    return math.sqrt(r / (1.0 - r))


def rounds_for_power(diff: float, sd: float, *, power: float = 0.8,
                     confidence: float = 0.95) -> float:
    """Normal-approximation rounds for the two-sided interval to exclude 0 with ``power``.

    ``((z_{(1+confidence)/2} + z_power) sd / diff)^2``; ``inf`` when ``diff <= 0``.

    Examples
    --------
    >>> round(rounds_for_power(0.1, 1.0))  # (1.96 + 0.8416)^2 * 100
    785
    """
    if diff <= 0:
        return math.inf
    z = z_value(confidence) + NormalDist().inv_cdf(power)
    return (z * sd / diff) ** 2


def normal_power(diff: float, sd: float, n: int, *, confidence: float = 0.95) -> float:
    """Normal-approximation probability that the interval lies entirely above 0.

    Examples
    --------
    >>> round(normal_power(0.1, 1.0, 785), 3)
    0.8
    """
    if sd <= 0:
        return 1.0 if diff > 0 else 0.0
    z = z_value(confidence)
    return NormalDist().cdf(math.sqrt(n) * diff / sd - z)


# ---------------------------------------------------------------------- simulation


def simulate_uniform_logs(item_ctr: np.ndarray, n: int, rng: np.random.Generator) -> BanditLogs:
    """``n`` rounds logged by the uniform policy: item and slot uniform, click Bernoulli.

    Parameters
    ----------
    item_ctr : ndarray, shape (K, L)
        True click rate of each item in each slot.
    n : int
        Rounds.
    rng : numpy.random.Generator

    Returns
    -------
    BanditLogs
        Integer ``actions`` and ``positions``, propensities ``1/K``.
    """
    k, len_list = item_ctr.shape
    action = rng.integers(0, k, size=n)
    position = rng.integers(0, len_list, size=n)
    reward = (rng.random(n) < item_ctr[action, position]).astype(float)
    return BanditLogs(actions=action, rewards=reward, propensities=np.full(n, 1.0 / k),
                      positions=position)


def _paired_ips(logs: BanditLogs, policy: np.ndarray, confidence: float) -> Estimate:
    """The report's test: ``paired_difference(ips(pi), ips(uniform))`` on the same rounds."""
    k = policy.shape[0]
    uniform = ips(logs, np.full(len(logs), 1.0 / k), confidence=confidence)
    target = ips(logs, policy[logs.actions, logs.positions], confidence=confidence)
    return paired_difference(target, uniform, confidence=confidence)


@dataclass(frozen=True)
class PowerResult:
    """How often the paired IPS test shows ``policy`` beating uniform on simulated test halves.

    Attributes
    ----------
    policy : str
        Name.
    test_rounds, n_reps, seed : int
        Rounds per simulated test half, replications, seed.
    uniform_value : float
        True value of uniform (mean click rate).
    true_diff : float
        True ``V(policy) - V(uniform)`` (for a learned policy: mean over replications).
    mean_estimated_diff, sd_estimated_diff : float
        Mean and standard deviation over replications of the paired IPS difference.
    power : float
        Share of replications whose interval lies entirely above 0.
    power_se : float
        Monte Carlo standard error of ``power``.
    coverage : float
        Share of intervals containing that replication's true difference.
    null_rate : float or None
        Share of intervals entirely above 0 when every item has the mean click rate (true
        difference 0): the test's false-positive rate for this policy at this click count
        (nominal 0.025), from ``null_reps`` further replications.
    mean_clicks : float
        Clicks per simulated test half.
    mean_matched_clicks : float or None
        For a deterministic policy, clicks in the rounds whose logged item it would show.
    per_round_sd : float or None
        Exact standard deviation of the per-round paired term (fixed policies only).
    normal_power : float or None
        Normal-approximation power at ``test_rounds``.
    rounds_for_80_power : float or None
        Normal-approximation rounds for 80% power (``inf``: never; ``None``: learned policy).
    max_prob, effective_items : float
        Largest item share, and ``1 / sum pi^2`` (80 for uniform over 80 items), mean over slots.
    """

    policy: str
    test_rounds: int
    n_reps: int
    seed: int
    uniform_value: float
    true_diff: float
    mean_estimated_diff: float
    sd_estimated_diff: float
    power: float
    power_se: float
    coverage: float
    null_rate: float | None
    mean_clicks: float
    mean_matched_clicks: float | None
    per_round_sd: float | None
    normal_power: float | None
    rounds_for_80_power: float | None
    max_prob: float
    effective_items: float

    @property
    def true_value(self) -> float:
        """True value of the policy."""
        return self.uniform_value + self.true_diff

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``inf`` as ``None``)."""
        out = dataclasses.asdict(self)
        if out["rounds_for_80_power"] is not None and math.isinf(out["rounds_for_80_power"]):
            out["rounds_for_80_power"] = None
        out["true_value"] = self.true_value
        return out


class _Tally:
    """Per-replication outcomes of the paired test."""

    def __init__(self) -> None:
        self.est: list[float] = []
        self.above: list[bool] = []
        self.covers: list[bool] = []
        self.clicks: list[float] = []
        self.matched: list[float] = []
        self.truth: list[float] = []
        self.max_prob: list[float] = []
        self.eff: list[float] = []

    def add(self, logs: BanditLogs, pi: np.ndarray, c: np.ndarray, confidence: float) -> None:
        d = _paired_ips(logs, pi, confidence)
        truth = float(np.mean(np.sum(pi * c, axis=0) - c.mean(axis=0)))
        self.est.append(d.value)
        self.above.append(d.ci_low > 0.0)
        self.covers.append(d.ci_low <= truth <= d.ci_high)
        self.clicks.append(float(logs.rewards.sum()))
        logged = pi[logs.actions, logs.positions]
        self.matched.append(float(logs.rewards[logged == 1.0].sum()))
        self.truth.append(truth)
        self.max_prob.append(float(pi.max(axis=0).mean()))
        self.eff.append(float(np.mean(1.0 / np.sum(pi**2, axis=0))))

    def result(self, name: str, test_rounds: int, seed: int, uniform_value: float,
               deterministic: bool, per_round_sd: float | None, confidence: float,
               null: _Tally | None) -> PowerResult:
        n_reps = len(self.est)
        power = float(np.mean(self.above))
        true_diff = float(np.mean(self.truth))
        fixed = per_round_sd is not None
        return PowerResult(
            policy=name, test_rounds=test_rounds, n_reps=n_reps, seed=seed,
            uniform_value=uniform_value, true_diff=true_diff,
            mean_estimated_diff=float(np.mean(self.est)),
            sd_estimated_diff=float(np.std(self.est, ddof=1)) if n_reps > 1 else 0.0,
            power=power, power_se=math.sqrt(power * (1 - power) / n_reps),
            coverage=float(np.mean(self.covers)),
            null_rate=float(np.mean(null.above)) if null is not None and null.above else None,
            mean_clicks=float(np.mean(self.clicks)),
            mean_matched_clicks=float(np.mean(self.matched)) if deterministic else None,
            per_round_sd=per_round_sd,
            normal_power=normal_power(true_diff, per_round_sd, test_rounds,
                                      confidence=confidence) if fixed else None,
            rounds_for_80_power=rounds_for_power(true_diff, per_round_sd,
                                                 confidence=confidence) if fixed else None,
            max_prob=float(np.mean(self.max_prob)), effective_items=float(np.mean(self.eff)),
        )


def power_analysis(
    item_ctr: np.ndarray,
    policy_dist: np.ndarray,
    *,
    test_rounds: int = 5000,
    len_list: int = 3,
    n_reps: int = 2000,
    null_reps: int | None = None,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
    name: str = "policy",
) -> PowerResult:
    """Power of the paired IPS test for a fixed target policy on simulated uniform logs.

    Each replication draws ``test_rounds`` rounds with :func:`simulate_uniform_logs` and
    computes ``paired_difference(ips(pi), ips(uniform))``; the power is the share whose
    interval lies entirely above 0. ``true_diff`` and ``per_round_sd`` are exact
    (:func:`paired_moments`); ``rounds_for_80_power`` is the normal approximation.
    ``null_rate`` repeats the simulation with every item at the mean click rate.

    Parameters
    ----------
    item_ctr : ndarray, shape (K,) or (K, L)
        True click rates (the same in every slot when ``(K,)``).
    policy_dist : ndarray, shape (K,) or (K, L)
        Target policy (the same in every slot when ``(K,)``); items may repeat across slots.
    test_rounds : int, default 5000
        Rounds per simulated test half.
    len_list : int, default 3
        Slots.
    n_reps : int, default 2000
        Replications.
    null_reps : int, optional
        Replications with every item at the mean click rate, for ``null_rate``; default
        ``n_reps``, 0 skips them.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    confidence : float, default 0.95
        Interval coverage.
    name : str
        Policy name in the result.

    Returns
    -------
    PowerResult

    Raises
    ------
    ValueError
        On click rates outside ``(0, 1]``, a policy that is not a distribution, shapes
        that do not match, or fewer than 2 rounds or 1 replication.
    """
    if test_rounds < 2 or n_reps < 1:
        raise ValueError("need test_rounds >= 2 and n_reps >= 1")
    c = _as_slots(item_ctr, len_list, "item_ctr")
    _check_truth(c)
    pi = _as_slots(policy_dist, len_list, "policy_dist")
    _check_policy(pi, c.shape[0])
    _, sd = paired_moments(c, pi, len_list)
    rng = np.random.default_rng(seed)
    tallies = []
    for truth, reps in ((c, n_reps), (_flat(c), _null_reps(null_reps, n_reps))):
        tally = _Tally()
        for _ in range(reps):
            tally.add(simulate_uniform_logs(truth, test_rounds, rng), pi, truth, confidence)
        tallies.append(tally)
    deterministic = bool(np.all((pi == 0.0) | (pi == 1.0)))
    return tallies[0].result(name, test_rounds, seed, float(c.mean()), deterministic, sd,
                             confidence, tallies[1])


def _flat(c: np.ndarray) -> np.ndarray:
    """Every item at its slot's mean click rate: no policy differs from uniform."""
    return np.broadcast_to(c.mean(axis=0), c.shape).copy()


def _null_reps(null_reps: int | None, n_reps: int) -> int:
    reps = n_reps if null_reps is None else null_reps
    if reps < 0:
        raise ValueError(f"null_reps must be >= 0, got {reps}")
    return reps


def smoothed_item_ctr(action: np.ndarray, reward: np.ndarray, n_actions: int,
                      prior_strength: float = 100.0) -> np.ndarray:
    """The item CTR of :class:`evaluation.obd.models.SegmentCtrModel` without user features (the
    report's ``item-ctr``): ``(clicks_a + m * global) / (imps_a + m)``.

    Examples
    --------
    >>> smoothed_item_ctr(np.array([0, 0, 1, 1]), np.array([1.0, 1, 0, 0]), 2, 2.0).tolist()
    [0.75, 0.25]
    """
    no_features = np.empty((len(action), 0))
    return SegmentCtrModel.fit(no_features, np.asarray(action), np.asarray(reward, dtype=float),
                               n_actions, prior_strength).item_ctr


def learned_policy(train: BanditLogs, n_actions: int, len_list: int, *, kind: str = "greedy",
                   prior_strength: float = 100.0, temperature: float = 1.0) -> np.ndarray:
    """A context-free policy fit on uniform logs, shape ``(K, L)``.

    ``kind="greedy"``: the report's ``item-ctr`` ranker, slot ``l`` shows the ``l``-th item by
    :func:`smoothed_item_ctr` (ties: lower id first). ``kind="softmax"``: every slot draws
    from :func:`softmax_policy` of those rates at ``temperature``.
    """
    q = smoothed_item_ctr(np.asarray(train.actions), train.rewards, n_actions, prior_strength)
    if kind == "greedy":
        if len_list > n_actions:
            raise ValueError(f"len_list {len_list} exceeds {n_actions} items")
        ranked = np.argsort(-q, kind="stable")[:len_list]
        pi = np.zeros((n_actions, len_list))
        pi[ranked, np.arange(len_list)] = 1.0
        return pi
    if kind == "softmax":
        return np.repeat(softmax_policy(q, temperature)[:, None], len_list, axis=1)
    raise ValueError(f"kind must be 'greedy' or 'softmax', got {kind!r}")


def learned_policy_power(
    item_ctr: np.ndarray,
    *,
    kind: str = "greedy",
    train_rounds: int = 5000,
    test_rounds: int = 5000,
    len_list: int = 3,
    prior_strength: float = 100.0,
    temperature: float = 1.0,
    n_reps: int = 2000,
    null_reps: int | None = None,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
    name: str | None = None,
) -> PowerResult:
    """Power for a policy *learned* from a simulated training half (what the sample allows).

    Each replication simulates a training half, fits :func:`learned_policy` on it, and runs
    the paired IPS test on an independent simulated test half (``null_rate``: both halves
    with every item at the mean click rate). ``true_diff`` is the mean
    over replications of the learned policy's true gain; the closed-form fields are
    ``None`` (the policy changes from one replication to the next).

    Parameters
    ----------
    item_ctr : ndarray, shape (K,) or (K, L)
        True click rates.
    kind : {"greedy", "softmax"}
        See :func:`learned_policy`.
    train_rounds, test_rounds : int, default 5000
        Rounds per simulated half.
    len_list, prior_strength, temperature, n_reps, null_reps, seed, confidence
        As for :func:`power_analysis` and :func:`learned_policy`.
    name : str, optional
        Default ``"learned <kind>"``.

    Returns
    -------
    PowerResult
    """
    if train_rounds < 1 or test_rounds < 2 or n_reps < 1:
        raise ValueError("need train_rounds >= 1, test_rounds >= 2 and n_reps >= 1")
    c = _as_slots(item_ctr, len_list, "item_ctr")
    _check_truth(c)
    k = c.shape[0]
    rng = np.random.default_rng(seed)
    tallies = []
    for truth, reps in ((c, n_reps), (_flat(c), _null_reps(null_reps, n_reps))):
        tally = _Tally()
        for _ in range(reps):
            train = simulate_uniform_logs(truth, train_rounds, rng)
            pi = learned_policy(train, k, len_list, kind=kind, prior_strength=prior_strength,
                                temperature=temperature)
            tally.add(simulate_uniform_logs(truth, test_rounds, rng), pi, truth, confidence)
        tallies.append(tally)
    return tallies[0].result(name or f"learned {kind}", test_rounds, seed, float(c.mean()),
                             kind == "greedy", None, confidence, tallies[1])


# ------------------------------------------------------------------------ OBD run


@dataclass(frozen=True)
class ObdPower:
    """Power analysis with ZOZOTOWN's item click rates as truth (see :func:`run_obd_power`).

    Attributes
    ----------
    mean_ctr : float
        The sample's uniform click rate the truth was rescaled to.
    ctr_max_over_mean, ctr_min_over_mean : float
        Spread of the per-item truth.
    n_actions, len_list, test_rounds, train_rounds : int
        Shapes of the simulated halves (those of the real split).
    temperature : float
        Of the softmax policies.
    max_signal_to_noise : float
        :func:`max_signal_to_noise` of the truth.
    min_rounds_any_item_policy : float
        Fewest rounds for 80% power over all per-item policies (normal approximation).
    max_power_any_item_policy : float
        Largest power at ``test_rounds`` over all per-item policies (normal approximation).
    results : tuple of PowerResult
        ``oracle best item``, ``oracle softmax``, ``most detectable``, ``learned greedy``,
        ``learned softmax``.
    seconds : float
        Wall time.
    """

    mean_ctr: float
    ctr_max_over_mean: float
    ctr_min_over_mean: float
    n_actions: int
    len_list: int
    test_rounds: int
    train_rounds: int
    temperature: float
    max_signal_to_noise: float
    min_rounds_any_item_policy: float
    max_power_any_item_policy: float
    results: tuple[PowerResult, ...]
    seconds: float

    def get(self, policy: str) -> PowerResult:
        """The result for ``policy`` (KeyError if absent)."""
        for r in self.results:
            if r.policy == policy:
                return r
        raise KeyError(policy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``inf`` as ``None``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if math.isinf(out["min_rounds_any_item_policy"]):
            out["min_rounds_any_item_policy"] = None
        out["results"] = [r.to_dict() for r in self.results]
        return out


def run_obd_power(
    alpha: np.ndarray,
    beta: np.ndarray,
    mean_ctr: float,
    *,
    test_rounds: int = 5000,
    train_rounds: int = 5000,
    len_list: int = 3,
    temperature: float = 1.0,
    prior_strength: float = 100.0,
    n_reps: int = 2000,
    seed: int = DEFAULT_SEED,
) -> ObdPower:
    """Power of the report's paired IPS test with ZOZOTOWN's per-item click rates as truth.

    Truth: :func:`zozotown_item_ctr` of the BTS prior (``alpha``, ``beta``; derived by ZOZO
    from the full data), rescaled to ``mean_ctr``, the same in every slot (the sample's
    per-slot click counts are too few to estimate a slot effect). Policies, each on its
    own seeded stream: the oracle best item (every slot), the oracle softmax of the true
    log-odds at ``temperature`` (the report's ``softmax-ctr`` form), the most detectable
    per-item policy (:func:`most_detectable_policy`), and the greedy and softmax policies
    learned from a simulated training half of ``train_rounds`` rounds. The truth has no
    user-specific effects, so this bounds non-contextual policies only.

    Returns
    -------
    ObdPower
    """
    started = time.perf_counter()
    ctr = zozotown_item_ctr(alpha, beta, mean_ctr)
    snr = max_signal_to_noise(ctr, len_list)
    fixed = {
        "oracle best item": best_item_policy(ctr),
        f"oracle softmax (T={temperature:g})": softmax_policy(ctr, temperature),
        "most detectable": most_detectable_policy(ctr),
    }
    common = {"test_rounds": test_rounds, "len_list": len_list, "n_reps": n_reps}
    results = [power_analysis(ctr, pi, seed=seed + i, name=name, **common)
               for i, (name, pi) in enumerate(fixed.items())]
    for j, kind in enumerate(("greedy", "softmax")):
        results.append(learned_policy_power(
            ctr, kind=kind, train_rounds=train_rounds, prior_strength=prior_strength,
            temperature=temperature, seed=seed + len(fixed) + j,
            name=f"learned {kind}" + (f" (T={temperature:g})" if kind == "softmax" else ""),
            **common))
    return ObdPower(
        mean_ctr=float(mean_ctr),
        ctr_max_over_mean=float(ctr.max() / ctr.mean()),
        ctr_min_over_mean=float(ctr.min() / ctr.mean()),
        n_actions=len(ctr), len_list=len_list, test_rounds=test_rounds,
        train_rounds=train_rounds, temperature=temperature, max_signal_to_noise=snr,
        min_rounds_any_item_policy=rounds_for_power(snr, 1.0),
        max_power_any_item_policy=normal_power(snr, 1.0, test_rounds),
        results=tuple(results),
        seconds=time.perf_counter() - started,
    )
