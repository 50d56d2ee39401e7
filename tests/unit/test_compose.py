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


#: Services that run once and exit (others depend on them completing, not on their health).
ONE_SHOT = {"topics", "catalog"}
#: Readiness paths of the pipeline's own services and the setting that holds each one's port.
READINESS = {"worker": ("/ready", "worker_web_port"), "learner": ("/ready", "learner_web_port"),
             "server": ("/readyz", "http_port")}


def test_every_long_running_service_has_a_healthcheck_and_one_shots_are_awaited(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert "restart" not in service and "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        assert check.get("interval") and check.get("retries"), name
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            want = ("service_completed_successfully" if dep in ONE_SHOT
                    else "service_healthy")
            assert cond == {"condition": want}, f"{name} -> {dep}"


def test_the_pipelines_healthchecks_probe_the_readiness_their_settings_serve(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from homestream.probe import main as probe_main

    assert callable(probe_main)
    for name, (path, port_setting) in READINESS.items():
        service = compose["services"][name]
        cmd = service["healthcheck"]["test"]
        assert cmd[:4] == ["CMD", "python", "-m", "homestream.probe"], name
        importlib.import_module(cmd[3])
        url = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\w+)", cmd[4])
        assert url, cmd
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        settings = load_settings()
        assert (int(url.group(1)), url.group(2)) == (getattr(settings, port_setting), path), name
        for key in service["environment"]:
            monkeypatch.delenv(key)


def test_the_probe_is_healthy_only_on_a_2xx_answer() -> None:
    import http.server
    import threading

    from homestream.probe import main as probe_main
    from homestream.stack.process import free_port

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/ready" else 503
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"failed": ["redis"]}' if status == 503 else b"{}")

        def log_message(self, *args: Any) -> None:
            pass  # quiet: no line per probe request in the test's output

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert probe_main([f"{base}/ready"]) == 0
        assert probe_main([f"{base}/not-ready"]) == 1
        assert probe_main([f"http://127.0.0.1:{free_port()}/ready", "1"]) == 1
        assert probe_main([]) == 2
    finally:
        server.shutdown()
