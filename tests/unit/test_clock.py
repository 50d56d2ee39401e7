"""The stream clock (streams.clock) and the future-skew dead letters: one event, member or
partition claiming a far-off time moves nobody else's page."""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.clock import StreamClock, kth_newest
from streams.decode import MessageDecoder, RawMessage
from streams.processor import EventProcessor, MemoryDeadLetters
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000
HOUR = 3_600_000
codec = default_codec()


def test_kth_newest_falls_back_to_the_oldest_when_there_are_fewer() -> None:
    assert kth_newest([1, 9, 5, 7], 3) == 5
    assert kth_newest([4, 2], 3) == 2
    assert kth_newest([], 1) is None


def test_one_member_far_ahead_does_not_move_the_clock() -> None:
    c = StreamClock(quorum=3, max_future_ms=300_000)
    for i, ts in enumerate([TS, TS + 1_000, TS + 2_000]):
        c.observe(0, f"m{i}", ts)
    assert c.now_ms(wall_ms=TS) == TS
    c.observe(0, "liar", TS + 365 * 24 * HOUR)
    assert c.now_ms(wall_ms=TS) == TS + 1_000  # the third newest member now
    c.observe(0, "liar", TS + 900 * 24 * HOUR)  # more lies change nothing more
    assert c.now_ms(wall_ms=TS) == TS + 1_000


def test_one_partition_far_ahead_does_not_move_the_clock() -> None:
    c = StreamClock(quorum=2, max_future_ms=300_000)
    c.observe(0, "a", TS)
    c.observe(1, "b", TS + 500)
    for i in range(5):  # a whole partition of members ahead
        c.observe(2, f"x{i}", TS + 30 * 24 * HOUR)
    assert c.now_ms(wall_ms=TS + 10 * 24 * HOUR) == TS + 500


def test_the_clock_never_passes_wall_clock_plus_skew_and_never_goes_back() -> None:
    c = StreamClock(quorum=1, max_future_ms=300_000)
    c.observe(0, "a", TS + HOUR)
    assert c.now_ms(wall_ms=TS) == TS + 300_000
    assert c.now_ms(wall_ms=TS + 2 * HOUR) == TS + HOUR
    c.retain([1])  # partition 0 went to another worker
    assert c.now_ms(wall_ms=TS + 2 * HOUR) == TS + HOUR  # remembered, not moved back
    c.observe(1, "b", TS)
    assert c.now_ms(wall_ms=TS + 2 * HOUR) == TS + HOUR
    assert c.watermark_ms(0) is None and c.watermark_ms(1) == TS


def test_members_per_partition_are_bounded() -> None:
    c = StreamClock(quorum=2, max_members=3)
    for i in range(10):
        c.observe(0, f"m{i}", TS + i)
    assert c.watermark_ms(0) == TS + 8  # only m7, m8, m9 are remembered


def _message(ev: Play, partition: int, offset: int, timestamp_ms: int | None) -> RawMessage:
    return RawMessage("homestream.player-events", partition, offset, ev.profile_id.encode(),
                      codec.encode_event(ev), timestamp_ms)


def test_an_event_too_far_ahead_of_its_message_is_a_dead_letter_naming_the_skew() -> None:
    dec = MessageDecoder(codec, lambda: TS / 1000, 60.0, max_future_skew_s=300.0)
    ok = Play(event_id="ok", profile_id="p", event_ts_ms=TS + 299_000, title_id="t1",
              action="start", position_s=0, duration_s=100)
    ahead = ok.model_copy(update={"event_id": "ahead", "event_ts_ms": TS + 301_000})
    far = ok.model_copy(update={"event_id": "far", "event_ts_ms": TS + 400 * 24 * HOUR})
    events, letters = dec.decode([_message(ok, 0, 1, None), _message(ahead, 0, 2, None),
                                  _message(far, 0, 3, TS + 400 * 24 * HOUR - 1_000),
                                  _message(far, 0, 4, TS)])
    assert [se.event.event_id for se in events] == ["ok", "far"]  # far: sent then, by its clock
    (a, f) = letters
    assert (a.error_type, a.offset, a.event_id) == ("FutureEvent", 2, "ahead")
    assert a.reason == ("event time is 301s ahead of the worker's clock; max future skew is "
                        "300s (HOMESTREAM_MAX_FUTURE_SKEW_S)")
    assert (f.error_type, f.offset) == ("FutureEvent", 4)
    assert "34560000s ahead of its message's broker timestamp" in f.reason
    assert f.value == codec.encode_event(far)  # the original bytes, nothing lost


def test_a_future_event_inside_a_batch_message_is_dead_lettered_alone() -> None:
    dec = MessageDecoder(codec, lambda: TS / 1000, 60.0, max_future_skew_s=300.0)
    ok = Play(event_id="ok", profile_id="p", event_ts_ms=TS, title_id="t1", action="start",
              position_s=0, duration_s=100)
    far = ok.model_copy(update={"event_id": "far", "event_ts_ms": TS + 24 * HOUR})
    m = RawMessage("ev", 1, 9, b"p", codec.encode_batch("p", [ok, far]), TS)
    events, (letter,) = dec.decode([m])
    assert [se.event.event_id for se in events] == ["ok"]
    assert [e.event_id for e in codec.decode_events(letter.value)] == ["far"]
    assert "re-encoded alone (message of 2 events)" in letter.reason


# -- property: one event's time changes no other member's page ----------------------------
MEMBERS = [f"m{i}" for i in range(6)]
WALL_S = (TS + 2 * HOUR) / 1000  # the worker's clock: after every ordinary event

stream_events = st.lists(
    st.tuples(st.sampled_from(MEMBERS), st.integers(0, 11), st.integers(0, HOUR),
              st.sampled_from([60.0, 600.0, 1100.0])),
    min_size=1, max_size=12)


def _play(eid: str, pid: str, title: int, ts: int, pos: float) -> Play:
    return Play(event_id=eid, profile_id=pid, event_ts_ms=ts, title_id=f"t{title}",
                action="progress", position_s=pos, duration_s=1200.0, country="US")


async def _pages_after(messages: list[RawMessage]) -> dict[str, dict]:
    """Every member's and every default page after the messages, three per batch."""
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    proc = EventProcessor(Settings(row_length=5, partitions=4), store, MemoryDeadLetters(),
                          clock=lambda: WALL_S)
    for i in range(0, len(messages), 3):
        await proc.process(messages[i: i + 3])
    await proc.refresh_default_pages()
    pages = {pid: orjson.loads(raw) for pid, raw in store.pages.items()}
    pages.update({f"default:{c}": orjson.loads(raw) for c, raw in store.default_pages.items()})
    return pages


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_events, st.integers(1, 12), st.integers(0, 3), st.integers(0, 11),
       st.integers(1_000_000_000_000, 9_999_999_999_999), st.booleans())
def test_one_event_at_any_time_changes_no_other_members_page(
        stream: list[tuple[str, int, int, float]], at: int, partition: int, title: int,
        ts: int, forged_timestamp: bool) -> None:
    """For any stream, a new member's one play, at any time (even with a broker timestamp
    forged to match), leaves every other member's page and the default pages as the same
    play at an ordinary time (the stream's newest) would; dead-lettered, as no play would."""
    base = [_message(_play(f"e{i}", pid, t, TS + dt, pos), MEMBERS.index(pid) % 3, i,
                     TS + dt) for i, (pid, t, dt, pos) in enumerate(stream)]
    at = min(at, len(base))  # after at least one message of other members
    newest = max(TS + dt for _, _, dt, _ in stream)
    ordinary = min(ts, newest)

    def with_intruder(t: int | None, stamp: int | None) -> list[RawMessage]:
        m = (_message(_play("x", "intruder", title, t, 600.0), partition, 1000, stamp)
             if t is not None else  # a message that is a dead letter for another reason
             RawMessage("homestream.player-events", partition, 1000, b"intruder", b"junk"))
        return [*base[:at], m, *base[at:]]  # the same batches either way

    stamp = ts if forged_timestamp else None
    accepted = forged_timestamp or ts <= WALL_S * 1000 + 300_000
    got = asyncio.run(_pages_after(with_intruder(ts, stamp)))
    expected = asyncio.run(_pages_after(
        with_intruder(ordinary, ordinary) if accepted else with_intruder(None, None)))
    got.pop("intruder", None)
    expected.pop("intruder", None)
    assert got == expected


def test_the_kept_watermarks_follow_every_change_like_a_fresh_computation() -> None:
    import random

    rng = random.Random(5)
    clock = StreamClock(quorum=2, max_future_ms=10**12, max_members=4)
    for _ in range(3000):
        op = rng.random()
        if op < 0.8:
            clock.observe(rng.randrange(4), f"m{rng.randrange(12)}", rng.randrange(10**6))
        elif op < 0.9:
            clock.forget([f"m{rng.randrange(12)}"])
        else:
            clock.retain(set(rng.sample(range(4), 3)))
        for p in range(4):  # each partition's watermark, recomputed from its members
            members = clock._members.get(p)
            assert clock.watermark_ms(p) == (kth_newest(members.values(), 2)
                                             if members else None)
