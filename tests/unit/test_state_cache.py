"""The states a worker keeps between batches (streams.state_cache): read from the store only
when not held, and never different from what the store holds (failed batches, erasure,
rebalances, a lost store)."""

from __future__ import annotations

import orjson

from features.store import InMemoryStore
from streams.processor import EventProcessor
from streams.state_cache import StateCache
from tests.unit.test_processor import TS, codec, make_processor, msg, play


class CountingStore(InMemoryStore):
    """Records the profile ids each ``load_profiles`` call asked for; ``commit_batch`` fails
    with ``ValueError`` (not an outage: the batch is isolated, event by event) for a state
    that applied an event id in :attr:`poison`."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[list[str]] = []
        self.poison: set[str] = set()

    async def load_profiles(self, profile_ids):
        self.loads.append(list(profile_ids))
        return await super().load_profiles(profile_ids)

    async def commit_batch(self, states, trending, counters, art_due=()) -> None:
        if any(self.poison.intersection(s.seen_ids) for s in states):
            raise ValueError("this state cannot be stored")
        await super().commit_batch(states, trending, counters, art_due)


async def processor(**settings) -> tuple[EventProcessor, CountingStore]:
    store = CountingStore()
    return await make_processor(TS / 1000 + 0.25, store, **settings), store


def sent(eid: str, profile: str, pos: float, offset: int, title: str = "t1") -> list:
    return [msg(codec.encode_event(play(eid, profile, title, pos, TS + offset)), profile,
                offset)]


def resume_position(store: InMemoryStore, profile: str) -> float:
    row = orjson.loads(store.pages[profile])["rows"][0]
    assert row["row_id"] == "continue-watching", row
    return row["items"][0]["resume_position_s"]


async def test_a_members_next_batch_reads_no_state_from_the_store() -> None:
    proc, store = await processor()
    await proc.process(sent("e1", "p1", 100, 1) + sent("e2", "p2", 100, 2))
    await proc.process(sent("e3", "p1", 200, 3) + sent("e4", "p3", 100, 4))
    assert store.loads == [["p1", "p2"], ["p3"]]  # p1 was held since its first batch
    held = proc.states.get_many(["p1"])[0]["p1"]
    assert held.to_json() == (await InMemoryStore.load_profiles(store, ["p1"]))["p1"].to_json()
    assert held.n_events == 2


async def test_without_a_cache_every_batch_loads_its_members() -> None:
    proc, store = await processor(state_cache_members=0)
    await proc.process(sent("e1", "p1", 100, 1))
    await proc.process(sent("e2", "p1", 200, 2))
    assert store.loads == [["p1"], ["p1"]] and len(proc.states) == 0


async def test_a_batch_that_fails_before_its_commit_is_applied_from_the_stored_state() -> None:
    proc, store = await processor()
    await proc.process(sent("e1", "p1", 100, 1))
    store.poison = {"bad"}
    # the failed batch applies "bad" and "e2" to the held state, then cannot commit it: the
    # events are applied one at a time, "e2" from the stored state, "bad" dead-lettered
    report = await proc.process(sent("e2", "p1", 200, 2) + sent("bad", "p1", 300, 3))
    assert report.applied == 1 and report.dead_letters == 1 and report.duplicates == 0
    stored = (await InMemoryStore.load_profiles(store, ["p1"]))["p1"]
    assert stored.n_events == 2 and "bad" not in stored.seen_ids
    store.poison = set()
    await proc.process(sent("e5", "p1", 400, 5))
    assert proc.states.get_many(["p1"])[0]["p1"].n_events == 3
    assert (await store.counters())["events_applied"] == 3


async def test_a_queued_page_is_rendered_from_the_stored_state_after_a_failed_batch() -> None:
    proc, store = await processor(render_window_ms=60_000)
    await proc.process(sent("e1", "p1", 100, 1))  # the first page: rendered at once
    await proc.process(sent("e2", "p1", 300, 2))  # queued: the held state is the cached one
    store.poison = {"bad"}
    await proc.process(sent("bad", "p1", 900, 3))  # changes the held state, never committed
    assert resume_position(store, "p1") == 100
    assert await proc.flush_pages(final=True) == 1
    assert resume_position(store, "p1") == 300  # the committed change, not the failed one


async def test_erasure_a_rebalance_and_a_lost_store_forget_the_held_states() -> None:
    from streams.erasure import erase_members

    proc, store = await processor()
    await proc.process(sent("e1", "p1", 100, 1) + sent("e2", "p2", 100, 2))
    assert len(proc.states) == 2
    await erase_members(proc, ["p1"])
    assert proc.states.get_many(["p1", "p2"])[1] == ["p1"]
    proc.on_rebalance()
    assert len(proc.states) == 0
    await proc.process(sent("e3", "p2", 200, 3))
    assert len(proc.states) == 1
    store.catalog.clear()
    store.version = 0  # Redis restarted with an empty dataset
    await proc.refresh_catalog()
    assert proc.store_reset and len(proc.states) == 0


async def test_a_member_marked_erased_is_not_held_once_their_events_are_dropped() -> None:
    proc, store = await processor()
    await proc.process(sent("e1", "p1", 100, 1) + sent("e2", "p2", 100, 2))
    await store.erase_profiles(["p1"], 1, 60.0)  # the server's erasure, no tombstone yet
    report = await proc.process(sent("e3", "p1", 200, 3))
    assert report.applied == 0
    assert proc.states.get_many(["p1", "p2"])[1] == ["p1"]
    assert "p1" not in store.profiles


def test_the_least_recently_used_state_goes_first() -> None:
    from features.profile import ProfileState

    cache = StateCache(2)
    cache.put_many([ProfileState("a"), ProfileState("b")])
    cache.get_many(["a"])  # "a" used: "b" is now the oldest
    cache.put_many([ProfileState("c")])
    assert cache.get_many(["a", "b", "c"]) == (
        {"a": cache._states["a"], "c": cache._states["c"]}, ["b"])
    cache.discard(["a", "zz"])
    assert len(cache) == 1
    off = StateCache(0)
    off.put_many([ProfileState("a")])
    assert len(off) == 0 and off.get_many(["a"]) == ({}, ["a"])
