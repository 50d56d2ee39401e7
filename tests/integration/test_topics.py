"""Start-up topic creation (``topics.registry.ensure_topics``) against a real broker."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from homestream.settings import Settings
from topics.registry import ensure_topics, topic_specs

COMPACTED = ("catalog", "profiles")


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers})


def partition_counts(settings: Settings) -> dict[str, int]:
    """Partitions per topic of this test (its prefix), from the broker's metadata."""
    topics = admin(settings).list_topics(timeout=15).topics
    return {name: len(meta.partitions) for name, meta in topics.items()
            if name.startswith(settings.topic_prefix)}


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """The topic's configuration as the broker reports it (DescribeConfigs)."""
    client = admin(settings)  # kept referenced until the result is in
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = client.describe_configs([resource])[resource].result(timeout=15)
    return {key: entry.value for key, entry in entries.items()}


def test_ensure_topics_creates_the_registry_and_a_second_call_creates_nothing(
        settings: Settings) -> None:
    specs = topic_specs(settings)
    assert sorted(ensure_topics(settings)) == sorted(s.name for s in specs.values())
    assert ensure_topics(settings) == []  # idempotent: nothing created, no error
    assert partition_counts(settings) == {s.name: s.partitions for s in specs.values()}
    assert specs["player_events"].partitions == settings.partitions == 4
    assert specs["catalog"].partitions == 1


def test_created_topics_carry_the_registry_config(settings: Settings) -> None:
    """Tansu answers DescribeConfigs with the configs given at creation (reporting them with
    source DEFAULT_CONFIG); a Kafka broker reports them among all its topic configs."""
    ensure_topics(settings)
    for role, spec in topic_specs(settings).items():
        config = topic_config(settings, spec.name)
        for key, value in spec.config.items():
            assert config.get(key) == value, (spec.name, key, config)
        if role in COMPACTED:
            assert config["cleanup.policy"] == "compact"
        else:
            assert config["cleanup.policy"] == "delete"
            assert config["retention.ms"] == str(settings.event_retention_ms)


def test_concurrent_start_ups_both_succeed_and_create_each_topic_once(
        settings: Settings) -> None:
    """Worker and server starting together: one creates a topic, the other finds it made."""
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def start_up() -> None:
        barrier.wait()
        try:
            results.append(ensure_topics(settings))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start_up) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    created = [name for r in results for name in r]
    assert len(created) == len(set(created))  # no topic reported created twice
    specs = topic_specs(settings)
    assert partition_counts(settings) == {s.name: s.partitions for s in specs.values()}


def test_topics_created_between_listing_and_creating_are_not_an_error(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's TOPIC_ALREADY_EXISTS answer is taken as success (the race above, made
    certain: the metadata ensure_topics lists is stale and shows no topics)."""
    real_list_topics = AdminClient.list_topics

    def stale_list_topics(self: AdminClient, *args: Any, **kwargs: Any) -> Any:
        metadata = real_list_topics(self, *args, **kwargs)
        metadata.topics = {}
        return metadata

    assert len(ensure_topics(settings)) == len(topic_specs(settings))
    monkeypatch.setattr(AdminClient, "list_topics", stale_list_topics)
    assert ensure_topics(settings) == []


def test_an_existing_topic_is_left_alone_and_a_partition_mismatch_is_logged(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    events = topic_specs(settings)["player_events"].name
    client = admin(settings)
    (fut,) = client.create_topics(
        [NewTopic(events, num_partitions=2, replication_factor=1)]).values()
    fut.result(timeout=15)
    with caplog.at_level(logging.WARNING, logger="topics.registry"):
        created = ensure_topics(settings)
    assert events not in created and len(created) == len(topic_specs(settings)) - 1
    assert partition_counts(settings)[events] == 2  # not changed
    assert f"topic {events} has 2 partitions, registry says 4" in caplog.text
