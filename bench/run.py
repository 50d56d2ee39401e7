"""``make bench`` / ``python -m bench.run``: measure the pipeline on a fresh local stack.

Starts Tansu and Redis (:func:`stack.local.local_stack`), creates the topics, publishes a
synthetic catalog and lets a worker store it in Redis, then measures:

1. **Backlog**: ``--events`` simulated events over ~``--profiles`` members, produced with
   :class:`~player.producer.PlayerProducer` (``max_batch_events=20``: several events of one
   profile per message, as player SDKs batch).
2. ``raw_consume_per_s``: a plain confluent-kafka consumer (assigned partitions, no group
   join) reads and decodes the whole backlog: the ceiling for a Python consumer here.
3. ``events_per_s``: one worker drains the backlog; the rate is taken between the first and
   the last change of the workers' ``events_applied`` counter, so start-up and the group
   join are excluded. With ``--workers 2,1`` the same backlog is drained once per worker
   count, each run with fresh state (pipeline keys but the catalog deleted) and a fresh
   consumer group: ``scaling`` lists per run the events/s, events/s per worker, the ratio
   to ``raw_consume_per_s``, each process's CPU seconds and events per worker CPU second
   (robust to other load on the machine). ``events_per_s`` is the one-worker run's.
   ``--profile-worker FILE`` adds a first one-worker run under cProfile (``profiled_run``).
4. ``freshness_*``: under a steady simulated load (``--load-eps``, or ``--load-share`` of
   the measured events/s) served by the last run's workers, probes send one Play for a
   fresh profile stamped with the wall clock and poll its page in Redis until the page
   reflects it; freshness = time seen - event time.
5. ``serve_*``: the home-page server under ``--concurrency`` concurrent clients for
   ``--serve-seconds`` (the worker is stopped first, so it does not compete for the CPU).
6. ``redis_get_p50_ms``: sequential GETs of page keys with redis-py (the floor of serving).

Prints exactly one JSON line on stdout; progress goes to stderr. Exit code 1 when a target
given by a ``--max-*`` / ``--min-*`` flag is missed, a request was not answered with 200 or
a probe timed out (the JSON line is printed anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homestream.player.cli import positive_float, positive_int
from homestream.stack.process import Child, ChildExited, WaitTimeout, proc_cpu_s, wait_for

log = logging.getLogger("bench")

#: Events per message the backlog producer sends (player SDKs batch per profile).
BACKLOG_BATCH_EVENTS = 20


# -- pure helpers (unit-tested) ---------------------------------------------------------------
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


#: target flag -> (result key, "max" or "min")
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
    worker_cpu = [v for k, v in cpu_s.items() if k.startswith("worker")]
    total_cpu = None if not worker_cpu or None in worker_cpu else sum(
        v for v in worker_cpu if v is not None)
    return {
        "workers": workers, "events_per_s": _r(events_per_s),
        "events_per_s_per_worker": _r(per_worker),
        "ratio_to_raw": None if events_per_s is None or not raw_per_s
        else round(events_per_s / raw_per_s, 3),
        "workers_cpu_s": _r(total_cpu, 2),
        "events_per_worker_cpu_s": _r(rate(events, total_cpu or 0.0)),
        "cpu_s": dict(cpu_s),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults are what ``make bench`` runs)."""
    p = argparse.ArgumentParser(prog="python -m bench.run",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=positive_int, default=100_000,
                   help="backlog events (default 100000)")
    p.add_argument("--titles", type=positive_int, default=500, help="catalog size")
    p.add_argument("--profiles", type=positive_int, default=2000, help="simulated members")
    p.add_argument("--max-heartbeats", type=int, default=4,
                   help="at most this many progress heartbeats per simulated play")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--load-eps", type=positive_float, default=1000.0,
                   help="steady load during the freshness probes, events/s")
    p.add_argument("--load-share", type=positive_float, default=None,
                   help="instead of --load-eps: this share of the measured events/s of "
                        "the workers that serve the freshness phase (e.g. 0.5)")
    p.add_argument("--workers", type=worker_counts, default=[1],
                   help="worker counts to drain the backlog with, e.g. 2,1 (runs in "
                        "descending order; the last run's workers serve the freshness "
                        "phase)")
    p.add_argument("--learner-mode", choices=("inline", "topic"), default="inline",
                   help="topic: the workers send their learning to the model-updates topic "
                        "and one learner process per run learns it (its CPU is reported); "
                        "inline: each worker learns its own models")
    p.add_argument("--render-window-ms", type=float, default=None,
                   help="HOMESTREAM_RENDER_WINDOW_MS for the workers (default: the "
                        "settings' value)")
    p.add_argument("--profile-worker", type=Path, default=None,
                   help="first drain the backlog with one worker under cProfile, writing "
                        "its profile to this file (reported apart: profiled_run)")
    p.add_argument("--load-seconds", type=positive_float, default=20.0)
    p.add_argument("--probe-interval-ms", type=positive_float, default=100.0)
    p.add_argument("--probe-timeout-s", type=positive_float, default=10.0)
    p.add_argument("--concurrency", type=positive_int, default=32)
    p.add_argument("--serve-seconds", type=positive_float, default=10.0)
    p.add_argument("--unknown-share", type=float, default=0.1,
                   help="share of serving requests for profiles without a page")
    p.add_argument("--redis-gets", type=positive_int, default=2000)
    p.add_argument("--drain-timeout-s", type=positive_float, default=None,
                   help="give up on the backlog after this long (default: generous)")
    p.add_argument("--max-freshness-p99-ms", type=float, default=None)
    p.add_argument("--min-events-per-s", type=float, default=None)
    p.add_argument("--max-serve-p99-ms", type=float, default=None)
    from bench.serving import add_load_args

    add_load_args(p, positive_int, positive_float, with_duration=False)
    args = p.parse_args(argv)
    if not 0.0 <= args.unknown_share < 1.0:
        p.error("--unknown-share must be within [0, 1)")
    if args.max_heartbeats < 0:
        p.error("--max-heartbeats must not be negative")
    return args


def targets_of(args: argparse.Namespace) -> dict[str, float | None]:
    """The target flags of ``args`` by name."""
    return {name: getattr(args, name) for name in TARGETS}


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


# -- processes ----------------------------------------------------------------------------------
class BenchError(RuntimeError):
    """A phase could not complete; the text says which and where the logs are."""


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


@contextlib.contextmanager
def child(module: str, env: dict[str, str], python_args: Sequence[str] = ()
          ) -> Iterator[Child]:
    """Run ``python [python_args] -m module`` for the ``with`` block (a
    :class:`~homestream.stack.process.Child` logging to a temp file); always stopped."""
    c = Child([sys.executable, *python_args, "-m", module], name=f"bench-{module}", env=env)
    log.info("started %s (pid %d), log %s", module, c.pid, c.log_path)
    try:
        yield c
    except BaseException:
        log.error("%s log: %s", module, c.log_path)
        raise
    finally:
        c.stop()


# -- phases -------------------------------------------------------------------------------------
def counters(r: Any, prefix: str) -> dict[str, int]:
    """The worker's counters (``stats`` hash) as ints."""
    from features.keys import stats_key

    return {k.decode(): int(v) for k, v in r.hgetall(stats_key(prefix)).items()}


def load_catalog(settings: Any, env: dict[str, str], titles: Sequence[Any], r: Any) -> float:
    """Publish the catalog and let a worker store it in Redis; return the seconds it took.

    That worker is stopped again before the backlog is produced, so the measured worker
    starts with the catalog in place and the whole backlog in front of it.
    """
    from features.keys import catalog_key
    from homestream.player.simulator import publish_catalog

    t0 = time.monotonic()
    publish_catalog(settings, titles)
    with child("streams.worker", env) as worker:
        wait_for(lambda: r.hlen(catalog_key(settings.key_prefix)) >= len(titles), 120,
                 f"{len(titles)} catalog titles in Redis", watch=[worker])
    return time.monotonic() - t0


def produce_backlog(settings: Any, sim: Any, n_events: int) -> tuple[int, int, float]:
    """Produce ``n_events`` simulated events (event time six hours ago onwards); return
    ``(events, messages, seconds)``."""
    from homestream.player.producer import PlayerProducer

    start_ms = int(time.time() * 1000) - 6 * 3600 * 1000
    t0 = time.monotonic()
    n = 0
    with PlayerProducer(settings, max_batch_events=BACKLOG_BATCH_EVENTS) as producer:
        for ev in sim.events_stream(n_events, start_ms):
            producer.send(ev)
            n += 1
            if n % 5000 == 0:
                producer.poll(0)
        producer.flush()
        messages = producer.produced
        delivered = producer.delivered_events
    if delivered != n:
        raise BenchError(f"backlog: {delivered} of {n} events delivered")
    return n, messages, time.monotonic() - t0


def raw_consume(settings: Any, topic: str, expect_messages: int,
                timeout_s: float = 120.0) -> tuple[int, int, float]:
    """Read ``expect_messages`` messages from offset 0 of every partition (assigned, no
    group join) and decode each; return ``(messages, events, seconds)``, the time running
    from the first message received to the last one decoded."""
    from confluent_kafka import Consumer, TopicPartition

    from topics.codec import default_codec

    codec = default_codec()
    c = Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        messages = events = 0
        t_first: float | None = None
        deadline = time.monotonic() + timeout_s
        while messages < expect_messages:
            if time.monotonic() > deadline:
                raise BenchError(f"raw consume: {messages} of {expect_messages} messages "
                                 f"after {timeout_s:.0f}s")
            batch = c.consume(1000, 0.5)
            if batch and t_first is None:
                t_first = time.monotonic()
            for m in batch:
                if m.error():
                    continue
                events += len(codec.decode_raw_events(m.value()))
                messages += 1
        elapsed = time.monotonic() - (t_first or time.monotonic())
    finally:
        c.close()
    return messages, events, elapsed


@dataclass
class DrainResult:
    """What the measured worker did with the backlog."""

    events_per_s: float | None
    measured_s: float
    until_first_applied_s: float
    total_s: float
    counters: dict[str, int]
    cpu_s: dict[str, float | None]


def drain_backlog(r: Any, prefix: str, workers: Sequence[Child], expect_events: int,
                  timeout_s: float, cpu_of: CpuProbes) -> DrainResult:
    """Poll the workers' counters until they applied ``expect_events`` events."""
    t_start = time.monotonic()
    cpu0 = cpu_snapshot(cpu_of)
    samples: list[tuple[float, int]] = []
    last_log = t_start
    while True:
        now = time.monotonic()
        applied = counters(r, prefix).get("events_applied", 0)
        samples.append((now, applied))
        if applied >= expect_events:
            break
        for w in workers:
            w.check_alive()
        if now - t_start > timeout_s:
            logs = ", ".join(str(w.log_path) for w in workers)
            raise BenchError(f"workers applied {applied} of {expect_events} backlog events in "
                             f"{timeout_s:.0f}s; logs: {logs}")
        if now - last_log >= 5:
            log.info("  worker applied %d / %d events", applied, expect_events)
            last_log = now
        time.sleep(0.02)
    cpu = cpu_delta(cpu0, cpu_snapshot(cpu_of))
    eps, measured = drain_rate(samples)
    first = next(t for t, n in samples if n > 0)
    return DrainResult(
        events_per_s=eps, measured_s=measured, until_first_applied_s=first - t_start,
        total_s=samples[-1][0] - t_start, counters=counters(r, prefix),
        cpu_s=cpu,
    )


@dataclass
class FreshnessResult:
    """Freshness probes under load."""

    latencies_ms: list[float]
    sent: int
    failures: int
    load_events: int
    load_messages: int
    load_elapsed_s: float
    cpu_s: dict[str, float | None]


def probe_freshness(settings: Any, sim: Any, title: Any, r: Any, worker: Child, *,
                    load_eps: float, load_seconds: float, interval_s: float,
                    timeout_s: float, cpu_of: CpuProbes) -> FreshnessResult:
    """Run the simulated load in a thread and probe page freshness meanwhile.

    A probe is one Play (``start``) of a new profile, stamped with the wall clock, sent and
    flushed at once. Probes go out every ``interval_s`` whether or not earlier ones are
    answered; every ~5 ms the pages of the probes still open are read with one ``MGET``.
    Probing stops a second before the load does, so every probe is answered under load.
    """
    import orjson

    from features.keys import page_key
    from homestream.player.producer import PlayerProducer
    from homestream.player.simulator import run_simulation
    from topics.models import Play

    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            with PlayerProducer(settings, max_batch_events=BACKLOG_BATCH_EVENTS) as producer:
                outcome["sim"] = run_simulation(producer, sim, realtime=True,
                                                rate_eps=load_eps, duration_s=load_seconds)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    cpu0 = cpu_snapshot(cpu_of)
    t_load = time.monotonic()
    thread = threading.Thread(target=load, name="bench-load", daemon=True)
    thread.start()
    warmup = min(1.0, load_seconds / 4)
    time.sleep(warmup)  # let the load reach its rate first
    stop_probing = t_load + max(load_seconds - 1.0, warmup + interval_s)
    run_id = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    pending: dict[str, tuple[int, float]] = {}  # page key -> (event ts ms, deadline)
    sent = failures = 0
    next_at = time.monotonic()
    with PlayerProducer(settings, max_batch_events=1) as probes:
        while pending or (thread.is_alive() and time.monotonic() < stop_probing):
            now = time.monotonic()
            if now >= next_at and thread.is_alive() and now < stop_probing:
                pid = f"bench-probe-{run_id}-{sent:05d}"
                ts = int(time.time() * 1000)
                probes.send(Play(event_id=uuid.uuid4().hex, profile_id=pid, event_ts_ms=ts,
                                 title_id=title.title_id, action="start", position_s=0.0,
                                 duration_s=title.duration_s, device="tv", country="US"))
                probes.flush(10)
                pending[page_key(settings.key_prefix, pid)] = (ts, now + timeout_s)
                sent += 1
                next_at = max(next_at + interval_s, now)
            if pending:
                keys = list(pending)
                raws = r.mget(keys)
                seen_ms = time.time() * 1000
                for key, raw in zip(keys, raws, strict=True):
                    ts, deadline = pending[key]
                    if raw is not None and \
                            (orjson.loads(raw).get("as_of_event_ts_ms") or 0) >= ts:
                        latencies.append(seen_ms - ts)
                        del pending[key]
                    elif time.monotonic() > deadline:
                        failures += 1
                        del pending[key]
                        log.warning("  probe %s not in its page after %.0fs", key, timeout_s)
                        worker.check_alive()
            time.sleep(0.005)
    thread.join()
    cpu = cpu_delta(cpu0, cpu_snapshot(cpu_of))
    if "error" in outcome:
        raise BenchError(f"load simulation failed: {outcome['error']!r}")
    sim_result = outcome["sim"]
    return FreshnessResult(
        latencies, sent, failures, sim_result.events, sim_result.messages,
        sim_result.elapsed_s, cpu,
    )


def page_profile_ids(r: Any, prefix: str) -> list[str]:
    """Profile ids that have a materialized page in Redis (default pages excluded)."""
    from features.keys import page_key

    head = page_key(prefix, "")
    out = []
    for k in r.scan_iter(match=head + "*", count=1000):
        pid = k.decode()[len(head):]
        if not pid.startswith("__default__"):
            out.append(pid)
    return sorted(out)


@dataclass
class ServeResult:
    """Serving under concurrent load."""

    latencies_ms: list[float]
    errors: int
    elapsed_s: float
    statuses: dict[int, int]


async def drive_serving(base_url: str, profile_ids: Sequence[str], *, concurrency: int,
                        seconds: float, unknown_share: float, seed: int) -> ServeResult:
    """``concurrency`` clients loop GET /v1/homepage/{pid}?country=US for ``seconds``."""
    import aiohttp

    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0

    async def client(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < deadline:
            if rng.random() < unknown_share:
                pid = f"bench-unknown-{rng.randrange(1_000_000)}"
            else:
                pid = rng.choice(profile_ids)
            t0 = time.perf_counter()
            try:
                async with session.get(f"{base_url}/v1/homepage/{pid}?country=US") as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = -1
                if errors < 5:
                    log.warning("  request failed: %r", exc)
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors += 1
            n += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(client(session, deadline) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return ServeResult(latencies, errors, elapsed, statuses)


def redis_get_latencies(r: Any, keys: Sequence[str], n: int, seed: int) -> list[float]:
    """``n`` sequential GETs of random ``keys``; latency of each in ms."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice(keys)
        t0 = time.perf_counter()
        r.get(k)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def reset_pipeline_state(r: Any, prefix: str, keep_models: bool = False) -> int:
    """Delete every key of the pipeline under ``prefix`` but the catalog's (profiles, pages,
    trending, counters, checkpoints): the next run starts from the same state as the first.
    ``keep_models`` keeps the model snapshot (a learner resumes after the records the
    snapshot covers; without it a new learner would learn earlier runs' records again).
    Returns the keys deleted."""
    from features.keys import catalog_key, catalog_version_key, checkpoint_key

    keep = {catalog_key(prefix).encode(), catalog_version_key(prefix).encode()}
    models = checkpoint_key(prefix, "").encode()
    doomed = [k for k in r.scan_iter(match=prefix + "*", count=1000)
              if k not in keep and not (keep_models and k.startswith(models))]
    for i in range(0, len(doomed), 1000):
        r.delete(*doomed[i: i + 1000])
    return len(doomed)


def redis_commands(r: Any) -> int:
    """Commands Redis has processed so far (each command of a pipeline or MULTI counts)."""
    return int(r.info("stats")["total_commands_processed"])


def _start_workers(running: contextlib.ExitStack, env: Mapping[str, str], n: int,
                   data_dir: str, profile: Path | None, learner: bool = False
                   ) -> dict[str, Child]:
    """Start ``n`` workers in a consumer group of their own (a fresh group reads the backlog
    from the start), each with its own data directory, and with ``learner`` a learner
    process; ``profile``: run the (single) worker under cProfile writing to that file.
    Returns the processes by name (``worker1``..., ``learner``)."""
    group = f"{env.get('HOMESTREAM_APP_ID', 'homestream')}-bench-{n}w-{uuid.uuid4().hex[:6]}"
    procs: dict[str, Child] = {}
    if learner:
        procs["learner"] = running.enter_context(child(
            "streams.learner", {**env, "HOMESTREAM_APP_ID": group}))
    for i in range(n):
        wenv = {**env, "HOMESTREAM_APP_ID": group,
                "HOMESTREAM_WORKER_DATA_DIR": os.path.join(data_dir, f"{group}-{i}")}
        py_args = ("-m", "cProfile", "-o", str(profile)) if profile is not None else ()
        procs[f"worker{i + 1}"] = running.enter_context(child("streams.worker", wenv, py_args))
    return procs


def _cpu_probes(stack: Any, procs: Mapping[str, Child]
                ) -> dict[str, Callable[[], float | None]]:
    """CPU probes of the pipeline's processes (``worker1``..., ``learner``), the broker,
    Redis, the bench and the host."""
    probes: dict[str, Callable[[], float | None]] = {
        name: c.cpu_s for name, c in procs.items()}
    probes.update({
        "tansu": lambda: proc_cpu_s(stack.broker.proc.pid),
        "redis": lambda: proc_cpu_s(stack.redis.proc.pid),
        "bench": time.process_time,
        "host_all": host_busy_cpu_s,
    })
    return probes


def _drain_runs(args: argparse.Namespace, result: dict[str, Any], running: contextlib.ExitStack,
                stack: Any, env: dict[str, str], r: Any, prefix: str, n_events: int,
                data_dir: str) -> tuple[list[Child], CpuProbes]:
    """Phase 3: drain the backlog once per worker count (``args.workers``, largest first),
    each run from fresh state; the last run's workers are left running in ``running``.
    Fills ``result["scaling"]`` and, from the one-worker run, ``events_per_s``. With
    ``--profile-worker`` an extra one-worker run under cProfile comes first (its rate is
    the profiler's, so it is reported as ``profiled_run`` only)."""
    if args.render_window_ms is not None:
        env = {**env, "HOMESTREAM_RENDER_WINDOW_MS": str(args.render_window_ms)}
    topic = args.learner_mode == "topic"
    env = {**env, "HOMESTREAM_LEARNER_MODE": args.learner_mode}
    result["learner_mode"] = args.learner_mode
    result["scaling"] = []
    workers: list[Child] = []
    cpu_of: CpuProbes = {}
    runs: list[tuple[int, Path | None]] = [(n, None) for n in args.workers]
    if args.profile_worker is not None:
        runs.insert(0, (1, args.profile_worker))
    for k, (n, profile) in enumerate(runs):
        last = k == len(runs) - 1
        _phase(f"3. {n} worker(s) drain the backlog" + (" under cProfile" if profile else ""))
        if k:
            log.info("  fresh state: %d pipeline keys deleted",
                     reset_pipeline_state(r, prefix, keep_models=topic))
        run = running if last else contextlib.ExitStack()
        with contextlib.nullcontext() if last else run:
            procs = _start_workers(run, env, n, data_dir, profile, learner=topic)
            workers = [c for name, c in procs.items() if name.startswith("worker")]
            cpu_of = _cpu_probes(stack, procs)
            timeout = args.drain_timeout_s or max(300.0, n_events / 200)
            commands = redis_commands(r)
            drain = drain_backlog(r, prefix, list(procs.values()), n_events, timeout, cpu_of)
            commands = redis_commands(r) - commands
        if profile is not None:
            result["profiled_run"] = scaling_row(n, drain.events_per_s,
                                                 result.get("raw_consume_per_s"),
                                                 drain.cpu_s, n_events)
            log.info("  under cProfile: %s events/s; profile in %s",
                     result["profiled_run"]["events_per_s"], profile)
            continue
        _record_drain(result, drain, n, n_events)
        result["scaling"][-1]["redis_commands_per_event"] = round(commands / n_events, 3)
        log.info("  Redis: %.2f commands per event", commands / n_events)
    return workers, cpu_of


def _record_drain(result: dict[str, Any], drain: DrainResult, n: int, n_events: int) -> None:
    """Add one drain run to ``result`` (the one-worker run also sets the top-level keys)."""
    cpu = with_outside(drain.cpu_s)
    row = scaling_row(n, drain.events_per_s, result.get("raw_consume_per_s"),
                      {k: v for k, v in cpu.items() if k != "host_all"}, n_events)
    row.update(drain_measured_s=_r(drain.measured_s, 2),
               until_first_batch_s=_r(drain.until_first_applied_s, 2),
               drain_total_s=_r(drain.total_s, 2))
    result["scaling"].append(row)
    log.info("  %d worker(s): %s events/s (%s per worker, %s of raw), %s events per worker "
             "CPU second; first batch after %.1fs, all after %.1fs; CPU s %s", n,
             row["events_per_s"], row["events_per_s_per_worker"], row["ratio_to_raw"],
             row["events_per_worker_cpu_s"], drain.until_first_applied_s, drain.total_s,
             row["cpu_s"])
    if drain.counters.get("events_applied") != n_events:
        log.warning("  events_applied %s != backlog events %d",
                    drain.counters.get("events_applied"), n_events)
    if n == 1:
        result.update(
            events_per_s=_r(drain.events_per_s),
            events_ratio_to_raw=row["ratio_to_raw"],
            drain_measured_s=_r(drain.measured_s, 2),
            worker_until_first_batch_s=_r(drain.until_first_applied_s, 2),
            worker_drain_total_s=_r(drain.total_s, 2),
            worker_counters=drain.counters,
            drain_cpu_s=cpu,
        )


def _freshness_phase(args: argparse.Namespace, result: dict[str, Any], settings: Any, r: Any,
                     workers: Sequence[Child], cpu_of: CpuProbes, titles: Sequence[Any],
                     profiles: Sequence[Any]) -> None:
    """Phase 4: freshness probes under steady load, served by ``workers``."""
    from homestream.player.simulator import PlayerSimulator

    load_eps = args.load_eps
    if args.load_share is not None and result["scaling"]:
        load_eps = max(1.0, args.load_share * (result["scaling"][-1]["events_per_s"] or 0.0))
    _phase(f"4. freshness: probes every {args.probe_interval_ms:.0f} ms under "
           f"{load_eps:.0f} events/s for {args.load_seconds:.0f}s, {len(workers)} worker(s)")
    probe_title = next((t for t in titles if not t.availability), titles[0])
    load_sim = PlayerSimulator(titles, profiles, args.seed + 1,
                               max_heartbeats=args.max_heartbeats)
    fresh = probe_freshness(settings, load_sim, probe_title, r, workers[0],
                            load_eps=load_eps, load_seconds=args.load_seconds,
                            interval_s=args.probe_interval_ms / 1000,
                            timeout_s=args.probe_timeout_s, cpu_of=cpu_of)
    p50, p99 = percentiles(fresh.latencies_ms)
    result.update(
        freshness_p50_ms=_r(p50), freshness_p99_ms=_r(p99),
        freshness_max_ms=_r(max(fresh.latencies_ms, default=None)),
        freshness_probes=fresh.sent, freshness_failures=fresh.failures,
        freshness_workers=len(workers), load_eps_target=_r(load_eps),
        load_eps=_r(rate(fresh.load_events, fresh.load_elapsed_s)),
        load_events=fresh.load_events, load_messages=fresh.load_messages,
        freshness_cpu_s=with_outside(fresh.cpu_s),
        freshness_phase_s=_r(fresh.load_elapsed_s, 2),
    )
    log.info("  %d probes: p50 %s ms, p99 %s ms, %d timed out; load %s events/s; CPU s %s",
             result["freshness_probes"], result["freshness_p50_ms"],
             result["freshness_p99_ms"], fresh.failures, result["load_eps"],
             result["freshness_cpu_s"])


# -- main ---------------------------------------------------------------------------------------
def _phase(name: str) -> float:
    log.info("== %s", name)
    return time.monotonic()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run every phase on a fresh local stack; return the result (the JSON line's fields)."""
    result: dict[str, Any] = {
        "broker": "tansu", "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_1m_start": _r(os.getloadavg()[0], 2),
    }
    t_bench = time.monotonic()
    data_dir = tempfile.mkdtemp(prefix="bench-worker-data-")
    try:
        _run_phases(args, result, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    result["loadavg_1m_end"] = _r(os.getloadavg()[0], 2)
    result["bench_wall_s"] = _r(time.monotonic() - t_bench)
    return result


def _run_phases(args: argparse.Namespace, result: dict[str, Any], data_dir: str) -> None:
    """The phases of :func:`run_bench`, filling ``result``."""
    import redis

    from features.keys import page_key
    from homestream.player.simulator import PlayerSimulator, synthetic_catalog, synthetic_profiles
    from homestream.settings import load_settings
    from homestream.stack.local import local_stack
    from topics.registry import ensure_topics, topic_specs

    with local_stack() as stack:
        settings = load_settings(bootstrap_servers=stack.bootstrap_servers,
                                 redis_url=stack.redis_url, worker_data_dir=data_dir)
        env = {**os.environ, **settings.to_env()}
        r = redis.Redis.from_url(settings.redis_url)
        log.info("stack: broker %s, redis %s", stack.bootstrap_servers, stack.redis_url)
        ensure_topics(settings)
        events_topic = topic_specs(settings)["player_events"].name

        t = _phase(f"catalog: {args.titles} titles, stored in Redis by a worker")
        titles = synthetic_catalog(args.titles, args.seed)
        result["catalog_load_s"] = _r(load_catalog(settings, env, titles, r), 2)
        log.info("  catalog in Redis after %.1fs", time.monotonic() - t)

        profiles = synthetic_profiles(args.profiles, args.seed)
        heartbeats = args.max_heartbeats
        _phase(f"1. backlog: {args.events} events over {args.profiles} profiles")
        sim = PlayerSimulator(titles, profiles, args.seed, max_heartbeats=heartbeats)
        n_events, n_messages, produce_s = produce_backlog(settings, sim, args.events)
        result.update(backlog_events=n_events, backlog_messages=n_messages,
                      events_per_message=_r(n_events / max(n_messages, 1), 2),
                      backlog_produce_s=_r(produce_s, 2))
        log.info("  %d events in %d messages in %.1fs", n_events, n_messages, produce_s)

        _phase("2. raw consume (confluent-kafka, assigned, decode only)")
        got_msgs, got_events, raw_s = raw_consume(settings, events_topic, n_messages)
        if got_events != n_events:
            raise BenchError(f"raw consume decoded {got_events} events, produced {n_events}")
        result["raw_consume_per_s"] = _r(rate(got_events, raw_s))
        result["raw_consume_msgs_per_s"] = _r(rate(got_msgs, raw_s))
        log.info("  %d events in %.2fs: %s events/s", got_events, raw_s,
                 result["raw_consume_per_s"])

        with contextlib.ExitStack() as running:
            workers, cpu_of = _drain_runs(args, result, running, stack, env, r,
                                          settings.key_prefix, n_events, data_dir)
            _freshness_phase(args, result, settings, r, workers, cpu_of, titles, profiles)
        # the workers stop here: impressions logged by the server would otherwise keep them
        # busy on the two cores while the server is measured

        _phase(f"5. serving: wrk, {args.concurrency} connections, floor and server passes")
        from bench.serving import ServeContext, measure_serving, mixed_load, serve_load

        pids = page_profile_ids(r, settings.key_prefix)
        mixed_sim = PlayerSimulator(titles, profiles, args.seed + 2, max_heartbeats=heartbeats)
        half_eps = (result.get("events_per_s") or 1000.0) / 2
        ctx = ServeContext(env, r, settings.key_prefix, pids, titles,
                           lambda: mixed_load(settings, env, mixed_sim, half_eps))
        try:
            result.update(measure_serving(ctx, serve_load(args), args.http_workers, args.seed))
        except RuntimeError as exc:  # bench.serving.BenchError: no pages, wrk missing, ...
            raise BenchError(str(exc)) from exc
        result["serve_mixed_load_eps"] = round(half_eps)

        _phase(f"6. redis: {args.redis_gets} sequential GETs of page keys")
        keys = [page_key(settings.key_prefix, p) for p in pids]
        g50, g99 = percentiles(redis_get_latencies(r, keys, args.redis_gets, args.seed))
        result.update(redis_get_p50_ms=_r(g50, 3), redis_get_p99_ms=_r(g99, 3))
        log.info("  p50 %s ms", result["redis_get_p50_ms"])
        r.close()


def _raise_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; print the JSON line; return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every child process
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # only the JSON line goes to stdout
            result = run_bench(args)
    except (BenchError, ChildExited, WaitTimeout) as exc:
        log.error("bench failed: %s", exc)
        return 2
    print(json.dumps(result, separators=(",", ":")), file=out, flush=True)
    from bench.serving import check_serving

    problems = check_failures(result) + check_targets(result, targets_of(args)) + \
        check_serving(result, args.min_serve_ratio, args.max_serve_p99_ratio)
    for p in problems:
        print(f"bench: FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
