"""A/B testing: assignment stability and proportions, hand-computed metrics and intervals."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import abtest
from evaluation.abtest import (
    Z95,
    RatioStat,
    VariantMetrics,
    assign_variant,
    bucket,
    compare,
    ratio_ci,
    render_table,
    variant_metrics,
)
from topics.models import Impression, Play

T0 = 1_764_230_400_000


def imp(eid: str, member: str, title: str, ts: int, variant: str = "control") -> Impression:
    return Impression(event_id=eid, profile_id=member, event_ts_ms=ts, request_id="r",
                      title_id=title, row_id="row", row=0, column=0, artwork_id="a",
                      propensity=1.0, policy="materialized", variant=variant)


def start(eid: str, member: str, title: str, ts: int, action: str = "start") -> Play:
    return Play(event_id=eid, profile_id=member, event_ts_ms=ts, title_id=title,
                action=action, position_s=0.0, duration_s=100.0)


# -- assignment -----------------------------------------------------------------------------------
@given(st.text(min_size=1, max_size=40), st.text(max_size=20))
def test_assignment_is_stable_and_order_free(member: str, salt: str) -> None:
    split = {"control": 0.5, "b": 0.3, "c": 0.2}
    first = assign_variant(member, salt, split)
    assert assign_variant(member, salt, split) == first
    assert assign_variant(member, salt, dict(reversed(list(split.items())))) == first
    assert assign_variant(member, salt, {k: 10 * v for k, v in split.items()}) == first
    assert 0.0 <= bucket(member, salt) < 1.0


@settings(max_examples=20, deadline=None)
@given(st.text(max_size=12), st.floats(0.05, 0.95))
def test_split_proportions(salt: str, share: float) -> None:
    n = 4000
    got = sum(assign_variant(f"member-{i}", salt, {"a": share, "b": 1 - share}) == "a"
              for i in range(n))
    # binomial: 5 standard deviations
    assert abs(got / n - share) <= 5 * math.sqrt(share * (1 - share) / n)


def test_zero_share_is_never_assigned_and_salts_are_independent() -> None:
    members = [f"m{i}" for i in range(2000)]
    assert {assign_variant(m, "s", {"a": 0.0, "b": 1.0}) for m in members} == {"b"}
    a = [assign_variant(m, "exp-1", {"x": 0.5, "y": 0.5}) for m in members]
    b = [assign_variant(m, "exp-2", {"x": 0.5, "y": 0.5}) for m in members]
    agree = sum(p == q for p, q in zip(a, b, strict=True)) / len(members)
    assert 0.45 < agree < 0.55  # a new salt reshuffles


@pytest.mark.parametrize("split", [{}, {"a": -1.0, "b": 2.0}, {"a": 0.0},
                                   {"a": float("nan")}])
def test_bad_splits_are_refused(split: dict) -> None:
    with pytest.raises(ValueError):
        assign_variant("m", "s", split)


# -- interval arithmetic --------------------------------------------------------------------------
def test_ratio_ci_by_hand() -> None:
    s = ratio_ci([1, 0, 2], [2, 2, 4])
    # r = 3/8; residuals 0.25, -0.75, 0.5; SS = 0.875; xbar = 8/3
    se = math.sqrt(0.875 / (3 * 2)) / (8 / 3)
    assert s.value == 0.375 and s.se == pytest.approx(se)
    assert (s.low, s.high) == pytest.approx((0.375 - Z95 * se, 0.375 + Z95 * se))
    assert (s.numerator, s.denominator, s.units) == (3, 8, 3)


def test_ratio_ci_degenerate_cases() -> None:
    assert math.isnan(ratio_ci([], []).value)
    assert math.isnan(ratio_ci([0], [0]).value)
    one = ratio_ci([1], [4])
    assert one.value == 0.25 and math.isnan(one.low)
    with pytest.raises(ValueError):
        ratio_ci([1], [1, 2])


# -- metrics from events --------------------------------------------------------------------------
def test_variant_metrics_by_hand() -> None:
    w = 60_000  # window 60 s
    events = [
        # m1 (control): t1 taken (play 10 s later), t2 not (play after the window)
        imp("i1", "m1", "t1", T0), imp("i2", "m1", "t2", T0),
        start("p1", "m1", "t1", T0 + 10_000), start("p2", "m1", "t2", T0 + w + 1),
        # progress of t1 is not a start; a duplicate delivery of p1 counts once
        start("p3", "m1", "t1", T0 + 20_000, action="progress"),
        start("p1", "m1", "t1", T0 + 10_000),
        # m2 (control): shown t1 twice, plays it once in between: only the first is taken;
        # a start before the first impression is not counted as a play
        start("p4", "m2", "t9", T0 - 1), imp("i3", "m2", "t1", T0),
        start("p5", "m2", "t1", T0 + 5), imp("i4", "m2", "t1", T0 + 10),
        # m3 (b): one impression, taken
        imp("i5", "m3", "t3", T0, variant="b"), start("p6", "m3", "t3", T0 + w),
        # m4 leaked into two variants: left out
        imp("i6", "m4", "t1", T0, variant="b"), imp("i7", "m4", "t2", T0),
    ]
    metrics, leaked = variant_metrics(events, window_s=60)
    assert leaked == 1
    c, b = metrics["control"], metrics["b"]
    assert (c.members, c.impressions, c.taken, c.plays) == (2, 4, 2, 3)
    assert (b.members, b.impressions, b.taken, b.plays) == (1, 1, 1, 1)
    # take rate: members (1 of 2), (1 of 2) -> 2/4, residuals 0: interval collapses
    assert c.take_rate.value == 0.5 and c.take_rate.low == c.take_rate.high == 0.5
    # plays per impression: m1 2 plays / 2 impressions, m2 1 / 2 -> 3/4
    assert c.plays_per_impression.value == 0.75
    assert b.take_rate.value == 1.0 and math.isnan(b.take_rate.low)


def _vm(name: str, rate: float, se: float) -> VariantMetrics:
    s = RatioStat(rate, rate - Z95 * se, rate + Z95 * se, rate * 100, 100, 10)
    return VariantMetrics(name, 10, 100, int(rate * 100), 0, s, s)


def test_compare_by_hand() -> None:
    out = compare({"control": _vm("control", 0.10, 0.003), "b": _vm("b", 0.12, 0.004),
                   "c": _vm("c", 0.10, 0.004)})
    b, c = out
    assert b.treatment == "b" and b.difference == pytest.approx(0.02)
    assert (b.low, b.high) == pytest.approx((0.02 - Z95 * 0.005, 0.02 + Z95 * 0.005))
    assert b.significant and b.relative == pytest.approx(0.2)
    assert c.difference == pytest.approx(0.0) and not c.significant
    with pytest.raises(ValueError, match="no control"):
        compare({"b": _vm("b", 0.1, 0.01)})


def test_table_and_cli(monkeypatch, capsys) -> None:
    events = [imp("i1", "m1", "t1", T0), start("p1", "m1", "t1", T0 + 1),
              imp("i2", "m2", "t1", T0), imp("i3", "m3", "t1", T0, variant="b"),
              imp("i4", "m4", "t1", T0, variant="b"), start("p2", "m4", "t1", T0 + 1)]
    metrics, leaked = variant_metrics(events)
    text = render_table(metrics, leaked=leaked)
    assert "control" in text and "against control" in text
    seen = {}

    def fake_read(servers, topics, timeout_s):
        seen.update(servers=servers, topics=topics)
        return events, 2

    monkeypatch.setattr(abtest, "read_events", fake_read)
    assert abtest.main(["--bootstrap-servers", "h:1", "--topic-prefix", "x."]) == 0
    out = capsys.readouterr().out
    assert seen == {"servers": "h:1", "topics": ["x.impressions", "x.player-events"]}
    assert "2 undecodable" in out and "take_rate" in out
    monkeypatch.setattr(abtest, "read_events", lambda *a: ([], 0))
    assert abtest.main(["--bootstrap-servers", "h:1"]) == 1
