"""A poisoned event on the real broker and Redis: a worker whose feature step raises for one
title (a bug met by one odd event) dead-letters those events with the exception as reason,
applies every other event of their batch once, and keeps going."""

from __future__ import annotations

import sys
import time
import uuid

import pytest

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.process import Child
from tests.integration.helpers import (
    counters,
    make_titles,
    profile_state,
    read_topic,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Play
from topics.registry import ensure_topics, topic_specs

POISONED = "t13"
MEMBERS = [f"pz{i}" for i in range(12)]

#: The worker, with the pure feature step raising for one title (patched in its process).
WORKER = f"""
import sys
import streams.processor as processor
real = processor.apply_event
def apply_event(state, event, *args, **kwargs):
    if getattr(event, "title_id", None) == {POISONED!r}:
        raise ZeroDivisionError("features cannot take title {POISONED}")
    return real(state, event, *args, **kwargs)
processor.apply_event = apply_event
from streams.worker import main
sys.exit(main())
"""


def play(profile: str, title: str, ts: int) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=300.0, duration_s=1200.0, country="US")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # batches of up to a second: the events produced together meet in one batch
    return settings.model_copy(update={"row_length": 5, "batch_within_s": 1.0})


def test_a_poisoned_event_is_dead_lettered_and_the_rest_of_its_batch_applied_once(
        settings: Settings) -> None:
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    worker = Child([sys.executable, "-c", WORKER], name="worker", env=settings.to_env())
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        now = int(time.time() * 1000)
        # every member plays three titles; two of them also play the poisoned one, one in a
        # message of several events, the other alone
        events = [play(m, f"t{(i + k) % 12}", now + k) for i, m in enumerate(MEMBERS)
                  for k in range(3)]
        in_batch, alone = play(MEMBERS[0], POISONED, now + 5), play(MEMBERS[1], POISONED, now)
        with PlayerProducer(settings, max_batch_events=4) as producer:
            producer.send_many([*events[:3], in_batch])  # one message of four events
            producer.flush()
        with PlayerProducer(settings, max_batch_events=1) as producer:
            producer.send(alone)
            producer.send_many(events[3:])
        healthy = len(events)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= healthy, 60,
                   interval_s=0.2, what=f"{healthy} healthy events applied")
        letters = read_topic(settings, topic_specs(settings)["dead_letter"].name, expect=2)
        codec = default_codec()
        got = {x.event_id: x for x in (codec.decode_dead_letter(m.value()) for m in letters)}
        assert set(got) == {in_batch.event_id, alone.event_id}
        for letter in got.values():
            assert letter.error_type == "PoisonEvent"
            assert "ZeroDivisionError: features cannot take title t13" in letter.reason
        assert got[alone.event_id].value == codec.encode_event(alone)  # its original bytes
        assert [e.event_id for e in codec.decode_events(got[in_batch.event_id].value)] == [
            in_batch.event_id]  # re-encoded alone, from its message of four
        time.sleep(1.5)  # anything applied twice would show up now
        stats = counters(settings)
        assert stats["events_applied"] == healthy and stats["dead_letters"] == 2
        for m in MEMBERS:
            assert profile_state(settings, m)["n_events"] == 3, m
        log = worker.log_path.read_text(errors="replace")
        assert "applying its events one at a time" in log
        # the worker goes on with the next batches
        more = [play(m, "t20", now + 100) for m in MEMBERS]
        with PlayerProducer(settings) as producer:
            producer.send_many(more)
        wait_until(lambda: counters(settings).get("events_applied", 0) >= healthy + len(more),
                   30, interval_s=0.2, what="the next events applied")
        assert worker.alive(), worker.tail()
    finally:
        worker.stop()
