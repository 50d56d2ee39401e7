"""The worker's and the learner's ``/health`` and ``/ready`` on the real broker and a Redis of
their own (stopped and restarted here): ready once the consumer holds its partitions and
Redis answers, not ready, naming Redis, while it is down."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
import urllib3

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.local import ModuleProcess, free_port, start_redis
from tests.integration.helpers import WorkerProcess, make_titles, wait_for_catalog, wait_until
from topics.models import Play
from topics.registry import ensure_topics


def probe(http: urllib3.PoolManager, url: str) -> tuple[int, dict] | None:
    """``(status, body)`` of a GET, or ``None`` while nothing listens."""
    try:
        r = http.request("GET", url, timeout=3.0, retries=False)
    except urllib3.exceptions.HTTPError:
        return None
    return r.status, orjson.loads(r.data)


def ready_with(http: urllib3.PoolManager, url: str, status: int) -> dict | None:
    got = probe(http, url)
    return got[1] if got is not None and got[0] == status else None


@pytest.fixture
def own_redis_settings(settings: Settings):
    """The test's settings on a Redis server of its own, which the test may stop."""
    redis = start_redis()
    try:
        yield settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis.port}/0"}), \
            redis
    finally:
        redis.stop()


def test_worker_is_ready_once_assigned_and_not_ready_while_redis_is_down(
        own_redis_settings: tuple[Settings, object]) -> None:
    settings, redis = own_redis_settings
    port = free_port()
    settings = settings.model_copy(update={"worker_web_port": port})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(10))
    http = urllib3.PoolManager()
    base = f"http://127.0.0.1:{port}"
    worker = WorkerProcess(settings)
    try:
        wait_for_catalog(settings, 10, timeout_s=60)
        ready = wait_until(lambda: ready_with(http, f"{base}/ready", 200), 60,
                           what="the worker's /ready to answer 200")
        assert ready["consumer"] == "ok" and ready["redis"] == "ok"
        assert {p.rsplit(":", 1)[0] for p in ready["partitions"]} <= {
            settings.topic("player-events"), settings.topic("impressions")}
        assert len(ready["partitions"]) == 2 * settings.partitions  # the only worker

        with PlayerProducer(settings) as producer:
            producer.send(Play(event_id=uuid.uuid4().hex, profile_id="hal",
                               event_ts_ms=int(time.time() * 1000), title_id="t1",
                               action="start", position_s=0.0, duration_s=1200.0))
        live = wait_until(lambda: (b := probe(http, f"{base}/health")) and b[1]["batches"]
                          and b, 30, what="a batch in the worker's /health")
        assert live[0] == 200 and 0 <= live[1]["last_batch_age_s"] < 30

        redis.stop()
        down = wait_until(lambda: ready_with(http, f"{base}/ready", 503), 10,
                          what="the worker's /ready to answer 503 without Redis")
        assert down["failed"] == ["redis"] and down["consumer"] == "ok"
        assert "ping failed" in down["redis"]
        assert probe(http, f"{base}/health")[0] == 200  # alive, only not ready
    finally:
        worker.stop()


def test_learners_are_ready_active_or_standby_and_not_without_redis(
        own_redis_settings: tuple[Settings, object]) -> None:
    settings, redis = own_redis_settings
    port, standby_port = free_port(), free_port()
    settings = settings.model_copy(update={"learner_web_port": port,
                                           "learner_mode": "topic"})
    ensure_topics(settings)
    http = urllib3.PoolManager()
    learner = ModuleProcess("streams.learner", settings.to_env(), log_prefix="learner-")
    standby = None
    try:
        ready = wait_until(lambda: ready_with(http, f"http://127.0.0.1:{port}/ready", 200), 60,
                           what="the learner's /ready to answer 200")
        assert ready["role"] == "active" and ready["redis"] == "ok"
        # a second replica joins the group without the one partition: a ready hot standby
        standby = ModuleProcess("streams.learner", settings.model_copy(
            update={"learner_web_port": standby_port}).to_env(), log_prefix="standby-")
        url = f"http://127.0.0.1:{standby_port}/ready"

        def roles() -> set[str]:
            answers = [ready_with(http, u, 200) for u in (url, f"http://127.0.0.1:{port}/ready")]
            return {a["role"] for a in answers if a is not None}

        wait_until(lambda: roles() == {"active", "standby"}, 60,
                   what="one active and one standby learner, both ready")
        redis.stop()
        down = wait_until(lambda: ready_with(http, f"http://127.0.0.1:{port}/ready", 503), 10,
                          what="the learner's /ready to answer 503 without Redis")
        assert down["failed"] == ["redis"]
    finally:
        for child in (standby, learner):
            if child is not None:
                child.stop()
