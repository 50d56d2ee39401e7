"""The Faust app: one app, built by :func:`build_app` from the settings (nothing at import time).

Agents are thin: they turn Faust events into :class:`~streams.processor.RawMessage` and hand
micro-batches (``stream.take_events``) to :class:`~streams.processor.EventProcessor`. Faust
acks a ``take_events`` batch only after the loop body returns, so a batch whose pages and
dead letters are not written yet is never committed (at-least-once); state updates are
idempotent by event id, so a replay after a crash changes nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import faust
from faust.exceptions import NotReady

from features.store import PipelineStore, RedisStore
from homestream.kafka_config import faust_credentials
from homestream.settings import Settings
from streams.health import WorkerHealth, install_worker_health
from streams.learning import LearningRecord
from streams.memory import MemoryProbe
from streams.metrics import CountedDeadLetters, WorkerMetrics
from streams.outage import skip_transient
from streams.page_publisher import ProducerPageUpdates
from streams.processor import DeadLetterSink, EventProcessor, PageUpdateSink, RawMessage
from streams.rebuild import install_rebuilder
from streams.transport import HomestreamApp
from topics.codec import default_codec
from topics.models import DeadLetter
from topics.registry import TopicSpec, event_topics, topic_specs

log = logging.getLogger(__name__)
#: Learning items per model-updates message (~100-300 bytes each: well under the broker's
#: 1 MiB message limit); a bigger batch record is sent as several messages, in order.
MODEL_UPDATE_MAX_ITEMS = 2000


class FaustDeadLetters:
    """Sends dead letters to the dead-letter topic and waits for the broker's ack."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic
        self.codec = default_codec()

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        futures = []
        for letter in letters:
            log.warning("dead letter from %s[%d]@%d: %s", letter.source_topic,
                        letter.partition, letter.offset, letter.reason)
            futures.append(await self.topic.send(
                key=letter.key, value=self.codec.encode_dead_letter(letter),
                headers={"reason": letter.reason.encode()[:1000],
                         "error_type": letter.error_type.encode()},
            ))
        await asyncio.gather(*futures)


class FaustModelUpdates:
    """Produces a batch's learning record to the model-updates topic for the learner and
    waits for the broker's ack (the batch's states are committed only after it)."""

    def __init__(self, topic: faust.TopicT) -> None:
        self.topic = topic
        self.codec = default_codec()

    async def send(self, record: LearningRecord) -> None:
        futures = [await self.topic.send(key=None, value=part.encode(self.codec))
                   for part in record.split(MODEL_UPDATE_MAX_ITEMS)]
        await asyncio.gather(*futures)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust app options derived from the settings (broker timeouts matter on Tansu)."""
    brokers = [f"kafka://{b.strip()}" for b in settings.bootstrap_servers.split(",")]
    return {
        "broker": brokers,
        "broker_credentials": faust_credentials(settings),
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "processing_guarantee": "at_least_once",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "web_enabled": settings.worker_web_port > 0,
        "web_port": settings.worker_web_port or 6066,
        "datadir": settings.worker_data_dir,
    }


async def _finish_even_if_cancelled(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` to completion even when the agent is cancelled (worker stopping), so a
    batch is never acked half-written."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def owned_partitions(app: faust.App, topics: Sequence[str]) -> set[int] | None:
    """The partitions of ``topics`` assigned to this worker now (profiles are keyed the same
    on every event topic, so a partition number names the same profiles on each); ``None``
    when the consumer is not running yet."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # consumer not started (or stopping): settle nothing this time
        return None
    return {tp.partition for tp in assigned if tp.topic in topics}


def split_by_bytes(messages: list[RawMessage], max_bytes: int) -> list[list[RawMessage]]:
    """``messages`` in consecutive parts of at most ``max_bytes`` of keys and values each
    (a larger message is a part of its own), in their order.

    >>> m = [RawMessage("t", 0, i, b"k", b"x" * n, None) for i, n in enumerate([3, 3, 9, 1])]
    >>> [[x.offset for x in part] for part in split_by_bytes(m, 8)]
    [[0, 1], [2], [3]]
    """
    parts: list[list[RawMessage]] = [[]]
    size = 0
    for m in messages:
        n = len(m.key or b"") + len(m.value or b"")
        if parts[-1] and size + n > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(m)
        size += n
    return parts if parts[-1] else []


def _first_received(events: Sequence[faust.EventT]) -> float | None:
    """When the worker's main loop received the first of ``events`` (``time.monotonic``,
    stamped by Faust's monitor; ``None`` without one)."""
    stamps = [t for e in events if (t := getattr(e.message, "time_in", None)) is not None]
    return min(stamps) if stamps else None


def _raw(events: Sequence[faust.EventT]) -> list[RawMessage]:
    return [RawMessage(e.message.topic, e.message.partition, e.message.offset,
                       e.message.key, e.message.value,
                       int(e.message.timestamp * 1000) if e.message.timestamp else None)
            for e in events]


def build_app(settings: Settings, store: PipelineStore | None = None,
              dead_letters: DeadLetterSink | None = None,
              page_updates: PageUpdateSink | None = None) -> faust.App:
    """The worker's Faust app with its topics, agents and timers; the sinks default to the
    dead-letter and recommendations topics."""
    app = HomestreamApp(settings.app_id, **faust_config(settings))
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    specs = topic_specs(settings)
    store = store or RedisStore.from_url(settings.redis_url, settings.key_prefix,
                                        max_connections=settings.redis_max_connections,
                                        large_values=True)
    # the page publisher the app makes is the app's to close (a sink passed in is the caller's)
    own_publisher = _page_publisher(settings, specs) if page_updates is None else None
    processor = _processor(app, specs, settings, store, dead_letters,
                           page_updates or own_publisher)
    app.processor = processor  # type: ignore[attr-defined]  # for tests and tools
    freshness: list[float] = []
    #: Per batch part: its steps' milliseconds (``BatchReport.stages_ms``) and ``age``, how
    #: old its oldest message was when the part started (broker, fetch and batch waits).
    batch_stages: list[dict[str, float]] = []
    event_topic_names = event_topics(settings)
    health = WorkerHealth(lambda: app.consumer.assignment(), store, event_topic_names)
    app.health = health  # type: ignore[attr-defined]  # /health and /ready
    if settings.worker_web_port:
        install_worker_health(app, health)
    metrics = WorkerMetrics({specs[role].name: role for role in ("player_events", "impressions")})
    app.metrics = metrics  # type: ignore[attr-defined]  # for tests and tools
    events_topic = app.topic(*event_topic_names, key_type=bytes, value_type=bytes)
    probe = _memory_probe(app, settings, processor, freshness)

    @app.agent(events_topic, name="events")
    async def process_events(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max_events,
                                              within=settings.batch_within_s):
            raw = _raw(batch)
            if probe is not None:
                probe.batches.observe(raw, time.time() * 1000)
            await _finish_even_if_cancelled(apply_parts(raw, _first_received(batch)))
            health.batch_done()

    async def apply_parts(raw: list[RawMessage], received: float | None) -> None:
        # a batch of many bytes (messages of many events) is applied in parts, in order: the
        # worker's memory follows the part in flight, not the largest batch it collects
        for part in split_by_bytes(raw, settings.batch_max_bytes):
            started = time.perf_counter()
            now_ms = time.time() * 1000
            oldest = min((m.timestamp_ms or 0 for m in part), default=0)
            waits = {"age": now_ms - oldest if oldest else 0.0}
            if received is not None:  # how long ago the worker's main loop received it
                waits["in_worker"] = 1000 * (time.monotonic() - received)
            report = await processor.process(part)
            freshness.extend(report.freshness_ms)
            metrics.observe_batch(report, part, time.perf_counter() - started)
            if len(batch_stages) < 10_000:  # bounded when nobody reads it
                batch_stages.append({**waits, **report.stages_ms,
                                     "total": 1000 * (time.perf_counter() - started)})

    _catalog_and_profile_agents(app, specs, processor)
    _model_and_page_timers(app, settings, processor, event_topic_names)
    app.rebuilder = install_rebuilder(app, settings, processor)  # type: ignore[attr-defined]

    _observation_timers(app, processor, metrics, freshness, batch_stages)

    @app.on_before_shutdown.connect
    async def _final_checkpoint(app: faust.App, **kwargs: Any) -> None:
        await processor.settler.stop()  # rewards settled are sent while the producer runs
        await processor.flush_pages(final=True)  # the queued pages, while the producer runs
        await processor.checkpoint()
        if own_publisher is not None:
            await own_publisher.aclose()

    return app


def _page_publisher(settings: Settings, specs: Mapping[str, TopicSpec]
                    ) -> ProducerPageUpdates | None:
    """The worker's publisher of changed pages (``None`` when pages are not published)."""
    if not settings.publish_page_updates:
        return None
    return ProducerPageUpdates.from_settings(settings, specs["page_updates"].name)


def _processor(app: faust.App, specs: Mapping[str, TopicSpec], settings: Settings,
               store: PipelineStore, dead_letters: DeadLetterSink | None,
               page_updates: PageUpdateSink | None) -> EventProcessor:
    """The worker's processor with its sinks: dead letters and learning records
    (``learner_mode`` "topic") to their topics unless given, and ``page_updates``."""

    def topic(role: str) -> faust.TopicT:
        return app.topic(specs[role].name, key_type=bytes, value_type=bytes, internal=False)

    learning = FaustModelUpdates(topic("model_updates")) \
        if settings.learner_mode == "topic" else None
    letters = CountedDeadLetters(dead_letters or FaustDeadLetters(topic("dead_letter")))
    return EventProcessor(settings, store, letters, page_updates=page_updates,
                          learning=learning)


def _catalog_and_profile_agents(app: faust.App, specs: Mapping[str, TopicSpec],
                                processor: EventProcessor) -> None:
    """The agents of the catalog and profiles topics (batches of up to 1,000 records)."""
    catalog_topic = app.topic(specs["catalog"].name, key_type=bytes, value_type=bytes)
    profiles_topic = app.topic(specs["profiles"].name, key_type=bytes, value_type=bytes)

    @app.agent(catalog_topic, name="catalog")
    async def process_catalog(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            await _finish_even_if_cancelled(processor.process_catalog(_raw(batch)))

    @app.agent(profiles_topic, name="profiles")
    async def process_profiles(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            await _finish_even_if_cancelled(processor.process_profiles(_raw(batch)))


def _memory_probe(app: faust.App, settings: Settings, processor: EventProcessor,
                  freshness: list[float]) -> MemoryProbe | None:
    """The worker's memory log line every ``worker_memory_log_s`` (None when off)."""
    if not settings.worker_memory_log_s:
        return None
    probe = MemoryProbe(lambda: {"pages_held": processor.renderer.held,
                                 "freshness_samples": len(freshness),
                                 "fetched_records": _fetched_records(app)})

    @app.timer(settings.worker_memory_log_s)
    async def log_memory() -> None:
        probe.log()

    return probe


def _fetched_records(app: faust.App) -> int:
    """Partitions with records aiokafka fetched that Faust has not taken yet (-1 when not
    reachable)."""
    try:
        return len(app.consumer._thread._ensure_consumer()._fetcher._records)
    except Exception:  # a diagnostic: private attributes of aiokafka may move
        return -1


def stage_summary(stages: Sequence[dict[str, float]]) -> str:
    """Each step's p50/p99 over batches, in the order the steps first appear (a step a
    batch skipped counts 0 for it).

    >>> stage_summary([{"age": 10.0, "apply": 2.0}, {"age": 30.0, "render": 4.0}])
    'age 20/30, apply 1/2, render 2/4'
    """
    names = list(dict.fromkeys(k for s in stages for k in s))
    out = []
    for name in names:
        values = [s.get(name, 0.0) for s in stages]
        q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 \
            else values * 99
        out.append(f"{name} {q[49]:.0f}/{q[98]:.0f}")
    return ", ".join(out)


def _observation_timers(app: faust.App, processor: EventProcessor, metrics: WorkerMetrics,
                        freshness: list[float], batch_stages: list[dict[str, float]]) -> None:
    """Timers that only observe: consumer lag for the metrics every 5 s, and every 10 s log
    lines of the event-to-page freshness, the batches' steps and the render queue's waits
    since the last."""

    @app.timer(5.0)
    async def consumer_lag() -> None:
        await metrics.update_lag(app)

    @app.timer(10.0)
    async def log_freshness() -> None:
        if freshness:
            q = statistics.quantiles(freshness, n=100) if len(freshness) > 1 else freshness * 99
            log.info("event->page freshness over %d events: p50 %.0f ms, p99 %.0f ms",
                     len(freshness), q[49], q[98])
            freshness.clear()
        if batch_stages:
            log.info("%d batches, ms p50/p99: %s; states held %d, %.0f%% of lookups held",
                     len(batch_stages), stage_summary(batch_stages), len(processor.states),
                     100.0 * processor.states.take_hit_share())
            batch_stages.clear()
        waits = processor.renderer.queue_waits
        if waits:
            q = statistics.quantiles(waits, n=100) if len(waits) > 1 else waits * 99
            log.info("queued pages: %d written, waited p50 %.1f s, p99 %.1f s; %d queued now",
                     len(waits), q[49], q[98], processor.renderer.held)
            waits.clear()


def _model_and_page_timers(app: faust.App, settings: Settings, processor: EventProcessor,
                           event_topic_names: Sequence[str]) -> None:
    """The worker's timers: model checkpoints (inline learning) or snapshot reloads (the
    learner's), artwork settling, held pages and default pages."""
    if processor.learns_inline:
        @app.timer(settings.model_checkpoint_interval_s)
        async def checkpoint_model() -> None:
            # snapshots the models between two batches (it waits for a batch being
            # committed), so a checkpoint never holds the learning of a batch a crash replays
            if await processor.checkpoint():
                app.metrics.models_saved()
    else:
        @app.timer(settings.model_reload_interval_s)
        async def reload_models() -> None:
            # the learner's latest snapshot, when its version moved (pages use it from then)
            if await processor.reload_models():
                app.metrics.models_saved()

    @app.on_partitions_assigned.connect
    async def _forget_states_on_assign(app: faust.App, assigned: set[Any],
                                       **kwargs: Any) -> None:
        # every rebalance ends here: a partition back from another worker may have changed
        # there, and a batch committed between the revocation and now held its states again
        processor.on_rebalance()

    @app.timer(settings.artwork_settle_interval_s)
    async def settle_artwork() -> None:
        # zero rewards of reward windows that closed before the event-time watermark, for
        # the profiles of the partitions this worker owns (another worker settles the rest)
        owned = owned_partitions(app, event_topic_names)
        if owned:
            n = await _finish_even_if_cancelled(processor.settle_due(owned))
            if n:
                log.debug("settled %d expired artwork decisions with reward 0", n)

    if settings.render_window_ms > 0:
        @app.task
        async def held_pages() -> None:
            # pages the render window queued, once their member's window ended: a tick every
            # quarter window (a timer's, riding out outages), and one as soon as a backlog
            # the consumer was catching up on runs out
            flush = skip_transient(processor.flush_pages)
            while not app.should_stop:
                await processor.next_flush(processor.renderer.flush_interval_s)
                try:
                    await flush()
                except NotReady:  # stopping: the producer is gone (the final flush ran)
                    log.info("queued pages not published: the worker is stopping")

        @app.on_partitions_revoked.connect
        async def _drop_revoked_pages(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
            # their new owner renders them; a late page from here could overwrite its newer one
            parts = {tp.partition for tp in revoked if tp.topic in event_topic_names}
            dropped = processor.renderer.drop_partitions(parts)
            if dropped:
                log.info("dropped %d queued pages of revoked partitions %s", dropped,
                         sorted(parts))

    @app.timer(2.0)
    async def default_pages() -> None:
        await processor.refresh_default_pages()
