"""The learner through a Redis outage, without a broker: snapshots retried with backoff while
learning goes on, a snapshot whose reply was lost recognized as the learner's own, restores
that wait for Redis, and each model update learned once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.learner import Learner, SnapshotFenced, SnapshotTimer
from streams.learning import RecordBuilder
from streams.outage import Backoff, OutageStats
from topics.codec import default_codec

codec = default_codec()
SETTINGS = Settings(outage_retry_initial_s=0.001, outage_retry_max_s=0.004)


class FlakyStore(InMemoryStore):
    """An in-memory store whose Redis is away for the next ``failures`` calls to
    ``save_snapshot`` (``applied``: the write ran and only its reply was lost) and
    ``load_checkpoints``."""

    def __init__(self) -> None:
        super().__init__()
        self.save_failures = self.load_failures = 0
        self.applied = False

    async def save_snapshot(self, blobs: Any, version: int, covered_offset: int,
                            similar: Any) -> bool:
        if self.save_failures:
            self.save_failures -= 1
            if self.applied:
                await super().save_snapshot(blobs, version, covered_offset, similar)
            raise RedisConnectionError("Connection refused")
        return await super().save_snapshot(blobs, version, covered_offset, similar)

    async def load_checkpoints(self, names: Any) -> Any:
        if self.load_failures:
            self.load_failures -= 1
            raise RedisConnectionError("Connection refused")
        return await super().load_checkpoints(names)


def update(offset: int, profile: str, title: str) -> bytes:
    """A model-updates message: one co-watch update and one Top Picks label."""
    b = RecordBuilder()
    b.watch("events", 0, offset, ["t0"], title)
    b.label("events", 0, offset, profile, title, 1.0)
    return codec.encode("homestream.ModelUpdate", b.build().to_avro())


@pytest.mark.parametrize("applied", [False, True], ids=["not-written", "reply-lost"])
async def test_a_snapshot_cut_short_by_an_outage_is_written_once_redis_answers(
        applied: bool) -> None:
    store = FlakyStore()
    learner = Learner(SETTINGS, store)
    learner.learn(0, update(0, "p1", "t1"))
    store.save_failures, store.applied = 2, applied
    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            await learner.snapshot()
    learner.learn(1, update(1, "p2", "t2"))  # learning goes on during the outage
    assert await learner.snapshot()
    assert store.snapshot_covered == 1 and learner.saved_offset == 1
    restarted = Learner(SETTINGS, store)
    assert await restarted.restore() == 2
    assert restarted.models.meta.counters["watches"] == 2  # each update learned once
    assert restarted.models.meta.counters["labels"] == 2


async def test_a_lost_reply_is_not_taken_for_a_newer_learner() -> None:
    store = FlakyStore()
    learner = Learner(SETTINGS, store)
    learner.learn(0, update(0, "p1", "t1"))
    store.save_failures, store.applied = 1, True  # written, reply lost, nothing new since
    with pytest.raises(RedisConnectionError):
        await learner.snapshot()
    assert await learner.snapshot()  # refused as a duplicate, recognized as its own
    assert learner.saved_offset == 0
    assert not await learner.snapshot()  # nothing new
    # a newer learner's snapshot still fences this one
    newer = Learner(SETTINGS, store)
    await newer.restore()
    newer.learn(1, update(1, "p2", "t2"))
    assert await newer.snapshot()
    learner.learn(1, update(1, "p2", "t2"))
    with pytest.raises(SnapshotFenced):
        await learner.snapshot()


async def test_a_restore_waits_for_redis() -> None:
    store = FlakyStore()
    first = Learner(SETTINGS, store)
    first.learn(0, update(0, "p1", "t1"))
    assert await first.snapshot()
    store.load_failures = 3
    learner = Learner(SETTINGS, store)
    assert await asyncio.wait_for(learner.restore(), 5.0) == 1
    assert learner.models.meta.counters["watches"] == 1
    assert learner.outage_stats.outages == 1 and learner.outage_stats.retries == 3


def test_the_snapshot_timer_backs_off_during_an_outage_and_resumes_its_interval() -> None:
    now = [100.0]
    stats = OutageStats()
    timer = SnapshotTimer(1.0, Backoff(0.1, 0.4), stats, clock=lambda: now[0])
    assert not timer.due()
    now[0] = 101.0
    assert timer.due()
    waits = []
    for _ in range(4):
        timer.failed(RedisConnectionError("down"))
        waits.append(round(timer.next_at - now[0], 3))
        now[0] = timer.next_at
    assert waits == [0.1, 0.2, 0.4, 0.4]
    assert (stats.outages, stats.retries) == (1, 4)
    timer.done()
    assert timer.next_at == now[0] + 1.0 and timer.failures == 0
    assert stats.paused_s == pytest.approx(1.1)
