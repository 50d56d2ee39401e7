"""Event-time skew on the real broker and Redis: an event stamped far in the future is a dead
letter naming the skew, and one that slips through (its message's timestamp forged too)
moves no other member's page."""

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
    make_titles,
    page,
    profile_state,
    read_topic,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Play, Scroll
from topics.registry import ensure_topics, topic_specs

YEAR_MS = 365 * 24 * 3600 * 1000
MEMBERS = [f"member-{i}" for i in range(8)]


def play(profile: str, title: str, ts: int, position: float) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=position, duration_s=1200.0, country="US")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"row_length": 5})


def _without_wall_clock(p: dict) -> dict:
    return {k: v for k, v in p.items() if k != "generated_at_ms"}


def _rendered_again(settings: Settings, sent: list[Play], pages: dict[str, dict]
                    ) -> dict[str, dict]:
    """Redeliver ``sent`` (duplicates: no state changes) and return each member's page once
    it is rendered again after ``pages``."""
    with PlayerProducer(settings) as producer:
        for ev in sent:
            producer.send(ev)
    return {m: wait_until(
        lambda m=m: (p := page(settings, m))["generated_at_ms"]
        > pages[m]["generated_at_ms"] and p, 30, what=f"{m}'s page rendered again")
        for m in pages}


def test_a_far_future_event_is_dead_lettered_and_moves_no_other_page(
        settings: Settings) -> None:
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    codec = default_codec()
    topic = topic_specs(settings)["player_events"].name
    worker = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        now = int(time.time() * 1000)
        sent = [play(m, f"t{i % 30}", now - 60_000 + i * 1_000, 300.0 + i)
                for i, m in enumerate(MEMBERS)]
        with PlayerProducer(settings) as producer:
            for ev in sent:
                producer.send(ev)
        first = {m: wait_until(lambda m=m: page(settings, m), 30, what=f"{m}'s page")
                 for m in MEMBERS}
        # the pages as of every play (a page rendered before another member's play was
        # applied has less in its Top 10 and an earlier clock): rendered again by a redelivery
        before = _rendered_again(settings, sent, first)

        # a far-future play from an ordinary player client: its message is stamped now
        liar_play = play("liar", "t3", now + YEAR_MS, 100.0)
        with PlayerProducer(settings) as producer:
            producer.send(liar_play)
        # and a far-future scroll whose message timestamp is forged to match: accepted
        forged = Scroll(event_id=uuid.uuid4().hex, profile_id="liar", event_ts_ms=now + YEAR_MS,
                        row=3)
        raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
        raw.produce(topic, key=b"liar", value=codec.encode_event(forged),
                    timestamp=now + YEAR_MS)
        raw.flush(10)

        letters = read_topic(settings, topic_specs(settings)["dead_letter"].name, expect=1)
        [letter] = [codec.decode_dead_letter(m.value()) for m in letters]
        assert (letter.error_type, letter.event_id) == ("FutureEvent", liar_play.event_id)
        assert "ahead of its message's broker timestamp" in letter.reason
        assert "max future skew is 300s (HOMESTREAM_MAX_FUTURE_SKEW_S)" in letter.reason
        assert letter.value == codec.encode_event(liar_play)  # the original bytes
        state = wait_until(lambda: profile_state(settings, "liar"), 30, what="liar's state")
        assert state["last_event_ts_ms"] == now + YEAR_MS  # the forged scroll was applied

        # every other member's page rendered again now (a redelivery re-renders without
        # changing the state) is the page they had: same rows, scores, Top 10 and decays
        after = _rendered_again(settings, sent, before)
        for m in MEMBERS:
            assert _without_wall_clock(after[m]) == _without_wall_clock(before[m]), m
    finally:
        worker.stop()
