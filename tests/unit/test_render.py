"""The page renderer's render window, on the worker's processor with an in-memory store."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.processor import (
    BEHIND_S,
    CATCH_UP_S,
    EventProcessor,
    MemoryDeadLetters,
    RawMessage,
)
from streams.render import FLUSH_CHUNK, FLUSH_SLICE, PageRenderer
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play, SessionStart

TS = 1_700_000_000_000
codec = default_codec()


def play_msg(eid: str, profile: str, pos: float, ts: int, offset: int) -> RawMessage:
    ev = Play(event_id=eid, profile_id=profile, event_ts_ms=ts, title_id="t1",
              action="progress", position_s=pos, duration_s=1200.0, country="US")
    return RawMessage("events", 0, offset, profile.encode(), codec.encode_event(ev))


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def windowed(window_ms: float) -> tuple[EventProcessor, InMemoryStore, FakeClock]:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    proc = EventProcessor(Settings(row_length=5, render_window_ms=window_ms), store,
                          MemoryDeadLetters(), clock=lambda: TS / 1000 + 0.25)
    clock = FakeClock()
    proc.renderer = PageRenderer(proc.settings, store, proc.page_config, proc.experiment,
                                 proc.clock, monotonic=clock)
    return proc, store, clock


def as_of(store: InMemoryStore, pid: str) -> int:
    return orjson.loads(store.pages[pid])["as_of_event_ts_ms"]


async def test_changes_within_the_window_are_held_then_rendered_once_it_ends() -> None:
    proc, store, clock = await windowed(500)
    rep = await proc.process([play_msg("1", "p1", 100, TS, 0)])
    assert rep.pages == 1 and as_of(store, "p1") == TS  # leading edge: at once
    clock.t += 0.1
    for i in range(1, 4):  # three more batches within the window: held, not rendered
        rep = await proc.process([play_msg(str(i + 1), "p1", 100 + i, TS + i, i)])
        assert rep.pages == 0 and rep.applied == 1
    assert as_of(store, "p1") == TS and proc.renderer.held == 1
    assert await proc.flush_pages() == 0  # the window has not ended yet
    clock.t += 0.4
    assert await proc.flush_pages() == 1  # the newest held state, once
    assert as_of(store, "p1") == TS + 3 and proc.renderer.held == 0
    assert await proc.flush_pages() == 0


async def test_a_member_with_a_page_is_queued_for_the_timer_not_rendered_by_batches() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0)])  # first event: rendered at once
    clock.t += 0.6  # the window passed
    rep = await proc.process([play_msg("2", "p1", 200, TS + 1, 1),
                              play_msg("3", "p2", 100, TS + 2, 2)])
    assert rep.pages == 1 and rep.applied == 2  # p2's first page; p1 waits for the timer
    assert rep.freshness_ms == [248.0]  # only the page written (p2's) reports freshness
    assert as_of(store, "p1") == TS and proc.renderer.held == 1
    assert await proc.flush_pages() == 1 and as_of(store, "p1") == TS + 1


async def test_the_timer_renders_the_longest_queued_first_within_its_budget() -> None:
    proc, store, clock = await windowed(500)
    n = FLUSH_SLICE + 5
    pids = [f"p{i:02d}" for i in range(n)]
    await proc.process([play_msg(f"a{i}", p, 100, TS, i) for i, p in enumerate(pids)])
    clock.t += 0.6
    # changes queued in reverse order, the last member's twice (it keeps its place)
    queued = pids[::-1]
    await proc.process([play_msg(f"b{i}", p, 200, TS + 1, n + i) for i, p in enumerate(queued)])
    await proc.process([play_msg("c", queued[0], 300, TS + 2, 3 * n)])
    inp = proc._render_inputs()
    assert await proc.renderer.flush_due(inp, budget_s=0.0) == FLUSH_SLICE  # one slice
    assert [as_of(store, p) for p in queued] == [TS + 2] + [TS + 1] * (FLUSH_SLICE - 1) + \
        [TS] * 5
    assert proc.renderer.held == 5
    assert await proc.renderer.flush_due(inp, budget_s=0.0) == 5
    assert proc.renderer.held == 0 and len(proc.renderer.queue_waits) == n


async def test_the_timer_renders_the_whole_queue_while_no_batch_wants_the_worker() -> None:
    proc, store, clock = await windowed(500)
    n = 2 * FLUSH_SLICE + 3
    pids = [f"p{i:02d}" for i in range(n)]
    await proc.process([play_msg(f"a{i}", p, 100, TS, i) for i, p in enumerate(pids)])
    clock.t += 0.1
    await proc.process([play_msg(f"b{i}", p, 200, TS + 1, n + i) for i, p in enumerate(pids)])
    clock.t += 0.5
    inp = proc._render_inputs()
    assert await proc.renderer.flush_due(inp, budget_s=0.0, busy=lambda: False) == n
    assert proc.renderer.held == 0 and {as_of(store, p) for p in pids} == {TS + 1}


async def test_queued_and_written_pages_are_counted_in_the_store() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0)])
    clock.t += 0.1
    await proc.process([play_msg("2", "p1", 200, TS + 1, 1)])  # queued
    await proc.process([play_msg("3", "p2", 100, TS + 2, 2)])  # reports the queue
    counters = await store.counters()
    assert counters["pages_queued"] == 1 and counters["pages_written"] == 1
    clock.t += 0.5
    assert await proc.flush_pages() == 1
    counters = await store.counters()
    assert counters["pages_queued"] == 0 and counters["pages_written"] == 3


async def test_the_last_batchs_pages_are_counted_at_the_next_tick_without_another_batch(
) -> None:
    proc, store, _ = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0), play_msg("2", "p2", 100, TS, 1)])
    assert (await store.counters()).get("pages_written", 0) == 0  # committed before rendering
    assert await proc.flush_pages() == 0  # nothing queued: the tick only reports
    counters = await store.counters()
    assert counters["pages_written"] == 2 and counters["pages_assembled"] == 2
    assert await proc.flush_pages() == 0
    assert (await store.counters())["pages_written"] == 2  # reported once


async def test_the_pages_assembled_and_their_cpu_are_counted_in_the_store() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0)])  # a first page: rendered now
    await proc.process([play_msg("2", "p2", 100, TS + 1, 1)])  # reports p1's page
    counters = await store.counters()
    assert counters["pages_assembled"] == 1 and counters["page_assembly_cpu_us"] > 0
    clock.t += 0.1
    await proc.process([play_msg("3", "p1", 200, TS + 2, 2)])  # queued; reports p2's page
    counters = await store.counters()
    assert counters["pages_assembled"] == 2
    clock.t += 0.5
    assert await proc.flush_pages() == 1
    after = await store.counters()
    assert after["pages_assembled"] == 3
    assert after["page_assembly_cpu_us"] > counters["page_assembly_cpu_us"]


async def test_no_window_renders_every_batch() -> None:
    proc, store, _ = await windowed(0)
    for i in range(3):
        rep = await proc.process([play_msg(str(i), "p1", 100 + i, TS + i, i)])
        assert rep.pages == 1 and as_of(store, "p1") == TS + i
    assert proc.renderer.held == 0 and await proc.flush_pages() == 0


async def test_popularity_lists_are_reused_within_the_window_only() -> None:
    proc, store, clock = await windowed(500)
    reads: list[list[str]] = []
    real = store.top_trending

    async def spy(countries, epoch, limit):
        reads.append(list(countries))
        return await real(countries, epoch, limit)

    store.top_trending = spy  # type: ignore[method-assign]
    await proc.process([play_msg("1", "p1", 100, TS, 0)])
    assert len(reads) == 2  # the short and the long lists, read once
    clock.t += 0.1
    await proc.process([play_msg("2", "p2", 100, TS + 1, 1)])
    assert len(reads) == 2  # p2's page ranked with the same lists
    clock.t += 0.5
    await proc.process([play_msg("3", "p3", 100, TS + 2, 2)])
    assert len(reads) == 4  # the window passed: read again


async def test_revoked_partitions_lose_their_queued_pages_and_a_final_flush_writes_all() -> None:
    proc, store, clock = await windowed(500)
    msgs = [play_msg("a1", "p1", 100, TS, 0), play_msg("a2", "p2", 100, TS, 1)]
    await proc.process(msgs)
    clock.t += 0.1
    again = [play_msg("b1", "p1", 200, TS + 1, 2), play_msg("b2", "p2", 200, TS + 1, 3)]
    again[1] = RawMessage("events", 3, 3, b"p2", again[1].value)  # p2 lives on partition 3
    await proc.process(again)
    assert proc.renderer.held == 2
    assert proc.renderer.drop_partitions({3}) == 1 and proc.renderer.held == 1
    assert await proc.flush_pages() == 0  # p1's window has not ended
    assert await proc.flush_pages(final=True) == 1  # the worker stops: written anyway
    assert as_of(store, "p1") == TS + 1 and as_of(store, "p2") == TS


def test_the_consumer_is_behind_on_a_full_batch_or_old_messages() -> None:
    proc = EventProcessor(Settings(batch_max_events=3), InMemoryStore(), MemoryDeadLetters(),
                          clock=lambda: TS / 1000)
    fresh = [RawMessage("events", 0, i, b"p", b"", TS - 50) for i in range(2)]
    assert proc._lag_s(fresh) == pytest.approx(0.05) and proc._lag_s(fresh) < BEHIND_S
    assert proc._lag_s(fresh + fresh[:1]) == float("inf")  # full: behind and catching up
    old = [RawMessage("events", 0, 0, b"p", b"", TS - 500)]
    assert proc._lag_s(old) == pytest.approx(0.5) and BEHIND_S < 0.5 < CATCH_UP_S
    assert proc._lag_s([RawMessage("events", 0, 0, b"p", b"")]) == 0.0  # no timestamp


async def queued_members(n: int) -> tuple[EventProcessor, InMemoryStore, list[str]]:
    """A windowed processor with ``n`` members whose second change waits, due now."""
    proc, store, clock = await windowed(500)
    pids = [f"p{i:03d}" for i in range(n)]
    await proc.process([play_msg(f"a{i}", p, 100, TS, i) for i, p in enumerate(pids)])
    clock.t += 0.1
    await proc.process([play_msg(f"b{i}", p, 200, TS + 1, n + i) for i, p in enumerate(pids)])
    clock.t += 0.5
    return proc, store, pids


async def test_queued_pages_are_written_a_chunk_at_a_time_outside_the_batch_lock() -> None:
    n = FLUSH_CHUNK + 3
    proc, store, pids = await queued_members(n)
    lock = asyncio.Lock()
    writes: list[tuple[int, bool]] = []
    meta_reads: list[int] = []
    real_write, real_meta = store.write_pages, store.load_profile_meta

    async def write_pages(personal, defaults):
        writes.append((len(personal), lock.locked()))
        await real_write(personal, defaults)

    async def load_profile_meta(profile_ids):
        meta_reads.append(len(profile_ids))
        return await real_meta(profile_ids)

    store.write_pages = write_pages  # type: ignore[method-assign]
    store.load_profile_meta = load_profile_meta  # type: ignore[method-assign]
    written = await proc.renderer.flush_due(proc._render_inputs(), busy=lambda: False,
                                            between=lock)
    assert written == n and proc.renderer.held == 0
    assert writes == [(FLUSH_CHUNK, False), (3, False)]  # one write a chunk, lock released
    assert meta_reads == [FLUSH_CHUNK, 3]  # members' settings read once a chunk
    assert {as_of(store, p) for p in pids} == {TS + 1}


async def test_a_member_forgotten_while_their_page_waits_to_be_written_is_not_written() -> None:
    proc, store, pids = await queued_members(2 * FLUSH_SLICE)
    renderer = proc.renderer
    real_assemble = renderer._assemble
    erased = pids[0]

    def assemble_then_erase(states, *args):  # an erasure between two slices of a chunk
        real_assemble(states, *args)
        if any(s.profile_id == erased for s in states):
            assert erased in renderer._unwritten.pages
            renderer.forget([erased])

    renderer._assemble = assemble_then_erase  # type: ignore[method-assign]
    assert await renderer.flush_due(proc._render_inputs(), busy=lambda: False) == \
        2 * FLUSH_SLICE - 1
    assert as_of(store, erased) == TS  # the page before the erasure, not rewritten
    assert {as_of(store, p) for p in pids[1:]} == {TS + 1}


async def test_pages_rendered_and_not_yet_written_count_as_queued() -> None:
    n = FLUSH_SLICE + 1
    proc, _, _ = await queued_members(n)
    renderer = proc.renderer
    seen: list[int] = []
    real_assemble = renderer._assemble

    def assemble(states, *args):
        real_assemble(states, *args)
        seen.append(renderer.held)  # taken out of the queue, not written yet

    renderer._assemble = assemble  # type: ignore[method-assign]
    await renderer.flush_due(proc._render_inputs(), busy=lambda: False)
    assert seen == [n, n]  # the "pages_queued" counter reaches 0 only once written
    assert renderer.held == 0


async def test_catching_up_on_a_backlog_queues_first_pages_at_the_head_of_the_queue() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("a", "old", 100, TS, 0)])
    clock.t += 0.1
    await proc.process([play_msg("b", "old", 200, TS + 1, 1)])  # queued: "old" has a page
    clock.t += 0.5
    stale = TS - 2_000  # written 2.25 s before the processor's clock: a backlog
    backlog = [RawMessage("events", 0, 2 + i, p.encode(), play_msg(f"c{i}", p, 100, TS, 0).value,
                          stale) for i, p in enumerate(["new1", "new2"])]
    rep = await proc.process(backlog)
    assert rep.applied == 2 and rep.pages == 0  # no first page inside a catching-up batch
    assert await store.get_page("new1") is None and proc.renderer.held == 3
    assert await proc.renderer.flush_due(proc._render_inputs(), budget_s=0.0) == 3
    fresh = [RawMessage("events", 0, 9, b"new3", play_msg("d", "new3", 100, TS, 0).value,
                        TS + 100)]
    assert (await proc.process(fresh)).pages == 1  # caught up: first pages at once again


async def test_a_member_opening_the_app_while_catching_up_gets_a_page_before_the_window_ends(
        ) -> None:
    proc, store, clock = await windowed(30_000)
    await proc.process([play_msg("a", "p1", 100, TS, 0)])  # p1's first page, at once
    clock.t += 1.0  # well inside p1's window
    opened = SessionStart(event_id="open", profile_id="p1", event_ts_ms=TS + 1_000,
                          device="tv", country="US")
    stale = TS - 2_000  # the consumer is catching up: the batch's pages are queued
    rep = await proc.process([RawMessage("events", 0, 1, b"p1", codec.encode_event(opened),
                                         stale)])
    assert rep.pages == 0 and proc.renderer.held == 1
    assert await proc.renderer.flush_due(proc._render_inputs(), budget_s=0.0) == 1
    assert as_of(store, "p1") == TS + 1_000  # not 29 s later, when p1's window ends


async def test_the_page_timer_wakes_as_soon_as_a_backlog_runs_out() -> None:
    proc, _, _ = await windowed(1000)
    stale = TS - 2_000  # written 2.25 s before the processor's clock: a backlog
    for i, p in enumerate(["p1", "p2"]):
        await proc.process([RawMessage("events", 0, i, p.encode(),
                                       play_msg(f"e{i}", p, 100, TS, i).value, stale)])
    assert proc.renderer.held == 2  # first pages queued while catching up
    proc._wake_if_caught_up(proc._batches_started - 1)  # another batch followed that one
    assert not proc._flush_wake.is_set()
    # no batch follows the last one: the timer's tick comes after CATCH_UP_IDLE_S, not 60 s
    await asyncio.wait_for(proc.next_flush(60.0), timeout=10.0)
    assert not proc._flush_wake.is_set()  # cleared for the next tick
    assert await proc.flush_pages() == 2


async def test_first_pages_queued_while_catching_up_come_before_older_changes() -> None:
    proc, _, clock = await windowed(500)
    await proc.process([play_msg("a", "old", 100, TS, 0)])
    clock.t += 0.1
    await proc.process([play_msg("b", "old", 200, TS + 1, 1)])
    clock.t += 0.5
    stale = TS - 2_000
    await proc.process([RawMessage("events", 0, 2, b"new", play_msg("c", "new", 1, TS, 0).value,
                                   stale)])
    taken = proc.renderer._peek_due(10)
    assert taken == ["new", "old"]


async def test_a_member_forgotten_while_their_chunk_waits_for_its_write_is_not_written() -> None:
    proc, store, pids = await queued_members(3)
    renderer = proc.renderer
    await renderer._write_lock.acquire()  # a batch's first pages being written meanwhile
    flush = asyncio.ensure_future(renderer.flush_due(proc._render_inputs(), busy=lambda: False))
    for _ in range(20):
        await asyncio.sleep(0)
        if renderer._in_flight:
            break
    assert renderer._in_flight and renderer.held == 0  # rendered, waiting for the lock
    renderer.forget([pids[1]])  # erased meanwhile
    renderer._write_lock.release()
    assert await flush == 2
    assert as_of(store, pids[1]) == TS and {as_of(store, p) for p in (pids[0], pids[2])} == \
        {TS + 1}
