"""Schema evolution on the real broker and Redis: players on Play v1 and v2 write to the same
topic and the worker applies both; a consumer on PageUpdate v1 reads the pages the worker
writes with v2."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

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
    wait_for_catalog,
    wait_until,
)
from topics.codec import AvroCodec, default_codec
from topics.models import Play, Profile
from topics.registry import ensure_topics, topic_specs


def play(profile: str, title: str, ts: int, **extra: object) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="start", position_s=300.0, duration_s=1200.0, country="US",
                device="tv", **extra)


def as_v1(event: Play) -> dict:
    """The record a player still on Play v1 writes (it has no ``app_version``)."""
    record = event.model_dump()
    del record["app_version"]
    return record


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    proc = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        yield proc
    finally:
        proc.stop()


def test_players_on_play_v1_and_v2_reach_the_same_page(settings: Settings,
                                                       worker: WorkerProcess) -> None:
    codec = default_codec()
    play_v1 = codec.history["homestream.Play"][0]
    batch_v1 = codec.history["homestream.EventBatch"][0]
    now = int(time.time() * 1000)
    old_single = play("dana", "t4", now - 30)
    old_batched = play("dana", "t7", now - 20)
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    topic = topic_specs(settings)["player_events"].name
    raw.produce(topic, key=b"dana", value=codec.encode_version(play_v1, as_v1(old_single)))
    raw.produce(topic, key=b"dana", value=codec.encode_version(
        batch_v1, {"profile_id": "dana", "events": [("homestream.Play", as_v1(old_batched))]}))
    assert raw.flush(10) == 0
    with PlayerProducer(settings) as producer:  # the current player: Play v2
        producer.send(play("dana", "t1", now - 10, app_version="7.3.0"))

    def applied() -> dict | None:
        state = profile_state(settings, "dana")
        return state if state and len(state["engaged"]) == 3 else None

    state = wait_until(applied, 30, what="all three plays in dana's state")
    assert set(state["engaged"]) == {"t1", "t4", "t7"}
    got = wait_until(lambda: (p := page(settings, "dana")) and
                     len(p["rows"][0]["items"]) == 3 and p, 20, what="dana's page")
    assert got["rows"][0]["row_id"] == "continue-watching"
    assert [i["title_id"] for i in got["rows"][0]["items"]] == ["t1", "t7", "t4"]
    assert counters(settings).get("dead_letters", 0) == 0, worker.tail()


def test_a_consumer_on_page_update_v1_reads_pages_written_with_v2(
        settings: Settings, worker: WorkerProcess) -> None:
    codec = default_codec()
    now = int(time.time() * 1000)
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(topic_specs(settings)["profiles"].name, key=b"kit",
                value=codec.encode_model(Profile(profile_id="kit", kids=True)))
    assert raw.flush(10) == 0
    with PlayerProducer(settings) as producer:
        producer.send(play("kit", "t3", now))
    wait_until(lambda: (p := page(settings, "kit")) and p["kids"], 30, what="kit's kids page")

    updates = read_topic(settings, topic_specs(settings)["page_updates"].name, expect=1)
    written = [m.value() for m in updates if m.key() == b"kit"]
    assert written, "no page update for kit"
    current = codec.history["homestream.PageUpdate"][-1]
    assert {v[2:10] for v in written} == {current.fingerprint}  # the worker writes v2
    assert any(codec.decode(v)[1]["kids"] for v in written)

    old_consumer = AvroCodec(reader_versions={"homestream.PageUpdate": 1})
    pages = [old_consumer.decode(v) for v in written]
    assert {name for name, _ in pages} == {"homestream.PageUpdate"}
    v1_fields = {f["name"] for f in codec.history["homestream.PageUpdate"][0].schema["fields"]}
    for _, record in pages:
        assert set(record) == v1_fields  # exactly the fields its code was written for
        assert record["profile_id"] == "kit" and record["country"]
    assert any(r["rows"] and r["rows"][0]["items"] for _, r in pages)
