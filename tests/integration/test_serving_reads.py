"""The home page's store read against a real Redis: one round trip (one EVALSHA, or over the
shared connection the page and assignments as plain commands beside a smaller script) for the
page or its default-page fallback, the settings, the member's state and the artwork
assignments; and the serving bench's floor server loaded by wrk with its Lua script."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from bench.floor import floor_app
from bench.serving import Load, run_wrk
from features import keys
from features.store import RedisStore
from homestream.settings import Settings
from serving.home_read import read_home


def _page(name: str) -> bytes:
    return orjson.dumps({"profile_id": None, "country": "US", "rows": [], "name": name})


class CountingClient:
    """Counts the commands a ``redis.asyncio.Redis`` client sends (each is a round trip)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.sent: list[str] = []
        inner = client.execute_command

        async def execute_command(*args, **kwargs):
            self.sent.append(str(args[0]).lower())
            return await inner(*args, **kwargs)

        client.execute_command = execute_command  # type: ignore[method-assign]


async def test_one_round_trip_reads_page_settings_state_and_assignments(
        settings: Settings) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    client = store.client
    p = settings.key_prefix
    try:
        await store.write_pages({"m1": _page("personal")},
                                {"US": _page("us"), "ALL": _page("all"), "FR": _page("fr")})
        await store.put_profile_meta({"m1": {"kids": True, "max_rating": "PG"},
                                      "m2": {"country": "FR"}})
        await client.set(keys.profile_key(p, "m1"), orjson.dumps({
            "profile_id": "m1", "progress": {"t1": [600.0, 3600.0, 5], "t2": [10.0, 90.0, 6]},
            "finished": {"t2": 7}, "recent": [["t1", 5]]}))
        await store.save_artwork("m1", {"t1": {"artwork_id": "t1-a", "chosen_at_ms": 1,
                                               "propensity": 0.5}})

        counter = CountingClient(client)
        got = await read_home(store, "m1", "US")
        assert counter.sent[-1] == "evalsha" and counter.sent.count("evalsha") <= 2
        counter.sent.clear()  # the script is loaded now
        got = await read_home(store, "m1", "US")
        assert counter.sent == ["evalsha"]
        assert orjson.loads(got.page)["name"] == "personal" and got.source == "personal"
        assert got.meta.kids and got.meta.max_rating == "PG"
        assert got.state is not None and got.state.resume_position("t1") == 600.0
        assert got.state.resume_position("t2") is None  # finished
        assert orjson.loads(got.assignments["t1"])["artwork_id"] == "t1-a"

        counter.sent.clear()
        stranger = await read_home(store, "nobody", "US")
        assert counter.sent == ["evalsha"]
        assert orjson.loads(stranger.page)["name"] == "us" and stranger.source == "default-US"
        assert stranger.state is None and stranger.assignments == {}

        elsewhere = await read_home(store, "nobody", "BR")  # no BR default page
        assert elsewhere.source == "default-ALL"
        # no country asked: the home country's default page, read once the settings are known
        counter.sent.clear()
        home = await read_home(store, "m2", None)
        assert counter.sent == ["evalsha", "get"]
        assert home.source == "default-FR" and orjson.loads(home.page)["name"] == "fr"
        await client.delete(*(keys.default_page_key(p, c) for c in ("US", "ALL", "FR")))
        assert (await read_home(store, "nobody", "US")).page is None
    finally:
        await store.close()


async def test_the_multiplexed_read_answers_as_the_script_alone(settings: Settings) -> None:
    """Over the server's shared connection the page and the assignments travel as plain
    commands beside a smaller script: every case reads the same as the one-script read."""
    from serving.redis_mux import RedisMux

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    mux = RedisMux.for_store(store, 1.0)
    assert mux is not None
    p = settings.key_prefix
    try:
        await store.write_pages({"m1": _page("personal")},
                                {"US": _page("us"), "ALL": _page("all"), "FR": _page("fr")})
        await store.put_profile_meta({"m1": {"kids": True}, "m2": {"country": "FR"}})
        await store.client.set(keys.profile_key(p, "m1"), orjson.dumps({
            "profile_id": "m1", "progress": {"t1": [600.0, 3600.0, 5]}, "recent": [["t1", 5]]}))
        await store.save_artwork("m1", {"t1": {"artwork_id": "t1-a", "chosen_at_ms": 1,
                                               "propensity": 0.5}})
        cases = [("m1", "US", True, True), ("m1", "US", False, False), ("nobody", "US", True, True),
                 ("nobody", "BR", True, True), ("m2", None, True, True)]
        for member, country, state, art in cases:
            alone = await read_home(store, member, country, with_state=state,
                                    with_assignments=art)
            shared = await read_home(store, member, country, with_state=state,
                                     with_assignments=art, mux=mux)
            for field in ("page", "source", "meta", "meta_raw", "state_raw", "flat"):
                assert getattr(shared, field) == getattr(alone, field), (member, field)
        await store.client.delete(*(keys.default_page_key(p, c) for c in ("US", "ALL", "FR")))
        assert (await read_home(store, "nobody", "US", mux=mux)).page is None
    finally:
        await mux.aclose()
        await store.close()


async def test_the_floor_server_under_wrk_returns_the_stored_pages(settings: Settings) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        await store.write_pages({f"m{i}": _page(f"m{i}") for i in range(5)}, {})
    finally:
        await store.close()
    runner = web.AppRunner(floor_app(settings.redis_url, settings.key_prefix, 8))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        requests = [(f"/v1/homepage/m{i}", None) for i in range(5)]
        res = await asyncio.get_running_loop().run_in_executor(
            None, run_wrk, f"http://127.0.0.1:{port}", requests, Load(4, 1, 1, 1))
        missing = await asyncio.get_running_loop().run_in_executor(
            None, run_wrk, f"http://127.0.0.1:{port}", [("/v1/homepage/nobody", None)],
            Load(2, 1, 1, 1))
    finally:
        await runner.cleanup()
    assert res["requests"] > 0 and res["errors"] == 0 and res["rps"] > 0
    assert 0 < res["p50_ms"] <= res["p99_ms"] <= res["max_ms"]
    assert 0 <= res["client_cpu_share"] <= 1
    assert missing["requests"] > 0 and missing["errors"] == missing["requests"]  # 404s


async def test_resume_positions_come_from_the_small_key_the_worker_writes_with_the_state(
        settings: Settings) -> None:
    from features.profile import ProfileState
    from features.state_format import Playhead
    from serving.redis_mux import RedisMux

    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    mux = RedisMux.for_store(store, 1.0)
    p = settings.key_prefix
    try:
        state = ProfileState("m9")
        state.progress["t1"] = Playhead(600.0, 3600.0, 5)
        state.progress["t2"] = Playhead(10.0, 90.0, 6)
        state.finished["t2"] = 7
        state.recent = [("t1", 5)] * 200  # a long history the read no longer carries
        await store.commit_batch([state], [], {})
        positions = await store.client.get(keys.progress_key(p, "m9"))
        assert orjson.loads(positions) == {"resume": {"t1": 600.0}}
        assert len(positions) * 10 < len(state.to_json())
        for via in (None, mux):
            got = await read_home(store, "m9", "US", mux=via)
            assert got.state_raw == positions
            assert got.state is not None and got.state.resume_position("t1") == 600.0
            assert got.state.resume_position("t2") is None
        await store.erase_profiles(["m9"], partitions=1, ttl_s=60.0)
        assert await store.client.exists(keys.progress_key(p, "m9")) == 0
    finally:
        if mux is not None:
            await mux.aclose()
        await store.close()
