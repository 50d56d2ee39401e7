"""The server in several processes on one port (``HOMESTREAM_HTTP_WORKERS``), stopped by
SIGTERM while under load: every request it accepted is answered, every page it answered is
logged (one impressions message each) and it exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from features.store import RedisStore
from homestream.settings import Settings
from homestream.stack.local import free_port
from tests.integration.helpers import read_topic
from topics.codec import default_codec
from topics.registry import ensure_topics, topic_specs

ROOT = Path(__file__).resolve().parents[2]


def _page(profile_id: str) -> bytes:
    items = [{"title_id": f"t{i}", "name": f"T{i}", "artwork_id": f"t{i}-a",
              "artwork_url": "u", "score": 1.0, "maturity_rating": "PG", "availability": []}
             for i in range(3)]
    return orjson.dumps({"profile_id": profile_id, "personalized": True, "country": "US",
                         "generated_at_ms": 1, "as_of_event_ts_ms": 1,
                         "rows": [{"row_id": "top-picks", "kind": "top_picks", "title": "Top",
                                   "explanation": "", "items": items}]})


async def _load(base: str, served: dict[str, str], stop_after_s: float) -> int:
    """Clients loop over the pages until the server stops answering; returns failures."""
    failures = 0
    deadline = time.monotonic() + stop_after_s

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal failures
        i = n
        while time.monotonic() < deadline:
            pid = f"p{i % 20}"
            i += 1
            try:
                async with session.get(f"{base}/v1/homepage/{pid}?country=US") as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    served[body["request_id"]] = pid
            except (aiohttp.ClientError, ConnectionError):
                failures += 1  # refused once the server stopped listening
                await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, n) for n in range(16)))
    return failures


async def test_sigterm_under_load_drains_and_loses_no_impressions(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_topics, settings)
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.write_pages({f"p{i}": _page(f"p{i}") for i in range(20)}, {})
    finally:
        await store.close()
    port = free_port()
    env = {**os.environ, **settings.to_env(), "HOMESTREAM_HTTP_PORT": str(port),
           "HOMESTREAM_HTTP_WORKERS": "2"}
    fd, log_name = tempfile.mkstemp(prefix="serving-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serving"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass  # not listening yet: poll again
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(Path(log_name).read_text())
        served: dict[str, str] = {}
        load = asyncio.create_task(_load(base, served, stop_after_s=8.0))
        await asyncio.sleep(2.0)
        before = len(served)
        proc.send_signal(signal.SIGTERM)
        rc = await loop.run_in_executor(None, proc.wait, 60)
        await load
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = Path(log_name).read_text()
    assert rc == 0, text
    assert "serving with 2 processes" in text
    assert before > 20 and len(served) >= before

    topic = topic_specs(settings)["impressions"].name
    messages = await loop.run_in_executor(None, read_topic, settings, topic, len(served))
    logged: dict[str, int] = {}
    for msg in messages:
        events = default_codec().decode_events(msg.value())
        logged[events[0].request_id] = len(events)
        assert {e.profile_id for e in events} == {served[events[0].request_id]}
    assert set(logged) == set(served)  # every answered page, once
    assert len(messages) == len(served) and set(logged.values()) == {3}
