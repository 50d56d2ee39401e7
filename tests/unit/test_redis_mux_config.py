"""Which Redis connections the server's multiplexed connection takes over from redis-py's
pool (plain TCP and Unix sockets, with credentials and database), and which it leaves to the
pool (TLS): decided from the store's own configuration, nothing connected."""

from __future__ import annotations

from features.store import InMemoryStore, RedisStore
from serving.redis_mux import RedisMux


def test_a_tcp_url_with_credentials_and_database_is_taken_over() -> None:
    store = RedisStore.from_url("redis://user:pw@10.0.0.7:6380/4", "hs:")
    mux = RedisMux.for_store(store, 0.5)
    assert mux is not None
    assert (mux.host, mux.port, mux.db, mux.username, mux.password, mux.timeout_s) == (
        "10.0.0.7", 6380, 4, "user", "pw", 0.5)
    assert mux.path is None


def test_a_unix_socket_is_taken_over_and_tls_is_left_to_the_pool() -> None:
    unix = RedisMux.for_store(RedisStore.from_url("unix:///run/redis.sock?db=2", "hs:"), 1.0)
    assert unix is not None and unix.path == "/run/redis.sock" and unix.db == 2
    assert RedisMux.for_store(RedisStore.from_url("rediss://10.0.0.7:6380/0", "hs:"), 1.0) is None
    assert RedisMux.for_store(InMemoryStore(), 1.0) is None
