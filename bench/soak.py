"""``make soak``: the local stack under steady load for ``SOAK_SECONDS`` (default 600).

Starts Tansu, Redis, one worker (``python -m streams.worker``) and one server process
(``python -m serving``), measures the worker's throughput on a backlog, then sends live
simulated traffic (event time = wall clock) while a client asks for home pages: the player
events and the pages' impressions together at half that rate (:func:`player_load`). It
samples the resident memory of the worker, the server and Redis, Redis' key count, used
memory and bytes by kind of key, after the warm-up and at the end, and counts errors
(HTTP answers other than 200, dead letters, processes that died). The warm-up lasts until the
members' bounded data is full: at least a fifth of the run (60 s at least), then until Redis'
used memory grows by less than 2% a minute, at most 40% of the run. It prints one JSON
report and exits 1 when a process' RSS grew by 10% or more after the warm-up, Redis' used
memory did, or there was an error.

Not part of ``make test``: it takes the run's length and the whole machine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.soak")

#: Growth of a process' RSS (or Redis' used memory) after the warm-up that fails the soak.
MAX_GROWTH = 0.10
#: Members: few enough that their bounded per-member data (dedupe ids, recent titles,
#: artwork assignments) fills up during the warm-up, so growth after it is not by members.
PROFILES = 300
TITLES = 200
BACKLOG_EVENTS = 20_000
PAGE_REQUESTS_PER_S = 20.0
#: The artwork reward window of the soak (event time = wall clock): a minute instead of an
#: hour, so the members' pending artwork decisions settle and reach their steady state within
#: the warm-up, as in production they do after an hour (bounded by
#: ``features.profile.MAX_PENDING_ART`` whatever the window).
REWARD_WINDOW_S = 60.0
#: The warm-up lasts at least a fifth of the run (60 s at least), then until Redis' used
#: memory grew by less than ``WARM_GROWTH`` over the last ``WARM_WINDOW_S`` (the members'
#: bounded data is full), at most ``WARM_MAX_SHARE`` of the run.
WARM_GROWTH = 0.02
WARM_WINDOW_S = 60.0
WARM_MAX_SHARE = 0.4
SAMPLE_S = 30.0
#: The soak's load is half the worker's measured throughput counting every event it applies:
#: the players' and the impressions of the pages served (~90 a page, ~1,800 a second at 20
#: pages a second). Player events never go below this share of the throughput.
MIN_PLAYER_SHARE = 0.05


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants, in KiB (0 when it is gone)."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _tree(pid: int) -> Iterator[int]:
    yield pid
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for t in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{t}/children").read_text().split()
        except OSError:
            continue
        for c in children:
            yield from _tree(int(c))


class PageClient(threading.Thread):
    """Asks the server for random members' home pages at a steady rate; counts answers."""

    def __init__(self, base_url: str, profiles: list[str], rate_per_s: float) -> None:
        super().__init__(daemon=True)
        self.base_url, self.profiles, self.interval = base_url, profiles, 1.0 / rate_per_s
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(7)
        while not self.stop.wait(self.interval):
            pid = rng.choice(self.profiles)
            try:
                with urllib.request.urlopen(f"{self.base_url}/v1/homepage/{pid}",
                                            timeout=10) as r:
                    r.read()
                    self.ok += r.status == 200
            except Exception as exc:  # every failure is reported, none is fatal here
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


#: Redis' memory figures reported beside ``used_memory`` (what the dataset holds, what Redis
#: itself holds: clients' buffers, the append-only file's buffer, cached scripts).
REDIS_MEMORY_FIELDS = ("used_memory_dataset", "used_memory_overhead", "mem_clients_normal",
                       "mem_aof_buffer", "used_memory_scripts", "number_of_cached_scripts")


def sample(r: Any, procs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """RSS of the processes (KiB), Redis' keys and memory, and the bytes of Redis' values by
    kind of key (:func:`key_kind`)."""
    info = r.info("memory")
    out = {f"{name}_rss_kib": rss_kib(p.pid) for name, p in procs.items()}
    out.update(redis_used_memory=int(info["used_memory"]), redis_keys=int(r.dbsize()))
    out["redis_memory"] = {k: int(info[k]) for k in REDIS_MEMORY_FIELDS if k in info}
    out["redis_bytes_by_kind"] = bytes_by_kind(r, prefix)
    return out


def key_kind(key: str, prefix: str) -> str:
    """What a key holds, from its name: the part after the key prefix up to the first ``:``
    (``profile``, ``page``, ``artwork``...), default pages apart (``page:__default__``).

    >>> key_kind("hs:profile:m1", "hs:"), key_kind("hs:page:__default__:US", "hs:")
    ('profile', 'page:__default__')
    """
    rest = key[len(prefix):] if prefix and key.startswith(prefix) else key
    head, _, tail = rest.partition(":")
    return f"{head}:__default__" if tail.startswith("__default__") else head


def bytes_by_kind(r: Any, prefix: str) -> dict[str, dict[str, int]]:
    """Keys and ``MEMORY USAGE`` bytes of every key in Redis, summed by :func:`key_kind`."""
    out: dict[str, dict[str, int]] = {}
    keys = [k.decode() if isinstance(k, bytes) else k for k in r.scan_iter(count=1000)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    for k, n in zip(keys, pipe.execute(), strict=True):
        entry = out.setdefault(key_kind(k, prefix), {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += int(n or 0)
    return dict(sorted(out.items()))


def growth(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """Relative growth of each memory figure from ``start`` to ``end``."""
    return {k: round((end[k] - start[k]) / start[k], 4) for k in start
            if (k.endswith("_rss_kib") or k == "redis_used_memory") and start[k]}


def kind_growth(start: dict[str, Any], end: dict[str, Any]) -> dict[str, int]:
    """Bytes each kind of key gained (or lost) in Redis from ``start`` to ``end``."""
    a, b = start.get("redis_bytes_by_kind", {}), end.get("redis_bytes_by_kind", {})
    return {k: b.get(k, {}).get("bytes", 0) - a.get(k, {}).get("bytes", 0)
            for k in sorted({*a, *b})}


def warmed_up(history: list[tuple[float, int]], window_s: float = WARM_WINDOW_S,
              max_growth: float = WARM_GROWTH) -> bool:
    """Whether Redis' used memory, sampled as ``(seconds, bytes)``, grew by less than
    ``max_growth`` between the newest sample and the newest one at least ``window_s`` older.

    >>> warmed_up([(0, 100), (30, 120), (60, 121)]), warmed_up([(0, 100), (30, 101), (60, 104)])
    (False, False)
    >>> warmed_up([(0, 100), (30, 120), (60, 121), (90, 122)])
    True
    """
    if not history:
        return False
    now, newest = history[-1]
    older = [b for t, b in history if t <= now - window_s]
    return bool(older) and (newest - older[-1]) / older[-1] < max_growth


def _warm_up(r: Any, procs: dict[str, Any], prefix: str, t0: float, min_s: float,
             max_s: float) -> tuple[dict[str, Any], float, str]:
    """Sample every ``SAMPLE_S`` until warmed up (:func:`warmed_up`, after ``min_s``) or
    ``max_s``; returns the last sample, the warm-up's length and why it ended."""
    history: list[tuple[float, int]] = []
    while True:
        elapsed = time.monotonic() - t0
        now = sample(r, procs, prefix)
        history.append((elapsed, now["redis_used_memory"]))
        if elapsed >= min_s and warmed_up(history):
            return now, elapsed, (f"Redis used memory grew less than {WARM_GROWTH:.0%} in "
                                  f"{WARM_WINDOW_S:.0f} s")
        if elapsed >= max_s:
            return now, elapsed, f"longest warm-up ({WARM_MAX_SHARE:.0%} of the run)"
        log.info("warming up, %.0f s: %s", elapsed, json.dumps(now))
        time.sleep(max(0.0, min(SAMPLE_S, max_s - elapsed)))


def _wait_for(pred: Any, timeout_s: float, what: str, watch: list[Any]) -> None:
    from homestream.stack.process import wait_for

    wait_for(pred, timeout_s, what, watch=watch, interval_s=0.2)


def measure_throughput(settings: Any, r: Any, env: dict[str, str]) -> float:
    """Events per second a worker applies from a backlog of one event per message, as live
    players send them (event times in the past): produced while no worker runs, then timed
    from the first event applied to the last."""
    from homestream.player.producer import PlayerProducer
    from homestream.player.simulator import events_stream
    from homestream.stack.process import Child

    start_ms = int(time.time() * 1000) - 24 * 3600 * 1000  # the backlog is all in the past
    with PlayerProducer(settings, max_batch_events=1) as producer:
        for ev in events_stream(BACKLOG_EVENTS, start_ms, seed=11, n_titles=TITLES,
                                n_profiles=PROFILES):
            producer.send(ev)
    n0 = _applied(r, settings)
    worker = Child.module("streams.worker", env)
    try:
        _wait_for(lambda: _applied(r, settings) > n0, 120, "the first backlog event", [worker])
        t0, n1 = time.monotonic(), _applied(r, settings)
        _wait_for(lambda: _applied(r, settings) >= n0 + BACKLOG_EVENTS, 600,
                  "the backlog applied", [worker])
        return (_applied(r, settings) - n1) / (time.monotonic() - t0)
    finally:
        worker.stop()


def _applied(r: Any, settings: Any) -> int:
    from features.keys import stats_key

    return int(r.hget(stats_key(settings.key_prefix), "events_applied") or 0)


def _counter(r: Any, settings: Any, name: str) -> int:
    from features.keys import stats_key

    return int(r.hget(stats_key(settings.key_prefix), name) or 0)


def run(seconds: float) -> dict[str, Any]:
    """The soak; returns its report (``passed`` says whether it met the targets)."""
    import redis

    from homestream.player.producer import PlayerProducer
    from homestream.player.simulator import (
        PlayerSimulator,
        publish_catalog,
        run_simulation,
        synthetic_catalog,
        synthetic_profiles,
    )
    from homestream.settings import load_settings
    from homestream.stack.local import free_port, local_stack
    from homestream.stack.process import Child
    from topics.registry import ensure_topics

    warmup_s = max(60.0, seconds / 5)
    with local_stack() as stack:
        env = {**stack.env(), "HOMESTREAM_HTTP_PORT": str(free_port()),
               "HOMESTREAM_HTTP_WORKERS": "1", "HOMESTREAM_PARTITIONS": "4",
               "HOMESTREAM_WORKER_DATA_DIR": f"/tmp/homestream-soak-{os.getpid()}",
               "HOMESTREAM_ARTWORK_REWARD_WINDOW_S": str(REWARD_WINDOW_S)}
        os.environ.update(env)
        settings = load_settings()
        r = redis.Redis.from_url(settings.redis_url)
        ensure_topics(settings)
        catalog = synthetic_catalog(TITLES, 11)
        publish_catalog(settings, catalog)
        eps = measure_throughput(settings, r, env)
        worker = Child.module("streams.worker", env)
        server = Child.module("serving", env)
        procs = {"worker": worker, "server": server, "redis": stack.redis.proc}
        log.info("worker log %s, server log %s", worker.log_path, server.log_path)
        try:
            return _soak(settings, r, worker, server, procs, seconds, warmup_s, catalog, eps,
                         PlayerProducer, PlayerSimulator, run_simulation, synthetic_profiles)
        finally:
            server.stop()
            worker.stop()


def _soak(settings: Any, r: Any, worker: Any, server: Any, procs: dict[str, Any],
          seconds: float, warmup_s: float, catalog: Any, eps: float, producer_cls: Any,
          sim_cls: Any,
          run_simulation: Any, synthetic_profiles: Any) -> dict[str, Any]:
    """The measured part: throughput, then live load with samples after warm-up and at the
    end."""
    from features.keys import catalog_key

    base = f"http://127.0.0.1:{settings.http_port}"
    _wait_for(lambda: r.hlen(catalog_key(settings.key_prefix)) >= TITLES, 120,
              "the catalog in Redis", [worker])
    _wait_for(lambda: _healthy(base), 60, "the server", [server])
    profiles = synthetic_profiles(PROFILES, 12)
    per_page = impressions_per_page(base, r, settings, [p.profile_id for p in profiles])
    load_eps = player_load(eps, per_page)
    log.info("worker applied the backlog at %.0f events/s, a page logs %.1f impressions; soak "
             "at %.0f player events/s + %.0f impressions/s for %.0f s", eps, per_page,
             load_eps, per_page * PAGE_REQUESTS_PER_S, seconds)
    stop = threading.Event()
    sim = sim_cls(catalog, profiles, 12)
    producer = producer_cls(settings)
    sent: list[Any] = []
    sender = threading.Thread(target=lambda: sent.append(run_simulation(
        producer, sim, profiles, rate_eps=load_eps, realtime=True, stop=stop)), daemon=True)
    client = PageClient(base, [p.profile_id for p in profiles], PAGE_REQUESTS_PER_S)
    dead0 = _counter(r, settings, "dead_letters")
    applied0 = _applied(r, settings)
    t0 = time.monotonic()
    sender.start()
    client.start()
    errors: list[str] = []
    try:
        start, warmup_s, warm_reason = _warm_up(r, procs, settings.key_prefix, t0, warmup_s,
                                                max(warmup_s, seconds * WARM_MAX_SHARE))
        log.info("after warm-up (%.0f s, %s): %s", warmup_s, warm_reason, json.dumps(start))
        while time.monotonic() - t0 < seconds:
            time.sleep(min(SAMPLE_S, max(0.0, seconds - (time.monotonic() - t0))))
            for name, p in (("worker", worker), ("server", server)):
                if not p.alive():
                    errors.append(f"{name} exited ({p.returncode}); log {p.log_path}")
            log.info("%.0f s: %s, pages ok %d", time.monotonic() - t0,
                     json.dumps(sample(r, procs, settings.key_prefix)), client.ok)
            if errors:
                break
        end = sample(r, procs, settings.key_prefix)
    finally:
        stop.set()
        client.stop.set()
        sender.join(60)
        client.join(15)
        producer.close()
    n_sent = sent[0].events if sent else 0
    if not _settles(r, settings, 60.0):
        errors.append("the worker fell behind: still applying events 60 s after the load "
                      "stopped")
    applied = _applied(r, settings) - applied0  # the players' events and the impressions
    if applied < n_sent:
        errors.append(f"{n_sent - applied} of {n_sent} events sent were not applied")
    dead = _counter(r, settings, "dead_letters") - dead0
    errors += client.errors[:20]
    if dead:
        errors.append(f"{dead} dead letters")
    return report_of(start, end, errors, seconds=seconds, warmup_s=round(warmup_s),
                     warmup_ended=warm_reason, reward_window_s=REWARD_WINDOW_S,
                     backlog_events_per_s=round(eps), load_events_per_s=round(load_eps),
                     impressions_per_page=round(per_page, 1),
                     impressions_per_s=round(per_page * PAGE_REQUESTS_PER_S),
                     events_sent=n_sent, events_applied=applied, pages_ok=client.ok,
                     page_errors=len(client.errors))


def player_load(eps: float, impressions_per_page: float,
                pages_per_s: float = PAGE_REQUESTS_PER_S) -> float:
    """Player events a second for the soak: half the worker's measured throughput ``eps``,
    less the impressions the served pages log (the worker applies those too), at least
    :data:`MIN_PLAYER_SHARE` of ``eps``.

    >>> player_load(4000, 50, 20), player_load(4000, 200, 20)
    (1000.0, 200.0)
    """
    return max(eps / 2 - impressions_per_page * pages_per_s, eps * MIN_PLAYER_SHARE)


def impressions_per_page(base: str, r: Any, settings: Any, profiles: list[str],
                         pages: int = 20) -> float:
    """Impressions the worker applies per served home page, measured: ``pages`` members'
    pages asked for before the load starts, then the worker's applied count once it settles."""
    before = _applied(r, settings)
    for pid in profiles[:pages]:
        with urllib.request.urlopen(f"{base}/v1/homepage/{pid}", timeout=10) as resp:
            resp.read()
    deadline = time.monotonic() + 60.0  # the server's producer connects on its first page
    while _applied(r, settings) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    if _applied(r, settings) == before:
        raise RuntimeError(f"the worker applied no impression of {pages} pages in 60 s")
    _settles(r, settings, 30.0, quiet_s=5.0)  # the server's producer may send in bursts
    return (_applied(r, settings) - before) / pages


def report_of(start: dict[str, Any], end: dict[str, Any], errors: list[str],
              **figures: Any) -> dict[str, Any]:
    """The soak's report: ``figures``, the samples after the warm-up and at the end, their
    growth, the errors, and whether it ``passed`` (no error, every growth under the limit).

    >>> r = report_of({"worker_rss_kib": 100}, {"worker_rss_kib": 109}, [], seconds=60)
    >>> r["passed"], report_of({"worker_rss_kib": 100}, {"worker_rss_kib": 110}, [])["passed"]
    (True, False)
    """
    grown = growth(start, end)
    return {**figures, "start": start, "end": end, "growth": grown,
            "redis_growth_by_kind": kind_growth(start, end), "max_growth": MAX_GROWTH,
            "errors": errors,
            "passed": not errors and all(g < MAX_GROWTH for g in grown.values())}


def _settles(r: Any, settings: Any, timeout_s: float, quiet_s: float = 3.0) -> bool:
    """Whether the worker's applied count stops moving (``quiet_s`` unchanged) within
    ``timeout_s``: it kept up with the load."""
    deadline = time.monotonic() + timeout_s
    last, since = _applied(r, settings), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _applied(r, settings)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
    return False


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    report = run(seconds)
    print(json.dumps(report, indent=2), flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
