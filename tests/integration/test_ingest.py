"""``POST /v1/events`` on the real stack: a player posts a session over HTTP, the server
produces it to the broker, the worker applies it and the member's served page changes; a
bad event in the same array is rejected with its field and reason while the others are
accepted. And against a broker that does not answer, the route says 503 with the events
that were not acknowledged."""

from __future__ import annotations

import time
import uuid

import orjson
import urllib3
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from homestream.settings import Settings
from homestream.stack.local import free_port
from serving.http import error_middleware
from serving.ingest import add_ingest
from tests.integration.helpers import counters, wait_until
from tests.integration.test_end_to_end import (
    continue_watching,
    get_page,
    running_pipeline,
    stored_state,
)


def play(profile_id: str, title_id: str, action: str, position_s: float,
         ts_ms: int) -> dict:
    return {"type": "play", "event_id": uuid.uuid4().hex, "profile_id": profile_id,
            "event_ts_ms": ts_ms, "title_id": title_id, "action": action,
            "position_s": position_s, "duration_s": 1200.0, "country": "US", "device": "tv"}


def post(http: urllib3.PoolManager, base: str, events: list) -> tuple[int, dict]:
    r = http.request("POST", f"{base}/v1/events", body=orjson.dumps(events),
                     headers={"Content-Type": "application/json"})
    return r.status, orjson.loads(r.data)


def test_a_session_posted_over_http_changes_the_members_page(settings: Settings) -> None:
    http = urllib3.PoolManager()
    with running_pipeline(settings) as base:
        now = int(time.time() * 1000)
        status, answer = post(http, base, [play("warmup", "t0", "start", 0.0, now)])
        assert status == 200, answer
        wait_until(lambda: continue_watching(get_page(http, base, "warmup")), 60,
                   what="the worker to apply a first posted event")
        before = get_page(http, base, "erin")
        assert before["source"] != "personal"

        session = [play("erin", "t7", "start", 0.0, now), play("erin", "t7", "progress", 400.0,
                                                                 now + 1),
                   play("erin", "t7", "progress", 700.0, now + 2)]
        bad = {**play("erin", "t8", "progress", 10.0, now + 3), "position_s": -3}
        status, answer = post(http, base, [*session, bad])
        assert status == 200, answer
        assert answer["accepted"] == [e["event_id"] for e in session]
        [rejected] = answer["rejected"]
        assert (rejected["index"], rejected["event_id"], rejected["field"]) == (
            3, bad["event_id"], "position_s")
        assert rejected["reason"] == "Input should be greater than or equal to 0"
        assert rejected["error"].startswith("Play.position_s: ")

        after = wait_until(lambda: continue_watching(get_page(http, base, "erin")), 10,
                           what="erin's page to show the posted session")
        assert after == ["t7"]
        page = get_page(http, base, "erin")
        assert page["source"] == "personal" and page["personalized"] is True
        # the session's three events were applied; the rejected one never reached the broker
        state = stored_state(settings, "erin")
        assert state is not None and list(state.progress) == ["t7"]
        assert counters(settings).get("dead_letters", 0) == 0

        status, answer = post(http, base, [play(f"p{i}", "t1", "start", 0.0, now)
                                           for i in range(settings.ingest_max_events + 1)])
        assert status == 413 and "HOMESTREAM_INGEST_MAX_EVENTS" in answer["error"]


async def test_events_the_broker_does_not_acknowledge_get_a_503_naming_them(
        settings: Settings) -> None:
    """A producer whose broker never answers: librdkafka times the messages out after the
    delivery timeout and the route names every event it could not vouch for."""
    dead = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}",
                                       "producer_delivery_timeout_ms": 1000})
    app = web.Application(middlewares=[error_middleware])
    add_ingest(app, dead)
    events = [play("frank", "t1", "start", 0.0, int(time.time() * 1000)),
              play("gina", "t2", "start", 0.0, int(time.time() * 1000))]
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        resp = await client.post("/v1/events", data=orjson.dumps(events))
        answer = await resp.json()
        assert resp.status == 503, answer
        assert time.monotonic() - started < 10
    assert answer["accepted"] == []
    assert sorted(answer["not_accepted"]) == sorted(e["event_id"] for e in events)
    assert "timed out" in answer["error"].lower()
