"""``make demo``: the whole pipeline on one machine, with a member's page before and after.

Starts Tansu and Redis (free ports, or ``DEMO_BROKER_PORT`` / ``DEMO_REDIS_PORT``), creates
the topics, publishes a synthetic catalog, starts a worker and the home-page server, runs
the player simulator in real time, and prints a member's home page before and after they
watch two titles. Ctrl-C stops everything; ``DEMO_SECONDS=N`` stops it after N seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson

from player.producer import PlayerProducer
from player.simulator import (
    PlayerSimulator,
    publish_catalog,
    run_simulation,
    synthetic_catalog,
    synthetic_profiles,
)
from settings import ConfigError, Settings, load_settings
from stack.local import free_port, local_stack, start_module, stop_process, wait_for_port
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


def _start(module: str, settings: Settings, log_dir: Path) -> subprocess.Popen:
    return start_module(module, settings.to_env(), log_dir / f"{module}.log")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        stop_process(proc)


def _wait(what: str, predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _member_plays(settings: Settings, titles: Sequence[Title]) -> list[str]:
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
    return [t.name for t in picks]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="homestream demo", description=__doc__)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS", "0")) or None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--titles", type=int, default=300)
    parser.add_argument("--profiles", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="simulated events/s")
    args = parser.parse_args(argv)
    stop = threading.Event()
    # Ctrl-C and SIGTERM stop everything, also when the shell started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    log_dir = Path(tempfile.mkdtemp(prefix="homestream-demo-"))
    broker_port = int(os.environ.get("DEMO_BROKER_PORT", "0")) or None
    redis_port = int(os.environ.get("DEMO_REDIS_PORT", "0")) or None
    print(f"logs: {log_dir}", flush=True)
    try:
        # exits run last-in first-out: server and worker stop before the broker and Redis
        with contextlib.ExitStack() as exits:
            stack = exits.enter_context(local_stack(broker_port, redis_port))
            os.environ.update(stack.env())
            os.environ.setdefault("HOMESTREAM_HTTP_PORT", str(free_port()))
            os.environ.setdefault("HOMESTREAM_WORKER_DATA_DIR", str(log_dir / "worker-data"))
            try:
                settings = load_settings()
            except ConfigError as exc:
                print(exc, file=sys.stderr)
                return 2
            print(f"broker {stack.bootstrap_servers} (Tansu), redis {stack.redis_url}",
                  flush=True)
            ensure_topics(settings)
            titles = synthetic_catalog(args.titles, seed=42,
                                       artwork_base_url=settings.artwork_base_url)
            publish_catalog(settings, titles)
            worker = _start("streams.worker", settings, log_dir)
            exits.callback(_stop, worker)
            server = _start("serving", settings, log_dir)
            exits.callback(_stop, server)
            base = f"http://{settings.http_host}:{settings.http_port}"
            wait_for_port(settings.http_port, 30, proc=server)
            import redis as redis_sync

            from features.keys import catalog_key
            r = redis_sync.Redis.from_url(settings.redis_url)
            _wait("the worker to load the catalog",
                  lambda: r.hlen(catalog_key(settings.key_prefix)) >= len(titles), 60)
            print(f"worker and server up; home-page API at {base}/v1/homepage/<profile>",
                  flush=True)

            profiles = synthetic_profiles(args.profiles, seed=7)
            sim = PlayerSimulator(titles, profiles, seed=7, heartbeat_s=60, max_heartbeats=5)
            background = threading.Thread(
                target=lambda: run_simulation(PlayerProducer(settings), sim, realtime=True,
                                              rate_eps=args.rate,
                                              duration_s=args.seconds or 24 * 3600.0),
                daemon=True)
            background.start()
            print(f"simulating {args.profiles} members at {args.rate:.0f} events/s", flush=True)

            _wait("the first non-personalized page",
                  lambda: fetch_page(base, MEMBER)["source"] != "empty", 30)
            print(f"\n== {MEMBER} before any play ==")
            print(render(fetch_page(base, MEMBER)), flush=True)
            time.sleep(1.0)
            watched = _member_plays(settings, titles)
            sent = time.monotonic()
            print(f"\n{MEMBER} watches {', '.join(watched)} (more than half of each)")
            _wait("the member's page to change",
                  lambda: fetch_page(base, MEMBER)["source"] == "personal", 10)
            print(f"== {MEMBER} after the plays (page changed after "
                  f"{(time.monotonic() - sent) * 1000:.0f} ms) ==")
            print(render(fetch_page(base, MEMBER)), flush=True)

            started = time.monotonic()
            while not stop.is_set():
                if args.seconds and time.monotonic() - started >= args.seconds:
                    break
                if worker.poll() is not None or server.poll() is not None:
                    print(f"a process exited; see {log_dir}", file=sys.stderr)
                    return 1
                stats = {k.decode(): int(v) for k, v in
                         r.hgetall(f"{settings.key_prefix}stats").items()}
                print(f"[{time.monotonic() - started:5.0f}s] events applied "
                      f"{stats.get('events_applied', 0)}, duplicates "
                      f"{stats.get('duplicates', 0)}, dead letters "
                      f"{stats.get('dead_letters', 0)}", flush=True)
                stop.wait(5.0)
            print("stopping", flush=True)
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
