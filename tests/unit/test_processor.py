"""The worker's micro-batch step with an in-memory store: no broker, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.learning import MemoryLearning
from streams.processor import (
    COWATCH_CHECKPOINT,
    MODEL_CHECKPOINT,
    EventProcessor,
    MemoryDeadLetters,
    MemoryPageUpdates,
    RawMessage,
)
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Impression, Play

TS = 1_700_000_000_000
codec = default_codec()


def play(eid: str, profile: str, title: str, pos: float, ts: int = TS) -> Play:
    return Play(event_id=eid, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=pos, duration_s=1200.0, country="US")


def msg(value: bytes | None, key: str = "p1", offset: int = 0,
        timestamp_ms: int | None = None) -> RawMessage:
    return RawMessage("events", 0, offset, key.encode(), value, timestamp_ms)


async def make_processor(clock_s: float | None = None, store: InMemoryStore | None = None,
                         **settings: Any) -> EventProcessor:
    """A processor on an in-memory store (``store``, a new one by default) holding 12
    titles; ``settings`` over ``row_length=5`` (``clock_s``: a fixed wall clock, in
    seconds)."""
    store = store if store is not None else InMemoryStore()
    await store.put_titles(make_titles(12))
    clock = {} if clock_s is None else {"clock": lambda: clock_s}
    return EventProcessor(Settings(**{"row_length": 5, **settings}), store, MemoryDeadLetters(),
                          **clock)


@pytest.fixture
async def proc() -> EventProcessor:
    # quality plays paid at once: the tests of delayed positives build their own processor
    return await make_processor(TS / 1000 + 0.25, artwork_delayed_positives=False)


async def test_a_batch_re_renders_only_the_profiles_it_touched(proc: EventProcessor) -> None:
    await proc.process([msg(codec.encode_event(play(f"e{p}", p, "t1", 100)), p, i)
                        for i, p in enumerate(["p1", "p2", "p3"])])
    store = proc.store
    assert isinstance(store, InMemoryStore)
    before = dict(store.pages)
    written: list[set[str]] = []
    real = store.write_pages

    async def spy(personal, defaults):
        written.append(set(personal))
        await real(personal, defaults)

    store.write_pages = spy  # type: ignore[method-assign]
    rep = await proc.process([msg(codec.encode_event(play("e4", "p2", "t2", 900, TS + 5)),
                                  "p2", 3)])
    assert rep.pages == 1 and written == [{"p2"}]
    assert store.pages["p1"] == before["p1"] and store.pages["p3"] == before["p3"]
    assert store.pages["p2"] != before["p2"]


async def test_batch_updates_state_trending_and_page(proc: EventProcessor) -> None:
    rep = await proc.process([msg(codec.encode_event(play("1", "p1", "t1", 700))),
                              msg(codec.encode_event(play("2", "p2", "t1", 100)), "p2")])
    assert (rep.applied, rep.pages, rep.labels) == (2, 2, 2)
    assert rep.freshness_ms == [250.0, 250.0]  # page written 250 ms after the event time
    store = proc.store
    assert isinstance(store, InMemoryStore)
    page = orjson.loads(store.pages["p1"])
    assert page["rows"][0]["row_id"] == "continue-watching"
    assert page["rows"][0]["items"][0]["resume_position_s"] == 700
    top = await store.top_trending(["US", "ALL"], proc._trending_epoch(), 5)
    assert [t for t, _ in top["US"]] == ["t1"] and [t for t, _ in top["ALL"]] == ["t1"]
    assert (await store.counters())["events_applied"] == 2


async def test_a_batch_sums_its_plays_into_one_increment_per_list_and_title(
        proc: EventProcessor) -> None:
    store = proc.store
    assert isinstance(store, InMemoryStore)
    seen: list[list[Any]] = []
    real = store.commit_batch

    async def spy(states, trending, counters, art_due=()):  # type: ignore[no-untyped-def]
        seen.append(list(trending))
        await real(states, trending, counters, art_due)

    store.commit_batch = spy  # type: ignore[method-assign]
    await proc.process([msg(codec.encode_event(play(f"e{i}", p, t, 100)), p, i)
                        for i, (p, t) in enumerate([("p1", "t1"), ("p2", "t1"), ("p3", "t1"),
                                                    ("p4", "t2")])])
    incs = seen[0]
    keys = [(c, e, t) for c, e, t, _ in incs]
    assert len(keys) == len(set(keys)) == 8  # US, ALL and their popularity lists x 2 titles
    by_key = {(c, e, t): w for c, e, t, w in incs}
    for c, e, t in keys:
        if t == "t1":  # three plays at the same event time: three times one play's weight
            assert by_key[(c, e, t)] == pytest.approx(3 * by_key[(c, e, "t2")])
    top = await store.top_trending(["US"], proc._trending_epoch(), 5)
    assert [t for t, _ in top["US"]] == ["t1", "t2"]


async def test_redelivered_batch_is_idempotent_but_rerenders(proc: EventProcessor) -> None:
    batch = [msg(codec.encode_batch("p1", [play("1", "p1", "t1", 700),
                                           play("2", "p1", "t2", 100, TS + 5)]))]
    await proc.process(batch)
    store = proc.store
    assert isinstance(store, InMemoryStore)
    state_before = store.profiles["p1"]
    trending_before = dict(store.trending)
    store.pages.clear()  # as if the crash happened before the pages were written
    rep = await proc.process(batch)
    assert (rep.applied, rep.duplicates, rep.pages) == (0, 2, 1)
    assert store.profiles["p1"] == state_before and store.trending == trending_before
    assert "p1" in store.pages


async def test_bad_messages_become_dead_letters_and_good_ones_proceed(
        proc: EventProcessor) -> None:
    good = play("ok", "p1", "t3", 10)
    bad = good.model_dump() | {"event_id": "bad", "position_s": 5000.0}
    batch_value = codec.encode("homestream.EventBatch", {"profile_id": "p1", "events": [
        ("homestream.Play", good.model_dump()), ("homestream.Play", bad)]})
    rep = await proc.process([
        msg(b"\x00garbage", offset=1),
        msg(None, offset=2),
        msg(batch_value, offset=3),
        msg(codec.encode_event(play("x", "p9", "t1", 10)), key="p1", offset=4),
    ])
    letters = proc.dead_letters.letters  # type: ignore[attr-defined]
    assert [(d.offset, d.error_type) for d in letters] == [
        (1, "DecodeError"), (2, "DecodeError"), (3, "ValidationError"), (4, "KeyMismatch")]
    assert "position_s" in letters[2].reason and letters[2].event_id == "bad"
    # the invalid event of the batch is kept alone, re-encoded, so it can be replayed
    assert codec.decode_raw_events(letters[2].value)[0][1]["event_id"] == "bad"
    assert letters[0].value == b"\x00garbage"
    assert rep.applied == 1 and rep.dead_letters == 4


async def test_events_of_a_profile_apply_in_event_time_order(proc: EventProcessor) -> None:
    late = play("late", "p1", "t1", 100, TS)
    early_newer = play("new", "p1", "t1", 900, TS + 10_000)
    await proc.process([msg(codec.encode_event(early_newer)), msg(codec.encode_event(late))])
    store = proc.store
    assert isinstance(store, InMemoryStore)
    state = await store.load_profiles(["p1"])
    assert state["p1"].resume_position("t1") == 900


async def test_impressions_alone_do_not_rerender(proc: EventProcessor) -> None:
    imp = Impression(event_id="i", profile_id="p1", event_ts_ms=TS, request_id="r",
                     title_id="t1", row_id="x", row=0, column=0, artwork_id="a",
                     propensity=1.0, policy="materialized")
    rep = await proc.process([msg(codec.encode_batch("p1", [imp]))])
    assert (rep.applied, rep.pages) == (1, 0)


async def test_catalog_records_tombstones_and_bad_records(proc: EventProcessor) -> None:
    await proc.start()
    new = make_titles(14)[13]
    n = await proc.process_catalog([
        RawMessage("catalog", 0, 0, b"t13", codec.encode_title(new)),
        RawMessage("catalog", 0, 1, b"t0", None),
        RawMessage("catalog", 0, 2, b"tx", b"junk"),
    ])
    assert n == 2
    assert "t13" in proc.catalog and "t0" not in proc.catalog
    assert len(proc.dead_letters.letters) == 1  # type: ignore[attr-defined]


async def test_model_checkpoint_survives_a_new_processor(proc: EventProcessor) -> None:
    for i in range(20):
        await proc.process([msg(codec.encode_event(play(f"e{i}", "p1", f"t{i % 4}", 900)))])
    assert await proc.checkpoint()
    before = proc.model.score_many("p1", ["t0", "t7"])
    fresh = EventProcessor(proc.settings, proc.store, MemoryDeadLetters())
    await fresh.start()
    assert fresh.model.n_learned == proc.model.n_learned > 0
    assert list(fresh.model.score_many("p1", ["t0", "t7"])) == list(before)
    assert not await fresh.checkpoint()  # nothing new learned: no write


async def test_default_pages_for_seen_countries(proc: EventProcessor) -> None:
    await proc.process([msg(codec.encode_event(play("1", "p1", "t1", 700)))])
    assert await proc.refresh_default_pages() == 2
    store = proc.store
    assert isinstance(store, InMemoryStore)
    us = orjson.loads(store.default_pages["US"])
    assert not us["personalized"] and us["rows"][0]["items"][0]["title_id"] == "t1"
    assert set(store.default_pages) == {"US", "ALL"}


async def test_events_later_than_the_allowed_lateness_go_to_dead_letters(
        proc: EventProcessor) -> None:
    hours = 3600 * 1000
    newest = play("new", "p1", "t1", 100, TS + 10 * hours)
    late_ok = play("ok", "p1", "t2", 100, TS + 5 * hours)  # 5 h behind: within 6 h
    too_late = play("old", "p1", "t3", 100, TS)  # 10 h behind
    sent = TS + 10 * hours  # the messages' broker timestamp
    await proc.process([msg(codec.encode_event(newest), timestamp_ms=sent)])
    rep = await proc.process([msg(codec.encode_event(late_ok), timestamp_ms=sent),
                              msg(codec.encode_event(too_late), timestamp_ms=sent)])
    assert (rep.applied, rep.late) == (1, 1)
    letter = proc.dead_letters.letters[-1]  # type: ignore[attr-defined]
    assert letter.error_type == "LateEvent" and letter.event_id == "old"
    assert "max lateness" in letter.reason
    assert codec.decode_events(letter.value) == [too_late]
    assert (await proc.store.counters())["late_dropped"] == 1


async def test_co_watching_builds_similar_lists(proc: EventProcessor) -> None:
    for i, p in enumerate(["a", "b", "c"]):
        await proc.process([msg(codec.encode_batch(p, [
            play(f"{p}1", p, "t1", 900, TS + i), play(f"{p}2", p, "t4", 900, TS + i + 1)]), p)])
    similar = await proc.store.get_similar("t1")
    assert similar is not None and similar[0][0] == "t4"
    # and the member's page has a "Because You Watched" row seeded by a watched title
    page = orjson.loads(proc.store.pages["a"])  # type: ignore[attr-defined]
    assert any(r["kind"] == "because_you_watched" for r in page["rows"])


async def test_kids_profile_settings_rerender_without_mature_titles() -> None:
    import datetime as dt

    from topics.models import Artwork, Profile, Title

    store = InMemoryStore()
    titles = [Title(title_id=f"m{i}", name=f"M{i}", genres=["Drama"],
                    maturity_rating="R" if i % 2 else "G", release_date=dt.date(2024, 1, 1),
                    duration_s=1200.0, artwork=[Artwork(artwork_id=f"m{i}-a", url="u")])
              for i in range(10)]
    await store.put_titles(titles)
    proc = EventProcessor(Settings(row_length=5), store, MemoryDeadLetters(),
                          clock=lambda: TS / 1000)
    await proc.process([msg(codec.encode_event(play("1", "kid", "m2", 100)), "kid")])
    ratings = {t.title_id: t.maturity_rating for t in titles}

    def shown() -> set[str]:
        page = orjson.loads(store.pages["kid"])
        return {ratings[i["title_id"]] for r in page["rows"] for i in r["items"]}

    assert "R" in shown()
    n = await proc.process_profiles([RawMessage("profiles", 0, 0, b"kid", codec.encode_model(
        Profile(profile_id="kid", kids=True)))])
    assert n == 1 and shown() == {"G"}
    assert orjson.loads(store.pages["kid"])["kids"] is True


async def test_only_changed_pages_are_published_downstream() -> None:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    updates = MemoryPageUpdates()
    proc = EventProcessor(Settings(row_length=5), store, MemoryDeadLetters(),
                          clock=lambda: TS / 1000, page_updates=updates)
    batch = [msg(codec.encode_event(play("1", "p1", "t1", 700)))]
    assert (await proc.process(batch)).published == 1
    assert (await proc.process(batch)).published == 0  # replay: same page, not re-published
    await proc.process([msg(codec.encode_event(play("2", "p1", "t2", 300, TS + 1)))])
    assert [p["profile_id"] for p in updates.pages] == ["p1", "p1"]
    assert codec.decode(b"" or codec.encode_page_update(updates.pages[-1]))[0] == (
        "homestream.PageUpdate")


async def test_artwork_rewards_teach_the_policy_and_survive_a_restart(
        proc: EventProcessor) -> None:
    imp = Impression(event_id="i", profile_id="p1", event_ts_ms=TS, request_id="r",
                     title_id="t1", row_id="x", row=0, column=0, artwork_id="t1-art0",
                     propensity=0.5, policy="epsilon_greedy", policy_version=0,
                     context_json='{"genre:Horror": 1.0, "country": "US"}')
    quality = play("q", "p1", "t1", 600, TS + 60_000)  # 50% >= the 30% quality threshold
    rep = await proc.process([msg(codec.encode_batch("p1", [imp, quality]))])
    assert (rep.art_rewards, rep.quality_plays) == (1, 1)
    assert proc.artwork_policy.version == 1
    assert (await proc.store.counters())["artwork_quality_plays"] == 1
    # the page carries the member context the server's artwork choice uses
    page = orjson.loads(proc.store.pages["p1"])  # type: ignore[attr-defined]
    assert set(page["context"]) == {"genre:Horror"}  # make_titles: t1 is a Horror title
    assert await proc.checkpoint()
    fresh = EventProcessor(proc.settings, proc.store, MemoryDeadLetters())
    await fresh.start()
    assert fresh.artwork_policy.version == 1


async def test_a_policy_bucket_learns_only_from_the_policies_it_is_told() -> None:
    p = await make_processor(TS / 1000 + 0.25, artwork_delayed_positives=False,
                             artwork_policy="lin_ucb", artwork_learn_from="lin_ucb")
    events = []
    for i, (who, policy) in enumerate([("p1", "uniform"), ("p2", "lin_ucb"),
                                       ("p3", "uniform")]):
        events.append((who, Impression(
            event_id=f"i{i}", profile_id=who, event_ts_ms=TS, request_id=f"r{i}",
            title_id="t1", row_id="x", row=0, column=0, artwork_id="t1-art0",
            propensity=0.5, policy=policy, policy_version=0, context_json="{}")))
        events.append((who, play(f"q{i}", who, "t1", 600, TS + 60_000)))
    rep = await p.process([msg(codec.encode_batch(who, [ev]), who, i)
                           for i, (who, ev) in enumerate(events)])
    assert (rep.art_rewards, rep.quality_plays) == (3, 3)  # all joined and counted
    assert p.artwork_policy.version == 1  # only the lin_ucb decision was learned


def test_learn_from_names_known_policies_only() -> None:
    from pydantic import ValidationError

    assert Settings(artwork_learn_from=" lin_ucb , uniform").artwork_learn_from_policies == {
        "lin_ucb", "uniform"}
    assert Settings().artwork_learn_from_policies == frozenset()
    from homestream.settings import ARTWORK_POLICIES
    from online_models.bandits import POLICIES

    assert set(ARTWORK_POLICIES) == set(POLICIES)  # the names settings accept exist
    with pytest.raises(ValidationError, match="unknown bogus"):
        Settings(artwork_learn_from="lin_ucb,bogus")


def impression(eid: str, profile: str, title: str, ts: int, art: str = "") -> Impression:
    return Impression(event_id=eid, profile_id=profile, event_ts_ms=ts, request_id="r",
                      title_id=title, row_id="x", row=0, column=0,
                      artwork_id=art or f"{title}-art0", propensity=0.5, policy="uniform",
                      context_json='{"genre:Horror": 1.0}')


async def test_expired_windows_settle_on_the_event_time_watermark_once() -> None:
    proc = await make_processor(TS / 1000 + 365 * 86400.0, artwork_reward_window_s=60.0,
                                artwork_settle_lateness_s=5.0, partitions=4,  # a year later
                                clock_quorum=1)  # one member's events move the clock
    settings, store = proc.settings, proc.store
    await proc.process([RawMessage("imp", 2, 0, b"p1",
                                   codec.encode_event(impression("i1", "p1", "t1", TS)))])
    assert store.art_due == {2: {"p1": TS}}  # indexed under the message's partition
    assert await proc.settle_due() == 0  # watermark TS - 5 s: the window is open
    # another member's events move event time on; the wall clock (a year on) plays no part
    await proc.process([msg(codec.encode_event(play("a", "p2", "t2", 10, TS + 65_000)), "p2")])
    assert proc.watermark_ms() == TS + 60_000
    assert await proc.settle_due() == 0  # the window closes at TS + 60 s: not before it
    await proc.process([msg(codec.encode_event(play("b", "p2", "t2", 20, TS + 65_001)), "p2")])
    assert await proc.settle_due(partitions={0, 1}) == 0  # p1 lives in partition 2
    assert proc.artwork_policy.version == 0
    assert await proc.settle_due(partitions={2}) == 1
    assert proc.artwork_policy.version == 1  # learned the zero, without any event of p1
    assert store.art_due.get(2, {}) == {}
    state = (await store.load_profiles(["p1"]))["p1"]
    assert state.pending_art == {}
    counters = await store.counters()
    assert counters["artwork_rewards"] == 1 and counters["artwork_settled_by_watermark"] == 1
    # settled once: a second pass, a late quality play and a restart change nothing
    assert await proc.settle_due() == 0
    late = play("q", "p1", "t1", 600, TS + 30_000)
    rep = await proc.process([RawMessage("ev", 2, 1, b"p1", codec.encode_event(late))])
    assert (rep.art_rewards, rep.applied) == (0, 1)
    assert proc.artwork_policy.version == 1
    fresh = EventProcessor(settings, store, MemoryDeadLetters())
    await fresh.process([msg(codec.encode_event(play("c", "p2", "t2", 30, TS + 99_000)), "p2")])
    assert await fresh.settle_due() == 0


class HeldLearning(MemoryLearning):
    """Keeps records like :class:`MemoryLearning`, each send held until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def send(self, record: Any) -> None:
        self.entered.set()
        await self.release.wait()
        await super().send(record)


async def test_a_stopping_settler_sends_what_it_settled_and_starts_nothing_more() -> None:
    sink = HeldLearning()
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    proc = EventProcessor(Settings(row_length=5, artwork_reward_window_s=60.0,
                                   artwork_settle_lateness_s=0.0, clock_quorum=1),
                          store, MemoryDeadLetters(), learning=sink,
                          clock=lambda: TS / 1000 + 86400.0)
    sink.release.set()  # the batches' own learning passes
    await proc.process([msg(codec.encode_event(impression("i1", "p1", "t1", TS))),
                        msg(codec.encode_event(impression("i2", "p3", "t2", TS)), "p3", 1)])
    await proc.process([msg(codec.encode_event(play("x", "p2", "t3", 10, TS + 60_001)), "p2",
                            2)])
    sink.release.clear()
    sink.entered.clear()
    settling = asyncio.ensure_future(proc.settle_due())
    await asyncio.wait_for(sink.entered.wait(), 5)  # committed, sending its rewards
    stopping = asyncio.ensure_future(proc.settler.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the rewards settled to be sent
    sink.release.set()
    await asyncio.wait_for(stopping, 5)
    assert await settling == 2 and len(sink.records[-1].artwork) == 2
    assert store.art_due.get(0, {}) == {}
    # stopped: due decisions stay due for the partitions' next owner
    await proc.process([msg(codec.encode_event(impression("i3", "p1", "t4", TS + 60_002))),
                        msg(codec.encode_event(play("y", "p2", "t3", 20, TS + 130_000)),
                            "p2", 4)])
    assert await proc.settle_due() == 0 and store.art_due[0] == {"p1": TS + 60_002}


async def test_a_quality_play_before_the_watermark_takes_the_decision_out_of_the_index(
        ) -> None:
    proc = await make_processor(artwork_reward_window_s=60.0, artwork_settle_lateness_s=0.0,
                                artwork_delayed_positives=False, clock_quorum=1)
    store = proc.store
    await proc.process([msg(codec.encode_batch("p1", [impression("i1", "p1", "t1", TS),
                                                      impression("i2", "p1", "t2", TS + 10)]))])
    assert store.art_due == {0: {"p1": TS}}
    rep = await proc.process([msg(codec.encode_event(play("q", "p1", "t1", 600, TS + 20)))])
    assert (rep.art_rewards, rep.quality_plays) == (1, 1)
    assert store.art_due == {0: {"p1": TS + 10}}  # the oldest still open is t2's
    await proc.process([msg(codec.encode_event(play("x", "p2", "t3", 10, TS + 60_011)), "p2")])
    assert await proc.settle_due() == 1
    assert store.art_due == {0: {}}
    assert proc.artwork_policy.version == 2


async def test_delayed_positives_are_learned_when_the_watermark_closes_the_window_once(
        ) -> None:
    proc = await make_processor(artwork_reward_window_s=60.0, artwork_settle_lateness_s=5.0,
                                artwork_delayed_positives=True, clock_quorum=1)
    settings, store = proc.settings, proc.store
    learned: list[tuple[str, float]] = []
    learn = proc.artwork_policy.learn_many
    proc.artwork_policy.learn_many = (  # type: ignore[method-assign]
        lambda ctxs, arms, rewards: (learned.extend((a.artwork_id, r)
                                                    for a, r in zip(arms, rewards, strict=True)),
                                     learn(ctxs, arms, rewards))[-1])
    batch = [msg(codec.encode_batch("p1", [impression("i1", "p1", "t1", TS),
                                           impression("i2", "p1", "t2", TS + 10),
                                           play("q", "p1", "t1", 600, TS + 20)]))]
    rep = await proc.process(batch)
    assert (rep.art_rewards, rep.quality_plays) == (0, 0)  # held back, not learned yet
    assert learned == [] and store.art_due == {0: {"p1": TS}}
    assert await proc.process(batch) is not None  # redelivered: the mark is not doubled
    assert (await store.load_profiles(["p1"]))["p1"].pending_art["t1"].won is True
    await proc.process([msg(codec.encode_event(play("x", "p2", "t3", 10, TS + 65_005)), "p2")])
    assert await proc.settle_due() == 1  # watermark TS + 60_005: t1's window closed
    assert learned == [("t1-art0", 1.0)] and store.art_due == {0: {"p1": TS + 10}}
    await proc.process([msg(codec.encode_event(play("z", "p2", "t3", 15, TS + 65_011)), "p2")])
    assert await proc.settle_due() == 1  # and t2's, without a quality play
    assert learned == [("t1-art0", 1.0), ("t2-art0", 0.0)]
    counters = await store.counters()
    assert counters["artwork_quality_plays"] == 1 and counters["artwork_rewards"] == 2
    assert counters["artwork_settled_by_watermark"] == 2
    assert store.art_due == {0: {}}
    # once: a second pass, a replay of the quality play and a restarted worker learn nothing
    assert await proc.settle_due() == 0
    rep = await proc.process(batch)
    assert rep.art_rewards == 0 and len(learned) == 2
    fresh = EventProcessor(settings, store, MemoryDeadLetters())
    await fresh.process([msg(codec.encode_event(play("y", "p2", "t3", 20, TS + 99_000)), "p2")])
    assert await fresh.settle_due() == 0
    assert (await store.counters())["artwork_quality_plays"] == 1


async def test_variants_select_their_page_configuration() -> None:
    from online_models.experiments import assign_variant

    proc = await make_processor(TS / 1000, experiment_split="control:1,few:1",
                                experiment_overrides='{"few": {"max_rows": 1}}')
    store = proc.store
    profiles = [f"m{i}" for i in range(12)]
    await proc.process([msg(codec.encode_event(play(f"e{p}", p, "t1", 700)), p)
                        for p in profiles])
    seen = set()
    for p in profiles:
        page = orjson.loads(store.pages[p])
        variant = assign_variant(p, "homepage-v1", {"control": 1, "few": 1})
        seen.add(variant)
        assert page["variant"] == variant
        assert (len(page["rows"]) == 1) == (variant == "few")
    assert seen == {"control", "few"}


async def test_a_due_backlog_settles_in_chunks_that_let_event_batches_in() -> None:
    import asyncio

    from streams.settle import SETTLE_CHUNK

    proc = await make_processor(TS / 1000, artwork_reward_window_s=60.0,
                                artwork_settle_lateness_s=0.0, partitions=1, clock_quorum=1)
    store = proc.store
    n = 4 * SETTLE_CHUNK + 3
    await proc.process([RawMessage("imp", 0, i, f"m{i}".encode(), codec.encode_event(
        impression(f"i{i}", f"m{i}", "t1", TS))) for i in range(n)])
    await proc.process([msg(codec.encode_event(play("w", "p2", "t2", 10, TS + 61_000)), "p2")])
    chunks: list[int] = []
    original = proc.settler._settle_chunk

    async def counting(parts):  # type: ignore[no-untyped-def]
        got = await original(parts)
        chunks.append(got)
        return got

    proc.settler._settle_chunk = counting  # type: ignore[method-assign]
    late = asyncio.create_task(proc.process(
        [msg(codec.encode_event(play("x", "p3", "t3", 10, TS + 61_001)), "p3")]))
    assert await proc.settle_due() == n  # everything due, in one call (well within budget)
    await late
    assert chunks[:5] == [SETTLE_CHUNK] * 4 + [3] and chunks[-1] == -1
    assert store.art_due.get(0, {}) == {} and proc.artwork_policy.version == n


async def test_a_late_event_is_dead_lettered_with_the_message_it_came_in(
        proc: EventProcessor) -> None:
    hours = 3600 * 1000
    sent = TS + 10 * hours + 1  # the messages' broker timestamp
    await proc.process([msg(codec.encode_event(play("new", "p1", "t1", 100, TS + 10 * hours)),
                            timestamp_ms=sent)])
    alone = codec.encode_event(play("old1", "p1", "t2", 100, TS))
    batch = codec.encode_batch("p1", [play("old2", "p1", "t3", 100, TS + 1),
                                      play("fresh", "p1", "t4", 100, TS + 10 * hours + 1)])
    rep = await proc.process([RawMessage("homestream.player-events", 3, 41, b"p1", alone, sent),
                              RawMessage("homestream.player-events", 3, 42, b"p1", batch, sent)])
    assert (rep.applied, rep.late) == (1, 2)
    single, from_batch = proc.dead_letters.letters  # type: ignore[attr-defined]
    assert [(d.source_topic, d.partition, d.offset, d.key, d.event_id, d.error_type)
            for d in (single, from_batch)] == [
        ("homestream.player-events", 3, 41, b"p1", "old1", "LateEvent"),
        ("homestream.player-events", 3, 42, b"p1", "old2", "LateEvent")]
    assert single.value == alone and "re-encoded" not in single.reason  # the original bytes
    # a message of several events: the late one alone, re-encoded, and the reason says so
    assert [e.event_id for e in codec.decode_events(from_batch.value)] == ["old2"]
    assert "re-encoded alone (message of 2 events)" in from_batch.reason


async def test_a_redelivered_duplicate_older_than_the_lateness_is_a_duplicate_not_late(
        proc: EventProcessor) -> None:
    hours = 3600 * 1000
    old = msg(codec.encode_event(play("old", "p1", "t2", 100, TS)), offset=1)
    await proc.process([old])
    await proc.process([msg(codec.encode_event(play("new", "p1", "t1", 100, TS + 10 * hours)),
                            offset=2, timestamp_ms=TS + 10 * hours)])
    rep = await proc.process([old])  # redelivered, now 10 h behind the newest event
    assert (rep.duplicates, rep.late, rep.applied) == (1, 0, 0)
    assert proc.dead_letters.letters == []  # type: ignore[attr-defined]
    counters = await proc.store.counters()
    assert counters.get("late_dropped", 0) == 0 and counters["duplicates"] == 1


class GatedCommitStore(InMemoryStore):
    """An in-memory store whose ``commit_batch`` can be held open (``gate``) or made to fail
    once (``fail_next``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = False
        self.fail_next = False
        self.commit_entered = asyncio.Event()
        self.release = asyncio.Event()

    async def commit_batch(self, states, trending, counters, art_due=()) -> None:  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next = False
            # not an outage (streams.outage retries those): the batch fails
            raise RuntimeError("commit refused")
        if self.gate:
            self.commit_entered.set()
            await self.release.wait()
        await super().commit_batch(states, trending, counters, art_due)


async def gated_processor() -> EventProcessor:
    store = GatedCommitStore()
    await store.put_titles(make_titles(12))
    return EventProcessor(Settings(row_length=5), store, MemoryDeadLetters(),
                          clock=lambda: TS / 1000)


def watches(profile: str, titles: list[str], ts: int = TS) -> list[RawMessage]:
    return [msg(codec.encode_batch(profile, [play(f"{profile}-{t}-{ts}", profile, t, 900, ts + i)
                                             for i, t in enumerate(titles)]), profile)]


async def test_a_checkpoint_never_holds_a_batch_learned_but_not_committed() -> None:
    proc = await gated_processor()
    store = proc.store
    assert isinstance(store, GatedCommitStore)
    await proc.process(watches("p0", ["t5"]))
    before = proc.model.n_learned
    store.gate = True
    batch = watches("p1", ["t1", "t2"])
    running = asyncio.create_task(proc.process(batch))
    await asyncio.wait_for(store.commit_entered.wait(), 5)
    learned = proc.model.n_learned  # the models learned the batch; its states wait to commit
    assert learned > before
    requested = asyncio.create_task(proc.checkpoint())
    for _ in range(50):
        await asyncio.sleep(0)
    # a crash now finds no checkpoint holding the batch: its replay is learned once
    assert not requested.done() and store.checkpoints == {}
    store.release.set()
    await running
    assert await requested
    saved = TopPicksModel.from_bytes(store.checkpoints[MODEL_CHECKPOINT])
    assert saved.n_learned == learned == proc.model.n_learned
    assert CoWatchSimilarity.from_bytes(store.checkpoints[COWATCH_CHECKPOINT]).n_learned == 3
    # committed with the checkpoint: a replay after a crash is all duplicates, learns nothing
    store.gate = False
    fresh = EventProcessor(proc.settings, store, MemoryDeadLetters())
    rep = await fresh.process(batch)
    assert (rep.duplicates, fresh.model.n_learned) == (2, learned)


async def test_a_batch_failing_before_its_commit_is_not_learned_twice() -> None:
    first, second = watches("p1", ["t1", "t2"]), watches("p2", ["t1", "t3"], TS + 10)
    clean = await gated_processor()  # the reference: both batches, no failure
    await clean.process(first)
    await clean.process(second)
    proc = await gated_processor()
    store = proc.store
    assert isinstance(store, GatedCommitStore)
    await proc.process(first)
    assert await proc.checkpoint()
    store.fail_next = True
    with pytest.raises(RuntimeError, match="commit refused"):
        await proc._process(second)  # learned, then the commit failed
    assert not await proc.checkpoint(force=True)  # that learning is never saved
    rep = await proc.process(second)  # redelivered: the models restart from the checkpoint
    assert rep.applied == 2
    assert proc.model.n_learned == clean.model.n_learned
    assert list(proc.model.score_many("p2", ["t1", "t3", "t7"])) == list(
        clean.model.score_many("p2", ["t1", "t3", "t7"]))
    assert proc.cowatch.n_learned == clean.cowatch.n_learned == 4
    assert proc.cowatch.most_similar("t1", 5) == clean.cowatch.most_similar("t1", 5)


async def test_a_batch_whose_commit_fails_once_is_applied_again_event_by_event() -> None:
    first, second = watches("p1", ["t1", "t2"]), watches("p2", ["t1", "t3"], TS + 10)
    clean = await gated_processor()  # the reference: both batches, no failure
    await clean.process(first)
    await clean.process(second)
    proc = await gated_processor()
    store = proc.store
    assert isinstance(store, GatedCommitStore)
    await proc.process(first)
    assert await proc.checkpoint()
    store.fail_next = True  # not an outage: the batch raises, then each event applies alone
    rep = await proc.process(second)
    assert (rep.applied, rep.dead_letters, rep.duplicates) == (2, 0, 0)
    assert proc.dead_letters.letters == []  # type: ignore[attr-defined]
    assert proc.model.n_learned == clean.model.n_learned  # learned once, not twice
    assert proc.cowatch.n_learned == clean.cowatch.n_learned == 4
    assert (await store.counters())["events_applied"] == 4




async def test_a_batch_reports_how_long_each_step_took(proc: EventProcessor) -> None:
    started = asyncio.get_running_loop().time()
    report = await proc.process([msg(codec.encode_event(play(f"s{p}", p, "t1", 100)), p, i)
                                 for i, p in enumerate(["p1", "p2"])])
    elapsed_ms = 1000 * (asyncio.get_running_loop().time() - started)
    steps = ["decode", "load", "apply", "learn", "commit", "render", "lock"]
    assert list(report.stages_ms) == steps  # in the order they ran, the lock wait last
    assert report.pages == 2 and all(v >= 0 for v in report.stages_ms.values())
    assert sum(report.stages_ms.values()) <= elapsed_ms
    # a batch of dead letters only stops after decoding
    bad = await proc.process([msg(b"not avro", "p1", 5)])
    assert list(bad.stages_ms) == ["decode", "lock"]
