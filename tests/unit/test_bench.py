"""Unit tests of the bench's pure parts: quantiles, rates, argument parsing, target checks."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from bench.phases import (
    BenchError,
    DrainResult,
    drain_backlog,
    inprocess_command,
    inprocess_floor,
    sustained_rate,
)
from bench.run import (
    _load_eps,
    _record_drain,
    check_failures,
    check_targets,
    cpu_delta,
    drain_rate,
    parse_args,
    percentiles,
    quantile,
    rate,
    scaling_row,
    targets_of,
    with_outside,
    worker_counts,
)
from bench.stats import assembly_ms_per_page


# -- quantiles ----------------------------------------------------------------------------------
def test_quantile_endpoints_and_median() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert quantile(xs, 0.0) == 1.0
    assert quantile(xs, 1.0) == 5.0
    assert quantile(xs, 0.5) == 3.0


def test_quantile_interpolates_between_ranks() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10, 20], 0.25) == 12.5
    # p99 of 1..100: rank 0.99 * 99 = 98.01 -> 99 + 0.01 * (100 - 99)
    assert quantile(list(range(1, 101)), 0.99) == pytest.approx(99.01)


def test_quantile_single_value_and_input_untouched() -> None:
    assert quantile([7.5], 0.99) == 7.5
    xs = [3, 1, 2]
    quantile(xs, 0.5)
    assert xs == [3, 1, 2]


def test_quantile_matches_numpy_linear() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(1)
    xs = [rng.expovariate(0.1) for _ in range(777)]
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_quantile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError):
        quantile([1.0, 2.0], q)


def test_quantile_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        quantile([], 0.5)


def test_percentiles() -> None:
    assert percentiles([1, 2, 3, 4, 5]) == [3.0, pytest.approx(4.96)]
    assert percentiles([]) == [None, None]
    assert percentiles([2.0], (0.1, 0.5, 0.9)) == [2.0, 2.0, 2.0]


# -- rates --------------------------------------------------------------------------------------
def test_rate() -> None:
    assert rate(100, 2.0) == 50.0
    assert rate(100, 0.0) is None


def test_drain_rate_excludes_join_and_first_batch() -> None:
    samples = [(0.0, 0), (3.0, 0), (5.0, 1000), (6.0, 3000), (7.5, 6000), (7.6, 6000)]
    eps, measured = drain_rate(samples)
    assert measured == pytest.approx(2.5)
    assert eps == pytest.approx(5000 / 2.5)


def test_drain_rate_without_progress_or_single_batch() -> None:
    assert drain_rate([]) == (None, 0.0)
    assert drain_rate([(0.0, 0), (1.0, 0)]) == (None, 0.0)
    assert drain_rate([(0.0, 0), (2.0, 500), (3.0, 500)]) == (None, 0.0)


def test_cpu_delta() -> None:
    assert cpu_delta({"a": 1.0, "b": None, "c": 2.0}, {"a": 1.256, "b": 3.0, "c": None}) == {
        "a": 0.26, "b": None, "c": None}
    assert cpu_delta({}, {"a": 1.0}) == {}


def test_with_outside() -> None:
    cpu = {"worker": 4.0, "bench": 1.0, "host_all": 7.5}
    assert with_outside(cpu) == {**cpu, "outside_bench": 2.5}
    assert with_outside({"worker": 4.0, "host_all": 3.0})["outside_bench"] == 0.0
    assert with_outside({"worker": None, "host_all": 3.0})["outside_bench"] is None
    assert with_outside({"worker": 1.0, "host_all": None})["outside_bench"] is None


# -- arguments ----------------------------------------------------------------------------------
def test_parse_args_defaults() -> None:
    a = parse_args([])
    assert a.events == 100_000
    assert a.titles == 500
    assert a.profiles == 2000
    assert a.load_eps == 1000.0
    assert a.load_seconds == 20.0
    assert a.concurrency == 32
    assert a.serve_seconds == 10.0
    assert targets_of(a) == {"max_freshness_p99_ms": None, "min_events_per_s": None,
                             "max_serve_p99_ms": None}


def test_parse_args_overrides_and_targets() -> None:
    a = parse_args(["--events", "5000", "--load-eps", "250", "--concurrency", "8",
                    "--serve-seconds", "2.5", "--max-freshness-p99-ms", "2000",
                    "--min-events-per-s", "5000", "--max-serve-p99-ms", "50"])
    assert (a.events, a.load_eps, a.concurrency, a.serve_seconds) == (5000, 250.0, 8, 2.5)
    assert targets_of(a) == {"max_freshness_p99_ms": 2000.0, "min_events_per_s": 5000.0,
                             "max_serve_p99_ms": 50.0}


@pytest.mark.parametrize("argv", [
    ["--events", "0"], ["--events", "many"], ["--load-eps", "-1"], ["--concurrency", "0"],
    ["--max-heartbeats", "-1"], ["--live-events", "-1"], ["--no-such-flag"],
])
def test_parse_args_rejects(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_worker_counts_largest_first_and_deduplicated() -> None:
    assert parse_args([]).workers == [1]
    assert parse_args(["--workers", "1,2"]).workers == [2, 1]
    assert worker_counts("3, 1,3") == [3, 1]


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--workers", "one"], ["--workers", ","],
                                  ["--load-share", "0"]])
def test_parse_args_rejects_bad_worker_counts(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_scaling_row_per_worker_rates_and_cpu() -> None:
    row = scaling_row(2, 30_000.0, 100_000.0,
                      {"worker1": 4.0, "worker2": 6.0, "tansu": 1.0, "redis": 2.0}, 100_000)
    assert row["events_per_s_per_worker"] == 15_000.0
    assert row["ratio_to_raw"] == 0.3
    assert row["workers_cpu_s"] == 10.0  # the broker's and Redis's CPU are not the workers'
    assert row["events_per_worker_cpu_s"] == 10_000.0


def test_scaling_row_without_measurements() -> None:
    row = scaling_row(1, None, None, {"worker1": None}, 10)
    assert row["events_per_s"] is None and row["ratio_to_raw"] is None
    assert row["workers_cpu_s"] is None and row["events_per_worker_cpu_s"] is None


# -- targets ------------------------------------------------------------------------------------
RESULT = {"events_per_s": 8000.0, "freshness_p99_ms": 900.0, "serve_p99_ms": 40.0}


def test_no_targets_nothing_missed() -> None:
    assert check_targets(RESULT, targets_of(parse_args([]))) == []


def test_targets_met() -> None:
    targets = {"max_freshness_p99_ms": 900.0, "min_events_per_s": 8000.0,
               "max_serve_p99_ms": 100.0}
    assert check_targets(RESULT, targets) == []


def test_targets_missed_each_named() -> None:
    targets = {"max_freshness_p99_ms": 500.0, "min_events_per_s": 10_000.0,
               "max_serve_p99_ms": 10.0}
    missed = check_targets(RESULT, targets)
    assert len(missed) == 3
    assert any("freshness_p99_ms 900.0 > target 500.0" in m and "--max-freshness-p99-ms" in m
               for m in missed)
    assert any("events_per_s 8000.0 < target 10000.0" in m for m in missed)
    assert any("serve_p99_ms 40.0 > target 10.0" in m for m in missed)


def test_target_on_missing_measurement_is_missed() -> None:
    missed = check_targets({"events_per_s": None}, {"min_events_per_s": 1.0})
    assert missed == ["events_per_s not measured, target 1.0 (--min-events-per-s)"]


def test_check_failures() -> None:
    assert check_failures({"serve_errors": 0, "freshness_failures": 0}) == []
    assert check_failures({}) == []
    out = check_failures({"serve_errors": 3, "freshness_failures": 1})
    assert len(out) == 2
    assert "3 serving request(s)" in out[0]


def test_row_kinds_counts_the_pages_the_processor_wrote() -> None:
    import asyncio

    from bench.row_kinds import row_kinds

    out = asyncio.run(row_kinds(members=20, events=2000, titles=120))
    assert 0 < out["pages"] <= 20 and out["events"] == 2000
    assert out["pages_with_kind"]["top_picks"] <= out["pages"]
    for kind in out["required_rows"]:  # missing = pages without that kind
        assert out["pages_missing_required"].get(kind, 0) == (
            out["pages"] - out["pages_with_kind"].get(kind, 0))


# -- the freshness phase's load ----------------------------------------------------------------
def test_half_load_is_taken_from_the_sustained_rate_when_measured() -> None:
    args = parse_args(["--load-share", "0.5"])
    assert args.live_events == 30_000 and args.sustain_seconds == 15.0
    result = {"scaling": [{"events_per_s": 10_000.0}], "live_events_per_s": 6_000.0,
              "sustained_events_per_s": 2_400.0}
    assert _load_eps(args, result) == 1_200.0 and result["load_basis"] == "sustained"


def test_the_freshness_phase_runs_on_a_restarted_broker_unless_told_not_to() -> None:
    assert parse_args([]).fresh_broker is True
    assert parse_args(["--no-fresh-broker"]).fresh_broker is False


def test_half_load_is_taken_from_the_live_capacity_without_a_sustained_rate() -> None:
    args = parse_args(["--load-share", "0.5", "--sustain-seconds", "0"])
    result = {"scaling": [{"events_per_s": 10_000.0}], "live_events_per_s": 6_000.0,
              "sustained_events_per_s": None}  # no step kept up
    assert _load_eps(args, result) == 3_000.0 and result["load_basis"] == "live"


def test_the_sustained_rate_is_the_highest_rung_kept_up_below_one_not() -> None:
    tried: list[tuple[int, float]] = []

    def step(sim: int, eps: float) -> SimpleNamespace:
        tried.append((sim, eps))
        return SimpleNamespace(rate_eps=eps, sustained=eps <= 2_000)

    best, steps = sustained_rate(lambda i: i, 4_000.0, step)  # down while falling behind
    assert best == 2_048.0 * 0.8 and [s.rate_eps for s in steps] == [4_000, 3_200, 2_560, 2_048,
                                                                     1_638.4]
    assert [sim for sim, _ in tried] == [0, 1, 2, 3, 4]  # a simulator (seed) per step
    best, steps = sustained_rate(lambda i: i, 1_024.0, step)  # up while keeping up
    assert best == 2_000.0 and [s.rate_eps for s in steps] == [1_024, 1_280, 1_600, 2_000,
                                                               2_500]
    best, steps = sustained_rate(lambda i: i, 4_000.0, lambda sim, eps: SimpleNamespace(
        rate_eps=eps, sustained=False), max_steps=3)
    assert best is None and len(steps) == 3


def test_negative_sustain_seconds_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--sustain-seconds", "-1"])


def test_half_load_falls_back_to_the_backlog_then_to_the_fixed_rate() -> None:
    result: dict = {"scaling": [{"events_per_s": 10_000.0}]}
    assert _load_eps(parse_args(["--load-share", "0.5", "--live-events", "0"]), result) == 5e3
    assert result["load_basis"] == "backlog"
    result = {"scaling": [{"events_per_s": 10_000.0}], "live_events_per_s": 6_000.0}
    assert _load_eps(parse_args(["--load-eps", "700"]), result) == 700.0
    assert result["load_basis"] == "fixed"


class _Counters:
    """The stats hash of a worker applying 1,000 events a poll on top of ``start``."""

    def __init__(self, start: int) -> None:
        self.applied = start

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.applied += 1000
        return {b"events_applied": str(self.applied).encode(), b"pages_queued": b"0"}


class _Alive:
    def check_alive(self) -> None:
        pass  # a worker that never dies: the drain's liveness check has nothing to raise


def test_a_drain_counts_only_the_events_after_the_counter_it_started_from() -> None:
    r = _Counters(start=100_000)
    drain = drain_backlog(r, "hs", [_Alive()], 5_000, 60.0, {}, already=100_000)
    # five polls (1,000 ... 5,000 events of this drain), then the final counters; counted
    # from zero it would have stopped at the first poll (101,000 >= 5,000)
    assert r.applied == 106_000
    assert drain.measured_s > 0 and drain.events_per_s is not None


def test_a_drains_cpu_is_also_counted_from_its_first_applied_batch() -> None:
    calls = iter(range(1, 100))
    probes = {"worker1": lambda: float(next(calls))}  # 1 CPU s more at every reading
    drain = drain_backlog(_Counters(start=0), "hs", [_Alive()], 5_000, 60.0, probes)
    # readings: at the start (1), at the first applied batch (2), at the last applied
    # event (3), at the end (4)
    assert drain.cpu_s["worker1"] == 3.0 and drain.applying_cpu_s["worker1"] == 2.0
    assert drain.applying_events == 4_000  # 1,000 at the first poll, 5,000 at the last


class _Flushing:
    """The stats hash of a worker that applied every event by the third poll and writes
    its 300 queued pages over the next three polls (100 a poll)."""

    def __init__(self) -> None:
        self.polls = 0

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.polls += 1
        written = min(350, 50 + 100 * max(0, self.polls - 3))
        return {b"events_applied": str(min(self.polls, 3) * 1000).encode(),
                b"pages_queued": str(max(0, 350 - written)).encode(),
                b"pages_written": str(written).encode(),
                b"pages_assembled": str(written).encode(),  # 1.5 ms of CPU each
                b"page_assembly_cpu_us": str(1500 * written).encode()}


def test_a_drain_splits_the_workers_cpu_at_its_last_applied_event() -> None:
    calls = iter(range(1, 100))
    probes = {"worker1": lambda: float(next(calls))}  # 1 CPU s more at every reading
    drain = drain_backlog(_Flushing(), "hs", [_Alive()], 3_000, 60.0, probes)
    # readings: start (1), first applied batch (2), last event applied (3), end (4)
    assert drain.after_cpu_s == {"worker1": 1.0}
    assert drain.pages_after == 300  # 50 written with the events, 350 at the end
    assert drain.pages_after_s > 0
    assert drain.counters_start["pages_written"] == 50
    assert drain.counters_last_event["pages_written"] == 50
    assert assembly_ms_per_page(drain.counters_last_event, drain.counters) == 1.5


class _AfterReset(_Flushing):
    """:class:`_Flushing` whose stats hash does not exist yet at the first poll (the
    pipeline's keys were deleted before the run)."""

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        got = super().hgetall(key)
        return {} if self.polls == 1 else got


def test_a_drains_start_counters_are_its_first_polls_even_when_empty() -> None:
    drain = drain_backlog(_AfterReset(), "hs", [_Alive()], 3_000, 60.0, {})
    assert drain.counters_start == {}  # not the second poll's, which has the first pages
    assert assembly_ms_per_page(drain.counters_start, drain.counters) == 1.5


# -- the in-process floor (phase 2b) ------------------------------------------------------------
def test_the_in_process_floor_runs_unless_told_not_to() -> None:
    assert parse_args([]).inprocess_floor is True
    assert parse_args(["--no-inprocess-floor"]).inprocess_floor is False


def test_the_in_process_floor_applies_the_backlogs_events_in_a_process_of_its_own() -> None:
    got = inprocess_floor(inprocess_command(400, 40, 20, 7, "topic", 1000.0))
    assert got["events"] == 400 and got["learner_mode"] == "topic"
    assert got["events_per_cpu_s"] > 0 and got["pages"] > 0 and got["ms_per_page"] > 0


def test_a_failing_in_process_floor_says_why() -> None:
    with pytest.raises(BenchError, match=r"exited 2.*--events"):
        inprocess_floor(inprocess_command(0, 40, 20, 7, "topic", None))


def test_each_drain_is_divided_by_the_in_process_floor() -> None:
    drain = DrainResult(events_per_s=21_000.0, measured_s=4.8, until_first_applied_s=5.0,
                        total_s=10.0, counters={"events_applied": 100_000},
                        cpu_s={"worker1": 6.0, "learner": 1.5})
    result: dict = {"raw_consume_per_s": 160_000.0, "inprocess_events_per_cpu_s": 30_000.0,
                    "scaling": []}
    _record_drain(result, drain, 2, 100_000)
    _record_drain(result, drain, 1, 100_000)
    assert [row["ratio_to_inprocess"] for row in result["scaling"]] == [0.35, 0.7]
    assert result["events_ratio_to_inprocess"] == 0.7  # the one-worker run's
    del result["inprocess_events_per_cpu_s"]  # --no-inprocess-floor
    _record_drain(result, drain, 1, 100_000)
    assert result["scaling"][-1]["ratio_to_inprocess"] is None
