"""docker-compose.yml runs the same code as the local stack, only configured differently.

No Docker engine answers on this machine, so the stack itself is not started here; these
checks catch what breaks a compose file silently: a misspelled setting, a command that no
longer exists, a package missing from the image, a broker the host cannot reach.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from homestream.player.cli import build_parser
from homestream.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_broker_is_apache_kafka_in_kraft_mode_reachable_from_the_host(
        compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert "zookeeper" not in compose["services"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from the registry
    advertised = {}
    for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, host, port = re.fullmatch(r"(\w+)://([^:]*):(\d+)", listener).groups()
        advertised[name] = (host, port)
    host, port = advertised["EXTERNAL"]
    assert host == "localhost" and f"{port}:{port}" in kafka["ports"]
    assert advertised["PLAINTEXT"] == ("kafka", "9092")


def test_worker_server_and_topics_run_the_local_stacks_entrypoints(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    demo = (ROOT / "homestream" / "stack" / "demo.py").read_text()
    for name, module in (("worker", "streams.worker"), ("server", "serving")):
        assert services[name]["command"] == ["python", "-m", module]
        assert f'_start("{module}"' in demo  # the same module `make demo` starts
    cmd = services["topics"]["command"]
    assert cmd[0] == "homestream"
    args = build_parser().parse_args(cmd[1:])
    assert args.handler.__name__ == "cmd_topics_create"


def test_every_homestream_variable_is_a_setting_and_loads(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("worker", "learner", "server", "topics"):
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert env["HOMESTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
        for key, value in env.items():
            assert key.startswith("HOMESTREAM_"), key
            assert key.removeprefix("HOMESTREAM_").lower() in Settings.model_fields, key
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.partitions == 12 and settings.redis_url == "redis://redis:6379/0"
        for key in env:
            monkeypatch.delenv(key)


def test_the_image_holds_every_package(compose: dict[str, Any]) -> None:
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in include} <= copied
    assert all(s.get("build") == "." for n, s in compose["services"].items()
               if n in ("worker", "learner", "server", "topics"))


def test_the_server_runs_several_processes_and_docker_waits_for_their_drain(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    server = compose["services"]["server"]
    for key, value in server["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.http_workers >= 2
    grace = server["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > settings.http_shutdown_s


def test_workers_learn_through_one_learner_service(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled workers (``--scale worker=3``) send their learning to the learner service, so
    every worker ranks with the models learned from all partitions."""
    import importlib

    learner = compose["services"]["learner"]
    assert learner["command"] == ["python", "-m", "streams.learner"]
    assert callable(importlib.import_module("streams.learner").main)
    for name in ("worker", "learner"):
        for key, value in compose["services"][name]["environment"].items():
            monkeypatch.setenv(key, str(value))
        assert load_settings().learner_mode == "topic", name
