"""The page renderer's render window, on the worker's processor with an in-memory store."""

from __future__ import annotations

import orjson

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from streams.render import PageRenderer
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

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


async def test_a_batch_after_the_window_renders_held_members_with_its_own() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0)])
    clock.t += 0.1
    await proc.process([play_msg("2", "p1", 200, TS + 1, 1)])
    clock.t += 0.5
    rep = await proc.process([play_msg("3", "p2", 100, TS + 2, 2)])
    assert rep.pages == 2  # p2's first change and p1's held one
    assert as_of(store, "p1") == TS + 1 and as_of(store, "p2") == TS + 2


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
