"""Helpers for integration tests: worker processes, waiting, reading topics and Redis."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Callable

import orjson
import redis

from features import keys
from homestream.settings import Settings
from homestream.stack.process import Child, wait_for
from topics.models import Artwork, Title
from topics.reader import TopicReadTimeout, read_topics


def wait_until(predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.02,
               what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``
    (:func:`homestream.stack.process.wait_for`)."""
    return wait_for(predicate, timeout_s, what, interval_s=interval_s)


class WorkerProcess(Child):
    """A ``python -m streams.worker`` child process configured by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__([sys.executable, "-m", "streams.worker"], name="worker",
                         env=settings.to_env())
        self.settings = settings

    def tail(self, n: int = 40) -> str:
        return super().tail(n)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def counters(settings: Settings) -> dict[str, int]:
    raw = redis_client(settings).hgetall(keys.stats_key(settings.key_prefix))
    return {k.decode(): int(v) for k, v in raw.items()}


def page(settings: Settings, profile_id: str) -> dict | None:
    raw = redis_client(settings).get(keys.page_key(settings.key_prefix, profile_id))
    return None if raw is None else orjson.loads(raw)


def profile_state(settings: Settings, profile_id: str) -> dict | None:
    raw = redis_client(settings).get(keys.profile_key(settings.key_prefix, profile_id))
    return None if raw is None else orjson.loads(raw)


def wait_for_catalog(settings: Settings, n_titles: int, timeout_s: float = 30.0) -> None:
    """Block until the worker has stored ``n_titles`` catalog records (so it is running)."""
    r = redis_client(settings)
    wait_until(lambda: r.hlen(keys.catalog_key(settings.key_prefix)) >= n_titles, timeout_s,
               what=f"{n_titles} catalog titles in Redis")


def make_titles(n: int, genres: tuple[str, ...] = ("Comedy", "Horror", "Drama")) -> list[Title]:
    """Small deterministic catalog for tests."""
    return [
        Title(title_id=f"t{i}", name=f"Title {i}", genres=[genres[i % len(genres)]],
              maturity_rating="PG", release_date=dt.date(2024, 1, 1) + dt.timedelta(days=i),
              duration_s=1200.0,
              artwork=[Artwork(artwork_id=f"t{i}-art0", url=f"https://img.test/t{i}/0",
                               tags=[genres[i % len(genres)].lower()])])
        for i in range(n)
    ]


def read_topic(settings: Settings, topic: str, expect: int, timeout_s: float = 20.0) -> list:
    """All messages of ``topic`` from the beginning, waiting for at least ``expect`` (returns
    what arrived when ``timeout_s`` runs out, for the test to assert on)."""
    out: list = []
    with contextlib.suppress(TopicReadTimeout):
        for msg in read_topics(settings.bootstrap_servers, [topic], timeout_s=timeout_s,
                               min_messages=expect):
            out.append(msg)
    return out
