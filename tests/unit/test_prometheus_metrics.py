"""The worker's and the server's Prometheus metrics, without sockets: what a micro-batch
records, the lag, the dead-letter counts, pages by source, the impression sampler, the
multiprocess directory (the route label is checked over HTTP in
tests/integration/test_metrics_endpoints.py)."""

from __future__ import annotations

import os
from collections import Counter as Tally
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from serving import metrics as sm
from streams import metrics as wm
from streams.decode import RawMessage
from streams.processor import BatchReport
from topics.models import DeadLetter


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_observe_many_is_the_same_as_one_observe_per_value(values: list[float]) -> None:
    buckets = (0.5, 1.0, 2.0, 10.0)
    one = Histogram("a_seconds", "a", buckets=buckets, registry=CollectorRegistry())
    many = Histogram("a_seconds", "a", buckets=buckets, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    wm.observe_many(many, values)
    samples = [[(s.name, s.labels, s.value) for s in h.collect()[0].samples
                if not s.name.endswith("_created")] for h in (one, many)]
    assert samples[0][:-1] == samples[1][:-1]  # buckets and count
    assert samples[0][-1][2] == pytest.approx(samples[1][-1][2])  # sum


def test_a_batch_counts_messages_by_topic_role_events_by_type_and_its_outcomes() -> None:
    metrics = wm.WorkerMetrics({"x.player-events": "player_events", "x.impressions":
                                "impressions"})
    report = BatchReport(messages=4, events=5, applied=3, duplicates=1, pages=2, published=2,
                         labels=4, late=1, freshness_ms=[100.0, 900.0, 4000.0],
                         event_types=Tally({"Play": 3, "Scroll": 2}))
    messages = [RawMessage("x.player-events", 0, 10, b"a", b""),
                RawMessage("x.player-events", 0, 12, b"a", b""),
                RawMessage("x.player-events", 1, 5, b"b", b""),
                RawMessage("x.impressions", 0, 7, b"a", b"")]
    before = {k: value(*k[:1], **dict(k[1:])) for k in [
        ("homestream_worker_messages_total", ("topic", "player_events")),
        ("homestream_worker_events_total", ("type", "play")),
        ("homestream_worker_events_total", ("type", "scroll")),
        ("homestream_worker_events_applied_total",),
        ("homestream_worker_duplicate_events_total",),
        ("homestream_worker_late_events_total",),
        ("homestream_worker_pages_rendered_total",),
        ("homestream_worker_learning_items_total", ("kind", "ranking_label")),
        ("homestream_worker_event_to_page_seconds_count",),
        ("homestream_worker_event_to_page_seconds_bucket", ("le", "1.0")),
        ("homestream_worker_batch_duration_seconds_count",)]}
    metrics.observe_batch(report, messages, 0.02)
    moved = {k: value(*k[:1], **dict(k[1:])) - v for k, v in before.items()}
    assert list(moved.values()) == [3, 3, 2, 3, 1, 1, 2, 4, 3, 2, 1]
    assert metrics.positions == {("x.player-events", 0): 12, ("x.player-events", 1): 5,
                                 ("x.impressions", 0): 7}


class FakeConsumer:
    def __init__(self, highwaters: dict[Any, int | None], fetch: dict[Any, int]) -> None:
        self.highwaters, self.fetch = highwaters, fetch

    def assignment(self) -> set[Any]:
        return set(self.highwaters)

    def highwater(self, tp: Any) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: Any) -> int | None:
        return self.fetch.get(tp)


async def test_lag_is_the_highwater_minus_the_next_offset_and_unassigned_partitions_go() -> None:
    metrics = wm.WorkerMetrics({"ev": "player_events"})
    tp0, tp1 = TP("ev", 0), TP("ev", 1)
    other = TP("catalog", 0)  # not an event topic: no lag reported
    metrics.positions[("ev", 0)] = 89  # the last offset processed: next is 90
    app = SimpleNamespace(consumer=FakeConsumer({tp0: 100, tp1: 50, other: 9}, {tp1: 45}))
    await metrics.update_lag(app)
    assert value("homestream_worker_consumer_lag_messages", topic="player_events",
                 partition="0") == 10
    assert value("homestream_worker_consumer_lag_messages", topic="player_events",
                 partition="1") == 5  # the fetch position before a first batch
    app.consumer = FakeConsumer({tp1: 60}, {tp1: 45})  # partition 0 moved to another worker
    await metrics.update_lag(app)
    assert REGISTRY.get_sample_value("homestream_worker_consumer_lag_messages",
                                     {"topic": "player_events", "partition": "0"}) is None


def letter(error_type: str) -> DeadLetter:
    return DeadLetter(source_topic="ev", partition=0, offset=1, key=b"k", value=b"v",
                      reason="bad", error_type=error_type, failed_at_ms=1)


async def test_dead_letters_are_counted_by_reason_class_once_sent() -> None:
    sent: list[DeadLetter] = []

    class Sink:
        async def send(self, letters: list[DeadLetter]) -> None:
            sent.extend(letters)

    class Broken:
        async def send(self, letters: list[DeadLetter]) -> None:
            raise ConnectionError("broker down")

    before = {r: value("homestream_worker_dead_letters_total", reason=r)
              for r in ("decode", "validation", "late", "other")}
    await wm.CountedDeadLetters(Sink()).send(
        [letter("DecodeError"), letter("DecodeError"), letter("LateEvent"), letter("Weird")])
    with pytest.raises(ConnectionError):
        await wm.CountedDeadLetters(Broken()).send([letter("ValidationError")])
    after = {r: value("homestream_worker_dead_letters_total", reason=r) - before[r]
             for r in before}
    assert after == {"decode": 2, "validation": 0, "late": 1, "other": 1}
    assert len(sent) == 4


def test_pages_are_counted_by_bounded_source_and_artwork_by_policy() -> None:
    before = {s: value("homestream_serving_pages_served_total", source=s)
              for s in sm.PAGE_SOURCES}
    art = value("homestream_serving_artwork_decisions_total", policy="lin_ucb")
    for source in ("personal", "default-US", "default-ALL", "latest", "empty"):
        sm.record_page(source, "lin_ucb", 2)
    moved = {s: value("homestream_serving_pages_served_total", source=s) - before[s]
             for s in sm.PAGE_SOURCES}
    assert moved == {"personal": 1, "default": 2, "latest": 1, "empty": 1}
    assert value("homestream_serving_artwork_decisions_total", policy="lin_ucb") - art == 10


def test_the_impression_sampler_copies_gauges_and_adds_counter_increments() -> None:
    stats = {"impressions_delivered": 10, "impressions_failed": 1,
             "impressions_in_flight": 3, "pages_queued": 7}
    logger: Any = SimpleNamespace(stats=lambda: dict(stats))
    sampler = sm.ImpressionSampler(logger)
    delivered = value("homestream_serving_impressions_delivered_total")
    failed = value("homestream_serving_impressions_failed_total")
    sampler.sample()
    stats.update(impressions_delivered=15, pages_queued=2)
    sampler.sample()
    assert value("homestream_serving_impressions_delivered_total") - delivered == 15
    assert value("homestream_serving_impressions_failed_total") - failed == 1
    assert value("homestream_serving_impression_queue_pages") == 2
    assert value("homestream_serving_impressions_in_flight") == 3


def test_the_multiprocess_directory_exists_while_serving_and_is_removed_after(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv(sm.MULTIPROC_ENV, raising=False)
    with sm.multiprocess_dir(1) as path:  # one process: its own registry
        assert path is None and sm.MULTIPROC_ENV not in os.environ
    with sm.multiprocess_dir(3) as path:
        assert path and os.path.isdir(path) and os.environ[sm.MULTIPROC_ENV] == path
    assert not os.path.exists(path) and sm.MULTIPROC_ENV not in os.environ
    monkeypatch.setenv(sm.MULTIPROC_ENV, str(tmp_path))  # the operator's: left alone
    with sm.multiprocess_dir(3) as path:
        assert path == str(tmp_path)
    assert tmp_path.is_dir() and os.environ[sm.MULTIPROC_ENV] == str(tmp_path)
