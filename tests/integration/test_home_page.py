"""The personalized home page on the real pipeline: freshness of a taste change, catalog
changes without restart, kids settings, downstream updates, model state across restarts."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import orjson
import pytest
import redis

from features import keys
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.processor import COWATCH_CHECKPOINT, MODEL_CHECKPOINT
from tests.integration.helpers import (
    WorkerProcess,
    page,
    read_topic,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from topics.codec import default_codec
from topics.models import Artwork, Play, Profile, Title
from topics.registry import ensure_topics, topic_specs

GENRES = ("Action", "Horror", "Comedy", "Drama", "Romance")


def catalog(n: int = 60) -> list[Title]:
    return [Title(title_id=f"t{i}", name=f"Title {i}", genres=[GENRES[i % len(GENRES)]],
                  maturity_rating="R" if i % 10 == 1 else "PG",
                  release_date=dt.date(2020, 1, 1) + dt.timedelta(days=i), duration_s=1000.0,
                  artwork=[Artwork(artwork_id=f"t{i}-a", url=f"https://img.test/{i}")],
                  cast=[f"Actor {i % 7}"])
            for i in range(n)]


def watch(producer: PlayerProducer, profile: str, title: str, ts: int) -> None:
    producer.send(Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts,
                       title_id=title, action="progress", position_s=700.0, duration_s=1000.0,
                       country="US", device="tv"))


def genre_of(title_id: str) -> str:
    return GENRES[int(title_id[1:]) % len(GENRES)]


def horror_rank(p: dict) -> int:
    """Position of the first recommendation row led by Horror titles."""
    for i, row in enumerate(p["rows"]):
        if row["kind"] == "continue_watching":
            continue
        head = [genre_of(x["title_id"]) for x in row["items"][:3]]
        if head and head.count("Horror") * 2 > len(head):
            return i
    return len(p["rows"])


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"row_length": 6, "model_checkpoint_interval_s": 1.0})


@pytest.fixture
def worker(settings: Settings):
    ensure_topics(settings)
    publish_catalog(settings, catalog())
    w = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, 60, timeout_s=60)
        yield w
    finally:
        w.stop()


def test_watching_two_horror_titles_moves_a_horror_row_up_within_a_second(
        settings: Settings, worker: WorkerProcess) -> None:
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        for i, t in enumerate(["t0", "t5", "t10", "t15", "t20"]):  # an Action fan
            watch(producer, "erin", t, now + i)
    before = wait_until(lambda: (p := page(settings, "erin")) and
                        p["as_of_event_ts_ms"] >= now + 4 and p, 30, what="erin's first page")
    assert horror_rank(before) > 1

    # A player keeps one connected producer; time from handing it the events to the page.
    with PlayerProducer(settings) as producer:
        watch(producer, "someone-else", "t1", int(time.time() * 1000))
        producer.flush()  # connected, producer id acquired
        ts = int(time.time() * 1000)
        sent = time.monotonic()
        watch(producer, "erin", "t6", ts)
        watch(producer, "erin", "t16", ts + 1)
        producer.flush()
    after = wait_until(lambda: (p := page(settings, "erin")) and
                       p["as_of_event_ts_ms"] >= ts + 1 and p, 5, interval_s=0.005,
                       what="erin's page after two horror watches")
    elapsed = time.monotonic() - sent
    assert elapsed < 1.0, f"page changed after {elapsed:.3f}s"
    assert horror_rank(after) < horror_rank(before)


def test_a_new_title_reaches_new_releases_and_content_rows_without_restart(
        settings: Settings, worker: WorkerProcess) -> None:
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        for i, t in enumerate(["t1", "t6", "t11"]):  # a Horror fan
            watch(producer, "finn", t, now + i)
    wait_until(lambda: page(settings, "finn"), 30, what="finn's page")
    new = Title(title_id="fresh", name="Fresh Fright", genres=["Horror"], maturity_rating="PG",
                release_date=dt.datetime.now(dt.UTC).date(), duration_s=1000.0,
                artwork=[Artwork(artwork_id="fresh-a", url="https://img.test/fresh")])
    publish_catalog(settings, [new])
    wait_for_catalog(settings, 61)
    with PlayerProducer(settings) as producer:
        watch(producer, "finn", "t16", now + 10)

    def rows_with_fresh() -> list[str]:
        p = page(settings, "finn")
        if not p or p["as_of_event_ts_ms"] < now + 10:
            return []
        return [r["kind"] for r in p["rows"] if "fresh" in [i["title_id"] for i in r["items"]]]

    kinds = wait_until(rows_with_fresh, 15, what="the new title on finn's page")
    assert kinds[0] in {"new_releases", "top_picks", "genre", "because_you_watched"}
    # members without history get it too (new titles get an exploration bonus)
    r = redis_client(settings)

    def default_rows_with_fresh() -> list[str]:
        raw = r.get(keys.default_page_key(settings.key_prefix, "US"))
        rows = orjson.loads(raw)["rows"] if raw else []
        return [row["kind"] for row in rows if "fresh" in [i["title_id"] for i in row["items"]]]

    assert wait_until(default_rows_with_fresh, 15, what="fresh on the default page")[0] in {
        "new_releases", "genre", "popular"}


def test_kids_profile_settings_and_downstream_page_updates(
        settings: Settings, worker: WorkerProcess) -> None:
    from confluent_kafka import Producer

    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        watch(producer, "kim", "t3", now)
    wait_until(lambda: page(settings, "kim"), 30, what="kim's page")
    mature = {f"t{i}" for i in range(60) if i % 10 == 1} | {f"t{i}" for i in range(1, 60, 5)}
    codec = default_codec()
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(topic_specs(settings)["profiles"].name, key=b"kim",
                value=codec.encode_model(Profile(profile_id="kim", kids=True)))
    raw.flush(10)

    def kids_page() -> dict | None:
        p = page(settings, "kim")
        return p if p and p["kids"] else None

    p = wait_until(kids_page, 20, what="kim's page re-rendered as a kids profile")
    shown = {i["title_id"] for r in p["rows"] for i in r["items"]}
    assert shown and not shown & mature  # no R titles, no Horror (kids rules)
    updates = read_topic(settings, topic_specs(settings)["page_updates"].name, expect=2)
    decoded = [codec.decode(m.value()) for m in updates]
    assert {name for name, _ in decoded} == {"homestream.PageUpdate"}
    assert [rec["profile_id"] for _, rec in decoded].count("kim") >= 2


def test_model_state_survives_a_worker_restart(settings: Settings,
                                               worker: WorkerProcess) -> None:
    r: redis.Redis = redis_client(settings)
    ckey = keys.checkpoint_key(settings.key_prefix, MODEL_CHECKPOINT)
    cwkey = keys.checkpoint_key(settings.key_prefix, COWATCH_CHECKPOINT)
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        for i in range(20):
            watch(producer, f"m{i % 4}", f"t{i}", now + i)
    first = wait_until(lambda: (raw := r.get(ckey)) and
                       (m := TopPicksModel.from_bytes(raw)).n_learned >= 40 and m, 30,
                       what="a model checkpoint with the first 20 watches")
    worker.stop()  # graceful: the final checkpoint is written on shutdown
    saved = TopPicksModel.from_bytes(r.get(ckey))
    saved_cw = CoWatchSimilarity.from_bytes(r.get(cwkey))
    assert saved_cw.n_learned == 20  # every play reached 70%: a watch
    # m0 watched t0, t4, t8, t12, t16: each is co-watched with the other four
    saved_nbrs = {t: {n for n, _ in saved_cw.most_similar(t, 10)} for t in ("t0", "t4")}
    assert saved_nbrs["t0"] == {"t4", "t8", "t12", "t16"}
    restarted = WorkerProcess(settings)
    try:
        with PlayerProducer(settings) as producer:
            watch(producer, "m0", "t30", now + 100)
        later = wait_until(lambda: (m := TopPicksModel.from_bytes(r.get(ckey))).version
                           > saved.version and m, 60, what="a checkpoint after the restart")
        # the restarted worker continued from the checkpoint instead of starting over
        assert later.n_learned > saved.n_learned >= first.n_learned
        assert later.n_learned - saved.n_learned <= 4  # one watch: label + negative(s)
        assert later.predict_one("m1", "t1") != TopPicksModel().predict_one("m1", "t1")
        # the co-watch model too: restored and extended by the one new watch, not restarted
        later_cw = wait_until(lambda: (c := CoWatchSimilarity.from_bytes(r.get(cwkey)))
                              .n_learned > saved_cw.n_learned and c, 30,
                              what="a co-watch checkpoint after the restart")
        assert later_cw.n_learned == saved_cw.n_learned + 1
        for t, nbrs in saved_nbrs.items():
            assert {n for n, _ in later_cw.most_similar(t, 10)} == nbrs | {"t30"}, t
    finally:
        restarted.stop()
