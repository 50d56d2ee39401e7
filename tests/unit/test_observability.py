"""docker-compose's Prometheus and Grafana, checked without a Docker engine: the scrape
targets are the ports the worker and the server serve /metrics on, Grafana provisions the
dashboard in the repository, and every metric the dashboard queries is one the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.metrics import metric_names as server_metric_names
from streams.metrics import metric_names as worker_metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "homestream.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "le", "inf", "nan"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def mounted(service: dict[str, Any], target: str) -> Path:
    """The repository path ``service`` mounts at ``target``."""
    for volume in service["volumes"]:
        source, dest = volume.split(":")[:2]
        if dest == target:
            return ROOT / source
    raise AssertionError(f"nothing mounted at {target}")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions
    (followed by ``(``), label names or values (inside ``{}``, ``by (...)``), durations or
    keywords.

    >>> sorted(metric_names_in('sum by (le, route) (rate(a_bucket{s=~"5.."}[5m])) / b'))
    ['a_bucket', 'b']
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end():].lstrip()
        if not rest.startswith("(") and m.group().lower() not in PROMQL_WORDS:
            names.add(m.group())
    return names


def test_prometheus_scrapes_the_worker_replicas_and_the_server_on_their_metrics_ports(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = yaml.safe_load(mounted(services["prometheus"],
                                    "/etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["homestream-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"]  # one address per replica of the service
    assert str(worker_sd["port"]) == services["worker"]["environment"][
        "HOMESTREAM_WORKER_METRICS_PORT"]
    server_env = services["server"]["environment"]
    assert jobs["homestream-server"]["static_configs"][0]["targets"] == [
        f"server:{server_env['HOMESTREAM_HTTP_PORT']}"]
    assert jobs["homestream-server"].get("metrics_path", "/metrics") == "/metrics"
    assert {"worker", "server"} <= set(services["prometheus"]["depends_on"])
    assert "prometheus" in services["grafana"]["depends_on"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(
        compose: dict[str, Any], dashboard: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = mounted(grafana, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    source = datasources["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "homestream.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert mounted(grafana, folder) / DASHBOARD.name == DASHBOARD
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}


def test_every_metric_the_dashboard_queries_is_exported(dashboard: dict[str, Any]) -> None:
    exported = worker_metric_names() | server_metric_names()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = metric_names_in(target["expr"])
            assert names, f"no metric in {panel['title']!r}: {target['expr']}"
            queried |= names
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"


def test_the_dashboard_shows_what_operators_ask_for(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in ("homestream_worker_events_total", "homestream_worker_consumer_lag_messages",
                   "homestream_worker_dead_letters_total",
                   "homestream_http_request_duration_seconds_bucket"):
        assert needed in exprs
    for q in ("0.5", "0.99"):  # freshness p50 and p99
        assert (f"histogram_quantile({q}, sum by (le) (rate("
                "homestream_worker_event_to_page_seconds_bucket") in exprs
    assert 'status=~"5.."' in exprs  # the error rate


def test_metric_names_follow_prometheus_conventions() -> None:
    for name in worker_metric_names() | server_metric_names():
        assert re.fullmatch(r"homestream_[a-z_]+", name), name
        base = re.sub(r"_(total|created|bucket|sum|count)$", "", name)
        if name.endswith(("_bucket", "_sum", "_count")):  # histograms carry their unit
            assert base.endswith("_seconds"), name
