"""Prometheus metrics over the real stack: traffic through the broker, a worker process and a
server of two processes; both ``/metrics`` endpoints read with the library's parser."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import urllib3
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.local import ModuleProcess, free_port, wait_for_port
from tests.integration.helpers import (
    WorkerProcess,
    make_titles,
    page,
    wait_for_catalog,
    wait_until,
)
from topics.models import Play
from topics.registry import ensure_topics, topic_specs

HOME_ROUTE = "/v1/homepage/{profile_id}"


def scrape(http: urllib3.PoolManager, url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``url``'s exposition: ``(name, sorted labels) -> value``."""
    resp = http.request("GET", url, headers={"Connection": "close"}, retries=False)
    assert resp.status == 200, resp.data[:500]
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.data.decode())
            for s in fam.samples}


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == name and set(labels.items()) <= set(lab))


@contextmanager
def stack(settings: Settings) -> Iterator[tuple[str, str]]:
    """A worker with its metrics port and a two-process server; ``(server, worker metrics)``
    base URLs."""
    settings = settings.model_copy(update={"http_port": free_port(), "http_workers": 2,
                                           "worker_metrics_port": free_port()})
    ensure_topics(settings)
    publish_catalog(settings, make_titles(30))
    worker = WorkerProcess(settings)
    server = ModuleProcess("serving", settings.to_env(), log_prefix="server-")
    try:
        wait_for_catalog(settings, 30, timeout_s=60)
        wait_for_port(settings.http_port, 30, proc=server.proc)
        wait_for_port(settings.worker_metrics_port, 30, proc=worker.proc)
        yield (f"http://127.0.0.1:{settings.http_port}",
               f"http://127.0.0.1:{settings.worker_metrics_port}")
    finally:
        server.stop()
        worker.stop()


def play(profile: str, title: str) -> Play:
    return Play(event_id=uuid.uuid4().hex, profile_id=profile,
                event_ts_ms=int(time.time() * 1000), title_id=title, action="progress",
                position_s=600.0, duration_s=1200.0, country="US", device="tv")


@pytest.mark.timeout(180)
def test_worker_and_server_metrics_move_with_traffic(settings: Settings) -> None:
    http = urllib3.PoolManager()
    with stack(settings) as (server, worker):
        profiles = [f"m{i}" for i in range(5)]
        with PlayerProducer(settings) as producer:
            for i, p in enumerate(profiles):
                producer.send(play(p, f"t{i}"))
        raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
        raw.produce(topic_specs(settings)["player_events"].name, key=b"m0", value=b"not avro")
        raw.flush(10)
        for p in profiles:
            wait_until(lambda p=p: page(settings, p), 60, what=f"{p}'s page")

        # each request on its own connection, so the kernel spreads them over both processes
        n_pages = 40
        for i in range(n_pages):
            resp = http.request("GET", f"{server}/v1/homepage/{profiles[i % 5]}",
                                headers={"Connection": "close"}, retries=False)
            assert resp.status == 200
        for _ in range(3):
            assert http.request("GET", f"{server}/v1/homepage/bad%20id",
                                headers={"Connection": "close"}).status == 400
        assert http.request("GET", f"{server}/no/such/path/{uuid.uuid4().hex}",
                            headers={"Connection": "close"}).status == 404

        # the server: whichever process answers, the counts are those of both processes
        for _ in range(4):
            s = scrape(http, f"{server}/metrics")
            assert total(s, "homestream_http_request_duration_seconds_count",
                         route=HOME_ROUTE, method="GET", status="200") == n_pages
            assert total(s, "homestream_http_request_duration_seconds_count",
                         route=HOME_ROUTE, status="400") == 3
            assert total(s, "homestream_http_request_duration_seconds_count",
                         route="unmatched", status="404") == 1
        assert not any("m0" in str(labels) or "bad" in str(labels) for _, labels in s)
        s = wait_until(lambda: (x := scrape(http, f"{server}/metrics"))
                       and total(x, "homestream_serving_impressions_delivered_total") > 0
                       and x, 30, interval_s=0.5, what="impressions delivered in /metrics")
        assert total(s, "homestream_serving_impressions_failed_total") == 0
        assert ("homestream_serving_impression_queue_pages", ()) in s

        # the worker
        w = wait_until(lambda: (x := scrape(http, f"{worker}/metrics"))
                       and total(x, "homestream_worker_consumer_lag_messages") >= 0
                       and ("homestream_worker_consumer_lag_messages" in {k[0] for k in x})
                       and total(x, "homestream_worker_dead_letters_total") >= 1
                       and x, 30, interval_s=0.5, what="the worker's lag and dead letters")
        assert total(w, "homestream_worker_messages_total", topic="player_events") >= 6
        assert total(w, "homestream_worker_events_total", type="play") >= 5
        assert total(w, "homestream_worker_events_applied_total") >= 5
        assert total(w, "homestream_worker_dead_letters_total", reason="decode") == 1
        assert total(w, "homestream_worker_pages_rendered_total") >= 5
        assert total(w, "homestream_worker_event_to_page_seconds_count") >= 5
        assert total(w, "homestream_worker_batch_duration_seconds_count") >= 1
        assert {dict(lab).get("kind") for (n, lab) in w
                if n == "homestream_worker_learning_items_total"} \
            == {"ranking_label", "artwork_reward", "artwork_quality_play"}
        assert w[("homestream_worker_model_checkpoint_age_seconds", ())] > 0
        partitions = {dict(lab)["partition"] for (n, lab) in w
                      if n == "homestream_worker_consumer_lag_messages"}
        assert partitions <= {str(i) for i in range(settings.partitions)}

        # the home handler's own counts: pages by source, artwork choices drawn
        s = scrape(http, f"{server}/metrics")
        assert total(s, "homestream_serving_pages_served_total", source="personal") == n_pages
        assert total(s, "homestream_serving_pages_served_total") == n_pages
        assert total(s, "homestream_serving_artwork_decisions_total") > 0
