"""The server's topic feed on the real broker: it waits for missing topics, then hands over
only the watched profiles' page updates published after it started, keeps the dead-letter
tail (also the letters written before it started) and reads the worker group's offsets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import Producer

from homestream.settings import Settings
from serving.page_stream import PageUpdateHub, TopicFeed
from topics.codec import default_codec
from topics.models import DeadLetter
from topics.registry import ensure_topics, event_topics, topic_specs


def page_update(profile_id: str, generated_at_ms: int) -> bytes:
    return default_codec().encode_page_update({
        "profile_id": profile_id, "personalized": True, "country": "US",
        "generated_at_ms": generated_at_ms, "as_of_event_ts_ms": generated_at_ms - 50,
        "rows": [{"row_id": "top-picks", "kind": "top_picks", "title": "Top Picks",
                  "explanation": "", "items": [{"title_id": "t1", "artwork_id": "t1-art0",
                                                "score": 0.5}]}]})


def dead_letter(reason: str) -> bytes:
    return default_codec().encode_dead_letter(DeadLetter(
        source_topic="x", partition=0, offset=1, value=b"\x01", reason=reason,
        error_type="DecodeError", failed_at_ms=int(time.time() * 1000)))


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_feed_waits_for_topics_then_delivers_watched_updates_and_dead_letters(
        settings: Settings) -> None:
    specs = topic_specs(settings)
    hub = PageUpdateHub()
    queue = hub.subscribe("p1")
    feed = TopicFeed(settings, hub.publish, lambda: hub.watched)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    try:
        feed.ensure_started()
        await wait_for(lambda: feed.snapshot()["status"] == "waiting for topics", 15,
                       "the feed to report the missing topics")
        assert not await feed.wait_running(0.1)

        ensure_topics(settings)
        producer.produce(specs["dead_letter"].name, value=dead_letter("before the feed ran"))
        producer.produce(specs["page_updates"].name, key=b"p1", value=page_update("p1", 1))
        assert producer.flush(10) == 0
        await asyncio.sleep(0.5)  # both are in the topics before the feed assigns
        assert await feed.wait_running(20)

        now = int(time.time() * 1000)
        for pid in ("p2", "p1"):
            producer.produce(specs["page_updates"].name, key=pid.encode(),
                             value=page_update(pid, now))
        producer.produce(specs["dead_letter"].name, value=dead_letter("after"))
        assert producer.flush(10) == 0

        update = await asyncio.wait_for(queue.get(), 10)
        assert update is not None and update["profile_id"] == "p1"
        assert update["generated_at_ms"] == now and update["rows"] == 1  # not the old one
        await wait_for(lambda: len(feed.snapshot()["dead_letters"]) >= 2, 10,
                       "both dead letters")
        await wait_for(lambda: feed.snapshot()["lag"], 10, "the group's offsets")
        snap = feed.snapshot()
        assert [d["reason"] for d in snap["dead_letters"]] == ["after", "before the feed ran"]
        assert snap["page_updates_seen"] >= 2 and snap["freshness"]["samples"] >= 2
        assert snap["freshness"]["event_to_page_p50_ms"] == 50
        assert {r["topic"] for r in snap["lag"]} == set(event_topics(settings))
        assert len(snap["lag"]) == 2 * settings.partitions
        assert all(r["committed"] is None for r in snap["lag"])  # no worker ran
        assert queue.empty()  # p2's update went to nobody
    finally:
        await feed.stop()
        producer.flush(5)
