"""The impressions logger's memory is bounded while the broker does not take messages: pages
wait up to a limit, then are dropped and counted, and the waiting ones go out when it can."""

from __future__ import annotations

import asyncio

from serving.impressions import ImpressionLogger


class FullProducer:
    """A producer whose local queue is full until ``accept`` is set."""

    def __init__(self) -> None:
        self.accept = False
        self.values: list[bytes] = []

    def produce(self, topic, value=None, key=None, on_delivery=None):
        if not self.accept:
            raise BufferError("queue full")
        self.values.append(value)
        if on_delivery:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


async def test_pages_wait_up_to_the_limit_then_are_dropped_and_counted() -> None:
    producer = FullProducer()
    logger = ImpressionLogger("imp", producer, max_waiting_pages=3, retry_interval_s=0.01)
    logger.start()
    for i in range(5):
        logger.log_encoded("p1", f"r{i}", b"msg%d" % i, ["-0-0", "-0-1"])
    stats = logger.stats()
    assert stats["pages_queued"] == 3 and stats["impressions_dropped"] == 4
    producer.accept = True
    await asyncio.wait_for(logger.drain(), 5)
    assert producer.values == [b"msg0", b"msg1", b"msg2"]
    assert logger.stats()["impressions_delivered"] == 6
    await logger.aclose()
    assert logger.stats()["impressions_failed"] == 0
