"""Erasure on the real stack (broker, Redis, worker process, server over HTTP): after
``DELETE /v1/profiles/{id}`` or ``homestream erase``, no Redis key or value names the member,
the stored model holds no parameters of theirs, and their late events bring nothing back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import aiohttp
import pytest
import redis
from aiohttp import web

from features import keys
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from online_models.top_picks import TopPicksModel
from serving.app import create_app
from serving.auth import key_digest
from streams.models import MODEL_CHECKPOINT
from tests.integration.helpers import (
    WorkerProcess,
    counters,
    make_titles,
    page,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from topics.models import Play
from topics.registry import ensure_topics

ADMIN = "admin-secret-erasure"


def plays(profile: str, now: int, titles: range) -> list[Play]:
    return [Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=now + i,
                 title_id=f"t{t}", action="progress", position_s=900.0, duration_s=1200.0,
                 country="US") for i, t in enumerate(titles)]


def naming(r: redis.Redis, who: str) -> list[str]:
    """Every key whose name or value holds ``who`` (SCAN of the whole database)."""
    needle = who.encode()
    found = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            values = [r.get(key) or b""]
        elif kind == b"hash":
            values = [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == b"zset":
            values = r.zrange(key, 0, -1)
        elif kind == b"set":
            values = list(r.smembers(key))
        elif kind == b"list":
            values = r.lrange(key, 0, -1)
        else:
            values = []
        if needle in key or any(needle in v for v in values):
            found.append(key.decode("utf-8", "replace"))
    return found


def model_knows(settings: Settings, who: str) -> bool:
    blob = redis_client(settings).get(keys.checkpoint_key(settings.key_prefix,
                                                          MODEL_CHECKPOINT))
    return blob is not None and TopPicksModel.from_bytes(blob).knows_profile(who)


async def _visit_and_erase(settings: Settings, who: str) -> tuple[int, dict]:
    """The member's page served once (artwork stored, impressions logged), then erased."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{url}/v1/homepage/{who}") as r:
                assert r.status == 200
            r_sync = redis_client(settings)
            for _ in range(100):  # the assignments are stored after the response
                if r_sync.exists(keys.artwork_key(settings.key_prefix, who)):
                    break
                await asyncio.sleep(0.05)
            async with http.delete(f"{url}/v1/profiles/{who}") as r:
                return r.status, await r.json()
    finally:
        await runner.cleanup()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"row_length": 5, "model_checkpoint_interval_s": 1.0,
                                       "api_keys": f"admin:{key_digest(ADMIN)}"})


def test_an_erased_member_is_gone_from_redis_and_the_model(settings: Settings) -> None:
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    gone, by_cli, stays = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("gone", "cli", "stays"))
    worker = WorkerProcess(settings)
    r = redis_client(settings)
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        now = int(time.time() * 1000)
        with PlayerProducer(settings) as producer:
            for who, titles in ((gone, range(0, 6)), (by_cli, range(6, 12)),
                                (stays, range(12, 18))):
                for ev in plays(who, now, titles):
                    producer.send(ev)
        for who in (gone, by_cli, stays):
            wait_until(lambda who=who: page(settings, who), 30, what=f"{who}'s page")
            wait_until(lambda who=who: model_knows(settings, who), 30,
                       what=f"{who} in the model checkpoint")
        assert naming(r, gone)  # the page, the state ... and the model checkpoint

        status, body = asyncio.run(_visit_and_erase(settings, gone))
        assert status == 202 and body["erased"] is True and body["keys_deleted"] >= 3
        wait_until(lambda: not naming(r, gone), 20, what=f"no key or value naming {gone}")
        assert not model_knows(settings, gone) and model_knows(settings, stays)
        assert page(settings, stays) is not None

        # a late event of the erased member (and a following one of another member)
        with PlayerProducer(settings) as producer:
            for ev in [*plays(gone, now + 10_000, range(20, 21)),
                       *plays(stays, now + 10_000, range(21, 22))]:
                producer.send(ev)
        wait_until(lambda: counters(settings).get("erased_dropped", 0) >= 1, 20,
                   what="the erased member's late event dropped")
        time.sleep(1.5)  # a checkpoint interval: nothing relearned, nothing rewritten
        assert naming(r, gone) == [] and not model_knows(settings, gone)

        # the command line does the same
        done = subprocess.run([sys.executable, "-m", "homestream.player", "erase", by_cli],
                              env={**os.environ, **settings.to_env()}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "erased 1 profile(s)" in done.stdout
        wait_until(lambda: not naming(r, by_cli), 20, what=f"no key or value naming {by_cli}")
        assert not model_knows(settings, by_cli) and model_knows(settings, stays)
    finally:
        worker.stop()
