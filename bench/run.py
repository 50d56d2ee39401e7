"""``make bench`` / ``python -m bench.run``: measure the pipeline on a fresh local stack.

Starts Tansu and Redis (:func:`stack.local.local_stack`), creates the topics, publishes a
synthetic catalog and lets a worker store it in Redis, then measures:

1. **Backlog**: ``--events`` simulated events over ~``--profiles`` members, produced with
   :class:`~player.producer.PlayerProducer` (``max_batch_events=20``: several events of one
   profile per message, as player SDKs batch).
2. ``raw_consume_per_s``: a plain confluent-kafka consumer (assigned partitions, no group
   join) reads and decodes the whole backlog: the ceiling for a Python consumer here.
   2b. ``inprocess_*`` (``--inprocess-floor``, the default): the same events through the
   worker's batch step in process (:mod:`bench.inprocess`: no Faust, broker or Redis), in
   events per CPU second: how fast this host runs the worker's own Python now, the floor
   the drains are divided by (``ratio_to_inprocess``; the plain consumer is mostly C and
   does not move with it).
3. ``events_per_s``: one worker drains the backlog; the rate is taken from the first change
   of the workers' ``events_applied`` counter until every event is applied and every page
   the render window queued is written (``pages_queued`` back at 0), so start-up and the
   group join are excluded and the pages are not (``applied_per_s``: until the last event
   only). With ``--workers 2,1`` the same backlog is drained once per worker
   count, each run with fresh state (pipeline keys but the catalog deleted) and a fresh
   consumer group: ``scaling`` lists per run the events/s, events/s per worker, the ratio
   to ``raw_consume_per_s``, each process's CPU seconds and events per worker CPU second
   (robust to other load on the machine; ``*_applying``: from the first applied batch on,
   start-up left out). ``events_per_s`` is the one-worker run's.
   ``--profile-worker FILE`` adds a first one-worker run under cProfile (``profiled_run``).
   3b. ``live_*``: the last run's workers drain ``--live-events`` events shaped like live
   traffic (the backlog's members, who have a page; ``LIVE_BATCH_EVENTS`` events a message
   instead of the backlog's ~17): their live capacity.
   4a. ``--fresh-broker`` (the default): the workers are stopped, the broker is restarted
   empty, the pipeline's state reset and the backlog drained again by as many new workers
   (``fresh_broker_events_per_s``): Tansu's CPU grows with the records it keeps, and the
   earlier phases leave 175,000-210,000 events in it.
4. ``freshness_*``: under a steady simulated load (``--load-eps``, or ``--load-share`` of
   the live capacity, ``load_basis`` "live", or without it of the backlog's rate) served by
   the last run's workers, probes send one Play for a
   fresh profile stamped with the wall clock and poll its page in Redis until the page
   reflects it; freshness = time seen - event time. The load is simulated before the phase
   (:class:`~bench.phases.Presimulated`) and sent in real time, each event stamped with the
   wall clock as it is sent.
5. ``serve_*``: the home-page server under ``--concurrency`` concurrent clients for
   ``--serve-seconds`` (the worker is stopped first, so it does not compete for the CPU).
6. ``redis_get_p50_ms``: sequential GETs of page keys with redis-py (the floor of serving).

The phases' building blocks are in :mod:`bench.phases`, the pure helpers (quantiles, rates,
targets) in :mod:`bench.stats`.

Prints exactly one JSON line on stdout; progress goes to stderr. Exit code 1 when a target
given by a ``--max-*`` / ``--min-*`` flag is missed, a request was not answered with 200 or
a probe timed out (the JSON line is printed anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.phases import (  # some re-exported (__all__): bench.serving uses them from here
    BACKLOG_BATCH_EVENTS,
    LIVE_BATCH_EVENTS,
    BenchError,
    DrainResult,
    Presimulated,
    child,
    drain_backlog,
    inprocess_command,
    inprocess_floor,
    live_capacity,
    load_catalog,
    page_profile_ids,
    probe_freshness,
    produce_backlog,
    raw_consume,
    redis_commands,
    redis_get_latencies,
    reset_pipeline_state,
    sustain_step,
    sustained_rate,
)
from bench.stats import (  # some re-exported (__all__): the tests and bench.webapp
    TARGETS,
    CpuProbes,
    _r,
    assembly_ms_per_page,
    check_failures,
    check_targets,
    cpu_delta,
    drain_rate,
    flush_split,
    host_bound_events_per_s,
    host_busy_cpu_s,
    percentiles,
    quantile,
    rate,
    ratio,
    scaling_row,
    with_outside,
    worker_counts,
    workers_cpu_s,
)
from homestream.player.cli import positive_float, positive_int
from homestream.stack.process import Child, ChildExited, WaitTimeout, proc_cpu_s

__all__ = [
    "BACKLOG_BATCH_EVENTS", "check_failures", "check_targets", "child", "cpu_delta",
    "drain_backlog", "drain_rate", "load_catalog", "main", "page_profile_ids", "parse_args",
    "percentiles", "produce_backlog", "quantile", "rate", "redis_commands",
    "reset_pipeline_state", "run_bench", "scaling_row", "targets_of", "with_outside",
    "worker_counts",
]

log = logging.getLogger("bench")


# -- arguments ----------------------------------------------------------------------------------
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
                        "the workers that serve the freshness phase (e.g. 0.5): of their "
                        "live-shaped capacity (--live-events), else of the backlog's drain")
    p.add_argument("--live-events", type=int, default=30_000,
                   help="events of live-shaped traffic (members with a page, small "
                        "messages) the freshness phase's workers drain first, measuring "
                        "their live capacity (0: skip; --load-share then takes the "
                        "backlog's rate)")
    p.add_argument("--sustain-seconds", type=float, default=15.0,
                   help="seconds of each step of the sustained-rate search (phase 3c: "
                        "live-shaped load in real time from 0.3 of the live capacity, down by "
                        "a fifth a step while the workers fall behind or up while they "
                        "keep up, to the highest rate kept up below one not; "
                        "--load-share then takes that rate; 0: skip)")
    p.add_argument("--fresh-broker", action=argparse.BooleanOptionalAction, default=True,
                   help="before the freshness phase, restart the broker empty, reset the "
                        "pipeline's state and drain the backlog again with as many new "
                        "workers (phase 4a: Tansu's CPU grows with the records it holds); "
                        "--no-fresh-broker: phase 4 on the earlier phases' broker and workers")
    p.add_argument("--inprocess-floor", action=argparse.BooleanOptionalAction, default=True,
                   help="phase 2b: apply the backlog's events in process first (bench.inprocess: "
                        "no Faust, broker or Redis), the floor of the drains' rates in events "
                        "per CPU second of this host now (ratio_to_inprocess)")
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
    p.add_argument("--redis-gets", type=positive_int, default=2000)
    p.add_argument("--drain-timeout-s", type=positive_float, default=None,
                   help="give up on the backlog after this long (default: generous)")
    p.add_argument("--max-freshness-p99-ms", type=float, default=None)
    p.add_argument("--min-events-per-s", type=float, default=None)
    p.add_argument("--max-serve-p99-ms", type=float, default=None)
    from bench.serving import add_load_args

    add_load_args(p, positive_int, positive_float, with_duration=False)
    args = p.parse_args(argv)
    if args.max_heartbeats < 0:
        p.error("--max-heartbeats must not be negative")
    if args.live_events < 0:
        p.error("--live-events must not be negative")
    if args.sustain_seconds < 0:
        p.error("--sustain-seconds must not be negative")
    return args


def targets_of(args: argparse.Namespace) -> dict[str, float | None]:
    """The target flags of ``args`` by name."""
    return {name: getattr(args, name) for name in TARGETS}


# -- phases 3 and 4: drains with 1..N workers, freshness --------------------------------------
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


def _stack_settings(stack: Any, data_dir: str) -> tuple[Any, dict[str, str]]:
    """The pipeline's settings pointed at ``stack``, and the environment carrying them."""
    from homestream.settings import load_settings

    settings = load_settings(bootstrap_servers=stack.bootstrap_servers,
                             redis_url=stack.redis_url, worker_data_dir=data_dir)
    return settings, {**os.environ, **settings.to_env()}


def _workers_of(procs: Mapping[str, Child]) -> list[Child]:
    """The workers of :func:`_start_workers`' processes (not the learner)."""
    return [c for name, c in procs.items() if name.startswith("worker")]


def _drain_timeout_s(args: argparse.Namespace, n_events: int) -> float:
    """How long a drain of ``n_events`` may take before the bench gives up."""
    return args.drain_timeout_s or max(300.0, n_events / 200)


def _worker_env(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: ``env`` with the render window and the learner mode."""
    extra = {"HOMESTREAM_LEARNER_MODE": args.learner_mode}
    if args.render_window_ms is not None:
        extra["HOMESTREAM_RENDER_WINDOW_MS"] = str(args.render_window_ms)
    return {**env, **extra}


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
    env = _worker_env(args, env)
    topic = args.learner_mode == "topic"
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
            workers = _workers_of(procs)
            cpu_of = _cpu_probes(stack, procs)
            commands = redis_commands(r)
            drain = drain_backlog(r, prefix, list(procs.values()), n_events,
                                  _drain_timeout_s(args, n_events), cpu_of)
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
               drain_total_s=_r(drain.total_s, 2),
               applied_per_s=_r(drain.applied_per_s), pages_after_s=_r(drain.pages_after_s, 2),
               pages_written=drain.counters.get("pages_written"))
    applying_cpu = workers_cpu_s(drain.applying_cpu_s)
    row.update(workers_cpu_s_applying=_r(applying_cpu, 2),
               events_per_worker_cpu_s_applying=_r(rate(drain.applying_events,
                                                        applying_cpu or 0.0)),
               **flush_split(applying_cpu, workers_cpu_s(drain.after_cpu_s),
                             drain.applying_events, drain.pages_after),
               host_bound_events_per_s=host_bound_events_per_s(
                   drain.applying_events, drain.applying_cpu_s, os.cpu_count()),
               worker_assembly_ms_per_page=assembly_ms_per_page(drain.counters_start,
                                                                drain.counters),
               worker_assembly_ms_per_page_after=assembly_ms_per_page(
                   drain.counters_last_event, drain.counters))
    row["ratio_to_inprocess"] = ratio(row["events_per_s_per_worker"],
                                      result.get("inprocess_events_per_cpu_s"))
    result["scaling"].append(row)
    log.info("  %d worker(s): %s events/s (%s per worker, %s of raw, %s of in-process), %s "
             "events per worker "
             "CPU second (%s from the first batch on); first batch after %.1fs, all after "
             "%.1fs (applied at %s events/s, queued pages written %.1fs after the last); %s "
             "pages; CPU s %s", n,
             row["events_per_s"], row["events_per_s_per_worker"], row["ratio_to_raw"],
             row["ratio_to_inprocess"], row["events_per_worker_cpu_s"],
             row["events_per_worker_cpu_s_applying"],
             drain.until_first_applied_s, drain.total_s,
             row["applied_per_s"], drain.pages_after_s, row["pages_written"], row["cpu_s"])
    log.info("  to the last event %s events per worker CPU second; then %s pages in %s "
             "worker CPU s (%s ms a page, %s of it assembling); the host's ceiling at this "
             "CPU per event: %s events/s", row["events_per_worker_cpu_s_to_last_event"],
             row["pages_written_after"], row["workers_cpu_s_pages_after"],
             row["worker_cpu_ms_per_page_after"], row["worker_assembly_ms_per_page_after"],
             row["host_bound_events_per_s"])
    if drain.counters.get("events_applied") != n_events:
        log.warning("  events_applied %s != backlog events %d",
                    drain.counters.get("events_applied"), n_events)
    if n == 1:
        result.update(
            events_per_s=_r(drain.events_per_s),
            events_ratio_to_raw=row["ratio_to_raw"],
            events_ratio_to_inprocess=row["ratio_to_inprocess"],
            drain_measured_s=_r(drain.measured_s, 2),
            worker_until_first_batch_s=_r(drain.until_first_applied_s, 2),
            worker_drain_total_s=_r(drain.total_s, 2),
            worker_counters=drain.counters,
            drain_cpu_s=cpu,
        )


def _live_phase(args: argparse.Namespace, result: dict[str, Any], settings: Any, r: Any,
                workers: Sequence[Child], cpu_of: CpuProbes, titles: Sequence[Any],
                profiles: Sequence[Any]) -> None:
    """Phase 3b: the live-shaped capacity of the last run's ``workers`` (``live_*``): the
    backlog's members again, ``LIVE_BATCH_EVENTS`` events a message."""
    from homestream.player.simulator import PlayerSimulator

    n = len(workers)
    _phase(f"3b. live-shaped capacity: {args.live_events} events, {LIVE_BATCH_EVENTS} a "
           f"message, members with a page, {n} worker(s)")
    sim = PlayerSimulator(titles, profiles, args.seed + 3, max_heartbeats=args.max_heartbeats)
    timeout = args.drain_timeout_s or max(300.0, args.live_events / 100)
    drain, messages = live_capacity(settings, sim, r, settings.key_prefix, workers,
                                    args.live_events, timeout, cpu_of)
    row = scaling_row(n, drain.events_per_s, result.get("raw_consume_per_s"),
                      with_outside(drain.cpu_s), args.live_events)
    result.update(
        live_events=args.live_events, live_messages=messages,
        live_events_per_message=_r(args.live_events / max(messages, 1), 2),
        live_events_per_s=row["events_per_s"],
        live_events_per_s_per_worker=row["events_per_s_per_worker"],
        live_events_per_worker_cpu_s=row["events_per_worker_cpu_s"],
        live_pages_after_s=_r(drain.pages_after_s, 2), live_cpu_s=row["cpu_s"])
    log.info("  %s events/s (%s per worker, %s events per worker CPU second) in %d messages; "
             "queued pages written %.1fs after the last event", row["events_per_s"],
             row["events_per_s_per_worker"], row["events_per_worker_cpu_s"], messages,
             drain.pages_after_s)


#: Where the sustained-rate search starts, as a share of the live capacity (a drain, whose
#: pages the render window coalesces far more than real-time traffic's). It starts low
#: because every step adds to what the broker holds, and Tansu's CPU grows with that
#: (docs/bench.md), which would weigh on every later step and on the freshness phase.
SUSTAIN_START = 0.3


def _sustain_phase(args: argparse.Namespace, result: dict[str, Any], settings: Any, r: Any,
                   workers: Sequence[Child], cpu_of: CpuProbes, titles: Sequence[Any],
                   profiles: Sequence[Any]) -> None:
    """Phase 3c: the highest live-shaped rate the workers sustain in real time
    (``sustained_*``), searched from :data:`SUSTAIN_START` of their live capacity."""
    from homestream.player.simulator import PlayerSimulator

    limit_s = max((args.render_window_ms or 0.0) / 1000, 0.25) + 1.0
    start = SUSTAIN_START * result["live_events_per_s"]
    _phase(f"3c. sustained rate: {args.sustain_seconds:.0f}s steps of live-shaped load in real "
           f"time from {start:.0f} events/s, {len(workers)} worker(s); kept up = 90% of "
           f"members' changes in their page within {limit_s:.2f}s")
    title = next((t for t in titles if not t.availability), titles[0])
    returning = page_profile_ids(r, settings.key_prefix)[:200]

    def step(sim: Any, eps: float) -> Any:
        s = sustain_step(settings, sim, title, r, workers[0], eps, args.sustain_seconds,
                         limit_s, returning, cpu_of, interval_s=args.probe_interval_ms / 1000,
                         timeout_s=args.probe_timeout_s)
        log.info("  %.0f events/s: %s (%.0f%% of members' changes within %.2fs)", eps,
                 "kept up" if s.sustained else "fell behind", 100 * s.returning_in_time,
                 limit_s)
        return s

    best, steps = sustained_rate(
        lambda i: PlayerSimulator(titles, profiles, args.seed + 10 + i,
                                  max_heartbeats=args.max_heartbeats), start, step)
    result.update(sustained_events_per_s=_r(best),
                  sustained_events_per_s_per_worker=_r(best and best / len(workers)),
                  sustained_steps=[_step_row(s) for s in steps])


def _step_row(s: Any) -> dict[str, Any]:
    """A sustained-rate step as reported: rate, probes, CPU (cores of the workers)."""
    f = s.fresh
    new50, new99 = percentiles(f.latencies_ms)
    ret50, ret90 = percentiles(f.returning_ms, (0.5, 0.9))
    worker_cpu = workers_cpu_s(f.cpu_s)
    return {"events_per_s": _r(s.rate_eps), "kept_up": s.sustained,
            "returning_in_time": _r(s.returning_in_time, 3),
            "new_p50_ms": _r(new50), "new_p99_ms": _r(new99),
            "returning_p50_ms": _r(ret50), "returning_p90_ms": _r(ret90),
            "worker_cores": _r(worker_cpu / f.load_elapsed_s, 3)
            if worker_cpu is not None and f.load_elapsed_s else None,
            "cpu_s": with_outside(f.cpu_s)}


def _load_eps(args: argparse.Namespace, result: dict[str, Any]) -> float:
    """The freshness phase's load: ``--load-share`` of the sustained live-shaped rate when it
    was measured, else of the live-shaped capacity, else of the last drain's rate, else
    ``--load-eps`` (``load_basis`` says which)."""
    basis, measured = "fixed", None
    if args.load_share is not None:
        if result.get("sustained_events_per_s"):
            basis, measured = "sustained", result["sustained_events_per_s"]
        elif result.get("live_events_per_s"):
            basis, measured = "live", result["live_events_per_s"]
        elif result["scaling"]:
            basis, measured = "backlog", result["scaling"][-1]["events_per_s"] or 0.0
    result["load_basis"] = basis
    return args.load_eps if measured is None else max(1.0, args.load_share * measured)


def _restart_broker(args: argparse.Namespace, result: dict[str, Any],
                    running: contextlib.ExitStack, stack: Any, r: Any, data_dir: str,
                    n_workers: int, titles: Sequence[Any], profiles: Sequence[Any]
                    ) -> tuple[Any, dict[str, str], list[Child], CpuProbes]:
    """Phase 4a (``--fresh-broker``): the freshness phase on a broker holding only what it
    needs. Tansu keeps every record in memory and its CPU grows with what it holds (the
    sustained search alone adds 46,000-79,000 events, two a message: docs/bench.md), so
    the workers are stopped, the broker restarted empty on a new port, the pipeline's state
    reset (the new logs start at offset 0 again, which the models' and members' replay
    guards would take for records already applied) and the same backlog drained by
    ``n_workers`` new workers and a learner, which then serve phase 4. Returns the new
    settings, the environment, the workers and their CPU probes."""
    from homestream.player.simulator import PlayerSimulator, publish_catalog
    from topics.registry import ensure_topics

    running.close()
    _phase(f"4a. fresh broker: restart it empty, drain the backlog again with {n_workers} "
           "worker(s)")
    stack.restart_broker()
    settings, env = _stack_settings(stack, data_dir)
    ensure_topics(settings)
    publish_catalog(settings, titles)  # the same titles as in Redis: nothing changes there
    log.info("  fresh state: %d pipeline keys deleted",
             reset_pipeline_state(r, settings.key_prefix))
    sim = PlayerSimulator(titles, profiles, args.seed, max_heartbeats=args.max_heartbeats)
    n_events, _, _ = produce_backlog(settings, sim, args.events)
    procs = _start_workers(running, _worker_env(args, env), n_workers, data_dir, None,
                           learner=args.learner_mode == "topic")
    cpu_of = _cpu_probes(stack, procs)
    drain = drain_backlog(r, settings.key_prefix, list(procs.values()), n_events,
                          _drain_timeout_s(args, n_events), cpu_of)
    result["fresh_broker_events_per_s"] = _r(drain.events_per_s)
    log.info("  broker on port %d; backlog drained again at %s events/s",
             stack.broker.port, result["fresh_broker_events_per_s"])
    return settings, env, _workers_of(procs), cpu_of


def _freshness_phase(args: argparse.Namespace, result: dict[str, Any], settings: Any, r: Any,
                     workers: Sequence[Child], cpu_of: CpuProbes, titles: Sequence[Any],
                     profiles: Sequence[Any]) -> None:
    """Phase 4: freshness probes under steady load, served by ``workers``."""
    from homestream.player.simulator import PlayerSimulator

    load_eps = _load_eps(args, result)
    _phase(f"4. freshness: probes every {args.probe_interval_ms:.0f} ms under "
           f"{load_eps:.0f} events/s for {args.load_seconds:.0f}s, {len(workers)} worker(s)")
    probe_title = next((t for t in titles if not t.availability), titles[0])
    t = time.monotonic()
    load_sim = Presimulated(PlayerSimulator(titles, profiles, args.seed + 1,
                                            max_heartbeats=args.max_heartbeats),
                            int(load_eps * args.load_seconds * 1.2) + 1000)
    log.info("  %d load events simulated in %.1fs (before the phase: not on its cores)",
             len(load_sim.events), time.monotonic() - t)
    fresh = probe_freshness(settings, load_sim, probe_title, r, workers[0],
                            load_eps=load_eps, load_seconds=args.load_seconds,
                            interval_s=args.probe_interval_ms / 1000,
                            timeout_s=args.probe_timeout_s, cpu_of=cpu_of,
                            returning=page_profile_ids(r, settings.key_prefix)[:200])
    p50, p99 = percentiles(fresh.latencies_ms)
    r50, r99 = percentiles(fresh.returning_ms)
    result.update(
        freshness_p50_ms=_r(p50), freshness_p99_ms=_r(p99),
        freshness_max_ms=_r(max(fresh.latencies_ms, default=None)),
        freshness_probes=fresh.sent, freshness_failures=fresh.failures,
        freshness_workers=len(workers), load_eps_target=_r(load_eps),
        load_eps=_r(rate(fresh.load_events, fresh.load_elapsed_s)),
        load_events=fresh.load_events, load_messages=fresh.load_messages,
        freshness_cpu_s=with_outside(fresh.cpu_s),
        freshness_phase_s=_r(fresh.load_elapsed_s, 2),
        freshness_returning_p50_ms=_r(r50), freshness_returning_p99_ms=_r(r99),
        freshness_returning_probes=fresh.returning_sent,
        freshness_returning_failures=fresh.returning_failures,
    )
    log.info("  %d probes: p50 %s ms, p99 %s ms, %d timed out; load %s events/s; CPU s %s",
             result["freshness_probes"], result["freshness_p50_ms"],
             result["freshness_p99_ms"], fresh.failures, result["load_eps"],
             result["freshness_cpu_s"])
    log.info("  %d probes of members with a page: p50 %s ms, p99 %s ms, %d timed out",
             fresh.returning_sent, result["freshness_returning_p50_ms"],
             result["freshness_returning_p99_ms"], fresh.returning_failures)


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


def _inprocess_phase(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Phase 2b: the backlog's events through the worker's batch step in process
    (``inprocess_*``), the floor :func:`_record_drain` divides the drains' rates by."""
    _phase("2b. in-process floor: the backlog's events through the batch step, no I/O")
    got = inprocess_floor(inprocess_command(args.events, args.titles, args.profiles, args.seed,
                                            args.learner_mode, args.render_window_ms))
    result.update(inprocess_events_per_cpu_s=got["events_per_cpu_s"],
                  inprocess_cpu_s=got["cpu_s"], inprocess_pages=got["pages"],
                  inprocess_ms_per_page=got["ms_per_page"])
    log.info("  %d events in %.2f CPU s: %s events per CPU second; %d pages, %s ms each",
             got["events"], got["cpu_s"], got["events_per_cpu_s"], got["pages"],
             got["ms_per_page"])


def _run_phases(args: argparse.Namespace, result: dict[str, Any], data_dir: str) -> None:
    """The phases of :func:`run_bench`, filling ``result``."""
    import redis

    from features.keys import page_key
    from homestream.player.simulator import PlayerSimulator, synthetic_catalog, synthetic_profiles
    from homestream.stack.local import local_stack
    from topics.registry import ensure_topics, topic_specs

    with local_stack() as stack:
        settings, env = _stack_settings(stack, data_dir)
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
        if args.inprocess_floor:
            _inprocess_phase(args, result)

        with contextlib.ExitStack() as running:
            workers, cpu_of = _drain_runs(args, result, running, stack, env, r,
                                          settings.key_prefix, n_events, data_dir)
            if args.live_events:
                _live_phase(args, result, settings, r, workers, cpu_of, titles, profiles)
                if args.sustain_seconds:
                    _sustain_phase(args, result, settings, r, workers, cpu_of, titles,
                                   profiles)
            result["fresh_broker"] = args.fresh_broker
            if args.fresh_broker:
                settings, env, workers, cpu_of = _restart_broker(
                    args, result, running, stack, r, data_dir, len(workers), titles, profiles)
            _freshness_phase(args, result, settings, r, workers, cpu_of, titles, profiles)
        # the workers stop here: impressions logged by the server would otherwise keep them
        # busy on the two cores while the server is measured

        _phase(f"5. serving: wrk, {args.concurrency} connections, floor and server passes")
        from bench.serving import ServeContext, measure_serving, mixed_load, serve_load

        pids = page_profile_ids(r, settings.key_prefix)
        mixed_sim = PlayerSimulator(titles, profiles, args.seed + 2, max_heartbeats=heartbeats)
        half_eps = (result.get("events_per_s") or 1000.0) / 2
        ctx = ServeContext(env, r, settings.key_prefix, pids, titles,
                           lambda: mixed_load(settings, env, mixed_sim, half_eps),
                           args.profile_server)
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
