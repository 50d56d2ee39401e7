"""Access control on the real server (real Redis and broker behind it): keys, roles, the
web app's cookie, open health routes and per-key rate limits over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from homestream.settings import Settings
from serving.app import create_app
from serving.auth import key_digest
from topics.registry import ensure_topics

READ, ADMIN, PLAYER = "reader-secret-1", "admin-secret-2", "player-secret-3"


async def _serve(settings: Settings) -> AsyncIterator[str]:
    await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[str]:
    """A server that wants keys: a read, an admin and a player (events) one; 3 requests at
    once, 1 a second per key."""
    s = settings.model_copy(update={
        "api_keys": f"read:{key_digest(READ)},admin:{key_digest(ADMIN)},"
                    f"events:{key_digest(PLAYER)}",
        "api_rate_per_s": 1.0, "api_rate_burst": 3})
    async for url in _serve(s):
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_v1_routes_need_a_key_and_say_how_to_send_it(keyed: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{keyed}/v1/homepage/p1") as r:
            assert r.status == 401
            assert "Bearer" in r.headers["WWW-Authenticate"]
            assert (await r.json())["error"] == ("missing API key: send the header "
                                                 "'Authorization: Bearer <key>' (or the "
                                                 "homestream_key cookie)")
        async with http.get(f"{keyed}/v1/search?q=x", headers=bearer("wrong")) as r:
            assert (r.status, (await r.json())["error"]) == (401, "unknown API key")
        async with http.get(f"{keyed}/v1/homepage/p1", headers=bearer(READ)) as r:
            assert r.status == 200 and (await r.json())["profile_id"] == "p1"
        async with http.get(f"{keyed}/ui/profiles", headers=bearer(READ)) as r:
            assert r.status == 200


async def test_admin_routes_need_an_admin_key(keyed: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{keyed}/v1/profiles/p1", headers=bearer(READ)) as r:
            assert r.status == 403
            assert (await r.json())["error"] == ("DELETE /v1/profiles/p1 needs admin access "
                                                 "(admin key); this key's role is read")
        async with http.get(f"{keyed}/v1/homepage/p1", headers=bearer(ADMIN)) as r:
            assert r.status == 200  # an admin key reads too


async def test_a_player_key_may_only_send_events(keyed: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{keyed}/v1/homepage/p1", headers=bearer(PLAYER)) as r:
            assert r.status == 403
            assert (await r.json())["error"] == ("GET /v1/homepage/p1 needs read access (read "
                                                 "or admin key); this key's role is events")
        async with http.post(f"{keyed}/v1/events", headers=bearer(PLAYER), json=[]) as r:
            assert r.status not in (401, 403)  # past access control (an empty array: 400)


async def test_health_metrics_and_the_web_app_stay_open_and_the_app_uses_a_cookie(
        keyed: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics", "/", "/static/common.js"):
            async with http.get(f"{keyed}{path}") as r:
                assert r.status != 401, path
        async with http.get(f"{keyed}/static/common.js") as r:
            assert "homestream_key=" in await r.text()  # the web app stores the key there
    async with aiohttp.ClientSession(cookies={"homestream_key": READ}) as http:
        async with http.get(f"{keyed}/v1/homepage/p2") as r:
            assert r.status == 200
        async with http.get(f"{keyed}/ui/config") as r:
            assert r.status == 200


async def test_a_key_over_its_rate_gets_429_with_retry_after(keyed: str) -> None:
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            async with http.get(f"{keyed}/v1/homepage/p3", headers=bearer(READ)) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert "rate limit of this key exceeded (1 requests/s, bursts of 3)" in (
                        await r.json())["error"]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        async with http.get(f"{keyed}/v1/homepage/p3", headers=bearer(ADMIN)) as r:
            assert r.status == 200  # another key has its own bucket
        await asyncio.sleep(1.1)
        async with http.get(f"{keyed}/v1/homepage/p3", headers=bearer(READ)) as r:
            assert r.status == 200  # a token came back


async def test_without_keys_the_api_is_open_and_the_server_says_so(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        async for url in _serve(settings):
            async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/homepage/p1") as r:
                assert r.status == 200
    assert any("HOMESTREAM_API_KEYS is not set: the API is open" in m for m in caplog.messages)
