"""Session starts against a real broker, worker process and Redis: the member's stored page
is rendered again when the app opens, with what changed since (trends), and a malformed
session start is a dead letter with its reason."""

from __future__ import annotations

import time
import uuid

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
    read_topic,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Play, SessionStart
from topics.registry import ensure_topics, topic_specs


def start_play(profile: str, title: str, ts: int) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="start", position_s=0.0, duration_s=1200.0, country="US", device="tv")


def titles_of(got: dict, kind: str) -> list[str]:
    return [i["title_id"] for r in got["rows"] if r["kind"] == kind for i in r["items"]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short rows over a 30-title catalog; the newest event moves the stream clock (a quorum
    of 1); a render window, which a session start does not wait for."""
    return settings.model_copy(update={"row_length": 5, "clock_quorum": 1,
                                       "render_window_ms": 30_000.0})


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


def test_a_session_start_renders_the_stored_page_with_the_trends_of_now(
        settings: Settings, running: WorkerProcess) -> None:
    now = int(time.time() * 1000) - 60_000
    with PlayerProducer(settings) as producer:
        producer.send(start_play("dana", "t1", now))
    before = wait_until(lambda: page(settings, "dana"), 30, what="dana's first page")
    assert titles_of(before, "trending") == []  # nothing trends but what dana played

    # others play t5 and t8 since: the trends change, dana's stored page does not
    with PlayerProducer(settings) as producer:
        for i, who in enumerate(["erin", "fred", "gus"]):
            producer.send(start_play(who, "t5", now + 10 + i))
            producer.send(start_play(who, "t8", now + 20 + i))
    wait_until(lambda: all(page(settings, p) for p in ("erin", "fred", "gus")), 30,
               what="the others' pages")
    stale = page(settings, "dana")
    assert stale is not None and stale["generated_at_ms"] == before["generated_at_ms"]

    opened = now + 1_000
    with PlayerProducer(settings) as producer:
        producer.send(SessionStart(event_id="dana-open-1", profile_id="dana",
                                   event_ts_ms=opened, device="tv", country="US"))
    fresh = wait_until(lambda: (p := page(settings, "dana")) and
                       p["as_of_event_ts_ms"] == opened and p, 20,
                       what="dana's page rendered at session start")
    assert fresh["generated_at_ms"] > before["generated_at_ms"]
    assert fresh["personalized"]
    shown = {i["title_id"] for r in fresh["rows"] for i in r["items"]}
    assert {"t5", "t8"} <= shown  # what trends now reaches the page
    assert not {"t5", "t8"} & {i["title_id"] for r in before["rows"] for i in r["items"]}
    assert counters(settings)["events_applied"] == 8


def test_a_malformed_session_start_is_a_dead_letter_with_its_reason(
        settings: Settings, running: WorkerProcess) -> None:
    codec = default_codec()
    topic = topic_specs(settings)["player_events"].name
    bad = {"event_id": "s-bad", "profile_id": "hank", "event_ts_ms": int(time.time()),
           "device": "tv", "country": "USA", "app_version": ""}  # seconds; not a country code
    value = codec.encode("homestream.SessionStart", bad)
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(topic, key=b"hank", value=value)
    raw.flush(10)
    with PlayerProducer(settings) as producer:  # the stream goes on
        producer.send(start_play("hank", "t3", int(time.time() * 1000)))
    wait_until(lambda: page(settings, "hank"), 30, what="hank's page")
    letters = read_topic(settings, topic_specs(settings)["dead_letter"].name, expect=1)
    decoded = [codec.decode_dead_letter(m.value()) for m in letters]
    assert len(decoded) == 1
    letter = decoded[0]
    assert letter.error_type == "ValidationError" and letter.event_id == "s-bad"
    assert "SessionStart" in letter.reason
    assert "event_ts_ms" in letter.reason and "country" in letter.reason
    assert letter.value == value and letter.source_topic == topic
    assert counters(settings)["dead_letters"] == 1
