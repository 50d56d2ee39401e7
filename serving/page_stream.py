"""The server's view of the pipeline's output topics, for the web app's live views.

One :class:`TopicFeed` per server process reads, in a thread (librdkafka calls block), two
topics without joining a consumer group:

- ``homepage-updates``: every partition assigned from its end, so only pages materialized
  after the server started arrive. A message is keyed by profile id: only the updates of
  profiles someone is watching are decoded and handed to the :class:`PageUpdateHub` on the
  event loop (``call_soon_threadsafe``, one call per polled batch), which wakes their
  server-sent-event streams; a bounded sample of the others measures freshness.
- ``dead-letter``: its last :data:`DEAD_LETTER_TAIL` records and every new one, kept in a
  bounded deque for the operators' view.

Every :data:`LAG_INTERVAL_S` it also reads the worker group's committed offsets and the
high watermarks of the event topics. On Apache Kafka their difference is the consumer lag;
on Tansu 0.6 the high watermark is the base offset of a partition's last *batch* plus one
(shared/notes: infrastructure), so the difference is wrong there, and the operators' view
shows it with that warning beside the worker's own processed counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from homestream.kafka_config import librdkafka_config
from homestream.settings import Settings
from topics.codec import AvroCodec, DecodeError, default_codec
from topics.registry import event_topics, topic_specs

log = logging.getLogger(__name__)

#: Dead letters kept (and read back from the topic's end at start-up).
DEAD_LETTER_TAIL = 20
#: Seconds between two reads of the worker group's offsets.
LAG_INTERVAL_S = 2.0
#: Freshness samples kept, and how old a sample may be to count.
FRESHNESS_SAMPLES, FRESHNESS_WINDOW_S = 2000, 60.0
#: Updates of unwatched profiles decoded per second at most (for freshness only).
FRESHNESS_DECODES_PER_S = 100
#: Events queued per stream: a client that is this far behind skips to the newest page.
STREAM_QUEUE = 8


# -- the event-loop side ------------------------------------------------------------------------
class PageUpdateHub:
    """Fans page updates out to the streams that watch a profile. Lives on the event loop;
    :attr:`watched` is an immutable snapshot the feed thread may read at any time."""

    def __init__(self) -> None:
        self._streams: dict[str, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self.watched: frozenset[str] = frozenset()
        self.delivered = 0
        self.closed = False

    def subscribe(self, profile_id: str) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue that receives ``profile_id``'s updates (``None`` when the hub closes)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)
        if self.closed:
            queue.put_nowait(None)
            return queue
        self._streams.setdefault(profile_id, set()).add(queue)
        self.watched = frozenset(self._streams)
        return queue

    def unsubscribe(self, profile_id: str, queue: asyncio.Queue) -> None:
        """Stop delivering to ``queue``."""
        queues = self._streams.get(profile_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._streams[profile_id]
                self.watched = frozenset(self._streams)

    def publish(self, updates: Iterable[dict[str, Any]]) -> None:
        """Deliver each update to the streams of its ``profile_id``; a full queue drops its
        oldest entry (the client re-reads the whole page on any update anyway)."""
        for update in updates:
            for queue in self._streams.get(update["profile_id"], ()):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(update)
                self.delivered += 1

    def close(self) -> None:
        """End every stream (server shutdown): each queue gets ``None``."""
        self.closed = True
        for queues in self._streams.values():
            for queue in queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)
        self._streams.clear()
        self.watched = frozenset()


# -- state shared by the feed thread and the handlers --------------------------------------------
def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of already sorted values; ``None`` when empty.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5), quantile([], 0.99)
    (2.0, None)
    """
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class FeedState:
    """What the feed thread has seen; read by the operators' view under :attr:`lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    status: str = "starting"
    error: str | None = None
    page_updates_seen: int = 0
    dead_letters: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=DEAD_LETTER_TAIL))
    #: ``(received at s, event -> page ms, page -> server ms)``
    freshness: deque[tuple[float, float | None, float]] = field(
        default_factory=lambda: deque(maxlen=FRESHNESS_SAMPLES))
    lag: list[dict[str, Any]] = field(default_factory=list)
    lag_read_at_ms: int | None = None

    def add_freshness(self, now_s: float, event_to_page_ms: float | None,
                      page_to_server_ms: float) -> None:
        with self.lock:
            self.freshness.append((now_s, event_to_page_ms, page_to_server_ms))

    def freshness_summary(self, now_s: float) -> dict[str, Any]:
        """p50/p99 of event -> page and page -> this server over the last minute."""
        with self.lock:
            recent = [s for s in self.freshness if now_s - s[0] <= FRESHNESS_WINDOW_S]
        e2p = sorted(s[1] for s in recent if s[1] is not None)
        p2s = sorted(s[2] for s in recent)
        return {"window_s": FRESHNESS_WINDOW_S, "samples": len(recent),
                "event_to_page_p50_ms": quantile(e2p, 0.5),
                "event_to_page_p99_ms": quantile(e2p, 0.99),
                "page_to_server_p50_ms": quantile(p2s, 0.5),
                "page_to_server_p99_ms": quantile(p2s, 0.99)}

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """Everything the operators' view shows of the topics, as JSON-ready data."""
        with self.lock:
            body = {"status": self.status, "error": self.error,
                    "page_updates_seen": self.page_updates_seen,
                    "dead_letters": list(reversed(self.dead_letters)),
                    "lag": list(self.lag), "lag_read_at_ms": self.lag_read_at_ms}
        body["freshness"] = self.freshness_summary(now_s)
        return body


def dead_letter_summary(codec: AvroCodec, value: bytes | None, offset: int) -> dict[str, Any]:
    """A dead-letter record as the operators' view lists it (the original bytes shortened
    to a preview); a record that does not decode is listed with the decoding error."""
    try:
        letter = codec.decode_dead_letter(value or b"")
    except (DecodeError, ValueError) as exc:
        return {"offset": offset, "reason": f"undecodable dead-letter record: {exc}",
                "error_type": type(exc).__name__, "source_topic": None, "partition": None,
                "source_offset": None, "event_id": None, "failed_at_ms": None,
                "value_preview": None}
    preview = None if letter.value is None else letter.value[:48].hex()
    return {"offset": offset, "reason": letter.reason, "error_type": letter.error_type,
            "source_topic": letter.source_topic, "partition": letter.partition,
            "source_offset": letter.offset, "event_id": letter.event_id,
            "failed_at_ms": letter.failed_at_ms, "value_preview": preview}


def page_update_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a decoded ``homestream.PageUpdate`` a page stream sends to the browser."""
    return {"profile_id": record["profile_id"], "generated_at_ms": record["generated_at_ms"],
            "as_of_event_ts_ms": record["as_of_event_ts_ms"] or None,
            "personalized": record["personalized"], "rows": len(record["rows"])}


def lag_rows(committed: Sequence[TopicPartition],
             watermarks: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    """Per partition: the group's committed offset, the high watermark and their difference
    (``None`` where either is unknown).

    >>> tp = TopicPartition("e", 0, 7)
    >>> lag_rows([tp], {("e", 0): 10})[0]["lag"]
    3
    """
    rows = []
    for tp in committed:
        high = watermarks.get((tp.topic, tp.partition))
        offset = tp.offset if tp.offset >= 0 else None
        lag = None if high is None or offset is None else high - offset
        rows.append({"topic": tp.topic, "partition": tp.partition, "committed": offset,
                     "high_watermark": high, "lag": lag})
    return rows


# -- the feed thread ---------------------------------------------------------------------------
class TopicFeed:
    """Reads the page-updates and dead-letter topics (and the worker group's offsets) in a
    daemon thread; see the module docstring. :meth:`ensure_started` on the server's loop
    when a view first needs it, :meth:`stop` at cleanup."""

    def __init__(self, settings: Settings, deliver: Callable[[list[dict[str, Any]]], None],
                 watched: Callable[[], frozenset[str]], *, codec: AvroCodec | None = None,
                 poll_timeout_s: float = 0.1) -> None:
        specs = topic_specs(settings)
        self.settings = settings
        self.updates_topic = specs["page_updates"].name
        self.dead_letter_topic = specs["dead_letter"].name
        self.state = FeedState()
        self._deliver = deliver
        self._watched = watched
        self._codec = codec or default_codec()
        self._poll_timeout_s = poll_timeout_s
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._budget, self._budget_at = FRESHNESS_DECODES_PER_S, 0.0

    def ensure_started(self) -> None:
        """Start the thread on first use (on the server's loop, where updates are handed
        to ``deliver``); later calls do nothing. A server nobody watches reads nothing."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="homestream-topic-feed",
                                        daemon=True)
        self._thread.start()

    async def wait_running(self, timeout_s: float) -> bool:
        """Wait until every partition is assigned at a fixed offset (an update published
        after that is delivered); whether it happened within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self._running.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self._running.is_set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to end and wait for it (in a worker thread, not on the loop)."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout_s)

    def snapshot(self) -> dict[str, Any]:
        """The operators' view of the topics (see :meth:`FeedState.snapshot`)."""
        return self.state.snapshot(time.time())

    # -- in the thread ---------------------------------------------------------------------
    def _consumer(self, group: str) -> Consumer:
        return Consumer({**librdkafka_config(self.settings),
                         "group.id": group, "enable.auto.commit": False,
                         "enable.partition.eof": False, "fetch.wait.max.ms": 100,
                         "auto.offset.reset": "latest", "socket.timeout.ms": 5000})

    def _set_status(self, status: str, error: str | None = None) -> None:
        with self.state.lock:
            self.state.status, self.state.error = status, error

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        md = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise LookupError(f"topic {topic} does not exist yet")
        return sorted(md.partitions)

    def _assign(self, consumer: Consumer) -> None:
        """Page updates from each partition's current end, resolved here (not left to
        ``OFFSET_END`` at the first fetch), so nothing published after this is missed; the
        dead letters' last :data:`DEAD_LETTER_TAIL`. Tansu's high watermark can be too low:
        reading from further back only reads more (older updates, older dead letters)."""
        parts = []
        for topic, keep in ((self.updates_topic, 0), (self.dead_letter_topic, DEAD_LETTER_TAIL)):
            for p in self._partitions(consumer, topic):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                           timeout=5, cached=False)
                parts.append(TopicPartition(topic, p, max(low, high - keep)))
        consumer.assign(parts)
        self._running.set()

    def _run(self) -> None:
        consumers: list[Consumer] = []
        try:
            consumer = self._consumer(f"homestream-web-{uuid.uuid4().hex[:12]}")
            consumers.append(consumer)
            lag_consumer = self._consumer(self.settings.app_id)  # reads offsets; never joins
            consumers.append(lag_consumer)
            while not self._stop.is_set():
                try:
                    self._assign(consumer)
                    break
                except (LookupError, KafkaException) as exc:
                    self._set_status("waiting for topics", str(exc))
                    self._stop.wait(1.0)
            self._set_status("running")
            next_lag = 0.0
            while not self._stop.is_set():
                self._handle(consumer.consume(500, timeout=self._poll_timeout_s))
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_INTERVAL_S
                    self._read_lag(lag_consumer)
        except Exception as exc:  # the view reports it; the server keeps serving pages
            log.exception("topic feed stopped")
            self._set_status("failed", f"{type(exc).__name__}: {exc}")
        finally:
            for c in consumers:
                c.close()

    def _decodes_left(self, now_s: float) -> bool:
        if now_s - self._budget_at >= 1.0:
            self._budget, self._budget_at = FRESHNESS_DECODES_PER_S, now_s
        self._budget -= 1
        return self._budget >= 0

    def _handle(self, messages: Sequence[Any]) -> None:
        watched = self._watched()
        out: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        now_s = time.time()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._set_status("running", f"consumer: {err}")
                continue
            if msg.topic() == self.dead_letter_topic:
                letters.append(dead_letter_summary(self._codec, msg.value(), msg.offset()))
                continue
            key = (msg.key() or b"").decode("utf-8", "replace")
            want = key in watched
            if not want and not self._decodes_left(now_s):
                continue
            update = self._page_update(msg.value(), now_s)
            if want and update is not None:
                out.append(update)
        with self.state.lock:
            self.state.page_updates_seen += sum(
                1 for m in messages if m.error() is None and m.topic() == self.updates_topic)
            self.state.dead_letters.extend(letters)
        if out and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._deliver, out)
            except RuntimeError:  # the loop closed: the server is stopping
                self._stop.set()

    def _page_update(self, value: bytes | None, now_s: float) -> dict[str, Any] | None:
        try:
            name, record = self._codec.decode(value or b"")
        except DecodeError:
            return None
        if name != "homestream.PageUpdate":
            return None
        generated = record["generated_at_ms"]
        as_of = record["as_of_event_ts_ms"]
        self.state.add_freshness(now_s, generated - as_of if as_of > 0 else None,
                                 now_s * 1000 - generated)
        return page_update_summary(record)

    def _read_lag(self, consumer: Consumer) -> None:
        try:
            parts = [TopicPartition(t, p) for t in event_topics(self.settings)
                     for p in self._partitions(consumer, t)]
            committed = consumer.committed(parts, timeout=5)
            marks = {}
            for tp in parts:
                _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                marks[(tp.topic, tp.partition)] = high
        except (LookupError, KafkaException) as exc:
            self._set_status("running", f"lag: {exc}")
            return
        rows = lag_rows(committed, marks)
        with self.state.lock:
            self.state.lag, self.state.lag_read_at_ms = rows, int(time.time() * 1000)
            self.state.error = None  # the broker answered: an earlier error is over
