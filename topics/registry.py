"""The topic registry: every topic's name, partitions, key, value schema and config in one place.

>>> from homestream.settings import Settings
>>> specs = topic_specs(Settings(partitions=3))
>>> specs["catalog"].config["cleanup.policy"], specs["player_events"].partitions
('compact', 3)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from homestream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """What a topic is for and how it is created."""

    name: str
    partitions: int
    key: str
    value_schema: str
    doc: str
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> dict[str, TopicSpec]:
    """All topics of the pipeline, by role.

    Event topics are keyed by profile id and co-partitioned (same partition count), so one
    worker owns all of a profile's events. The catalog is compacted and keyed by title id.
    """
    retention = {"cleanup.policy": "delete", "retention.ms": str(settings.event_retention_ms)}
    n = settings.partitions
    return {
        "player_events": TopicSpec(
            settings.topic("player-events"), n, "profile_id",
            "homestream.Play | Impression | Scroll | Click | Feedback | Search | EventBatch",
            "Everything players report: plays, impressions, scrolls, clicks, feedback, searches.",
            retention,
        ),
        "impressions": TopicSpec(
            settings.topic("impressions"), n, "profile_id", "homestream.EventBatch",
            "Pages the serving layer returned, logged as impressions (closes the loop).",
            retention,
        ),
        "catalog": TopicSpec(
            settings.topic("catalog"), 1, "title_id", "homestream.Title",
            "Title catalog records; compacted, latest record per title wins.",
            {"cleanup.policy": "compact"},
        ),
        "profiles": TopicSpec(
            settings.topic("profiles"), 1, "profile_id", "homestream.Profile",
            "Profile settings (kids, rating limit); compacted, latest record wins.",
            {"cleanup.policy": "compact"},
        ),
        "page_updates": TopicSpec(
            settings.topic("homepage-updates"), n, "profile_id", "homestream.PageUpdate",
            "Every materialized page that changed, for downstream consumers.",
            retention,
        ),
        "model_updates": TopicSpec(
            settings.topic("model-updates"), 1, "none", "homestream.ModelUpdate",
            "What each worker batch teaches the shared models, for the single learner "
            "(one partition: one total order, one learner).",
            retention,
        ),
        "dead_letter": TopicSpec(
            settings.topic("dead-letter"), 1, "original key", "homestream.DeadLetter",
            "Inputs the worker could not use, with the reason and the original bytes.",
            retention,
        ),
    }


def event_topics(settings: Settings) -> list[str]:
    """The topics the events agent consumes."""
    specs = topic_specs(settings)
    return [specs["player_events"].name, specs["impressions"].name]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every registry topic that does not exist yet; return the names created.

    Idempotent: existing topics are left as they are (a partition-count mismatch is logged,
    since changing it would move profiles between workers).
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    from homestream.kafka_config import librdkafka_config

    admin = AdminClient(librdkafka_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = list(topic_specs(settings).values())
    for spec in wanted:
        meta = existing.get(spec.name)
        if meta is not None and len(meta.partitions) != spec.partitions:
            log.warning(
                "topic %s has %d partitions, registry says %d",
                spec.name, len(meta.partitions), spec.partitions,
            )
    new = [
        NewTopic(s.name, num_partitions=s.partitions,
                 replication_factor=settings.replication_factor, config=s.config)
        for s in wanted if s.name not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except Exception as exc:  # KafkaException: only "already exists" is fine
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                continue
            raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    return created
