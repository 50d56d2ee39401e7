"""The worker's page-updates publisher on a stand-in producer (its delivery reports, a full
queue, a failed delivery, shutdown). The real broker's side is tested end to end by the
integration tests that read the page-updates topic a worker wrote (test_home_page,
test_schema_evolution, test_registry_framing)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from homestream.settings import Settings
from streams.outage import is_transient
from streams.page_publisher import (
    PageUpdatesError,
    ProducerPageUpdates,
    _Acks,
    page_producer_config,
)
from topics.codec import PAGE_UPDATE_SCHEMA, AvroCodec


class StandInProducer:
    """Keeps produced messages and reports them delivered (or failed) on ``poll``/``flush``,
    like librdkafka: callbacks run in the thread that polls."""

    def __init__(self, fail_keys: frozenset[bytes] = frozenset(), room: int = 10_000) -> None:
        self.fail_keys = fail_keys
        self.room = room
        self.produced: list[tuple[str, bytes, bytes]] = []
        self.poll_threads: set[str] = set()
        self._pending: list[tuple[bytes, Any]] = []
        self._lock = threading.Lock()

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                *, on_delivery: Any = None) -> None:
        with self._lock:
            if len(self._pending) >= self.room:
                raise BufferError("Local: Queue full")
            self.produced.append((topic, key or b"", value or b""))
            self._pending.append((key or b"", on_delivery))

    def poll(self, timeout: float = 0.0) -> int:
        with self._lock:
            due, self._pending = self._pending, []
        self.poll_threads.add(threading.current_thread().name)
        for key, callback in due:
            callback("Broker: Not enough in-sync replicas" if key in self.fail_keys else None,
                     None)
        if not due:
            time.sleep(min(timeout, 0.01))
        return len(due)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll(0)
        return 0


def _page(pid: str) -> dict[str, Any]:
    return {"profile_id": pid, "personalized": True, "country": "US", "max_rating": "R",
            "kids": False, "generated_at_ms": 1_700_000_000_000, "as_of_event_ts_ms": 1,
            "rows": [{"row_id": "top_picks", "kind": "top_picks", "title": "Top Picks",
                      "explanation": "", "utility": 0.5, "adjusted_utility": 0.5,
                      "items": [{"title_id": "t1", "artwork_id": "t1-a", "score": 0.25}]}]}


async def test_send_returns_once_every_page_is_delivered_keyed_by_member() -> None:
    producer = StandInProducer()
    codec = AvroCodec()
    pub = ProducerPageUpdates("pages", producer, codec)
    await pub.send([_page("p1"), _page("p2")])
    assert [(t, k) for t, k, _ in producer.produced] == [("pages", b"p1"), ("pages", b"p2")]
    name, record = codec.decode(producer.produced[1][2])
    assert name == PAGE_UPDATE_SCHEMA
    assert record["profile_id"] == "p2" and record["rows"][0]["items"][0]["title_id"] == "t1"
    assert pub.delivered == 2
    assert producer.poll_threads == {"page-updates-delivery"}  # not the event loop's
    await pub.aclose()
    assert pub._thread is None


async def test_a_page_not_delivered_fails_the_send_as_an_outage() -> None:
    pub = ProducerPageUpdates("pages", StandInProducer(fail_keys=frozenset({b"p2"})))
    with pytest.raises(PageUpdatesError, match="not delivered: Broker: Not enough") as err:
        await pub.send([_page("p1"), _page("p2"), _page("p3")])
    assert is_transient(err.value)  # retried or skipped like a store outage, not dropped
    assert pub.delivered == 0
    await pub.send([_page("p1")])  # the next send is not confused by the failed one's acks
    assert pub.delivered == 1
    await pub.aclose()


async def test_a_full_queue_waits_for_room_instead_of_failing() -> None:
    producer = StandInProducer(room=2)
    pub = ProducerPageUpdates("pages", producer)
    await asyncio.wait_for(pub.send([_page(f"p{i}") for i in range(7)]), 5)
    assert [k for _, k, _ in producer.produced] == [f"p{i}".encode() for i in range(7)]
    await pub.aclose()


async def test_nothing_to_send_starts_nothing() -> None:
    producer = StandInProducer()
    pub = ProducerPageUpdates("pages", producer)
    await pub.send([])
    assert pub._thread is None and producer.produced == []
    await pub.aclose()


def test_producer_config_names_the_worker_and_keeps_the_broker_settings() -> None:
    settings = Settings(bootstrap_servers="b1:9092,b2:9092", app_id="hs",
                        producer_delivery_timeout_ms=4000)
    conf = page_producer_config(settings)
    assert conf["bootstrap.servers"] == "b1:9092,b2:9092"
    assert conf["client.id"] == "hs-pages" and conf["enable.idempotence"] is True
    assert conf["delivery.timeout.ms"] == 4000


def test_a_report_after_the_loop_closed_is_dropped_quietly() -> None:
    loop = asyncio.new_event_loop()
    done = loop.create_future()
    loop.close()
    acks = _Acks(1, loop, done)
    acks.on_delivery(None, None)  # the delivery thread must not die on a closed loop
    assert acks.settled and not done.done()


async def test_the_worker_makes_its_own_publisher_only_when_it_publishes_and_none_was_given(
        ) -> None:
    from features.store import InMemoryStore
    from streams.app import build_app
    from streams.processor import MemoryDeadLetters
    from streams.render import MemoryPageUpdates

    made = build_app(Settings(app_id="pub-a"), InMemoryStore(), MemoryDeadLetters())
    assert isinstance(made.processor.page_updates, ProducerPageUpdates)
    await made.processor.page_updates.aclose(timeout_s=0.1)
    given = MemoryPageUpdates()
    passed = build_app(Settings(app_id="pub-b"), InMemoryStore(), MemoryDeadLetters(), given)
    assert passed.processor.page_updates is given
    off = build_app(Settings(app_id="pub-c", publish_page_updates=False), InMemoryStore(),
                    MemoryDeadLetters())
    assert off.processor.page_updates is None
