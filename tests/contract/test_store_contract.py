"""One suite, every PipelineStore implementation: in-memory and a real Redis server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from features.profile import ProfileState
from features.state_format import Playhead
from features.store import InMemoryStore, PipelineStore, RedisStore
from tests.integration.helpers import make_titles


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration),
                        pytest.param("redis-large-values", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PipelineStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    infra = request.getfixturevalue("infra")
    s = RedisStore.from_url(infra.redis_url, f"c{uuid.uuid4().hex[:8]}:",
                            large_values=request.param == "redis-large-values")
    try:
        yield s
    finally:
        await s.close()


async def test_unknown_profiles_are_absent(store: PipelineStore) -> None:
    assert await store.load_profiles(["nobody"]) == {}
    assert await store.load_profiles([]) == {}


async def test_commit_then_load_round_trips_states(store: PipelineStore) -> None:
    a, b = ProfileState("a", n_events=3, country="US"), ProfileState("b", n_events=1)
    a.progress["t1"] = Playhead(10.0, 100.0, 5)
    await store.commit_batch([a, b], [], {"events_applied": 4})
    got = await store.load_profiles(["a", "b", "c"])
    assert got == {"a": a, "b": b}
    assert (await store.counters())["events_applied"] == 4


async def test_counters_and_trending_accumulate(store: PipelineStore) -> None:
    await store.commit_batch([], [("US", 7, "t1", 1.0), ("US", 7, "t2", 3.0)], {"n": 1})
    await store.commit_batch([], [("US", 7, "t1", 4.0), ("GB", 7, "t9", 1.0)], {"n": 2})
    top = await store.top_trending(["US", "GB", "FR"], 7, 10)
    assert top["US"] == [("t1", 5.0), ("t2", 3.0)]
    assert top["GB"] == [("t9", 1.0)] and top["FR"] == []
    assert (await store.counters())["n"] == 3


async def test_trending_merges_the_previous_epoch(store: PipelineStore) -> None:
    await store.commit_batch([], [("US", 6, "old", 2.0 ** 64 * 3), ("US", 7, "new", 2.0)], {})
    top = await store.top_trending(["US"], 7, 5)
    assert top["US"] == [("old", pytest.approx(3.0)), ("new", 2.0)]
    assert (await store.top_trending(["US"], 7, 1))["US"][0][0] == "old"


async def test_pages_personal_and_default(store: PipelineStore) -> None:
    assert await store.get_page("p") is None
    await store.write_pages({"p": b'{"rows":[]}'}, {"US": b"{}"})
    assert await store.get_page("p") == b'{"rows":[]}'
    assert await store.get_default_page("US") == b"{}"
    assert await store.get_default_page("GB") is None


async def test_catalog_versions_upserts_and_deletes(store: PipelineStore) -> None:
    titles = make_titles(3)
    v0 = await store.catalog_version()
    v1 = await store.put_titles(titles)
    assert v1 > v0 and await store.catalog_version() == v1
    v2 = await store.put_titles([], ["t1"])
    version, loaded = await store.load_catalog()
    assert version == v2 > v1
    assert sorted(t.title_id for t in loaded) == ["t0", "t2"]
    assert next(t for t in loaded if t.title_id == "t0") == titles[0]


async def test_checkpoints(store: PipelineStore) -> None:
    assert await store.load_checkpoint("m") is None
    assert await store.snapshot_version() == 0
    await store.save_checkpoints({"m": b"\x00\x01"}, 1)
    assert await store.load_checkpoint("m") == b"\x00\x01"
    await store.save_checkpoints({"m": b"v2", "n": b"\xff"}, 2)
    assert [await store.load_checkpoint(k) for k in ("m", "n")] == [b"v2", b"\xff"]
    assert await store.snapshot_version() == 2  # the version moves with the blobs
    await store.save_checkpoints({}, 3)  # nothing to save is not an error
    assert await store.snapshot_version() == 3


async def test_profile_meta(store: PipelineStore) -> None:
    assert await store.load_profile_meta(["k"]) == {}
    await store.put_profile_meta({"k": {"kids": True, "max_rating": "PG"}})
    assert await store.load_profile_meta(["k", "x"]) == {"k": {"kids": True, "max_rating": "PG"}}


async def test_similar_lists(store: PipelineStore) -> None:
    assert await store.get_similar("t1") is None
    await store.write_similar({"t1": [("t2", 0.5), ("t3", 0.25)]})
    assert await store.get_similar("t1") == [("t2", 0.5), ("t3", 0.25)]


async def test_artwork_assignments(store: PipelineStore) -> None:
    assert await store.load_artwork("p") == {}
    await store.save_artwork("p", {"t1": {"artwork_id": "t1-a", "chosen_at_ms": 5}})
    await store.save_artwork("p", {"t2": {"artwork_id": "t2-b", "chosen_at_ms": 6}})
    got = await store.load_artwork("p")
    assert got == {"t1": {"artwork_id": "t1-a", "chosen_at_ms": 5},
                   "t2": {"artwork_id": "t2-b", "chosen_at_ms": 6}}
    assert await store.load_artwork("q") == {}


async def test_artwork_due_index_moves_with_the_states_and_is_per_partition(
        store: PipelineStore) -> None:
    a, b = ProfileState("a"), ProfileState("b")
    await store.commit_batch([a, b], [], {}, [(1, "a", 100), (1, "b", 300), (2, "c", 50)])
    assert await store.due_artwork([1], 300, 10) == [(1, "a")]  # strictly older than 300
    assert await store.due_artwork([1, 2], 301, 10) == [(1, "a"), (1, "b"), (2, "c")]
    assert await store.due_artwork([1, 2], 301, 1) == [(1, "a"), (2, "c")]
    assert await store.due_artwork([3], 10_000, 10) == []
    assert await store.due_artwork([], 10_000, 10) == []
    await store.commit_batch([a], [], {}, [(1, "a", None), (1, "b", 500)])
    assert await store.due_artwork([1, 2], 1000, 10) == [(1, "b"), (2, "c")]


async def test_readers_see_whole_pages_while_they_are_rewritten(store: PipelineStore) -> None:
    """A page is one value: a reader during rewrites gets an old or a new page, whole."""
    import asyncio

    import orjson

    def page(version: int) -> bytes:
        rows = [{"row_id": f"r{i}", "version": version, "items": list(range(20))}
                for i in range(10)]
        return orjson.dumps({"version": version, "rows": rows})

    await store.write_pages({"p": page(0), "q": page(0)}, {})
    seen: set[int] = set()

    async def writer() -> None:
        for v in range(1, 60):
            await store.write_pages({"p": page(v), "q": page(v)}, {})
            await asyncio.sleep(0)

    async def reader() -> None:
        for _ in range(120):
            doc = orjson.loads(await store.get_page("p"))
            assert {r["version"] for r in doc["rows"]} == {doc["version"]}
            assert len(doc["rows"]) == 10
            seen.add(doc["version"])
            await asyncio.sleep(0)

    await asyncio.gather(writer(), reader(), reader())
    assert orjson.loads(await store.get_page("q"))["version"] == 59
    assert len(seen) > 1  # the reads did overlap the rewrites


@pytest.mark.integration
async def test_a_burst_waits_for_a_free_connection(infra) -> None:
    """More concurrent reads than the pool has connections queue instead of failing."""
    import asyncio

    s = RedisStore.from_url(infra.redis_url, f"c{uuid.uuid4().hex[:8]}:", max_connections=2)
    try:
        await s.write_pages({"p": b'{"rows":[]}'}, {})
        got = await asyncio.gather(*(s.get_page("p") for _ in range(50)))
        assert got == [b'{"rows":[]}'] * 50
        assert len(s.client.connection_pool._in_use_connections) == 0
    finally:
        await s.close()


async def test_a_snapshot_is_written_whole_and_never_over_a_newer_one(
        store: PipelineStore) -> None:
    assert await store.snapshot_version() == 0
    assert await store.save_snapshot({"top-picks": b"A", "learner": b"m1"}, 1, 10,
                                     {"t1": [("t2", 1.0)]})
    assert await store.snapshot_version() == 1
    assert await store.load_checkpoints(["top-picks", "learner", "nope"]) == {
        "top-picks": b"A", "learner": b"m1", "nope": None}
    assert await store.get_similar("t1") == [("t2", 1.0)]
    # a learner that lost its role (it covers less of the model-updates topic) is refused
    assert not await store.save_snapshot({"top-picks": b"old"}, 2, 10, {"t1": []})
    assert not await store.save_snapshot({"top-picks": b"old"}, 2, 9, {})
    assert await store.load_checkpoint("top-picks") == b"A"
    assert await store.get_similar("t1") == [("t2", 1.0)]
    assert await store.snapshot_version() == 1
    assert await store.save_snapshot({"top-picks": b"B"}, 2, 11, {})
    assert (await store.snapshot_version(), await store.load_checkpoint("top-picks")) == (2, b"B")


async def test_erasing_removes_every_per_member_entry_and_marks_the_member(
        store: PipelineStore) -> None:
    from features.keys import profile_digest

    for pid in ("gone", "kept"):
        await store.commit_batch([ProfileState(pid, n_events=1)], [], {},
                                 [(2, pid, 1_000), (-1, pid, 2_000)])
        await store.write_pages({pid: b"{}"}, {})
        await store.put_profile_meta({pid: {"kids": True}})
        await store.save_artwork(pid, {"t1": {"artwork_id": "a"}})
    assert await store.erased(["gone", "kept"]) == set()
    deleted = await store.erase_profiles(["gone"], 4, 60.0)
    # page, state, settings, artwork; Redis also keeps the resume positions beside the state
    assert deleted == (5 if isinstance(store, RedisStore) else 4)
    assert await store.erased(["gone", "kept"]) == {"gone"}
    assert await store.load_profiles(["gone", "kept"]) == {"kept": ProfileState("kept",
                                                                                 n_events=1)}
    assert await store.get_page("gone") is None and await store.get_page("kept") == b"{}"
    assert await store.load_profile_meta(["gone"]) == {}
    assert await store.load_artwork("gone") == {}
    assert await store.due_artwork([-1, 2], 10_000, 10) == [(-1, "kept"), (2, "kept")]
    [(digest, _)] = await store.erasures_since(0)
    assert digest == profile_digest("gone")


@pytest.mark.integration
async def test_a_large_values_store_packs_in_python_and_round_trips_large_pages(
        infra: object) -> None:
    s = RedisStore.from_url(infra.redis_url, f"c{uuid.uuid4().hex[:8]}:",  # type: ignore[attr-defined]
                            large_values=True)
    try:
        pages = {f"p{i}": bytes([i]) * (20_000 + i) for i in range(40)}  # over the 6 KB cutoff
        await s.write_pages(pages, {"US": b"x" * 7_000})
        assert [await s.get_page(p) for p in pages] == list(pages.values())
        assert await s.get_default_page("US") == b"x" * 7_000
        conn = await s.client.connection_pool.get_connection()
        try:
            assert conn._command_packer is None  # redis-py's Python packer, not hiredis's
            assert isinstance(conn, redis.asyncio.Connection)  # still the scheme's class
            assert len(conn.pack_command("SET", "k", b"v" * 10_000)) > 1  # value kept apart
        finally:
            await s.client.connection_pool.release(conn)
    finally:
        await s.close()


def test_large_values_keep_the_connection_class_of_every_url_scheme() -> None:
    import redis.asyncio.connection as rc

    for url, base in [("redis://h:1/0", rc.Connection), ("rediss://h:1/0", rc.SSLConnection),
                      ("unix:///tmp/r.sock", rc.UnixDomainSocketConnection)]:
        pool = RedisStore.from_url(url, "p:", large_values=True).client.connection_pool
        assert issubclass(pool.connection_class, base)
        assert pool.make_connection()._command_packer is None
    assert RedisStore.from_url("redis://h:1/0", "p:").client.connection_pool.connection_class \
        is rc.Connection
