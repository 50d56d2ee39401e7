"""The bench's phases as building blocks: load the catalog, produce and raw-consume the
backlog, let workers drain it, probe freshness under load, and the state reset between runs
(real broker, Redis and child processes; :mod:`bench.run` strings them together)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import CpuProbes, cpu_delta, cpu_snapshot, drain_rate, rate
from homestream.kafka_config import librdkafka_config
from homestream.stack.process import Child, wait_for

log = logging.getLogger("bench")

BACKLOG_BATCH_EVENTS = 20


class BenchError(RuntimeError):
    """A phase could not complete; the text says which and where the logs are."""


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


def inprocess_command(events: int, titles: int, profiles: int, seed: int, learner_mode: str,
                      render_window_ms: float | None) -> list[str]:
    """The command of :mod:`bench.inprocess` that applies the backlog's events in process: the
    same simulator, seed, catalog and members as :func:`produce_backlog`'s (so the same
    events, in messages of up to ``BACKLOG_BATCH_EVENTS`` of one member), the workers'
    learner mode and render window.

    >>> inprocess_command(1000, 50, 20, 7, "topic", 1000.0)[2:]  # doctest: +NORMALIZE_WHITESPACE
    ['bench.inprocess', '--events', '1000', '--titles', '50', '--profiles', '20', '--seed',
     '7', '--per-message', '20', '--learner-mode', 'topic', '--render-window-ms', '1000.0']
    """
    cmd = [sys.executable, "-m", "bench.inprocess", "--events", str(events),
           "--titles", str(titles), "--profiles", str(profiles), "--seed", str(seed),
           "--per-message", str(BACKLOG_BATCH_EVENTS), "--learner-mode", learner_mode]
    if render_window_ms is not None:
        cmd += ["--render-window-ms", str(render_window_ms)]
    return cmd


def inprocess_floor(cmd: Sequence[str], timeout_s: float = 900.0) -> dict[str, Any]:
    """Run ``cmd`` (:func:`inprocess_command`) and return its JSON line: the worker's batch
    step without Faust, the broker or Redis, in events per CPU second of this host now (the
    floor the drains' rates are compared with, measured in the same run)."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"the in-process floor exited {done.returncode}: "
                         f"{done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def raw_consume(settings: Any, topic: str, expect_messages: int,
                timeout_s: float = 120.0) -> tuple[int, int, float]:
    """Read ``expect_messages`` messages from offset 0 of every partition (assigned, no
    group join) and decode each; return ``(messages, events, seconds)``, the time running
    from the first message received to the last one decoded."""
    from confluent_kafka import Consumer, TopicPartition

    from topics.codec import default_codec

    codec = default_codec()
    c = Consumer({
        **librdkafka_config(settings),
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
    """What the measured workers did with the backlog."""

    #: Events over the time from the first applied batch to the last queued page written.
    events_per_s: float | None
    measured_s: float
    until_first_applied_s: float
    total_s: float
    counters: dict[str, int]
    cpu_s: dict[str, float | None]
    #: Events over the time from the first to the last applied batch (pages still queued
    #: by the render window then are not counted: the rate before the pages caught up).
    applied_per_s: float | None = None
    #: Seconds from the last applied batch until no page was queued any more.
    pages_after_s: float = 0.0
    #: CPU seconds per process from the first applied batch on (:attr:`cpu_s` counts from
    #: the workers' start: imports and the group join too), and the events applied meanwhile.
    applying_cpu_s: dict[str, float | None] = field(default_factory=dict)
    applying_events: int = 0
    #: CPU seconds per process from the last applied batch on (the queued pages' flush),
    #: and the pages written meanwhile.
    after_cpu_s: dict[str, float | None] = field(default_factory=dict)
    #: The counters at the drain's first poll and when its last event was applied.
    counters_start: dict[str, int] = field(default_factory=dict)
    counters_last_event: dict[str, int] = field(default_factory=dict)

    @property
    def pages_after(self) -> int:
        """Pages written after the last event was applied (the queued pages' flush)."""
        return (self.counters.get("pages_written", 0)
                - self.counters_last_event.get("pages_written", 0))


def drain_backlog(r: Any, prefix: str, workers: Sequence[Child], expect_events: int,
                  timeout_s: float, cpu_of: CpuProbes, already: int = 0) -> DrainResult:
    """Poll the workers' counters until they applied ``expect_events`` events more than
    ``already`` (the ``events_applied`` counter before) and wrote every page the render
    window queued (``pages_queued`` back at 0)."""
    t_start = time.monotonic()
    cpu0 = cpu_snapshot(cpu_of)
    samples: list[tuple[float, int]] = []
    last_log = t_start
    t_applied: float | None = None
    cpu_first: dict[str, float | None] | None = None
    cpu_applied: dict[str, float | None] | None = None
    at_start: dict[str, int] | None = None  # the counters at the first poll
    at_last: dict[str, int] = {}  # the counters when the last event was applied
    while True:
        now = time.monotonic()
        got = counters(r, prefix)
        applied = got.get("events_applied", 0) - already
        if at_start is None:  # (empty before the first commit after a reset)
            at_start = got
        samples.append((now, applied))
        if applied > 0 and cpu_first is None:
            cpu_first = cpu_snapshot(cpu_of)
        if applied >= expect_events:
            if t_applied is None:
                t_applied, cpu_applied, at_last = now, cpu_snapshot(cpu_of), got
            if got.get("pages_queued", 0) <= 0:
                break
        for w in workers:
            w.check_alive()
        if now - t_start > timeout_s:
            logs = ", ".join(str(w.log_path) for w in workers)
            raise BenchError(f"workers applied {applied} of {expect_events} backlog events "
                             f"({got.get('pages_queued', 0)} pages queued) in "
                             f"{timeout_s:.0f}s; logs: {logs}")
        if now - last_log >= 5:
            log.info("  worker applied %d / %d events, %d pages queued", applied,
                     expect_events, got.get("pages_queued", 0))
            last_log = now
        time.sleep(0.02)
    cpu_end = cpu_snapshot(cpu_of)
    cpu = cpu_delta(cpu0, cpu_end)
    applied_eps, _ = drain_rate(samples)
    first = next(t for t, n in samples if n > 0)
    t_done = samples[-1][0]
    paged_s = t_done - first
    n_first = next(n for _, n in samples if n > 0)
    return DrainResult(
        events_per_s=rate(samples[-1][1] - n_first, paged_s), measured_s=paged_s,
        until_first_applied_s=first - t_start, total_s=t_done - t_start,
        counters=counters(r, prefix), cpu_s=cpu, applied_per_s=applied_eps,
        pages_after_s=t_done - (t_applied or t_done),
        applying_cpu_s=cpu_delta(cpu_first or cpu0, cpu_end),
        applying_events=samples[-1][1] - n_first,
        after_cpu_s=cpu_delta(cpu_applied or cpu_end, cpu_end),
        counters_start=at_start or {}, counters_last_event=at_last,
    )


#: Events a message in the live-shaped backlog: players' messages in a session are small
#: (the bench's live load sends ~1.5-2.5 events a message), unlike the backlog's 17.
LIVE_BATCH_EVENTS = 2


def live_capacity(settings: Any, sim: Any, r: Any, prefix: str, workers: Sequence[Child],
                  n_events: int, timeout_s: float, cpu_of: CpuProbes
                  ) -> tuple[DrainResult, int]:
    """What the running ``workers`` sustain on traffic shaped like a live session's: members
    who already have a state and a page, ``LIVE_BATCH_EVENTS`` events a message. The events
    are simulated first, then produced as fast as the producer goes (it finishes long before
    the workers) and drained like the backlog. Returns the drain and the messages sent."""
    from homestream.player.producer import PlayerProducer

    # simulated sessions take ~80 ms of event time an event: they end minutes ago, after
    # the backlog's (which starts six hours ago) and never ahead of the clock
    start_ms = int(time.time() * 1000) - n_events * 100 - 10 * 60 * 1000
    events = list(sim.events_stream(n_events, start_ms))
    already = counters(r, prefix).get("events_applied", 0)
    with PlayerProducer(settings, max_batch_events=LIVE_BATCH_EVENTS) as producer:
        for i, ev in enumerate(events, 1):
            producer.send(ev)
            if i % 5000 == 0:
                producer.poll(0)
        producer.flush()
        messages = producer.produced
    drain = drain_backlog(r, prefix, workers, len(events), timeout_s, cpu_of, already=already)
    return drain, messages


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
    #: Probes of members who had a page already (no target: what the render window's
    #: queue costs a member in a session).
    returning_ms: list[float] = field(default_factory=list)
    returning_sent: int = 0
    returning_failures: int = 0


class _Probes:
    """Open freshness probes: a page key, the probe's event time and deadline, polled in
    one ``MGET``; answered ones go to ``latencies[kind]``, late ones to ``failures``."""

    def __init__(self, r: Any, prefix: str, timeout_s: float, worker: Child) -> None:
        self.r, self.prefix, self.timeout_s, self.worker = r, prefix, timeout_s, worker
        self.pending: dict[str, tuple[str, int, float]] = {}
        self.latencies: dict[str, list[float]] = {"new": [], "returning": []}
        self.sent = {"new": 0, "returning": 0}
        self.failures = {"new": 0, "returning": 0}

    def opened(self, kind: str, profile_id: str, ts_ms: int) -> None:
        from features.keys import page_key

        key = page_key(self.prefix, profile_id)
        self.pending[key] = (kind, ts_ms, time.monotonic() + self.timeout_s)
        self.sent[kind] += 1

    def poll(self) -> None:
        import orjson

        keys = list(self.pending)
        raws = self.r.mget(keys)
        seen_ms = time.time() * 1000
        for key, raw in zip(keys, raws, strict=True):
            kind, ts, deadline = self.pending[key]
            if raw is not None and (orjson.loads(raw).get("as_of_event_ts_ms") or 0) >= ts:
                self.latencies[kind].append(seen_ms - ts)
                del self.pending[key]
            elif time.monotonic() > deadline:
                self.failures[kind] += 1
                del self.pending[key]
                log.warning("  %s probe %s not in its page after %.0fs", kind, key,
                            self.timeout_s)
                self.worker.check_alive()


class Presimulated:
    """A simulator's stream of events made before a phase and replayed from memory: the
    simulation (~60 us an event) would otherwise run on the same two cores as the pipeline
    it measures, while players' devices simulate nothing. Has the one method
    :func:`~homestream.player.simulator.run_simulation` uses (``interleaved``); the events
    keep their order, and ``run_simulation(realtime=True)`` stamps each with the wall clock
    as it is sent.

    >>> from types import SimpleNamespace
    >>> sim = SimpleNamespace(interleaved=lambda start_ms: iter([(0, "a"), (0, "b"), (1, "c")]))
    >>> [e for _, e in Presimulated(sim, 2).interleaved(0)]
    ['a', 'b']
    """

    def __init__(self, sim: Any, n_events: int) -> None:
        import itertools

        start_ms = int(time.time() * 1000)
        self.events = list(itertools.islice(sim.interleaved(start_ms), n_events))

    def interleaved(self, start_ms: int, *, profiles: Any = None, max_sessions: Any = None
                    ) -> Iterator[tuple[int, Any]]:
        """The events made, in their order (the arguments are the simulator's, unused)."""
        return iter(self.events)


@dataclass
class SustainStep:
    """One step of :func:`sustained_rate`: live-shaped load at ``rate_eps`` for a while,
    with freshness probes of new members and of members who have a page."""

    rate_eps: float
    fresh: FreshnessResult
    #: The share of the later half of the probes of members with a page whose page showed
    #: their event within the limit (:func:`sustain_step`).
    returning_in_time: float
    sustained: bool


def sustain_step(settings: Any, sim: Any, title: Any, r: Any, worker: Child, rate_eps: float,
                 seconds: float, limit_s: float, returning: Sequence[str], cpu_of: CpuProbes,
                 *, interval_s: float = 0.1, timeout_s: float = 10.0) -> SustainStep:
    """Send live-shaped load (``sim``, simulated first) in real time at ``rate_eps`` for
    ``seconds`` while probing freshness (:func:`probe_freshness`, a probe every
    ``interval_s``, late after ``timeout_s``). The workers keep up when
    90% of the later half of the answered probes of members who have a page (``returning``,
    whose change waits for the render window) saw it in their page within ``limit_s`` and no
    probe timed out: a worker that does not keep up renders each member's page less often
    than the window says, and those probes wait seconds. Returns after the workers applied
    what was sent."""
    fresh = probe_freshness(settings, Presimulated(sim, int(rate_eps * seconds * 1.2) + 1000),
                            title, r, worker, load_eps=rate_eps, load_seconds=seconds,
                            interval_s=interval_s, timeout_s=timeout_s, cpu_of=cpu_of,
                            returning=returning)
    # the later half of the answers: a queue that grows has its longest waits at the end
    later = fresh.returning_ms[len(fresh.returning_ms) // 2:]
    late = sum(ms > limit_s * 1000 for ms in later) + fresh.returning_failures
    in_time = 1.0 - late / max(len(later) + fresh.returning_failures, 1)
    sustained = in_time >= 0.9 and fresh.failures == 0
    _wait_settled(r, settings.key_prefix, worker)
    return SustainStep(rate_eps, fresh, in_time, sustained)


def _wait_settled(r: Any, prefix: str, worker: Child, timeout_s: float = 120.0) -> None:
    """Wait until the workers' counters stop moving and no page is queued (what a step sent
    is applied before the next one starts)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        c = counters(r, prefix)
        now = (c.get("events_applied", 0), c.get("pages_queued", 0))
        if now == last and now[1] <= 0:
            return
        last = now
        worker.check_alive()
        time.sleep(0.5)
    raise BenchError(f"workers did not settle within {timeout_s:.0f}s after a load step")


def sustained_rate(make_sim: Callable[[int], Any], start_eps: float, step: Callable[
        [Any, float], SustainStep], factor: float = 0.8, max_steps: int = 6
                   ) -> tuple[float | None, list[SustainStep]]:
    """The highest rate of the ladder ``start_eps * factor ** k`` (k = ..., -1, 0, 1, ...)
    that ``step`` finds sustained while the rung above it is not: from ``start_eps`` down
    while the workers fall behind, or up while they keep up (at most ``max_steps`` steps;
    ``None`` if none kept up), and every step run. ``make_sim(i)`` gives step ``i`` its
    simulator (a new seed each, so no step replays another's events).

    >>> from types import SimpleNamespace as NS
    >>> ok = lambda sim, eps: NS(rate_eps=eps, sustained=eps <= 500)
    >>> best, steps = sustained_rate(lambda i: None, 1000.0, ok, factor=0.5)
    >>> best, [s.rate_eps for s in steps]
    (500.0, [1000.0, 500.0])
    >>> best, steps = sustained_rate(lambda i: None, 250.0, ok, factor=0.5)
    >>> best, [s.rate_eps for s in steps]
    (500.0, [250.0, 500.0, 1000.0])
    """
    steps: list[SustainStep] = []
    eps, best = start_eps, None
    for i in range(max_steps):
        steps.append(step(make_sim(i), eps))
        kept_up = steps[-1].sustained
        if kept_up:
            best = eps
        if (kept_up and i and not steps[-2].sustained) or (not kept_up and best is not None):
            break  # the boundary: a rung kept up and the one above it did not
        eps = eps / factor if kept_up else eps * factor
    return best, steps


def probe_freshness(settings: Any, sim: Any, title: Any, r: Any, worker: Child, *,
                    load_eps: float, load_seconds: float, interval_s: float,
                    timeout_s: float, cpu_of: CpuProbes,
                    returning: Sequence[str] = ()) -> FreshnessResult:
    """Run the simulated load in a thread and probe page freshness meanwhile (``sim``
    simulated before, :class:`Presimulated`, or as it is sent).

    A probe is one Play (``start``) of a new profile, stamped with the wall clock, sent and
    flushed at once. Probes go out every ``interval_s`` whether or not earlier ones are
    answered; every ~5 ms the pages of the probes still open are read with one ``MGET``.
    Probing stops a second before the load does, so every probe is answered under load.
    With ``returning`` (members who have a page), each probe has a twin for the next of
    them, reported apart (``returning_ms``).
    """
    from homestream.player.producer import PlayerProducer
    from homestream.player.simulator import run_simulation

    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            with PlayerProducer(settings, max_batch_events=BACKLOG_BATCH_EVENTS) as producer:
                outcome["sim"] = run_simulation(producer, sim, realtime=True,
                                                rate_eps=load_eps, duration_s=load_seconds)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    run_id = uuid.uuid4().hex[:6]
    with PlayerProducer(settings, max_batch_events=1) as probes:
        _warm_up(probes, title, f"bench-probe-{run_id}-warm-up")
        cpu0 = cpu_snapshot(cpu_of)
        t_load = time.monotonic()
        thread = threading.Thread(target=load, name="bench-load", daemon=True)
        thread.start()
        warmup = min(1.0, load_seconds / 4)
        time.sleep(warmup)  # let the load reach its rate first
        stop_probing = t_load + max(load_seconds - 1.0, warmup + interval_s)
        open_probes = _Probes(r, settings.key_prefix, timeout_s, worker)
        n = 0
        next_at = time.monotonic()
        while open_probes.pending or (thread.is_alive() and time.monotonic() < stop_probing):
            now = time.monotonic()
            if now >= next_at and thread.is_alive() and now < stop_probing:
                sent = [("new", f"bench-probe-{run_id}-{n:05d}")]
                if returning:
                    sent.append(("returning", returning[n % len(returning)]))
                ts = int(time.time() * 1000)
                for _, pid in sent:
                    probes.send(_probe_play(pid, title, ts))
                probes.flush(10)
                for kind, pid in sent:
                    open_probes.opened(kind, pid, ts)
                n += 1
                next_at = max(next_at + interval_s, now)
            if open_probes.pending:
                open_probes.poll()
            time.sleep(0.005)
    thread.join()
    cpu = cpu_delta(cpu0, cpu_snapshot(cpu_of))
    if "error" in outcome:
        raise BenchError(f"load simulation failed: {outcome['error']!r}")
    sim_result = outcome["sim"]
    return FreshnessResult(
        open_probes.latencies["new"], open_probes.sent["new"], open_probes.failures["new"],
        sim_result.events, sim_result.messages, sim_result.elapsed_s, cpu,
        open_probes.latencies["returning"], open_probes.sent["returning"],
        open_probes.failures["returning"],
    )


def _warm_up(producer: Any, title: Any, profile_id: str) -> None:
    """Send one Play of a throwaway member and wait for its ack, so the producer's start-up
    (the broker's metadata and the idempotent producer's id) is not counted in the first
    probe's wait: it was ~0.5 s on Tansu, the largest probe of every phase."""
    t = time.monotonic()
    producer.send(_probe_play(profile_id, title, int(time.time() * 1000)))
    producer.flush(10)  # raises when it was not acknowledged
    log.info("  probe producer ready in %.0f ms", 1000 * (time.monotonic() - t))


def _probe_play(profile_id: str, title: Any, ts_ms: int) -> Any:
    """A probe: the start of ``title`` by ``profile_id`` at ``ts_ms`` (wall clock)."""
    from topics.models import Play

    return Play(event_id=uuid.uuid4().hex, profile_id=profile_id, event_ts_ms=ts_ms,
                title_id=title.title_id, action="start", position_s=0.0,
                duration_s=title.duration_s, device="tv", country="US")


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
