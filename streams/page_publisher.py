"""Changed pages published downstream through librdkafka (confluent-kafka's producer).

A worker publishes one message per changed page (a member's page, ~5 KB of Avro). Sent
through Faust's producer, each page cost the event loop ~0.3 ms of CPU (aiokafka batches,
frames and tracks every message in Python on that loop: docs/bench.md measured a drain with
and without publishing). :class:`ProducerPageUpdates` hands the encoded pages to librdkafka,
whose own threads batch, compress and send them: the event loop pays for the encoding and
one ``produce`` call a page. Its :meth:`~ProducerPageUpdates.send` still returns only once
the broker acknowledged every page of the call, and raises :class:`PageUpdatesError` when
one was not (the caller's write fails as it did with Faust's producer, and a timer's next
tick renders the page again).

Delivery reports are served by a thread of the publisher's own that waits in librdkafka's
``poll`` (outside the GIL), so an acknowledgement reaches the waiting ``send`` at once and
the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from homestream.kafka_config import ProducerLike, idempotent_producer_config
from homestream.settings import Settings
from online_models.page import Page
from topics.codec import AvroCodec, default_codec

#: Seconds the delivery thread waits in one ``poll`` (how soon it sees a stop request).
POLL_WAIT_S = 0.1
#: The most librdkafka waits to fill a batch of pages (ms).
PAGE_LINGER_MS = 1.0
#: Seconds a ``produce`` that found librdkafka's queue full waits before trying again.
QUEUE_FULL_WAIT_S = 0.005


class PageUpdatesError(ConnectionError):
    """A page update the broker did not acknowledge (an outage: the write is retried or
    skipped like any other broker or store outage)."""


def page_producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of the worker's page-updates producer."""
    return idempotent_producer_config(settings, f"{settings.app_id}-pages", {
        # the worker waits for the ack (a batch's first pages, a flush's chunk of 50): a
        # chunk's pages are produced within microseconds, so 1 ms still sends them together
        "linger.ms": min(settings.producer_linger_ms, PAGE_LINGER_MS),
        # librdkafka's own log lines (a broker not reachable, ...) in the worker's log
        "logger": logging.getLogger(f"{__name__}.librdkafka"),
    })


class _Acks:
    """Counts one :meth:`ProducerPageUpdates.send`'s delivery reports (in the delivery
    thread) and settles its future on the event loop when the last arrives or one fails."""

    def __init__(self, expected: int, loop: asyncio.AbstractEventLoop,
                 done: asyncio.Future[None]) -> None:
        self.left = expected
        self.loop = loop
        self.done = done
        self.settled = False

    def on_delivery(self, err: Any, msg: Any) -> None:
        if self.settled:
            return
        if err is not None:
            self._settle(_fail, f"page update not delivered: {err}")
            return
        self.left -= 1
        if self.left == 0:
            self._settle(_succeed)

    def _settle(self, how: Callable[..., None], *args: Any) -> None:
        self.settled = True
        # a closed loop (RuntimeError): nobody waits for these pages any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(how, self.done, *args)


def _succeed(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _fail(done: asyncio.Future[None], why: str) -> None:
    if not done.done():
        done.set_exception(PageUpdatesError(why))


class ProducerPageUpdates:
    """A :class:`~streams.render.PageUpdateSink` on a librdkafka producer.

    Parameters
    ----------
    topic
        The page-updates topic's name.
    producer
        A ``confluent_kafka.Producer`` (or anything with its ``produce``/``poll``/``flush``).
    codec
        Encodes the pages (``AvroCodec.encode_page_update``); the process's default codec.
    """

    def __init__(self, topic: str, producer: ProducerLike,
                 codec: AvroCodec | None = None) -> None:
        self.topic = topic
        self.producer = producer
        self.codec = codec or default_codec()
        self.delivered = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, topic: str) -> ProducerPageUpdates:
        """A publisher with an idempotent ``confluent_kafka.Producer`` of ``settings``."""
        from confluent_kafka import Producer

        return cls(topic, Producer(page_producer_config(settings)))

    async def send(self, pages: Sequence[Page]) -> None:
        """Publish ``pages`` (keyed by member) and wait until the broker acknowledged all."""
        if not pages:
            return
        self._start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        acks = _Acks(len(pages), loop, done)
        encode, produce = self.codec.encode_page_update, self.producer.produce
        for page in pages:
            value, key = encode(page), (page["profile_id"] or "").encode()
            while True:
                try:
                    produce(self.topic, value=value, key=key, on_delivery=acks.on_delivery)
                    break
                except BufferError:  # librdkafka's queue is full: wait for deliveries
                    await asyncio.sleep(QUEUE_FULL_WAIT_S)
        await done
        self.delivered += len(pages)

    def _start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._serve_reports,
                                            name="page-updates-delivery", daemon=True)
            self._thread.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(POLL_WAIT_S)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Stop the delivery thread, then wait (in a thread) up to ``timeout_s`` for pages
        not yet delivered; a ``send`` still waiting then fails with :class:`PageUpdatesError`
        (librdkafka reports the pages it gives up on as purged)."""
        loop = asyncio.get_running_loop()
        self._stop.set()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await loop.run_in_executor(None, thread.join)
        remaining = await loop.run_in_executor(None, self.producer.flush, timeout_s)
        purge = getattr(self.producer, "purge", None)
        if remaining and purge is not None:
            purge()
            self.producer.poll(0)
