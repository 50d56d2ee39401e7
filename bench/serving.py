"""The serving benchmark: the home-page server next to the floor its store allows.

The module is a little over ~500 lines because the passes share one stack, one worker and
one client harness; the floor server is :mod:`bench.floor`, the statistics
:mod:`bench.stats`.

The floor is a bare aiohttp server whose one handler GETs a member's page key from Redis and
returns the bytes. Both servers are loaded by the same client, ``wrk`` (C, ``--latency``;
installed with apt-get when missing), with a Lua script rotating over the same profile ids:
``--connections`` connections on ``--threads`` threads, a ``--warm-s`` pass whose numbers are
discarded, then a ``--measure-s`` pass. A ``done()`` hook prints the latency percentiles and
error counts as JSON; the client's CPU share (wrk's CPU seconds / wall / cores) is reported so
a saturated client is visible.

Passes (keys ``serve_<pass>_rps``, ``_p50_ms``, ``_p99_ms``, ``_errors``, ``_ratio``):

- ``floor``: the bare server, one process;
- ``first``: first visits, the hard case: every member's artwork assignments are cleared
  before the pass and the server runs with ``HOMESTREAM_ARTWORK_STICKY_S=0``, so every request
  decides the artwork of every first-screen title and stores the assignments, as a member's
  first visit does; ``serve_rps``/``serve_p50_ms``/``serve_p99_ms``/``serve_ratio``/
  ``serve_errors`` are this pass;
- ``return``: returning members (the assignments the first pass stored are kept);
- ``floor_n`` / ``first_n``: the same with ``HOMESTREAM_HTTP_WORKERS`` processes on both
  sides (``--workers``, default the CPU count);
- ``mixed``: first visits while a worker consumes simulated traffic at half its measured
  throughput (when the caller can start one);
- ``similar``, ``rerank``, ``search``: the other routes at the same concurrency.

``python -m bench.serving`` stands up Tansu and Redis, lets a worker store a catalog and
materialize pages from a small backlog, then runs the passes and prints one JSON line; it exits
non-zero when a target (``--min-serve-ratio``, ``--max-serve-p99-ratio``) is missed or a
request was not answered with 200. The floor server is :mod:`bench.floor`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.serving")

ROOT = Path(__file__).resolve().parents[1]

#: wrk's Lua: rotate over the requests from a per-thread random start; print JSON when done.
WRK_LUA = """
local reqs = {%(requests)s}
local i = 0
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  i = math.random(#reqs)
end
function request()
  i = i %% #reqs + 1
  local r = reqs[i]
  if r[2] then
    return wrk.format("POST", r[1], {["Content-Type"] = "application/json"}, r[2])
  end
  return wrk.format("GET", r[1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    """The serving bench could not run (a process died, wrk is missing, no pages...)."""


# -- pure helpers -------------------------------------------------------------------------
def lua_script(requests: Sequence[tuple[str, str | None]]) -> str:
    """The wrk script for ``requests`` (path, JSON body or ``None`` for a GET)."""
    def q(s: str) -> str:
        return json.dumps(s)  # a JSON string is a valid Lua string literal here

    rows = ",".join(f"{{{q(p)},{q(b) if b is not None else 'nil'}}}" for p, b in requests)
    return WRK_LUA % {"requests": rows}


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The JSON the ``done()`` hook printed, plus ``errors`` (every kind of error summed).

    >>> out = ('Running 1s test\\nWRKJSON {"requests":10,"duration_us":1000000,"connect":0,'
    ...        '"read":0,"write":0,"status":2,"timeout":1,"p50_us":900,"p90_us":1500,'
    ...        '"p99_us":2000,"max_us":3000}\\n')
    >>> r = parse_wrk(out)
    >>> r["errors"], r["rps"], r["p99_ms"]
    (3, 10.0, 2.0)
    """
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON "):])
            break
    else:
        raise BenchError(f"wrk printed no result line:\n{stdout[-2000:]}")
    data["errors"] = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    data["rps"] = round(data["requests"] / max(data["duration_us"], 1) * 1e6, 1)
    for q in ("p50", "p90", "p99", "max"):
        data[f"{q}_ms"] = round(data[f"{q}_us"] / 1000, 2)
    return data


def pass_keys(name: str, res: Mapping[str, Any],
              floor: Mapping[str, Any] | None) -> dict[str, Any]:
    """The result keys of one pass (``serve_<name>_*``), with ratios to ``floor``.

    >>> pass_keys("first", {"rps": 50.0, "p50_ms": 2.0, "p99_ms": 8.0, "errors": 0,
    ...                     "client_cpu_share": 0.2},
    ...           {"rps": 100.0, "p99_ms": 4.0})["serve_first_ratio"]
    0.5
    """
    out = {f"serve_{name}_rps": res["rps"], f"serve_{name}_p50_ms": res["p50_ms"],
           f"serve_{name}_p99_ms": res["p99_ms"], f"serve_{name}_errors": res["errors"],
           f"serve_{name}_client_cpu_share": res["client_cpu_share"],
           f"serve_{name}_server_cpu_ms": res.get("server_cpu_ms")}
    if floor is not None and floor.get("rps"):
        out[f"serve_{name}_ratio"] = round(res["rps"] / floor["rps"], 3)
        if res.get("server_cpu_ms") and floor.get("server_cpu_ms"):
            out[f"serve_{name}_cpu_ratio"] = round(floor["server_cpu_ms"]
                                                   / res["server_cpu_ms"], 3)
        out[f"serve_{name}_p99_ratio"] = round(res["p99_ms"] / max(floor["p99_ms"], 1e-3), 2)
    return out


#: The passes the serving targets apply to (first visits and returning members, one process
#: each side); ``first_n`` and ``mixed`` are reported beside them.
TARGET_PASSES = ("first", "return")


def check_serving(result: Mapping[str, Any], min_ratio: float | None,
                  max_p99_ratio: float | None) -> list[str]:
    """Missed serving targets and errors, one sentence each.

    >>> check_serving({"serve_first_ratio": 0.4, "serve_first_p99_ratio": 1.5,
    ...                "serve_first_errors": 0, "serve_return_errors": 2}, 0.5, 2.0)
    ['serve_first_ratio 0.4 < 0.5', 'serve_return_errors: 2 request(s) not answered with 200']
    """
    out = []
    for name in TARGET_PASSES:
        ratio = result.get(f"serve_{name}_ratio")
        p99 = result.get(f"serve_{name}_p99_ratio")
        if min_ratio is not None and ratio is not None and ratio < min_ratio:
            out.append(f"serve_{name}_ratio {ratio} < {min_ratio}")
        if max_p99_ratio is not None and p99 is not None and p99 > max_p99_ratio:
            out.append(f"serve_{name}_p99_ratio {p99} > {max_p99_ratio}")
    for key, value in result.items():
        if key.startswith("serve_") and key.endswith("_errors") and value:
            out.append(f"{key}: {value} request(s) not answered with 200")
    return out


# -- processes ----------------------------------------------------------------------------
def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get when missing."""
    path = shutil.which("wrk")
    if path:
        return path
    log.info("wrk not found: installing it with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    try:
        subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True,
                       stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"wrk is needed and could not be installed ({exc}); install it "
                         "with `apt-get install -y wrk`") from None
    path = shutil.which("wrk")
    if not path:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return path


@contextlib.contextmanager
def server(args: Sequence[str], env: Mapping[str, str], port: int,
           ready_path: str = "/healthz") -> Iterator[subprocess.Popen]:
    """A ``python <args>`` server for the ``with`` block, waited for on ``ready_path``."""
    fd, name = tempfile.mkstemp(prefix="bench-serve-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=dict(env),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{' '.join(args)} exited with {proc.returncode}; log "
                                 f"{name}:\n{Path(name).read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}",
                                            timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass  # not listening yet: poll again
            if time.monotonic() > deadline:
                raise BenchError(f"{' '.join(args)} not ready in 60s; log {name}")
            time.sleep(0.1)
        yield proc
        if proc.poll() is not None:
            raise BenchError(f"{' '.join(args)} died during the pass; log {name}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class Load:
    """How wrk loads a server."""

    connections: int = 32
    threads: int = 2
    warm_s: float = 3.0
    measure_s: float = 10.0


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children so far (Linux)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            todo += [int(c) for c in
                     Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return total


def run_wrk(url: str, requests: Sequence[tuple[str, str | None]], load: Load,
            server_pid: int | None = None) -> dict[str, Any]:
    """A warm pass, then a measured one; the measured pass's numbers, the client's CPU
    share and, given the server's pid, the server's CPU milliseconds per request (its
    processes together: a measure of work per request that other load on the machine
    disturbs less than requests per second)."""
    wrk = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua_script(requests))
        script = f.name
    try:
        out: dict[str, Any] = {}
        for seconds in (load.warm_s, load.measure_s):
            cmd = [wrk, f"-t{load.threads}", f"-c{load.connections}",
                   f"-d{max(1, math.ceil(seconds))}s",  # wrk takes whole seconds
                   "--timeout", "10s", "--latency", "-s", script, url]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            server0 = tree_cpu_s(server_pid) if server_pid else 0.0
            t0 = time.monotonic()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.monotonic() - t0
            server_cpu = tree_cpu_s(server_pid) - server0 if server_pid else 0.0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
            out = parse_wrk(done.stdout)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out["client_cpu_share"] = round(cpu / wall / (os.cpu_count() or 1), 3)
            out["server_cpu_ms"] = round(1000 * server_cpu / max(out["requests"], 1), 3)
        return out
    finally:
        os.unlink(script)


# -- the passes ---------------------------------------------------------------------------
@dataclass
class ServeContext:
    """What the passes need from the caller's stack."""

    env: dict[str, str]           # the HOMESTREAM_ environment of the stack
    redis: Any                    # a sync redis client
    prefix: str
    profile_ids: list[str]        # members with a materialized page
    titles: list[Any]             # the catalog (topics.models.Title)
    #: Starts a worker consuming simulated traffic at half its throughput (mixed pass).
    mixed_load: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    #: Where py-spy samples of each real-server pass go (``--profile-server``).
    profile_dir: Path | None = None


def route_requests(ctx: ServeContext, seed: int) -> dict[str, list[tuple[str, str | None]]]:
    """The requests of every route, over the same members."""
    rng = random.Random(seed)
    pids = ctx.profile_ids
    tids = [t.title_id for t in ctx.titles]
    words = [w for t in ctx.titles for w in t.name.split() if len(w) > 3] or ["the"]
    n = min(len(pids), 2000)
    return {
        "home": [(f"/v1/homepage/{p}?country=US", None) for p in pids],
        "similar": [(f"/v1/titles/{rng.choice(tids)}/similar?profile_id={p}&country=US",
                     None) for p in pids[:n]],
        "rerank": [("/v1/rerank", json.dumps({"profile_id": p, "country": "US",
                                               "title_ids": rng.sample(tids, min(20, len(tids)))}))
                   for p in pids[:n]],
        "search": [(f"/v1/search?q={rng.choice(words).lower()}&profile_id={p}&country=US",
                    None) for p in pids[:n]],
    }


@contextlib.contextmanager
def sampled(pid: int, profile_dir: Path | None, name: str, load: Load) -> Iterator[None]:
    """With ``profile_dir``, sample the server's stacks with py-spy through the measured
    part of the block (after ``load.warm_s``: compiling the members' pages belongs to the warm
    pass) into ``<profile_dir>/<name>.txt`` (collapsed stacks: ``py-spy`` must be
    installed)."""
    if profile_dir is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    profile_dir.mkdir(parents=True, exist_ok=True)
    out = profile_dir / f"{name}.txt"
    record = [spy, "record", "-p", str(pid), "-r", "250", "--format", "raw", "-o", str(out),
              "-d", str(int(load.measure_s) + 2)]
    proc = subprocess.Popen(["sh", "-c", f'sleep {load.warm_s} && exec "$0" "$@"', *record],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        proc.wait(30)


def clear_assignments(ctx: ServeContext) -> None:
    """Delete every member's artwork assignments (their next visit is a first visit)."""
    from features.keys import artwork_key

    keys = [artwork_key(ctx.prefix, p) for p in ctx.profile_ids]
    for i in range(0, len(keys), 1000):
        ctx.redis.delete(*keys[i:i + 1000])


def _env(ctx: ServeContext, port: int, workers: int, **extra: str) -> dict[str, str]:
    return {**ctx.env, "HOMESTREAM_HTTP_PORT": str(port), "HOMESTREAM_HTTP_WORKERS":
            str(workers), **extra}


def measure_serving(ctx: ServeContext, load: Load, workers: int, seed: int = 7) -> dict[str, Any]:
    """Every pass (see the module doc); the ``serve_*`` keys."""
    from homestream.stack.local import free_port

    if not ctx.profile_ids:
        raise BenchError("no profile pages in Redis to serve")
    reqs = route_requests(ctx, seed)
    result: dict[str, Any] = {"serve_profiles": len(ctx.profile_ids), "serve_workers": workers,
                              "serve_connections": load.connections,
                              "serve_threads": load.threads, "serve_seconds": load.measure_s}
    floors: dict[int, dict[str, Any]] = {}

    def floor(n: int) -> dict[str, Any]:
        port = free_port()
        with server(["-m", "bench.floor"], _env(ctx, port, n), port) as proc:
            res = run_wrk(f"http://127.0.0.1:{port}", reqs["home"], load, proc.pid)
        name = "floor" if n == 1 else "floor_n"
        result.update({f"serve_{name}_{k}": res[k] for k in (
            "rps", "p50_ms", "p99_ms", "errors", "client_cpu_share", "server_cpu_ms")})
        log.info("  %s (%d process(es)): %s req/s, p50 %s ms, p99 %s ms", name, n, res["rps"],
                 res["p50_ms"], res["p99_ms"])
        return res

    def real(name: str, n: int, route: str = "home", sticky: bool = True,
             against: dict[str, Any] | None = None) -> dict[str, Any]:
        port = free_port()
        extra = {} if sticky else {"HOMESTREAM_ARTWORK_STICKY_S": "0"}
        with server(["-m", "serving"], _env(ctx, port, n, **extra), port, "/readyz") as proc, \
                sampled(proc.pid, ctx.profile_dir, name, load):
            res = run_wrk(f"http://127.0.0.1:{port}", reqs[route], load, proc.pid)
        result.update(pass_keys(name, res, against))
        log.info("  %s (%d process(es)): %s req/s, p50 %s ms, p99 %s ms, %d errors, "
                 "ratio %s", name, n, res["rps"], res["p50_ms"], res["p99_ms"], res["errors"],
                 result.get(f"serve_{name}_ratio"))
        return res

    floors[1] = floor(1)
    clear_assignments(ctx)
    real("first", 1, sticky=False, against=floors[1])
    real("return", 1, against=floors[1])
    for route in ("similar", "rerank", "search"):
        real(route, 1, route=route)
    if workers > 1:
        floors[workers] = floor(workers)
        real("first_n", workers, sticky=False, against=floors[workers])
    if ctx.mixed_load is not None:
        with ctx.mixed_load():
            real("mixed", 1, sticky=False, against=floors[1])
    for k in ("rps", "p50_ms", "p99_ms", "errors", "ratio", "p99_ratio"):
        result[f"serve_{k}"] = result.get(f"serve_first_{k}")
    return result


# -- the command ----------------------------------------------------------------------------
@contextlib.contextmanager
def mixed_load(settings: Any, env: dict[str, str], sim: Any, eps: float) -> Iterator[None]:
    """A worker consuming simulated traffic produced at ``eps`` events/s for the block."""
    import threading

    from bench.run import BACKLOG_BATCH_EVENTS, child
    from homestream.player.producer import PlayerProducer
    from homestream.player.simulator import run_simulation

    stop = threading.Event()

    def produce() -> None:
        with PlayerProducer(settings, max_batch_events=BACKLOG_BATCH_EVENTS) as producer:
            run_simulation(producer, sim, realtime=True, rate_eps=eps, stop=stop)

    with child("streams.worker", env):
        thread = threading.Thread(target=produce, name="bench-mixed-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of ``python -m bench.serving``."""
    from homestream.player.cli import positive_float, positive_int

    p = argparse.ArgumentParser(prog="python -m bench.serving",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=positive_int, default=30_000, help="backlog events")
    p.add_argument("--titles", type=positive_int, default=500)
    p.add_argument("--profiles", type=positive_int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    add_load_args(p, positive_int, positive_float)
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed pass")
    return p.parse_args(argv)


def add_load_args(p: argparse.ArgumentParser, positive_int: Any, positive_float: Any,
                  with_duration: bool = True) -> None:
    """The load and target flags (shared with ``bench.run``, whose ``--concurrency`` and
    ``--serve-seconds`` stand for ``--connections`` and ``--measure-s``)."""
    if with_duration:
        p.add_argument("--connections", type=positive_int, default=32,
                       help="wrk connections (default 32)")
        p.add_argument("--measure-s", type=positive_float, default=10.0,
                       help="measured seconds of each pass (default 10)")
    p.add_argument("--threads", type=positive_int, default=2, help="wrk threads (default 2)")
    p.add_argument("--warm-s", type=positive_float, default=3.0,
                   help="unmeasured warm-up seconds before each pass (default 3)")
    p.add_argument("--http-workers", type=positive_int, default=os.cpu_count() or 1,
                   help="server processes of the multi-process passes (default: CPUs)")
    p.add_argument("--min-serve-ratio", type=float, default=None)
    p.add_argument("--max-serve-p99-ratio", type=float, default=None)
    p.add_argument("--profile-server", type=Path, default=None, metavar="DIR",
                   help="sample each real-server pass with py-spy into DIR/<pass>.txt")


def serve_load(args: argparse.Namespace) -> Load:
    """The :class:`Load` of parsed flags (``bench.serving``'s or ``bench.run``'s)."""
    connections = getattr(args, "connections", None) or args.concurrency
    seconds = getattr(args, "measure_s", None) or args.serve_seconds
    return Load(connections, args.threads, args.warm_s, seconds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stand up a stack, materialize pages from a backlog, measure every pass."""
    import redis

    from bench.run import child, drain_backlog, load_catalog, page_profile_ids, produce_backlog
    from homestream.player.simulator import PlayerSimulator, synthetic_catalog, synthetic_profiles
    from homestream.settings import load_settings
    from homestream.stack.local import local_stack
    from topics.registry import ensure_topics

    data_dir = tempfile.mkdtemp(prefix="bench-serving-")
    try:
        with local_stack() as stack:
            settings = load_settings(bootstrap_servers=stack.bootstrap_servers,
                                     redis_url=stack.redis_url, worker_data_dir=data_dir)
            env = {**os.environ, **settings.to_env()}
            r = redis.Redis.from_url(settings.redis_url)
            ensure_topics(settings)
            titles = synthetic_catalog(args.titles, args.seed)
            load_catalog(settings, env, titles, r)
            profiles = synthetic_profiles(args.profiles, args.seed)
            sim = PlayerSimulator(titles, profiles, args.seed)
            n_events, _, _ = produce_backlog(settings, sim, args.events)
            with child("streams.worker", env) as worker:
                drain = drain_backlog(r, settings.key_prefix, [worker], n_events, 600.0, {})
            eps = drain.events_per_s or 1000.0
            log.info("pages materialized; worker %.0f events/s", eps)
            load_sim = PlayerSimulator(titles, profiles, args.seed + 1)
            ctx = ServeContext(env, r, settings.key_prefix,
                               page_profile_ids(r, settings.key_prefix), titles,
                               None if args.no_mixed else
                               (lambda: mixed_load(settings, env, load_sim, eps / 2)),
                               args.profile_server)
            result = measure_serving(ctx, serve_load(args), args.http_workers, args.seed)
            result["serve_mixed_load_eps"] = round(eps / 2)
            r.close()
            return result
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.serving``: every pass; the JSON line; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    except BenchError as exc:
        log.error("serving bench failed: %s", exc)
        return 2
    print(json.dumps(result, separators=(",", ":")), flush=True)
    problems = check_serving(result, args.min_serve_ratio, args.max_serve_p99_ratio)
    for problem in problems:
        print(f"bench.serving: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
