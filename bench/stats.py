"""The bench's pure helpers: quantiles, rates, CPU accounting, targets and the scaling rows
(unit-tested; no I/O but ``/proc/stat`` in :func:`host_busy_cpu_s`)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation between closest ranks
    (numpy's default method). Raises ``ValueError`` on an empty sequence.

    >>> quantile([1, 2, 3, 4], 0.5)
    2.5
    """
    if not values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def percentiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.99)) -> list[float | None]:
    """Quantiles ``qs`` of ``values``; ``None`` for each when ``values`` is empty."""
    if not values:
        return [None for _ in qs]
    return [quantile(values, q) for q in qs]


def rate(count: float, elapsed_s: float) -> float | None:
    """``count / elapsed_s``, or ``None`` when no time elapsed."""
    return count / elapsed_s if elapsed_s > 0 else None


def ratio(value: float | None, floor: float | None, nd: int = 3) -> float | None:
    """``value / floor`` rounded to ``nd`` places, or ``None`` when either is unknown (or
    the floor is 0).

    >>> ratio(21_000.0, 30_000.0), ratio(None, 30_000.0), ratio(1.0, 0.0)
    (0.7, None, None)
    """
    return None if value is None or not floor else round(value / floor, nd)


def drain_rate(samples: Sequence[tuple[float, int]]) -> tuple[float | None, float]:
    """Events/s from ``(time_s, events_applied)`` samples of the worker's counter.

    The rate runs from the first sample showing progress to the first sample showing the
    final count: the events applied in between over the time in between. Start-up, the
    group join and the first batch (whose start is not observable) are excluded. Returns
    ``(rate or None, seconds measured)``.

    >>> drain_rate([(0.0, 0), (5.0, 0), (6.0, 100), (7.0, 300), (8.0, 500), (9.0, 500)])
    (200.0, 2.0)
    """
    moving = [(t, n) for t, n in samples if n > 0]
    if not moving:
        return None, 0.0
    t0, n0 = moving[0]
    final = max(n for _, n in moving)
    t1 = next(t for t, n in moving if n == final)
    elapsed = t1 - t0
    return rate(final - n0, elapsed), elapsed


TARGETS: dict[str, tuple[str, str]] = {
    "max_freshness_p99_ms": ("freshness_p99_ms", "max"),
    "min_events_per_s": ("events_per_s", "min"),
    "max_serve_p99_ms": ("serve_p99_ms", "max"),
}


def check_targets(result: Mapping[str, Any], targets: Mapping[str, float | None]) -> list[str]:
    """One message per target that ``result`` misses (a missing measurement misses too).

    >>> check_targets({"events_per_s": 900.0}, {"min_events_per_s": 1000.0})
    ['events_per_s 900.0 < target 1000.0 (--min-events-per-s)']
    """
    missed = []
    for name, target in targets.items():
        if target is None:
            continue
        key, kind = TARGETS[name]
        flag = "--" + name.replace("_", "-")
        value = result.get(key)
        if value is None:
            missed.append(f"{key} not measured, target {target} ({flag})")
        elif kind == "max" and value > target:
            missed.append(f"{key} {value} > target {target} ({flag})")
        elif kind == "min" and value < target:
            missed.append(f"{key} {value} < target {target} ({flag})")
    return missed


def check_failures(result: Mapping[str, Any]) -> list[str]:
    """Correctness failures that fail the bench whatever the targets: non-200 answers and
    freshness probes that never showed up.

    >>> check_failures({"serve_errors": 0, "freshness_failures": 2})
    ['2 freshness probe(s) not reflected in a page within the timeout']
    """
    out = []
    if result.get("serve_errors"):
        out.append(f"{result['serve_errors']} serving request(s) not answered with 200")
    if result.get("freshness_failures"):
        out.append(f"{result['freshness_failures']} freshness probe(s) not reflected in a "
                   "page within the timeout")
    return out


def worker_counts(text: str) -> list[int]:
    """``"2,1"`` -> ``[2, 1]``: distinct positive worker counts, largest first.

    >>> worker_counts("1,2")
    [2, 1]
    """
    try:
        counts = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be positive: {text!r}")
    return sorted(counts, reverse=True)


def workers_cpu_s(cpu_s: Mapping[str, float | None]) -> float | None:
    """CPU seconds of the workers together (the ``worker*`` entries of ``cpu_s``; ``None``
    when there are none or one is unknown).

    >>> workers_cpu_s({"worker1": 2.0, "worker2": 3.0, "redis": 1.0}), workers_cpu_s({})
    (5.0, None)
    """
    worker_cpu = [v for k, v in cpu_s.items() if k.startswith("worker")]
    return None if not worker_cpu or None in worker_cpu else sum(
        v for v in worker_cpu if v is not None)


def flush_split(applying_cpu_s: float | None, after_cpu_s: float | None, events: int,
                pages_after: int) -> dict[str, float | int | None]:
    """A drain's worker CPU split at its last applied event: before it (the events, with the
    pages rendered meanwhile) as events per worker CPU second, after it (the queued pages'
    flush) as the workers' CPU seconds and milliseconds per page written then.

    >>> flush_split(7.0, 2.0, 100_000, 1_600)
    {'events_per_worker_cpu_s_to_last_event': 20000.0, 'workers_cpu_s_pages_after': 2.0, \
'pages_written_after': 1600, 'worker_cpu_ms_per_page_after': 1.25}
    """
    before = None if applying_cpu_s is None or after_cpu_s is None \
        else applying_cpu_s - after_cpu_s
    per_cpu_s = rate(events, before or 0.0)
    return {
        "events_per_worker_cpu_s_to_last_event": None if per_cpu_s is None
        else round(per_cpu_s, 1),
        "workers_cpu_s_pages_after": after_cpu_s,
        "pages_written_after": pages_after,
        "worker_cpu_ms_per_page_after": None if after_cpu_s is None or pages_after <= 0
        else round(1000 * after_cpu_s / pages_after, 3),
    }


def host_bound_events_per_s(events: int, cpu_s: Mapping[str, float | None],
                            cores: int | None) -> float | None:
    """The events/s a drain could reach on ``cores`` if the CPU seconds the pipeline's
    processes spent (``cpu_s`` per process; the host's total, other programs' load and the
    bench's own polling left out) were spread evenly over every core: the host's ceiling
    at the drain's CPU cost per event (``None`` when a process's CPU or the core count is
    unknown).

    >>> host_bound_events_per_s(100_000, {"worker1": 7.0, "learner": 2.5, "tansu": 0.5,
    ...                                   "bench": 0.2, "host_all": 12.2, "outside_bench": 2.0},
    ...                         2)
    20000.0
    """
    own = [v for k, v in cpu_s.items() if k not in ("host_all", "outside_bench", "bench")]
    if not own or not cores or any(v is None for v in own):
        return None
    total = sum(v for v in own if v is not None)
    per_s = rate(events * cores, total)
    return None if per_s is None else round(per_s, 1)


def assembly_ms_per_page(before: Mapping[str, int], after: Mapping[str, int]
                         ) -> float | None:
    """Milliseconds of the workers' CPU a member's page took to assemble between two
    readings of the counters (``page_assembly_cpu_us`` over ``pages_assembled``; ``None``
    when none was assembled).

    >>> assembly_ms_per_page({"page_assembly_cpu_us": 1_000, "pages_assembled": 1},
    ...                      {"page_assembly_cpu_us": 3_500_000, "pages_assembled": 2_501})
    1.4
    """
    pages = after.get("pages_assembled", 0) - before.get("pages_assembled", 0)
    if pages <= 0:
        return None
    cpu_us = after.get("page_assembly_cpu_us", 0) - before.get("page_assembly_cpu_us", 0)
    return round(cpu_us / 1000 / pages, 3)


def scaling_row(workers: int, events_per_s: float | None, raw_per_s: float | None,
                cpu_s: Mapping[str, float | None], events: int) -> dict[str, Any]:
    """One ``scaling`` entry: the run's rates, its CPU seconds per process and the events
    per CPU second of the workers (``worker*`` entries of ``cpu_s``).

    >>> scaling_row(2, 1000.0, 4000.0, {"worker1": 2.0, "worker2": 3.0, "redis": 1.0}, 5000)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'workers': 2, 'events_per_s': 1000.0, 'events_per_s_per_worker': 500.0,
     'ratio_to_raw': 0.25, 'workers_cpu_s': 5.0, 'events_per_worker_cpu_s': 1000.0,
     'cpu_s': {'worker1': 2.0, 'worker2': 3.0, 'redis': 1.0}}
    """
    per_worker = None if events_per_s is None else events_per_s / workers
    total_cpu = workers_cpu_s(cpu_s)
    return {
        "workers": workers, "events_per_s": _r(events_per_s),
        "events_per_s_per_worker": _r(per_worker),
        "ratio_to_raw": ratio(events_per_s, raw_per_s),
        "workers_cpu_s": _r(total_cpu, 2),
        "events_per_worker_cpu_s": _r(rate(events, total_cpu or 0.0)),
        "cpu_s": dict(cpu_s),
    }


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def cpu_delta(before: Mapping[str, float | None],
              after: Mapping[str, float | None]) -> dict[str, float | None]:
    """CPU seconds spent between two snapshots, per name (``None`` where one is missing).

    >>> cpu_delta({"worker": 1.0, "tansu": None}, {"worker": 3.5, "tansu": 2.0})
    {'worker': 2.5, 'tansu': None}
    """
    out: dict[str, float | None] = {}
    for name, b in before.items():
        a = after.get(name)
        out[name] = None if a is None or b is None else round(a - b, 2)
    return out


def with_outside(cpu: Mapping[str, float | None], host_key: str = "host_all",
                 ) -> dict[str, float | None]:
    """``cpu`` plus ``outside_bench``: host busy CPU minus that of every process measured,
    i.e. load from other programs on the machine during the phase (``None`` if unknown).

    >>> with_outside({"worker": 3.0, "tansu": 0.5, "host_all": 5.0})["outside_bench"]
    1.5
    """
    out = dict(cpu)
    host = cpu.get(host_key)
    own = [v for k, v in cpu.items() if k != host_key]
    if host is None or any(v is None for v in own):
        out["outside_bench"] = None
    else:
        out["outside_bench"] = round(max(0.0, host - sum(v for v in own if v is not None)), 2)
    return out


CpuProbes = Mapping[str, Callable[[], float | None]]


def cpu_snapshot(cpu_of: CpuProbes) -> dict[str, float | None]:
    """CPU seconds so far of every probe in ``cpu_of``."""
    return {name: f() for name, f in cpu_of.items()}


def host_busy_cpu_s() -> float | None:
    """CPU seconds all cores of the host spent busy so far (``/proc/stat``), else ``None``.

    Compared with the processes' own CPU it shows load from outside the bench.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
