"""Erasure in the worker's batch step, on the in-memory store: the tombstone of an erased
member removes their keys and model parameters; their events in flight are dropped; a plain
settings tombstone still only resets settings."""

from __future__ import annotations

from features import keys
from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.top_picks import TopPicksModel
from streams.clock import StreamClock
from streams.processor import MODEL_CHECKPOINT, EventProcessor, MemoryDeadLetters, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000
GONE, STAYS = "erase-me-7f3a", "stays-2b"
codec = default_codec()


def play(eid: str, pid: str, title: str, ts: int = TS) -> Play:
    return Play(event_id=eid, profile_id=pid, event_ts_ms=ts, title_id=title,
                action="progress", position_s=900.0, duration_s=1200.0, country="US")


def msg(ev: Play, offset: int, partition: int = 1) -> RawMessage:
    return RawMessage("events", partition, offset, ev.profile_id.encode(),
                      codec.encode_event(ev), TS)


def tombstone(pid: str) -> RawMessage:
    return RawMessage("profiles", 0, 0, pid.encode(), None)


async def processor() -> EventProcessor:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    proc = EventProcessor(Settings(row_length=5), store, MemoryDeadLetters(),
                          clock=lambda: TS / 1000)
    await proc.process([msg(play("a", GONE, "t1"), 0), msg(play("b", STAYS, "t2"), 1),
                        msg(play("c", GONE, "t4", TS + 1), 2)])
    await proc.store.put_profile_meta({GONE: {"kids": False}, STAYS: {"kids": False}})
    await proc.store.save_artwork(GONE, {"t1": {"artwork_id": "t1-art0"}})
    await proc.checkpoint()
    return proc


async def test_the_tombstone_of_an_erased_member_removes_keys_and_model_parameters() -> None:
    proc = await processor()
    store = proc.store
    assert isinstance(store, InMemoryStore)
    assert proc.model.knows_profile(GONE) and GONE.encode() in store.checkpoints[
        MODEL_CHECKPOINT]
    await store.erase_profiles([GONE], proc.settings.partitions, 60.0)  # homestream.erase
    await proc.process_profiles([tombstone(GONE)])
    assert not proc.model.knows_profile(GONE) and proc.model.knows_profile(STAYS)
    blob = store.checkpoints[MODEL_CHECKPOINT]  # checkpointed at once, without them
    assert GONE.encode() not in blob
    assert not TopPicksModel.from_bytes(blob).knows_profile(GONE)
    for d in (store.pages, store.profiles, store.metas, store.artwork):
        assert GONE not in d and STAYS in {**store.pages, **store.profiles, **store.metas}
    assert all(GONE not in due for due in store.art_due.values())
    assert all(GONE not in m for m in proc.stream_clock._members.values())

    # their events still in flight are dropped, not applied, and bring nothing back
    rep = await proc.process([msg(play("late", GONE, "t5", TS + 5), 3),
                              msg(play("d", STAYS, "t6", TS + 6), 4)])
    assert (rep.erased, rep.applied) == (1, 1)
    assert GONE not in store.profiles and GONE not in store.pages
    assert (await store.counters())["erased_dropped"] == 1
    assert not proc.model.knows_profile(GONE)


async def test_a_settings_tombstone_without_an_erasure_only_resets_the_settings() -> None:
    proc = await processor()
    await proc.process_profiles([tombstone(GONE)])
    store = proc.store
    assert isinstance(store, InMemoryStore)
    assert proc.model.knows_profile(GONE) and GONE in store.profiles
    assert store.metas[GONE] == b"{}"


def test_every_per_member_key_kind_is_listed() -> None:
    listed = keys.member_keys("hs:", "p")
    assert listed == [keys.page_key("hs:", "p"), keys.profile_key("hs:", "p"),
                      keys.progress_key("hs:", "p"), keys.profile_meta_key("hs:", "p"),
                      keys.artwork_key("hs:", "p")]
    assert "p" not in keys.erased_key("hs:", "p").removeprefix("hs:")


def test_the_clock_forgets_members_but_keeps_its_time() -> None:
    c = StreamClock(quorum=1)
    c.observe(0, "a", TS)
    assert c.now_ms(TS) == TS
    c.forget(["a"])
    assert c.watermark_ms(0) is None and c.now_ms(TS) == TS


async def test_the_learner_forgets_erased_members_in_its_next_snapshot() -> None:
    from streams.learner import Learner
    from streams.learning import SCHEMA, RecordBuilder

    store = InMemoryStore()
    learner = Learner(Settings(), store)

    def learn(offset: int, *profiles: str) -> None:
        b = RecordBuilder()
        for p in profiles:
            b.label("events", 0, offset, p, "t1", 1.0)
        learner.learn(offset, codec.encode(SCHEMA, b.build().to_avro()))

    learn(0, GONE, STAYS)
    assert await learner.snapshot()
    assert GONE.encode() in store.checkpoints[MODEL_CHECKPOINT]
    await store.erase_profiles([GONE], 6, 60.0)
    learn(1, STAYS)
    assert await learner.snapshot()
    assert not learner.models.model.knows_profile(GONE)
    assert learner.models.model.knows_profile(STAYS)
    assert GONE.encode() not in store.checkpoints[MODEL_CHECKPOINT]
    assert await learner.forget_erased() == 0  # read once, not again
