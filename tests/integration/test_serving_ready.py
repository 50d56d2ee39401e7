"""``/readyz`` against real dependencies: a real Redis and the real broker answer 200 naming
both checks; a server whose impressions broker does not answer is 503 naming the broker."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from homestream.settings import Settings
from homestream.stack.local import free_port
from serving.app import create_app
from topics.registry import ensure_topics, topic_specs


async def _readyz(app: web.Application) -> tuple[int, dict, float]:
    """Start ``app`` on loopback, GET /readyz once; ``(status, body, seconds taken)``."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.get(f"{base}/readyz") as resp:
                return resp.status, await resp.json(), time.monotonic() - started
    finally:
        await runner.cleanup()


async def test_readyz_200_with_redis_and_the_broker(settings: Settings) -> None:
    await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings)
    status, body, _ = await _readyz(create_app(settings))
    assert status == 200, body
    assert body["status"] == "ready"
    assert (body["store"], body["broker"]) == ("ok", "ok")
    assert body["impressions_failed"] == 0


async def test_readyz_503_naming_the_broker_when_it_does_not_answer(
        settings: Settings) -> None:
    dead = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    status, body, took = await _readyz(create_app(dead, broker_timeout_s=0.5))
    assert status == 503, body
    assert body["status"] == "unavailable" and body["failed"] == ["broker"]
    assert body["store"] == "ok"
    assert "KafkaException" in body["broker"] and body["reason"].startswith("broker ")
    assert took < 3.0  # the probe's timeout, not librdkafka's defaults


async def test_readyz_503_when_the_impressions_topic_is_missing(settings: Settings) -> None:
    status, body, _ = await _readyz(create_app(settings))  # topics never created
    assert status == 503, body
    assert body["failed"] == ["broker"]
    assert topic_specs(settings)["impressions"].name in body["broker"]
