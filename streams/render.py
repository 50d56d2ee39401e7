"""Page materialization: the worker's members' pages and the countries' default pages.

A :class:`PageRenderer` assembles pages from profile states with the models of the moment
(handed over per call as :class:`RenderInputs`, so the renderer does not care who learns
them), writes them to the store in one ``MSET`` and publishes the pages whose rows changed
(a digest per member remembers what was published last).

With ``HOMESTREAM_RENDER_WINDOW_MS`` above 0 a member's page is rendered at most once per
window however many of their events arrive: a member's first page (no state before the
batch) renders in the batch that applied the event; every other change is queued (the
member's newest state, keeping its place while queued) and rendered by
:meth:`PageRenderer.flush_due`, a timer tick, once the member's window ended, the longest
queued first, a slice of pages between two event batches. While the consumer is behind the
timer keeps to its share of the tick (``HOMESTREAM_RENDER_BUDGET_SHARE``), so page work
never starves the events: when members change faster than the budget renders their pages,
the queue grows while events and first pages are still handled at once. A queued change
thus reaches the page within the window plus the timer's interval when the budget keeps up,
and within the window plus (queued members x page cost / budget share) when it does not.
The trending and popularity lists pages are ranked with are reused for up to a window
(they move slowly: hours of half-life) instead of being read from Redis for every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

import orjson

from features.catalog import Catalog
from features.keys import ALL_COUNTRIES, popular_list
from features.profile import ProfileMeta, ProfileState
from features.store import PipelineStore
from features.trending import epoch_of
from homestream.settings import Settings
from online_models.experiments import Experiment
from online_models.page import Page, PageConfig, assemble_page
from online_models.row_utility import RowKindUtility
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel

#: Remembered page digests (to publish only pages that changed).
DIGEST_CACHE = 200_000
#: Pages assembled between two yields to the event loop (a page takes ~1 ms).
RENDER_SLICE = 50
#: Queued pages the timer renders per hold of the batch lock (an event batch waits at most
#: this long for it: ~3-5 ms; docs/bench.md has the broker runs with 10 and with 5).
FLUSH_SLICE = 5
#: Queued pages the timer writes to the store and publishes together: their members'
#: settings are read in one round trip before, the pages rendered ``FLUSH_SLICE`` at a
#: time, then written in one ``MSET`` and one publish, outside the batch lock (a round trip
#: per slice, under the lock, left the worker idle for most of a slice's time), the write of
#: one chunk overlapping the rendering of the next.
FLUSH_CHUNK = 50

#: Trending and popularity lists by country: ``{country: [(title_id, score), ...]}``.
Popularity = dict[str, list[tuple[str, float]]]


class PageUpdateSink(Protocol):
    """Where changed pages are published downstream; ``send`` returns once acknowledged."""

    async def send(self, pages: Sequence[Page]) -> None: ...


class MemoryPageUpdates:
    """A :class:`PageUpdateSink` that keeps pages in a list (unit tests, tools)."""

    def __init__(self) -> None:
        self.pages: list[Page] = []

    async def send(self, pages: Sequence[Page]) -> None:
        self.pages.extend(pages)


@dataclass(frozen=True)
class RenderInputs:
    """What a page is assembled from besides the member's state: the catalog and models
    of the moment and the stream's event time (``now_ms``: decays, new releases, epochs)."""

    catalog: Catalog
    model: TopPicksModel
    cowatch: CoWatchSimilarity
    row_utility: RowKindUtility
    now_ms: int


@dataclass(eq=False)  # kept in a list by identity (PageRenderer._in_flight)
class _Unwritten:
    """Pages rendered and not written yet: their bytes by member, and the pages to publish
    (rows changed since the member's last published page)."""

    pages: dict[str, bytes] = dataclasses.field(default_factory=dict)
    changed: dict[str, Page] = dataclasses.field(default_factory=dict)


class PageRenderer:
    """Assembles, stores and publishes pages (members' and the default pages).

    Parameters
    ----------
    settings
        Pipeline settings.
    store
        Where pages are written and trending lists and profile metadata are read.
    page_config
        The default page configuration (variants derive theirs from its rules).
    experiment
        The experiment that assigns members to variants.
    clock
        Wall clock in seconds; only stamps when a page was generated.
    page_updates
        Where changed pages are published (``None``: not published).
    monotonic
        Clock of the render window (seconds, only differences matter).
    """

    def __init__(self, settings: Settings, store: PipelineStore, page_config: PageConfig,
                 experiment: Experiment, clock: Callable[[], float],
                 page_updates: PageUpdateSink | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.page_config = page_config
        self.experiment = experiment
        self.clock = clock
        self.page_updates = page_updates
        self._variant_configs = {
            v: dataclasses.replace(page_config,
                                   rules=experiment.rules_for(v, page_config.rules))
            for v in experiment.split}
        self._digests: OrderedDict[str, int] = OrderedDict()
        #: Countries seen so far (their default pages are rebuilt by the timer).
        self.countries: set[str] = {ALL_COUNTRIES}
        self.window_s = settings.render_window_ms / 1000.0
        self._monotonic = monotonic
        #: When each member's page was last rendered (members rendered within the window).
        self._rendered_at: dict[str, float] = {}
        #: Newest state of members whose change waits for the end of their window, in the
        #: order they were first held (the timer renders the longest held first).
        self._held: dict[str, ProfileState] = {}
        #: Queued members whose held state was changed by a batch that failed before its
        #: commit: their page is rendered from the stored state (:meth:`mark_stale`).
        self._stale: set[str] = set()
        #: Members whose page the last :meth:`render` call wrote.
        self.rendered: list[str] = []
        #: When each queued member's change was first queued (render-window clock).
        self._queued_at: dict[str, float] = {}
        #: The event-topic partition of each queued member (:meth:`drop_partitions`).
        self._queued_partition: dict[str, int] = {}
        #: Seconds queued changes waited before their page was written (for the worker's
        #: log; the reader clears it).
        self.queue_waits: list[float] = []
        #: Serializes page writes, so a member's older page never overwrites a newer one.
        self._write_lock = asyncio.Lock()
        #: One :meth:`flush_due` at a time (the timer's and the final one).
        self._flush_lock = asyncio.Lock()
        #: Queued pages :meth:`flush_due` rendered and has not written yet: being rendered,
        #: and waiting for their write.
        self._unwritten = _Unwritten()
        self._in_flight: list[_Unwritten] = []
        #: (country, trending epoch, popularity epoch) -> (read at, trending, popular).
        self._lists: dict[tuple[str, int, int], tuple[float, list, list]] = {}
        #: CPU seconds of the event loop's thread spent assembling members' pages (their
        #: JSON and rows' digest included, not their writes), and the pages assembled.
        self.assembly_cpu_s = 0.0
        self.assembled = 0

    def forget(self, profile_ids: Sequence[str]) -> None:
        """Forget erased members (or members of revoked partitions): their held state,
        render times, last rows' digest and a page of theirs rendered but not written yet
        (an erased member's page is never written back)."""
        unwritten = [self._unwritten, *self._in_flight]
        for pid in profile_ids:
            for remembered in (self._held, self._rendered_at, self._queued_at,
                               self._queued_partition, self._digests,
                               *(u.pages for u in unwritten), *(u.changed for u in unwritten)):
                remembered.pop(pid, None)
            self._stale.discard(pid)

    def mark_stale(self, profile_ids: Collection[str]) -> None:
        """The held states of these members (if queued) were changed and not committed (the
        worker keeps states between batches, and a batch that failed changed them in
        place): before their page is rendered, their states are read from the store again,
        unless a later batch queues a newer one first."""
        self._stale.update(p for p in profile_ids if p in self._held)

    @staticmethod
    def country_of(state: ProfileState) -> str:
        """The country whose lists a member's page uses (unknown: all countries')."""
        return state.country if state.country not in ("", "ZZ") else ALL_COUNTRIES

    async def render(self, states: Sequence[ProfileState], inp: RenderInputs,
                     first: Collection[str] = (), partitions: Mapping[str, int] | None = None,
                     urgent: bool = False) -> tuple[int, int]:
        """Materialize pages now: with a render window, only those of ``first`` (members
        with no page yet, e.g. their first event), the rest being queued for
        :meth:`flush_due` (with their event-topic partition from ``partitions``); without
        one, every member's. ``urgent`` (the consumer is catching up on a backlog): those of
        ``first`` are queued too, at the head of the queue and due at once. Returns (pages
        written, pages published); :attr:`rendered` names the members whose page this call
        wrote."""
        if self.window_s > 0:
            states = self._queue(states, first, partitions or {}, urgent)
        self.rendered = [s.profile_id for s in states]
        if not states:
            return 0, 0
        async with self._write_lock:
            return await self._render_now(states, inp)

    async def flush_due(self, inp: RenderInputs, budget_s: float | None = None,
                        busy: Callable[[], bool] = lambda: True,
                        between: asyncio.Lock | None = None, due_only: bool = True) -> int:
        """Render the queued pages whose member's window ended, the longest queued first,
        until none is due or, while ``busy()`` (event batches want the worker), ``budget_s``
        seconds (wall clock; ``None``: no limit) are spent, at least one slice a call; the
        rest wait for the next call. Pages are rendered ``FLUSH_SLICE`` per hold of
        ``between`` (the worker's batch lock: a slice runs between two event batches, never
        inside one) and written ``FLUSH_CHUNK`` at a time without it, a chunk while the next
        one renders. ``due_only=False``:
        queued pages whose window has not ended too (the worker stops). Returns pages
        written. Also forgets render times older than the window."""
        cutoff = self._monotonic() - self.window_s
        for pid in [p for p, t in self._rendered_at.items()
                    if t <= cutoff and p not in self._held]:
            del self._rendered_at[pid]
        started = time.perf_counter()
        written = 0
        writing: asyncio.Future[int] | None = None
        async with self._flush_lock:  # one flush at a time (a tick, the final flush)
            try:
                while pids := self._peek_due(FLUSH_CHUNK, due_only):
                    spent = await self._render_chunk(pids, inp, between, lambda: (
                        budget_s is not None and time.perf_counter() - started >= budget_s
                        and busy()))
                    out, self._unwritten = self._unwritten, _Unwritten()
                    if writing is not None:  # the chunk before, written while this rendered
                        before, writing = writing, None
                        written += await before
                    writing = asyncio.ensure_future(self._write_in_turn(out))
                    if spent:
                        break
            finally:
                if writing is not None:
                    written += await writing
        return written

    async def _render_chunk(self, pids: Sequence[str], inp: RenderInputs,
                            between: asyncio.Lock | None, spent: Callable[[], bool]) -> bool:
        """Render the queued pages of ``pids`` into :attr:`_unwritten`, ``FLUSH_SLICE`` per
        hold of ``between``, until ``spent()``; returns whether it stopped for that."""
        if self._stale.intersection(pids):
            async with between or contextlib.nullcontext():
                await self._reload_stale(pids)
            pids = [p for p in pids if p in self._held]
        lists, metas = await self._page_inputs([self._held[p] for p in pids], inp)
        for i in range(0, len(pids), FLUSH_SLICE):
            async with between or contextlib.nullcontext():
                # their newest state (none if forgotten meanwhile)
                states = self._take(pids[i:i + FLUSH_SLICE])
                if missing := {self.country_of(s) for s in states} - lists[0].keys():
                    got = await self.popularity(sorted(missing), inp.now_ms)
                    lists = ({**lists[0], **got[0]}, {**lists[1], **got[1]})
                self._assemble(states, inp, lists, metas, self._unwritten)
            if spent():
                return True
            await asyncio.sleep(0)  # event batches and the consumer's keepalive go first
        return False

    async def _reload_stale(self, pids: Sequence[str]) -> None:
        """Replace the stale held states among ``pids`` by the stored ones (a member without
        a stored state any more is forgotten)."""
        stale = [p for p in pids if p in self._stale]
        stored = await self.store.load_profiles(stale)
        self._stale.difference_update(stale)
        for pid in stale:
            if pid in stored and pid in self._held:
                self._held[pid] = stored[pid]
        self.forget([p for p in stale if p not in stored])

    async def _write_in_turn(self, out: _Unwritten) -> int:
        """:meth:`_write` under the write lock (page writes in the order they were made);
        until it is sent, :meth:`forget` still takes a member's page out of ``out``."""
        self._in_flight.append(out)
        try:
            async with self._write_lock:
                return await self._write(out)
        finally:
            self._in_flight.remove(out)

    @property
    def flush_interval_s(self) -> float:
        """Seconds between two :meth:`flush_due` ticks: a quarter window (at least 10 ms)."""
        return max(self.window_s / 4, 0.01)

    @property
    def flush_budget_s(self) -> float:
        """Seconds of rendering one :meth:`flush_due` tick may spend (its share of the
        interval, ``HOMESTREAM_RENDER_BUDGET_SHARE``)."""
        return self.settings.render_budget_share * self.flush_interval_s

    @property
    def held(self) -> int:
        """Members whose page waits: for the end of their render window, or rendered by
        :meth:`flush_due` and not written yet."""
        return len(self._held) + sum(p not in self._held for p in self._unwritten.pages)

    def drop_partitions(self, partitions: Collection[int]) -> int:
        """Forget the queued changes of members of ``partitions`` (revoked from this worker:
        their new owner renders them from the stored state, and a late page written here
        could overwrite its newer one). Returns how many were dropped."""
        doomed = [p for p, part in self._queued_partition.items() if part in partitions]
        self.forget(doomed)
        return len(doomed)

    def _queue(self, states: Sequence[ProfileState], first: Collection[str],
               partitions: Mapping[str, int], urgent: bool = False) -> list[ProfileState]:
        """Of ``states`` (each newer than any queued state of its member), those of
        ``first`` (render now; with ``urgent`` queued at the head of the queue instead);
        the others are queued: the newest state per member, a member keeping its place in
        the queue while its change waits."""
        head = [s.profile_id for s in states if s.profile_id in first] if urgent else []
        if head:
            first = ()
        now = self._monotonic()
        out: list[ProfileState] = []
        for s in states:
            pid = s.profile_id
            if pid in first:
                out.append(s)
                self._held.pop(pid, None)
                self._queued_at.pop(pid, None)
                self._queued_partition.pop(pid, None)
                self._rendered_at[pid] = now
            else:
                self._held[pid] = s
                self._stale.discard(pid)
                self._queued_at.setdefault(pid, now)
                self._queued_partition[pid] = partitions.get(pid, -1)
        if head:  # members without a page, or opening the app: theirs come before every
            # other change's, and are due at once (not at the end of a window a page of
            # theirs rendered within)
            self._held = {**{p: self._held[p] for p in head}, **self._held}
            for pid in head:
                self._rendered_at.pop(pid, None)
        return out

    def _peek_due(self, limit: int, due_only: bool = True) -> list[str]:
        """Up to ``limit`` queued members whose window ended (or who were not rendered
        within one), the longest queued first (left in the queue)."""
        now = self._monotonic()
        rendered_at = self._rendered_at
        return list(islice((p for p in self._held if not due_only or p not in rendered_at
                            or now - rendered_at[p] >= self.window_s), limit))

    def _take(self, profile_ids: Sequence[str]) -> list[ProfileState]:
        """The queued states of ``profile_ids`` still queued, taken out of the queue and
        marked rendered now."""
        now = self._monotonic()
        taken = [pid for pid in profile_ids if pid in self._held]
        for pid in taken:
            self._rendered_at[pid] = now
            self._queued_partition.pop(pid, None)
            self.queue_waits.append(now - self._queued_at.pop(pid, now))
        del self.queue_waits[:-10_000]  # bounded when nobody reads it
        return [self._held.pop(pid) for pid in taken]

    async def _page_inputs(self, states: Sequence[ProfileState], inp: RenderInputs
                           ) -> tuple[tuple[Popularity, Popularity], dict[str, dict]]:
        """The lists of the members' countries and the members' settings: what their pages
        need from the store besides their states."""
        countries = sorted({self.country_of(s) for s in states})
        self.countries.update(countries)
        lists, metas = await asyncio.gather(
            self.popularity(countries, inp.now_ms),
            self.store.load_profile_meta([s.profile_id for s in states]))
        return lists, metas

    async def _render_now(self, states: Sequence[ProfileState], inp: RenderInputs
                          ) -> tuple[int, int]:
        """Assemble, write and publish the pages of ``states``."""
        lists, metas = await self._page_inputs(states, inp)
        out = _Unwritten()
        for i in range(0, len(states), RENDER_SLICE):
            if i:
                await asyncio.sleep(0)  # let the consumer's keepalive and timers run
            self._assemble(states[i:i + RENDER_SLICE], inp, lists, metas, out)
        n = await self._write(out)
        return n, len(out.changed) if self.page_updates is not None else 0

    def _assemble(self, states: Sequence[ProfileState], inp: RenderInputs,
                  lists: tuple[Popularity, Popularity], metas: Mapping[str, dict],
                  out: _Unwritten) -> None:
        """Assemble the pages of ``states`` into ``out``: every page's bytes, and the pages
        whose rows changed since the member's last published page (to publish)."""
        started = time.thread_time()
        trending, popular = lists
        configs: dict[str, PageConfig] = {}
        for s in states:
            c = self.country_of(s)
            meta = ProfileMeta(**metas[s.profile_id]) if s.profile_id in metas else None
            variant = self.experiment.variant_of(s.profile_id)
            if variant not in configs:
                configs[variant] = self.page_config_for(variant, inp.row_utility)
            page = assemble_page(s, inp.catalog, trending.get(c, []), inp.model.score_many,
                                 configs[variant], c, inp.now_ms, meta, inp.cowatch,
                                 popular=popular[c])
            page["variant"] = variant
            page["generated_at_ms"] = int(self.clock() * 1000)
            page["context"] = s.artwork_context(inp.now_ms, self.settings.affinity_half_life_s)
            rows = orjson.dumps(page["rows"])  # serialized once: digest and page bytes
            out.pages[s.profile_id] = orjson.dumps({**page, "rows": orjson.Fragment(rows)})
            if self._rows_changed(s.profile_id, rows):
                out.changed[s.profile_id] = page
        self.assembly_cpu_s += time.thread_time() - started
        self.assembled += len(states)

    async def _write(self, out: _Unwritten) -> int:
        """Write the pages of ``out`` to the store and publish its changed ones; returns
        the pages written."""
        if not out.pages:
            return 0
        await self.store.write_pages(out.pages, {})
        if self.page_updates is not None and out.changed:
            await self.page_updates.send(list(out.changed.values()))
        return len(out.pages)

    def _rows_changed(self, profile_id: str, rows: bytes) -> bool:
        """Whether the page's rows (as JSON) differ from the member's last published ones
        (and remember them; the least recently changed members are forgotten first)."""
        # the interpreter's 64-bit keyed hash of the bytes: ~5x faster than blake2b on a
        # page's ~30 KB of rows; the digests never leave this process (whose hash key it is)
        digest = hash(rows)
        if self._digests.get(profile_id) == digest:
            return False
        self._digests[profile_id] = digest
        self._digests.move_to_end(profile_id)
        while len(self._digests) > DIGEST_CACHE:
            self._digests.popitem(last=False)
        return True

    def page_config_for(self, variant: str | None, row_utility: RowKindUtility) -> PageConfig:
        """The variant's page configuration (``None``: the default page's), with row-kind
        weights learned from takes (:class:`~online_models.row_utility.RowKindUtility`)
        unless row learning is off."""
        cfg = self.page_config if variant is None else self._variant_configs[variant]
        if not self.settings.row_learning:
            return cfg
        return dataclasses.replace(cfg, row_weights=row_utility.weights(cfg.rules.row_weights))

    def trending_epoch(self, now_ms: int, half_life_s: float | None = None) -> int:
        """The decay epoch of the trending lists (``half_life_s``: another list's)."""
        return epoch_of(now_ms, half_life_s or self.settings.trending_half_life_s)

    async def popularity(self, countries: Sequence[str], now_ms: int
                         ) -> tuple[Popularity, Popularity]:
        """``(trending, popular)`` by country: the short-horizon lists for the Top 10 and
        Trending rows, the long-horizon ones (keyed by country too) for relevance. With a
        render window, lists read less than a window ago are reused."""
        epochs = (self.trending_epoch(now_ms),
                  self.trending_epoch(now_ms, self.settings.popularity_half_life_s))
        now = self._monotonic()
        if self.window_s > 0:
            fresh = {c: hit for c in countries
                     if (hit := self._lists.get((c, *epochs))) and now - hit[0] < self.window_s}
        else:
            fresh = {}
        missing = [c for c in countries if c not in fresh]
        trending: Popularity = {c: hit[1] for c, hit in fresh.items()}
        popular: Popularity = {c: hit[2] for c, hit in fresh.items()}
        if missing:
            got_t, got_p = await asyncio.gather(
                self.store.top_trending(missing, epochs[0], 4 * self.settings.row_length),
                self.store.top_trending([popular_list(c) for c in missing], epochs[1],
                                        self.settings.popularity_depth))
            for c in missing:
                trending[c], popular[c] = got_t.get(c, []), got_p.get(popular_list(c), [])
                if self.window_s > 0:
                    self._lists[(c, *epochs)] = (now, trending[c], popular[c])
        if len(self._lists) > 4 * len(self.countries) + 16:  # old epochs' entries
            self._lists = {k: v for k, v in self._lists.items() if k[1:] == epochs}
        return trending, popular

    async def refresh_default_pages(self, inp: RenderInputs) -> int:
        """Rebuild the non-personalized page of every country seen so far."""
        countries = sorted(self.countries)
        trending, popular = await self.popularity(countries, inp.now_ms)
        config = self.page_config_for(None, inp.row_utility)
        pages = {}
        for c in countries:  # one country at a time, letting event batches in between
            pages[c] = orjson.dumps(assemble_page(None, inp.catalog, trending.get(c, []), None,
                                                  config, c, inp.now_ms, popular=popular[c]))
            await asyncio.sleep(0)
        await self.store.write_pages({}, pages)
        return len(pages)
