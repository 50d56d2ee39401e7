"""Unit tests of the web app's server side: its routes on the serving app (in-memory store,
fake impression producer and a fake topic feed; loopback only), the page-update hub, the
feed's message handling on hand-made messages, and the placeholder artwork."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import TopicPartition

from features.store import InMemoryStore
from homestream.settings import Settings
from serving import catalog_cache
from serving.app import create_app
from serving.impressions import ImpressionLogger
from serving.page_stream import (
    STREAM_QUEUE,
    FeedState,
    PageUpdateHub,
    TopicFeed,
    dead_letter_summary,
    lag_rows,
)
from serving.webapp import FEED, HUB, WEB_DIR, placeholder_svg, tag_colour
from topics.codec import default_codec
from topics.models import Artwork, DeadLetter, Title

SVG = "{http://www.w3.org/2000/svg}"


class IdleProducer:
    """A producer for the impression logger of pages that serve no home page."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no impressions expected")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class FakeFeed:
    """Stands in for the Kafka topic feed: records its calls, returns a fixed snapshot."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = False

    def ensure_started(self) -> None:
        self.started += 1

    async def wait_running(self, timeout_s: float) -> bool:
        return True

    async def stop(self) -> None:
        self.stopped = True

    def snapshot(self) -> dict[str, Any]:
        return {"status": "running", "error": None, "page_updates_seen": 3,
                "dead_letters": [{"reason": "bad"}], "lag": [], "lag_read_at_ms": None,
                "freshness": {"samples": 0}}


def title(tid: str, name: str, tags: list[list[str]]) -> Title:
    return Title(title_id=tid, name=name, genres=["Drama"], maturity_rating="PG",
                 release_date=dt.date(2024, 1, 1), duration_s=3600.0,
                 artwork=[Artwork(artwork_id=f"{tid}-art{k}", url=f"https://img/{tid}/{k}",
                                  tags=t) for k, t in enumerate(tags)])


@contextlib.asynccontextmanager
async def serve(store: InMemoryStore | None = None,
                ) -> AsyncIterator[tuple[TestClient, FakeFeed, Any]]:
    logger = ImpressionLogger("t.impressions", IdleProducer(), poll_interval_s=0.01)
    app = create_app(Settings(), store=store or InMemoryStore(), impressions=logger)
    feed = FakeFeed()
    app[FEED] = feed
    async with TestClient(TestServer(app)) as client:
        yield client, feed, app
    assert feed.stopped


def page_bytes(profile_id: str | None) -> bytes:
    return orjson.dumps({"profile_id": profile_id, "personalized": True, "country": "US",
                         "generated_at_ms": 1, "as_of_event_ts_ms": 1, "rows": []})


# -- routes -------------------------------------------------------------------------------------
async def test_pages_and_their_files_are_served() -> None:
    async with serve() as (client, _, _):
        home = await client.get("/")
        assert home.status == 200 and home.content_type == "text/html"
        assert "/static/app.js" in await home.text()
        ops = await client.get("/ops")
        assert "/static/ops.js" in await ops.text()
        js = await client.get("/static/app.js")
        assert js.status == 200 and "javascript" in js.content_type
        assert (await client.get("/static/missing.js")).status == 404


def test_every_file_the_pages_load_exists_and_every_import_is_exported() -> None:
    for html in ("index.html", "ops.html"):
        for ref in re.findall(r'(?:src|href)="/static/([^"]+)"', (WEB_DIR / html).read_text()):
            assert (WEB_DIR / ref).is_file(), (html, ref)
    for js in WEB_DIR.glob("*.js"):
        for names, module in re.findall(r'import \{([^}]*)\} from "\./([^"]+)"',
                                        js.read_text()):
            source = (WEB_DIR / module).read_text()
            for name in (n.strip() for n in names.split(",")):
                assert re.search(rf"export (?:async )?function {name}\b", source), (js, name)


async def test_placeholder_art_is_an_svg_of_the_name_and_tag_colours() -> None:
    store = InMemoryStore()
    await store.put_titles([title("t1", "Rock & <Roll>", [["dark", "cast"], ["bright"]])])
    async with serve(store) as (client, _, _):
        resp = await client.get("/art/t1/t1-art0.svg")
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        svg = ET.fromstring(await resp.text())  # well-formed despite the name's & and <
        missing_title = await client.get("/art/t9/t9-art0.svg")
        missing_art = await client.get("/art/t1/t1-art7.svg")
        assert "error" in await missing_title.json()
    one_tag = ET.fromstring(placeholder_svg("X", "t1-art1", ["bright"]))
    assert [s.get("stop-color") for s in one_tag.iter(f"{SVG}stop")] == [
        tag_colour("bright"), tag_colour("bright", 20)]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "Rock & <Roll>" in texts and "t1-art0" in texts and "dark" in texts
    fills = {s.get("stop-color") for s in svg.iter(f"{SVG}stop")}
    assert fills == {tag_colour("dark"), tag_colour("cast")}
    assert missing_title.status == 404 and missing_art.status == 404


def test_placeholder_differs_by_artwork_and_wraps_long_names() -> None:
    name = "A Very Long Title Name That Goes On and On and On Forever and Ever"
    a = placeholder_svg(name, "x-art0", ["dark"])
    b = placeholder_svg(name, "x-art1", ["kids"])
    assert a != b
    lines = [t.text for t in ET.fromstring(a).iter(f"{SVG}text")][:3]
    assert all(len(line) <= 21 for line in lines) and lines[-1].endswith("…")
    assert tag_colour("dark") != tag_colour("kids")


async def test_profiles_lists_pages_but_not_default_pages() -> None:
    store = InMemoryStore()
    await store.write_pages({"ann": page_bytes("ann"), "bob": page_bytes("bob"),
                             "anna": page_bytes("anna")}, {"US": page_bytes(None)})
    async with serve(store) as (client, _, _):
        every = await (await client.get("/ui/profiles")).json()
        some = await (await client.get("/ui/profiles?q=AN")).json()
        first = await (await client.get("/ui/profiles?limit=1")).json()
        bad = await client.get("/ui/profiles?limit=0")
        assert bad.status == 400 and (await bad.json())["field"] == "limit"
        config = await (await client.get("/ui/config")).json()
    assert every == {"profiles": ["ann", "anna", "bob"], "truncated": False}
    assert some["profiles"] == ["ann", "anna"]
    assert first == {"profiles": ["ann"], "truncated": True}
    assert config["artwork_base_url"] == Settings().artwork_base_url


async def _event(resp: Any) -> tuple[str, dict[str, Any]]:
    raw = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
    fields = dict(line.split(": ", 1) for line in raw.decode().strip().split("\n")
                  if ": " in line and not line.startswith(":"))
    return fields["event"], orjson.loads(fields["data"])


async def test_page_stream_sends_ready_then_only_the_profiles_updates() -> None:
    async with serve() as (client, feed, app):
        resp = await client.get("/ui/stream/p1")
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await _event(resp) == ("ready", {"profile_id": "p1", "feed": "running"})
        assert feed.started == 1 and app[HUB].watched == {"p1"}
        app[HUB].publish([{"profile_id": "p2", "generated_at_ms": 1},
                          {"profile_id": "p1", "generated_at_ms": 2}])
        assert await _event(resp) == ("page", {"profile_id": "p1", "generated_at_ms": 2})
        app[HUB].close()  # the server stopping ends the stream
        assert await asyncio.wait_for(resp.content.read(), 5) == b""
        bad = await client.get("/ui/stream/no%20such")
        assert bad.status == 400 and (await bad.json())["field"] == "profile_id"


async def test_ops_reports_counters_the_feed_and_the_lag_caveat() -> None:
    store = InMemoryStore()
    await store.commit_batch([], [], {"events_applied": 5, "dead_letters": 1})
    async with serve(store) as (client, feed, _):
        body = await (await client.get("/ui/ops")).json()
    assert body["counters"] == {"events_applied": 5, "dead_letters": 1}
    assert body["feed"]["dead_letters"] == [{"reason": "bad"}] and feed.started == 1
    assert "Tansu" in body["notes"]["lag"]
    assert body["streams"] == {"profiles_watched": 0, "updates_delivered": 0}


# -- the hub ------------------------------------------------------------------------------------
async def test_hub_keeps_the_newest_updates_and_forgets_closed_streams() -> None:
    hub = PageUpdateHub()
    q1, q2 = hub.subscribe("p1"), hub.subscribe("p1")
    hub.publish({"profile_id": "p1", "n": i} for i in range(STREAM_QUEUE + 3))
    assert q1.qsize() == STREAM_QUEUE and q1.get_nowait()["n"] == 3
    hub.unsubscribe("p1", q1)
    assert hub.watched == {"p1"}
    hub.unsubscribe("p1", q2)
    assert hub.watched == frozenset()
    q3 = hub.subscribe("p3")
    hub.close()
    assert q3.get_nowait() is None and hub.subscribe("p4").get_nowait() is None


# -- the feed's pure parts ----------------------------------------------------------------------
class Msg:
    """A consumed message as confluent-kafka hands it over."""

    def __init__(self, topic: str, key: bytes | None, value: bytes, offset: int = 0) -> None:
        self._topic, self._key, self._value, self._offset = topic, key, value, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset


class DirectLoop:
    def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
        fn(*args)


def encoded_page(profile_id: str, generated: int, as_of: int) -> bytes:
    return default_codec().encode_page_update({
        "profile_id": profile_id, "personalized": True, "country": "US",
        "generated_at_ms": generated, "as_of_event_ts_ms": as_of,
        "rows": [{"row_id": "r", "kind": "top_picks", "title": "T", "explanation": "e",
                  "items": [{"title_id": "t1", "artwork_id": "a", "score": 1.0}]}]})


def test_feed_delivers_watched_updates_counts_all_and_keeps_dead_letters() -> None:
    delivered: list[list[dict[str, Any]]] = []
    feed = TopicFeed(Settings(topic_prefix="x."), delivered.append, lambda: frozenset({"p1"}))
    feed._loop = DirectLoop()  # type: ignore[assignment]
    letter = default_codec().encode_dead_letter(DeadLetter(
        source_topic="x.player-events", partition=2, offset=9, value=b"\x00\x01", reason="bad",
        error_type="DecodeError", failed_at_ms=5))
    now_ms = 1_800_000_000_000
    feed._handle([Msg("x.homepage-updates", b"p1", encoded_page("p1", now_ms, now_ms - 300)),
                  Msg("x.homepage-updates", b"p2", encoded_page("p2", now_ms, 0)),
                  Msg("x.homepage-updates", b"p1", b"garbage"),
                  Msg("x.dead-letter", None, letter, offset=4)])
    assert delivered == [[{"profile_id": "p1", "generated_at_ms": now_ms,
                           "as_of_event_ts_ms": now_ms - 300, "personalized": True,
                           "rows": 1}]]
    snap = feed.snapshot()
    assert snap["page_updates_seen"] == 3
    assert snap["dead_letters"][0]["reason"] == "bad"
    assert snap["dead_letters"][0]["source_offset"] == 9 and snap["dead_letters"][0]["offset"] == 4
    # two pages decoded (p2 for freshness); only p1 has an event time
    assert snap["freshness"]["event_to_page_p50_ms"] == 300
    assert snap["freshness"]["samples"] == 2


def test_undecodable_dead_letter_is_listed_with_the_reason() -> None:
    summary = dead_letter_summary(default_codec(), b"nope", offset=7)
    assert summary["offset"] == 7 and "undecodable" in summary["reason"]


def test_lag_rows_leave_unknown_offsets_unknown() -> None:
    rows = lag_rows([TopicPartition("e", 0, 5), TopicPartition("e", 1, -1001)],
                    {("e", 0): 8, ("e", 1): 3})
    assert [(r["committed"], r["lag"]) for r in rows] == [(5, 3), (None, None)]


@pytest.mark.parametrize(("age_s", "counted"), [(1.0, 1), (120.0, 0)])
def test_freshness_counts_only_the_last_minute(age_s: float, counted: int) -> None:
    state = FeedState()
    state.add_freshness(1000.0 - age_s, 250.0, 20.0)
    summary = state.freshness_summary(1000.0)
    assert summary["samples"] == counted
    assert summary["event_to_page_p99_ms"] == (250.0 if counted else None)


# -- the benchmark's verdict ----------------------------------------------------------------
@pytest.mark.parametrize(("times", "rc"), [([120.0, 180.0, 950.0], 0), ([120.0, 1500.0], 1)])
def test_bench_webapp_exits_non_zero_when_the_p99_misses_the_target(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        times: list[float], rc: int) -> None:
    import bench.webapp

    monkeypatch.setattr(bench.webapp, "measure", lambda plays, gap_s: times)
    assert bench.webapp.main(["--plays", "3", "--max-p99-ms", "1000"]) == rc
    out = orjson.loads(capsys.readouterr().out)
    assert out["ok"] is (rc == 0) and out["plays"] == len(times)
    assert out["max_ms"] == max(times)


class CountingStore(InMemoryStore):
    """Counts the catalog version reads (one per refresh)."""

    def __init__(self) -> None:
        super().__init__()
        self.version_reads = 0

    async def catalog_version(self) -> int:
        self.version_reads += 1
        return await super().catalog_version()


async def test_artwork_of_a_title_newer_than_the_loaded_catalog_is_served_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A page made from a newer catalog than the process last read (it started before the
    catalog was stored) names titles its snapshot lacks: a miss refreshes first, at most
    once per ``MISS_REFRESH_S``, before answering 404."""
    monkeypatch.setattr(catalog_cache, "MISS_REFRESH_S", 0.2)
    store = CountingStore()
    async with serve(store) as (client, _, _):
        assert (await client.get("/art/t1/t1-art0.svg")).status == 404  # nothing stored yet
        await store.put_titles([title("t1", "New", [["dark"]])])
        reads = store.version_reads
        # within the bound of the last refresh: no store read, still unknown
        assert (await client.get("/art/t1/t1-art0.svg")).status == 404
        assert store.version_reads == reads
        await asyncio.sleep(0.25)
        resp = await client.get("/art/t1/t1-art0.svg")  # the periodic refresh is 2 s away
        assert resp.status == 200 and "New" in await resp.text()
        assert store.version_reads == reads + 1
        # an artwork the title does not have: 404 after one bounded refresh, not one a request
        for _ in range(5):
            assert (await client.get("/art/t1/t1-art9.svg")).status == 404
        assert store.version_reads <= reads + 2
