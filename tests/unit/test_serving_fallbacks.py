"""Serve-time checks of the home page and the fallbacks around it: finished titles leave a
stale Continue Watching row, a request without a country uses the profile's home country,
an unknown profile before any default page gets the catalog's newest titles, and /readyz
checks the broker. In-memory store, fake producers, aiohttp's test server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from features.profile import FeatureParams, ProfileState, apply_event
from features.store import InMemoryStore
from homestream.settings import Settings
from serving.app import create_app, drop_finished
from serving.impressions import ImpressionLogger
from serving.ready import BrokerCheck
from topics.codec import default_codec
from topics.models import Artwork, Impression, Play, Title

TOPIC = "t.impressions"
TS = 1_700_000_000_000


class Producer:
    """Records produced values (delivered at once); ``metadata`` answers ``list_topics``."""

    def __init__(self, metadata: Callable[[float], Any] | None = None) -> None:
        self.values: list[bytes] = []
        self.metadata = metadata
        self.list_calls = 0

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        assert value is not None
        self.values.append(value)
        if on_delivery is not None:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class CheckableProducer(Producer):
    """A producer whose ``list_topics`` answers with ``metadata(timeout)``."""

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.list_calls += 1
        assert self.metadata is not None
        return self.metadata(timeout)


def topics(*names: str, error: Any = None) -> Callable[[float], Any]:
    """A ``list_topics`` answer listing ``names``."""
    return lambda _timeout: SimpleNamespace(
        topics={n: SimpleNamespace(error=error) for n in names})


@contextlib.asynccontextmanager
async def serve(store: InMemoryStore, producer: Producer | None = None,
                settings: Settings | None = None, **kwargs: Any,
                ) -> AsyncIterator[tuple[TestClient, ImpressionLogger, Producer]]:
    producer = producer or Producer()
    logger = ImpressionLogger(TOPIC, producer, poll_interval_s=0.01)
    app = create_app(settings or Settings(), store=store, impressions=logger, **kwargs)
    async with TestClient(TestServer(app)) as client:
        yield client, logger, producer


def item(tid: str, availability: list[str] | None = None, rating: str = "PG",
         **extra: Any) -> dict[str, Any]:
    return {"title_id": tid, "name": tid, "artwork_id": f"{tid}-a", "artwork_url": "u",
            "score": 0.5, "maturity_rating": rating, "genres": ["Drama"],
            "availability": availability or [], **extra}


def page(profile_id: str | None, rows: list[tuple[str, str, list[dict[str, Any]]]],
         country: str = "US") -> bytes:
    return orjson.dumps({
        "profile_id": profile_id, "personalized": profile_id is not None, "country": country,
        "generated_at_ms": TS, "as_of_event_ts_ms": TS,
        "rows": [{"row_id": rid, "kind": kind, "title": rid, "explanation": "",
                  "items": items} for rid, kind, items in rows]})


def titles_of(body: dict[str, Any]) -> list[list[str]]:
    return [[i["title_id"] for i in r["items"]] for r in body["rows"]]


def play(profile_id: str, tid: str, position_s: float, ts: int, action: str = "progress",
         ) -> Play:
    return Play(event_id=f"{tid}-{ts}", profile_id=profile_id, event_ts_ms=ts, title_id=tid,
                action=action, position_s=position_s, duration_s=1000.0, country="US")


def state_after(profile_id: str, *plays: Play) -> ProfileState:
    state = ProfileState(profile_id)
    for ev in plays:
        apply_event(state, ev, lambda _t: ["Drama"], FeatureParams())
    return state


# -- finished titles leave Continue Watching ----------------------------------------------
STALE = page("p1", [
    ("continue-watching", "continue_watching", [
        item("done", resume_position_s=500.0), item("going", resume_position_s=100.0),
        item("gone", resume_position_s=10.0), item("again", resume_position_s=990.0)]),
    ("top-picks", "top_picks", [item("done"), item("x1")]),
])


async def test_stale_continue_watching_drops_titles_the_state_finished() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": STALE}, {})
    # after the page was materialized: "done" finished, "going" moved on, "again" finished
    # and restarted (a re-watch: back in progress); "gone" has no playhead at all
    state = state_after("p1", play("p1", "done", 500.0, TS), play("p1", "done", 980.0, TS + 1),
                        play("p1", "going", 300.0, TS + 2),
                        play("p1", "again", 990.0, TS - 5),
                        play("p1", "again", 20.0, TS + 3, action="start"))
    assert "done" in state.finished and "again" not in state.finished
    await store.commit_batch([state], [], {})
    async with serve(store) as (client, logger, producer):
        body = await (await client.get("/v1/homepage/p1?country=US")).json()
        await logger.drain()
    assert body["source"] == "personal"
    assert titles_of(body) == [["going", "again"], ["done", "x1"]]  # other rows untouched
    assert [i["resume_position_s"] for i in body["rows"][0]["items"]] == [300.0, 20.0]
    (value,) = producer.values
    logged = default_codec().decode_events(value)
    assert all(isinstance(e, Impression) for e in logged)
    assert [(e.row, e.column, e.title_id) for e in logged] == [  # type: ignore[union-attr]
        (0, 0, "going"), (0, 1, "again"), (1, 0, "done"), (1, 1, "x1")]


async def test_continue_watching_row_left_empty_is_dropped_and_no_state_keeps_the_row() -> None:
    store = InMemoryStore()
    await store.write_pages({"p1": STALE, "p2": STALE}, {})
    await store.commit_batch([state_after("p1", play("p1", "done", 990.0, TS))], [], {})
    async with serve(store) as (client, _, _):
        p1 = await (await client.get("/v1/homepage/p1")).json()
        p2 = await (await client.get("/v1/homepage/p2")).json()  # no stored state
    assert [r["row_id"] for r in p1["rows"]] == ["top-picks"]
    assert titles_of(p2)[0] == ["done", "going", "gone", "again"]


def test_drop_finished_is_pure_and_recognizes_the_row_by_kind_or_id() -> None:
    state = state_after("p", play("p", "a", 990.0, TS), play("p", "b", 100.0, TS))
    rows = [{"row_id": "continue-watching", "items": [item("a"), item("b")]},
            {"row_id": "cw", "kind": "continue_watching", "items": [item("a"), "junk"]},
            {"row_id": "top-picks", "kind": "top_picks", "items": [item("a")]}]
    before = orjson.dumps(rows)
    out = drop_finished(rows, state)
    assert orjson.dumps(rows) == before
    assert [[i["title_id"] for i in r["items"]] for r in out] == [["b"], [], ["a"]]
    assert drop_finished(rows, None) is rows


# -- the profile's home country ------------------------------------------------------------
def title(tid: str, released: dt.date, rating: str = "PG", genres: tuple[str, ...] = ("Drama",),
          availability: tuple[str, ...] = ()) -> Title:
    return Title(title_id=tid, name=f"Story {tid}", genres=list(genres), maturity_rating=rating,
                 release_date=released, duration_s=3600.0,
                 artwork=[Artwork(artwork_id=f"{tid}-a", url=f"https://img/{tid}")],
                 availability=list(availability))


CATALOG = [
    title("old", dt.date(2001, 1, 1)),
    title("fr-new", dt.date(2024, 6, 1), availability=("FR",)),
    title("r-newest", dt.date(2025, 1, 1), rating="R"),
    title("horror", dt.date(2024, 12, 1), genres=("Horror",)),
    title("us-new", dt.date(2024, 3, 1), availability=("US",)),
    title("mid", dt.date(2015, 1, 1)),
]


async def catalog_store() -> InMemoryStore:
    store = InMemoryStore()
    await store.put_titles(CATALOG)
    await store.put_profile_meta({"fr-member": {"country": "FR"},
                                  "us-member": {"country": "US"},
                                  "us-kid": {"kids": True, "country": "US"},
                                  "odd": {"country": "France"}})
    return store


async def test_homepage_without_country_uses_the_home_country_for_page_and_guardrails() -> None:
    store = await catalog_store()
    await store.write_pages({"us-member": page("us-member", [("top-picks", "top_picks", [
        item("fr-new", ["FR"]), item("us-new", ["US"]), item("old")])])}, {
        "FR": page(None, [("top10-FR", "top10", [item("fr-new", ["FR"]), item("old")])], "FR"),
        "ALL": page(None, [("top-10", "top10", [item("us-new", ["US"]), item("old")])], "ALL"),
    })
    async with serve(store) as (client, logger, producer):
        fr = await (await client.get("/v1/homepage/fr-member")).json()
        us = await (await client.get("/v1/homepage/us-member")).json()
        asked = await (await client.get("/v1/homepage/us-member?country=FR")).json()
        odd = await (await client.get("/v1/homepage/odd")).json()  # unusable stored country
        await logger.drain()
    assert fr["source"] == "default-FR" and titles_of(fr) == [["fr-new", "old"]]
    assert us["source"] == "personal" and titles_of(us) == [["us-new", "old"]]
    assert titles_of(asked) == [["fr-new", "old"]]  # the request's country wins
    assert odd["source"] == "default-ALL" and titles_of(odd) == [["us-new", "old"]]
    countries = [{e.country for e in default_codec().decode_events(v)}  # type: ignore[union-attr]
                 for v in producer.values]
    assert countries == [{"FR"}, {"US"}, {"FR"}, {"ZZ"}]


async def test_similar_rerank_search_without_country_use_the_home_country() -> None:
    store = await catalog_store()
    rerank = {"title_ids": ["fr-new", "us-new", "old"]}
    async with serve(store) as (client, _, _):
        got: dict[str, dict[str, Any]] = {}
        for pid in ("fr-member", "us-member"):
            got[f"similar {pid}"] = await (await client.get(
                f"/v1/titles/mid/similar?profile_id={pid}")).json()
            got[f"rerank {pid}"] = await (await client.post(
                "/v1/rerank", json={**rerank, "profile_id": pid})).json()
            got[f"search {pid}"] = await (await client.get(
                f"/v1/search?q=story&profile_id={pid}")).json()
        got["rerank asked"] = await (await client.post(
            "/v1/rerank", json={**rerank, "profile_id": "us-member", "country": "FR"})).json()
        got["search anonymous"] = await (await client.get("/v1/search?q=story")).json()

    def ids(body: dict[str, Any]) -> set[str]:
        return {i["title_id"] for i in body["items"]}

    for route in ("similar", "rerank", "search"):
        fr, us = got[f"{route} fr-member"], got[f"{route} us-member"]
        assert (fr["country"], us["country"]) == ("FR", "US"), route
        assert "fr-new" in ids(fr) and "us-new" not in ids(fr), route
        assert "us-new" in ids(us) and "fr-new" not in ids(us), route
    assert got["rerank us-member"]["removed"] == ["fr-new"]
    assert got["rerank asked"]["country"] == "FR" and got["rerank asked"]["removed"] == ["us-new"]
    anonymous = got["search anonymous"]
    assert anonymous["country"] is None and {"fr-new", "us-new"} <= ids(anonymous)


# -- the catalog's newest titles before any default page -----------------------------------
async def test_unknown_profile_without_default_pages_gets_the_latest_row() -> None:
    store = await catalog_store()
    async with serve(store, settings=Settings(row_length=3)) as (client, logger, producer):
        anyone = await (await client.get("/v1/homepage/stranger")).json()
        us = await (await client.get("/v1/homepage/stranger?country=US&device=tv")).json()
        kid = await (await client.get("/v1/homepage/us-kid")).json()  # home country US
        await logger.drain()
    assert anyone["source"] == "latest" and anyone["personalized"] is False
    assert anyone["profile_id"] == "stranger" and anyone["country"] == "ALL"
    (row,) = anyone["rows"]
    assert (row["row_id"], row["kind"], row["title"]) == ("latest", "latest", "Latest")
    assert titles_of(anyone) == [["r-newest", "horror", "fr-new"]]  # newest first, 3 long
    scores = [i["score"] for i in row["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0
    assert set(row["items"][0]) >= {"title_id", "name", "artwork_id", "artwork_url", "score",
                                    "maturity_rating", "genres", "availability"}
    assert us["country"] == "US" and titles_of(us) == [["r-newest", "horror", "us-new"]]
    assert kid["source"] == "latest" and titles_of(kid) == [["us-new", "mid", "old"]]
    assert (kid["kids"], kid["max_rating"]) == (True, "PG")
    logged = [[(e.row_id, e.title_id) for e in default_codec().decode_events(v)]  # type: ignore[union-attr]
              for v in producer.values]
    assert logged[1] == [("latest", "r-newest"), ("latest", "horror"), ("latest", "us-new")]


async def test_fallback_chain_personal_default_latest_empty() -> None:
    store = await catalog_store()
    await store.write_pages({"p1": page("p1", [("top-picks", "top_picks", [item("mid")])])},
                            {"US": page(None, [("top10-US", "top10", [item("old")])])})
    async with serve(store) as (client, _, _):
        sources = [(await (await client.get(url)).json())["source"] for url in (
            "/v1/homepage/p1", "/v1/homepage/us-member", "/v1/homepage/fr-member")]
    assert sources == ["personal", "default-US", "latest"]
    async with serve(InMemoryStore()) as (client, _, producer):
        empty = await (await client.get("/v1/homepage/stranger")).json()
    assert empty["source"] == "empty" and empty["rows"] == [] and producer.values == []


async def test_latest_is_empty_when_guardrails_allow_nothing() -> None:
    store = InMemoryStore()
    await store.put_titles([title("r1", dt.date(2024, 1, 1), rating="R")])
    await store.put_profile_meta({"kid": {"kids": True}})
    async with serve(store) as (client, _, _):
        kid = await (await client.get("/v1/homepage/kid")).json()
        adult = await (await client.get("/v1/homepage/adult")).json()
    assert kid["source"] == "empty" and kid["rows"] == []
    assert adult["source"] == "latest" and titles_of(adult) == [["r1"]]


# -- /readyz checks the broker -------------------------------------------------------------
async def test_readyz_checks_the_broker_and_caches_the_answer() -> None:
    producer = CheckableProducer(topics(TOPIC, "other"))
    async with serve(InMemoryStore(), producer) as (client, _, _):
        first = await client.get("/readyz")
        second = await client.get("/readyz")
        assert first.status == second.status == 200
        body = await first.json()
    assert body["status"] == "ready" and (body["store"], body["broker"]) == ("ok", "ok")
    assert producer.list_calls == 1  # the second answer came from the cache


async def test_readyz_503_names_the_broker_when_it_fails_or_lacks_the_topic() -> None:
    def down(timeout: float) -> Any:
        raise RuntimeError(f"Failed to get metadata within {timeout}s: transport failure")

    for metadata, expected in ((down, "RuntimeError: Failed to get metadata within 0.25s"),
                               (topics("other"), f"topic {TOPIC} does not exist"),
                               (topics(TOPIC, error="UNKNOWN_TOPIC"), "UNKNOWN_TOPIC")):
        producer = CheckableProducer(metadata)
        async with serve(InMemoryStore(), producer, broker_timeout_s=0.25) as (client, _, _):
            resp = await client.get("/readyz")
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unavailable" and body["failed"] == ["broker"]
        assert body["store"] == "ok" and expected in body["broker"]
        assert body["reason"].startswith("broker metadata request failed")
        assert "impressions_failed" in body


async def test_readyz_without_a_checkable_producer_says_not_checked() -> None:
    async with serve(InMemoryStore()) as (client, _, _):
        resp = await client.get("/readyz")
        assert resp.status == 200
        body = await resp.json()
    assert (body["store"], body["broker"]) == ("ok", "not checked")


async def test_broker_check_shares_one_probe_and_gives_up_on_a_hung_one() -> None:
    calls: list[float] = []

    def slow(timeout: float) -> None:
        calls.append(timeout)
        import time

        time.sleep(0.1)

    check = BrokerCheck(timeout_s=1.0, ttl_s=60.0)
    answers = await asyncio.gather(*(check.check(slow) for _ in range(5)))
    assert answers == [None] * 5 and calls == [1.0] and check.probes == 1

    def hung(_timeout: float) -> None:
        import time

        time.sleep(1.2)

    stuck = BrokerCheck(timeout_s=0.05, ttl_s=0.0)
    reason = await stuck.check(hung)
    assert reason is not None and reason.startswith("no answer")
