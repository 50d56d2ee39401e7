"""The server's artwork assignments reach a real Redis: many members' in one pipelined round
trip, one script argument each, readable as the member's hash; a Redis that lost its scripts
(restart, SCRIPT FLUSH) gets the script again."""

from __future__ import annotations

import asyncio

import orjson

from features import keys
from features.store import RedisStore
from homestream.settings import Settings
from serving.assignments import AssignmentWriter


def _blob(pairs: dict[str, dict]) -> bytes:
    out = b""
    for title, value in pairs.items():
        t, v = title.encode(), orjson.dumps(value)
        out += b"%d:%s%d:%s" % (len(t), t, len(v), v)
    return out


async def test_assignments_are_written_in_one_pipeline_and_survive_a_script_flush(
        settings: Settings) -> None:
    store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        writer = AssignmentWriter(store)
        first = {f"t{i}": {"artwork_id": f"t{i}-a", "chosen_at_ms": i} for i in range(250)}
        writer.add("m1", _blob(first), 250)
        writer.add("m2", _blob({"tx:1": {"artwork_id": "odd:id 1"}}), 1)
        writer.add("m1", _blob({"t3": {"artwork_id": "t3-b", "chosen_at_ms": 99}}), 1)
        await writer.aclose()
        assert writer.written == 252 and writer.failed == 0
        stored = await store.load_artwork("m1")
        assert len(stored) == 250 and stored["t3"] == {"artwork_id": "t3-b", "chosen_at_ms": 99}
        assert await store.load_artwork("m2") == {"tx:1": {"artwork_id": "odd:id 1"}}

        await store.client.script_flush()
        writer.add("m3", _blob({"t1": {"artwork_id": "t1-c"}}), 1)
        await asyncio.sleep(0.2)
        await writer.aclose()
        assert await store.load_artwork("m3") == {"t1": {"artwork_id": "t1-c"}}
        assert writer.failed == 0
        assert await store.client.exists(keys.artwork_key(settings.key_prefix, "m3")) == 1
    finally:
        await store.close()
