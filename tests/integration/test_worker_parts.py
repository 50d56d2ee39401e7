"""A worker whose micro-batches exceed ``HOMESTREAM_BATCH_MAX_BYTES`` applies them in parts:
on the real broker and Redis, every event of a backlog is applied exactly once."""

from __future__ import annotations

import json
import time
import uuid

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    profile_state,
    wait_for_catalog,
    wait_until,
)
from topics.models import Play
from topics.registry import ensure_topics


def test_a_backlog_applied_in_parts_of_bounded_bytes_loses_and_repeats_nothing(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"batch_max_bytes": 2048, "clock_quorum": 1,
                                           "worker_memory_log_s": 0.5})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    profiles = [f"p{i}" for i in range(20)]
    base, total = int(time.time() * 1000) - 60_000, 2000
    with PlayerProducer(settings, max_batch_events=20) as producer:  # ~1-2 kB messages
        for i in range(total):
            producer.send(Play(event_id=uuid.uuid4().hex, profile_id=profiles[i % 20],
                               event_ts_ms=base + i, title_id=f"t{i % 30}",
                               action="progress", position_s=float(i % 1200),
                               duration_s=1200.0, country="US", device="tv"))
    worker = WorkerProcess(settings)  # the backlog is there before it starts: full batches
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= total, 120,
                   interval_s=0.2, what=f"all {total} events applied")
        time.sleep(1.5)  # a part applied twice would show up as extra applications
        stats = counters(settings)
        assert stats["events_applied"] == total and not stats.get("dead_letters")
        for p in profiles:
            assert profile_state(settings, p)["n_events"] == total // 20, p
        largest = max(_batch_bytes(worker.log_path.read_text()))
        assert largest > 2 * 2048  # the worker collected batches larger than the bound
    finally:
        worker.stop()


def _batch_bytes(log: str) -> list[int]:
    """The largest batch's bytes of each of the worker's memory log lines."""
    return [json.loads(line.split("worker memory ", 1)[1])["batches"]["max_bytes"]
            for line in log.splitlines() if "worker memory " in line]
