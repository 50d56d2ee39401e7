"""streams.health's readiness rules without a broker: what counts as the worker's share of
partitions, and how a failed dependency is named (the real worker and learner answer in
tests/integration/test_health.py)."""

from __future__ import annotations

from collections import namedtuple

from features.store import InMemoryStore
from streams.health import LearnerHealth, WorkerHealth

TP = namedtuple("TP", "topic partition")


def not_started() -> list[TP]:
    raise RuntimeError("consumer not started")


async def test_a_worker_without_event_partitions_or_consumer_is_not_ready() -> None:
    store = InMemoryStore()
    for assignment, why in ((not_started, "consumer not running"),
                            (lambda: [TP("catalog", 0)],
                             "no partition of the event topics assigned")):
        ready, body = await WorkerHealth(assignment, store, ["events"]).readiness()
        assert not ready and body["failed"] == ["consumer"] and body["consumer"] == why
    ready, body = await WorkerHealth(lambda: [TP("events", 1), TP("catalog", 0)], store,
                                     ["events"]).readiness()
    assert ready and body["partitions"] == ["events:1"] and body["redis"] == "ok"


async def test_the_last_batch_age_counts_from_the_last_batch() -> None:
    now = [100.0]
    health = WorkerHealth(lambda: [], InMemoryStore(), ["events"], clock=lambda: now[0])
    assert health.liveness()["last_batch_age_s"] is None
    health.batch_done()
    now[0] = 102.5
    assert health.liveness() == {"status": "ok", "batches": 1, "last_batch_age_s": 2.5}


async def test_a_standby_learner_is_ready_and_a_joining_one_is_not() -> None:
    health = LearnerHealth(InMemoryStore())
    ready, body = await health.readiness()
    assert not ready and body["role"] == "joining" and body["failed"] == ["consumer"]
    health.assigned([])
    ready, body = await health.readiness()
    assert ready and body["role"] == "standby"
