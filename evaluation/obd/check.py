"""The OBD checks: our estimators against obp's published BTS numbers, and a contextual
policy against uniform random with the power of that comparison.

:func:`run_bts_check` reproduces the published check of obp's quickstart: evaluate the
BTS policy (with ZOZOTOWN's production prior) on the ``random/all`` logs with IPS, where
obp reports IPW 0.004553 and the on-policy value of BTS (mean click of the ``bts/all``
logs) is 0.0042 (:mod:`evaluation.published`). :func:`run_contextual_comparison` trains a
small contextual policy on the first half of ``random/all`` and evaluates it on the second
half against uniform random, and asks how much power that comparison has
(:mod:`evaluation.obd.power`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.obd.data import Campaign, ObdLogs, load_bts_prior, load_obd
from evaluation.obd.models import (
    RidgeLogisticCtr,
    SegmentCtrModel,
    action_dist_from_rankings,
    bts_rankings,
    cross_validated_l2,
)
from evaluation.obd.power import DEFAULT_SEED, ObdPower, run_obd_power
from evaluation.offline import (
    Estimate,
    direct_method,
    doubly_robust,
    ips,
    on_policy,
    paired_difference,
    per_position,
    replay,
    snips,
)
from evaluation.published import OBD_BTS, OBD_BTS_N_SIM, OBD_BTS_SEED

# ------------------------------------------------------------------------------ BTS check


@dataclass(frozen=True)
class BtsCheck:
    """The BTS policy evaluated on uniform-random logs, next to its on-policy value."""

    campaign: str
    n_sim: int
    seed: int
    ips: Estimate
    snips: Estimate
    dm: Estimate
    dr: Estimate
    true_value: Estimate
    mc_std_error: float
    seconds: float
    #: Evaluated on the full data set (``data_path``) rather than the sample.
    full_data: bool = False

    @property
    def published(self) -> Mapping[str, float] | None:
        """obp's published numbers (the sample's campaign ``all`` only)."""
        return OBD_BTS if self.campaign == "all" and not self.full_data else None

    @property
    def ips_ci_contains_true_value(self) -> bool:
        """Whether the IPS interval contains the on-policy value of BTS."""
        return self.ips.contains(self.true_value.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out: dict[str, Any] = {
            "campaign": self.campaign,
            "n_sim": self.n_sim,
            "seed": self.seed,
            "estimates": {e.method: e.to_dict() for e in (self.ips, self.snips, self.dm, self.dr)},
            "true_value": self.true_value.to_dict(),
            "ips_ci_contains_true_value": self.ips_ci_contains_true_value,
            "ips_monte_carlo_std_error": self.mc_std_error,
            "seconds": self.seconds,
        }
        if self.published is not None:
            out["published"] = dict(self.published)
            out["ips_minus_published_ipw"] = self.ips.value - self.published["ipw"]
        return out


def smoothed_ctr_by_item_position(
    action: np.ndarray,
    position: np.ndarray,
    reward: np.ndarray,
    n_actions: int,
    len_list: int,
    prior_strength: float = 100.0,
) -> np.ndarray:
    """Click rate per (item, slot), shrunk toward the slot's click rate, shape ``(K, L)``.

    ``(clicks + m * ctr_slot) / (impressions + m)`` with ``m = prior_strength``
    pseudo-impressions: a context-free reward model for DM / DR.

    Examples
    --------
    >>> q = smoothed_ctr_by_item_position(np.array([0, 1, 0, 1]), np.zeros(4, int),
    ...                                   np.array([1.0, 0, 1, 0]), 2, 1, prior_strength=2)
    >>> q.ravel().tolist()  # slot ctr 0.5; item 0: (2 + 1) / 4, item 1: (0 + 1) / 4
    [0.75, 0.25]
    """
    imps = np.zeros((n_actions, len_list))
    clicks = np.zeros((n_actions, len_list))
    np.add.at(imps, (action, position), 1.0)
    np.add.at(clicks, (action, position), reward)
    slot_ctr = clicks.sum(axis=0) / np.maximum(imps.sum(axis=0), 1.0)
    return (clicks + prior_strength * slot_ctr) / (imps + prior_strength)


def run_bts_check(
    cache_dir: Path | str | None = None,
    *,
    campaign: Campaign = "all",
    n_sim: int = OBD_BTS_N_SIM,
    seed: int = OBD_BTS_SEED,
    prior_strength: float = 100.0,
    data_path: Path | str | None = None,
) -> BtsCheck:
    """Evaluate obp's BTS policy (ZOZOTOWN prior) on ``random/<campaign>`` logs.

    IPS and SNIPS use the action distribution of :func:`bts_action_dist` at each round's
    logged slot: ``mean(r * dist[a_i, slot_i] / pscore_i)`` (obp's IPW). DM and DR use a
    reward model of per-(item, slot) click rates (:func:`smoothed_ctr_by_item_position`),
    cross-fitted over two halves of random rounds (seeded): obp's quickstart used a
    logistic regression on features instead, so our DM/DR are not expected to match its
    0.003545 / 0.004727. The true value is the mean click of the ``bts/<campaign>`` logs.

    ``mc_std_error`` is the Monte Carlo standard error of the IPS value caused by
    estimating the action distribution from ``n_sim`` slates: the IPS value equals the mean
    over slates ``s`` of ``Y_s = sum_l c[item_{s,l}, l]`` with
    ``c[a, l] = sum_{i: a_i=a, slot_i=l} r_i / pscore_i / n``, so it is ``sd(Y) / sqrt(n_sim)``.

    Returns
    -------
    BtsCheck
    """
    started = time.perf_counter()
    logs = load_obd("random", campaign, cache_dir, data_path=data_path)
    truth = on_policy(load_obd("bts", campaign, cache_dir, data_path=data_path).to_bandit_logs())
    alpha, beta = load_bts_prior(campaign, cache_dir)
    if len(alpha) != logs.n_actions:
        raise ValueError(f"prior has {len(alpha)} items, logs have {logs.n_actions}")
    len_list = logs.len_list
    rankings = bts_rankings(alpha, beta, len_list=len_list, n_sim=n_sim, seed=seed)
    dist = action_dist_from_rankings(rankings, logs.n_actions)
    b = logs.to_bandit_logs()
    target = per_position(dist, logs.position)  # (n, K)

    n = len(logs)
    c = np.zeros((logs.n_actions, len_list))
    np.add.at(c, (logs.action, logs.position), logs.reward / logs.pscore / n)
    y = c[rankings, np.arange(len_list)].sum(axis=1)
    mc_se = float(y.std(ddof=1) / np.sqrt(n_sim)) if n_sim > 1 else float("nan")

    fold = np.random.default_rng(seed).permutation(n) % 2
    q_rounds = np.empty((n, logs.n_actions))
    for f in (0, 1):
        train, test = fold != f, fold == f
        q = smoothed_ctr_by_item_position(
            logs.action[train], logs.position[train], logs.reward[train],
            logs.n_actions, len_list, prior_strength,
        )  # fmt: skip
        q_rounds[test] = per_position(q, logs.position[test])
    return BtsCheck(
        campaign=campaign,
        n_sim=n_sim,
        seed=seed,
        ips=ips(b, target),
        snips=snips(b, target),
        dm=direct_method(b, target, q_rounds),
        dr=doubly_robust(b, target, q_rounds),
        true_value=truth,
        mc_std_error=mc_se,
        seconds=time.perf_counter() - started,
        full_data=data_path is not None,
    )


MIN_MATCHED_CLICKS = 5  # the usual n * p >= 5 rule for a normal approximation to a binomial


@dataclass(frozen=True)
class PolicyReport:
    """Estimates of one target policy on the test rounds.

    Attributes
    ----------
    name : str
        Policy name.
    estimates : Mapping[str, Estimate]
        ``replay`` (Wilson interval), ``ips``, ``snips``, ``dr``.
    vs_uniform : Mapping[str, Estimate]
        Paired differences to uniform on the same rounds (``ips``, ``dr``).
    n_matched : int
        Test rounds whose logged (item, slot) the policy would have shown.
    matched_clicks : int
        Clicks among them: every IPS/SNIPS/replay estimate of a deterministic policy rests
        on these alone.
    expected_matched_clicks : float
        ``n_matched`` times uniform's click rate on the test rounds: how many clicks a
        policy as good as uniform would get there (how much power there is).
    """

    name: str
    estimates: Mapping[str, Estimate]
    vs_uniform: Mapping[str, Estimate]
    n_matched: int | None = None
    matched_clicks: int | None = None
    expected_matched_clicks: float | None = None

    @property
    def verdict(self) -> str:
        """Plain-words reading of the paired IPS difference to uniform."""
        if "ips" not in self.vs_uniform:
            return "baseline"
        d = self.vs_uniform["ips"]
        ci = f"{d.value:+.6f} [{d.ci_low:+.6f}, {d.ci_high:+.6f}]"
        if self.matched_clicks is not None and self.matched_clicks < MIN_MATCHED_CLICKS:
            text = f"inconclusive: {self.matched_clicks} clicks in {self.n_matched} matched rounds"
            if self.expected_matched_clicks is not None:
                text += f" ({self.expected_matched_clicks:.2f} expected at uniform's click rate)"
            text += f"; normal intervals need >= {MIN_MATCHED_CLICKS}"
            if "replay" in self.estimates:
                text += f"; replay 95% upper bound {self.estimates['replay'].ci_high:.4f}"
            return text
        if d.ci_low > 0:
            return f"beats uniform: IPS difference {ci}"
        if d.ci_high < 0:
            return f"worse than uniform: IPS difference {ci}"
        return f"no detectable difference: IPS difference {ci}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name,
            "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
            "vs_uniform": {k: e.to_dict() for k, e in self.vs_uniform.items()},
            "n_matched": self.n_matched,
            "matched_clicks": self.matched_clicks,
            "expected_matched_clicks": self.expected_matched_clicks,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ContextualComparison:
    """Policies trained on the first part of ``random/<campaign>``, evaluated on the rest.

    ``power`` is the power analysis of the same paired test with ZOZOTOWN's per-item click
    rates as truth (:func:`evaluation.obd.power.run_obd_power`), or None when not run.
    """

    campaign: str
    n_train: int
    n_test: int
    train_clicks: int
    test_clicks: int
    prior_strength: float
    policies: tuple[PolicyReport, ...]
    seconds: float
    power: ObdPower | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "campaign": self.campaign,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_clicks": self.train_clicks,
            "test_clicks": self.test_clicks,
            "prior_strength": self.prior_strength,
            "policies": [p.to_dict() for p in self.policies],
            "seconds": self.seconds,
            "power": self.power.to_dict() if self.power is not None else None,
        }


def run_contextual_comparison(
    cache_dir: Path | str | None = None,
    *,
    campaign: Campaign = "all",
    train_fraction: float = 0.5,
    prior_strength: float = 100.0,
    temperature: float = 1.0,
    fixed_l2: tuple[float, ...] = (1.0,),
    power_reps: int = 2000,
    power_seed: int | None = None,
    data_path: Path | str | None = None,
) -> ContextualComparison:
    """Train CTR policies on early ``random`` logs; evaluate them on later ones.

    Four target policies on the test rounds:

    - ``uniform``: the logging policy itself (IPS weights are 1, so IPS = on-policy mean);
    - ``item-ctr``: a context-free greedy ranking by smoothed item CTR
      (:class:`SegmentCtrModel` without features);
    - ``contextual``: greedy ranking by :class:`SegmentCtrModel` on the four user features;
    - ``softmax-ctr``: a *stochastic* contextual policy, ``pi(a | x, l)`` the softmax (at
      ``temperature``) of :class:`RidgeLogisticCtr`'s log-odds, its ``l2`` chosen by
      cross-validation on the training rounds (:func:`cross_validated_l2`), and the same
      with each ``l2`` of ``fixed_l2`` (a weakly regularized variant). Being stochastic
      with full support, it is evaluated on *all* test rounds (IPS weight ``K pi(a_i | x_i,
      l_i)``), not just those where a ranker agrees with the logger. Each slot is scored
      on its own (items may repeat across the slots of a slate, as in obp's per-position
      action distributions).

    A greedy ranker is deterministic: in slot ``l`` it shows its ``l``-th item, so
    ``pi(a | x, l)`` is 1 for that item and 0 otherwise. Estimators: replay (match on the
    logged slot; Wilson interval), IPS, SNIPS and DR (reward model = the ranker's own CTR
    predictions, fit on the training rounds only), plus paired IPS and DR differences
    against uniform on the same rounds.

    On the 10,000-round sample the deterministic rankers are badly underpowered, and the
    report says so: a
    deterministic ranker agrees with the uniform logger on about ``n_test / 80`` rounds
    (~62 of 5,000), where about 0.25 clicks are expected at the 0.38% click rate, so its
    IPS / SNIPS / replay values rest on a handful of clicks or none (then the normal
    intervals collapse to a point; see :attr:`PolicyReport.verdict`).

    With ``power_reps > 0`` it also runs :func:`evaluation.obd.power.run_obd_power`: the
    truth is the campaign's BTS prior mean per item (:func:`load_bts_prior`) rescaled to the
    click rate of all ``random/<campaign>`` rounds, the simulated halves have the sizes of
    this split, and ``power_reps`` replications per policy (and as many under a flat truth)
    are drawn from ``power_seed`` (about 6 s at 2,000).

    Returns
    -------
    ContextualComparison
    """
    started = time.perf_counter()
    logs = load_obd("random", campaign, cache_dir, data_path=data_path)
    train, test = logs.split(train_fraction)
    reports = _greedy_reports(train, test, prior_strength)
    reports += _softmax_reports(train, test, reports[0].estimates, temperature, fixed_l2)
    power = None
    if power_reps > 0:
        alpha, beta = load_bts_prior(campaign, cache_dir)
        if len(alpha) != test.n_actions:
            raise ValueError(f"prior has {len(alpha)} items, logs have {test.n_actions}")
        power = run_obd_power(
            alpha, beta, float(logs.reward.mean()), test_rounds=len(test),
            train_rounds=len(train), len_list=test.len_list, temperature=temperature,
            prior_strength=prior_strength, n_reps=power_reps,
            seed=DEFAULT_SEED if power_seed is None else power_seed)
    n = len(test)
    return ContextualComparison(
        campaign=campaign,
        n_train=len(train),
        n_test=n,
        train_clicks=int(train.reward.sum()),
        test_clicks=int(test.reward.sum()),
        prior_strength=prior_strength,
        policies=tuple(reports),
        seconds=time.perf_counter() - started,
        power=power,
    )


def _greedy_reports(train: ObdLogs, test: ObdLogs, prior_strength: float
                    ) -> list[PolicyReport]:
    """Uniform (first) and the greedy rankers ``item-ctr`` and ``contextual`` on ``test``."""
    b = test.to_bandit_logs()
    k, n = test.n_actions, len(test)
    rows = np.arange(n)
    uniform_dist = np.full((n, k), 1.0 / k)
    models = {
        "item-ctr": SegmentCtrModel.fit(
            train.user_features[:, :0], train.action, train.reward, k, prior_strength
        ),
        "contextual": SegmentCtrModel.fit(
            train.user_features, train.action, train.reward, k, prior_strength
        ),
    }
    # The uniform policy's DR uses the contextual model's predictions as reward model.
    q_ctx = models["contextual"].predict(test.user_features)
    uniform = {
        "ips": ips(b, uniform_dist),
        "snips": snips(b, uniform_dist),
        "dr": doubly_robust(b, uniform_dist, q_ctx),
    }
    reports = [PolicyReport("uniform", uniform, {})]
    for name, model in models.items():
        chosen = model.rank(test.user_features, test.len_list)[rows, test.position]
        dist = np.zeros((n, k))
        dist[rows, chosen] = 1.0
        q = model.predict(test.user_features)
        matched = chosen == test.action
        est = {
            "replay": replay(b, chosen, interval="wilson"),
            "ips": ips(b, dist),
            "snips": snips(b, dist),
            "dr": doubly_robust(b, dist, q),
        }
        diffs = {
            "ips": paired_difference(est["ips"], uniform["ips"]),
            "dr": paired_difference(est["dr"], doubly_robust(b, uniform_dist, q)),
        }
        reports.append(PolicyReport(
            name, est, diffs, n_matched=int(matched.sum()),
            matched_clicks=int(test.reward[matched].sum()),
            expected_matched_clicks=float(matched.sum() * test.reward.mean())))
    return reports


def _softmax_reports(train: ObdLogs, test: ObdLogs, uniform: Mapping[str, Estimate],
                     temperature: float, fixed_l2: tuple[float, ...]) -> list[PolicyReport]:
    """The stochastic ``softmax-ctr`` policies (cross-validated and fixed L2) on ``test``."""
    b = test.to_bandit_logs()
    uniform_dist = np.full((len(test), test.n_actions), 1.0 / test.n_actions)
    reports = []
    cv_l2 = cross_validated_l2(train)
    for label, l2 in [("cv", cv_l2)] + [("fixed", v) for v in fixed_l2]:
        ctr = RidgeLogisticCtr.fit(train.context, train.action, train.position, train.reward,
                                   train.item_feature_0, n_slots=train.len_list, l2=l2)
        dist = ctr.softmax_policy(test.context, test.position, temperature)
        q = ctr.predict(test.context, test.position)
        est = {"ips": ips(b, dist), "snips": snips(b, dist), "dr": doubly_robust(b, dist, q)}
        reports.append(PolicyReport(
            f"softmax-ctr ({label} l2={l2:g}, T={temperature:g})", est,
            {"ips": paired_difference(est["ips"], uniform["ips"]),
             "dr": paired_difference(est["dr"], doubly_robust(b, uniform_dist, q))}))
    return reports
