"""The streaming pipeline as a :class:`~evaluation.movielens.protocol.Recommender`.

Everything real: a Kafka-protocol broker and Redis (:func:`homestream.stack.local.local_stack`,
or any given by settings), a ``python -m streams.worker`` child process, the catalog
published to the catalog topic (:func:`homestream.player.simulator.publish_catalog`), and each
chunk's ratings sent as player events (:func:`~evaluation.movielens.data.to_events`) through
:class:`~homestream.player.producer.PlayerProducer`.

``learn(chunk)`` sends the chunk's events, flushes, then waits until the worker's counters
(``events_applied + duplicates + dead_letters``, the ``stats`` hash) account for every event
sent so far *and* every member of the chunk has a page whose ``as_of_event_ts_ms`` reached
their last event of the chunk (the worker bumps the counters just before it writes pages).
``prepare(members, now_ts)`` starts each scored member's visit as the player does when the
app opens: a :class:`~topics.models.SessionStart` (:func:`~evaluation.movielens.data.
session_start`, stamped just before the visit's page view and plays, which are not sent
yet), then waits until the worker rendered those members' pages from it (their
``generated_at_ms`` is after the session starts were sent). ``page(member)`` reads the member's
materialized page from Redis (``features.keys.page_key``) as the page they would be served
now; a member without one gets the default page (``default_page_key(prefix, "ALL")``), as
the server does.

With ``session_starts=False`` (a diagnostic: how much do stale pages cost?) no session start
is sent: a member's page is the one the worker wrote after their previous events, however
long ago, as it was before players sent session starts.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import redis

from evaluation.movielens.data import Rating, session_start, to_events, view_impressions
from evaluation.movielens.protocol import InteractionLike, Page
from features import keys
from features.keys import ALL_COUNTRIES
from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.process import Child, wait_for
from topics.models import Event, Title
from topics.registry import ensure_topics

#: Counters whose sum accounts for every event the worker consumed.
ACCOUNTED = ("events_applied", "duplicates", "dead_letters")


def pipeline_settings(bootstrap_servers: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for a replay: unique topic, key and group names; one partition (the worker
    then applies events in the order they were produced; with several, how partitions
    interleave in a micro-batch varies from run to run); page updates not published
    downstream (nobody reads them here; pages are the same either way)."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "redis_url": redis_url,
        "topic_prefix": f"ml{tag}.",
        "key_prefix": f"ml{tag}:",
        "app_id": f"ml-replay-{tag}",
        "partitions": 1,
        "worker_data_dir": str(Path(tempfile.gettempdir()) / f"homestream-ml-{tag}"),
        "publish_page_updates": False,
        "batch_within_s": 0.1,  # the micro-batch window the reported numbers were made with
    }
    values.update(overrides)
    return Settings(**values)


def start_worker(settings: Settings) -> Child:
    """A ``python -m streams.worker`` child process configured by ``settings``."""
    return Child.module("streams.worker", settings.to_env(), name="ml-worker")


class PipelineRecommender:
    """The pipeline under the page protocol (see the module docstring).

    Parameters
    ----------
    settings
        Where the broker and Redis are, and the names to use (see
        :func:`pipeline_settings`).
    titles
        The catalog to publish before the first chunk.
    events_of
        Rating to player events (default :func:`~evaluation.movielens.data.to_events`).
    timeout_s
        Longest wait for the worker to catch up with one chunk.
    session_starts
        Start each scored member's visit with a session start (see the module docstring).
    log_impressions
        Log each page view as impressions
        (:func:`~evaluation.movielens.data.view_impressions`), sent before the next chunk's
        events, as the server logs the pages it serves.
    """

    name = "pipeline"

    def __init__(self, settings: Settings, titles: Sequence[Title], *,
                 events_of: Callable[[Rating], list[Event]] = to_events,
                 timeout_s: float = 120.0, session_starts: bool = True,
                 log_impressions: bool = True) -> None:
        self.session_starts = session_starts
        self.log_impressions = log_impressions
        self.impressions_sent = 0
        self._pending: list[Event] = []
        if not session_starts:
            self.name = "pipeline-stale"
        #: Session starts sent (one per scored page view).
        self.session_starts_sent = 0
        self.settings = settings
        self.titles = list(titles)
        self.events_of = events_of
        self.timeout_s = timeout_s
        self.sent = 0
        self.default_pages_served = 0
        self.wait_seconds = 0.0
        self.send_seconds = 0.0
        self._redis = redis.Redis.from_url(settings.redis_url)
        self._worker: Child | None = None
        self._producer: PlayerProducer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> PipelineRecommender:
        """Create the topics, start the worker, publish the catalog and wait until the worker
        stored it."""
        ensure_topics(self.settings)
        self._worker = start_worker(self.settings)
        publish_catalog(self.settings, self.titles)
        catalog = keys.catalog_key(self.settings.key_prefix)
        self._wait(lambda: self._redis.hlen(catalog) >= len(self.titles), timeout_s,
                   f"{len(self.titles)} catalog titles in Redis")
        self._producer = PlayerProducer(self.settings, max_batch_events=500)
        return self

    def close(self) -> None:
        try:
            if self._producer is not None:
                self._producer.close()
        finally:
            self._producer = None
            if self._worker is not None:
                self._worker.stop()
            self._redis.close()

    def __enter__(self) -> PipelineRecommender:
        try:
            return self.start()
        except BaseException:
            self.close()  # do not leave a worker behind
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the Recommender protocol ---------------------------------------------------------
    def page(self, member: str, now_ts: int) -> Page:
        prefix = self.settings.key_prefix
        raw = self._redis.get(keys.page_key(prefix, member))
        if raw is None:
            raw = self._redis.get(keys.default_page_key(prefix, ALL_COUNTRIES))
            self.default_pages_served += 1
        if raw is None:
            return Page([], kinds=[])
        page = orjson.loads(raw)
        if self.log_impressions:
            # the page view is logged as the server logs served pages; sent with the next chunk
            self._pending.extend(view_impressions(page, member, now_ts))
        rows = page.get("rows", [])
        return Page([[str(i["title_id"]) for i in r.get("items", ())] for r in rows],
                    kinds=[str(r.get("kind", "")) for r in rows])

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        if self._producer is None:
            raise RuntimeError("PipelineRecommender is not started")
        t0 = time.perf_counter()
        last_ms: dict[str, int] = {}
        n = len(self._pending)
        for ev in self._pending:
            self._producer.send(ev)
        self.impressions_sent += n
        self._pending = []
        for r in chunk:
            events = self.events_of(r)  # type: ignore[arg-type]
            for ev in events:
                self._producer.send(ev)
            n += len(events)
            last_ms[r.user] = max(last_ms.get(r.user, 0), *(e.event_ts_ms for e in events))
        self._producer.flush()
        self.sent += n
        t1 = time.perf_counter()
        self.send_seconds += t1 - t0
        self._wait(lambda: self.accounted() >= self.sent, self.timeout_s,
                   f"the worker to account for {self.sent} events")
        members = list(last_ms)
        page_keys = [keys.page_key(self.settings.key_prefix, m) for m in members]

        def pages_current() -> bool:
            for m, raw in zip(members, self._redis.mget(page_keys), strict=True):
                if raw is None or orjson.loads(raw).get("as_of_event_ts_ms", 0) < last_ms[m]:
                    return False
            return True

        self._wait(pages_current, self.timeout_s, f"pages of {len(members)} members")
        self.wait_seconds += time.perf_counter() - t1

    def prepare(self, members: Sequence[str], now_ts: int) -> None:
        """With ``session_starts``: each member's visit starts (the app opens) and the worker
        renders their pages with what it learned so far; returns once it wrote them."""
        if not self.session_starts or self._producer is None or not members:
            return
        t0 = time.perf_counter()
        since_ms = int(time.time() * 1000)
        events = [session_start(m, now_ts) for m in members]
        for ev in events:
            self._producer.send(ev)
        self._producer.flush()
        self.sent += len(events)
        self.session_starts_sent += len(events)
        self._wait(lambda: self.accounted() >= self.sent, self.timeout_s,
                   f"the worker to account for {self.sent} events")
        page_keys = [keys.page_key(self.settings.key_prefix, e.profile_id) for e in events]

        def rendered() -> bool:  # written (worker's wall clock) since the session starts
            return all(raw is not None and orjson.loads(raw).get("generated_at_ms", 0)
                       >= since_ms for raw in self._redis.mget(page_keys))

        self._wait(rendered, self.timeout_s, f"{len(events)} pages rendered at session start")
        self.wait_seconds += time.perf_counter() - t0

    # -- helpers --------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """The worker's ``stats`` hash."""
        raw = self._redis.hgetall(keys.stats_key(self.settings.key_prefix))
        return {k.decode(): int(v) for k, v in raw.items()}

    def accounted(self) -> int:
        c = self.counters()
        return sum(c.get(k, 0) for k in ACCOUNTED)

    def _wait(self, predicate: Callable[[], object], timeout_s: float, what: str) -> None:
        wait_for(predicate, timeout_s, what, interval_s=0.02,
                 watch=() if self._worker is None else (self._worker,),
                 detail=lambda: f"counters {self.counters()}")


@contextmanager
def local_pipeline(titles: Sequence[Title], *, session_starts: bool = True,
                   **overrides: Any) -> Iterator[PipelineRecommender]:
    """A :class:`PipelineRecommender` on a throwaway local broker and Redis; ``overrides``
    go to :func:`pipeline_settings`."""
    from homestream.stack.local import local_stack

    with local_stack() as stack:
        settings = pipeline_settings(stack.bootstrap_servers, stack.redis_url, **overrides)
        with PipelineRecommender(settings, titles, session_starts=session_starts) as rec:
            yield rec


__all__ = ["PipelineRecommender", "local_pipeline", "pipeline_settings", "start_worker"]
