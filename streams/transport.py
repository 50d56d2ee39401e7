"""A Faust Kafka transport whose consumer fetch wait is a setting.

faust-streaming 0.15.3 hard-codes aiokafka's ``fetch_max_wait_ms=1500``. Apache Kafka answers
a fetch as soon as ``fetch_min_bytes`` (1 byte) is there, so the wait rarely matters; Tansu
holds every fetch for the full wait, which put 1.5 s between an event and its page
(measured: freshness p50 1.6-2.1 s with 1500 ms, 0.47 s with 100 ms). The wait is therefore
``HOMESTREAM_FETCH_MAX_WAIT_MS`` (default 10 ms: docs/bench.md has the runs with 100, 30 and
10), which costs real Kafka nothing but a few more empty fetches on idle partitions.

The override sets aiokafka 0.14's private ``_fetch_max_wait_ms`` before the consumer starts
(the versions are pinned in pyproject.toml; ``tests/unit/test_agents.py`` checks it).

The consumer also hands a message to the streams without four tasks when it can
(:meth:`TunedConsumer.wait_first`).
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

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
    """Faust's consumer with :class:`TunedConsumerThread` and an eager hand-over of messages."""

    def _new_consumer_thread(self) -> TunedConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """``Service.wait_first``, with the first coroutine's first step run at once.

        Faust's fetch loop hands every message to the streams as ``wait_first(callback(
        message), suspend_flow.wait())``: four tasks and an ``asyncio.wait`` a message (py-spy
        on a draining worker: ~3% of its main thread in ``wait_first`` itself and about as much
        in the loop's scheduling of those tasks). The callback nearly always finishes without
        waiting (the stream's buffer has room, the flow is not suspended): then it needs no
        task, and the result is the one ``wait_first`` gives. A callback that waits is
        continued as a task, raced against the other coroutine as before; while the flow is
        suspended every call takes the original path."""
        first = coros[0] if coros else None
        if (timeout is not None or len(coros) != 2 or not inspect.iscoroutine(first)
                or self.suspend_flow.is_set()):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            waiting_on = first.send(None)
        except StopIteration as done:
            _close(coros[1])
            stopped = self._stopped.is_set() or self._crashed.is_set()
            return WaitResults([], [], True) if stopped else WaitResults(
                [first], [done.value], False)
        except BaseException:
            _close(coros[1])
            raise
        return await super().wait_first(_Resumed(first, waiting_on), coros[1])


def _close(coro: Any) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(coro):
        coro.close()


class _Resumed:
    """A coroutine started and suspended on ``waiting_on`` (what its first step yielded),
    as an awaitable a task can run: what the task sends or throws goes on to the coroutine,
    what the coroutine yields goes back to the task, and its result is the result."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resume(self.coro, self.waiting_on)


def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """The steps of :class:`_Resumed` after the first."""
    value = waiting_on
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                value = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as done:
                return done.value


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
