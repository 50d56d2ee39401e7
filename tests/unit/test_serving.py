"""Unit tests of the serving app and the impression logger: in-memory store, fake producer,
aiohttp's TestServer/TestClient (loopback only, no broker or Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from features.store import InMemoryStore
from serving.app import create_app
from serving.impressions import ImpressionLogger
from settings import Settings
from topics.codec import default_codec
from topics.models import Impression


class FakeProducer:
    """Records produced messages; delivery callbacks fire on ``poll``/``flush``."""

    def __init__(self, buffer_errors: int = 0, error: Any = None) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.buffer_errors = buffer_errors
        self.buffer_errors_raised = 0
        self.error = error
        self.stuck = False
        self.closed = False
        self._callbacks: list[Callable[[Any, Any], None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        if self.buffer_errors_raised < self.buffer_errors:
            self.buffer_errors_raised += 1
            raise BufferError("Local: Queue full")
        assert value is not None and key is not None
        self.messages.append((topic, key, value))
        if on_delivery is not None:
            self._callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        if self.stuck:
            return 0
        fired, self._callbacks = self._callbacks, []
        for cb in fired:
            cb(self.error, None)
        return len(fired)

    def flush(self, timeout: float = 0) -> int:
        if self.stuck:  # the broker takes nothing
            return len(self._callbacks)
        self.poll(0)
        return 0

    def purge(self) -> None:
        self.stuck, self.error = False, "KafkaError{code=_PURGE_QUEUE}"

    def close(self) -> None:
        self.closed = True


def item(title_id: str, availability: list[str] | None = None) -> dict[str, Any]:
    return {"title_id": title_id, "name": title_id.upper(), "artwork_id": f"{title_id}-art0",
            "artwork_url": f"https://img.example.com/art/{title_id}-art0.jpg", "score": 0.5,
            "maturity_rating": "PG", "availability": availability or []}


def page(profile_id: str | None, rows: list[tuple[str, list[dict[str, Any]]]],
         country: str = "US") -> bytes:
    return orjson.dumps({
        "profile_id": profile_id, "personalized": profile_id is not None, "country": country,
        "generated_at_ms": 1_700_000_000_000, "as_of_event_ts_ms": 1_699_999_999_000,
        "rows": [{"row_id": rid, "kind": rid, "title": rid.title(), "explanation": "why",
                  "items": items} for rid, items in rows],
    })


PERSONAL = page("p1", [("continue-watching", [item("t1"), item("t2")]),
                       ("top-picks", [item("t3"), item("t4"), item("t5")])])


@contextlib.asynccontextmanager
async def serve(store: Any = None, producer: FakeProducer | None = None,
                ) -> AsyncIterator[tuple[TestClient, ImpressionLogger, FakeProducer]]:
    producer = producer or FakeProducer()
    logger = ImpressionLogger("t.impressions", producer, poll_interval_s=0.01,
                              retry_interval_s=0.01)
    app = create_app(Settings(), store=store or InMemoryStore(), impressions=logger)
    async with TestClient(TestServer(app)) as client:
        yield client, logger, producer


def decode(producer: FakeProducer) -> list[list[Impression]]:
    out = []
    for _topic, _key, value in producer.messages:
        events = default_codec().decode_events(value)
        assert all(isinstance(e, Impression) for e in events)
        out.append(events)  # type: ignore[arg-type]
    return out


# -- pages and fallbacks ------------------------------------------------------------------
async def test_personal_page_served() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": PERSONAL}, {"ALL": page(None, [("top-10", [item("t9")])])})
    before = time.time_ns() // 1_000_000
    async with serve(store) as (client, _, _):
        resp = await client.get("/v1/homepage/p1?device=tv&country=US")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    assert body["source"] == "personal"
    assert body["profile_id"] == "p1" and body["personalized"] is True
    assert [r["row_id"] for r in body["rows"]] == ["continue-watching", "top-picks"]
    assert [i["title_id"] for i in body["rows"][1]["items"]] == ["t3", "t4", "t5"]
    assert len(body["request_id"]) == 32 and int(body["request_id"], 16) >= 0
    assert before <= body["served_at_ms"] <= time.time_ns() // 1_000_000
    assert body["generated_at_ms"] == 1_700_000_000_000


async def test_unknown_profile_falls_back_country_then_all_then_empty() -> None:
    store = InMemoryStore()
    await store.write_pages({}, {"US": page(None, [("top-10-us", [item("u1")])]),
                                 "ALL": page(None, [("top-10", [item("a1")])], country="ALL")})
    async with serve(store) as (client, _, _):
        us = await (await client.get("/v1/homepage/new-1?country=US")).json()
        fr = await (await client.get("/v1/homepage/new-1?country=FR")).json()
        none = await (await client.get("/v1/homepage/new-1")).json()
    assert us["source"] == "default-US" and us["rows"][0]["row_id"] == "top-10-us"
    assert fr["source"] == "default-ALL" and fr["rows"][0]["row_id"] == "top-10"
    assert none["source"] == "default-ALL"
    for body in (us, fr, none):
        assert body["profile_id"] == "new-1" and body["personalized"] is False

    async with serve(InMemoryStore()) as (client, logger, producer):
        resp = await client.get("/v1/homepage/nobody@x.y:z?country=DE")
        assert resp.status == 200
        body = await resp.json()
        await logger.drain()
    assert body["source"] == "empty" and body["rows"] == []
    assert body["profile_id"] == "nobody@x.y:z" and body["personalized"] is False
    assert body["country"] == "DE" and body["request_id"]
    assert producer.messages == []  # nothing served, nothing logged


@pytest.mark.parametrize(("url", "field"), [
    ("/v1/homepage/bad%20id", "profile_id"),
    ("/v1/homepage/p!1", "profile_id"),
    ("/v1/homepage/" + "p" * 129, "profile_id"),
    ("/v1/homepage/p1?country=us", "country"),
    ("/v1/homepage/p1?country=USA", "country"),
    ("/v1/homepage/p1?country=", "country"),
    ("/v1/homepage/p1?device=" + "d" * 65, "device"),
])
async def test_bad_input_is_400_naming_the_field(url: str, field: str) -> None:
    async with serve() as (client, _, producer):
        resp = await client.get(url)
        assert resp.status == 400
        body = await resp.json()
    assert body["error"].startswith(f"{field}:")
    assert producer.messages == []


async def test_edge_valid_inputs_accepted() -> None:
    async with serve() as (client, _, _):
        for url in ("/v1/homepage/" + "p" * 128, "/v1/homepage/A-z_0.9:@",
                    "/v1/homepage/p1?device=" + "d" * 64):
            assert (await client.get(url)).status == 200, url


async def test_country_guardrail_drops_unavailable_items_and_empty_rows() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": page("p1", [
        ("mixed", [item("t1", ["US"]), item("t2", ["FR"]), item("t3")]),
        ("fr-only", [item("t4", ["FR"]), item("t5", ["FR", "DE"])]),
        ("last", [item("t6", ["US", "FR"])]),
    ])}, {})
    async with serve(store) as (client, _, _):
        us = await (await client.get("/v1/homepage/p1?country=US")).json()
        fr = await (await client.get("/v1/homepage/p1?country=FR")).json()
        anywhere = await (await client.get("/v1/homepage/p1")).json()

    def titles(body: dict[str, Any]) -> list[list[str]]:
        return [[i["title_id"] for i in r["items"]] for r in body["rows"]]

    assert [r["row_id"] for r in us["rows"]] == ["mixed", "last"]
    assert titles(us) == [["t1", "t3"], ["t6"]]
    assert titles(fr) == [["t2", "t3"], ["t4", "t5"], ["t6"]]
    assert titles(anywhere) == [["t1", "t2", "t3"], ["t4", "t5"], ["t6"]]  # no country: as is


# -- impressions --------------------------------------------------------------------------
async def test_impressions_match_served_positions_and_request_id() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": page("p1", [
        ("row-a", [item("t1", ["FR"]), item("t2"), item("t3")]),   # t1 filtered for US
        ("row-b", [item("t4", ["FR"])]),                            # whole row dropped
        ("row-c", [item("t5"), item("t6", ["US"])]),
    ])}, {})
    async with serve(store) as (client, logger, producer):
        body = await (await client.get("/v1/homepage/p1?device=tv&country=US")).json()
        await logger.drain()
        assert len(producer.messages) == 1  # one produce per request
        await asyncio.sleep(0.05)  # the poller fires delivery callbacks
        assert logger.stats()["impressions_delivered"] == 4
    topic, key, _ = producer.messages[0]
    assert topic == "t.impressions" and key == b"p1"
    (events,) = decode(producer)
    served = [(r, c, row["row_id"], it["title_id"], it["artwork_id"])
              for r, row in enumerate(body["rows"]) for c, it in enumerate(row["items"])]
    assert [(e.row, e.column, e.row_id, e.title_id, e.artwork_id) for e in events] == served
    assert served == [(0, 0, "row-a", "t2", "t2-art0"), (0, 1, "row-a", "t3", "t3-art0"),
                      (1, 0, "row-c", "t5", "t5-art0"), (1, 1, "row-c", "t6", "t6-art0")]
    assert len({e.event_id for e in events}) == len(events)
    for e in events:
        assert e.request_id == body["request_id"]
        assert e.profile_id == "p1" and e.event_ts_ms == body["served_at_ms"]
        assert (e.policy, e.propensity, e.variant) == ("materialized", 1.0, "control")
        assert (e.device, e.country) == ("tv", "US")


async def test_impression_defaults_without_device_or_country() -> None:
    store = InMemoryStore()
    await store.write_pages({}, {"ALL": page(None, [("top-10", [item("t1")])], country="ALL")})
    async with serve(store) as (client, logger, producer):
        body = await (await client.get("/v1/homepage/p2")).json()
        await logger.drain()
    (events,) = decode(producer)
    assert producer.messages[0][1] == b"p2"
    assert [(e.profile_id, e.device, e.country, e.request_id) for e in events] == [
        ("p2", "unknown", "ZZ", body["request_id"])]


async def test_full_producer_queue_is_retried_not_dropped() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": PERSONAL}, {})
    producer = FakeProducer(buffer_errors=3)
    async with serve(store, producer) as (client, logger, _):
        resp = await client.get("/v1/homepage/p1")
        assert resp.status == 200
        await logger.drain()
    assert producer.buffer_errors_raised == 3
    assert len(producer.messages) == 1
    assert len(decode(producer)[0]) == 5
    assert (logger.delivered, logger.failed) == (5, 0)  # flushed on app cleanup


async def test_delivery_failures_counted_logged_and_on_readyz(
        caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": PERSONAL}, {})
    producer = FakeProducer(error="KafkaError{code=_MSG_TIMED_OUT}")
    with caplog.at_level(logging.ERROR, logger="serving.impressions"):
        async with serve(store, producer) as (client, logger, _):
            await client.get("/v1/homepage/p1")
            await logger.drain()
            await asyncio.sleep(0.05)
            ready = await (await client.get("/readyz")).json()
    assert ready["impressions_failed"] == 5 and ready["impressions_delivered"] == 0
    (events,) = decode(producer)
    assert all(e.event_id in caplog.text for e in events)
    assert "_MSG_TIMED_OUT" in caplog.text


async def test_shutdown_purges_undelivered_and_counts_them_failed(
        caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer()
    producer.stuck = True
    logger = ImpressionLogger("t.impressions", producer, flush_timeout_s=0.01)
    logger.start()
    rows = [{"row_id": "r", "items": [item("t1"), item("t2")]}]
    logger.log_page("p1", "req-1", 1_700_000_000_000, rows, device="tv", country="US")
    await logger.drain()
    assert logger.stats()["impressions_in_flight"] == 2
    with caplog.at_level(logging.ERROR, logger="serving.impressions"):
        await logger.aclose()
    assert (logger.delivered, logger.failed) == (0, 2) and producer.closed
    assert logger.stats()["impressions_in_flight"] == 0
    assert "_PURGE_QUEUE" in caplog.text and "req-1" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        logger.log_page("p1", "req-2", 1_700_000_000_000, rows)


async def test_shutdown_with_producer_queue_full_counts_every_page_failed() -> None:
    producer = FakeProducer(buffer_errors=10**9)
    logger = ImpressionLogger("t.impressions", producer, retry_interval_s=0.001,
                              flush_timeout_s=0.05)
    logger.start()
    rows = [{"row_id": "r", "items": [item("t1"), item("t2"), item("t3")]}]
    for i in range(3):  # one stuck in the produce retry loop, two still queued
        logger.log_page("p1", f"req-{i}", 1_700_000_000_000, rows)
    await logger.aclose()
    assert producer.messages == []
    assert (logger.delivered, logger.failed) == (0, 9)


async def test_invalid_item_is_counted_failed_rest_logged() -> None:
    producer = FakeProducer()
    logger = ImpressionLogger("t.impressions", producer)
    logger.start()
    rows = [{"row_id": "r", "items": [item("t1"), {"title_id": ""}, item("t3")]}]
    logger.log_page("p1", "req-1", 1_700_000_000_000, rows)
    await logger.aclose()
    (events,) = decode(producer)
    assert [(e.title_id, e.column) for e in events] == [("t1", 0), ("t3", 2)]
    assert (logger.delivered, logger.failed) == (2, 1)


# -- health and errors --------------------------------------------------------------------
async def test_healthz_and_readyz() -> None:
    async with serve() as (client, _, _):
        health = await client.get("/healthz")
        assert health.status == 200 and await health.json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status == 200
        body = await ready.json()
    assert body["status"] == "ready"
    assert body["impressions_delivered"] == 0 and body["impressions_failed"] == 0


class BrokenStore(InMemoryStore):
    """A store whose reads fail the way a bug or a lost Redis would."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def get_page(self, profile_id: str) -> bytes | None:
        raise self.exc

    async def ping(self) -> bool:
        raise self.exc


async def test_readyz_503_when_store_does_not_answer() -> None:
    async with serve(BrokenStore(ConnectionError("Connection refused"))) as (client, _, _):
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "unavailable"
    assert "ConnectionError" in body["reason"] and "impressions_failed" in body


async def test_store_down_is_503_json() -> None:
    async with serve(BrokenStore(ConnectionError("Connection refused"))) as (client, _, _):
        resp = await client.get("/v1/homepage/p1")
        assert resp.status == 503
        assert (await resp.json())["error"].startswith("store unavailable: ConnectionError")


async def test_unexpected_exception_is_500_json_with_type(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="serving.app"):
        async with serve(BrokenStore(KeyError("boom"))) as (client, _, _):
            resp = await client.get("/v1/homepage/p1")
            assert resp.status == 500
            assert resp.content_type == "application/json"
            body = await resp.json()
    assert body == {"error": "internal error: KeyError", "type": "KeyError"}
    assert "Traceback" in caplog.text


async def test_corrupt_stored_page_is_500_json() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": b"not json"}, {})
    async with serve(store) as (client, _, _):
        resp = await client.get("/v1/homepage/p1")
        assert resp.status == 500
        assert (await resp.json())["type"] == "JSONDecodeError"


async def test_404_and_405_are_json() -> None:
    async with serve() as (client, _, _):
        missing = await client.get("/nope")
        assert missing.status == 404 and missing.content_type == "application/json"
        assert (await missing.json())["error"] == "not found: /nope"
        wrong = await client.post("/v1/homepage/p1")
        assert wrong.status == 405 and wrong.content_type == "application/json"
        assert "GET" in wrong.headers["Allow"]
        assert "POST" in (await wrong.json())["error"]


def test_main_exits_2_naming_the_bad_variable(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from serving.__main__ import main

    monkeypatch.setenv("HOMESTREAM_HTTP_PORT", "not-a-port")
    assert main() == 2
    assert "HOMESTREAM_HTTP_PORT" in capsys.readouterr().err
