"""The server's artwork assignments reach a real Redis: many members' in one round trip, one
``HSET`` each, over the server's own connection (:class:`~serving.redis_mux.RedisMux`) or
redis-py's pool, readable as the member's hash with later values of a title winning; a
Redis that does not answer costs the write (counted), not the caller."""

from __future__ import annotations

import signal

import orjson
import pytest

from features.keys import artwork_key
from features.store import RedisStore
from homestream.settings import Settings
from homestream.stack.local import start_redis
from serving.assignments import WRITE_CHUNK, AssignmentWriter, PlainAssignments
from serving.redis_mux import RedisMux


def _args(pairs: dict[str, dict]) -> PlainAssignments:
    return PlainAssignments([b for title, value in pairs.items()
                             for b in (title.encode(), orjson.dumps(value))])


@pytest.mark.parametrize("multiplexed", [True, False])
async def test_assignments_of_many_members_are_written_later_values_winning(
        settings: Settings, multiplexed: bool) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    mux = RedisMux.for_store(store, 1.0) if multiplexed else None
    try:
        writer = AssignmentWriter(store, mux)
        first = {f"t{i}": {"artwork_id": f"t{i}-a", "chosen_at_ms": i} for i in range(250)}
        writer.add("m1", _args(first), 250)
        writer.add("m2", _args({"tx:1": {"artwork_id": "odd:id 1"}}), 1)
        writer.add("m1", _args({"t3": {"artwork_id": "t3-b", "chosen_at_ms": 99}}), 1)
        for i in range(3 * WRITE_CHUNK):  # more members than one round trip takes
            writer.add(f"many{i}", _args({"t1": {"artwork_id": f"a{i}"}}), 1)
        await writer.aclose()
        assert writer.written == 252 + 3 * WRITE_CHUNK and writer.failed == 0
        stored = await store.load_artwork("m1")
        assert len(stored) == 250 and stored["t3"] == {"artwork_id": "t3-b", "chosen_at_ms": 99}
        assert await store.load_artwork("m2") == {"tx:1": {"artwork_id": "odd:id 1"}}
        assert all([await store.load_artwork(f"many{i}") == {"t1": {"artwork_id": f"a{i}"}}
                    for i in range(3 * WRITE_CHUNK)])
    finally:
        if mux is not None:
            await mux.aclose()
        await store.close()


@pytest.mark.parametrize("multiplexed", [True, False])
async def test_assignments_expire_a_sticky_period_after_the_last_write(
        settings: Settings, multiplexed: bool) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    mux = RedisMux.for_store(store, 1.0) if multiplexed else None
    try:
        writer = AssignmentWriter(store, mux, ttl_s=3600.0)
        for i in range(WRITE_CHUNK + 3):
            writer.add(f"ttl{i}", _args({"t1": {"artwork_id": "a"}}), 1)
        await writer.aclose()
        assert writer.failed == 0
        ttls = [await store.client.ttl(artwork_key(settings.key_prefix, f"ttl{i}"))
                for i in range(WRITE_CHUNK + 3)]
        assert all(3500 < t <= 3600 for t in ttls), ttls
        untimed = AssignmentWriter(store, mux)  # no sticky period: nothing expires
        untimed.add("forever", _args({"t1": {"artwork_id": "a"}}), 1)
        await untimed.aclose()
        assert await store.client.ttl(artwork_key(settings.key_prefix, "forever")) == -1
    finally:
        if mux is not None:
            await mux.aclose()
        await store.close()


async def test_a_hung_redis_fails_the_write_counted_and_the_next_one_succeeds() -> None:
    srv = start_redis()
    store = RedisStore.from_url(f"redis://127.0.0.1:{srv.port}/0", "hs")
    mux = RedisMux.for_store(store, 0.3)
    assert mux is not None
    try:
        writer = AssignmentWriter(store, mux)
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            writer.add("m1", _args({"t1": {"artwork_id": "lost"}}), 1)
            await writer.aclose()
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        assert writer.failed == 1 and writer.written == 0
        writer.add("m1", _args({"t1": {"artwork_id": "kept"}}), 1)
        await writer.aclose()
        assert writer.written == 1
        assert await store.load_artwork("m1") == {"t1": {"artwork_id": "kept"}}
    finally:
        await mux.aclose()
        await store.close()
        srv.stop()


@pytest.mark.parametrize("multiplexed", [True, False])
async def test_a_member_past_the_cap_keeps_the_newest_decisions(
        settings: Settings, multiplexed: bool) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    mux = RedisMux.for_store(store, 1.0) if multiplexed else None
    try:
        writer = AssignmentWriter(store, mux, ttl_s=3600.0, max_titles=8)
        writer.add("capped", _args({f"t{i}": {"artwork_id": "a", "chosen_at_ms": i}
                                    for i in range(8)}), 8)
        writer.add("small", _args({"t1": {"artwork_id": "a", "chosen_at_ms": 1}}), 1)
        await writer.aclose()
        assert len(await store.load_artwork("capped")) == 8 and writer.trimmed == 0
        # two more titles: 10 > 8, trimmed to the 6 most recently chosen
        writer.add("capped", _args({"t8": {"artwork_id": "a", "chosen_at_ms": 80},
                                    "t9": {"artwork_id": "a", "chosen_at_ms": 9}}), 2)
        await writer.aclose()
        stored = await store.load_artwork("capped")
        assert sorted(stored) == ["t4", "t5", "t6", "t7", "t8", "t9"] and writer.trimmed == 4
        assert await store.load_artwork("small") == {"t1": {"artwork_id": "a",
                                                            "chosen_at_ms": 1}}
        assert writer.failed == 0
    finally:
        if mux is not None:
            await mux.aclose()
        await store.close()
