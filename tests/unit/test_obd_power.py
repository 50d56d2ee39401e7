"""Power analysis of the paired IPS test on simulated OBD-like uniform logs (no network)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.obd import ContextualComparison, PolicyReport, SegmentCtrModel, parse_prior_yaml
from evaluation.obd.power import (
    best_item_policy,
    learned_policy,
    learned_policy_power,
    max_signal_to_noise,
    most_detectable_policy,
    normal_power,
    paired_moments,
    power_analysis,
    rounds_for_power,
    run_obd_power,
    simulate_uniform_logs,
    smoothed_item_ctr,
    softmax_policy,
    zozotown_item_ctr,
)
from evaluation.offline import Estimate, ips, paired_difference

PRIOR_YAML = """\
all:
  alpha:
    - 30.0
    - 10.0
    - 10.0
    - 10.0
  beta:
    - 970.0
    - 990.0
    - 990.0
    - 990.0
"""


def test_simulated_logs_mirror_the_uniform_obd_rounds() -> None:
    ctr = np.array([[0.5, 0.0 + 1e-12], [1e-12, 1.0]])  # item 0 clicks only in slot 0
    logs = simulate_uniform_logs(ctr, 20_000, np.random.default_rng(0))
    assert np.all(logs.propensities == 0.5)
    assert set(np.unique(logs.actions)) == {0, 1} and set(np.unique(logs.positions)) == {0, 1}
    assert abs(np.mean(logs.positions == 1) - 0.5) < 0.02
    clicked = logs.rewards == 1.0
    pairs = set(zip(logs.actions[clicked].tolist(), logs.positions[clicked].tolist(),
                    strict=True))
    assert pairs == {(0, 0), (1, 1)}
    assert abs(logs.rewards[(logs.actions == 1) & (logs.positions == 1)].mean() - 1.0) < 1e-12


def test_zozotown_ctr_is_the_prior_mean_rescaled_to_the_observed_rate() -> None:
    prior = parse_prior_yaml(PRIOR_YAML)["all"]
    ctr = zozotown_item_ctr(np.array(prior["alpha"]), np.array(prior["beta"]), 0.0038)
    assert ctr.mean() == pytest.approx(0.0038)
    assert ctr[0] / ctr[1] == pytest.approx(3.0)
    with pytest.raises(ValueError):
        zozotown_item_ctr(np.array([1.0]), np.array([1.0]), 0.0)


def test_true_difference_matches_the_analytic_value() -> None:
    rng = np.random.default_rng(3)
    ctr = rng.uniform(0.01, 0.2, size=6)
    pi = rng.dirichlet(np.ones(6))
    res = power_analysis(ctr, pi, test_rounds=200, len_list=2, n_reps=5, null_reps=0, seed=1)
    assert res.true_diff == pytest.approx(float(np.sum(pi * ctr) - ctr.mean()), abs=1e-15)
    assert res.uniform_value == pytest.approx(ctr.mean())
    diff, sd = paired_moments(ctr, pi)
    assert diff == pytest.approx(res.true_diff) and res.per_round_sd == pytest.approx(sd)


def test_per_round_moments_match_the_estimator_terms_on_many_rounds() -> None:
    ctr = np.array([0.05, 0.1, 0.3, 0.15])
    pi = np.array([0.1, 0.2, 0.6, 0.1])
    logs = simulate_uniform_logs(np.repeat(ctr[:, None], 3, axis=1), 400_000,
                                 np.random.default_rng(5))
    d = paired_difference(ips(logs, pi[logs.actions]), ips(logs, np.full(len(logs), 0.25)))
    diff, sd = paired_moments(ctr, pi)
    assert abs(d.value - diff) < 4 * d.std_error
    assert d.influence is not None
    assert float(d.influence.std()) == pytest.approx(sd, rel=0.01)


def test_uniform_target_never_differs_from_uniform() -> None:
    ctr = np.array([0.02, 0.05, 0.2])
    res = power_analysis(ctr, np.full(3, 1 / 3), test_rounds=1000, n_reps=200, seed=2)
    assert res.true_diff == pytest.approx(0.0, abs=1e-15)
    assert res.mean_estimated_diff == 0.0 and res.sd_estimated_diff == 0.0
    assert res.power == 0.0 and res.null_rate == 0.0  # every paired term is exactly 0
    assert res.rounds_for_80_power == math.inf and res.to_dict()["rounds_for_80_power"] is None


def test_a_policy_with_no_true_gain_is_rejected_at_the_nominal_rate() -> None:
    # equal click rates: the concentrated policy is no better than uniform
    res = power_analysis(np.full(4, 0.1), np.array([0.7, 0.1, 0.1, 0.1]), test_rounds=2000,
                         n_reps=3000, null_reps=0, seed=4)
    assert res.true_diff == pytest.approx(0.0, abs=1e-15)
    assert 0.012 < res.power < 0.04  # one side of a 95% interval: 0.025
    assert 0.93 < res.coverage < 0.97
    assert abs(res.mean_estimated_diff) < 4 * res.sd_estimated_diff / math.sqrt(res.n_reps)


def test_null_rate_uses_flat_click_rates() -> None:
    ctr = np.array([0.02, 0.1, 0.3, 0.4])
    res = power_analysis(ctr, np.array([0.1, 0.2, 0.3, 0.4]), test_rounds=2000, n_reps=300,
                         null_reps=3000, seed=6)
    assert res.power > 0.9
    assert res.null_rate is not None and 0.012 < res.null_rate < 0.04


def test_oracle_is_found_when_click_rates_are_skewed_and_rounds_many() -> None:
    ctr = np.array([0.5, 0.01, 0.01, 0.01])
    res = power_analysis(ctr, best_item_policy(ctr), test_rounds=5000, n_reps=200,
                         null_reps=0, seed=7)
    assert res.power == 1.0 and res.true_diff == pytest.approx(0.5 - 0.1325)
    assert res.mean_matched_clicks == pytest.approx(5000 / 4 * 0.5, rel=0.05)
    assert res.rounds_for_80_power is not None and res.rounds_for_80_power < 100


def test_obd_like_oracle_is_underpowered_on_5000_rounds() -> None:
    # 80 items, 0.38% clicks, the best item 1.6x the mean: what the OBD sample looks like
    ctr = np.ones(80)
    ctr[0] = 1.6
    ctr *= 0.0038 / ctr.mean()
    res = power_analysis(ctr, best_item_policy(ctr), test_rounds=5000, n_reps=300,
                         null_reps=0, seed=8)
    assert res.true_diff > 0
    assert res.power < 0.02
    assert res.mean_matched_clicks is not None and res.mean_matched_clicks < 1.0
    assert res.rounds_for_80_power is not None and res.rounds_for_80_power > 500_000


def test_normal_approximation_rounds_give_80_percent_power() -> None:
    ctr = np.array([0.05, 0.08, 0.12, 0.15])
    pi = softmax_policy(ctr, 0.5)
    diff, sd = paired_moments(ctr, pi)
    n80 = math.ceil(rounds_for_power(diff, sd))
    assert normal_power(diff, sd, n80) == pytest.approx(0.8, abs=1e-3)
    res = power_analysis(ctr, pi, test_rounds=n80, n_reps=1500, null_reps=0, seed=9)
    assert abs(res.power - 0.8) < 0.04
    assert res.rounds_for_80_power == pytest.approx(n80, abs=1.0)
    assert res.normal_power == pytest.approx(0.8, abs=1e-3)


def test_most_detectable_policy_attains_the_signal_to_noise_bound() -> None:
    rng = np.random.default_rng(10)
    ctr = rng.uniform(0.001, 0.01, size=20)
    bound = max_signal_to_noise(ctr)
    diff, sd = paired_moments(ctr, most_detectable_policy(ctr))
    assert diff / sd == pytest.approx(bound, rel=1e-9)
    for _ in range(200):  # no other policy does better
        pi = rng.dirichlet(np.full(20, rng.uniform(0.05, 5.0)))
        d, s = paired_moments(ctr, pi)
        assert d / s <= bound + 1e-12
    for pi in (best_item_policy(ctr), softmax_policy(ctr, 0.1)):
        d, s = paired_moments(ctr, pi)
        assert d / s < bound


def test_learned_greedy_policy_is_the_reports_item_ctr_ranker() -> None:
    rng = np.random.default_rng(11)
    logs = simulate_uniform_logs(np.repeat(rng.uniform(0.01, 0.3, 10)[:, None], 3, axis=1),
                                 3000, rng)
    pi = learned_policy(logs, 10, 3, prior_strength=50.0)
    model = SegmentCtrModel.fit(np.empty((len(logs), 0), dtype=str), logs.actions,
                                logs.rewards, 10, 50.0)
    ranked = model.rank(np.empty((1, 0), dtype=str), 3)[0]
    assert np.array_equal(np.argmax(pi, axis=0), ranked)
    np.testing.assert_allclose(smoothed_item_ctr(logs.actions, logs.rewards, 10, 50.0),
                               model.item_ctr)


def test_learned_policy_power_with_much_data_and_with_none() -> None:
    ctr = np.array([0.4, 0.05, 0.05, 0.05, 0.05])
    strong = learned_policy_power(ctr, kind="greedy", train_rounds=3000, test_rounds=3000,
                                  len_list=1, n_reps=50, null_reps=0, seed=12)
    assert strong.true_diff == pytest.approx(0.4 - ctr.mean()) and strong.power == 1.0
    flat = learned_policy_power(np.full(5, 0.1), kind="softmax", train_rounds=500,
                                test_rounds=500, n_reps=100, null_reps=0, seed=13)
    assert flat.true_diff == pytest.approx(0.0, abs=1e-15)
    assert flat.per_round_sd is None and flat.rounds_for_80_power is None


def test_results_are_deterministic_under_a_seed() -> None:
    ctr = np.array([0.02, 0.04, 0.08])
    pi = softmax_policy(ctr, 0.3)
    kwargs = {"test_rounds": 500, "n_reps": 100, "null_reps": 50}
    a = power_analysis(ctr, pi, seed=21, **kwargs)
    assert a == power_analysis(ctr, pi, seed=21, **kwargs)
    assert a != power_analysis(ctr, pi, seed=22, **kwargs)
    b = learned_policy_power(ctr, seed=21, **kwargs)
    assert b == learned_policy_power(ctr, seed=21, **kwargs)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="distribution"):
        power_analysis(np.array([0.1, 0.2]), np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="click rates"):
        power_analysis(np.array([0.0, 0.2]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="items"):
        power_analysis(np.array([0.1, 0.2]), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="kind"):
        learned_policy_power(np.array([0.1, 0.2]), kind="ucb", n_reps=1)


def _small_power():
    prior = parse_prior_yaml(PRIOR_YAML)["all"]
    return run_obd_power(np.array(prior["alpha"]), np.array(prior["beta"]), 0.01,
                         test_rounds=400, train_rounds=400, len_list=2, n_reps=20, seed=5)


def test_run_obd_power_covers_the_policies_and_the_bound() -> None:
    power = _small_power()
    names = [r.policy for r in power.results]
    assert names == ["oracle best item", "oracle softmax (T=1)", "most detectable",
                     "learned greedy", "learned softmax (T=1)"]
    assert power.ctr_max_over_mean == pytest.approx(30 / 15)  # alphas 30,10,10,10 -> mean 15
    best = power.get("oracle best item")
    assert best.true_value == pytest.approx(0.02)
    detectable = power.get("most detectable")
    assert detectable.rounds_for_80_power == pytest.approx(power.min_rounds_any_item_policy)
    for r in power.results[:3]:
        assert r.rounds_for_80_power is not None
        assert r.rounds_for_80_power >= power.min_rounds_any_item_policy * (1 - 1e-9)
    doc = power.to_dict()
    assert doc["results"][0]["policy"] == "oracle best item" and "null_rate" in doc["results"][0]


def test_comparison_and_report_carry_the_power_result() -> None:
    from evaluation.artwork.report import _obd_section
    from evaluation.obd import BtsCheck

    power = _small_power()

    def est(v: float, method: str = "ips") -> Estimate:
        return Estimate(v, v - 0.001, v + 0.001, 5000, 5000.0, 0.0005, method)

    comp = ContextualComparison("all", 400, 400, 4, 4, 100.0,
                                (PolicyReport("uniform", {"ips": est(0.01)}, {}),), 0.1, power)
    assert comp.to_dict()["power"]["results"][0]["policy"] == "oracle best item"
    check = BtsCheck("all", 1000, 1, est(0.0045), est(0.0045, "snips"), est(0.004, "dm"),
                     est(0.0046, "dr"), est(0.0042, "on-policy"), 1e-5, 1.0)
    text = "\n".join(_obd_section(SimpleNamespace(obd_check=check, obd_comparison=comp,
                                                  failures=[])))
    best = power.get("oracle best item")
    assert "Power on the sample" in text
    assert f"{100 * best.power:.1f}% of 400-round test halves" in text
    assert f"{best.rounds_for_80_power:,.0f}" in text or "never" in text
    assert "| `learned greedy` |" in text
    assert f"{power.min_rounds_any_item_policy:,.0f}" in text
    no_power = ContextualComparison("all", 400, 400, 4, 4, 100.0, comp.policies, 0.1)
    text = "\n".join(_obd_section(SimpleNamespace(obd_check=check, obd_comparison=no_power,
                                                  failures=[])))
    assert "Power on the sample" not in text
