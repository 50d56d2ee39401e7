"""Unit tests of the serving app and the impression logger: in-memory store, fake producer,
aiohttp's TestServer/TestClient (loopback only, no broker or Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from features.profile import ProfileState
from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.rules import Rules
from online_models.top_picks import TopPicksModel
from serving.app import create_app
from serving.catalog_cache import ServingModels
from serving.impressions import ImpressionLogger
from topics.codec import default_codec
from topics.models import Artwork, Impression, Title


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
async def serve(store: Any = None, producer: FakeProducer | None = None, **kwargs: Any,
                ) -> AsyncIterator[tuple[TestClient, ImpressionLogger, FakeProducer]]:
    producer = producer or FakeProducer()
    logger = ImpressionLogger("t.impressions", producer, poll_interval_s=0.01,
                              retry_interval_s=0.01)
    app = create_app(Settings(), store=store or InMemoryStore(), impressions=logger, **kwargs)
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


# -- guardrails, similar titles, rerank and search ----------------------------------------
def title(tid: str, name: str, genres: list[str], rating: str = "PG", cast: tuple[str, ...] = (),
          availability: tuple[str, ...] = ()) -> Title:
    return Title(title_id=tid, name=name, genres=genres, maturity_rating=rating,
                 release_date=dt.date(2020, 1, 1), duration_s=3600.0, cast=list(cast),
                 artwork=[Artwork(artwork_id=f"{tid}-a", url=f"https://img/{tid}.jpg")],
                 availability=list(availability))


CATALOG = [
    title("t-night", "Night Watch", ["Horror"], "R", cast=("Ana Lima",)),
    title("t-night2", "Night Watch II", ["Horror"], "PG-13"),
    title("t-cafe", "Cafe Society", ["Comedy"], "PG", cast=("Ana Lima",)),
    title("t-toy", "Toy Parade", ["Comedy", "Family"], "G"),
    title("t-blood", "Blood Moon", ["Thriller", "Comedy"], "NC-17"),
    title("t-quiet", "Quiet Thriller", ["Thriller"], "PG-13"),
    title("t-paris", "Paris Comedy", ["Comedy"], "PG", availability=("FR",)),
]
MATURE = {"R", "NC-17"}
NOW_MS = 1_700_000_000_000


def rated(tid: str, rating: str, genres: list[str] | None = None) -> dict[str, Any]:
    return {**item(tid), "maturity_rating": rating, "genres": genres or ["Drama"]}


async def catalog_store() -> InMemoryStore:
    store = InMemoryStore()
    await store.put_titles(CATALOG)
    await store.put_profile_meta({"kid": {"kids": True}, "adult": {"kids": False},
                                  "teen": {"max_rating": "PG-13"}})
    return store


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["title_id"] for i in items]


def page_ids(body: dict[str, Any]) -> list[str]:
    return [i["title_id"] for r in body["rows"] for i in r["items"]]


async def test_kids_profile_never_gets_mature_titles_even_from_a_default_page() -> None:
    store = await catalog_store()
    await store.write_pages(
        {"kid-stale": page("kid-stale", [("top-picks", [rated("r1", "R"), rated("g1", "G")])])},
        {"ALL": page(None, [("top-10", [rated("r2", "R"), rated("n1", "NC-17"),
                                        rated("pg1", "PG"), rated("h1", "PG", ["Horror"])]),
                            ("mature", [rated("r3", "R")])], country="ALL")})
    await store.put_profile_meta({"kid-stale": {"kids": True, "max_rating": None,
                                                "country": "US"}})
    async with serve(store) as (client, logger, producer):
        kid = await (await client.get("/v1/homepage/kid")).json()
        stale = await (await client.get("/v1/homepage/kid-stale?country=US")).json()
        adult = await (await client.get("/v1/homepage/adult")).json()
        stranger = await (await client.get("/v1/homepage/stranger")).json()
        await logger.drain()
    assert kid["source"] == "default-ALL"
    assert page_ids(kid) == ["pg1"]  # R, NC-17 and the kids-blocked Horror title dropped
    assert [r["row_id"] for r in kid["rows"]] == ["top-10"]  # the emptied row is gone
    assert (kid["kids"], kid["max_rating"]) == (True, "PG")
    assert page_ids(stale) == ["g1"] and stale["source"] == "personal"
    assert page_ids(adult) == ["r2", "n1", "pg1", "h1", "r3"]
    assert (adult["kids"], adult["max_rating"]) == (False, "NC-17")
    assert page_ids(stranger) == page_ids(adult)  # no settings: the default ones
    logged = {(e.profile_id, e.title_id) for events in decode(producer) for e in events}
    assert ("kid", "pg1") in logged and not {("kid", t) for t in ("r2", "n1", "h1")} & logged


async def test_profile_rating_limit_and_fail_closed_settings() -> None:
    store = await catalog_store()
    await store.write_pages({}, {"ALL": page(None, [("top-10", [
        rated("g", "G"), rated("pg", "PG"), rated("pg13", "PG-13"), rated("r", "R"),
        {"title_id": "no-rating", "name": "?", "artwork_id": "a", "artwork_url": "u"},
    ])], country="ALL")})
    await store.put_profile_meta({"broken": {"kids": "maybe"}, "odd": {"max_rating": "X"}})
    async with serve(store) as (client, _, _):
        teen = await (await client.get("/v1/homepage/teen")).json()
        broken = await (await client.get("/v1/homepage/broken")).json()
        odd = await (await client.get("/v1/homepage/odd")).json()
        adult = await (await client.get("/v1/homepage/adult")).json()
    assert page_ids(teen) == ["g", "pg", "pg13"]
    assert page_ids(broken) == page_ids(odd) == ["g"]  # unreadable settings: strictest
    assert page_ids(adult) == ["g", "pg", "pg13", "r"]  # an unrated item is never shown


async def test_rules_are_injectable_and_apply_to_every_route() -> None:
    store = await catalog_store()
    await store.write_pages({}, {"ALL": page(None, [("r", [rated("t-toy", "G"),
                                                           rated("t-cafe", "PG")])])})
    rules = Rules(blocked_titles=["t-cafe"])
    async with serve(store, rules=rules) as (client, _, _):
        home = await (await client.get("/v1/homepage/adult")).json()
        found = await (await client.get("/v1/search?q=cafe+society")).json()
        ranked = await (await client.post("/v1/rerank", json={
            "profile_id": "adult", "title_ids": ["t-cafe", "t-toy"]})).json()
    assert page_ids(home) == ["t-toy"]
    assert "t-cafe" not in ids(found["items"])
    assert ids(ranked["items"]) == ["t-toy"] and ranked["removed"] == ["t-cafe"]


async def test_similar_titles_stored_then_content_with_guardrails() -> None:
    store = await catalog_store()
    await store.write_similar({"t-cafe": [("t-night", 0.9), ("t-missing", 0.8),
                                          ("t-toy", 0.6), ("t-cafe", 0.5)]})
    async with serve(store) as (client, _, _):
        adult_resp = await client.get("/v1/titles/t-cafe/similar?profile_id=adult&country=US")
        assert adult_resp.status == 200
        adult = await adult_resp.json()
        kid = await (await client.get("/v1/titles/t-cafe/similar?profile_id=kid")).json()
        anon_fr = await (await client.get("/v1/titles/t-cafe/similar?country=FR")).json()
        short = await (await client.get("/v1/titles/t-cafe/similar?limit=1")).json()
        unlisted = await (await client.get("/v1/titles/t-quiet/similar")).json()
    assert adult["title_id"] == "t-cafe" and adult["profile_id"] == "adult"
    got = adult["items"]
    assert ids(got)[:2] == ["t-night", "t-toy"]  # the stored list, in order, unknown skipped
    assert [i["source"] for i in got[:2]] == ["stored", "stored"]
    assert set(ids(got)[2:]) == {"t-blood"}  # topped up by genre; t-paris is FR only
    assert got[2]["source"] == "content" and got[2]["score"] <= 0.5 * got[1]["score"]
    assert set(got[0]) >= {"title_id", "name", "artwork_id", "artwork_url", "score",
                           "maturity_rating", "genres", "availability"}
    assert ids(kid["items"]) == ["t-toy", "t-paris"]  # no R, NC-17 or Horror for kids
    assert not MATURE & {i["maturity_rating"] for i in kid["items"]}
    assert "t-paris" in ids(anon_fr["items"]) and "t-cafe" not in ids(anon_fr["items"])
    assert ids(short["items"]) == ["t-night"]
    assert ids(unlisted["items"]) == ["t-blood"]  # nothing stored: content neighbours only
    assert all(i["source"] == "content" for i in unlisted["items"])


async def test_similar_unknown_title_is_404_json() -> None:
    async with serve(await catalog_store()) as (client, _, _):
        resp = await client.get("/v1/titles/nope/similar")
        assert resp.status == 404 and resp.content_type == "application/json"
        assert await resp.json() == {"error": "title not found: nope", "title_id": "nope"}


@pytest.mark.parametrize(("url", "field"), [
    ("/v1/titles/t-cafe/similar?limit=0", "limit"),
    ("/v1/titles/t-cafe/similar?limit=101", "limit"),
    ("/v1/titles/t-cafe/similar?limit=ten", "limit"),
    ("/v1/titles/t-cafe/similar?country=fr", "country"),
    ("/v1/titles/t-cafe/similar?profile_id=a%20b", "profile_id"),
    ("/v1/titles/" + "t" * 129 + "/similar", "title_id"),
    ("/v1/search", "q"),
    ("/v1/search?q=", "q"),
    ("/v1/search?q=%20%20", "q"),
    ("/v1/search?q=!!!", "q"),
    ("/v1/search?q=" + "a" * 201, "q"),
    ("/v1/search?q=night&limit=-1", "limit"),
    ("/v1/search?q=night&country=USA", "country"),
    ("/v1/search?q=night&profile_id=" + "p" * 129, "profile_id"),
])
async def test_bad_query_parameters_are_400_naming_the_field(url: str, field: str) -> None:
    async with serve(await catalog_store()) as (client, _, _):
        resp = await client.get(url)
        assert resp.status == 400
        body = await resp.json()
    assert body["error"].startswith(f"{field}:") and body["field"] == field


async def test_limits_at_the_edges_are_accepted() -> None:
    async with serve(await catalog_store()) as (client, _, _):
        for url in ("/v1/titles/t-cafe/similar?limit=1", "/v1/titles/t-cafe/similar?limit=100",
                    "/v1/search?q=comedy&limit=1", "/v1/search?q=comedy&limit=100"):
            assert (await client.get(url)).status == 200, url


async def comedy_fan(store: InMemoryStore, profile_id: str = "fan") -> None:
    state = ProfileState(profile_id, n_events=3, last_event_ts_ms=NOW_MS, country="US",
                         affinity={"Comedy": [5.0, NOW_MS]})
    await store.commit_batch([state], [], {})


async def test_rerank_orders_by_relevance_reports_unknown_and_removed() -> None:
    store = await catalog_store()
    await comedy_fan(store)
    await comedy_fan(store, "kid")
    async with serve(store) as (client, _, _):
        resp = await client.post("/v1/rerank", json={
            "profile_id": "fan", "title_ids": ["t-quiet", "t-nope", "t-cafe", "t-quiet",
                                               "t-night2", "t-toy"]})
        assert resp.status == 200
        fan = await resp.json()
        kid = await (await client.post("/v1/rerank", json={
            "profile_id": "kid", "title_ids": ["t-night", "t-blood", "t-quiet", "t-toy",
                                               "t-cafe"], "country": "US"})).json()
        new = await (await client.post("/v1/rerank", json={
            "profile_id": "newbie", "title_ids": ["t-quiet", "t-cafe"]})).json()
    assert fan["profile_id"] == "fan" and fan["personalized"] is True
    assert fan["unknown"] == ["t-nope"] and fan["removed"] == []
    assert set(ids(fan["items"][:2])) == {"t-cafe", "t-toy"}  # the Comedy titles first
    assert set(ids(fan["items"][2:])) == {"t-quiet", "t-night2"}
    assert len(ids(fan["items"])) == 4  # the duplicate t-quiet served once
    scores = [i["score"] for i in fan["items"]]
    assert scores == sorted(scores, reverse=True)
    assert kid["removed"] == ["t-night", "t-blood", "t-quiet"] and kid["unknown"] == []
    assert not MATURE & {i["maturity_rating"] for i in kid["items"]}
    assert ids(kid["items"])[:2] in (["t-toy", "t-cafe"], ["t-cafe", "t-toy"])
    assert new["personalized"] is False and len(new["items"]) == 2


async def test_rerank_modes_blend_the_request_order() -> None:
    store = await catalog_store()
    await comedy_fan(store)
    order = ["t-quiet", "t-night2", "t-cafe"]
    async with serve(store) as (client, _, _):
        results = {}
        for mode in (None, "explore", "fetch"):
            body = {"profile_id": "fan", "title_ids": order}
            if mode:
                body["mode"] = mode
            results[mode] = await (await client.post("/v1/rerank", json=body)).json()
    assert ids(results[None]["items"])[0] == "t-cafe"
    assert ids(results["explore"]["items"])[0] == "t-cafe"
    assert ids(results["fetch"]["items"]) == order  # mostly the caller's order
    assert results["fetch"]["mode"] == "fetch"


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (b'{"title_ids": ["t-cafe"]}', "profile_id"),
    (b'{"profile_id": 7, "title_ids": ["t-cafe"]}', "profile_id"),
    (b'{"profile_id": "bad id", "title_ids": ["t-cafe"]}', "profile_id"),
    (b'{"profile_id": "p1"}', "title_ids"),
    (b'{"profile_id": "p1", "title_ids": []}', "title_ids"),
    (b'{"profile_id": "p1", "title_ids": "t-cafe"}', "title_ids"),
    (b'{"profile_id": "p1", "title_ids": ["t-cafe", 3]}', "title_ids"),
    (b'{"profile_id": "p1", "title_ids": [""]}', "title_ids"),
    (orjson.dumps({"profile_id": "p1", "title_ids": [f"t{i}" for i in range(501)]}),
     "title_ids"),
    (b'{"profile_id": "p1", "title_ids": ["t-cafe"], "country": "us"}', "country"),
    (b'{"profile_id": "p1", "title_ids": ["t-cafe"], "country": 1}', "country"),
    (b'{"profile_id": "p1", "title_ids": ["t-cafe"], "mode": "browse"}', "mode"),
    (b'{"profile_id": "p1", "title_ids": ["t-cafe"], "titles": []}', "body"),
])
async def test_rerank_bad_body_is_400_naming_the_field(body: bytes, field: str) -> None:
    async with serve(await catalog_store()) as (client, _, _):
        resp = await client.post("/v1/rerank", data=body,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 400
        got = await resp.json()
    assert got["error"].startswith(f"{field}:") and got["field"] == field


async def test_rerank_accepts_500_titles_and_get_is_405() -> None:
    async with serve(await catalog_store()) as (client, _, _):
        resp = await client.post("/v1/rerank", json={
            "profile_id": "p1", "title_ids": ["t-cafe"] + [f"x{i}" for i in range(499)]})
        assert resp.status == 200
        body = await resp.json()
        assert ids(body["items"]) == ["t-cafe"] and len(body["unknown"]) == 499
        assert (await client.get("/v1/rerank")).status == 405


async def test_search_fetch_puts_the_named_title_first_and_explore_personalizes() -> None:
    store = await catalog_store()
    await comedy_fan(store)
    async with serve(store) as (client, _, _):
        fetch = await (await client.get("/v1/search?q=Night+Watch&profile_id=adult")).json()
        prefix = await (await client.get("/v1/search?q=cafe+soc")).json()
        explore = await (await client.get("/v1/search?q=comedy&profile_id=fan")).json()
        cast = await (await client.get("/v1/search?q=ana+lima&limit=1")).json()
        fr = await (await client.get("/v1/search?q=comedy&country=FR")).json()
        us = await (await client.get("/v1/search?q=comedy&country=US")).json()
    assert fetch["query"] == "Night Watch" and fetch["mode"] == "fetch"
    assert ids(fetch["items"])[:2] == ["t-night", "t-night2"]
    assert fetch["items"][0]["reason"] == "exact title"
    assert prefix["mode"] == "fetch" and ids(prefix["items"])[0] == "t-cafe"
    assert explore["mode"] == "explore"
    assert set(ids(explore["items"])) == {"t-cafe", "t-toy", "t-blood", "t-paris"}
    reasons = {i["title_id"]: i["reason"] for i in explore["items"]}
    assert reasons.pop("t-paris") == "title words"  # "Paris Comedy"
    assert set(reasons.values()) == {"genre: Comedy"}
    scores = [i["score"] for i in explore["items"]]
    assert scores == sorted(scores, reverse=True)
    assert cast["mode"] == "explore" and len(cast["items"]) == 1
    assert "t-paris" in ids(fr["items"]) and "t-paris" not in ids(us["items"])


async def test_search_never_gives_a_kids_profile_mature_titles() -> None:
    async with serve(await catalog_store()) as (client, _, _):
        for q in ("Night Watch", "blood moon", "comedy", "ana lima", "night", "horror"):
            kid = await (await client.get(f"/v1/search?q={q}&profile_id=kid")).json()
            assert not MATURE & {i["maturity_rating"] for i in kid["items"]}, q
            assert not {"t-night", "t-night2", "t-blood"} & set(ids(kid["items"])), q
        adult = await (await client.get("/v1/search?q=blood+moon&profile_id=adult")).json()
    assert ids(adult["items"])[0] == "t-blood"


async def test_endpoints_503_when_the_store_is_down() -> None:
    class Down(InMemoryStore):
        async def catalog_version(self) -> int:
            raise ConnectionError("Connection refused")

    async with serve(Down()) as (client, _, _):
        for resp in (await client.get("/v1/titles/t1/similar"),
                     await client.get("/v1/search?q=x"),
                     await client.post("/v1/rerank", json={"profile_id": "p",
                                                           "title_ids": ["t1"]})):
            assert resp.status == 503
            assert (await resp.json())["error"].startswith("store unavailable")


# -- serving models -----------------------------------------------------------------------
async def test_serving_models_reload_catalog_and_model_on_change() -> None:
    store = InMemoryStore()
    await store.put_titles(CATALOG[:2])
    models = ServingModels(store, refresh_interval_s=0.02)
    snap = await models.ensure()
    assert snap.version == 1 and set(snap.catalog.title_ids()) == {"t-night", "t-night2"}
    assert models.model is None
    model = TopPicksModel(n_factors=2, seed=1)
    model.learn_one("p1", "t-cafe", 1.0)
    await store.save_checkpoints({"top-picks": model.to_bytes()}, 1)
    await store.put_titles(CATALOG[2:3])
    models.start()
    try:
        for _ in range(200):
            if models.snapshot.version == 2 and models.model is not None:
                break
            await asyncio.sleep(0.01)
        assert "t-cafe" in models.snapshot.catalog
        first = models.model
        assert first is not None and first.n_learned == 1
        refreshes = models.refreshes
        while models.refreshes < refreshes + 2:
            await asyncio.sleep(0.01)
        assert models.model is first  # same version: not read or unpickled again
        await store.save_checkpoints({"top-picks": b"garbage"}, 2)
        while models.model_errors == 0:
            await asyncio.sleep(0.01)
        assert models.model is first  # a bad checkpoint keeps the previous model
    finally:
        await models.aclose()


async def test_serving_models_stop_even_when_a_store_call_swallows_the_cancel() -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside redis-py with a socket timeout) loses a
    cancel that lands as its call completes: the refresh returns normally while cancelled.
    The refresh loop still ends at ``aclose`` (it ran on and hung the server's shutdown)."""
    reading = asyncio.Event()

    class Swallows(InMemoryStore):
        async def load_catalog(self):  # type: ignore[no-untyped-def]
            reading.set()
            # what the client did: the cancel is lost, the call returns
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
            return await super().load_catalog()

    store = Swallows()
    await store.put_titles(CATALOG[:1])  # a catalog version to load
    models = ServingModels(store, refresh_interval_s=30.0)
    models.start()
    await asyncio.wait_for(reading.wait(), 5)
    closing = asyncio.create_task(models.aclose())
    done, _ = await asyncio.wait([closing], timeout=5)  # not the 30 s refresh interval
    assert closing in done


async def test_serving_models_started_again_after_aclose_refresh_again() -> None:
    store = InMemoryStore()
    await store.put_titles(CATALOG[:1])
    models = ServingModels(store, refresh_interval_s=0.01)
    models.start()
    await models.aclose()
    refreshes = models.refreshes
    models.start()
    try:
        async with asyncio.timeout(5):
            while models.refreshes < refreshes + 2:
                await asyncio.sleep(0.01)
    finally:
        await models.aclose()


async def test_rerank_uses_the_loaded_model() -> None:
    store = await catalog_store()
    state = ProfileState("m1", n_events=40, last_event_ts_ms=NOW_MS,
                         engaged={f"x{i}": 3 for i in range(40)})
    await store.commit_batch([state], [], {})
    model = TopPicksModel(n_factors=4, seed=3)
    for _ in range(50):
        model.learn_one("m1", "t-quiet", 1.0)
        model.learn_one("m1", "t-toy", 0.0)
    await store.save_checkpoints({"top-picks": model.to_bytes()}, 1)
    async with serve(store) as (client, _, _):
        body = await (await client.post("/v1/rerank", json={
            "profile_id": "m1", "title_ids": ["t-toy", "t-quiet"]})).json()
    assert ids(body["items"]) == ["t-quiet", "t-toy"]


def test_content_neighbours_order_matches_similar_titles() -> None:
    from online_models.similarity import CoWatchSimilarity, similar_titles
    from serving.catalog_cache import CatalogSnapshot

    titles = [*CATALOG, title("t-x", "X", ["Comedy", "Thriller"], cast=("Ana Lima",)),
              title("t-y", "Y", ["Horror", "Comedy"]), title("t-z", "Z", [])]
    snap = CatalogSnapshot.build(1, titles)
    for t in titles:
        expected = [tid for tid, _ in similar_titles(t, titles, CoWatchSimilarity(),
                                                     len(titles))]
        assert snap.content_neighbours(t.title_id) == expected, t.title_id
        assert snap.content_neighbours(t.title_id) is snap.content_neighbours(t.title_id)


async def test_big_requests_scored_in_a_thread_give_the_same_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.routes as app_mod

    store = await catalog_store()
    await comedy_fan(store)
    rerank_body = {"profile_id": "fan", "title_ids": [t.title_id for t in CATALOG]}

    async def answers() -> list[Any]:
        async with serve(store) as (client, _, _):
            return [await (await client.get("/v1/search?q=comedy&profile_id=fan")).json(),
                    await (await client.get("/v1/search?q=night+watch")).json(),
                    await (await client.post("/v1/rerank", json=rerank_body)).json()]

    inline = await answers()
    monkeypatch.setattr(app_mod, "INLINE_SEARCH_TITLES", 0)
    monkeypatch.setattr(app_mod, "INLINE_RELEVANCE_MAX", 0)
    threaded = await answers()
    assert threaded == inline and inline[0]["items"] and inline[2]["items"]
