"""The bench's state reset between drain runs, on a real Redis."""

from __future__ import annotations

import redis

from bench.run import redis_commands, reset_pipeline_state
from features.keys import (
    catalog_key,
    catalog_version_key,
    checkpoint_key,
    model_version_key,
    page_key,
    profile_key,
    stats_key,
    trending_key,
)
from homestream.settings import Settings


def test_reset_keeps_the_catalog_and_optionally_the_models(settings: Settings) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    p = settings.key_prefix
    other = p.rstrip(":") + "-other:"
    r.hset(catalog_key(p), "t1", "{}")
    r.set(catalog_version_key(p), 3)
    r.set(profile_key(p, "m1"), "{}")
    r.set(page_key(p, "m1"), "{}")
    r.hset(stats_key(p), "events_applied", 10)
    r.zadd(trending_key(p, "US", 1), {"t1": 1.0})
    r.set(checkpoint_key(p, "top-picks"), b"blob")
    r.set(model_version_key(p), 7)
    r.set(page_key(other, "m1"), "{}")  # another deployment's key: never touched

    before = redis_commands(r)
    assert reset_pipeline_state(r, p, keep_models=True) == 4
    assert redis_commands(r) > before
    assert r.exists(checkpoint_key(p, "top-picks"), model_version_key(p)) == 2
    assert reset_pipeline_state(r, p) == 2  # now the models too
    left = sorted(k.decode() for k in r.scan_iter(match=p + "*"))
    assert left == sorted([catalog_key(p), catalog_version_key(p)])
    assert r.exists(page_key(other, "m1"))
    r.close()


def test_a_restarted_broker_is_empty_on_a_new_port_and_takes_records() -> None:
    """``LocalStack.restart_broker`` (the bench's phase 4a): the old broker is gone, the new
    one listens on another port, holds no topic and works for produce and consume."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from homestream.stack.local import local_stack

    with local_stack() as stack:
        old_port, old_proc = stack.broker.port, stack.broker.proc
        admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
        admin.create_topics([NewTopic("held", 1, 1)])["held"].result(10)
        stack.restart_broker()
        assert old_proc.poll() is not None
        assert stack.broker.port != old_port
        admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
        assert "held" not in admin.list_topics(timeout=10).topics
        admin.create_topics([NewTopic("fresh", 1, 1)])["fresh"].result(10)
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
        producer.produce("fresh", b"v")
        assert producer.flush(10) == 0
        consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": "g",
                             "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition("fresh", 0, 0)])
        got = None
        for _ in range(30):
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                got = (m.offset(), m.value())
                break
        consumer.close()
        assert got == (0, b"v")
