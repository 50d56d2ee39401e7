"""A Faust Kafka transport whose consumer fetch wait is a setting.

faust-streaming 0.15.3 hard-codes aiokafka's ``fetch_max_wait_ms=1500``. Apache Kafka answers
a fetch as soon as ``fetch_min_bytes`` (1 byte) is there, so the wait rarely matters; Tansu
holds every fetch for the full wait, which put 1.5 s between an event and its page
(measured: freshness p50 1.6-2.1 s with 1500 ms, 0.47 s with 100 ms). The wait is therefore
``HOMESTREAM_FETCH_MAX_WAIT_MS`` (default 10 ms: docs/bench.md has the runs with 100, 30 and
10), which costs real Kafka nothing but a few more empty fetches on idle partitions.

The override sets aiokafka 0.14's private ``_fetch_max_wait_ms`` before the consumer starts
(the versions are pinned in pyproject.toml; ``tests/unit/test_agents.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.outage import skip_transient


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the worker's aiokafka consumer with the app's fetch wait."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)
        return consumer


class TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TunedConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TunedTransport(faust_aiokafka.Transport):
    Consumer = TunedConsumer


class HomestreamApp(faust.App):
    """``faust.App`` with :class:`TunedTransport` and a configurable fetch wait, whose timers
    skip a tick while Redis is unreachable (a timer raising would stop the whole worker)."""

    fetch_max_wait_ms: int | None = None

    def timer(self, interval: Any, *args: Any, **kwargs: Any) -> Any:
        """``faust.App.timer`` whose body rides out a Redis outage (:mod:`streams.outage`)."""
        inner = super().timer(interval, *args, **kwargs)
        return lambda fun: inner(skip_transient(fun))

    def _new_transport(self) -> TunedTransport:
        return TunedTransport(self.conf.broker_consumer, self)
