"""Logs every served page to the impressions topic, closing the feedback loop.

One page request becomes one Kafka message: an Avro ``EventBatch`` (keyed by profile id) of
:class:`~topics.models.Impression` events, one per item served, with its row and column on
the page as returned. The home page hands over the message already encoded
(:meth:`ImpressionLogger.log_encoded`, from :mod:`serving.page_plan`) and it is produced at
once, without waiting for the broker; rows handed over as they are (:meth:`log_page`) are
built and encoded by a background task. While the broker is away, messages wait in the
producer's buffer (``HOMESTREAM_IMPRESSIONS_BUFFER_KB``) and then in a queue of at most
``max_waiting_pages`` pages retried by the background task; beyond that a page is dropped,
counted (``impressions_dropped``) and logged, so memory stays bounded. Every other
impression ends up counted as delivered or failed (failures logged with their event ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homestream.kafka_config import ProducerLike, idempotent_producer_config
from homestream.settings import Settings
from topics.codec import BATCH_SCHEMA, AvroCodec, default_codec
from topics.models import MATERIALIZED_POLICY, Impression
from topics.registry import topic_specs

log = logging.getLogger(__name__)

#: The least time between two log lines about dropped impressions.
DROP_LOG_INTERVAL_S = 5.0
#: Probability the policy had of showing that artwork (deterministic choice).
PROPENSITY = 1.0
VARIANT = "control"

def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the impressions producer."""
    return idempotent_producer_config(settings, f"{settings.app_id}-serving", {
        # what waits for an absent broker: bounded (beyond, pages are dropped and counted)
        "queue.buffering.max.kbytes": settings.impressions_buffer_kb,
    })


@dataclass(frozen=True, slots=True)
class ServedPage:
    """What one request returned, as the handler hands it over (rows as in the response)."""

    profile_id: str
    request_id: str
    served_at_ms: int
    rows: Sequence[Mapping[str, Any]]
    device: str
    country: str
    #: The context the artwork policy saw (JSON object), logged with every impression.
    context_json: str = ""
    #: The member's A/B variant.
    variant: str = VARIANT

    @property
    def item_count(self) -> int:
        return sum(len(r.get("items") or ()) for r in self.rows)


class EventIds(Sequence[str]):
    """The event ids of a page's impressions, ``{request_id}{suffix}``, built only when
    read (a failure to log them): a served page carries just its suffixes.

    >>> list(EventIds("r1", ["-0-0", "-0-1"]))
    ['r1-0-0', 'r1-0-1']
    """

    __slots__ = ("request_id", "suffixes")

    def __init__(self, request_id: str, suffixes: Sequence[str]) -> None:
        self.request_id = request_id
        self.suffixes = suffixes

    def __len__(self) -> int:
        return len(self.suffixes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.request_id + s for s in self.suffixes[i]]
        return self.request_id + self.suffixes[i]


@dataclass(frozen=True, slots=True)
class EncodedPage:
    """A served page whose impressions are already one encoded ``EventBatch`` (see
    :mod:`serving.page_plan`)."""

    profile_id: str
    request_id: str
    value: bytes
    event_ids: EventIds

    @property
    def item_count(self) -> int:
        return len(self.event_ids)


@dataclass(slots=True)
class _InFlight:
    request_id: str
    event_ids: Sequence[str]


class ImpressionLogger:
    """Produces one ``EventBatch`` of impressions per served page.

    Parameters
    ----------
    topic
        The impressions topic (``topic_specs(settings)["impressions"].name``).
    producer
        A ``confluent_kafka.Producer`` or anything with its ``produce``/``poll``/``flush``.
    codec
        Avro codec; the packaged schemas by default.
    poll_interval_s
        How often the background task serves delivery callbacks (``poll(0)``).
    retry_interval_s
        Wait before retrying a ``produce`` that found the local queue full.
    flush_timeout_s
        How long :meth:`aclose` waits for outstanding messages.
    max_waiting_pages
        Pages that may wait for room in the producer's buffer; more are dropped.

    Call :meth:`start` inside the running loop before :meth:`log_page`, and :meth:`aclose`
    at shutdown.
    """

    def __init__(self, topic: str, producer: ProducerLike, codec: AvroCodec | None = None,
                 *, poll_interval_s: float = 0.05, retry_interval_s: float = 0.05,
                 flush_timeout_s: float = 10.0, max_waiting_pages: int = 1000) -> None:
        self.topic = topic
        self.producer = producer
        self.codec = codec or default_codec()
        self.poll_interval_s = poll_interval_s
        self.retry_interval_s = retry_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.pages = 0
        self.max_waiting_pages = max_waiting_pages
        self._drop_logged_at = -DROP_LOG_INTERVAL_S
        self._queue: asyncio.Queue[ServedPage | EncodedPage] = asyncio.Queue()
        self._inflight: dict[int, _InFlight] = {}
        self._inflight_count = 0
        self._seq = itertools.count()
        self._emitter: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ImpressionLogger:
        """A logger with a real idempotent ``confluent_kafka.Producer`` and the codec of
        ``settings`` (registry framing when a schema registry is set; blocking: the codec
        registers its schemas there)."""
        from confluent_kafka import Producer

        from topics.registry_framing import codec_for

        return cls(topic_specs(settings)["impressions"].name,
                   Producer(producer_config(settings)), codec_for(settings))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the emitter and poller tasks on the running loop (idempotent)."""
        if self._closed:
            raise RuntimeError("ImpressionLogger is closed")
        if self._emitter is None:
            self._emitter = asyncio.create_task(self._emit_loop(), name="impressions-emit")
            self._poller = asyncio.create_task(self._poll_loop(), name="impressions-poll")

    @property
    def started(self) -> bool:
        return self._emitter is not None

    async def drain(self) -> None:
        """Wait until every page logged so far has been handed to the producer."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Produce what is queued, flush the producer (in a thread), close it, stop the tasks.

        The logger owns its producer. Impressions still undelivered after ``flush_timeout_s``
        are purged, counted as failed and logged with their event ids.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._emitter is not None:
                try:
                    await asyncio.wait_for(self._queue.join(), self.flush_timeout_s)
                except TimeoutError:
                    self._fail_unproduced()
            else:  # never started: produce what was queued from here
                while not self._queue.empty():
                    await self._emit(self._queue.get_nowait())
                    self._queue.task_done()
        finally:
            for task in (self._emitter, self._poller):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, self.producer.flush, self.flush_timeout_s)
        purge = getattr(self.producer, "purge", None)
        if remaining and purge is not None:
            # give up on what the broker did not take in time: the purge fires their delivery
            # callbacks with an error (counted failed), and lets close() return at once
            purge()
            self.producer.poll(0)
        close = getattr(self.producer, "close", None)
        if close is not None:  # confluent-kafka >= 2.x: stop librdkafka's threads now
            await loop.run_in_executor(None, close)
        if self._inflight:
            for rec in self._inflight.values():
                self._count_failed(rec.request_id, rec.event_ids,
                                   f"not delivered within {self.flush_timeout_s}s of shutdown")
            self._inflight.clear()
            self._inflight_count = 0

    # -- logging ------------------------------------------------------------------------------
    def log_page(self, profile_id: str, request_id: str, served_at_ms: int,
                 rows: Sequence[Mapping[str, Any]], *, device: str = "unknown",
                 country: str = "ZZ", context_json: str = "",
                 variant: str = VARIANT) -> None:
        """Queue one served page for logging; returns at once (never blocks, never drops).

        ``rows`` are the rows exactly as returned (after serve-time filtering), so row and
        column indexes match what the client saw; the caller must not mutate them.
        """
        if self._closed:
            raise RuntimeError("ImpressionLogger is closed")
        self.pages += 1
        self._wait_or_drop(
            ServedPage(profile_id, request_id, served_at_ms, rows, device, country,
                       context_json, variant))

    def log_encoded(self, profile_id: str, request_id: str, value: bytes,
                    suffixes: Sequence[str]) -> None:
        """Produce one page's impressions, already encoded (``value``); never blocks: a
        full producer queue hands the page to the background task, which retries."""
        if self._closed:
            raise RuntimeError("ImpressionLogger is closed")
        self.pages += 1
        page = EncodedPage(profile_id, request_id, value, EventIds(request_id, suffixes))
        if not self._queue.empty() or not self._produce_now(page):
            self._wait_or_drop(page)

    def _wait_or_drop(self, page: ServedPage | EncodedPage) -> None:
        """Queue ``page`` for the retrying task, or drop it (counted, logged at most every
        few seconds) when ``max_waiting_pages`` already wait: the broker has been away long
        enough to fill the producer's buffer, and memory stays bounded."""
        if self._queue.qsize() < self.max_waiting_pages:
            self._queue.put_nowait(page)
            return
        self.dropped += page.item_count
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
            self._drop_logged_at = now
            log.error("impressions buffer full (the broker is not taking them): dropped the "
                      "%d impressions of request %s; %d dropped so far", page.item_count,
                      page.request_id, self.dropped)

    def _produce_now(self, page: EncodedPage) -> bool:
        """Hand ``page`` to the producer; False when its local queue is full."""
        seq = next(self._seq)
        self._inflight[seq] = _InFlight(page.request_id, page.event_ids)
        self._inflight_count += len(page.event_ids)
        try:
            self.producer.produce(self.topic, value=page.value, key=page.profile_id.encode(),
                                  on_delivery=functools.partial(self._on_delivery, seq))
        except BufferError:
            self._forget(seq)
            return False
        except Exception as exc:  # KafkaException (e.g. message too large): accounted
            self._forget(seq)
            self._count_failed(page.request_id, page.event_ids, f"{type(exc).__name__}: {exc}")
        return True

    def stats(self) -> dict[str, int]:
        """Counters for ``/readyz``: impressions delivered, failed and in flight."""
        return {
            "impressions_delivered": self.delivered,
            "impressions_failed": self.failed,
            "impressions_in_flight": self._inflight_count,
            "impressions_dropped": self.dropped,
            "pages_queued": self._queue.qsize(),
        }

    @property
    def can_check_broker(self) -> bool:
        """Whether the producer can ask the broker for metadata (a real one can)."""
        return callable(getattr(self.producer, "list_topics", None))

    def check_broker(self, timeout_s: float) -> None:
        """Blocking (run it in a thread): ask the broker for its topics with the producer's
        ``list_topics``; raise if it does not answer within ``timeout_s`` or the impressions
        topic is missing or in error."""
        metadata = self.producer.list_topics(timeout=timeout_s)  # type: ignore[attr-defined]
        topic = metadata.topics.get(self.topic)
        if topic is None:
            raise LookupError(f"impressions topic {self.topic} does not exist on the broker")
        if topic.error is not None:
            raise LookupError(f"impressions topic {self.topic}: {topic.error}")

    # -- internals ----------------------------------------------------------------------------
    def build_events(self, page: ServedPage) -> list[dict[str, Any]]:
        """One Impression per served item; an item that does not validate is counted failed.

        The server builds these for every page it serves, so the records are checked with a
        few cheap tests instead of full model validation (the page-level fields were
        validated by the request handler), and event ids are ``{request_id}-{row}-{column}``:
        unique, and they say where the title was shown.
        """
        events: list[dict[str, Any]] = []
        for r, row in enumerate(page.rows):
            row_id = row.get("row_id")
            for c, item in enumerate(row.get("items") or ()):
                event_id = f"{page.request_id}-{r}-{c}"
                title_id = item.get("title_id")
                if not (isinstance(title_id, str) and title_id and isinstance(row_id, str)
                        and row_id):
                    self._count_failed(page.request_id, [event_id],
                                       f"invalid impression at row {r} column {c}: "
                                       f"title_id={title_id!r} row_id={row_id!r}")
                    continue
                events.append({
                    "event_id": event_id, "profile_id": page.profile_id,
                    "event_ts_ms": page.served_at_ms, "request_id": page.request_id,
                    "title_id": title_id, "row_id": row_id, "row": r, "column": c,
                    "artwork_id": str(item.get("artwork_id") or ""),
                    # the artwork decision, when the server made one (serving/artwork.py)
                    "propensity": float(item.get("propensity") or PROPENSITY),
                    "policy": str(item.get("policy") or MATERIALIZED_POLICY),
                    "policy_version": int(item.get("policy_version") or 0),
                    "variant": page.variant, "device": page.device, "country": page.country,
                    "context_json": page.context_json if "policy" in item else "",
                })
        return events

    async def _emit_loop(self) -> None:
        while True:
            page = await self._queue.get()
            try:
                await self._emit(page)
            finally:
                self._queue.task_done()

    async def _emit(self, page: ServedPage | EncodedPage) -> None:
        """Build, encode and produce one page; retry while the local queue is full."""
        if isinstance(page, EncodedPage):
            while not self._produce_now(page):
                self.producer.poll(0)
                try:
                    await asyncio.sleep(self.retry_interval_s)
                except asyncio.CancelledError:  # shutdown timed out while the queue was full
                    self._count_failed(page.request_id, page.event_ids,
                                       "producer queue full at shutdown")
                    raise
            return
        events: list[dict[str, Any]] = []
        try:
            events = self.build_events(page)
            if not events:
                return
            value = self.codec.encode(BATCH_SCHEMA, {
                "profile_id": page.profile_id,
                "events": [(Impression.schema_name, e) for e in events]})
        except Exception as exc:  # accounted below: counted failed and logged with ids
            log.exception("could not encode impressions of request %s", page.request_id)
            self._count_failed(page.request_id, [e["event_id"] for e in events],
                               f"{type(exc).__name__}: {exc}")
            return
        ids = [e["event_id"] for e in events]
        seq = next(self._seq)
        self._inflight[seq] = _InFlight(page.request_id, ids)
        self._inflight_count += len(ids)
        on_delivery = functools.partial(self._on_delivery, seq)
        key = page.profile_id.encode()
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve callbacks, wait, retry
                self.producer.poll(0)
                try:
                    await asyncio.sleep(self.retry_interval_s)
                except asyncio.CancelledError:  # shutdown timed out while the queue was full
                    self._forget(seq)
                    self._count_failed(page.request_id, ids, "producer queue full at shutdown")
                    raise
            except Exception as exc:  # KafkaException (e.g. message too large): accounted
                self._forget(seq)
                self._count_failed(page.request_id, ids, f"{type(exc).__name__}: {exc}")
                return

    async def _poll_loop(self) -> None:
        while True:
            self.producer.poll(0)
            await asyncio.sleep(self.poll_interval_s)

    def _on_delivery(self, seq: int, err: Any, _msg: Any) -> None:
        rec = self._forget(seq)
        if rec is None:
            return
        if err is None:
            self.delivered += len(rec.event_ids)
        else:
            self._count_failed(rec.request_id, rec.event_ids, str(err))

    def _forget(self, seq: int) -> _InFlight | None:
        rec = self._inflight.pop(seq, None)
        if rec is not None:
            self._inflight_count -= len(rec.event_ids)
        return rec

    def count_failed(self, request_id: str, event_ids: Sequence[str], reason: str) -> None:
        """Count impressions that cannot be logged (e.g. an item without a title id) as
        failed, logging their event ids and the reason."""
        self._count_failed(request_id, event_ids, reason)

    def _count_failed(self, request_id: str, event_ids: Sequence[str], reason: str) -> None:
        self.failed += len(event_ids)
        log.error("%d impressions of request %s not delivered to %s: %s; event ids: %s",
                  len(event_ids), request_id, self.topic, reason, ",".join(event_ids))

    def _fail_unproduced(self) -> None:
        """At a shutdown timeout: count queued pages never handed to the producer as failed.

        The page being produced, if any, is accounted by :meth:`_emit` when it is cancelled.
        """
        pages: list[ServedPage | EncodedPage] = []
        while not self._queue.empty():
            pages.append(self._queue.get_nowait())
            self._queue.task_done()
        for page in pages:
            n = page.item_count
            self.failed += n
            log.error("%d impressions of request %s not produced to %s before shutdown "
                      "(no event ids assigned yet)", n, page.request_id, self.topic)
