"""The bench's state reset between drain runs, on a real Redis."""

from __future__ import annotations

import redis

from bench.run import redis_commands, reset_pipeline_state
from features.keys import (
    catalog_key,
    catalog_version_key,
    checkpoint_key,
    model_version_key,
    page_key,
    profile_key,
    stats_key,
    trending_key,
)
from homestream.settings import Settings


def test_reset_keeps_the_catalog_and_optionally_the_models(settings: Settings) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    p = settings.key_prefix
    other = p.rstrip(":") + "-other:"
    r.hset(catalog_key(p), "t1", "{}")
    r.set(catalog_version_key(p), 3)
    r.set(profile_key(p, "m1"), "{}")
    r.set(page_key(p, "m1"), "{}")
    r.hset(stats_key(p), "events_applied", 10)
    r.zadd(trending_key(p, "US", 1), {"t1": 1.0})
    r.set(checkpoint_key(p, "top-picks"), b"blob")
    r.set(model_version_key(p), 7)
    r.set(page_key(other, "m1"), "{}")  # another deployment's key: never touched

    before = redis_commands(r)
    assert reset_pipeline_state(r, p, keep_models=True) == 4
    assert redis_commands(r) > before
    assert r.exists(checkpoint_key(p, "top-picks"), model_version_key(p)) == 2
    assert reset_pipeline_state(r, p) == 2  # now the models too
    left = sorted(k.decode() for k in r.scan_iter(match=p + "*"))
    assert left == sorted([catalog_key(p), catalog_version_key(p)])
    assert r.exists(page_key(other, "m1"))
    r.close()
