"""``make demo``: the whole pipeline on one machine, with a member's page before and after.

Starts Tansu and Redis (free ports, or ``DEMO_BROKER_PORT`` / ``DEMO_REDIS_PORT``; the HTTP
server on ``HOMESTREAM_HTTP_PORT`` or a free port), creates the topics, publishes a synthetic
catalog, starts a worker and the home-page server, runs the player simulator in real time,
and prints a member's home page before and after they watch two titles, then ``curl`` lines
to try on the running pipeline (the home page, similar titles, search, ``POST /v1/events``,
the server's and the worker's readiness, on the ports chosen). It then keeps the pipeline
running, printing counters every 5 s, until Ctrl-C (SIGINT) or SIGTERM, or, with
``DEMO_SECONDS=N`` (or ``--seconds N``), until N seconds after the "after" page was printed
(the start-up before it, ~15 s on a 2-core machine plus up to 30 s waiting for a Trending
row on the default page, is not counted).

Stopping, in order: the simulator stops sending and its producer is flushed (at most ~15 s)
and closed, then the server, the worker, the broker and Redis are terminated and waited
for. A second Ctrl-C does not cut this short. Exit code 0 after a clean stop (also after
Ctrl-C / SIGTERM), 1 when a component failed, 2 for an invalid setting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from features.keys import stats_key
from homestream.player.interrupts import InterruptGuard
from homestream.player.producer import PlayerProducer, ProducerError
from homestream.player.simulator import (
    PlayerSimulator,
    SimulationResult,
    publish_catalog,
    run_simulation,
    synthetic_catalog,
    synthetic_profiles,
)
from homestream.settings import ConfigError, Settings, load_settings
from homestream.stack.local import local_stack
from homestream.stack.process import Child, WaitTimeout, free_port, wait_for, wait_for_port
from topics.models import Play, Title
from topics.registry import ensure_topics

MEMBER = "demo-member"


def render(page: dict, max_items: int = 6) -> str:
    """A home page as text: one line per row."""
    head = (f"  page for {page.get('profile_id')} ({page.get('source')}, "
            f"personalized={page.get('personalized')})")
    lines = [head]
    for row in page.get("rows", []):
        names = [i["name"] for i in row["items"][:max_items]]
        more = len(row["items"]) - len(names)
        lines.append(f"  {row['title']:<34} | " + ", ".join(names)
                     + (f" (+{more})" if more > 0 else ""))
    if not page.get("rows"):
        lines.append("  (no rows yet)")
    return "\n".join(lines)


def fetch_page(base: str, profile_id: str, country: str = "US") -> dict:
    with urllib.request.urlopen(f"{base}/v1/homepage/{profile_id}?country={country}&device=tv",
                                timeout=5) as r:
        return orjson.loads(r.read())


def curl_lines(base: str, worker_base: str | None, title: Title, query: str,
               now_ms: int, profile_id: str = MEMBER) -> list[str]:
    """Copy-paste ``curl`` commands for the running demo: the member's home page, titles
    similar to one they watched, a search, a play posted to ``POST /v1/events`` (event time
    ``now_ms``) and, when the worker serves them, its readiness."""
    event = [{"type": "play", "event_id": f"curl-{uuid.uuid4().hex[:12]}",
              "profile_id": profile_id, "event_ts_ms": now_ms, "title_id": title.title_id,
              "action": "progress", "position_s": round(title.duration_s * 0.8, 1),
              "duration_s": title.duration_s, "country": "US", "device": "tv"}]
    member = f"profile_id={profile_id}&country=US"
    gets = [f"{base}/v1/homepage/{profile_id}?country=US&device=tv",
            f"{base}/v1/titles/{title.title_id}/similar?{member}&limit=5",
            f"{base}/v1/search?q={urllib.parse.quote(query)}&{member}&limit=5"]
    lines = [f"curl -s {shlex.quote(url)}" for url in gets]
    lines.append(f"curl -s -X POST {shlex.quote(f'{base}/v1/events')} -H "
                 f"'Content-Type: application/json' -d {shlex.quote(orjson.dumps(event).decode())}")
    lines.append(f"curl -s {shlex.quote(f'{base}/readyz')}")
    if worker_base is not None:
        lines.append(f"curl -s {shlex.quote(f'{worker_base}/ready')}")
    return lines


def _start(module: str, settings: Settings, log_dir: Path) -> Child:
    return Child.module(module, settings.to_env(), log_path=log_dir / f"{module}.log")


def _wait(what: str, predicate, timeout_s: float, *, required: bool = True) -> bool:
    """Poll ``predicate`` until it holds; on time-out raise (``required``) or return False."""
    try:
        wait_for(predicate, timeout_s, what)
    except WaitTimeout:
        if required:
            raise
        return False
    return True


def _member_plays(settings: Settings, titles: Sequence[Title]) -> list[Title]:
    """The member watches two titles of one genre: more than half of each, event time now."""
    genre = "Horror"
    picks = [t for t in titles if genre in t.genres and not t.availability][:2]
    with PlayerProducer(settings) as producer:
        for t in picks:
            now = int(time.time() * 1000)
            for i, (action, frac) in enumerate([("start", 0.0), ("progress", 0.4),
                                                ("progress", 0.7), ("stop", 0.72)]):
                producer.send(Play(event_id=uuid.uuid4().hex, profile_id=MEMBER,
                                   event_ts_ms=now + i, title_id=t.title_id, action=action,
                                   position_s=frac * t.duration_s, duration_s=t.duration_s,
                                   country="US", device="tv"))
    return picks


class BackgroundSimulation:
    """The player simulator sending in real time from a daemon thread until :meth:`stop`.

    Owns its :class:`PlayerProducer`: :meth:`stop` ends the simulation, flushes what was sent
    and closes the producer, so no simulated event is left in a buffer at exit.
    """

    def __init__(self, settings: Settings, sim: PlayerSimulator, rate_eps: float,
                 flush_timeout_s: float = 5.0) -> None:
        self.producer = PlayerProducer(settings)
        self.sim = sim
        self.rate_eps = rate_eps
        self.flush_timeout_s = flush_timeout_s
        self.result: SimulationResult | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-simulator", daemon=True)

    def _run(self) -> None:
        try:
            self.result = run_simulation(self.producer, self.sim, realtime=True,
                                         rate_eps=self.rate_eps, stop=self._stop,
                                         flush_timeout_s=self.flush_timeout_s)
        except Exception as exc:  # reported by stop() / failed()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def failed(self) -> bool:
        """True when the simulation ended by itself with an error."""
        return not self._thread.is_alive() and self.error is not None

    def stop(self) -> None:
        """Stop sending, flush and close the producer; print how many events were delivered
        (and, on stderr, which were not)."""
        self._stop.set()
        self._thread.join(self.flush_timeout_s + 5.0)
        try:
            self.producer.close(self.flush_timeout_s)
        except ProducerError as exc:
            self.error = self.error or exc
        print(f"simulator stopped: {self.producer.delivered_events} events delivered",
              flush=True)
        if self.error is not None:
            print(f"simulator: {self.error}", file=sys.stderr, flush=True)


def _pids(**procs: subprocess.Popen | Child) -> str:
    return " ".join(f"{name}={proc.pid}" for name, proc in procs.items())


def seconds(text: str) -> float | None:
    """``--seconds`` / ``DEMO_SECONDS``: a non-negative number; empty or 0 means no limit."""
    value = float(text) if text.strip() else 0.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value or None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="homestream demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=seconds, default=os.environ.get("DEMO_SECONDS", ""),
                        help="stop this many seconds after the 'after' page was printed "
                             "(default: $DEMO_SECONDS; unset or 0 = until Ctrl-C)")
    parser.add_argument("--titles", type=int, default=300)
    parser.add_argument("--profiles", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="simulated events/s")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM stop everything, also when the shell started us with SIGINT ignored.
    # Only the first one interrupts: the cleanup it starts runs to the end.
    guard = InterruptGuard((signal.SIGINT, signal.SIGTERM), raise_once=True)
    exits = contextlib.ExitStack()  # closed last-in first-out: simulator, server, worker, ...
    with guard:
        try:
            return _run(args, exits, guard)
        except KeyboardInterrupt:
            name = signal.Signals(guard.received or signal.SIGINT).name
            print(f"\nstopping ({name})", flush=True)
            return 0
        finally:
            with contextlib.suppress(KeyboardInterrupt), \
                    guard.deferred(note="still stopping the demo's processes; please wait"):
                exits.close()
            print("stopped", flush=True)


def _run(args: argparse.Namespace, exits: contextlib.ExitStack, guard: InterruptGuard) -> int:
    """Start everything (registering each stop on ``exits``), show the pages, then run."""
    log_dir = Path(tempfile.mkdtemp(prefix="homestream-demo-"))
    broker_port = int(os.environ.get("DEMO_BROKER_PORT", "0")) or None
    redis_port = int(os.environ.get("DEMO_REDIS_PORT", "0")) or None
    print(f"logs: {log_dir}", flush=True)
    # a signal while a process starts is held until its stop is registered: no orphans
    with guard.deferred():
        stack = exits.enter_context(local_stack(broker_port, redis_port))
    os.environ.update(stack.env())
    os.environ.setdefault("HOMESTREAM_HTTP_PORT", str(free_port()))
    os.environ.setdefault("HOMESTREAM_WORKER_DATA_DIR", str(log_dir / "worker-data"))
    os.environ.setdefault("HOMESTREAM_WORKER_WEB_PORT", str(free_port()))  # /health, /ready
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"broker {stack.bootstrap_servers} (Tansu), redis {stack.redis_url}", flush=True)
    ensure_topics(settings)
    titles = synthetic_catalog(args.titles, seed=42, artwork_base_url=settings.artwork_base_url)
    publish_catalog(settings, titles)
    with guard.deferred():
        worker = _start("streams.worker", settings, log_dir)
        exits.callback(worker.stop)
    with guard.deferred():
        server = _start("serving", settings, log_dir)
        exits.callback(server.stop)
    pids = _pids(tansu=stack.broker.proc, redis=stack.redis.proc, worker=worker, server=server)
    print(f"processes: {pids}", flush=True)
    base = f"http://{settings.http_host}:{settings.http_port}"
    wait_for_port(settings.http_port, 30, server)
    import redis as redis_sync

    from features.keys import catalog_key
    r = exits.enter_context(redis_sync.Redis.from_url(settings.redis_url))
    _wait("the worker to load the catalog",
          lambda: r.hlen(catalog_key(settings.key_prefix)) >= len(titles), 60)
    print(f"worker and server up; home-page API at {base}/v1/homepage/<profile>", flush=True)
    print(f"web app: {base}/#profile={MEMBER} (operators: {base}/ops)", flush=True)

    profiles = synthetic_profiles(args.profiles, seed=7)
    with guard.deferred():
        simulation = BackgroundSimulation(
            settings, PlayerSimulator(titles, profiles, seed=7, heartbeat_s=60,
                                      max_heartbeats=5), rate_eps=args.rate)
        simulation.start()
        exits.callback(simulation.stop)
    print(f"simulating {args.profiles} members at {args.rate:.0f} events/s", flush=True)

    _wait("the first non-personalized page",
          lambda: fetch_page(base, MEMBER)["source"].startswith("default-"), 30)
    # a Trending row needs more trending titles than the Top 10 above it shows: let the
    # simulated members play for a while first (at most 30 s; the demo goes on without)
    if not _wait("a Trending row on the default page", lambda: any(
            r["kind"] == "trending" for r in fetch_page(base, MEMBER)["rows"]), 30,
                 required=False):
        print("(no Trending row yet: too few titles played so far)", flush=True)
    print(f"\n== {MEMBER} before any play ==")
    print(render(fetch_page(base, MEMBER)), flush=True)
    time.sleep(1.0)
    watched = _member_plays(settings, titles)
    sent = time.monotonic()
    print(f"\n{MEMBER} watches {', '.join(t.name for t in watched)} (more than half of each)")
    _wait("the member's page to change",
          lambda: fetch_page(base, MEMBER)["source"] == "personal", 10)
    print(f"== {MEMBER} after the plays (page changed after "
          f"{(time.monotonic() - sent) * 1000:.0f} ms) ==")
    print(render(fetch_page(base, MEMBER)), flush=True)
    worker_base = (f"http://127.0.0.1:{settings.worker_web_port}"
                   if settings.worker_web_port else None)
    lines = curl_lines(base, worker_base, watched[0], "horror", int(time.time() * 1000))
    print("\ntry it while the demo runs (home page, similar titles, search, post a play, "
          "server and worker readiness):\n" + "\n".join(f"  {line}" for line in lines) + "\n",
          flush=True)

    # DEMO_SECONDS / --seconds counts from here, once the "after" page is printed
    return _keep_running(args.seconds, worker, server, simulation, r, settings, log_dir)


def _keep_running(limit_s: float | None, worker: Child, server: Child,
                  simulation: BackgroundSimulation, r: Any, settings: Settings,
                  log_dir: Path) -> int:
    """Print the worker's counters every 5 s until ``limit_s`` (None: until interrupted) or
    until a part fails (exit code 1)."""
    started = time.monotonic()
    deadline = started + limit_s if limit_s else float("inf")
    while True:
        if not worker.alive() or not server.alive():
            print(f"a process exited; see {log_dir}", file=sys.stderr)
            return 1
        if simulation.failed():
            print(f"the simulator failed: {simulation.error}", file=sys.stderr)
            return 1
        stats = {k.decode(): int(v) for k, v in
                 r.hgetall(stats_key(settings.key_prefix)).items()}
        print(f"[{time.monotonic() - started:5.0f}s] events applied "
              f"{stats.get('events_applied', 0)}, duplicates {stats.get('duplicates', 0)}, "
              f"dead letters {stats.get('dead_letters', 0)}", flush=True)
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"stopping (DEMO_SECONDS={limit_s:g} elapsed)", flush=True)
            return 0
        time.sleep(min(5.0, left))


if __name__ == "__main__":
    sys.exit(main())
