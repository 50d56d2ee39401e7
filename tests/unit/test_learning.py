"""One learning for every worker, without a broker: learning records, the model set's
high-water marks, the learner's snapshots, and workers that send their learning away."""

from __future__ import annotations

from typing import Any

import pytest

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.learner import Learner, SnapshotFenced
from streams.learning import LearningRecord, MemoryLearning, RecordBuilder
from streams.models import ModelSet
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000
codec = default_codec()


def watch(eid: str, profile: str, title: str, ts: int) -> Play:
    """A play past the watch threshold: a Top Picks label and a co-watch update."""
    return Play(event_id=eid, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=1000.0, duration_s=1200.0, country="US")


def messages(partition: int, first_offset: int, plays: list[Play]) -> list[RawMessage]:
    return [RawMessage("events", partition, first_offset + i, p.profile_id.encode(),
                       codec.encode_event(p)) for i, p in enumerate(plays)]


async def processor(store: InMemoryStore, learning: MemoryLearning | None,
                    **settings: Any) -> EventProcessor:
    return EventProcessor(Settings(**{"row_length": 5, **settings}), store,
                          MemoryDeadLetters(), learning=learning)


def history_plays(profile: str, titles: list[str], t0: int = TS) -> list[Play]:
    return [watch(f"{profile}-{t}", profile, t, t0 + i * 1000) for i, t in enumerate(titles)]


def test_a_record_survives_the_model_update_schema() -> None:
    b = RecordBuilder()
    b.label("events", 2, 7, "p", "t1", 1.0)
    b.watch("events", 2, 7, ["t0"], "t1")
    b.artwork(None, -1, -1, '{"device": "tv"}', "a1", ["dark"], 0.0, "lin_ucb")
    b.row("impressions", 2, 8, "top-picks", 3.0, 1.0)
    rec = b.build()
    name, raw = codec.decode(codec.encode("homestream.ModelUpdate", rec.to_avro()))
    assert name == "homestream.ModelUpdate" and LearningRecord.from_avro(raw) == rec
    assert rec.sources == ["events:2", "impressions:2"] and len(rec) == 4


def test_items_at_or_below_their_partitions_mark_are_skipped() -> None:
    ms = ModelSet(Settings())
    first = RecordBuilder()
    for off in (10, 11):
        first.watch("ev", 0, off, ["a"], f"t{off}")
    ms.learn(first.build())
    assert ms.meta.hwm == {"ev:0": 11} and ms.cowatch.n_learned == 2
    # the same messages replayed in a longer batch (a worker crashed before its commit):
    # only offset 12 is new; another partition's offsets are its own
    replay = RecordBuilder()
    for off in (10, 11, 12):
        replay.watch("ev", 0, off, ["a"], f"t{off}")
    replay.watch("ev", 1, 5, ["a"], "t5")
    replay.artwork(None, -1, -1, "{}", "a1", [], 0.0, "lin_ucb")  # no source: learned
    ms.learn(replay.build())
    assert ms.cowatch.n_learned == 4 and ms.meta.hwm == {"ev:0": 12, "ev:1": 5}
    assert ms.meta.counters == {"labels": 0, "watches": 4, "artwork": 1, "rows": 0,
                                "skipped": 2}
    again = ModelSet(Settings())
    again.restore(ms.to_blobs())
    assert again.meta.hwm == ms.meta.hwm and again.cowatch.n_learned == 4


async def test_a_worker_sends_its_learning_before_it_commits() -> None:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    sink = MemoryLearning()
    proc = await processor(store, sink)
    committed_when_sent: list[int] = []
    send = sink.send

    async def spy(record: LearningRecord) -> None:
        committed_when_sent.append((await store.counters()).get("events_applied", 0))
        await send(record)

    sink.send = spy  # type: ignore[method-assign]
    await proc.process(messages(3, 40, history_plays("p1", ["t1", "t2"])))
    assert committed_when_sent == [0]  # sent, then committed
    (rec,) = sink.records
    assert rec.sources == ["events:3"] and {w.offset for w in rec.watches} == {40, 41}
    assert [(w.history, w.title_id) for w in rec.watches] == [([], "t1"), (["t1"], "t2")]
    positives = [lab for lab in rec.labels if lab.target > 0]
    assert len(positives) == 2 and len(rec.labels) > 2  # sampled negatives travel too
    assert proc.model.n_learned == 0 and proc.cowatch.n_learned == 0  # not learned here
    assert await proc.checkpoint(force=True) is False  # the learner owns the snapshots
    assert (await store.counters())["learning_items"] == len(rec)


async def test_a_learner_fed_by_two_workers_learns_like_one_inline_worker() -> None:
    """Members split over two workers by partition; the learner's models equal those of one
    worker that learned everything in place (same items, same order per model)."""
    plays_a = history_plays("a", ["t1", "t2", "t3"])
    plays_b = history_plays("b", ["t4", "t1", "t5"], TS + 10)
    inline_store = InMemoryStore()
    await inline_store.put_titles(make_titles(12))
    inline = await processor(inline_store, None)
    await inline.process(messages(0, 0, plays_a))
    await inline.process(messages(1, 0, plays_b))

    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    sink_a, sink_b = MemoryLearning(), MemoryLearning()
    wa, wb = await processor(store, sink_a), await processor(store, sink_b)
    await wa.process(messages(0, 0, plays_a))
    await wb.process(messages(1, 0, plays_b))
    learner = Learner(Settings(row_length=5), store)
    for off, rec in enumerate([*sink_a.records, *sink_b.records]):
        learner.learn(off, codec.encode("homestream.ModelUpdate", rec.to_avro()))
    assert await learner.snapshot()
    assert learner.models.cowatch.most_similar("t1", 5) == inline.cowatch.most_similar("t1", 5)
    assert learner.models.model.n_learned == inline.model.n_learned
    # worker B's member gets worker A's co-watch learning once the snapshot is reloaded
    assert await wb.reload_models() and not await wb.reload_models()
    assert dict(wb.cowatch.most_similar("t2", 5)).keys() >= {"t1", "t3"}
    assert await store.get_similar("t2") == learner.models.cowatch.most_similar("t2", 5)


async def test_a_replayed_batch_and_a_restarted_learner_learn_each_item_once() -> None:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    sink = MemoryLearning()
    worker = await processor(store, sink)
    batch = messages(0, 0, history_plays("a", ["t1", "t2", "t3"]))
    await worker.process(batch)
    # crash before the commit: the same batch comes again (its states were not committed)
    replayed = await processor(InMemoryStore(), sink)
    await replayed.store.put_titles(make_titles(12))
    await replayed.process(batch)
    learner = Learner(Settings(), store)
    values = [codec.encode("homestream.ModelUpdate", r.to_avro()) for r in sink.records]
    learner.learn(0, values[0])
    assert await learner.snapshot()
    learner.learn(1, values[1])  # learned, then the learner dies before its next snapshot
    restarted = Learner(Settings(), store)
    resume = await restarted.restore()
    assert resume == 1
    for off in range(resume, len(values)):
        restarted.learn(off, values[off])
    await restarted.snapshot()
    counters = restarted.models.meta.counters
    assert counters["watches"] == 3 == restarted.models.cowatch.n_learned
    assert counters["skipped"] == len(sink.records[1])
    # the same record produced twice (a producer retry) is skipped whole
    restarted.learn(2, values[1])
    assert await restarted.snapshot() and restarted.models.cowatch.n_learned == 3
    # the learner that died cannot overwrite the newer snapshot if it comes back
    learner.learn(2, values[1])
    with pytest.raises(SnapshotFenced):
        await learner.snapshot()


async def test_a_bad_model_update_is_skipped_and_counted() -> None:
    learner = Learner(Settings(), InMemoryStore())
    learner.learn(0, b"not avro")
    learner.learn(1, None)
    assert learner.bad_messages == 2 and learner.models.meta.covered_offset == 1



def test_a_big_record_split_into_messages_is_learned_once_whatever_the_split() -> None:
    b = RecordBuilder()
    for off in range(50):
        b.label("ev", off % 2, off, f"p{off}", "t1", 1.0)
        b.label("ev", off % 2, off, f"p{off}", "t2", 0.0)
        b.watch("ev", off % 2, off, ["t0"], "t1")
    rec = b.build()
    parts = rec.split(20)
    assert len(parts) > 1 and all(len(p) <= 20 for p in parts)
    assert sum(len(p) for p in parts) == len(rec)
    whole, split = ModelSet(Settings()), ModelSet(Settings())
    whole.learn(rec)
    for p in parts:
        split.learn(p)
    assert split.meta.counters == whole.meta.counters and split.meta.hwm == whole.meta.hwm
    # a replay split at other places after the first two parts only learns the rest
    replay = ModelSet(Settings())
    for p in parts[:2]:
        replay.learn(p)
    for p in rec.split(33):
        replay.learn(p)
    assert replay.meta.counters["watches"] == 50 and replay.meta.counters["labels"] == 100
