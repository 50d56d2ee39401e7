"""Registry framing against the library's own serializers: what :class:`RegistryCodec`
writes, ``confluent_kafka``'s ``AvroDeserializer`` reads, and what its ``AvroSerializer``
writes (current or older schema versions), the codec reads; single-object messages still
decode. The registry is :mod:`tests.schema_registry` over real HTTP on the loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from homestream.settings import Settings
from tests.schema_registry import SchemaRegistryServer
from topics.codec import AvroCodec, DecodeError
from topics.models import Play
from topics.registry_framing import (
    RegistryCodec,
    codec_for,
    registry_schema,
    subjects_by_schema,
)

SETTINGS = Settings(topic_prefix="hs.")
EVENTS = "hs.player-events"
PLAY = Play(event_id="e1", profile_id="p1", event_ts_ms=1_700_000_000_000, title_id="t1",
            action="progress", position_s=30.0, duration_s=600.0, country="US",
            app_version="9.1")


@pytest.fixture
def registry() -> Iterator[SchemaRegistryServer]:
    with SchemaRegistryServer() as server:
        yield server


def client(registry: SchemaRegistryServer) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def make_codec(registry: SchemaRegistryServer) -> RegistryCodec:
    return RegistryCodec(client(registry), subjects_by_schema(SETTINGS), "FULL_TRANSITIVE")


def play_schema(version: int) -> str:
    codec = AvroCodec()
    return registry_schema(codec.history["homestream.Play"][version - 1].schema)


def library_serializer(registry: SchemaRegistryServer, schema: str) -> AvroSerializer:
    from confluent_kafka.schema_registry import topic_record_subject_name_strategy

    return AvroSerializer(client(registry), schema, conf={
        "auto.register.schemas": True,
        "subject.name.strategy": topic_record_subject_name_strategy})


def ctx(topic: str = EVENTS) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_start_up_sets_compatibility_and_registers_every_subject(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    state = registry.state
    subjects = {s for ss in subjects_by_schema(SETTINGS).values() for s in ss}
    assert set(state.subjects) == subjects
    assert {state.config[s] for s in subjects} == {"FULL_TRANSITIVE"}
    assert "hs.homepage-updates-value" in subjects and f"{EVENTS}-homestream.Play" in subjects
    # one id per schema, shared by the two subjects of EventBatch
    batch = codec.ids["homestream.EventBatch"]
    assert state.subjects["hs.impressions-value"] == state.subjects[
        f"{EVENTS}-homestream.EventBatch"] == [batch]
    assert codec.encode_event(PLAY)[:5] == b"\x00" + codec.ids["homestream.Play"].to_bytes(
        4, "big")


def test_what_the_codec_writes_the_librarys_deserializer_reads(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    data = codec.encode_event(PLAY)
    record = AvroDeserializer(client(registry))(data, ctx())
    assert record == {**PLAY.model_dump(), "action": "progress"}
    page = {"profile_id": "p1", "personalized": True, "country": "US",
            "generated_at_ms": 5, "as_of_event_ts_ms": 4, "kids": False, "rows": []}
    update = AvroDeserializer(client(registry))(codec.encode_page_update(page),
                                                ctx("hs.homepage-updates"))
    assert update["profile_id"] == "p1" and update["rows"] == []


def test_what_the_librarys_serializer_writes_the_codec_reads(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    data = library_serializer(registry, play_schema(2))(PLAY.model_dump(), ctx())
    assert data[0] == 0 and codec.decode_events(data) == [PLAY]


def test_a_player_on_the_previous_version_is_resolved_into_the_current_one(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    old = {k: v for k, v in PLAY.model_dump().items() if k != "app_version"}
    data = library_serializer(registry, play_schema(1))(old, ctx())
    v1_id = int.from_bytes(data[1:5], "big")
    assert v1_id != codec.ids["homestream.Play"]
    assert registry.state.subjects[f"{EVENTS}-homestream.Play"] == [
        codec.ids["homestream.Play"], v1_id]  # v1 accepted: FULL_TRANSITIVE compatible
    # registered after the codec started: fetched off the event loop by prepare()
    asyncio.run(codec.prepare([data]))
    [event] = codec.decode_events(data)
    assert event == PLAY.model_copy(update={"app_version": ""})  # the v2 default


def test_an_id_met_first_in_decode_is_refused_then_fetched_in_the_background(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    old = {k: v for k, v in PLAY.model_dump().items() if k != "app_version"}
    data = library_serializer(registry, play_schema(1))(old, ctx())
    with pytest.raises(DecodeError, match="is not known yet"):
        codec.decode_events(data)
    deadline = time.monotonic() + 5
    while codec.unknown_ids([data]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert codec.decode_events(data)[0].event_id == "e1"


def test_versions_registered_before_start_up_need_no_request(
        registry: SchemaRegistryServer) -> None:
    old = {k: v for k, v in PLAY.model_dump().items() if k != "app_version"}
    first = make_codec(registry)  # registers the subjects at FULL_TRANSITIVE
    data = library_serializer(registry, play_schema(1))(old, ctx())
    assert first.unknown_ids([data])
    second = make_codec(registry)  # a process started later knows it from the start
    assert not second.unknown_ids([data]) and second.decode_events(data)[0].app_version == ""


def test_single_object_messages_still_decode_during_a_migration(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    plain = AvroCodec().encode_event(PLAY)
    assert plain[:2] == b"\xc3\x01" and codec.decode_events(plain) == [PLAY]


def test_a_schema_the_compatibility_level_refuses_stops_start_up(
        registry: SchemaRegistryServer) -> None:
    clashing = json.loads(play_schema(2))
    clashing["fields"] = [dict(f, type="long") if f["name"] == "title_id" else f
                          for f in clashing["fields"]]
    subject = f"{EVENTS}-homestream.Play"
    registry.state.config[subject] = "FULL_TRANSITIVE"
    registry.state.register(subject, json.dumps(clashing))
    with pytest.raises(RuntimeError, match=r"refused homestream.Play under subject "
                                           r"'hs.player-events-homestream.Play'.*title_id"):
        make_codec(registry)


def test_a_foreign_or_unknown_schema_id_is_a_decode_error(
        registry: SchemaRegistryServer) -> None:
    codec = make_codec(registry)
    other = AvroSerializer(client(registry), json.dumps(
        {"type": "record", "name": "other.Thing", "fields": [{"name": "x", "type": "int"}]}),
        conf={"auto.register.schemas": True})
    data = other({"x": 1}, ctx("elsewhere"))
    codec.fetch(codec.unknown_ids([data]))
    with pytest.raises(DecodeError, match=r"is 'other\.Thing', not a homestream schema"):
        codec.decode(data)
    assert not codec.unknown_ids([data])  # not asked for again
    unregistered = b"\x00" + (999).to_bytes(4, "big") + b"\x02"
    with pytest.raises(DecodeError, match="schema id 999 is not known yet"):
        codec.decode(unregistered)
    with pytest.raises(DecodeError, match="has no schema id"):
        codec.decode(b"\x00\x00")


def test_without_a_registry_url_the_single_object_codec_is_used() -> None:
    codec = codec_for(Settings())
    assert not isinstance(codec, RegistryCodec)
    assert codec.encode_event(PLAY)[:2] == b"\xc3\x01"


def test_codec_for_builds_one_registry_codec_per_registry(
        registry: SchemaRegistryServer) -> None:
    settings = Settings(topic_prefix="hs.", schema_registry_url=registry.url,
                        schema_registry_compatibility="BACKWARD")
    codec = codec_for(settings)
    assert isinstance(codec, RegistryCodec) and codec_for(settings) is codec
    assert registry.state.config[f"{EVENTS}-homestream.Play"] == "BACKWARD"


def test_the_player_client_frames_for_the_registry_its_settings_name(
        registry: SchemaRegistryServer) -> None:
    from homestream.player.producer import PlayerProducer

    settings = Settings(topic_prefix="hs.", schema_registry_url=registry.url)
    producer = PlayerProducer(settings)
    try:
        assert isinstance(producer.codec, RegistryCodec)
        assert producer.codec.encode_event(PLAY)[0] == 0
    finally:
        producer.close(timeout_s=1.0)
    plain = PlayerProducer(Settings())
    try:
        assert not isinstance(plain.codec, RegistryCodec)
    finally:
        plain.close(timeout_s=1.0)


def test_a_registry_that_does_not_answer_stops_start_up_naming_the_setting() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(schema_registry_url=f"http://127.0.0.1:{port}",
                        schema_registry_timeout_s=2.0)
    with pytest.raises(RuntimeError, match=rf"HOMESTREAM_SCHEMA_REGISTRY_URL=http://127.0.0.1:"
                                           rf"{port}: the schema registry did not answer"):
        codec_for(settings)


async def test_the_worker_fetches_a_new_schema_id_before_decoding_its_batch(
        registry: SchemaRegistryServer) -> None:
    from features.store import InMemoryStore
    from streams.decode import MemoryDeadLetters, RawMessage
    from streams.processor import EventProcessor

    codec = await asyncio.to_thread(make_codec, registry)
    old = {k: v for k, v in PLAY.model_dump().items() if k != "app_version"}
    data = library_serializer(registry, play_schema(1))(old, ctx())  # registered after start
    assert codec.unknown_ids([data])
    proc = EventProcessor(Settings(), InMemoryStore(), MemoryDeadLetters(), codec=codec,
                          clock=lambda: PLAY.event_ts_ms / 1000)
    report = await proc.process([RawMessage(EVENTS, 0, 0, b"p1", data)])
    assert (report.events, report.dead_letters) == (1, 0)
