"""The serving app end to end: pages in a real Redis, requests over real HTTP, impressions
produced to a real broker and read back with a consumer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from confluent_kafka import Consumer

from features.store import RedisStore
from serving.app import IMPRESSIONS, create_app
from settings import Settings
from topics.codec import default_codec
from topics.models import Impression
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
    from stack.local import free_port

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
