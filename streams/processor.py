"""The worker's per-micro-batch step: decode -> dedupe/apply -> learn -> materialize pages.

Independent of Faust so it can be driven by the Faust agent, by tests and by tools alike;
I/O goes through two injected edges, a :class:`~features.store.PipelineStore` and a
:class:`DeadLetterSink`. A batch does at most four store round trips whatever its size:
load the affected profiles (one ``MGET``), commit states + trending + counters (one
``MULTI``), read trending for the countries involved (one pipeline) and write the pages
(one ``MSET``). Pages are assembled, written and published by a
:class:`~streams.render.PageRenderer`; messages are decoded by a
:class:`~streams.decode.MessageDecoder`; what a batch teaches the shared models becomes one
:class:`~streams.learning.LearningRecord`, learned in place by a
:class:`~streams.models.ModelSet` or handed to a learning sink (the learner's topic) before
the batch's states are committed; artwork settling is a :class:`~streams.settle.ArtworkSettler`.

The module stays above ~500 lines because the batch loop's steps (apply, collect learning,
commit, render) read best next to each other; every other concern lives in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from features.catalog import Catalog
from features.keys import ALL_COUNTRIES, popular_list
from features.profile import (
    ArtworkReward,
    Effects,
    FeatureParams,
    ProfileMeta,
    ProfileState,
    apply_event,
)
from features.store import ArtworkDue, PipelineStore, TrendingIncrement
from features.trending import decayed_weight
from homestream.settings import Settings
from online_models.bandits import ArtworkPolicy
from online_models.experiments import experiment_from_settings
from online_models.page import PageConfig
from online_models.row_utility import RowKindUtility
from online_models.rules import Rules, rules_from_settings
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel, sample_negatives
from streams.clock import StreamClock
from streams.decode import (  # noqa: F401  (re-exported: callers import them from here)
    DeadLetterSink,
    MemoryDeadLetters,
    MessageDecoder,
    RawMessage,
    SourcedEvent,
)
from streams.erasure import drop_erased, erase_members
from streams.learning import LearningRecord, LearningSink, RecordBuilder
from streams.models import (  # noqa: F401  (checkpoint names re-exported for callers)
    ARTWORK_CHECKPOINT,
    CHECKPOINT_NAMES,
    COWATCH_CHECKPOINT,
    LEARNER_CHECKPOINT,
    MODEL_CHECKPOINT,
    ROW_UTILITY_CHECKPOINT,
    ModelSet,
)
from streams.outage import Backoff, OutageStats, retry_transient
from streams.poison import isolate_batch
from streams.render import (
    MemoryPageUpdates,  # noqa: F401  (re-exported: callers import the sinks from here)
    PageRenderer,
    PageUpdateSink,
    Popularity,
    RenderInputs,
)
from streams.settle import ArtworkSettler
from streams.state_cache import StateCache
from topics.codec import AvroCodec, DecodeError, default_codec
from topics.models import DeadLetter, Impression, Play, SessionStart, Title
from topics.registry_framing import prepare

log = logging.getLogger(__name__)
#: A batch whose newest message is older than this means the consumer is behind: the page
#: timer then keeps to its budget so the events catch up. Under more page work than the
#: worker has time for, the events' lag settles around this value (the timer takes every
#: spare moment below it), so it is well under the 250 ms freshness target: the fetch wait
#: and the batch collection alone take ~20-60 ms.
BEHIND_S = 0.1
#: A batch whose newest message is older than this (or a full batch) means the consumer is
#: catching up on a backlog: members' first pages are queued like every other change (at
#: the head of the queue) instead of rendered in the batch, so a member's page is rendered
#: once when the backlog is caught up instead of once per window while it is.
CATCH_UP_S = 1.0
#: A consumer catching up that has not finished an event batch for this long has run out
#: of backlog (its next batch would have started within ``batch_within_s``): the page timer
#: is woken then to render the pages queued meanwhile, instead of at its next tick.
CATCH_UP_IDLE_S = 0.05
#: A sourced event's event time (the sort key of a member's events, read in C).
_EVENT_TS = attrgetter("event.event_ts_ms")


@dataclass
class BatchWork:
    """What applying a batch's events produced, for the steps after it."""

    builder: RecordBuilder
    changed: list[ProfileState] = field(default_factory=list)
    to_render: list[ProfileState] = field(default_factory=list)
    trending: list[TrendingIncrement] = field(default_factory=list)
    art_due: list[ArtworkDue] = field(default_factory=list)
    late_letters: list[DeadLetter] = field(default_factory=list)
    #: Play starts ``(country, title_id, event_ts_ms)``, counted once the batch is applied.
    plays: list[tuple[str, str, int]] = field(default_factory=list)
    #: Event times of the applied events that changed a page, by profile.
    applied_ts: dict[str, list[int]] = field(default_factory=dict)
    #: Members who opened the app (a ``SessionStart``): their page renders in this batch,
    #: even with a render window.
    render_now: set[str] = field(default_factory=set)


@dataclass
class BatchReport:
    """What one micro-batch did."""

    messages: int = 0
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    profiles: int = 0
    pages: int = 0
    labels: int = 0
    late: int = 0
    #: Events of erased members, dropped unapplied.
    erased: int = 0
    published: int = 0
    art_rewards: int = 0
    quality_plays: int = 0
    #: The batch's learning was handed to the models (or the learner).
    learned: bool = False
    #: The states were committed (the models' learning of this batch is then kept).
    committed: bool = False
    #: Page-write time minus event time, per applied event, in ms.
    freshness_ms: list[float] = field(default_factory=list)
    #: Decoded events by record name (``Play``, ``Scroll``...), for the metrics.
    event_types: Counter[str] = field(default_factory=Counter)
    #: Milliseconds of the batch's steps (``lock``: waiting for the batch lock, then
    #: ``decode``, ``load``, ``apply``, ``learn``, ``commit``, ``render``), for the log.
    stages_ms: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter, repr=False)

    def lap(self, stage: str) -> None:
        """Add the time since the last lap (or since the report was made) to ``stage``."""
        now = time.perf_counter()
        self.stages_ms[stage] = self.stages_ms.get(stage, 0.0) + 1000.0 * (now - self._mark)
        self._mark = now


class EventProcessor:
    """Holds the worker's in-memory parts (catalog, model) and runs micro-batches.

    Parameters
    ----------
    settings
        Pipeline settings.
    store
        Where state and pages live.
    dead_letters
        Where unusable input goes.
    clock
        Wall clock in seconds; only used to stamp when a page was written, never as
        event time.
    """

    def __init__(self, settings: Settings, store: PipelineStore, dead_letters: DeadLetterSink,
                 codec: AvroCodec | None = None, clock: Callable[[], float] = time.time,
                 page_updates: PageUpdateSink | None = None, rules: Rules | None = None,
                 learning: LearningSink | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dead_letters = dead_letters
        self.page_updates = page_updates
        self.codec = codec or default_codec()
        self.clock = clock
        self.decoder = MessageDecoder(self.codec, clock, settings.max_lateness_s,
                                      settings.max_future_skew_s)
        self.catalog = Catalog()
        self.catalog_version = -1
        self.params = FeatureParams(
            dedupe_window=settings.dedupe_window, recent_titles=settings.recent_titles,
            affinity_half_life_s=settings.affinity_half_life_s,
            reward_window_s=settings.artwork_reward_window_s,
            quality_fraction=settings.artwork_quality_fraction,
            row_attribution_window_s=settings.row_attribution_window_s,
            delayed_positives=settings.artwork_delayed_positives,
            member_titles_max=settings.member_titles_max,
        )
        #: Where a batch's learning goes (``None``: into :attr:`models`, in place).
        self.learning = learning
        self.models = ModelSet(settings)
        #: Version of the learner's snapshot the models are (0: none yet).
        self._snapshot_version = 0
        #: Draws the sampled negatives of labels sent to the learner.
        self._rng = random.Random(settings.model_seed)
        self.settler = ArtworkSettler(self)
        #: Committed states of this worker's members, kept between batches.
        self.states = StateCache(settings.state_cache_members)
        #: Logging policies whose decisions teach the artwork policy (empty: all of them).
        self._learn_from = settings.artwork_learn_from_policies
        self.page_config = PageConfig(row_length=settings.row_length,
                                      affinity_half_life_s=settings.affinity_half_life_s,
                                      rules=rules or rules_from_settings(settings))
        self.experiment = experiment_from_settings(settings)
        self.renderer = PageRenderer(settings, store, self.page_config, self.experiment,
                                     clock, page_updates)
        self._catalog_ids: list[str] = []
        self._started = False
        #: Held while the models are loaded, so concurrent starters load them once.
        self._start_lock = asyncio.Lock()
        #: Orders checkpoint writes (the timer's and the one at shutdown).
        self._checkpoint_lock = asyncio.Lock()
        #: The stream's "now" for page assembly, decay epochs and the settling watermark,
        #: which no single member or partition can move (streams.clock).
        self.stream_clock = StreamClock(settings.clock_quorum,
                                        int(settings.max_future_skew_s * 1000))
        #: Serializes batches, the settling timer (both load, change and store states) and
        #: the checkpoints' snapshots (taken between batches, never inside one).
        self._state_lock = asyncio.Lock()
        #: Pages written, and queued pages (render window), not yet in the stored counters.
        self._pages_unreported = 0
        #: The renderer's assembly CPU (microseconds) and pages reported to the counters.
        self._assembly_reported = (0, 0)
        self._queued_reported = 0
        #: Event batches started so far, and whether the last one showed the consumer
        #: behind (:meth:`_lag_s` over BEHIND_S): the page timer keeps to its budget then.
        self._batches_started = 0
        self._behind = False
        #: Whether the last batch showed the consumer catching up on a backlog
        #: (:data:`CATCH_UP_S`): first pages are then queued too.
        self._catching_up = False
        #: What wakes the page timer early when a backlog runs out (:meth:`next_flush`).
        self._flush_wake = asyncio.Event()
        #: A batch that fails because Redis is unreachable is retried whole (streams.outage).
        self.outage_backoff = Backoff(settings.outage_retry_initial_s,
                                      settings.outage_retry_max_s)
        self.outage_stats = OutageStats()
        #: The store lost its dataset (its catalog version went back): streams.rebuild puts
        #: the catalog and the profiles' settings back from their topics.
        self.store_reset = False

    # -- lifecycle and models ---------------------------------------------------------------
    @property
    def model(self) -> TopPicksModel:
        """Top Picks as this processor ranks with it (the learner's latest snapshot when
        learning goes to the model-updates topic)."""
        return self.models.model

    @property
    def cowatch(self) -> CoWatchSimilarity:
        return self.models.cowatch

    @property
    def artwork_policy(self) -> ArtworkPolicy:
        return self.models.artwork_policy

    @property
    def row_utility(self) -> RowKindUtility:
        return self.models.row_utility

    @property
    def learns_inline(self) -> bool:
        """Whether this processor learns the models itself (no learning sink)."""
        return self.learning is None

    def _fresh_models(self) -> None:
        """Untrained models (restored from their checkpoints by :meth:`start`)."""
        self.models = ModelSet(self.settings)

    async def start(self) -> None:
        """Load the catalog and the latest model checkpoints (idempotent)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:  # another caller loaded them while this one waited
                return
            await self.refresh_catalog(force=True)
            await self._restore_models()
            self._started = True

    async def _restore_models(self) -> None:
        """Replace the models by their latest checkpoints (those the store has)."""
        self._snapshot_version = await self.store.snapshot_version()
        self.models.restore(await self.store.load_checkpoints(CHECKPOINT_NAMES))

    async def reload_models(self) -> bool:
        """Swap in the learner's latest snapshot when its version moved (a timer tick of a
        worker whose learning goes to the learner); the small version key is all that is
        read when nothing changed. Decoding the checkpoints runs in a thread, off the event loop."""
        if self.learns_inline or not self._started:
            return False
        version = await self.store.snapshot_version()
        if version == self._snapshot_version:
            return False
        blobs = await self.store.load_checkpoints(CHECKPOINT_NAMES)
        fresh = ModelSet(self.settings)
        await asyncio.to_thread(fresh.restore, blobs)
        self.models, self._snapshot_version = fresh, version
        return True

    async def checkpoint(self, force: bool = False) -> bool:
        """Save the models if they learned anything since the last checkpoint (the Top Picks
        checkpoint carries a version number that grows with every save). Only a processor
        that learns inline checkpoints; else the learner owns the snapshots.

        The models are serialized under the batch lock, i.e. between two batches: a
        checkpoint holds the learning of batches whose states were committed and of no
        other, so a batch replayed after a crash (not committed, hence not deduplicated) was
        not learned by the checkpoint either and is learned once. Nothing is saved before
        :meth:`start` restored the models (or after a failed batch discarded them)."""
        if not self.learns_inline:
            return False
        async with self._checkpoint_lock:
            async with self._state_lock:
                if not self._started or (not force and self.models.unsaved == 0):
                    return False
                learned = self.models.unsaved
                blobs = self.models.to_blobs()
                version = self.models.meta.version
                blobs.pop(LEARNER_CHECKPOINT)  # a learner's bookkeeping, not a worker's
            try:
                await self.store.save_checkpoints(blobs, version)  # all four, or none
            except BaseException:
                self.models.unsaved += learned  # not saved: the next tick retries
                raise
        return True

    def _discard_uncommitted_learning(self, exc: BaseException) -> None:
        """A batch failed after its models learned and before its states were committed: drop
        the in-memory models, so the next caller of :meth:`start` restores them from the
        last checkpoint and a replay of the batch is not learned twice (checkpoints must
        never hold the learning of an uncommitted batch)."""
        log.error("batch failed between learning and committing (%s: %s): models go back "
                  "to the last checkpoint", type(exc).__name__, exc)
        self._fresh_models()
        self._started = False

    async def refresh_catalog(self, force: bool = False) -> bool:
        """Reload the catalog from the store when its version moved."""
        version = await self.store.catalog_version()
        if version < self.catalog_version and self._catalog_ids:
            # the version only grows: the store lost the catalog (Redis restarted empty)
            log.warning("the store's catalog is gone (version %d < %d): writing back the %d "
                        "titles held here", version, self.catalog_version, len(self._catalog_ids))
            self.catalog_version = await self.store.put_titles(self.catalog.titles())
            self.store_reset = True
            self.states.clear()  # what Redis lost is not brought back by this worker's copies
            return False
        if not force and version == self.catalog_version:
            return False
        version, titles = await self.store.load_catalog()
        # sorted: the store's order (a Redis hash) changes between runs, and the model's
        # negative sampling indexes this list, so sorting makes replays reproducible
        titles = sorted(titles, key=lambda t: t.title_id)
        self.catalog = Catalog(titles)
        self._catalog_ids = self.catalog.title_ids()
        self.catalog_version = version
        return True

    # -- catalog topic --------------------------------------------------------------------
    async def process_catalog(self, messages: Sequence[RawMessage]) -> int:
        """Store catalog records (tombstones delete); bad records go to the dead letters.
        Retried whole while Redis is unreachable (storing titles again changes nothing)."""
        return await retry_transient(lambda: self._process_catalog(messages), "catalog batch",
                                     self.outage_backoff, self.outage_stats)

    async def _process_catalog(self, messages: Sequence[RawMessage]) -> int:
        upserts: dict[str, Title] = {}
        deletes: list[str] = []
        letters = []
        for m in messages:
            if m.value is None:
                if m.key:
                    tid = m.key.decode("utf-8", "replace")
                    deletes.append(tid)
                    upserts.pop(tid, None)
                continue
            try:
                t = self.codec.decode_title(m.value)
            except DecodeError as exc:
                letters.append(self._letter(m, str(exc), "DecodeError"))
                continue
            upserts[t.title_id] = t
            if t.title_id in deletes:
                deletes.remove(t.title_id)
        if letters:
            await self.dead_letters.send(letters)
        if upserts or deletes:
            await self.store.put_titles(list(upserts.values()), deletes)
            await self.refresh_catalog()
        return len(upserts) + len(deletes)

    # -- profiles topic -------------------------------------------------------------------
    async def process_profiles(self, messages: Sequence[RawMessage]) -> int:
        """Store profile settings and re-render the pages of the profiles that changed;
        retried whole while Redis is unreachable (storing settings again changes nothing)."""
        return await retry_transient(lambda: self._process_profiles(messages),
                                     "profiles batch", self.outage_backoff, self.outage_stats)

    async def _process_profiles(self, messages: Sequence[RawMessage]) -> int:
        metas: dict[str, dict] = {}
        letters = []
        for m in messages:
            if m.value is None:
                if m.key:
                    metas[m.key.decode("utf-8", "replace")] = {}
                continue
            try:
                p = self.codec.decode_profile(m.value)
            except DecodeError as exc:
                letters.append(self._letter(m, str(exc), "DecodeError"))
                continue
            metas[p.profile_id] = ProfileMeta(
                kids=p.kids, max_rating=p.max_maturity_rating, country=p.country).model_dump()
        if letters:
            await self.dead_letters.send(letters)
        erased = await self.store.erased([p for p, meta in metas.items() if not meta])
        if erased:  # the tombstone of an erasure (homestream.erase), not a settings reset
            await erase_members(self, sorted(erased))
            metas = {p: meta for p, meta in metas.items() if p not in erased}
        if metas:
            await self.start()
            await self.store.put_profile_meta(metas)
            states = await self.load_states(list(metas))
            if states:
                await self._render(list(states.values()))
        return len(metas)

    # -- event topics ---------------------------------------------------------------------
    def _letter(self, m: RawMessage, reason: str, error_type: str,
                event_id: str | None = None, value: bytes | None = None) -> DeadLetter:
        return self.decoder.letter(m, reason, error_type, event_id, value)

    def decode(self, messages: Sequence[RawMessage]
               ) -> tuple[list[SourcedEvent], list[DeadLetter]]:
        """Valid events with their messages, and dead letters (:meth:`MessageDecoder.decode`)."""
        return self.decoder.decode(messages)

    async def process(self, messages: Sequence[RawMessage]) -> BatchReport:
        """Run one micro-batch end to end; returns when pages and dead letters are written."""
        self._batches_started += 1
        lag_s = self._lag_s(messages)
        self._behind, self._catching_up = lag_s > BEHIND_S, lag_s > CATCH_UP_S
        asked = time.perf_counter()
        async with self._state_lock:  # an outage holds it: the timers wait too
            waited_ms = 1000.0 * (time.perf_counter() - asked)
            try:
                report = await retry_transient(lambda: self._process(messages),
                                               "event batch", self.outage_backoff,
                                               self.outage_stats)
            except Exception as exc:  # not an outage: find the poisoned events, keep the rest
                report = await isolate_batch(self, messages, exc)
            finally:
                if self._catching_up:
                    asyncio.get_running_loop().call_later(
                        CATCH_UP_IDLE_S, self._wake_if_caught_up, self._batches_started)
        report.stages_ms["lock"] = waited_ms
        return report

    def _wake_if_caught_up(self, batches: int) -> None:
        """Wake the page timer when no batch followed batch number ``batches`` (one of a
        backlog) within :data:`CATCH_UP_IDLE_S` and pages are queued: the backlog ran out,
        so its members' pages render now, not at the timer's next tick."""
        if self._batches_started == batches and self.renderer.held:
            self._flush_wake.set()

    async def next_flush(self, interval_s: float) -> None:
        """Wait for the page timer's next tick: ``interval_s``, or less when a backlog the
        consumer was catching up on ran out with pages queued."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush_wake.wait(), interval_s)
        self._flush_wake.clear()

    def _lag_s(self, messages: Sequence[RawMessage]) -> float:
        """How far behind the consumer is: seconds since the batch's newest message was
        written (broker or producer time; 0 without timestamps), infinite for a full batch.
        Over :data:`BEHIND_S` the page timer keeps to its budget; over :data:`CATCH_UP_S`
        first pages are queued too."""
        if len(messages) >= self.settings.batch_max_events:
            return float("inf")
        newest = max((m.timestamp_ms or 0 for m in messages), default=0)
        return max(0.0, self.clock() - newest / 1000) if newest > 0 else 0.0

    async def _process(self, messages: Sequence[RawMessage]) -> BatchReport:
        await self.start()
        report = BatchReport(messages=len(messages))
        await prepare(self.codec, (m.value for m in messages))  # registry ids, off the loop
        events, letters = self.decode(messages)
        report.lap("decode")
        report.events, report.dead_letters = len(events), len(letters)
        report.event_types = Counter(type(se.event).__name__ for se in events)
        if letters:
            await self.dead_letters.send(letters)
        if not events:
            if letters:
                await self.store.commit_batch([], [], {"dead_letters": len(letters)})
            return report
        return await self.process_decoded(messages, events, report)

    async def process_decoded(self, messages: Sequence[RawMessage],
                              events: list[SourcedEvent], report: BatchReport) -> BatchReport:
        """Apply decoded ``events`` (of ``messages``) and commit them, filling ``report``; a
        failure after the models learned and before the commit drops that learning."""
        await self.start()
        by_profile: dict[str, list[SourcedEvent]] = {}
        for se in events:
            by_profile.setdefault(se.event.profile_id, []).append(se)
        # the catalog's version, the erasure marks and the states in one round trip's time
        _, report.erased, states = await asyncio.gather(
            self.refresh_catalog(), drop_erased(self, by_profile),
            self.load_states(list(by_profile)))
        states = {p: s for p, s in states.items() if p in by_profile}  # erased: dropped
        # events of a keyed message belong to the key's profile (others are dead letters)
        partition_of = {m.key.decode("utf-8", "replace"): m.partition
                        for m in messages if m.key}
        report.lap("load")
        try:
            return await self._apply_and_commit(report, by_profile, states, partition_of)
        except BaseException as exc:
            if not report.committed:  # the states were changed in place: not what Redis has
                self.forget_uncommitted(by_profile)
            if report.learned and not report.committed:
                self._discard_uncommitted_learning(exc)
            raise

    async def load_states(self, profile_ids: Sequence[str]) -> dict[str, ProfileState]:
        """The stored states of ``profile_ids`` (members without one are left out): those
        the worker holds, the others read from the store in one round trip and held."""
        held, missing = self.states.get_many(profile_ids)
        if not missing:
            return held
        loaded = await self.store.load_profiles(missing)
        self.states.put_many(loaded.values())
        return {**held, **loaded}

    def forget_uncommitted(self, profile_ids: Collection[str]) -> None:
        """These members' states were changed and not committed (a failed batch or
        settling): the worker forgets them, and their queued pages are rendered from the
        stored states instead (:meth:`PageRenderer.mark_stale`)."""
        self.states.discard(profile_ids)
        self.renderer.mark_stale(profile_ids)

    def on_rebalance(self) -> None:
        """Partitions moved: forget the held states (a member of a partition that comes back
        may have been changed by another worker meanwhile)."""
        self.states.clear()

    async def _apply_and_commit(self, report: BatchReport,
                                by_profile: dict[str, list[SourcedEvent]],
                                states: dict[str, ProfileState],
                                partition_of: dict[str, int]) -> BatchReport:
        """Apply the events to the states, hand the batch's learning over, commit the states
        (one transaction), then write co-watch lists and pages; sets ``report.committed``."""
        work = BatchWork(RecordBuilder())
        for pid, evs in by_profile.items():
            self._apply_profile(pid, evs, states.get(pid) or ProfileState(pid),
                                partition_of, work, report)
        self._collect_trending(work.plays, work.trending)
        report.lap("apply")
        report.learned = True  # from here on a failure before the commit drops the learning
        similar_changed = await self._learn(work.builder.build())
        if work.late_letters:
            await self.dead_letters.send(work.late_letters)
            report.late = len(work.late_letters)
        report.lap("learn")
        await self._commit(report, work)
        report.profiles = len(by_profile)
        if similar_changed:
            k = self.settings.row_length
            await self.store.write_similar({t: self.cowatch.most_similar(t, k)
                                            for t in similar_changed})
        report.lap("commit")
        if work.to_render:
            # members with no state before this batch have no page yet, and members opening
            # the app are about to look at theirs: those render now
            first = [s.profile_id for s in work.to_render
                     if s.profile_id not in states or s.profile_id in work.render_now]
            report.pages, report.published = await self._render(
                work.to_render, first, partition_of, urgent=self._catching_up)
            now_ms = self.clock() * 1000.0
            for pid in self.renderer.rendered:  # held pages are written later, by the timer
                report.freshness_ms.extend(now_ms - ts for ts in work.applied_ts.get(pid, ()))
            report.lap("render")
        return report

    def _apply_profile(self, pid: str, evs: list[SourcedEvent], state: ProfileState,
                       partition_of: dict[str, int], work: BatchWork,
                       report: BatchReport) -> None:
        """Apply one member's events in event-time order, collecting their effects."""
        max_late_ms = self.settings.max_lateness_s * 1000.0
        evs.sort(key=_EVENT_TS)  # stable: same-time events keep order
        mutated = render = False
        due_before = state.oldest_pending_art_ms()
        for se in evs:
            ev = se.event
            if (ev.event_ts_ms < state.last_event_ts_ms - max_late_ms
                    and not state.has_seen(ev.event_id)):
                # too late; a redelivery of an event applied before goes on to apply_event,
                # which counts it as a duplicate (dedupe wins)
                work.late_letters.append(self._late_letter(se, state.last_event_ts_ms))
                continue
            # the "Because You Watched" history a watch teaches co-watch (plays only watch)
            history = state.watched_recently(self.cowatch.window) if isinstance(ev, Play) else []
            fx = apply_event(state, ev, self.catalog.genres_of, self.params,
                             self.catalog.cast_of)
            if isinstance(ev, SessionStart):
                work.render_now.add(pid)
            if fx.duplicate:
                report.duplicates += 1
                render = render or not isinstance(ev, Impression)
                continue
            mutated = True
            report.applied += 1
            if fx.page_changed:
                render = True
                work.applied_ts.setdefault(pid, []).append(ev.event_ts_ms)
            self._collect_learning(se, state, history, fx, work.builder, report)
            work.plays.extend(fx.plays)
        if mutated:
            work.changed.append(state)
            self.stream_clock.observe(partition_of.get(pid, -1), pid, state.last_event_ts_ms)
            due_after = state.oldest_pending_art_ms()
            if due_after != due_before:
                work.art_due.append((partition_of.get(pid, -1), pid, due_after))
        if render:
            work.to_render.append(state)

    def _collect_learning(self, se: SourcedEvent, state: ProfileState, history: list[str],
                          fx: Effects, b: RecordBuilder, report: BatchReport) -> None:
        """Add what one applied event teaches the models to the batch's learning record:
        Top Picks labels with their sampled negatives, co-watch updates, artwork rewards,
        row-kind exposures and takes, tagged with the event's message (when the learning
        goes to the learner, which skips what it learned before)."""
        m, inline = se.message, self.learns_inline
        src = (None if inline else m.topic, m.partition, m.offset)
        if fx.art_rewards:
            report.art_rewards += len(fx.art_rewards)
            report.quality_plays += sum(r.reward > 0 for r in fx.art_rewards)
            self.artwork_learning(src, fx.art_rewards, b)
        for tid in fx.watched:
            b.watch(*src, [h for h in history if h != tid], tid)
        if fx.labels:
            self._collect_labels(src, state, fx.labels, b, report)
        if len(fx.row_exposures) == 1 and not fx.row_takes:  # an impression: the usual case
            b.row(*src, fx.row_exposures[0], 1, 0)
        elif fx.row_exposures or fx.row_takes:
            counts: dict[str, list[int]] = {}  # kind -> [exposures, takes], first seen first
            for kind in fx.row_exposures:
                counts.setdefault(kind, [0, 0])[0] += 1
            for kind in fx.row_takes:
                counts.setdefault(kind, [0, 0])[1] += 1
            for kind, (exposed, taken) in counts.items():
                b.row(*src, kind, exposed, taken)

    def _collect_labels(self, src: tuple[str | None, int, int], state: ProfileState,
                        labels: Sequence[tuple[str, float]], b: RecordBuilder,
                        report: BatchReport) -> None:
        """Top Picks labels of one event, a positive's sampled negatives after it."""
        pid, model = state.profile_id, self.models.model
        rng = model.sampling_rng if self.learns_inline else self._rng
        for tid, y in labels:
            b.label(*src, pid, tid, y)
            report.labels += 1
            if y > 0.0:
                for neg in sample_negatives(rng, tid, self._catalog_ids, state.engaged,
                                            model.n_negatives):
                    b.label(*src, pid, neg, 0.0)

    def _collect_trending(self, plays: Sequence[tuple[str, str, int]],
                          trending: list[TrendingIncrement]) -> None:
        """Forward-decayed trending and popularity increments of the batch's play starts,
        summed per list, epoch and title (one sorted-set increment each); a play ahead of the
        stream clock counts as played at the clock (no more weight)."""
        hl, hl_pop = self.settings.trending_half_life_s, self.settings.popularity_half_life_s
        now = self._now_ms()
        sums: dict[tuple[str, int, str], float] = {}
        for country, tid, event_ts in plays:
            ts = min(event_ts, now)
            epoch, w = decayed_weight(ts, hl)
            epoch_p, w_p = decayed_weight(ts, hl_pop)
            for c in dict.fromkeys((ALL_COUNTRIES, country)):
                for key, inc in (((c, epoch, tid), w), ((popular_list(c), epoch_p, tid), w_p)):
                    sums[key] = sums.get(key, 0.0) + inc
        trending += [(c, epoch, tid, inc) for (c, epoch, tid), inc in sums.items()]

    def artwork_learning(self, src: tuple[str | None, int, int],
                         rewards: Sequence[ArtworkReward], b: RecordBuilder) -> None:
        """Add the settled ``rewards`` the artwork policy learns from (those of the logging
        policies in ``artwork_learn_from_policies``; all without it) to ``b``, each with its
        artwork's tags in the catalog (none when it is gone); ``src``: the source message."""
        tags, learn_from = self._artwork_tag_map(), self._learn_from
        for r in rewards:
            if not learn_from or r.policy in learn_from:
                b.artwork(*src, r.context_json, r.artwork_id,
                          tags.get((r.title_id, r.artwork_id), ()), r.reward, r.policy)

    def _artwork_tag_map(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """``(title_id, artwork_id) -> tags`` of the catalog's artwork."""
        catalog = self.catalog
        return catalog.derived(("artwork-tags",), lambda: {
            (t.title_id, a.artwork_id): tuple(a.tags) for t in catalog.titles()
            for a in t.artwork})

    async def _learn(self, record: LearningRecord) -> set[str]:
        """Learn the record in place (returns the titles whose co-watch lists changed), or
        hand it to the learning sink and wait for its ack: before the states are committed,
        so a crash in between replays the batch and the learner skips what it learned."""
        if self.learning is None:
            return self.models.learn(record)
        if len(record):
            await self.learning.send(record)
        return set()

    async def _commit(self, report: BatchReport, work: BatchWork) -> None:
        """Commit the states, trending, counters and due artwork in one transaction."""
        learned = len(work.builder.record)
        await self.store.commit_batch(work.changed, work.trending, {
            "messages": report.messages, "events_applied": report.applied,
            "duplicates": report.duplicates, "late_dropped": report.late,
            "artwork_rewards": report.art_rewards, "artwork_quality_plays": report.quality_plays,
            "dead_letters": report.dead_letters + report.late,
            "learning_items": learned, "erased_dropped": report.erased, **self._page_counters(),
        }, work.art_due)
        report.committed = True
        self.states.put_many(work.changed)

    def watermark_ms(self) -> int | None:
        """The worker's event-time watermark: the stream clock minus
        ``artwork_settle_lateness_s`` (``None`` before its first event). Events older than
        the watermark may still arrive; a reward window that closed before it is settled."""
        now = self.stream_clock.now_ms(int(self.clock() * 1000))
        if now is None:
            return None
        return now - int(self.settings.artwork_settle_lateness_s * 1000)

    async def settle_due(self, partitions: Collection[int] | None = None) -> int:
        """Settle the artwork decisions whose reward window closed before the watermark, for
        the profiles of ``partitions`` (see :meth:`ArtworkSettler.settle_due`); the stream
        clock forgets the partitions not among them."""
        if partitions is not None:
            self.stream_clock.retain(partitions)
        return await self.settler.settle_due(partitions)

    def _late_letter(self, se: SourcedEvent, newest_ms: int) -> DeadLetter:
        return self.decoder.late_letter(se, newest_ms)

    # -- pages (streams.render) ------------------------------------------------------------
    def _render_inputs(self) -> RenderInputs:
        """The catalog and models pages are assembled from now, at the stream's time."""
        return RenderInputs(self.catalog, self.model, self.cowatch, self.row_utility,
                            self._now_ms())

    async def _render(self, states: Sequence[ProfileState], first: Collection[str] = (),
                      partition_of: Mapping[str, int] | None = None, urgent: bool = False
                      ) -> tuple[int, int]:
        """Materialize pages (with a render window: those of ``first`` now, or with
        ``urgent`` at the head of the queue, the others queued, by event-topic partition);
        returns (pages written, pages published)."""
        written, published = await self.renderer.render(states, self._render_inputs(),
                                                        set(first), partition_of, urgent)
        self._pages_unreported += written
        return written, published

    def _page_counters(self) -> dict[str, int]:
        """The stored counters' increments for pages: ``pages_written`` since the last
        report, the change of ``pages_queued`` (pages the render window queued: 0 when
        every member's page reflects their applied events), and ``pages_assembled`` with
        their assembly's CPU in microseconds (``page_assembly_cpu_us``)."""
        queued = self.renderer.held
        out = {"pages_written": self._pages_unreported,
               "pages_queued": queued - self._queued_reported}
        self._pages_unreported, self._queued_reported = 0, queued
        cpu_us, assembled = round(1e6 * self.renderer.assembly_cpu_s), self.renderer.assembled
        out["page_assembly_cpu_us"] = cpu_us - self._assembly_reported[0]
        out["pages_assembled"] = assembled - self._assembly_reported[1]
        self._assembly_reported = (cpu_us, assembled)
        return out

    def page_config_for(self, variant: str | None) -> PageConfig:
        """The variant's page configuration (``None``: the default page's) with the
        row-kind weights learned so far (see :meth:`PageRenderer.page_config_for`)."""
        return self.renderer.page_config_for(variant, self.row_utility)

    def _now_ms(self) -> int:
        """The stream's event time (the wall clock before the first event): pages are
        assembled as of it (decays, new releases) and decay epochs follow it."""
        wall_ms = int(self.clock() * 1000)
        return self.stream_clock.now_ms(wall_ms) or wall_ms

    def _trending_epoch(self, half_life_s: float | None = None) -> int:
        return self.renderer.trending_epoch(self._now_ms(), half_life_s)

    async def _popularity(self, countries: Sequence[str]) -> tuple[Popularity, Popularity]:
        """``(trending, popular)`` by country (see :meth:`PageRenderer.popularity`)."""
        return await self.renderer.popularity(countries, self._now_ms())

    async def flush_pages(self, final: bool = False) -> int:
        """Render the pages the render window queued whose window ended, the longest queued
        first (a timer tick): within the tick's render budget while the consumer is behind
        (:meth:`_lag_s` over BEHIND_S), else until none is due, one slice between two batches;
        ``final``: every queued page, without a budget (the worker stops). Pages the last
        batch wrote (a batch reports its pages at its next commit) are counted here when no
        batch followed."""
        if self.renderer.window_s <= 0 or not self.renderer.held:
            if self._pages_unreported:
                await self.store.commit_batch([], [], self._page_counters())
            return 0
        await self.start()
        batches = self._batches_started
        written = await self.renderer.flush_due(
            self._render_inputs(), None if final else self.renderer.flush_budget_s,
            busy=lambda: self._batches_started != batches and self._behind,
            between=self._state_lock,
            due_only=not final)
        self._pages_unreported += written
        await self.store.commit_batch([], [], self._page_counters())
        return written

    async def refresh_default_pages(self) -> int:
        """Rebuild the non-personalized page of every country seen so far."""
        await self.start()
        await self.refresh_catalog()
        return await self.renderer.refresh_default_pages(self._render_inputs())
