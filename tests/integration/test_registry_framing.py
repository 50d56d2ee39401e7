"""Registry framing on the real broker: with HOMESTREAM_SCHEMA_REGISTRY_URL a worker applies
the events of a player on the previous schema version (confluent_kafka's AvroSerializer), a
player on the current one (the registry codec) and a player still on the single-object
encoding; its learner learns the model updates it writes in the registry framing, and
downstream consumers read its page updates with confluent_kafka's AvroDeserializer. The
registry is tests.schema_registry (no registry server runs here)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from features import keys
from homestream.kafka_config import librdkafka_config
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.process import Child
from streams.models import LEARNER_CHECKPOINT, LearnerMeta
from tests.integration.helpers import (
    WorkerProcess,
    make_titles,
    profile_state,
    read_topic,
    redis_client,
    wait_for_catalog,
    wait_until,
)
from tests.schema_registry import SchemaRegistryServer
from topics.codec import AvroCodec
from topics.models import Play
from topics.registry import ensure_topics, topic_specs
from topics.registry_framing import RegistryCodec, codec_for, registry_schema


def learner_meta(settings: Settings) -> LearnerMeta | None:
    raw = redis_client(settings).get(keys.checkpoint_key(settings.key_prefix,
                                                         LEARNER_CHECKPOINT))
    return None if raw is None else LearnerMeta.from_bytes(raw)


@pytest.fixture
def registry() -> Iterator[SchemaRegistryServer]:
    with SchemaRegistryServer() as server:
        yield server


def play(profile: str, title: str, ts: int) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=900.0, duration_s=1200.0, country="US",
                device="tv")


def test_players_on_both_versions_and_both_framings_reach_the_member(
        settings: Settings, registry: SchemaRegistryServer) -> None:
    # the worker sends its learning to a learner: model updates in the registry framing too
    settings = settings.model_copy(update={"schema_registry_url": registry.url,
                                           "learner_mode": "topic"})
    ensure_topics(settings)
    specs = topic_specs(settings)
    events_topic = specs["player_events"].name
    codec = codec_for(settings)
    assert isinstance(codec, RegistryCodec)
    client = SchemaRegistryClient({"url": registry.url})
    v1 = registry_schema(AvroCodec().history["homestream.Play"][0].schema)
    old_player = AvroSerializer(client, v1, conf={
        "auto.register.schemas": True, "subject.name.strategy": topic_record_subject_name_strategy})
    now = int(time.time() * 1000)
    first = play("dana", "t1", now)
    ctx = SerializationContext(events_topic, MessageField.VALUE)
    old_bytes = old_player({k: v for k, v in first.model_dump().items() if k != "app_version"},
                           ctx)
    assert old_bytes[0] == 0 and int.from_bytes(old_bytes[1:5], "big") != codec.ids[
        "homestream.Play"]

    publish_catalog(settings, make_titles(12))  # single-object: read during a migration too
    worker = WorkerProcess(settings)
    learner = Child.module("streams.learner", settings.to_env(), name="learner")
    try:
        wait_for_catalog(settings, 12, timeout_s=60)
        producer = Producer(librdkafka_config(settings))
        producer.produce(events_topic, key=b"dana", value=old_bytes)
        producer.flush(10)
        with PlayerProducer(settings, codec=codec) as current:  # registry framing, v2
            current.send(play("dana", "t2", now + 1))
        with PlayerProducer(settings, codec=AvroCodec()) as migrating:  # single-object
            migrating.send(play("dana", "t3", now + 2))
        state = wait_until(lambda: (s := profile_state(settings, "dana"))
                           and len(s["engaged"]) == 3 and s, 40, what="dana's three plays")
        assert set(state["engaged"]) == {"t1", "t2", "t3"}
        meta = wait_until(lambda: (m := learner_meta(settings)) and m.counters["labels"] and m,
                          40, what="the learner's snapshot of the worker's learning")
        assert meta.version >= 1
    finally:
        worker.stop()
        learner.stop()

    for topic in ("page_updates", "model_updates"):  # what the worker wrote: registry framing
        assert all(m.value()[0] == 0 for m in read_topic(settings, specs[topic].name, 1))
    updates = read_topic(settings, specs["page_updates"].name, expect=1)
    assert updates, "no page update published"
    read = AvroDeserializer(client)
    decoded = [read(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
               for m in updates]
    assert all(m.value()[0] == 0 for m in updates)  # written in the registry's framing
    assert any(d["profile_id"] == "dana" for d in decoded)
    dead = read_topic(settings, specs["dead_letter"].name, expect=0, timeout_s=2)
    assert dead == []
