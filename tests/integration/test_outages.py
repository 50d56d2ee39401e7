"""The worker through Redis and broker outages, on a real broker and a Redis of the test's own.

- Redis stopped (SIGTERM, its append-only file kept) for 10 s and started again on the same
  port while events keep coming, then hung (SIGSTOP) for a few seconds and resumed: the worker
  pauses, retries with backoff, resumes and applies every event exactly once; stopped while
  Redis is down, it holds its batch until killed, and the next worker applies it once.
- Redis restarted with an empty dataset: the worker writes its catalog back and reads the
  members' settings back from the profiles topic (a kids profile stays one), checkpoints its
  models again, the default pages come back at once and a member's page with their next event.
- The learner (``HOMESTREAM_LEARNER_MODE=topic``) through Redis stopped for 10 s while workers
  send it their learning: it keeps learning, retries its snapshot with backoff and writes it
  when Redis is back; stopped during an outage, it exits without its last snapshot and the
  next learner, started while Redis is still down, waits for it to restore. Every model
  update is learned exactly once (the learner's item counts against the workers' count).
- The broker hung (SIGSTOP) for 10 s and resumed (Tansu keeps its topics in memory only: a
  stopped Tansu loses them, so a pause is the outage that can be tested without data loss):
  the worker reconnects by itself and applies every event once.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from redis import Redis
from redis.exceptions import BusyLoadingError

from features import keys
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.local import redis_binary, start_tansu
from homestream.stack.process import Child, free_port, wait_for_port
from streams.models import LEARNER_CHECKPOINT, MODEL_CHECKPOINT, LearnerMeta
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    page,
    profile_state,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Play, Profile
from topics.registry import ensure_topics, topic_specs

PROFILES = [f"o{i}" for i in range(30)]


class OwnRedis:
    """A redis-server the test may stop, hang and start again on the same port and folder
    (``persist``: an append-only file, fsynced on every write, so a restart keeps the data)."""

    def __init__(self, persist: bool) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="homestream-outage-redis-"))
        self.persist = persist
        self.child: Child | None = None
        self.start()

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else [
            "--appendonly", "no"]
        self.child = Child([redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                            "--save", "", *aof, "--dir", str(self.dir)], name="redis",
                           log_path=self.dir / f"redis-{time.time_ns()}.log", cwd=self.dir)
        wait_for_port(self.port, 15.0, self.child)
        wait_until(self._loaded, 15.0, what="Redis to load its append-only file")

    def _loaded(self) -> bool:
        try:
            return bool(Redis(port=self.port).ping())
        except BusyLoadingError:
            return False

    def stop(self) -> None:
        if self.child is not None:
            self.resume()
            self.child.stop(10.0)

    def hang(self) -> None:
        os.kill(self.child.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.child is not None and self.child.alive():
            os.kill(self.child.pid, signal.SIGCONT)


@pytest.fixture
def persistent_redis(settings: Settings) -> Iterator[tuple[Settings, OwnRedis]]:
    redis = OwnRedis(persist=True)
    try:
        yield settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0",
                                          "clock_quorum": 1}), redis
    finally:
        redis.stop()


def plays(n: int, base_ms: int) -> tuple[list[Play], dict[str, int]]:
    """``n`` progress events spread over :data:`PROFILES`, and how many each profile got."""
    sent = dict.fromkeys(PROFILES, 0)
    out = []
    for i in range(n):
        p = PROFILES[i % len(PROFILES)]
        sent[p] += 1
        out.append(Play(event_id=uuid.uuid4().hex, profile_id=p, event_ts_ms=base_ms + i,
                        title_id=f"t{i % 30}", action="progress", position_s=float(i % 1200),
                        duration_s=1200.0, country="US", device="tv"))
    return out, sent


def play_start(profile: str, title: str, ts: int) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="start", position_s=0.0, duration_s=1200.0, country="US", device="tv")


def feed(settings: Settings, events: list[Play], pause_s: float) -> threading.Thread:
    """Produce ``events`` in chunks of 50 from a thread (started), pausing between chunks."""

    def run() -> None:
        with PlayerProducer(settings, max_batch_events=5) as producer:
            for j in range(0, len(events), 50):
                producer.send_many(events[j:j + 50])
                producer.flush()
                time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def assert_applied_once(settings: Settings, total: int, sent: dict[str, int],
                        timeout_s: float) -> None:
    """Every event applied, none twice: the counter and each member's event count."""
    wait_until(lambda: counters(settings).get("events_applied", 0) >= total, timeout_s,
               interval_s=0.2, what=f"all {total} events applied")
    time.sleep(1.5)  # anything applied twice would show up now
    assert counters(settings)["events_applied"] == total
    for p in PROFILES:
        assert profile_state(settings, p)["n_events"] == sent[p], p


def start_worker(settings: Settings, n_titles: int = 30) -> WorkerProcess:
    ensure_topics(settings)
    publish_catalog(settings, make_titles(n_titles))
    worker = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, n_titles, timeout_s=60)
    except BaseException:
        worker.stop()
        raise
    return worker


def test_worker_rides_out_a_redis_restart_and_a_hang_applying_every_event_once(
        persistent_redis: tuple[Settings, OwnRedis]) -> None:
    settings, redis = persistent_redis
    worker = start_worker(settings)
    try:
        first, sent = plays(1600, int(time.time() * 1000))
        feeder = feed(settings, first[:1500], 0.03)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= 200, 30,
                   what="200 events applied before Redis stops")
        redis.stop()  # mid-stream: the feeder is still producing
        stopped = time.monotonic()
        feeder.join()
        feed(settings, first[1500:], 0.0).join()  # and some more while Redis is down
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))
        assert worker.alive(), worker.tail()
        redis.start()
        assert_applied_once(settings, 1600, sent, 60)
        log = worker.log_path.read_text(errors="replace")
        assert "event batch: store unreachable" in log  # a batch was cut short and retried
        assert "store reachable again" in log

        second, sent2 = plays(600, int(time.time() * 1000))
        feeder = feed(settings, second, 0.03)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= 1700, 30,
                   what="events applied before Redis hangs")
        redis.hang()
        time.sleep(3.0)
        redis.resume()
        feeder.join()
        total = {p: sent[p] + sent2[p] for p in PROFILES}
        assert_applied_once(settings, 2200, total, 60)
        assert worker.alive(), worker.tail()

        # stopped while Redis is down, the worker holds its batch (Faust would acknowledge a
        # batch given up) until it is killed; the next worker applies the batch once
        redis.stop()
        last, sent3 = plays(30, int(time.time() * 1000))
        feed(settings, last, 0.0).join()
        wait_until(lambda: worker.log_path.read_text(errors="replace").count(
            "event batch: store unreachable") >= 2, 20, what="a batch waiting out the outage")
        worker.stop(timeout_s=3.0)  # SIGTERM, then SIGKILL
        redis.start()
        worker = WorkerProcess(settings)
        assert_applied_once(settings, 2230, {p: total[p] + sent3[p] for p in PROFILES}, 60)
    finally:
        worker.stop()


def items_learned(settings: Settings) -> int:
    """Model-update items the learner's last snapshot holds (0 before its first)."""
    raw = redis_client(settings).get(keys.checkpoint_key(settings.key_prefix,
                                                         LEARNER_CHECKPOINT))
    meta = LearnerMeta() if raw is None else LearnerMeta.from_bytes(raw)
    return sum(meta.counters[k] for k in ("labels", "watches", "artwork", "rows"))


def test_the_learner_rides_out_redis_stopped_learning_every_update_once(
        persistent_redis: tuple[Settings, OwnRedis]) -> None:
    settings, redis = persistent_redis
    settings = settings.model_copy(update={"learner_mode": "topic",
                                           "model_snapshot_interval_s": 0.3,
                                           "model_reload_interval_s": 0.2})
    ensure_topics(settings)
    learner = Child.module("streams.learner", settings.to_env(), name="learner")
    worker = start_worker(settings)
    try:
        first, _ = plays(1200, int(time.time() * 1000))
        feeder = feed(settings, first, 0.05)
        wait_until(lambda: items_learned(settings) >= 100, 60, what="100 items learned")
        redis.stop()  # mid-stream: the learner holds learning the snapshot cannot store
        stopped = time.monotonic()
        feeder.join()
        time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))
        assert learner.alive(), learner.tail()
        redis.start()
        wait_until(lambda: counters(settings).get("events_applied", 0) >= 1200, 60,
                   interval_s=0.2, what="all 1200 events applied")
        sent = counters(settings)["learning_items"]
        wait_until(lambda: items_learned(settings) >= sent, 60, interval_s=0.2,
                   what=f"{sent} items learned")
        assert "learner snapshot: store unreachable" in learner.log_path.read_text(
            errors="replace")
        wait_until(lambda: "learner snapshot: store reachable again" in learner.log_path
                   .read_text(errors="replace"), 10, what="the learner's recovery logged")

        # stopped during an outage, the learner leaves without its last snapshot; the next
        # one, started while Redis is still down, waits for Redis to restore from it
        base = int(time.time() * 1000)  # each member watches ten titles new to them
        second = [Play(event_id=uuid.uuid4().hex, profile_id=PROFILES[i % 30],
                       event_ts_ms=base + i, title_id=f"t{(i % 30 + 1 + i // 30) % 30}",
                       action="progress", position_s=1000.0, duration_s=1200.0,
                       country="US", device="tv") for i in range(300)]
        feed(settings, second[:200], 0.0).join()
        wait_until(lambda: items_learned(settings) > sent, 30, what="new items learned")
        redis.stop()
        feed(settings, second[200:], 0.0).join()
        learner.stop()
        assert "without its last snapshot" in learner.log_path.read_text(errors="replace")
        learner = Child.module("streams.learner", settings.to_env(), name="learner")
        wait_until(lambda: "learner restore: store unreachable" in learner.log_path.read_text(
            errors="replace"), 30, what="the new learner waiting for Redis to restore")
        assert learner.alive(), learner.tail()
        redis.start()
        wait_until(lambda: counters(settings).get("events_applied", 0) >= 1500, 60,
                   interval_s=0.2, what="all 1500 events applied")
        total = counters(settings)["learning_items"]
        wait_until(lambda: items_learned(settings) >= total, 60, interval_s=0.2,
                   what=f"{total} items learned")
        time.sleep(2.0)  # anything learned twice would show up now
        assert items_learned(settings) == total == counters(settings)["learning_items"]
        assert learner.alive() and worker.alive(), learner.tail() + worker.tail()
    finally:
        worker.stop()
        learner.stop()


def test_redis_restarted_empty_the_worker_rebuilds_catalog_settings_and_pages(
        settings: Settings) -> None:
    redis = OwnRedis(persist=False)
    settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0",
                                           "clock_quorum": 1})
    try:
        worker = start_worker(settings)
    except BaseException:
        redis.stop()
        raise
    r = redis_client(settings)
    try:
        raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
        raw.produce(topic_specs(settings)["profiles"].name, key=b"ann",
                    value=default_codec().encode_model(Profile(profile_id="ann", kids=True)))
        raw.flush(10)
        meta_key = keys.profile_meta_key(settings.key_prefix, "ann")
        wait_until(lambda: r.exists(meta_key), 20, what="ann's settings in Redis")
        now = int(time.time() * 1000)
        with PlayerProducer(settings) as producer:
            producer.send(play_start("ann", "t3", now))
        wait_until(lambda: page(settings, "ann"), 20, what="ann's page")
        default_key = keys.default_page_key(settings.key_prefix, "US")
        wait_until(lambda: r.exists(default_key), 20, what="the default page")
        redis.stop()
        time.sleep(3.0)
        redis.start()  # an empty dataset
        catalog = keys.catalog_key(settings.key_prefix)
        wait_until(lambda: r.hlen(catalog) == 30, 20, what="the catalog written back")
        wait_until(lambda: r.exists(meta_key), 20,
                   what="ann's settings read back from the profiles topic")
        wait_until(lambda: r.exists(default_key), 20, what="the default page back")
        model = keys.checkpoint_key(settings.key_prefix, MODEL_CHECKPOINT)
        wait_until(lambda: r.exists(model), 20, what="the models checkpointed again")
        assert page(settings, "ann") is None  # lost until ann's next event
        with PlayerProducer(settings) as producer:
            producer.send(play_start("ann", "t6", now + 1000))
        got = wait_until(lambda: page(settings, "ann"), 20, what="ann's page back")
        assert got["kids"]  # still a kids profile: her settings were rebuilt
        rows = {row["row_id"]: [i["title_id"] for i in row["items"]] for row in got["rows"]}
        assert rows["continue-watching"] == ["t6"]  # her history before the restart is lost
        assert profile_state(settings, "ann")["n_events"] == 1
        assert worker.alive(), worker.tail()
    finally:
        worker.stop()
        redis.stop()


def test_worker_reconnects_after_the_broker_hangs_and_applies_every_event_once(
        settings: Settings) -> None:
    broker = start_tansu()
    settings = settings.model_copy(update={
        "bootstrap_servers": f"127.0.0.1:{broker.port}", "clock_quorum": 1})
    try:
        worker = start_worker(settings)
        try:
            events, sent = plays(1500, int(time.time() * 1000))
            feeder = feed(settings, events, 0.05)  # keeps producing through the hang
            wait_until(lambda: counters(settings).get("events_applied", 0) >= 100, 30,
                       what="events applied before the broker hangs")
            os.kill(broker.proc.pid, signal.SIGSTOP)
            time.sleep(10.0)
            os.kill(broker.proc.pid, signal.SIGCONT)
            feeder.join()
            assert_applied_once(settings, 1500, sent, 60)
            assert worker.alive(), worker.tail()
        finally:
            worker.stop()
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
        broker.stop()
