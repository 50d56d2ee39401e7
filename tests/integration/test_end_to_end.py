"""The whole loop over real sockets: player client -> broker -> worker -> Redis -> HTTP
server -> impressions topic -> worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
import urllib3

from features.profile import ProfileState
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.local import ModuleProcess, free_port, wait_for_port
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    profile_state,
    wait_for_catalog,
    wait_until,
)
from tests.integration.helpers import page as stored_page
from topics.models import Play
from topics.registry import ensure_topics


def stored_state(settings: Settings, profile_id: str) -> ProfileState | None:
    """A member's state as the worker stored it, read through the store boundary."""
    raw = profile_state(settings, profile_id)
    return None if raw is None else ProfileState.from_json(orjson.dumps(raw))


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[str]:
    """Worker and server processes; yields the server's base URL."""
    with running_pipeline(settings) as base:
        yield base


@contextmanager
def running_pipeline(settings: Settings,
                     workers: list[WorkerProcess] | None = None) -> Iterator[str]:
    """Start a worker and a server with ``settings``; yield the server's base URL. The
    worker goes into ``workers`` (a test may replace it); every worker there is stopped."""
    settings = settings.model_copy(update={"http_port": free_port()})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    workers = [] if workers is None else workers
    workers.append(WorkerProcess(settings))
    server = ModuleProcess("serving", settings.to_env(), log_prefix="server-")
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        wait_for_port(settings.http_port, 30, proc=server.proc)
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.stop()
        for worker in workers:
            worker.stop()


def get_page(http: urllib3.PoolManager, base: str, profile: str) -> dict:
    r = http.request("GET", f"{base}/v1/homepage/{profile}?country=US&device=tv")
    assert r.status == 200, r.data
    return orjson.loads(r.data)


def continue_watching(page: dict) -> list[str]:
    for row in page["rows"]:
        if row["row_id"] == "continue-watching":
            return [i["title_id"] for i in row["items"]]
    return []



def move_event_time_and_settle(settings: Settings, producer: PlayerProducer, other: str,
                               served_ms: int, n: int, member: str) -> dict[str, int]:
    """Another member's event moves event time past the reward window (2 s) + lateness
    (0.5 s); wait for the timer to settle ``member``'s ``n`` decisions; the counters."""
    producer.send(Play(event_id=uuid.uuid4().hex, profile_id=other,
                       event_ts_ms=served_ms + 2000 + 500 + 1000, title_id="t4",
                       action="start", position_s=0.0, duration_s=1200.0, country="US"))
    producer.flush()
    return wait_until(lambda: (c := counters(settings)).get("artwork_settled_by_watermark", 0)
                      >= n and c, 20, what=f"{member}'s decisions settled by the timer")

def test_a_play_changes_the_served_page_within_two_seconds_and_impressions_loop_back(
        settings: Settings, pipeline: str) -> None:
    http = urllib3.PoolManager()
    # warm-up: the worker has joined its group once a first event shows on a page
    with PlayerProducer(settings) as producer:
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="warmup",
                           event_ts_ms=int(time.time() * 1000), title_id="t0",
                           action="start", position_s=0.0, duration_s=1200.0, country="US"))
    wait_until(lambda: continue_watching(get_page(http, pipeline, "warmup")), 60,
               what="the worker to process a first event")

    before = get_page(http, pipeline, "dana")
    assert before["personalized"] is False and before["source"] != "personal"

    sent_at = time.monotonic()
    with PlayerProducer(settings) as producer:
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="dana",
                           event_ts_ms=int(time.time() * 1000), title_id="t5",
                           action="progress", position_s=700.0, duration_s=1200.0,
                           country="US", device="tv"))
    after = wait_until(lambda: continue_watching(get_page(http, pipeline, "dana")), 2.0,
                       what="dana's served page to show t5 in Continue Watching")
    elapsed = time.monotonic() - sent_at
    assert after == ["t5"]
    assert elapsed < 2.0

    served = get_page(http, pipeline, "dana")
    assert served["source"] == "personal" and served["personalized"] is True
    shown = sum(len(r["items"]) for r in served["rows"])
    # the served pages were logged as impressions, which the worker counts per title (the
    # page served before the play, a fallback page, was logged too: wait for this one's)
    state = wait_until(lambda: (s := profile_state(settings, "dana"))
                       and s["impressions"].get("t5", 0) >= 1 and s, 20,
                       what="dana's impressions back in the worker")
    assert sum(state["impressions"].values()) >= shown


def test_impression_to_quality_play_rewards_the_artwork_policy(settings: Settings) -> None:
    """With positives paid at once (delayed ones: the test further down)."""
    settings = settings.model_copy(update={"artwork_delayed_positives": False})
    with running_pipeline(settings) as pipeline:
        _quality_play_rewards_at_once(settings, pipeline)


def _quality_play_rewards_at_once(settings: Settings, pipeline: str) -> None:
    from online_models.bandits import ArtworkPolicy
    from tests.integration.helpers import redis_client

    http = urllib3.PoolManager()
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:  # gives the member a personal page
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="ivy", event_ts_ms=now,
                           title_id="t3", action="start", position_s=0.0, duration_s=1200.0,
                           country="US"))
    wait_until(lambda: get_page(http, pipeline, "ivy")["source"] == "personal", 30,
               what="ivy's personal page")
    served = get_page(http, pipeline, "ivy")
    shown = served["rows"][1]["items"][0]
    assert shown["policy"] == settings.artwork_policy and 0 < shown["propensity"] <= 1
    # ivy plays the title she was shown, past the quality threshold, within the window
    with PlayerProducer(settings) as producer:
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="ivy",
                           event_ts_ms=served["served_at_ms"] + 5000,
                           title_id=shown["title_id"], action="progress", position_s=600.0,
                           duration_s=1200.0, country="US"))
    wait_until(lambda: counters(settings).get("artwork_quality_plays", 0) >= 1, 20,
               what="the quality play joined to its impression")
    key = f"{settings.key_prefix}model:artwork-policy"
    policy = wait_until(lambda: (raw := redis_client(settings).get(key))
                        and (p := ArtworkPolicy.from_bytes(raw)).version >= 1 and p, 20,
                        what="a checkpoint of the policy that learned the reward")
    assert policy.name == settings.artwork_policy


def test_an_impression_without_a_play_earns_zero_once_the_watermark_passes_its_window(
        settings: Settings) -> None:
    """The zero reward comes from the worker's timer when event time (any member's events)
    passes the window plus the allowed lateness, with no further event of this member; the
    wall clock passing the window settles nothing, and a late play cannot reward it again."""
    from online_models.bandits import ArtworkPolicy
    from tests.integration.helpers import redis_client

    settings = settings.model_copy(update={
        "artwork_reward_window_s": 2.0, "artwork_settle_lateness_s": 0.5,
        "artwork_settle_interval_s": 0.2, "model_checkpoint_interval_s": 0.5,
        "clock_quorum": 1})  # one other member's event moves the stream clock
    http = urllib3.PoolManager()
    workers: list[WorkerProcess] = []
    with running_pipeline(settings, workers) as base, PlayerProducer(settings) as producer:
        now = int(time.time() * 1000)
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="zoe", event_ts_ms=now,
                           title_id="t3", action="start", position_s=0.0,
                           duration_s=1200.0, country="US"))
        producer.flush()
        # wait for the stored page, not a served one: every page served logs impressions,
        # and a default page served meanwhile would add its own pending decisions
        wait_until(lambda: stored_page(settings, "zoe") is not None, 30,
                   what="zoe's personal page")
        served = get_page(http, base, "zoe")
        chosen = list({i["title_id"]: i for r in served["rows"] for i in r["items"]
                       if i.get("policy") == settings.artwork_policy}.values())
        assert chosen, "the bandit chose no artwork"
        # the impressions reach the worker: one decision per title waits in zoe's state
        state = wait_until(lambda: (s := profile_state(settings, "zoe"))
                           and len(s["pending_art"]) == len(chosen) and s, 60,
                           what="zoe's artwork decisions pending in the worker")
        assert set(state["pending_art"]) == {i["title_id"] for i in chosen}
        # the wall clock passes the window and the lateness; event time does not: no zeros
        time.sleep(2 * (2.0 + 0.5))
        assert counters(settings).get("artwork_rewards", 0) == 0
        assert len(profile_state(settings, "zoe")["pending_art"]) == len(chosen)
        settled = move_event_time_and_settle(settings, producer, "yann",
                                             served["served_at_ms"], len(chosen), "zoe")
        assert settled["artwork_settled_by_watermark"] == len(chosen)
        assert settled["artwork_rewards"] == len(chosen)
        assert settled.get("artwork_quality_plays", 0) == 0
        assert profile_state(settings, "zoe")["pending_art"] == {}
        # the policy learned exactly those zeros (its version counts learned rewards)
        key = f"{settings.key_prefix}model:artwork-policy"
        policy = wait_until(lambda: (raw := redis_client(settings).get(key))
                            and (p := ArtworkPolicy.from_bytes(raw)).version >= len(chosen)
                            and p, 20, what="a checkpoint with the zero rewards")
        assert policy.version == len(chosen)
        # a quality play inside the window, arriving after the settling, rewards nothing
        late = chosen[0]
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="zoe",
                           event_ts_ms=served["served_at_ms"] + 1000,
                           title_id=late["title_id"], action="progress", position_s=600.0,
                           duration_s=1200.0, country="US"))
        producer.flush()
        wait_until(lambda: late["title_id"] in profile_state(settings, "zoe")["progress"], 20,
                   what="zoe's late play applied")
        time.sleep(1.0)  # a few timer ticks and checkpoints
        after = counters(settings)
        assert after["artwork_rewards"] == len(chosen)
        assert after.get("artwork_quality_plays", 0) == 0
        raw = redis_client(settings).get(key)
        assert ArtworkPolicy.from_bytes(raw).version == len(chosen)
        # a restarted worker (event time moving on again) settles nothing twice
        workers[0].stop()
        workers.append(WorkerProcess(settings))
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="yann",
                           event_ts_ms=served["served_at_ms"] + 60_000, title_id="t5",
                           action="start", position_s=0.0, duration_s=1200.0, country="US"))
        producer.flush()
        wait_until(lambda: "t5" in profile_state(settings, "yann")["progress"], 60,
                   what="the restarted worker to apply a new event")
        time.sleep(1.0)
        assert counters(settings)["artwork_rewards"] == len(chosen)
        raw = redis_client(settings).get(key)
        assert ArtworkPolicy.from_bytes(raw).version == len(chosen)


def test_a_delayed_quality_play_is_paid_when_the_watermark_closes_its_window_once(
        settings: Settings) -> None:
    """With ``HOMESTREAM_ARTWORK_DELAYED_POSITIVES`` a quality play only marks its decision
    (in the member's stored state); the worker's timer pays it 1, together with the zeros of
    the other decisions of the page, when event time passes the window plus the lateness.
    Redelivering the play or restarting the worker pays nothing twice."""
    from online_models.bandits import ArtworkPolicy
    from tests.integration.helpers import redis_client

    settings = settings.model_copy(update={
        "artwork_reward_window_s": 2.0, "artwork_settle_lateness_s": 0.5,
        "artwork_settle_interval_s": 0.2, "model_checkpoint_interval_s": 0.5,
        "artwork_delayed_positives": True,
        "clock_quorum": 1})  # one other member's event moves the stream clock
    http = urllib3.PoolManager()
    workers: list[WorkerProcess] = []
    key = f"{settings.key_prefix}model:artwork-policy"
    with running_pipeline(settings, workers) as base, PlayerProducer(settings) as producer:
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="una",
                           event_ts_ms=int(time.time() * 1000), title_id="t3", action="start",
                           position_s=0.0, duration_s=1200.0, country="US"))
        producer.flush()
        # wait for the stored page, not a served one: every page served logs impressions,
        # and a default page served meanwhile would add its own pending decisions
        wait_until(lambda: stored_page(settings, "una") is not None, 30,
                   what="una's personal page")
        served = get_page(http, base, "una")
        chosen = list({i["title_id"]: i for r in served["rows"] for i in r["items"]
                       if i.get("policy") == settings.artwork_policy}.values())
        assert chosen, "the bandit chose no artwork"
        wait_until(lambda: (s := profile_state(settings, "una"))
                   and len(s["pending_art"]) == len(chosen), 60,
                   what="una's artwork decisions pending in the worker")
        # una plays the first title she was shown past the quality threshold, in the window
        won = chosen[0]
        quality = Play(event_id=uuid.uuid4().hex, profile_id="una",
                       event_ts_ms=served["served_at_ms"] + 1000, title_id=won["title_id"],
                       action="progress", position_s=600.0, duration_s=1200.0, country="US")
        producer.send(quality)
        producer.flush()
        state = wait_until(lambda: (s := stored_state(settings, "una"))
                           and (p := s.progress.get(won["title_id"])) is not None
                           and p.position_s == 600.0 and s,
                           20, what="una's quality play applied")
        # marked as won, still pending, nothing learned: the window has not closed in event time
        assert state.pending_art[won["title_id"]].won is True
        assert len(state.pending_art) == len(chosen)
        time.sleep(1.0)  # timer ticks and checkpoints: still nothing paid
        assert counters(settings).get("artwork_rewards", 0) == 0
        assert counters(settings).get("artwork_quality_plays", 0) == 0
        settled = move_event_time_and_settle(settings, producer, "vic",
                                             served["served_at_ms"], len(chosen), "una")
        assert settled["artwork_settled_by_watermark"] == len(chosen)
        assert settled["artwork_rewards"] == len(chosen)
        assert settled["artwork_quality_plays"] == 1  # the won decision, paid 1 once
        assert profile_state(settings, "una")["pending_art"] == {}
        policy = wait_until(lambda: (raw := redis_client(settings).get(key))
                            and (p := ArtworkPolicy.from_bytes(raw)).version >= len(chosen)
                            and p, 20, what="a checkpoint with the settled rewards")
        assert policy.version == len(chosen)
        # the quality play redelivered (at least once) and a restarted worker pay nothing
        producer.send(quality)
        producer.flush()
        workers[0].stop()
        workers.append(WorkerProcess(settings))
        producer.send(Play(event_id=uuid.uuid4().hex, profile_id="vic",
                           event_ts_ms=served["served_at_ms"] + 60_000, title_id="t5",
                           action="start", position_s=0.0, duration_s=1200.0, country="US"))
        producer.flush()
        wait_until(lambda: "t5" in profile_state(settings, "vic")["progress"], 60,
                   what="the restarted worker to apply a new event")
        time.sleep(1.0)
        after = counters(settings)
        assert (after["artwork_rewards"], after["artwork_quality_plays"]) == (len(chosen), 1)
        assert ArtworkPolicy.from_bytes(redis_client(settings).get(key)).version == len(chosen)
