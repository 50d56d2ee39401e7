"""Read whole topics from the beginning: tools, reports and tests that replay what a topic holds.

:func:`read_topics` assigns every partition of the topics at offset 0 (no consumer-group
join, so it starts at once) and yields each message until every partition has reported its
end, the consumer's end-of-partition signal (``enable.partition.eof``). It does not use the
high watermark from ``get_watermark_offsets``: on Tansu that reports 1 for a partition whose
messages arrived in one compressed batch. ``min_messages`` keeps reading past the end until
that many messages came (for a reader racing a producer), and ``timeout_s`` bounds the whole
read: :class:`TopicReadTimeout` says which partitions were not read to their end.

Example (with a running broker)::

    for msg in read_topics(settings.bootstrap_servers, ["homestream.dead-letter"]):
        print(msg.offset(), len(msg.value() or b""))
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition


class TopicReadTimeout(TimeoutError):
    """The read did not reach the end of every partition (or ``min_messages``) in time."""


def read_topics(bootstrap_servers: str, topics: Sequence[str], *, timeout_s: float = 60.0,
                min_messages: int = 0, missing_ok: bool = False,
                group_prefix: str = "homestream-reader",
                config: Mapping[str, Any] | None = None) -> Iterator[Message]:
    """Yield every message of ``topics`` from offset 0 up to the end of each partition.

    Parameters
    ----------
    bootstrap_servers
        The broker to read from.
    topics
        Topic names; a topic that does not exist raises ``LookupError`` unless
        ``missing_ok`` (then it is skipped).
    timeout_s
        Longest time for the whole read.
    min_messages
        Keep reading after the ends were reached until this many messages came.
    group_prefix
        Prefix of the throwaway ``group.id`` (nothing is committed).
    config
        More librdkafka settings, e.g. the broker's security
        (:func:`homestream.kafka_config.librdkafka_security`).
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"{group_prefix}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        **(config or {}),
    })
    try:
        parts = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                if missing_ok:
                    continue
                raise LookupError(f"topic {topic} not found on {bootstrap_servers}")
            parts += [TopicPartition(topic, p, 0) for p in sorted(md.partitions)]
        if not parts:
            return
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        seen = 0
        deadline = time.monotonic() + timeout_s
        while pending or seen < min_messages:
            if time.monotonic() > deadline:
                what = (f"the end of {sorted(pending)}" if pending
                        else f"{min_messages} messages (got {seen})")
                raise TopicReadTimeout(f"did not reach {what} in {timeout_s}s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                continue
            seen += 1
            yield msg
    finally:
        consumer.close()


__all__ = ["TopicReadTimeout", "read_topics"]
