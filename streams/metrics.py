"""The worker's Prometheus metrics: definitions, and the calls that record them per
micro-batch (never per event), served on ``HOMESTREAM_WORKER_METRICS_PORT``.

Every label has a bounded set of values: event types are the schema's record names,
dead-letter reasons are classes (``decode``, ``validation``, ``late``, ``other``), topics are
the registry's roles and partitions the topics' partition numbers; never a profile or a
title id.

The metrics live in the process-wide registry of ``prometheus_client`` (one worker is one
process); :func:`serve` starts the library's HTTP server in a daemon thread, so a scrape
never runs on the event loop.
"""

from __future__ import annotations

import logging
import operator
import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from homestream.metrics import exposed_names

if TYPE_CHECKING:
    import faust

    from streams.processor import BatchReport, DeadLetterSink, RawMessage
    from topics.models import DeadLetter

log = logging.getLogger(__name__)
_TOPIC_PARTITION = operator.attrgetter("topic", "partition")
_OFFSET = operator.attrgetter("offset")
_TOPIC = operator.attrgetter("topic")

#: Micro-batch durations: a few ms (a small batch) to seconds (a stalled store).
BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Event time to page written: the pipeline's target is well under 2 s.
FRESHNESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
#: Dead-letter ``error_type`` -> the reason class used as a label.
REASON_CLASSES = {"DecodeError": "decode", "ValidationError": "validation",
                  "LateEvent": "late"}

MESSAGES = Counter("homestream_worker_messages", "Messages consumed from the event topics",
                   ["topic"])
EVENTS = Counter("homestream_worker_events", "Events decoded, by event type", ["type"])
EVENTS_APPLIED = Counter("homestream_worker_events_applied",
                         "Events applied to a member's state (not duplicates, not late)")
DUPLICATES = Counter("homestream_worker_duplicate_events",
                     "Events skipped because their event id was applied before")
LATE = Counter("homestream_worker_late_events",
               "Events later than the allowed lateness (sent to the dead letters)")
DEAD_LETTERS = Counter("homestream_worker_dead_letters",
                       "Messages and events sent to the dead-letter topic, by reason class",
                       ["reason"])
PAGES_RENDERED = Counter("homestream_worker_pages_rendered", "Member pages written")
PAGES_PUBLISHED = Counter("homestream_worker_pages_published",
                          "Page updates published to the recommendations topic")
LEARNING = Counter("homestream_worker_learning_items",
                   "What the batches gave the models to learn, by kind", ["kind"])
BATCH_DURATION = Histogram("homestream_worker_batch_duration_seconds",
                           "Wall time of one events micro-batch, decode to pages written",
                           buckets=BATCH_BUCKETS_S)
FRESHNESS = Histogram("homestream_worker_event_to_page_seconds",
                      "Page write time minus event time, per applied event that changed "
                      "a page", buckets=FRESHNESS_BUCKETS_S)
LAG = Gauge("homestream_worker_consumer_lag_messages",
            "Messages behind the partition's high watermark (assigned partitions)",
            ["topic", "partition"])
CHECKPOINT_AGE = Gauge("homestream_worker_model_checkpoint_age_seconds",
                       "Seconds since the models this worker ranks with were checkpointed "
                       "(inline learning) or swapped for a new learner snapshot; counted "
                       "from start-up before the first")


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """Observe ``values`` in ``histogram`` with one increment per bucket touched (the same
    result as one ``observe`` per value, without its per-value locking).

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("x_seconds", "x", buckets=(1.0, 2.0), registry=CollectorRegistry())
    >>> observe_many(h, [0.5, 1.0, 1.5, 9.0])
    >>> [s.value for s in h.collect()[0].samples if s.name == "x_seconds_bucket"]
    [2.0, 3.0, 4.0]
    """
    if not len(values):
        return
    data = np.asarray(values, dtype=np.float64)
    bounds = histogram._upper_bounds  # the last bound is +Inf
    per_bucket = np.bincount(np.searchsorted(bounds, data, side="left"),
                             minlength=len(bounds))
    for i in np.flatnonzero(per_bucket):
        histogram._buckets[i].inc(int(per_bucket[i]))
    histogram._sum.inc(float(data.sum()))


class WorkerMetrics:
    """Records what each micro-batch did and keeps the consumer's positions for the lag.

    ``roles`` maps the event topics' names to their registry roles (the ``topic`` label).
    """

    def __init__(self, roles: dict[str, str]) -> None:
        self.roles = roles
        #: Offset of the last message processed, per (topic, partition) seen in a batch.
        self.positions: dict[tuple[str, int], int] = {}
        self._lag_labels: set[tuple[str, str]] = set()
        self._checkpoint_at = time.time()
        CHECKPOINT_AGE.set_function(lambda: time.time() - self._checkpoint_at)

    def observe_batch(self, report: BatchReport, messages: Sequence[RawMessage],
                      seconds: float) -> None:
        """Count one processed micro-batch (``messages`` as handed to the processor)."""
        BATCH_DURATION.observe(seconds)
        # a partition's messages come in offset order: its last one is the newest (C-level
        # passes over the messages: ~0.1 us per message)
        self.positions.update(zip(map(_TOPIC_PARTITION, messages), map(_OFFSET, messages),
                                  strict=True))
        for topic, n in Tally(map(_TOPIC, messages)).items():
            MESSAGES.labels(topic=self.roles.get(topic, "other")).inc(n)
        for name, n in report.event_types.items():
            EVENTS.labels(type=name.lower()).inc(n)
        EVENTS_APPLIED.inc(report.applied)
        DUPLICATES.inc(report.duplicates)
        LATE.inc(report.late)
        PAGES_RENDERED.inc(report.pages)
        PAGES_PUBLISHED.inc(report.published)
        LEARNING.labels(kind="ranking_label").inc(report.labels)
        LEARNING.labels(kind="artwork_reward").inc(report.art_rewards)
        LEARNING.labels(kind="artwork_quality_play").inc(report.quality_plays)
        observe_many(FRESHNESS, np.asarray(report.freshness_ms) / 1000.0)

    def models_saved(self) -> None:
        """The models were checkpointed, or a new learner snapshot was loaded."""
        self._checkpoint_at = time.time()

    async def update_lag(self, app: faust.App) -> None:
        """Set the lag gauge of every assigned event-topic partition: the high watermark the
        consumer last saw minus the next offset to process (the fetch position before the
        first batch of a partition); partitions no longer assigned are dropped."""
        try:
            assigned = [tp for tp in app.consumer.assignment() if tp.topic in self.roles]
        except Exception:  # consumer not started (or stopping): nothing to report yet
            return
        seen: set[tuple[str, str]] = set()
        for tp in assigned:
            highwater = app.consumer.highwater(tp)
            last = self.positions.get((tp.topic, tp.partition))
            position = last + 1 if last is not None else await app.consumer.position(tp)
            if highwater is None or position is None:
                continue
            labels = (self.roles[tp.topic], str(tp.partition))
            LAG.labels(*labels).set(max(0, highwater - position))
            seen.add(labels)
        for labels in self._lag_labels - seen:
            LAG.remove(*labels)
        self._lag_labels = seen


def reason_class(error_type: str) -> str:
    """The bounded label of a dead letter's ``error_type``."""
    return REASON_CLASSES.get(error_type, "other")


class CountedDeadLetters:
    """A dead-letter sink that counts what it sends by reason class (after the send)."""

    def __init__(self, sink: DeadLetterSink) -> None:
        self.sink = sink

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        await self.sink.send(letters)
        for reason, n in Tally(reason_class(x.error_type) for x in letters).items():
            DEAD_LETTERS.labels(reason=reason).inc(n)


def metric_names() -> set[str]:
    """The sample names of every worker metric (:func:`homestream.metrics.exposed_names`)."""
    return exposed_names((MESSAGES, EVENTS, EVENTS_APPLIED, DUPLICATES, LATE, DEAD_LETTERS,
                          PAGES_RENDERED, PAGES_PUBLISHED, LEARNING, BATCH_DURATION, FRESHNESS,
                          LAG, CHECKPOINT_AGE))


def serve(port: int) -> Any:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a daemon thread; the server."""
    server, _thread = start_http_server(port)
    log.info("worker metrics on :%d/metrics", port)
    return server
