"""docker-compose.yml runs a schema registry that every homestream service uses: checked
from the file (no Docker engine answers here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from homestream.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_a_pinned_confluent_schema_registry_stores_its_schemas_in_the_broker(
        compose: dict[str, Any]) -> None:
    registry = compose["services"]["schema-registry"]
    image, _, tag = registry["image"].partition(":")
    assert image == "confluentinc/cp-schema-registry" and tag[:1].isdigit()  # not "latest"
    env = registry["environment"]
    kafka_env = compose["services"]["kafka"]["environment"]
    assert env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "PLAINTEXT://kafka:9092"
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    # a single broker cannot hold the three replicas the registry asks for by default
    assert int(env["SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR"]) <= int(
        kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"])
    assert registry["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert "8081" in " ".join(registry["healthcheck"]["test"])


def test_every_homestream_service_is_pointed_at_it_and_starts_after_it(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    registry = services["schema-registry"]
    listener = urlparse(registry["environment"]["SCHEMA_REGISTRY_LISTENERS"])
    homestream = {name: s for name, s in services.items()
                  if any(k.startswith("HOMESTREAM_") for k in (s.get("environment") or {}))}
    assert {"topics", "catalog", "worker", "learner", "server"} <= set(homestream)
    for name, service in homestream.items():
        url = urlparse(service["environment"]["HOMESTREAM_SCHEMA_REGISTRY_URL"])
        assert (url.hostname, url.port) == ("schema-registry", listener.port), name
    # `topics` waits for the registry; every other homestream service waits for `topics`
    assert services["topics"]["depends_on"]["schema-registry"] == {
        "condition": "service_healthy"}
    for name in set(homestream) - {"topics"}:
        assert "topics" in services[name]["depends_on"], name
    monkeypatch.setenv("HOMESTREAM_SCHEMA_REGISTRY_URL",
                       services["worker"]["environment"]["HOMESTREAM_SCHEMA_REGISTRY_URL"])
    assert load_settings().schema_registry_url == "http://schema-registry:8081"
