"""The serving app end to end: pages in a real Redis, requests over real HTTP, impressions
produced to a real broker and read back with a consumer."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from confluent_kafka import Consumer

from features.store import RedisStore
from homestream.settings import Settings
from serving.app import IMPRESSIONS, create_app
from topics.codec import default_codec
from topics.models import Artwork, Impression, Title
from topics.registry import ensure_topics, topic_specs


def _item(title_id: str, availability: list[str]) -> dict[str, Any]:
    return {"title_id": title_id, "name": f"Title {title_id}", "artwork_id": f"{title_id}-art1",
            "artwork_url": f"https://img.example.com/art/{title_id}-art1.jpg", "score": 0.9,
            "maturity_rating": "PG", "availability": availability}


def _page(profile_id: str | None, rows: dict[str, list[dict[str, Any]]]) -> bytes:
    return orjson.dumps({
        "profile_id": profile_id, "personalized": profile_id is not None, "country": "US",
        "generated_at_ms": 1_700_000_000_000, "as_of_event_ts_ms": 1_700_000_000_000,
        "rows": [{"row_id": rid, "kind": rid, "title": rid, "explanation": "because",
                  "items": items} for rid, items in rows.items()],
    })


def _consume(settings: Settings, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read ``expected`` messages from the impressions topic (blocking; run in a thread)."""
    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"test-serving-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    })
    try:
        consumer.subscribe([topic_specs(settings)["impressions"].name])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append(msg)
        return out
    finally:
        consumer.close()


async def test_homepage_over_http_logs_impressions_to_the_broker(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.write_pages(
            {"p1": _page("p1", {"continue-watching": [_item("t1", []), _item("t2", ["FR"])],
                                "top-picks": [_item("t3", ["US"])]})},
            {"ALL": _page(None, {"top-10": [_item("t7", []), _item("t8", [])]})},
        )
    finally:
        await store.close()

    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200, await resp.text()
                ready = await resp.json()
                assert ready["status"] == "ready"
            async with http.get(f"{base}/v1/homepage/p1?device=tv&country=US") as resp:
                assert resp.status == 200
                personal = await resp.json()
            async with http.get(f"{base}/v1/homepage/stranger") as resp:
                assert resp.status == 200
                default = await resp.json()
            async with http.get(f"{base}/v1/homepage/p1?country=usa") as resp:
                assert resp.status == 400
    finally:
        await runner.cleanup()  # flushes the impressions producer

    assert personal["source"] == "personal" and personal["profile_id"] == "p1"
    assert [[i["title_id"] for i in r["items"]] for r in personal["rows"]] == [["t1"], ["t3"]]
    assert default["source"] == "default-ALL" and default["profile_id"] == "stranger"
    assert app[IMPRESSIONS].stats()["impressions_delivered"] == 4
    assert app[IMPRESSIONS].stats()["impressions_failed"] == 0

    messages = await loop.run_in_executor(None, _consume, settings, 2)
    assert len(messages) == 2
    by_request: dict[str, list[Impression]] = {}
    for msg in messages:
        events = default_codec().decode_events(msg.value())
        assert all(isinstance(e, Impression) for e in events)
        assert {e.profile_id for e in events} == {msg.key().decode()}
        by_request[events[0].request_id] = events  # type: ignore[assignment]
    assert set(by_request) == {personal["request_id"], default["request_id"]}

    got = by_request[personal["request_id"]]
    assert [(e.row, e.column, e.row_id, e.title_id, e.artwork_id) for e in got] == [
        (0, 0, "continue-watching", "t1", "t1-art1"), (1, 0, "top-picks", "t3", "t3-art1")]
    assert all((e.device, e.country, e.event_ts_ms) == ("tv", "US", personal["served_at_ms"])
               for e in got)
    got = by_request[default["request_id"]]
    assert [(e.profile_id, e.title_id, e.column) for e in got] == [
        ("stranger", "t7", 0), ("stranger", "t8", 1)]
    assert all(e.request_id == default["request_id"] for e in got)


async def test_redis_down_readyz_503_and_homepage_503_json(settings: Settings) -> None:
    from homestream.stack.local import free_port

    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    runner = web.AppRunner(create_app(dead))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert body["status"] == "unavailable" and "ConnectionError" in body["reason"]
            async with http.get(f"{base}/v1/homepage/p1") as resp:
                assert resp.status == 503
                assert (await resp.json())["error"].startswith("store unavailable")
    finally:
        await runner.cleanup()


def _title(tid: str, name: str, genres: list[str], rating: str) -> Title:
    return Title(title_id=tid, name=name, genres=genres, maturity_rating=rating,
                 release_date=dt.date(2021, 5, 1), duration_s=5400.0,
                 artwork=[Artwork(artwork_id=f"{tid}-art1",
                                  url=f"https://img.example.com/art/{tid}-art1.jpg")])


async def test_guardrails_hold_on_every_route_over_http(settings: Settings) -> None:
    """A kids profile never gets the R title from homepage, similar, rerank or search, even
    from a page that contains it; an adult profile does."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)
    catalog = [_title("r-heist", "Midnight Heist", ["Thriller", "Family"], "R"),
               _title("g-heist", "Midnight Heist Jr", ["Thriller", "Family"], "G"),
               _title("pg-pets", "Pet Detectives", ["Family"], "PG"),
               _title("g-toons", "Toon Town", ["Family", "Animation"], "G")]
    r_item = {"title_id": "r-heist", "name": "Midnight Heist", "artwork_id": "r-heist-art1",
              "artwork_url": "https://img.example.com/art/r-heist-art1.jpg", "score": 0.9,
              "maturity_rating": "R", "genres": ["Thriller", "Family"], "availability": []}
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.put_titles(catalog)
        await store.put_profile_meta({"kid": {"kids": True, "max_rating": None,
                                              "country": "US"},
                                      "grown-up": {"kids": False}})
        rows = {"top-picks": [r_item, {**_item("g-toons", []), "maturity_rating": "G",
                                       "genres": ["Family"]}]}
        await store.write_pages({"kid": _page("kid", rows), "grown-up": _page("grown-up", rows)},
                                {"ALL": _page(None, {"top-10": [r_item]})})
        await store.write_similar({"g-heist": [("r-heist", 0.95), ("pg-pets", 0.5)]})
    finally:
        await store.close()

    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    seen: dict[str, dict[str, list[str]]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            for profile in ("kid", "grown-up"):
                got: dict[str, list[str]] = {}
                async with http.get(f"{base}/v1/homepage/{profile}?country=US") as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    got["homepage"] = [i["title_id"] for r in body["rows"] for i in r["items"]]
                async with http.get(f"{base}/v1/titles/g-heist/similar",
                                    params={"profile_id": profile, "country": "US"}) as resp:
                    assert resp.status == 200, await resp.text()
                    got["similar"] = [i["title_id"] for i in (await resp.json())["items"]]
                async with http.post(f"{base}/v1/rerank", json={
                        "profile_id": profile, "country": "US",
                        "title_ids": ["pg-pets", "r-heist", "unknown-1"]}) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                    got["rerank"] = [i["title_id"] for i in body["items"]]
                    got["removed"] = body["removed"]
                    assert body["unknown"] == ["unknown-1"]
                for q in ("Midnight Heist", "family", "heist"):
                    async with http.get(f"{base}/v1/search",
                                        params={"q": q, "profile_id": profile}) as resp:
                        assert resp.status == 200, await resp.text()
                        body = await resp.json()
                        got[f"search {q}"] = [i["title_id"] for i in body["items"]]
                        if q == "Midnight Heist":
                            assert body["mode"] == "fetch"
                seen[profile] = got
            async with http.get(f"{base}/v1/titles/nope/similar") as resp:
                assert resp.status == 404
            async with http.post(f"{base}/v1/rerank", json={"profile_id": "kid"}) as resp:
                assert resp.status == 400
                assert (await resp.json())["field"] == "title_ids"
            async with http.get(f"{base}/v1/search?q=") as resp:
                assert resp.status == 400
                assert (await resp.json())["field"] == "q"
    finally:
        await runner.cleanup()

    kid, adult = seen["kid"], seen["grown-up"]
    for route, titles in kid.items():
        if route != "removed":
            assert "r-heist" not in titles, (route, titles)
    assert kid["homepage"] == ["g-toons"]
    assert kid["similar"][0] == "pg-pets" and kid["removed"] == ["r-heist"]
    assert kid["rerank"] == ["pg-pets"]
    assert kid["search Midnight Heist"][0] == "g-heist"
    for route in ("homepage", "similar", "rerank", "search family", "search heist"):
        assert "r-heist" in adult[route], (route, adult[route])
    assert adult["homepage"] == ["r-heist", "g-toons"] and adult["similar"][0] == "r-heist"
    assert adult["search Midnight Heist"][0] == "r-heist" and adult["removed"] == []


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_stale_page_finished_title_not_served_in_continue_watching(
        settings: Settings) -> None:
    """The stored page predates the play that finished t1: Redis holds the member's state
    with t1 finished and t2 further on; the served Continue Watching row has t2 only, at its
    newest position, and the impressions logged to the broker match."""
    from features.profile import FeatureParams, ProfileState, apply_event
    from topics.models import Play

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)
    now = int(time.time() * 1000)
    cw = [{**_item(t, []), "resume_position_s": 100.0} for t in ("t1", "t2")]
    state = ProfileState("p1")
    for i, (tid, pos) in enumerate([("t1", 100.0), ("t2", 100.0), ("t1", 1190.0),
                                    ("t2", 400.0)]):
        apply_event(state, Play(event_id=f"e{i}", profile_id="p1", event_ts_ms=now + i,
                                title_id=tid, action="progress", position_s=pos,
                                duration_s=1200.0, country="US"),
                    lambda _t: ["Drama"], FeatureParams())
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.write_pages({"p1": _page("p1", {"continue-watching": cw,
                                                    "top-picks": [_item("t3", [])]})}, {})
        await store.commit_batch([state], [], {})
        stored = orjson.loads(await store.get_page("p1") or b"{}")
    finally:
        await store.close()
    assert [i["title_id"] for i in stored["rows"][0]["items"]] == ["t1", "t2"]  # stale

    app = create_app(settings)
    runner, base = await _start(app)
    try:
        async with (aiohttp.ClientSession() as http,
                    http.get(f"{base}/v1/homepage/p1?country=US") as resp):
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    finally:
        await runner.cleanup()
    assert body["source"] == "personal"
    assert [r["row_id"] for r in body["rows"]] == ["continue-watching", "top-picks"]
    assert [(i["title_id"], i["resume_position_s"]) for i in body["rows"][0]["items"]] == [
        ("t2", 400.0)]
    (msg,) = await loop.run_in_executor(None, _consume, settings, 1)
    events = default_codec().decode_events(msg.value())
    assert [(e.row_id, e.title_id) for e in events] == [  # type: ignore[union-attr]
        ("continue-watching", "t2"), ("top-picks", "t3")]


async def test_latest_row_from_the_catalog_before_any_worker_and_home_country(
        settings: Settings) -> None:
    """No worker has run: no personal or default page in Redis, only the catalog and the
    profiles' settings. An unknown member gets the newest titles allowed in their stored home
    country (none given in the request); a kids member only the allowed ones."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)

    def title(tid: str, year: int, rating: str = "PG", availability: tuple[str, ...] = (),
              ) -> Title:
        return _title(tid, f"Film {tid}", ["Drama"], rating).model_copy(update={
            "release_date": dt.date(year, 1, 1), "availability": list(availability)})

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.put_titles([title("t2019", 2019), title("t2024-fr", 2024, availability=("FR",)),
                                title("t2023-r", 2023, rating="R"), title("t2021", 2021),
                                title("t2022-us", 2022, availability=("US",))])
        await store.put_profile_meta({"fan": {"country": "FR"},
                                      "kid": {"kids": True, "country": "US"}})
    finally:
        await store.close()

    runner, base = await _start(create_app(settings.model_copy(update={"row_length": 3})))
    try:
        async with aiohttp.ClientSession() as http:
            bodies = {}
            for url in ("/v1/homepage/fan", "/v1/homepage/kid", "/v1/homepage/fan?country=US"):
                async with http.get(base + url) as resp:
                    assert resp.status == 200, await resp.text()
                    bodies[url] = await resp.json()
    finally:
        await runner.cleanup()

    def served(url: str) -> list[str]:
        body = bodies[url]
        assert body["source"] == "latest" and body["personalized"] is False, body
        assert [r["row_id"] for r in body["rows"]] == ["latest"]
        return [i["title_id"] for i in body["rows"][0]["items"]]

    assert served("/v1/homepage/fan") == ["t2024-fr", "t2023-r", "t2021"]
    assert bodies["/v1/homepage/fan"]["country"] == "FR"
    assert served("/v1/homepage/kid") == ["t2022-us", "t2021", "t2019"]
    assert served("/v1/homepage/fan?country=US") == ["t2023-r", "t2022-us", "t2021"]
