"""Compiled home pages on the real stack: a server process compiles a member's page once,
keeps the member's artwork across visits, logs what it showed, and compiles again as soon as
the worker rewrites the page or the member's settings change."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from features.store import RedisStore
from homestream.settings import Settings
from serving.app import IMPRESSIONS, create_app
from serving.home import HOME
from tests.integration.test_serving import _consume
from topics.codec import default_codec
from topics.models import Artwork, Impression, Title
from topics.registry import ensure_topics

RATINGS = ["PG", "R", "PG-13"]
TITLES = [Title(title_id=f"c{i}", name=f"Compiled {i}", genres=["Comedy"],
                maturity_rating=RATINGS[i % 3], release_date=dt.date(2024, 1, 1),
                duration_s=3600.0,
                artwork=[Artwork(artwork_id=f"c{i}-a{k}", url=f"https://img/c{i}/{k}",
                                 tags=[tag]) for k, tag in enumerate(["comedy", "cast"])])
          for i in range(12)]


def _page(version: int) -> bytes:
    titles = TITLES if version == 1 else list(reversed(TITLES))
    rows = [{"row_id": f"row-{r}", "kind": "top_picks", "title": f"Row {r}",
             "explanation": "because",
             "items": [{"title_id": t.title_id, "name": t.name, "score": 0.5,
                        "maturity_rating": t.maturity_rating, "availability": [],
                        "artwork_id": t.artwork[0].artwork_id, "artwork_url": "stored"}
                       for t in titles[r * 3:(r + 1) * 3]]}
            for r in range(4)]
    return orjson.dumps({"profile_id": "m1", "personalized": True, "country": "US",
                         "generated_at_ms": version, "as_of_event_ts_ms": version,
                         "context": {"genre:Comedy": 1.0}, "rows": rows})


def _shown(page: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    return [(i["title_id"], i["artwork_id"], i.get("propensity"))
            for r in page["rows"] for i in r["items"]]


async def test_a_page_is_compiled_once_kept_for_the_member_and_compiled_again_on_change(
        settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    await store.put_titles(TITLES)
    await store.write_pages({"m1": _page(1)}, {})
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/homepage/m1?device=tv"
    try:
        async with aiohttp.ClientSession() as http:
            async def get() -> dict[str, Any]:
                async with http.get(url) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            first = await get()
            await asyncio.sleep(0.3)  # the assignments are written after the response
            stored = await store.load_artwork("m1")
            second = await get()
            await store.write_pages({"m1": _page(2)}, {})  # the worker renders again
            third = await get()
            await store.put_profile_meta({"m1": {"max_rating": "PG"}})
            fourth = await get()
            compiled = app[HOME].compiled
    finally:
        await runner.cleanup()
        await store.close()

    decided = [i for r in first["rows"][:3] for i in r["items"]]
    assert len(decided) == 9 and all(i["policy"] == "lin_ucb" for i in decided)
    assert all(i["artwork_url"].startswith("https://img/") for i in decided)
    assert all("policy" not in i for i in first["rows"][3]["items"])
    assert {t: a["artwork_id"] for t, a in stored.items()} == {
        i["title_id"]: i["artwork_id"] for i in decided}
    assert _shown(second) == _shown(first) and second["request_id"] != first["request_id"]
    # the new page: rows of the reversed catalog, titles already assigned keep their image
    assert [i["title_id"] for i in third["rows"][0]["items"]] == ["c11", "c10", "c9"]
    kept = {t: a for t, a, _ in _shown(first)[:9]}
    assert all(a == kept[t] for t, a, _ in _shown(third)[:9] if t in kept)
    assert {i["maturity_rating"] for r in fourth["rows"] for i in r["items"]} == {"PG"}
    assert compiled == 3
    assert app[IMPRESSIONS].stats()["impressions_failed"] == 0

    messages = await loop.run_in_executor(None, _consume, settings, 4)
    by_request = {}
    for msg in messages:
        events = default_codec().decode_events(msg.value())
        by_request[events[0].request_id] = events
    for page in (first, second, third, fourth):
        got: list[Impression] = by_request[page["request_id"]]  # type: ignore[assignment]
        assert [(e.title_id, e.artwork_id) for e in got] == [
            (i["title_id"], i["artwork_id"]) for r in page["rows"] for i in r["items"]]
        assert all(e.event_ts_ms == page["served_at_ms"] and e.device == "tv" for e in got)
        for e in got[:sum(len(r["items"]) for r in page["rows"][:3])]:
            assert e.policy == "lin_ucb" and 0 < e.propensity < 1
            assert orjson.loads(e.context_json)["device"] == "tv"
