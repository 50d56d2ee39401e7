"""evaluation.artwork: the log join (decisions, rewards, agreement with the worker), the
preference model and take fraction of the simulation, offline replay, and the report writer.
No network."""

from __future__ import annotations

import dataclasses
import math
import random
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evaluation.artwork.logs import (
    ArtworkRound,
    DrawRepeats,
    OfflineResult,
    build_rounds,
    draw_repeats,
    is_uniform_logging,
    progressive_estimates,
    replay_learning,
    worker_join,
)
from evaluation.artwork.report import (
    ArtworkResults,
    ReplayOnlineRow,
    RunSummary,
    render_markdown,
    write_report,
)
from evaluation.artwork.simulate import (
    PreferenceModel,
    SimConfig,
    TakeFraction,
    build_catalog,
    make_members,
    take_fraction,
)
from evaluation.obd import BtsCheck, ContextualComparison, PolicyReport
from evaluation.offline import Estimate
from features.profile import FeatureParams
from online_models.bandits import Arm, make_policy
from topics.models import Impression, Play

T0 = 1_764_230_400_000
ARMS = {"t1": [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",)), Arm("t1-c", ("cast",))],
        "t2": [Arm("t2-a", ("comedy",)), Arm("t2-b", ("romance",)), Arm("t2-c", ("cast",))]}


def imp(ts: int, art: str = "t1-a", title: str = "t1", profile: str = "p1", prop: float = 1 / 3,
        version: int = 0, policy: str = "uniform", row: int = 0, column: int = 0,
        event_id: str | None = None, ctx: str = '{"genre:Comedy": 1.0}') -> Impression:
    return Impression(event_id=event_id or uuid.uuid4().hex, profile_id=profile,
                      event_ts_ms=ts, request_id=f"r{ts}", title_id=title, row_id="top",
                      row=row, column=column, artwork_id=art, propensity=prop, policy=policy,
                      policy_version=version, context_json=ctx)


def play(ts: int, fraction: float, title: str = "t1", profile: str = "p1",
         event_id: str | None = None) -> Play:
    return Play(event_id=event_id or uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts,
                title_id=title, action="progress", position_s=fraction * 1000.0,
                duration_s=1000.0, country="US")


def join(imps, plays, **kw):
    kw = {"reward_window_s": 60.0, "quality_fraction": 0.3, **kw}
    return build_rounds(imps, plays, ARMS, **kw)


# -- the join ---------------------------------------------------------------------------------
def test_quality_play_in_the_window_rewards_the_decision() -> None:
    rounds, stats = join([imp(T0)], [play(T0 + 30_000, 0.5)])
    assert [(r.action, r.reward, r.settled_ts_ms) for r in rounds] == [("t1-a", 1.0, T0 + 30_000)]
    assert rounds[0].context == {"genre:Comedy": 1.0} and rounds[0].arm.tags == ("comedy",)
    assert stats.rounds == 1 and stats.rewarded == 1


@pytest.mark.parametrize("when_s, fraction", [
    (30, 0.2),     # below the quality fraction
    (61, 0.9),     # after the window
    (-5, 0.9),     # before the impression
])
def test_other_plays_do_not_reward(when_s: int, fraction: float) -> None:
    rounds, _ = join([imp(T0)], [play(T0 + when_s * 1000, fraction), play(T0 + 120_000, 0.0)])
    assert [r.reward for r in rounds] == [0.0]


def test_window_boundary_is_inclusive_like_the_worker() -> None:
    rounds, _ = join([imp(T0)], [play(T0 + 60_000, 0.3)])
    assert [r.reward for r in rounds] == [1.0]


def test_sticky_repeats_count_once_and_a_new_period_is_a_new_decision() -> None:
    imps = [imp(T0), imp(T0 + 600_000), imp(T0 + 1_200_000),       # one assignment
            imp(T0 + 3_600_000)]                                   # period over: re-chosen
    rounds, stats = join(imps, [play(T0 + 1_210_000, 0.9)], sticky_s=3600,
                         end_ts_ms=T0 + 4_000_000)
    assert [(r.ts_ms - T0, r.reward) for r in rounds] == [(0, 0.0), (3_600_000, 0.0)]
    assert stats.sticky_repeats == 2
    # the play 20 minutes later is outside the first impression's 60 s window


def test_repeat_with_another_version_or_propensity_is_a_new_decision() -> None:
    imps = [imp(T0), imp(T0 + 1000, version=5), imp(T0 + 2000, version=5, prop=0.5)]
    rounds, stats = join(imps, [], sticky_s=3600, end_ts_ms=T0 + 3_600_000)
    assert len(rounds) == 3 and stats.sticky_repeats == 0


def test_with_sticky_zero_every_impression_is_a_decision() -> None:
    rounds, _ = join([imp(T0), imp(T0 + 90_000)], [play(T0 + 100_000, 0.9)], sticky_s=0)
    assert [r.reward for r in rounds] == [0.0, 1.0]


def test_a_new_decision_settles_the_pending_one_with_zero() -> None:
    imps = [imp(T0, "t1-a"), imp(T0 + 10_000, "t1-b")]
    rounds, _ = join(imps, [play(T0 + 20_000, 0.9)])
    assert [(r.action, r.reward, r.settled_ts_ms - T0) for r in rounds] == [
        ("t1-a", 0.0, 10_000), ("t1-b", 1.0, 20_000)]


def test_zero_is_settled_at_the_members_first_event_after_the_window() -> None:
    imps = [imp(T0), imp(T0 + 30_000, title="t2", art="t2-a"),
            imp(T0 + 95_000, title="t2", art="t2-b")]
    rounds, _ = join(imps, [])
    first = next(r for r in rounds if r.title_id == "t1")
    assert first.reward == 0.0 and first.settled_ts_ms == T0 + 95_000


def test_zero_is_settled_when_the_watermark_passes_the_window_with_the_timer() -> None:
    # p1's own next event comes 95 s on; another member's events move event time sooner
    imps = [imp(T0), imp(T0 + 30_000, title="t2", art="t2-a"),
            imp(T0 + 95_000, title="t2", art="t2-b")]
    others = [play(T0 + t, 0.0, title="t2", profile="p2") for t in (50_000, 64_000, 66_000)]
    rounds, _ = join(imps, others, settle_lateness_s=5.0, settle_interval_s=1.0)
    first = next(r for r in rounds if r.title_id == "t1")
    # window closes at 60 s; watermark lateness 5 s: first event past 65 s is at 66 s,
    # plus half the 1 s timer interval
    assert first.reward == 0.0 and first.settled_ts_ms == T0 + 66_500
    # no event past the window + lateness: the member's own next event settles it
    rounds, _ = join(imps, others[:2], settle_lateness_s=5.0, settle_interval_s=1.0)
    first = next(r for r in rounds if r.title_id == "t1")
    assert first.settled_ts_ms == T0 + 95_000


def test_delayed_positive_is_settled_with_the_zeros_when_the_watermark_passes() -> None:
    imps = [imp(T0), imp(T0 + 1_000, title="t2", art="t2-a")]
    plays = [play(T0 + 30_000, 0.9),                                        # quality on t1
             *(play(T0 + t, 0.0, title="t2", profile="p2") for t in (64_000, 67_000))]
    kw = {"settle_lateness_s": 5.0, "settle_interval_s": 1.0}
    now, _ = join(imps, plays, **kw)
    held, _ = join(imps, plays, delayed_positives=True, **kw)
    assert [(r.title_id, r.reward, r.settled_ts_ms - T0) for r in now] == [
        ("t1", 1.0, 30_000), ("t2", 0.0, 67_500)]
    # same rewards; the positive waits for the watermark (first event past 65 s, + 0.5 s)
    assert [(r.title_id, r.reward, r.settled_ts_ms - T0) for r in held] == [
        ("t1", 1.0, 67_500), ("t2", 0.0, 67_500)]
    # a new decision of the title pays the held-back positive at once
    held, stats = join([*imps, imp(T0 + 40_000, art="t1-b")], plays, delayed_positives=True,
                       **kw)
    assert [(r.reward, r.settled_ts_ms - T0) for r in held if r.title_id == "t1"] == [
        (1.0, 40_000)]
    assert stats.censored == 1  # the new decision's window is still open at the end
    # a positive whose window is open at the end of the logs is censored, like the worker
    _, stats = join(imps[:1], plays[:1], delayed_positives=True, end_ts_ms=T0 + 50_000)
    assert stats.censored == 1 and stats.rounds == 0


def test_duplicates_materialized_viewport_unknown_arms_and_censoring() -> None:
    dup = imp(T0, event_id="same")
    imps = [dup, imp(T0, event_id="same"),                       # delivered twice
            imp(T0 + 1, policy="materialized", prop=1.0),         # no bandit decision
            imp(T0 + 2, title="t2", art="t2-a", row=3),           # below the viewport
            imp(T0 + 3, title="t2", art="t2-zzz"),                # not a catalog artwork
            imp(T0 + 100_000, title="t2", art="t2-b")]            # window still open at the end
    rounds, stats = join(imps, [], viewport=(2, 5))
    assert stats.duplicates == 1 and stats.materialized == 1 and stats.outside_viewport == 1
    assert stats.unknown_arm == 1 and stats.censored == 1
    assert [(r.title_id, r.reward) for r in rounds] == [("t1", 0.0)]


def test_rounds_come_out_in_log_order() -> None:
    imps = [imp(T0 + 5, title="t2", art="t2-a"), imp(T0, column=1), imp(T0, title="t2",
                                                                         art="t2-b", column=0)]
    rounds, _ = join(imps, [], end_ts_ms=T0 + 10**6, sticky_s=0)
    assert [(r.ts_ms - T0, r.column) for r in rounds] == [(0, 0), (0, 1), (5, 0)]


def _visits(rng: random.Random, profile: str, window_ms: int) -> tuple[list, list]:
    """Member visits spaced more than the window apart, every title a fresh draw (sticky 0),
    plays within the window: the domain in which the log join and the worker agree."""
    imps, plays = [], []
    ts = T0 + rng.randrange(1000)
    for _ in range(12):
        for col, title in enumerate(rng.sample(["t1", "t2"], 2)):
            art = rng.choice(ARMS[title]).artwork_id
            imps.append(imp(ts, art=art, title=title, profile=profile, column=col))
            if rng.random() < 0.5:
                plays.append(play(ts + rng.randrange(0, window_ms), rng.choice([0.1, 0.3, 0.8]),
                                  title=title, profile=profile))
        if rng.random() < 0.2:  # a play of a title not on the page, or a late one
            plays.append(play(ts + rng.randrange(0, 2 * window_ms), 0.9,
                              title=rng.choice(["t1", "t2", "t9"]), profile=profile))
        ts += window_ms + 1 + rng.randrange(3 * window_ms)
    plays.append(play(ts + 10 * window_ms, 0.0, title="t9", profile=profile))  # a last event
    return imps, plays


@pytest.mark.parametrize("delayed", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_log_join_agrees_with_the_worker_on_spaced_visits(seed: int, delayed: bool) -> None:
    rng = random.Random(seed)
    window_s = 5.0
    imps, plays = [], []
    for p in ("p1", "p2", "p3"):
        i, pl = _visits(rng, p, int(window_s * 1000))
        imps += i
        plays += pl
    rounds, _ = build_rounds(imps, plays, ARMS, reward_window_s=window_s, quality_fraction=0.3,
                             delayed_positives=delayed)
    params = FeatureParams(reward_window_s=window_s, quality_fraction=0.3,
                           delayed_positives=delayed)
    worker = worker_join([*imps, *plays], lambda t: ["Comedy"], params)
    ours = Counter((r.profile_id, r.title_id, r.action, r.ts_ms, r.reward) for r in rounds)
    theirs = Counter((pid, w.title_id, w.artwork_id, w.impression_ts_ms, w.reward)
                     for pid, w in worker)
    assert ours == theirs and len(rounds) == len(imps)
    assert sum(r.reward for r in rounds) > 0


def test_documented_difference_same_image_redrawn_within_the_window() -> None:
    imps = [imp(T0), imp(T0 + 10_000)]    # sticky 0: two draws of the same image
    plays = [play(T0 + 20_000, 0.9), play(T0 + 10**6, 0.0, title="t9")]
    rounds, _ = join(imps, plays, sticky_s=0)
    worker = worker_join([*imps, *plays], lambda t: [], FeatureParams(reward_window_s=60.0))
    assert [r.reward for r in rounds] == [0.0, 1.0]        # two decisions
    assert [w.reward for _, w in worker] == [1.0]           # the worker merges them


# -- simulation pieces --------------------------------------------------------------------------
def test_preference_model() -> None:
    m = PreferenceModel(p_match=0.3, p_other=0.1, other_genre_factor=0.5)
    assert m.probability("Comedy", ("comedy",), ["Comedy"]) == 0.3
    assert m.probability("Comedy", ("Romance",), ["Comedy"]) == 0.1
    assert m.probability("Romance", ("romance",), ["Comedy"]) == 0.15
    assert m.random_value("Comedy", ["comedy", "romance", "cast"]) == pytest.approx(0.5 / 3)
    assert m.best_value("Romance", ["comedy", "romance", "cast"], ["Comedy"]) == 0.15
    rng = random.Random(1)
    hits = sum(m.draw(rng, "Comedy", ("comedy",), ["Comedy"]) for _ in range(20_000))
    assert hits / 20_000 == pytest.approx(0.3, abs=0.015)
    with pytest.raises(ValueError, match="p_match"):
        PreferenceModel(p_match=1.5)


def test_catalog_members_and_config() -> None:
    cfg = SimConfig(titles_per_genre=3, members=4)
    titles = build_catalog(cfg)
    assert len(titles) == 6 and len({t.title_id for t in titles}) == 6
    assert all(sorted(a.tags[0] for a in t.artwork) == ["cast", "comedy", "romance"]
               for t in titles)
    assert [m.favourite for m in make_members(cfg)] == ["Comedy", "Romance"] * 2
    with pytest.raises(ValueError, match="window"):
        SimConfig(reward_window_s=0.5, think_s=(0.2, 0.7))
    with pytest.raises(ValueError, match="spaced"):
        SimConfig(reward_window_s=2.0, visit_interval_s=(1.0, 3.0))


def test_take_fraction_is_clustered_by_member() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    independent = take_fraction(y, np.arange(8))
    clustered = take_fraction(y, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    assert independent.value == clustered.value == 0.5
    assert clustered.std_error > independent.std_error
    assert math.isnan(take_fraction(y, np.zeros(8)).std_error)
    assert take_fraction(np.array([]), np.array([])).impressions == 0


# -- offline evaluation --------------------------------------------------------------------------
def _toy_rounds(n: int, seed: int = 0) -> list[ArtworkRound]:
    """Uniformly logged rounds: fans take their genre's image 30% of the time, others 10%."""
    rng = random.Random(seed)
    rounds = []
    for i in range(n):
        fav = rng.choice(["Comedy", "Romance"])
        arms = tuple(Arm(f"t{i % 50}-{t}", (t,)) for t in ("comedy", "romance", "cast"))
        arm = rng.choice(arms)
        p = 0.3 if arm.tags[0] == fav.lower() else 0.1
        ts = T0 + 10 * i
        reward = float(rng.random() < p)
        rounds.append(ArtworkRound(f"m{i % 100}", f"t{i % 50}", ts, {f"genre:{fav}": 1.0}, arms,
                                   arm.artwork_id, 1 / 3, reward, "uniform", 0,
                                   settled_ts_ms=ts + (5 if reward else 2000)))
    return rounds


def test_replay_ranks_a_contextual_policy_above_uniform() -> None:
    rounds = _toy_rounds(3000)
    assert is_uniform_logging(rounds)
    uni = replay_learning(rounds, make_policy("uniform", seed=1)).estimates["replay"]
    lin = replay_learning(rounds, make_policy("lin_ucb", seed=1))
    est = lin.estimates["replay"]
    assert est.value > uni.ci_high and 800 < est.n_effective < 1200
    assert len(lin.matched) == est.n_effective
    timed = replay_learning(rounds, make_policy("lin_ucb", seed=1), pipeline_timing=True)
    assert "replay (pipeline timing)" in timed.estimates


def test_progressive_ips_of_the_logging_policy_is_the_mean_reward() -> None:
    rounds = _toy_rounds(600)
    res = progressive_estimates(rounds, make_policy("uniform", seed=1))
    mean = np.mean([r.reward for r in rounds])
    assert res.estimates["ips"].value == pytest.approx(mean)
    assert res.estimates["snips"].value == pytest.approx(mean)
    assert set(res.estimates) == {"ips", "snips", "dr"}


def test_draw_repeats_flags_identical_first_draws() -> None:
    rounds = []
    for version in range(6):
        for col in range(5):
            arms = tuple(Arm(f"t{col}-{t}", (t,)) for t in ("a", "b", "c"))
            rounds.append(ArtworkRound("m", f"t{col}", T0 + 1000 * version, {}, arms,
                                       arms[col % 3].artwork_id, 1 / 3, 0.0, "uniform", version,
                                       request_id=f"r{version}", column=col))
    check = draw_repeats(rounds)
    assert check is not None and check.versions == 6 and check.share == 1.0
    assert check.most_common == (0, 1, 2, 0, 1)
    assert check.expected_share == pytest.approx(3.0 ** -5)


# -- the report -----------------------------------------------------------------------------------
def _est(v: float, method: str = "ips", n: int = 1000, n_eff: float = 900.0) -> Estimate:
    return Estimate(v, v - 0.01, v + 0.01, n, n_eff, 0.005, method)


def _tf(v: float) -> TakeFraction:
    return TakeFraction(v, v - 0.004, v + 0.004, 0.002, 20_000, int(v * 20_000), 500)


def _summary(policy: str, v: float) -> RunSummary:
    return RunSummary(
        policy=policy, take=_tf(v), expected={"shown": v, "random": 0.13, "oracle": 0.24},
        pages=2000, http_errors=0, rounds=20_000, rounded_rewards=int(v * 20_000),
        worker_rewards=19_000, worker_quality_plays=int(v * 20_000), final_version=19_000,
        learned={"Comedy fan": {"comedy": 0.9, "romance": 0.05, "cast": 0.05}},
        by_favourite={"Comedy": _tf(v), "Romance": _tf(v)},
        by_tag_shown={"Comedy fan sees comedy": 0.8}, timings={"total_s": 170.0, "loop_s": 150},
        page_latency_ms={"p50": 3.0, "p95": 9.0},
        cumulative=([1, 10, 100, 20_000], [0.0, 0.1, 0.12, v]),
        moving=([3000, 20_000], [v - 0.01, v]))


def _fake_results(tmp_obd: bool = True) -> ArtworkResults:
    check = comparison = None
    if tmp_obd:
        check = BtsCheck("all", 100_000, 12345, _est(0.004553), _est(0.0047, "snips"),
                         _est(0.0040, "dm"), _est(0.0046, "dr"), _est(0.0042, "on-policy"),
                         1.9e-5, 1.0)
        comparison = ContextualComparison(
            "all", 5000, 5000, 19, 19, 100.0,
            (PolicyReport("uniform", {"ips": _est(0.0038)}, {}),
             PolicyReport("contextual", {"replay": _est(0.0, "replay")},
                          {"ips": _est(-0.0038)}, 66, 0, 0.25)), 0.3)
    offline = [
        OfflineResult("lin_ucb", "uniform", {"replay": _est(0.2151, "replay")}, 1.0),
        OfflineResult("lin_ucb", "uniform",
                      {"replay (pipeline timing)": _est(0.1702, "replay (pipeline timing)")},
                      1.0),
        OfflineResult("lin_ucb", "uniform", {"ips": _est(0.2233), "snips": _est(0.2231, "snips"),
                                             "dr": _est(0.2232, "dr")}, 2.0),
        OfflineResult("uniform", "lin_ucb", {"ips": _est(0.1301)}, 2.0),
    ]
    replay_online = [ReplayOnlineRow("uniform", _est(0.1301, "replay"), _tf(0.1305),
                                     _tf(0.1311), _est(0.1301, "replay"), _tf(0.1305)),
                     ReplayOnlineRow("lin_ucb", _est(0.2151, "replay"), _tf(0.1688),
                                     _tf(0.1987), _est(0.1702, "replay"), _tf(0.1690))]
    return ArtworkResults(
        command="python -m evaluation.artwork", generated="2026-01-01 00:00 UTC", quick=False,
        config={**SimConfig().to_dict(), "notes": ["a computed note"],
                "offline_max_rounds": 60_000},
        runs=[_summary("uniform", 0.1311), _summary("non_contextual", 0.1702),
              _summary("lin_ucb", 0.1987)], offline=offline,
        replay_online=replay_online, obd_check=check, obd_comparison=comparison,
        runtime_s={"total": 900.0, "obd": 1.0, "simulations": 700.0, "offline": 190.0,
                   "report": 2.0}, machine="2 CPUs")


def test_report_shows_every_table_with_the_numbers() -> None:
    text = render_markdown(_fake_results())
    for needle in ("## 1. Open Bandit Dataset check", "0.004553", "0.0042",
                   "contains the true value 0.0042: yes",
                   "| `lin_ucb` | 0.1987 [0.1947, 0.2027] | 20,000 |",
                   "Observed order: `lin_ucb` > `non_contextual` > `uniform`", "## Summary",
                   "Expected order contextual (`lin_ucb`) > non-contextual > random: holds",
                   "Stability:",
                   "(significant)", "0.2151 [0.2051, 0.2251]", "**differ**", "(agree)",
                   "a computed note", "artwork_take_fraction.png", "wall time 15.0 min",
                   "HOMESTREAM_ARTWORK_POLICY=<policy>", "make eval-artwork",
                   "| `uniform` | `lin_ucb` |", "| `lin_ucb` | `uniform` |",
                   "The `uniform` row is the control", "Feedback timing:", "Closed loop:"):
        assert needle in text, needle
    assert "did not complete" not in text


def test_report_states_when_positives_are_paid() -> None:
    res = _fake_results()
    res.config = {**res.config, "delayed_positives": False}
    text = render_markdown(res)
    assert "`HOMESTREAM_ARTWORK_DELAYED_POSITIVES=False` (quality plays paid at once)" in text
    assert "a quality play at once, a zero when" in text
    res.config = {**res.config, "delayed_positives": True}
    text = render_markdown(res)
    assert "`HOMESTREAM_ARTWORK_DELAYED_POSITIVES=True` (quality plays paid when" in text
    assert "a quality play and a zero alike when" in text
    assert "a quality play at once" not in text


def test_drift_adjustment_subtracts_the_uniform_controls_gap() -> None:
    from evaluation.artwork.report import drift_adjusted

    res = _fake_results()
    control, lin = res.replay_online
    # control: 0.1301 - 0.1305; lin_ucb: 0.2151 - 0.1688 (immediate), 0.1702 - 0.1690 (timed)
    d, se, ok = drift_adjusted(lin, control)
    assert d == pytest.approx((0.2151 - 0.1688) - (0.1301 - 0.1305))
    assert se == pytest.approx(math.sqrt(2 * 0.005 ** 2 + 2 * 0.002 ** 2)) and not ok
    d, _, ok = drift_adjusted(lin, control, timed=True)
    assert d == pytest.approx((0.1702 - 0.1690) - (0.1301 - 0.1305)) and ok
    text = render_markdown(res)
    assert "| `lin_ucb` | +0.0467 ± 0.0149 (**differ**) | +0.0016 ± 0.0149 (agree) |" in text


def test_report_reads_the_draw_check() -> None:
    res = _fake_results()
    res.draw_check = DrawRepeats(60, (1, 0, 0, 0, 2), 1.0, 3.0 ** -5)
    assert "restart from the same RNG state" in render_markdown(res)
    res.draw_check = DrawRepeats(60, (1, 0, 0, 0, 2), 2 / 60, 3.0 ** -5)
    assert "do not repeat across checkpoint reloads" in render_markdown(res)


def test_report_of_a_failed_run_says_so() -> None:
    res = _fake_results(tmp_obd=False)
    res.failures = ["simulation of lin_ucb failed: SimulationError: worker exited"]
    res.runs, res.offline, res.replay_online = [], [], []
    text = render_markdown(res)
    assert "**The run did not complete:**" in text and "worker exited" in text
    assert "No run completed." in text


def test_write_report_writes_markdown_and_plot(tmp_path: Path) -> None:
    written = write_report(_fake_results(), tmp_path / "docs" / "artwork.md")
    assert [p.name for p in written] == ["artwork.md", "artwork_take_fraction.png"]
    assert written[1].read_bytes()[:4] == b"\x89PNG"


def test_replay_vs_online_pairs_a_bucket_with_its_whole_run() -> None:
    from types import SimpleNamespace

    from evaluation.artwork.report import replay_vs_online

    outcomes = np.array([1, 1, 1, 1] + [0] * 8, dtype=np.int8)  # the first items all taken
    members = np.arange(12) % 4
    run = SimpleNamespace(policy="lin_ucb", outcomes=outcomes, member_index=members,
                          take=take_fraction(outcomes, members))
    results = [OfflineResult("lin_ucb", "uniform", {"replay": _est(0.3, "replay", n_eff=4)}, 1.0),
               OfflineResult("lin_ucb", "uniform", {"replay (pipeline timing)": _est(
                   0.3, "replay (pipeline timing)", n_eff=4)}, 1.0)]
    first_m = replay_vs_online(results, run)  # type: ignore[arg-type]
    assert first_m.span == "first m items" and first_m.online.value == 1.0
    bucket = replay_vs_online(results, run, bucket=True)  # type: ignore[arg-type]
    assert bucket.span == "bucket"
    assert bucket.online.value == bucket.online_timed.value == pytest.approx(4 / 12)


def test_report_in_bucket_mode_compares_whole_runs_without_the_drift_reading() -> None:
    res = _fake_results()
    res.config = {**res.config, "bucket": 3}
    res.replay_online = [dataclasses.replace(r, span="bucket") for r in res.replay_online]
    text = render_markdown(res)
    assert "bucket of 1 / 3 of the members" in text
    assert "| policy | replay, immediate [95% CI] | m | online, bucket |" in text
    assert "The `uniform` row is the self-check" in text
    assert "drift-adjusted" not in text and "The `uniform` row is the control" not in text
    assert "the other policies with one member in 3" in text


def test_timed_replay_stretches_delays_by_k_unless_told_not_to() -> None:
    rounds = _toy_rounds(3000)  # 10 ms apart; a zero settles 2 s after its impression

    def learned(stretch: int | None) -> int:
        policy = make_policy("uniform", seed=1)
        res = replay_learning(rounds, policy, pipeline_timing=True, stretch=stretch)
        assert len(res.matched) > 900
        return policy.version  # one per round learned

    # matched rounds whose settlement falls after the last logged round are never learned:
    # about 2 s of them (1 in 3 of 200 rounds) when not stretched, 6 s (of 600) by K = 3
    as_logged, stretched = learned(1), learned(None)
    assert as_logged - stretched > 100
    assert learned(3) == stretched


def test_cross_checks_show_how_spread_and_how_pure_the_audiences_were() -> None:
    res = _fake_results()
    res.runs[0] = dataclasses.replace(res.runs[0], titles_shown=100, audience_purity=0.8)
    text = render_markdown(res)
    assert "| titles shown (decisions per title) | audience purity |" in text
    assert "| 100 (200.0) | 0.800 |" in text
    assert "| n/a | n/a |" in text  # the runs without them
