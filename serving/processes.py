"""Several server processes on one port: ``HOMESTREAM_HTTP_WORKERS`` (default: the CPU count).

Each process is a spawned child running its own event loop, Redis pool, impression
producer and model copies (nothing is shared or forked), bound to the same port with
``SO_REUSEPORT`` so the kernel spreads connections over them. This is aiohttp's own
``run_app(reuse_port=True)`` in N processes rather than gunicorn's aiohttp worker: no extra
dependency, the same code path as one process (tests and the bench run exactly what
production runs), and no pre-fork of a process that has opened sockets or started threads
(librdkafka).

The parent only supervises. SIGTERM or SIGINT to the parent is passed on to every child as
SIGTERM; each child stops accepting, lets in-flight requests finish (up to
``HOMESTREAM_HTTP_SHUTDOWN_S``), flushes its impressions and exits; the parent exits 0 when
every child did. A child that dies on its own takes the others down (exit code 1), so a
supervisor (docker, systemd) restarts the whole server instead of running short of
processes unnoticed. With one worker the server runs in the calling process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: How often the parent checks on its children.
POLL_S = 0.2


def serve_processes(target: Callable[[], None], workers: int,
                    stop_timeout_s: float = 60.0) -> int:
    """Run ``target`` (a picklable function serving until SIGTERM) in ``workers`` spawned
    processes, or inline when ``workers`` is 1; return the exit code (0: every process
    stopped cleanly)."""
    if workers <= 1:
        target()
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, name=f"serving-{i}", daemon=False)
             for i in range(workers)]
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.start()
        log.info("serving with %d processes: %s", workers, [p.pid for p in procs])
        while not stopping and all(p.is_alive() for p in procs):
            time.sleep(POLL_S)
        died = [p for p in procs if not p.is_alive()]
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate()  # SIGTERM: aiohttp's graceful exit
        deadline = time.monotonic() + stop_timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.error("%s did not stop in %.0fs: killing it", p.name, stop_timeout_s)
                p.kill()
                p.join()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if died and not stopping:
        log.error("server process(es) exited on their own: %s",
                  {p.name: p.exitcode for p in died})
        return 1
    return 0 if all(p.exitcode == 0 for p in procs) else 1
