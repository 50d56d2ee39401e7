"""The worker's per-micro-batch step: decode -> dedupe/apply -> learn -> materialize pages.

Independent of Faust so it can be driven by the Faust agent, by tests and by tools alike;
I/O goes through two injected edges, a :class:`~features.store.PipelineStore` and a
:class:`DeadLetterSink`. A batch does at most four store round trips whatever its size:
load the affected profiles (one ``MGET``), commit states + trending + counters (one
``MULTI``), read trending for the countries involved (one pipeline) and write the pages
(one ``MSET``). Pages are assembled, written and published by a
:class:`~streams.render.PageRenderer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from features.catalog import Catalog
from features.keys import ALL_COUNTRIES, popular_list
from features.profile import (
    ArtworkReward,
    Effects,
    FeatureParams,
    ProfileMeta,
    ProfileState,
    apply_event,
    settle_expired_art,
)
from features.store import ArtworkDue, PipelineStore, TrendingIncrement
from features.trending import decayed_weight
from homestream.settings import Settings
from online_models.bandits import ArtworkPolicy, make_policy
from online_models.bandits.base import Arm
from online_models.experiments import experiment_from_settings
from online_models.page import PageConfig
from online_models.row_utility import RowKindUtility
from online_models.rules import Rules, rules_from_settings
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.render import (
    MemoryPageUpdates,  # noqa: F401  (re-exported: callers import the sinks from here)
    PageRenderer,
    PageUpdateSink,
    Popularity,
    RenderInputs,
)
from topics.codec import AvroCodec, DecodeError, default_codec, validate_event
from topics.models import DeadLetter, Event, Impression, Title

log = logging.getLogger(__name__)

MODEL_CHECKPOINT = "top-picks"
COWATCH_CHECKPOINT = "co-watch"
ARTWORK_CHECKPOINT = "artwork-policy"
ROW_UTILITY_CHECKPOINT = "row-utility"
#: Due profiles settled per lock hold and partition (the event batches run in between).
SETTLE_CHUNK = 10
#: Wall-clock budget of one settling call (a timer tick): about a fifth of the worker's
#: time at the default one-second interval (a duration, not a clock reading).
SETTLE_BUDGET_S = 0.2
#: Settled rewards the policy learns between two yields to the event loop.
LEARN_SLICE = 100


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka message, as the agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class SourcedEvent:
    """A decoded event with the message it came in (for dead letters naming its origin)."""

    event: Event
    message: RawMessage
    #: Events the message held (1: a single-event message, else an ``EventBatch``).
    n_events: int


class DeadLetterSink(Protocol):
    """Where unusable input goes; ``send`` returns once the letters are durably written."""

    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


class MemoryDeadLetters:
    """A :class:`DeadLetterSink` that keeps letters in a list (unit tests, tools)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


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
    published: int = 0
    art_rewards: int = 0
    quality_plays: int = 0
    #: The states were committed (the models' learning of this batch is then kept).
    committed: bool = False
    #: Page-write time minus event time, per applied event, in ms.
    freshness_ms: list[float] = field(default_factory=list)


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
                 page_updates: PageUpdateSink | None = None, rules: Rules | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dead_letters = dead_letters
        self.page_updates = page_updates
        self.codec = codec or default_codec()
        self.clock = clock
        self.catalog = Catalog()
        self.catalog_version = -1
        self.params = FeatureParams(
            dedupe_window=settings.dedupe_window, recent_titles=settings.recent_titles,
            affinity_half_life_s=settings.affinity_half_life_s,
            reward_window_s=settings.artwork_reward_window_s,
            quality_fraction=settings.artwork_quality_fraction,
            row_attribution_window_s=settings.row_attribution_window_s,
            delayed_positives=settings.artwork_delayed_positives,
        )
        self.model: TopPicksModel
        self.artwork_policy: ArtworkPolicy
        self.cowatch: CoWatchSimilarity
        self.row_utility: RowKindUtility
        self._fresh_models()
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
        #: Newest event time applied by this worker (any event type): the stream's "now" for
        #: page assembly and decay epochs, and the base of the settling watermark.
        self._max_event_ms = 0
        #: Serializes batches, the settling timer (both load, change and store states) and
        #: the checkpoints' snapshots (taken between batches, never inside one).
        self._state_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    def _fresh_models(self) -> None:
        """Untrained models (restored from their checkpoints by :meth:`start`)."""
        s = self.settings
        self.model = TopPicksModel(n_factors=s.model_factors, seed=s.model_seed)
        self.artwork_policy = make_policy(s.artwork_policy, s.model_seed)
        self.cowatch = CoWatchSimilarity()
        self.row_utility = RowKindUtility(s.row_prior_strength)
        self._labels_since_checkpoint = 0

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
        data = await self.store.load_checkpoint(MODEL_CHECKPOINT)
        if data is not None:
            self.model = TopPicksModel.from_bytes(data)
            log.info("restored model checkpoint v%d (%d labels learned)",
                     self.model.version, self.model.n_learned)
        data = await self.store.load_checkpoint(ARTWORK_CHECKPOINT)
        if data is not None:
            policy = ArtworkPolicy.from_bytes(data)
            if policy.name == self.artwork_policy.name:
                self.artwork_policy = policy
            else:
                log.warning("artwork checkpoint is %s, configured policy is %s: starting fresh",
                            policy.name, self.artwork_policy.name)
        data = await self.store.load_checkpoint(COWATCH_CHECKPOINT)
        if data is not None:
            try:
                self.cowatch = CoWatchSimilarity.from_bytes(data)
                log.info("restored co-watch checkpoint (%d watches learned)",
                         self.cowatch.n_learned)
            except ValueError as exc:
                log.warning("co-watch checkpoint %r not restored: %s; starting with an empty "
                            "co-watch model (the next checkpoint replaces it)",
                            COWATCH_CHECKPOINT, exc)
        data = await self.store.load_checkpoint(ROW_UTILITY_CHECKPOINT)
        if data is not None:
            self.row_utility = RowKindUtility.from_bytes(data)
            self.row_utility.prior_strength = self.settings.row_prior_strength

    async def checkpoint(self, force: bool = False) -> bool:
        """Save the models if they learned anything since the last checkpoint (the Top Picks
        checkpoint carries a version number that grows with every save).

        The models are serialized under the batch lock, i.e. between two batches: a
        checkpoint holds the learning of batches whose states were committed and of no
        other, so a batch replayed after a crash (not committed, hence not deduplicated) was
        not learned by the checkpoint either and is learned once. Nothing is saved before
        :meth:`start` restored the models (or after a failed batch discarded them)."""
        async with self._checkpoint_lock:
            async with self._state_lock:
                if not self._started or (not force and self._labels_since_checkpoint == 0):
                    return False
                self.model.version += 1
                blobs = {
                    MODEL_CHECKPOINT: self.model.to_bytes(),
                    COWATCH_CHECKPOINT: self.cowatch.to_bytes(),
                    ARTWORK_CHECKPOINT: self.artwork_policy.to_bytes(),
                    ROW_UTILITY_CHECKPOINT: self.row_utility.to_bytes(),
                }
                learned, self._labels_since_checkpoint = self._labels_since_checkpoint, 0
            try:
                await self.store.save_checkpoints(blobs)  # all four models, or none
            except BaseException:
                self._labels_since_checkpoint += learned  # not saved: the next tick retries
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
        """Store catalog records (tombstones delete); bad records go to the dead letters."""
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
        """Store profile settings and re-render the pages of the profiles that changed."""
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
        if metas:
            await self.start()
            await self.store.put_profile_meta(metas)
            states = await self.store.load_profiles(list(metas))
            if states:
                await self._render(list(states.values()))
        return len(metas)

    # -- event topics ---------------------------------------------------------------------
    def _letter(self, m: RawMessage, reason: str, error_type: str,
                event_id: str | None = None, value: bytes | None = None) -> DeadLetter:
        return DeadLetter(
            source_topic=m.topic, partition=m.partition, offset=m.offset, key=m.key,
            value=m.value if value is None else value, reason=reason, error_type=error_type,
            event_id=event_id, failed_at_ms=int(self.clock() * 1000),
        )

    def decode(self, messages: Sequence[RawMessage]
               ) -> tuple[list[SourcedEvent], list[DeadLetter]]:
        """Valid events in message order, each with the message it came in, and a dead
        letter for everything else.

        A batch message with some invalid events keeps the valid ones; each invalid event
        becomes its own letter holding that event re-encoded as a single-event message.
        """
        events: list[SourcedEvent] = []
        letters: list[DeadLetter] = []
        for m in messages:
            if m.value is None:
                letters.append(self._letter(m, "empty message value", "DecodeError"))
                continue
            try:
                raw = self.codec.decode_raw_events(m.value)
            except DecodeError as exc:
                letters.append(self._letter(m, str(exc), "DecodeError"))
                continue
            single = len(raw) == 1
            key = m.key.decode("utf-8", "replace") if m.key else None
            for i, (name, record) in enumerate(raw):
                try:
                    ev = validate_event(name, record, index=i)
                except DecodeError as exc:
                    letters.append(self._letter(
                        m, str(exc), "ValidationError", event_id=record.get("event_id"),
                        value=None if single else self.codec.encode(name, record)))
                    continue
                if key is not None and ev.profile_id != key:
                    letters.append(self._letter(
                        m, f"event profile_id {ev.profile_id!r} does not match message key "
                           f"{key!r}", "KeyMismatch", event_id=ev.event_id,
                        value=None if single else self.codec.encode(name, record)))
                    continue
                events.append(SourcedEvent(ev, m, len(raw)))
        return events, letters

    async def process(self, messages: Sequence[RawMessage]) -> BatchReport:
        """Run one micro-batch end to end; returns when pages and dead letters are written."""
        async with self._state_lock:
            return await self._process(messages)

    async def _process(self, messages: Sequence[RawMessage]) -> BatchReport:
        await self.start()
        report = BatchReport(messages=len(messages))
        events, letters = self.decode(messages)
        report.events, report.dead_letters = len(events), len(letters)
        if letters:
            await self.dead_letters.send(letters)
        if not events:
            if letters:
                await self.store.commit_batch([], [], {"dead_letters": len(letters)})
            return report
        await self.refresh_catalog()

        by_profile: dict[str, list[SourcedEvent]] = {}
        for se in events:
            by_profile.setdefault(se.event.profile_id, []).append(se)
        # events of a keyed message belong to the key's profile (others are dead letters)
        partition_of = {m.key.decode("utf-8", "replace"): m.partition
                        for m in messages if m.key}
        states = await self.store.load_profiles(list(by_profile))
        try:
            return await self._apply_and_commit(report, by_profile, states, partition_of)
        except BaseException as exc:
            if not report.committed:
                self._discard_uncommitted_learning(exc)
            raise

    async def _apply_and_commit(self, report: BatchReport,
                                by_profile: dict[str, list[SourcedEvent]],
                                states: dict[str, ProfileState],
                                partition_of: dict[str, int]) -> BatchReport:
        """Apply the events to the states, teach the models, commit the states (one
        transaction), then write co-watch lists and pages; sets ``report.committed``."""
        art_due: list[ArtworkDue] = []
        late_letters: list[DeadLetter] = []
        max_late_ms = self.settings.max_lateness_s * 1000.0
        changed: list[ProfileState] = []
        to_render: list[ProfileState] = []
        trending: list[TrendingIncrement] = []
        hl = self.settings.trending_half_life_s
        hl_pop = self.settings.popularity_half_life_s
        applied_ts: dict[str, list[int]] = {}
        genres_of, cast_of = self.catalog.genres_of, self.catalog.cast_of
        similar_changed: set[str] = set()
        row_exposures: Counter[str] = Counter()
        row_takes: Counter[str] = Counter()
        for pid, evs in by_profile.items():
            state = states.get(pid) or ProfileState(pid)
            # stable: same-time events keep their order
            evs.sort(key=lambda se: se.event.event_ts_ms)
            mutated = render = False
            due_before = state.oldest_pending_art_ms()
            for se in evs:
                ev = se.event
                if (ev.event_ts_ms < state.last_event_ts_ms - max_late_ms
                        and ev.event_id not in state.seen_ids):
                    # too late; a redelivery of an event applied before goes on to
                    # apply_event, which counts it as a duplicate (dedupe wins)
                    late_letters.append(self._late_letter(se, state.last_event_ts_ms))
                    continue
                history = state.watched_recently(self.cowatch.window)
                fx: Effects = apply_event(state, ev, genres_of, self.params, cast_of)
                if fx.duplicate:
                    report.duplicates += 1
                    render = render or not isinstance(ev, Impression)
                    continue
                mutated = True
                report.applied += 1
                self._max_event_ms = max(self._max_event_ms, ev.event_ts_ms)
                if fx.page_changed:
                    render = True
                    applied_ts.setdefault(pid, []).append(ev.event_ts_ms)
                row_exposures.update(fx.row_exposures)
                row_takes.update(fx.row_takes)
                for r in fx.art_rewards:
                    self._learn_artwork(r)
                    report.art_rewards += 1
                    report.quality_plays += r.reward > 0
                for tid in fx.watched:
                    similar_changed |= self.cowatch.learn_one(
                        [h for h in history if h != tid], tid)
                for tid, y in fx.labels:
                    self.model.learn_positive(pid, tid, y, self._catalog_ids,
                                              exclude=state.engaged)
                    report.labels += 1
                for country, tid, ts in fx.plays:
                    epoch, w = decayed_weight(ts, hl)
                    epoch_p, w_p = decayed_weight(ts, hl_pop)
                    for c in dict.fromkeys((ALL_COUNTRIES, country)):
                        trending.append((c, epoch, tid, w))
                        trending.append((popular_list(c), epoch_p, tid, w_p))
            if mutated:
                changed.append(state)
                due_after = state.oldest_pending_art_ms()
                if due_after != due_before:
                    art_due.append((partition_of.get(pid, -1), pid, due_after))
            if render:
                to_render.append(state)
        self.row_utility.learn(row_exposures, row_takes)
        self._labels_since_checkpoint += (report.labels + report.art_rewards
                                          + sum(row_exposures.values()))
        if late_letters:
            await self.dead_letters.send(late_letters)
            report.late = len(late_letters)
        await self.store.commit_batch(changed, trending, {
            "messages": report.messages, "events_applied": report.applied,
            "duplicates": report.duplicates, "late_dropped": report.late,
            "artwork_rewards": report.art_rewards, "artwork_quality_plays": report.quality_plays,
            "dead_letters": report.dead_letters + report.late,
        }, art_due)
        report.committed = True
        report.profiles = len(by_profile)
        if similar_changed:
            k = self.settings.row_length
            await self.store.write_similar({t: self.cowatch.most_similar(t, k)
                                            for t in similar_changed})
        if to_render:
            report.pages, report.published = await self._render(to_render)
            now_ms = self.clock() * 1000.0
            for ts_list in applied_ts.values():
                report.freshness_ms.extend(now_ms - ts for ts in ts_list)
        return report

    def watermark_ms(self) -> int | None:
        """The worker's event-time watermark: the newest event time it applied minus
        ``artwork_settle_lateness_s`` (``None`` before its first event). Events older than
        the watermark may still arrive; a reward window that closed before it is settled."""
        if self._max_event_ms <= 0:
            return None
        return self._max_event_ms - int(self.settings.artwork_settle_lateness_s * 1000)

    async def settle_due(self, partitions: Collection[int] | None = None) -> int:
        """Settle the artwork decisions whose reward window closed before the watermark
        (event time), for the profiles of ``partitions`` (the event-topic partitions this
        worker owns; ``None``: all): reward 0, or 1 for a quality play held back until the
        close (``HOMESTREAM_ARTWORK_DELAYED_POSITIVES``). Returns the rewards learned.

        The profiles' states lose those decisions in the same Redis transaction that moves
        their entries in the due index, and the policy learns the rewards only after it
        committed: a later play finds nothing to reward and a restart finds nothing to settle
        again (a crash before the next checkpoint loses the learning, as for every reward).
        """
        parts = sorted({-1, *(range(self.settings.partitions) if partitions is None
                              else partitions)})
        total = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < SETTLE_BUDGET_S:
            # one bounded chunk at a time, releasing the lock in between, within a time
            # budget per call: a due backlog (a watermark jump after a lag) drains over
            # several ticks instead of holding the event batches up
            n = await self._settle_chunk(parts)
            if n < 0:
                break
            total += n
            await asyncio.sleep(0)
        return total

    async def _settle_chunk(self, parts: Sequence[int]) -> int:
        """Settle up to ``SETTLE_CHUNK`` due profiles; ``-1`` when none was due."""
        async with self._state_lock:
            await self.start()
            watermark = self.watermark_ms()
            if watermark is None:
                return -1
            before = watermark - int(self.params.reward_window_s * 1000)
            due = await self.store.due_artwork(parts, before, SETTLE_CHUNK)
            if not due:
                return -1
            await self.refresh_catalog()
            states = await self.store.load_profiles(sorted({pid for _, pid in due}))
            changed: list[ProfileState] = []
            rewards: list[ArtworkReward] = []
            art_due: list[ArtworkDue] = []
            for part, pid in due:
                state = states.get(pid)
                if state is not None:
                    settled = settle_expired_art(state, watermark, self.params)
                    if settled:
                        rewards += settled
                        changed.append(state)
                art_due.append((part, pid, None if state is None
                                else state.oldest_pending_art_ms()))
            await self.store.commit_batch(changed, [], {
                "artwork_rewards": len(rewards), "artwork_settled_by_watermark": len(rewards),
                "artwork_quality_plays": sum(r.reward > 0 for r in rewards),
            }, art_due)
        # committed: learn outside the lock, a slice at a time, yielding to the event batches
        for i in range(0, len(rewards), LEARN_SLICE):
            for r in rewards[i: i + LEARN_SLICE]:
                self._learn_artwork(r)
            self._labels_since_checkpoint += len(rewards[i: i + LEARN_SLICE])
            await asyncio.sleep(0)
        return len(rewards)

    def _learn_artwork(self, r: ArtworkReward) -> None:
        """Teach the artwork policy the outcome of one decision (any logging policy: the
        learners model rewards, so off-policy outcomes are usable), unless
        ``HOMESTREAM_ARTWORK_LEARN_FROM`` names the policies to learn from (a policy bucket
        that must learn from its own decisions only, next to an exploration bucket)."""
        if self._learn_from and r.policy not in self._learn_from:
            return
        title = self.catalog.get(r.title_id)
        tags: tuple[str, ...] = ()
        if title is not None:
            tags = next((tuple(a.tags) for a in title.artwork
                         if a.artwork_id == r.artwork_id), ())
        try:
            context = orjson.loads(r.context_json) if r.context_json else {}
        except orjson.JSONDecodeError:
            context = {}
        if not isinstance(context, dict):
            context = {}
        self.artwork_policy.learn_one(context, Arm(r.artwork_id, tags), r.reward)

    def _late_letter(self, se: SourcedEvent, newest_ms: int) -> DeadLetter:
        """The dead letter of an event later than the allowed lateness: the topic, partition,
        offset and key of the message it came in, and that message's bytes when the event
        was its only one (else the event alone, re-encoded as a single-event message)."""
        ev, m = se.event, se.message
        behind = (newest_ms - ev.event_ts_ms) / 1000.0
        reason = (f"event is {behind:.0f}s older than the profile's newest event; "
                  f"max lateness is {self.settings.max_lateness_s:.0f}s")
        if se.n_events > 1:
            reason += f"; value is this event re-encoded alone (message of {se.n_events} events)"
        return self._letter(
            m, reason, "LateEvent", event_id=ev.event_id,
            value=None if se.n_events == 1 and m.value is not None
            else self.codec.encode_event(ev))

    # -- pages (streams.render) ------------------------------------------------------------
    def _render_inputs(self) -> RenderInputs:
        """The catalog and models pages are assembled from now, at the stream's time."""
        return RenderInputs(self.catalog, self.model, self.cowatch, self.row_utility,
                            self._now_ms())

    async def _render(self, states: Sequence[ProfileState]) -> tuple[int, int]:
        """Materialize pages; returns (pages written, pages published downstream)."""
        return await self.renderer.render(states, self._render_inputs())

    def page_config_for(self, variant: str | None) -> PageConfig:
        """The variant's page configuration (``None``: the default page's) with the
        row-kind weights learned so far (see :meth:`PageRenderer.page_config_for`)."""
        return self.renderer.page_config_for(variant, self.row_utility)

    def _now_ms(self) -> int:
        """The stream's event time (the wall clock before the first event): pages are
        assembled as of it (decays, new releases) and decay epochs follow it."""
        return self._max_event_ms or int(self.clock() * 1000)

    def _trending_epoch(self, half_life_s: float | None = None) -> int:
        return self.renderer.trending_epoch(self._now_ms(), half_life_s)

    async def _popularity(self, countries: Sequence[str]) -> tuple[Popularity, Popularity]:
        """``(trending, popular)`` by country (see :meth:`PageRenderer.popularity`)."""
        return await self.renderer.popularity(countries, self._now_ms())

    async def flush_pages(self) -> int:
        """Render the pages held by the render window whose window ended (a timer tick)."""
        if self.renderer.window_s <= 0 or not self.renderer.held:
            return 0
        await self.start()
        return await self.renderer.flush_due(self._render_inputs())

    async def refresh_default_pages(self) -> int:
        """Rebuild the non-personalized page of every country seen so far."""
        await self.start()
        await self.refresh_catalog()
        return await self.renderer.refresh_default_pages(self._render_inputs())
