"""The learner: ONE process learns the shared models from every worker's learning records.

``python -m streams.learner`` (or more replicas: the 1-partition model-updates topic goes to
one member of the learner's consumer group, the others wait as hot standbys). It reads the
``homestream.ModelUpdate`` records the workers produce (one per micro-batch, sent before
the batch's states are committed), learns them into a :class:`~streams.models.ModelSet`
and every ``HOMESTREAM_MODEL_SNAPSHOT_INTERVAL_S`` writes a snapshot to Redis in one atomic
write: the model blobs, the version, the high-water marks, the model-updates offset it
covers and the similar-titles lists of the titles whose co-watch neighbours changed.
Workers and servers poll the version key and reload the snapshot when it moves.

Redis away (stopped, restarted, hung, refusing writes): the learner keeps learning from the
topic in memory and retries its snapshot with backoff (``HOMESTREAM_OUTAGE_RETRY_INITIAL_S``
doubling up to ``HOMESTREAM_OUTAGE_RETRY_MAX_S``) until Redis answers; restoring a snapshot
(at start-up and when it takes the partition over) retries the same way. A snapshot whose
reply was lost is recognized as its own when retried (not taken for a newer learner's). A
learner stopped during an outage exits without its last snapshot: the next one resumes from
the previous snapshot's offset and learns the rest once.

Guarantees: a replayed worker batch is skipped item by item (the high-water marks); a
learner that dies restarts (or a standby takes over) from the snapshot and re-reads the
model-updates topic from the offset after the one the snapshot covers, so nothing learned
since is lost as long as the topic retains it, and nothing is learned twice. The consumer is
a plain aiokafka consumer rather than a Faust agent: Faust commits offsets on its own
schedule, past what a snapshot covers, while here the committed offset is always the
snapshot's (and the snapshot, not the commit, decides where to resume).
"""

from __future__ import annotations

from homestream.blas import single_threaded

single_threaded()  # before numpy loads (homestream.blas says why)

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from features import keys
from features.store import PipelineStore, RedisStore
from homestream.kafka_config import aiokafka_config
from homestream.logs import setup_logging
from homestream.settings import ConfigError, Settings, load_settings
from streams.health import LearnerHealth, serve_learner_health
from streams.learning import SCHEMA, LearningRecord
from streams.models import CHECKPOINT_NAMES, ModelSet
from streams.outage import Backoff, OutageStats, is_transient, retry_transient
from topics.codec import AvroCodec, DecodeError, default_codec
from topics.registry import ensure_topics, topic_specs
from topics.registry_framing import prepare

log = logging.getLogger(__name__)


class SnapshotFenced(RuntimeError):
    """A newer learner's snapshot covers more than this one: this learner lost its role."""


class Learner:
    """Learns model-update messages and writes snapshots (no Kafka: tests drive it)."""

    def __init__(self, settings: Settings, store: PipelineStore,
                 codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.store = store
        self.codec = codec or default_codec()
        self.models = ModelSet(settings)
        self._similar_changed: set[str] = set()
        self._saved_offset = -1
        #: Snapshot writes and restores wait out a Redis outage with this backoff.
        self.backoff = Backoff(settings.outage_retry_initial_s, settings.outage_retry_max_s)
        self.outage_stats = OutageStats()
        #: Covered offset and version of a snapshot write whose reply was lost (it may have
        #: run).
        self._maybe_saved = (-1, -1)
        #: Model-update messages that could not be decoded (skipped, logged).
        self.bad_messages = 0
        #: One snapshot at a time (the timer's and the one on a partition revoke).
        self._snapshot_lock = asyncio.Lock()
        #: Erasures already applied (profile digest -> erased at ms), and the time of the
        #: newest: the erasure log is read from there on.
        self._erasures_done: dict[str, int] = {}

    async def restore(self) -> int:
        """Load the latest snapshot; returns the model-updates offset to resume from. Waits
        out a Redis outage (retrying with backoff): a learner must not start from nothing."""
        async with self._snapshot_lock:  # never while a snapshot is being written
            blobs = await retry_transient(
                lambda: self.store.load_checkpoints(CHECKPOINT_NAMES), "learner restore",
                self.backoff, self.outage_stats)
            self.models = ModelSet(self.settings)
            self.models.restore(blobs)
            self._similar_changed.clear()
            self._saved_offset = self.models.meta.covered_offset
        log.info("learner restored snapshot v%d covering model-updates offset %d",
                 self.models.meta.version, self._saved_offset)
        return self._saved_offset + 1

    @property
    def saved_offset(self) -> int:
        """The model-updates offset the last snapshot written (or restored) covers."""
        return self._saved_offset

    def learn(self, offset: int, value: bytes | None) -> None:
        """Learn one model-updates message (the items it holds that were not learned)."""
        try:
            if value is None:
                raise DecodeError("empty message value")
            name, raw = self.codec.decode(value)
            if name != SCHEMA:
                raise DecodeError(f"{name} is not {SCHEMA}")
            record = LearningRecord.from_avro(raw)
        except (DecodeError, KeyError, TypeError) as exc:
            self.bad_messages += 1
            log.error("model-updates offset %d skipped: %s", offset, exc)
            self.models.meta.covered_offset = max(self.models.meta.covered_offset, offset)
            return
        self._similar_changed |= self.models.learn(record, covered_offset=offset)

    async def snapshot(self) -> bool:
        """Write a snapshot when something was learned since the last; raises
        :class:`SnapshotFenced` when a newer snapshot exists."""
        async with self._snapshot_lock:
            await self.forget_erased()
            return await self._snapshot()

    async def forget_erased(self) -> int:
        """Forget the Top Picks parameters of members erased since the last look (their
        digests in the erasure log, ``homestream.erase``); the next snapshot (the next one
        with new learning) stores the models without them. Returns the members forgotten."""
        since = max(self._erasures_done.values(), default=0)
        new = {d: ms for d, ms in await self.store.erasures_since(since)
               if d not in self._erasures_done}
        if not new:
            return 0
        self._erasures_done.update(new)
        for d in [d for d, ms in self._erasures_done.items() if ms < since - 60_000]:
            del self._erasures_done[d]  # older than anything read again
        model = self.models.model
        gone = [p for p in model.profile_ids() if keys.profile_digest(p) in new]
        for p in gone:
            model.forget_profile(p)
        log.info("learner forgot %d erased member(s) of %d erasure(s)", len(gone), len(new))
        return len(gone)

    async def _snapshot(self) -> bool:
        meta = self.models.meta
        if meta.covered_offset <= self._saved_offset:
            return False
        blobs = self.models.to_blobs()
        k = self.settings.row_length
        similar = {t: self.models.cowatch.most_similar(t, k) for t in self._similar_changed}
        try:
            saved = await self.store.save_snapshot(blobs, meta.version, meta.covered_offset,
                                                   similar)
        except Exception as exc:
            if is_transient(exc):  # the write may have run, its reply lost
                self._maybe_saved = (meta.covered_offset, meta.version)
            raise
        if not saved and not await self._was_ours(meta.covered_offset):
            raise SnapshotFenced(f"a snapshot covering model-updates offset "
                                 f">= {meta.covered_offset} exists")
        self._similar_changed.clear()
        self._saved_offset = meta.covered_offset
        return True


    async def _was_ours(self, covered_offset: int) -> bool:
        """Whether a refused snapshot is this learner's own earlier write covering the same
        offset, whose reply was lost in an outage (the stored version is that write's)."""
        covered, version = self._maybe_saved
        return covered == covered_offset and await self.store.snapshot_version() == version


class SnapshotTimer:
    """When the learner's next snapshot is due: every ``interval_s``; after a snapshot that
    failed because Redis is away, after the backoff's next wait instead (learning goes on
    meanwhile). Logs one warning when the outage starts and one line when it ends."""

    def __init__(self, interval_s: float, backoff: Backoff, stats: OutageStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.backoff, self.stats, self.clock = interval_s, backoff, stats, clock
        self.next_at = clock() + interval_s
        self.failures = 0
        self._down_since: float | None = None

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def done(self) -> None:
        """The snapshot was written (or there was nothing new)."""
        now = self.clock()
        if self._down_since is not None:
            paused = now - self._down_since
            self.stats.paused_s += paused
            log.warning("learner snapshot: store reachable again after %.1f s and %d retries; "
                        "resumed", paused, self.failures)
        self.failures, self._down_since = 0, None
        self.next_at = now + self.interval_s

    def failed(self, exc: BaseException) -> None:
        """The snapshot failed with an outage error: try again after the backoff's wait."""
        now = self.clock()
        self.failures += 1
        self.stats.retries += 1
        wait = self.backoff.delay(self.failures)
        if self._down_since is None:
            self._down_since = now
            self.stats.outages += 1
            log.warning("learner snapshot: store unreachable (%s: %s); learning goes on, "
                        "snapshot retried with backoff (%.1f s up to %.1f s)",
                        type(exc).__name__, exc, wait, self.backoff.max_s)
        self.next_at = now + wait


class _Assignment(ConsumerRebalanceListener):
    """Snapshot on revoke; restore the snapshot and seek past what it covers on assign."""

    def __init__(self, learner: Learner, consumer: AIOKafkaConsumer,
                 health: LearnerHealth | None = None) -> None:
        self.learner = learner
        self.consumer = consumer
        self.health = health

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            try:
                await self.learner.snapshot()
            except SnapshotFenced as exc:
                log.warning("no snapshot on revoke: %s", exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # the next owner resumes from the last snapshot and learns the rest once
                log.warning("no snapshot on revoke, store unreachable: %s: %s",
                            type(exc).__name__, exc)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.health is not None:
            self.health.assigned(assigned)
        for tp in assigned:
            self.consumer.seek(tp, await self.learner.restore())
            log.info("learner holds %s", tp)


async def run(settings: Settings, stop: asyncio.Event,
              store: PipelineStore | None = None) -> None:
    """Learn until ``stop`` is set (then write a last snapshot)."""
    store = store or RedisStore.from_url(settings.redis_url, settings.key_prefix,
                                        large_values=True)  # snapshots of ~0.5 MB
    learner = Learner(settings, store)
    health = LearnerHealth(store)
    topic = topic_specs(settings)["model_updates"].name
    consumer = AIOKafkaConsumer(
        **aiokafka_config(settings), group_id=f"{settings.app_id}-learner",
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        fetch_max_wait_ms=int(settings.fetch_max_wait_ms))
    consumer.subscribe([topic], listener=_Assignment(learner, consumer, health))
    await consumer.start()
    web = (await serve_learner_health(health, "0.0.0.0", settings.learner_web_port)
           if settings.learner_web_port else None)
    timer = SnapshotTimer(settings.model_snapshot_interval_s, learner.backoff,
                          learner.outage_stats)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            await prepare(learner.codec, [m.value for msgs in batches.values() for m in msgs])
            for msgs in batches.values():
                for m in msgs:
                    learner.learn(m.offset, m.value)
            if timer.due():
                await _timed_snapshot(learner, consumer, topic, timer, health)
        await _last_snapshot(learner, consumer, topic)
    finally:
        if web is not None:
            await web.cleanup()
        await consumer.stop()
        await store.close()


async def _timed_snapshot(learner: Learner, consumer: AIOKafkaConsumer, topic: str,
                          timer: SnapshotTimer, health: LearnerHealth) -> None:
    """The timer's snapshot; an outage postpones it by the backoff instead of stopping."""
    try:
        if await _snapshot_and_commit(learner, consumer, topic):
            health.snapshot_done()
    except Exception as exc:
        if not is_transient(exc):
            raise
        timer.failed(exc)
        return
    timer.done()


async def _last_snapshot(learner: Learner, consumer: AIOKafkaConsumer, topic: str) -> None:
    """The snapshot on the way out; skipped (logged) when Redis is away: the next learner
    resumes from the previous snapshot's offset and learns the rest once."""
    try:
        await _snapshot_and_commit(learner, consumer, topic)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("learner stopping without its last snapshot, store unreachable (%s: %s); "
                    "the next learner resumes after model-updates offset %d",
                    type(exc).__name__, exc, learner.saved_offset)


async def _snapshot_and_commit(learner: Learner, consumer: AIOKafkaConsumer,
                               topic: str) -> bool:
    """Snapshot, then commit the model-updates offset the snapshot covers (for lag
    monitoring: a restart resumes from the snapshot's offset, whatever is committed); False
    when there was nothing new to snapshot."""
    if not await learner.snapshot():
        return False
    tp = TopicPartition(topic, 0)
    if tp in consumer.assignment():
        covered = learner.models.meta.covered_offset
        await consumer.commit({tp: covered + 1})
    return True


def main() -> int:
    """``python -m streams.learner``: create missing topics, learn until SIGTERM/SIGINT."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    ensure_topics(settings)
    stop = asyncio.Event()

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    try:
        asyncio.run(_main())
    except SnapshotFenced as exc:
        log.error("learner stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
