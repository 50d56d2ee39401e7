"""``POST /v1/events`` (serving.ingest): per-event validation with the producer client's
messages, grouping by profile, the size limits and the answers, on aiohttp's loopback test
server with an in-memory producer that acknowledges (or fails) from another thread like
librdkafka does. The real broker path is in tests/integration/test_ingest.py."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homestream.player.producer import InvalidEvent, parse_event
from homestream.settings import Settings
from serving.http import error_middleware
from serving.ingest import EventIngest, add_ingest, messages_by_profile, validate_events
from topics.codec import default_codec

TS = 1_764_230_400_000


def play(event_id: str, profile_id: str = "p1", **fields: Any) -> dict[str, Any]:
    return {"type": "play", "event_id": event_id, "profile_id": profile_id,
            "event_ts_ms": TS, "title_id": "t1", "action": "progress", "position_s": 10.0,
            "duration_s": 100.0, **fields}


class ThreadedProducer:
    """Takes messages; its ``poll`` (run in the ingestion's poll thread) reports each one
    delivered, or failed with ``error`` for the keys in ``fail_keys``."""

    def __init__(self, fail_keys: frozenset[bytes] = frozenset()) -> None:
        self.fail_keys = fail_keys
        self.messages: list[tuple[str, bytes, bytes]] = []
        self._waiting: list[tuple[Any, bytes]] = []
        self._lock = threading.Lock()
        self.poll_threads: set[str] = set()

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        with self._lock:
            self.messages.append((topic, key, value))
            self._waiting.append((on_delivery, key))

    def poll(self, timeout: float = 0.0) -> int:
        self.poll_threads.add(threading.current_thread().name)
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for callback, key in waiting:
            callback("Local: Message timed out" if key in self.fail_keys else None, None)
        return len(waiting)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0


@pytest.fixture
def settings() -> Settings:
    return Settings(ingest_max_bytes=4096, ingest_max_events=5,
                    producer_delivery_timeout_ms=1000)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[TestClient, ThreadedProducer]]:
    producer = ThreadedProducer(fail_keys=frozenset({b"down"}))
    ingest = EventIngest(settings, client=producer)
    app = web.Application(middlewares=[error_middleware])
    add_ingest(app, settings, ingest)
    async with TestClient(TestServer(app)) as client:
        yield client, producer
    await ingest.aclose()  # given to the app, so closed by its owner


def test_rejections_carry_the_producer_clients_message_and_its_field() -> None:
    items = [play("ok"), play("neg", position_s=-1), {"type": "nope", "event_id": "x"}, 7]
    valid, rejected = validate_events(items)
    assert [e.event_id for e in valid] == ["ok"]
    with pytest.raises(InvalidEvent) as raised:
        parse_event(items[1])
    first = rejected[0]
    assert (first.index, first.event_id, first.field) == (1, "neg", "position_s")
    assert first.reason == "Input should be greater than or equal to 0"
    assert first.error == str(raised.value)  # the producer client's exact message
    assert (rejected[1].field, rejected[1].event_id) == ("type", "x")
    assert "unknown event type 'nope'" in rejected[1].reason
    assert (rejected[2].index, rejected[2].field, rejected[2].event_id) == (3, "event", None)


def test_events_go_out_one_message_per_profile_in_order_in_chunks() -> None:
    events = [parse_event(play(f"e{i}", profile_id=f"p{i % 2}")) for i in range(7)]
    grouped = messages_by_profile(events, max_events=2)
    assert [(pid, [e.event_id for e in evs]) for pid, evs in grouped] == [
        ("p0", ["e0", "e2"]), ("p0", ["e4", "e6"]), ("p1", ["e1", "e3"]), ("p1", ["e5"])]


async def test_valid_events_are_produced_keyed_by_profile_and_bad_ones_reported(
        served: tuple[TestClient, ThreadedProducer], settings: Settings) -> None:
    client, producer = served
    body = [play("a1", "alice"), play("b1", "bob", position_s=-5), play("c1", "carol"),
            play("a2", "alice")]
    resp = await client.post("/v1/events", data=orjson.dumps(body))
    assert resp.status == 200
    answer = await resp.json()
    assert answer["accepted"] == ["a1", "c1", "a2"]  # request order
    assert [(r["index"], r["event_id"], r["field"]) for r in answer["rejected"]] == [
        (1, "b1", "position_s")]
    codec = default_codec()
    sent = {key: [e.event_id for e in codec.decode_events(value)]
            for _, key, value in producer.messages}
    assert sent == {b"alice": ["a1", "a2"], b"carol": ["c1"]}
    assert {t for t, _, _ in producer.messages} == {settings.topic("player-events")}
    assert producer.poll_threads and "MainThread" not in producer.poll_threads


async def test_unacknowledged_events_get_a_503_naming_them(
        served: tuple[TestClient, ThreadedProducer]) -> None:
    client, _ = served
    resp = await client.post("/v1/events", data=orjson.dumps(
        [play("u1", "up"), play("d1", "down"), play("d2", "down")]))
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    answer = await resp.json()
    assert answer["accepted"] == ["u1"] and answer["not_accepted"] == ["d1", "d2"]
    assert "Message timed out" in answer["error"]


async def test_limits_and_malformed_bodies_are_refused_and_nothing_is_sent(
        served: tuple[TestClient, ThreadedProducer]) -> None:
    client, producer = served
    too_many = await client.post("/v1/events",
                                 data=orjson.dumps([play(f"e{i}") for i in range(6)]))
    assert too_many.status == 413
    assert "HOMESTREAM_INGEST_MAX_EVENTS is 5" in (await too_many.json())["error"]
    too_big = await client.post("/v1/events", data=b"[" + b" " * 5000 + b"]")
    assert too_big.status == 413
    assert "HOMESTREAM_INGEST_MAX_BYTES is 4096 bytes" in (await too_big.json())["error"]
    for raw, problem in ((b"{}", "must be a JSON array of events, got dict"),
                         (b"[]", "must hold at least one event"), (b"[1,", "invalid JSON")):
        resp = await client.post("/v1/events", data=raw)
        answer = await resp.json()
        assert resp.status == 400 and answer["field"] == "body" and problem in answer["error"]
    all_bad = await client.post("/v1/events", data=orjson.dumps([play("x", position_s=-1)]))
    answer = await all_bad.json()
    assert all_bad.status == 400 and answer["accepted"] == []
    assert answer["rejected"][0]["field"] == "position_s"
    assert producer.messages == []
