"""Health and readiness of the worker and the learner, for supervisors and load balancers.

The worker serves them on its Faust web server (``HOMESTREAM_WORKER_WEB_PORT``), the learner
on a small aiohttp server of its own (``HOMESTREAM_LEARNER_WEB_PORT``); 0 turns either off.

- ``GET /health`` (liveness): 200 while the process's event loop answers, with what it knows
  (``last_batch_age_s``: seconds since the last micro-batch, ``null`` before the first;
  an idle stream has no batches, so the age alone says nothing is wrong).
- ``GET /ready`` (readiness): 200 ``{"status": "ready", ...}`` when the consumer holds its
  share of the partitions (the worker: at least one partition of the event topics; the
  learner: it joined its group, as the active learner or a standby) and Redis answers a
  ping within a second; else 503 ``{"status": "not ready", "failed": [...], "consumer":
  why, "redis": why}``, naming each dependency that failed and why. A worker with no
  partition (more workers than partitions) is not ready: it processes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from features.store import PipelineStore

#: How long a readiness probe waits for Redis.
PING_TIMEOUT_S = 1.0


async def redis_problem(store: PipelineStore, timeout_s: float = PING_TIMEOUT_S) -> str | None:
    """``None`` when the store answers a ping within ``timeout_s``, else why not."""
    try:
        ok = await asyncio.wait_for(store.ping(), timeout_s)
        return None if ok else "ping returned false"
    except Exception as exc:  # a probe: the failure is the answer
        return f"ping failed: {type(exc).__name__}: {exc}"


def readiness_body(problems: dict[str, str | None], **info: Any) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)`` from each dependency's problem (``None``: fine)."""
    failed = [name for name, why in problems.items() if why is not None]
    body: dict[str, Any] = {"status": "not ready" if failed else "ready", **info,
                            **{name: why or "ok" for name, why in problems.items()}}
    if failed:
        body["failed"] = failed
    return not failed, body


class WorkerHealth:
    """What a worker's ``/health`` and ``/ready`` report.

    Parameters
    ----------
    assignment
        Returns the worker consumer's assigned ``(topic, partition)`` pairs; raises while
        the consumer is not running (Faust's ``app.consumer.assignment``).
    store
        The worker's Redis store.
    event_topics
        The topics whose partitions count as the worker's share.
    clock
        Monotonic seconds (a hook for tests).
    """

    def __init__(self, assignment: Callable[[], Iterable[Any]], store: PipelineStore,
                 event_topics: Sequence[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.assignment = assignment
        self.store = store
        self.event_topics = frozenset(event_topics)
        self.clock = clock
        self.batches = 0
        self.last_batch_at: float | None = None

    def batch_done(self) -> None:
        """Called by the events agent after each micro-batch was written."""
        self.batches += 1
        self.last_batch_at = self.clock()

    def last_batch_age_s(self) -> float | None:
        if self.last_batch_at is None:
            return None
        return round(self.clock() - self.last_batch_at, 3)

    def assigned(self) -> list[str] | None:
        """``topic:partition`` of the event-topic partitions held (``None``: no consumer)."""
        try:
            held = self.assignment()
        except Exception:  # consumer not started, or stopping
            return None
        return sorted(f"{tp.topic}:{tp.partition}" for tp in held
                      if tp.topic in self.event_topics)

    def liveness(self) -> dict[str, Any]:
        return {"status": "ok", "batches": self.batches,
                "last_batch_age_s": self.last_batch_age_s()}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)``: partitions assigned and Redis reachable (module docstring)."""
        assigned = self.assigned()
        if assigned is None:
            consumer = "consumer not running"
        elif not assigned:
            consumer = "no partition of the event topics assigned"
        else:
            consumer = None
        return readiness_body({"consumer": consumer, "redis": await redis_problem(self.store)},
                              partitions=assigned or [], batches=self.batches,
                              last_batch_age_s=self.last_batch_age_s())


def install_worker_health(app: Any, health: WorkerHealth) -> None:
    """Serve ``/health`` and ``/ready`` on the Faust app's web server."""

    @app.page("/health")
    async def worker_health(view: Any, request: Any) -> Any:
        return view.json(health.liveness())

    @app.page("/ready")
    async def worker_ready(view: Any, request: Any) -> Any:
        ready, body = await health.readiness()
        return view.json(body, status=200 if ready else 503)


class LearnerHealth:
    """What the learner's ``/health`` and ``/ready`` report: whether its consumer joined the
    group (``role``: ``active`` holding the model-updates partition, or ``standby``), Redis,
    and the age of its last snapshot."""

    def __init__(self, store: PipelineStore,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.joined = False
        self.active = False
        self.last_snapshot_at: float | None = None

    def assigned(self, partitions: Sequence[Any]) -> None:
        """A rebalance gave the learner ``partitions`` (empty: it is a standby)."""
        self.joined = True
        self.active = bool(partitions)

    def snapshot_done(self) -> None:
        self.last_snapshot_at = self.clock()

    def _info(self) -> dict[str, Any]:
        age = (None if self.last_snapshot_at is None
               else round(self.clock() - self.last_snapshot_at, 3))
        role = ("active" if self.active else "standby") if self.joined else "joining"
        return {"role": role, "last_snapshot_age_s": age}

    def liveness(self) -> dict[str, Any]:
        return {"status": "ok", **self._info()}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        consumer = None if self.joined else "not joined the learner group yet"
        return readiness_body({"consumer": consumer, "redis": await redis_problem(self.store)},
                              **self._info())


async def serve_learner_health(health: LearnerHealth, host: str, port: int) -> Any:
    """Start the learner's ``/health`` and ``/ready`` server; returns the runner to
    ``cleanup()`` at shutdown."""
    from aiohttp import web

    async def live(_request: web.Request) -> web.Response:
        return web.json_response(health.liveness())

    async def ready(_request: web.Request) -> web.Response:
        ok, body = await health.readiness()
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/health", live)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
