"""The server's Prometheus metrics and ``GET /metrics``.

The server runs ``HOMESTREAM_HTTP_WORKERS`` processes on one port. With more than one,
:func:`multiprocess_dir` (in the parent) gives them a fresh ``PROMETHEUS_MULTIPROC_DIR``
before they start, each process writes its values there (``prometheus_client``'s
multiprocess mode), and ``/metrics``, answered by whichever process the kernel picked, adds
up all of them. The directory is removed when the server exits. With one process the
metrics live in the process's own registry.

Labels are bounded: ``route`` is the route's path template (``/v1/homepage/{profile_id}``,
``unmatched`` for a path no route has), ``method`` a known HTTP method or ``other``,
``status`` the response code, ``source`` one of :data:`PAGE_SOURCES`, ``policy`` the
configured artwork policy's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from homestream.metrics import exposed_names
from serving.http import IMPRESSIONS, Handler
from serving.impressions import ImpressionLogger

#: Where ``prometheus_client`` keeps the values of several processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Request latency buckets: sub-millisecond cache hits to a slow store.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0)
#: The ``source`` label of a served page (``default-<country>`` is counted as ``default``).
PAGE_SOURCES = ("personal", "default", "latest", "empty")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds between two updates of the impression gauges and counters of a process.
SAMPLE_INTERVAL_S = 1.0

REQUEST_DURATION = Histogram("homestream_http_request_duration_seconds",
                             "Time to answer a request, by route template, method and status",
                             ["route", "method", "status"], buckets=LATENCY_BUCKETS_S)
PAGES_SERVED = Counter("homestream_serving_pages_served",
                       "Home pages served, by where the page came from", ["source"])
ARTWORK_DECISIONS = Counter("homestream_serving_artwork_decisions",
                            "Artwork choices the policy drew for served titles (sticky "
                            "choices reused are not counted)", ["policy"])
IMPRESSION_QUEUE = Gauge("homestream_serving_impression_queue_pages",
                         "Served pages waiting to be logged as impressions",
                         multiprocess_mode="livesum")
IMPRESSIONS_IN_FLIGHT = Gauge("homestream_serving_impressions_in_flight",
                              "Impression messages produced, not yet acknowledged by the broker",
                              multiprocess_mode="livesum")
IMPRESSIONS_DELIVERED = Counter("homestream_serving_impressions_delivered",
                                "Impression events the broker acknowledged")
IMPRESSIONS_FAILED = Counter("homestream_serving_impressions_failed",
                             "Impression events that could not be delivered")
IMPRESSIONS_DROPPED = Counter("homestream_serving_impressions_dropped",
                              "Impression events dropped because the buffer for an absent "
                              "broker was full")


@functools.lru_cache(maxsize=256)
def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set (the labels are bounded;
    ``labels()`` takes a lock and builds a key on every call: it was ~2% of a served page)."""
    return metric.labels(*labels)


def record_page(source: str, policy: str, artwork_decisions: int) -> None:
    """Count one served home page: its ``source`` (``personal``, ``default-<country>``,
    ``latest`` or ``empty``) and the artwork choices ``policy`` drew for it."""
    _child(PAGES_SERVED, "default" if source.startswith("default") else source).inc()
    if artwork_decisions:
        _child(ARTWORK_DECISIONS, policy).inc(artwork_decisions)


def route_of(request: web.Request) -> str:
    """The bounded ``route`` label: the matched route's path template."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe every request's latency by route template, method and status (outermost, so
    the status is the one the error middleware answered with)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        method = request.method if request.method in METHODS else "other"
        _child(REQUEST_DURATION, route_of(request), method, str(status)).observe(
            time.perf_counter() - started)


class ImpressionSampler:
    """Copies an :class:`ImpressionLogger`'s counters into the metrics: the gauges as they
    are, the delivered and failed counts as increments since the last sample."""

    def __init__(self, logger: ImpressionLogger) -> None:
        self.logger = logger
        self._delivered = 0
        self._failed = 0
        self._dropped = 0

    def sample(self) -> None:
        stats = self.logger.stats()
        IMPRESSION_QUEUE.set(stats["pages_queued"])
        IMPRESSIONS_IN_FLIGHT.set(stats["impressions_in_flight"])
        delivered, failed = stats["impressions_delivered"], stats["impressions_failed"]
        if delivered > self._delivered:
            IMPRESSIONS_DELIVERED.inc(delivered - self._delivered)
        if failed > self._failed:
            IMPRESSIONS_FAILED.inc(failed - self._failed)
        dropped = stats.get("impressions_dropped", 0)
        if dropped > self._dropped:
            IMPRESSIONS_DROPPED.inc(dropped - self._dropped)
        self._delivered, self._failed, self._dropped = delivered, failed, dropped

    async def run(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        """Sample every ``interval_s`` until cancelled (every process keeps its values
        current, whichever process answers the scrape)."""
        while True:
            self.sample()
            await asyncio.sleep(interval_s)


SAMPLER = web.AppKey("impression_sampler", ImpressionSampler)


def render() -> bytes:
    """The exposition text: every server process's values in multiprocess mode, else this
    process's registry. Reads files in multiprocess mode: call it off the event loop."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format (this process's impression values are
    sampled first)."""
    sampler = request.app.get(SAMPLER)
    if sampler is not None:
        sampler.sample()
    body = await asyncio.to_thread(render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: sample the app's impression logger every
    :data:`SAMPLE_INTERVAL_S` while the app runs (after the logger started)."""
    sampler = app[SAMPLER] = ImpressionSampler(app[IMPRESSIONS])
    task = asyncio.create_task(sampler.run(), name="metrics-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def multiprocess_dir(processes: int) -> Iterator[str | None]:
    """For a server of several ``processes``: a fresh directory in ``PROMETHEUS_MULTIPROC_DIR``
    for the children to inherit, removed on exit. One process, or a directory the
    environment already names (its owner empties it), is left alone."""
    if processes <= 1 or os.environ.get(MULTIPROC_ENV):
        yield os.environ.get(MULTIPROC_ENV)
        return
    path = tempfile.mkdtemp(prefix="homestream-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def metric_names() -> set[str]:
    """The sample names of every server metric (:func:`homestream.metrics.exposed_names`)."""
    collectors: list[Any] = [REQUEST_DURATION, PAGES_SERVED, ARTWORK_DECISIONS,
                             IMPRESSION_QUEUE, IMPRESSIONS_IN_FLIGHT, IMPRESSIONS_DELIVERED,
                             IMPRESSIONS_FAILED, IMPRESSIONS_DROPPED]
    return exposed_names(collectors)
