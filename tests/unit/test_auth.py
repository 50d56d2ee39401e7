"""Access control's pure parts: key digests and roles, open and admin paths, token buckets,
and the setting that holds the keys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from homestream.settings import ConfigError, Settings, load_settings
from serving.auth import KeyRing, TokenBucket, key_digest, needs_admin, needs_key

READ, ADMIN = "reader-secret", "admin-secret"


def ring(rate: float = 0.0, burst: int = 1) -> KeyRing:
    s = Settings(api_keys=f"read:{key_digest(READ)},admin:{key_digest(ADMIN).upper()}")
    return KeyRing(s.api_key_hashes, rate, burst)


def test_keys_are_known_by_their_digest_only() -> None:
    r = ring()
    assert (r.role_of(READ), r.role_of(ADMIN)) == ("read", "admin")
    assert r.role_of("guess") is None and r.role_of(key_digest(READ)) is None
    assert READ not in repr(r.hashes) and ADMIN not in repr(r.hashes)


def test_each_route_needs_the_weakest_role_that_may_call_it() -> None:
    from serving.auth import role_needed

    assert role_needed("POST", "/v1/events") == "events"
    assert role_needed("GET", "/v1/homepage/p1") == "read"
    assert role_needed("DELETE", "/v1/profiles/p1") == "admin"


def test_a_key_listed_twice_takes_its_strongest_role() -> None:
    s = Settings(api_keys=f"read:{key_digest(ADMIN)},admin:{key_digest(ADMIN)}")
    assert KeyRing(s.api_key_hashes, 0.0, 1).role_of(ADMIN) == "admin"


def test_the_setting_refuses_plain_keys_and_unknown_roles_naming_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"HOMESTREAM_API_KEYS: .*64 hex digits, not the key "
                                          r"itself") as err:
        load_settings(api_keys="read:my-plain-key")
    assert "my-plain-key" not in str(err.value)  # a pasted key is not echoed
    with pytest.raises(ValidationError, match="role must be one of events, read, admin"):
        Settings(api_keys=f"owner:{key_digest('x')}")
    assert Settings(api_keys=f"events:{key_digest('x')}").api_key_hashes[0][0] == "events"
    assert Settings().api_key_hashes == ()


def test_open_and_admin_paths() -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js", "/art/t1/a.svg"):
        assert not needs_key(path), path
    for path in ("/v1/homepage/p1", "/v1/search", "/ui/profiles", "/ui/stream/p1"):
        assert needs_key(path), path
    assert needs_admin("DELETE", "/v1/profiles/p1")
    assert not needs_admin("GET", "/v1/homepage/p1")


def test_a_token_bucket_allows_bursts_then_its_rate() -> None:
    b = TokenBucket(rate_per_s=10.0, burst=3)
    assert [b.take(now=b.at) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after(now=b.at) == pytest.approx(0.1)
    t = b.at
    assert b.take(now=t + 0.1) and not b.take(now=t + 0.1)
    assert b.take(now=t + 10.0) and b.tokens == pytest.approx(2.0)  # refilled to the burst


def test_each_key_has_its_own_bucket_and_no_rate_means_none() -> None:
    r = ring(rate=1.0, burst=1)
    assert r.bucket(READ) is r.bucket(READ) and r.bucket(READ) is not r.bucket(ADMIN)
    assert ring(rate=0.0).bucket(READ) is None
