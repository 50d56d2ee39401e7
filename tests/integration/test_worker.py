"""The worker against a real broker and Redis: pages, dead letters, crash and restart."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    page,
    profile_state,
    read_topic,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Play
from topics.registry import ensure_topics, topic_specs


def play(profile: str, title: str, ts: int, position: float, action: str = "progress") -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action=action, position_s=position, duration_s=1200.0, country="US",
                device="tv")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short rows, so a 30-title catalog fills several rows; the newest event moves the
    stream clock (a quorum of 1: these tests have two or three members), so trending weighs
    each play by its own event time."""
    return settings.model_copy(update={"row_length": 5, "clock_quorum": 1})


@pytest.fixture
def running(settings: Settings):
    """Topics, a 30-title catalog and one worker that has loaded it."""
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    worker = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        yield worker
    finally:
        worker.stop()


def test_play_event_materializes_the_page(settings: Settings, running: WorkerProcess) -> None:
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        producer.send(play("carol", "t7", now - 10, 100.0, "start"))
    wait_until(lambda: page(settings, "carol"), 20, what="carol's page")
    with PlayerProducer(settings) as producer:
        producer.send(play("alice", "t4", now, 300.0, "start"))
        producer.send(play("alice", "t1", now + 1, 900.0))
    got = wait_until(lambda: page(settings, "alice"), 20, what="alice's page")
    rows = {r["row_id"]: [i["title_id"] for i in r["items"]] for r in got["rows"]}
    # both titles are in progress (below 95%), the most recent first
    assert rows["continue-watching"] == ["t1", "t4"]
    assert {"top-picks", "new-releases"} <= set(rows)
    # play starts trend in the US, forward-decayed: the newest weighs most
    assert not {"t1", "t4"} & set(rows["top-picks"])  # already engaged: not a pick
    trending = redis_client(settings).keys(f"{settings.key_prefix}trending:US:*")
    assert len(trending) == 1
    assert redis_client(settings).zrevrange(trending[0], 0, -1) == [b"t1", b"t4", b"t7"]
    # t1 and t4 are Horror titles (make_titles cycles genres): the first recommendation
    # row after Continue Watching leads with Horror
    second = got["rows"][1]["items"][:3]
    assert all(int(i["title_id"][1:]) % 3 == 1 for i in second), second
    all_ids = [t for ids in rows.values() for t in ids]
    assert len(all_ids) == len(set(all_ids)), "a title appears twice on the page"
    state = profile_state(settings, "alice")
    assert state["engaged"] == {"t4": 1, "t1": 2}  # click vs watch


def test_invalid_events_go_to_dead_letters_and_processing_continues(
        settings: Settings, running: WorkerProcess) -> None:
    codec = default_codec()
    topic = topic_specs(settings)["player_events"].name
    bad_record = play("bob", "t2", int(time.time() * 1000), 10.0).model_dump()
    bad_record["position_s"] = -5.0  # schema-valid Avro, semantically invalid
    from confluent_kafka import Producer

    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(topic, key=b"bob", value=b"not avro at all")
    raw.produce(topic, key=b"bob", value=codec.encode("homestream.Play", bad_record))
    raw.flush(10)
    bob_ts = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        producer.send(play("bob", "t2", bob_ts, 60.0, "start"))
    got = wait_until(lambda: page(settings, "bob"), 20, what="bob's page")
    assert got["rows"][0]["items"][0]["title_id"] == "t2"
    letters = read_topic(settings, topic_specs(settings)["dead_letter"].name, expect=2)
    decoded = [codec.decode_dead_letter(m.value()) for m in letters]
    reasons = sorted(d.reason for d in decoded)
    assert len(decoded) == 2
    assert "single-object" in reasons[1]
    assert "position_s" in reasons[0]
    assert {d.value for d in decoded} == {b"not avro at all",
                                          codec.encode("homestream.Play", bad_record)}
    assert all(d.source_topic == topic for d in decoded)
    assert counters(settings)["dead_letters"] == 2

    # an event later than the allowed lateness behind bob's newest one: its dead letter names
    # the message it came in (topic, partition, offset) and holds that message's bytes
    late_value = codec.encode_event(play("bob", "t3", bob_ts - 7 * 3600 * 1000, 10.0))
    delivered: list = []
    raw.produce(topic, key=b"bob", value=late_value,
                on_delivery=lambda err, m: delivered.append((err, m)))
    raw.flush(10)
    [(err, sent)] = delivered
    assert err is None
    letters = read_topic(settings, topic_specs(settings)["dead_letter"].name, expect=3)
    late = [d for d in map(codec.decode_dead_letter, (m.value() for m in letters))
            if d.error_type == "LateEvent"]
    assert len(late) == 1, late
    assert (late[0].source_topic, late[0].partition, late[0].offset) == (
        topic, sent.partition(), sent.offset())
    assert late[0].value == late_value and late[0].key == b"bob"
    assert counters(settings)["late_dropped"] == 1


def test_worker_crash_mid_stream_loses_nothing_and_applies_nothing_twice(
        settings: Settings, running: WorkerProcess) -> None:
    profiles = [f"p{i}" for i in range(40)]
    total = 3000
    sent: dict[str, int] = dict.fromkeys(profiles, 0)
    events = []
    base = int(time.time() * 1000)
    for i in range(total):
        p = profiles[i % len(profiles)]
        sent[p] += 1
        events.append(play(p, f"t{i % 30}", base + i, float(i % 1200)))

    def produce(chunk: list[Play], pause_s: float) -> None:
        with PlayerProducer(settings, max_batch_events=5) as producer:
            for j in range(0, len(chunk), 50):
                producer.send_many(chunk[j:j + 50])
                producer.flush()
                time.sleep(pause_s)

    feeder = threading.Thread(target=produce, args=(events[:2000], 0.02))
    feeder.start()
    wait_until(lambda: counters(settings).get("events_applied", 0) >= 500, 30,
               what="500 events applied before the crash")
    running.kill()  # mid-stream: the feeder is still producing
    feeder.join()
    applied_before = counters(settings)["events_applied"]
    assert applied_before < 2000, "the crash should happen mid-stream"
    # players retry: 200 events are sent a second time with the same ids
    produce(events[2000:] + events[:200], 0.0)
    restarted = WorkerProcess(settings)
    try:
        wait_until(lambda: counters(settings).get("events_applied", 0) >= total, 90,
                   interval_s=0.2, what=f"all {total} events applied after restart")
        time.sleep(2.0)  # anything replayed late would show up as extra applications
        stats = counters(settings)
        assert stats["events_applied"] == total
        assert stats["duplicates"] >= 200
        for p in profiles:
            assert profile_state(settings, p)["n_events"] == sent[p], p
    finally:
        restarted.stop()
