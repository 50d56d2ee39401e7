"""One learning for every worker, on the real broker and Redis: several workers feed one
learner through the model-updates topic and rank with its snapshots."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
import zlib
from pathlib import Path

import orjson
import pytest

from features import keys
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.process import Child, wait_for
from streams.models import LEARNER_CHECKPOINT, LearnerMeta
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    page,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from topics.models import Play
from topics.registry import ensure_topics


def watch(profile: str, title: str, ts: int) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts,
                title_id=title, action="progress", position_s=1000.0, duration_s=1200.0,
                country="US", device="tv")


def partition_of(profile: str, n: int) -> int:
    """The event-topic partition of a member (the player producer's librdkafka default
    partitioner: CRC32 of the key)."""
    return zlib.crc32(profile.encode()) % n


def members_of(partition: int, n_partitions: int, count: int, tag: str) -> list[str]:
    out, i = [], 0
    while len(out) < count:
        p = f"{tag}{i}"
        if partition_of(p, n_partitions) == partition:
            out.append(p)
        i += 1
    return out


def learner_meta(settings: Settings) -> LearnerMeta | None:
    raw = redis_client(settings).get(keys.checkpoint_key(settings.key_prefix,
                                                         LEARNER_CHECKPOINT))
    return None if raw is None else LearnerMeta.from_bytes(raw)


def start_learner(settings: Settings) -> Child:
    return Child.module("streams.learner", settings.to_env(), name="learner")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Two partitions (with two workers, each holds one), learning through the learner."""
    return settings.model_copy(update={"row_length": 5, "partitions": 2,
                                       "learner_mode": "topic",
                                       "model_snapshot_interval_s": 0.3,
                                       "model_reload_interval_s": 0.2})


def test_a_title_co_watched_on_one_worker_is_recommended_on_the_other(
        settings: Settings, tmp_path: Path) -> None:
    # Because You Watched ranks above Top Picks, so the page's de-duplication leaves the
    # co-watched title in that row (Top Picks learned it too, from the same members)
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps({"row_weights": {
        "continue_watching": 1.0, "because_you_watched": 2.0, "top_picks": 0.5}}))
    settings = settings.model_copy(update={"rules_file": str(rules)})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    learner = start_learner(settings)
    worker_a = WorkerProcess(settings)
    worker_b = None
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        worker_b = WorkerProcess(settings)
        watchers = members_of(0, 2, 6, "a")
        target = members_of(1, 2, 1, "b")[0]
        now = int(time.time() * 1000)
        # both workers are in the group once events of both partitions get applied after
        # the second one joined (its join makes the group rebalance: one partition each)
        time.sleep(settings.session_timeout_s)
        with PlayerProducer(settings) as producer:
            for i, p in enumerate(watchers):  # partition 0 only: t3, then t20
                producer.send(watch(p, "t3", now + i))
                producer.send(watch(p, "t20", now + 100 + i))
        wait_until(lambda: (learner_meta(settings) or LearnerMeta()).counters["watches"] >= 12,
                   60, what="the learner learned the co-watches")
        assert set(learner_meta(settings).hwm) <= {f"{settings.topic('player-events')}:0",
                                                   f"{settings.topic('impressions')}:0"}

        def recommended() -> bool:
            with PlayerProducer(settings) as producer:  # re-render the target's page
                producer.send(watch(target, "t3", int(time.time() * 1000)))
            time.sleep(0.3)
            got = page(settings, target) or {"rows": []}
            rows = {r["row_id"]: [i["title_id"] for i in r["items"]] for r in got["rows"]}
            return "t20" in rows.get("because-you-watched-t3", [])

        wait_until(recommended, 60, interval_s=0.5,
                   what=f"t20 in Because You Watched t3 for {target}")
        assert counters(settings).get("events_applied", 0) >= 13
    finally:
        for child in (worker_b, worker_a, learner):
            if child is not None:
                child.stop()


@pytest.mark.parametrize("standby", [False, True], ids=["restarted", "hot-standby"])
def test_a_learner_killed_mid_stream_learns_every_item_exactly_once(
        settings: Settings, standby: bool) -> None:
    """SIGKILL the learner mid-stream; then a new learner starts, or a standby replica that
    was waiting in the learner's group takes the partition over."""
    settings = settings.model_copy(update={"partitions": 4})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    learner = start_learner(settings)
    worker = WorkerProcess(settings)
    restarted = None
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        if standby:  # joins the group now; it takes the partition when the first one dies
            restarted = start_learner(settings)
            time.sleep(settings.session_timeout_s)
        base = int(time.time() * 1000)
        # 200 members watch 10 titles each: every event is a new watch (items to learn)
        events = [watch(f"p{i % 200}", f"t{i // 200}", base + i) for i in range(2000)]

        def produce(chunk: list[Play]) -> None:
            with PlayerProducer(settings, max_batch_events=5) as producer:
                for j in range(0, len(chunk), 50):
                    producer.send_many(chunk[j:j + 50])
                    producer.flush()
                    time.sleep(0.05)

        feeder = threading.Thread(target=produce, args=(events,))
        feeder.start()

        def learned() -> int:
            meta = learner_meta(settings)
            return 0 if meta is None else sum(
                meta.counters[k] for k in ("labels", "watches", "artwork", "rows"))

        wait_for(lambda: learned() >= 500, 60, "500 items learned before the kill",
                 watch=[learner, worker], detail=lambda: f"worker counters {counters(settings)}")
        learner.kill()  # SIGKILL: whatever it learned since its last snapshot is in memory
        # its last snapshot, read before a standby can take over and snapshot (after the
        # feeder, the standby may have learned everything already: the same version)
        before = learner_meta(settings)
        feeder.join()
        if not standby:
            restarted = start_learner(settings)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= 2000, 90,
                   interval_s=0.2, what="all events applied")
        sent = counters(settings)["learning_items"]
        wait_until(lambda: learned() >= sent, 90, interval_s=0.2,
                   what=f"{sent} items learned after the restart")
        time.sleep(2.0)  # anything learned twice would show up as extra items
        after = learner_meta(settings)
        assert learned() == sent == counters(settings)["learning_items"]
        assert after.version > before.version and after.counters["skipped"] == 0
    finally:
        for child in (worker, restarted, learner):
            if child is not None:
                child.stop()


def test_three_workers_one_killed_the_survivors_serve_with_the_shared_models(
        settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps({"row_weights": {
        "continue_watching": 1.0, "because_you_watched": 2.0, "top_picks": 0.5}}))
    settings = settings.model_copy(update={"partitions": 3, "rules_file": str(rules)})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    learner = start_learner(settings)
    workers = [WorkerProcess(settings)]
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        workers += [WorkerProcess(settings), WorkerProcess(settings)]
        time.sleep(settings.session_timeout_s)  # the group rebalances: one partition each
        now = int(time.time() * 1000)
        first = [m for part in range(3) for m in members_of(part, 3, 4, f"x{part}-")]
        with PlayerProducer(settings) as producer:
            for i, p in enumerate(first):  # every partition's members co-watch t3 and t20
                producer.send(watch(p, "t3", now + i))
                producer.send(watch(p, "t20", now + 100 + i))
        wait_until(lambda: (learner_meta(settings) or LearnerMeta()).counters["watches"] >= 24,
                   60, what="the learner learned every partition's co-watches")
        history = [learner_meta(settings)]
        workers[2].kill()  # SIGKILL: its partitions go to the two survivors
        later = [m for part in range(3) for m in members_of(part, 3, 4, f"y{part}-")]
        with PlayerProducer(settings) as producer:
            for i, p in enumerate(later):
                producer.send(watch(p, "t7", now + 1000 + i))
        total = 2 * len(first) + len(later)

        def all_applied() -> bool:
            history.append(learner_meta(settings))
            return counters(settings).get("events_applied", 0) >= total

        wait_until(all_applied, 120, interval_s=0.2, what="the survivors applied every event")
        sent = counters(settings)["learning_items"]

        def learned() -> int:
            history.append(learner_meta(settings))
            return sum(history[-1].counters[k] for k in ("labels", "watches", "rows"))

        wait_until(lambda: learned() >= sent, 60, what=f"{sent} items learned")
        # one learning: nothing any worker wrote erased another's (versions and counts grow)
        for a, b in itertools.pairwise(history):
            assert b.version >= a.version and b.counters["watches"] >= a.counters["watches"]
            assert b.counters["labels"] >= a.counters["labels"]
        assert learned() == sent and history[-1].counters["watches"] == 24 + len(later)
        # a member of every partition, served by the survivors, is ranked with it
        for part in range(3):
            member = members_of(part, 3, 1, f"z{part}-")[0]

            def recommended(member: str = member) -> bool:
                with PlayerProducer(settings) as producer:
                    producer.send(watch(member, "t3", int(time.time() * 1000)))
                time.sleep(0.3)
                got = page(settings, member) or {"rows": []}
                rows = {r["row_id"]: [i["title_id"] for i in r["items"]] for r in got["rows"]}
                return "t20" in rows.get("because-you-watched-t3", [])

            wait_until(recommended, 60, interval_s=0.5,
                       what=f"t20 in Because You Watched t3 for {member} (partition {part})")
        assert workers[0].alive() and workers[1].alive() and not workers[2].alive()
    finally:
        for child in (*workers, learner):
            child.stop()


def test_movielens_split_over_two_processors_keeps_recall_within_one_workers_interval(
) -> None:
    """The in-process MovieLens protocol on a slice (the first 4,000 ratings, chunks of 100):
    members split by partition over two processors sharing one learner reach a
    Recall@5-by-5 inside the 95% interval of one processor learning everything. (Here, not
    under tests/unit: it reads MovieLens-100K, fetched into the cache on first use.)"""
    from evaluation.movielens.data import fetch_ml100k, load_ml100k, to_catalog
    from evaluation.movielens.inprocess import InProcessPipeline
    from evaluation.movielens.protocol import chunks_of, evaluate

    ratings, items = load_ml100k(fetch_ml100k(None))
    titles = to_catalog(items)
    genres = {it.item: it.genres for it in items}
    chunks = chunks_of(ratings[:4000], 100)
    results = {}
    for workers in (1, 2):
        rec = InProcessPipeline(titles, Settings(partitions=2), workers=workers)
        try:
            results[workers] = evaluate(rec, chunks, catalog_size=len(titles),
                                        genres_of=genres.__getitem__).recall[5]
            if workers == 2:  # both processors served members, ranking with the snapshots
                assert all(p.model.n_learned > 0 for p in rec.processors)
                assert rec.learner is not None and rec.learner.models.meta.version > 1
        finally:
            rec.close()
    _, low, high = results[1]
    assert low <= results[2][0] <= high, results
