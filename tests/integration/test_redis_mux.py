"""The server's multiplexed Redis connection against a real Redis it can stop, hang, restart
and flush: replies reach the right callers, an error reply fails only its call, a flushed
script is loaded again, and a lost, refused or hung server fails the waiting calls with
redis-py's exception types (what the server's outage handling catches) and is reconnected
afterwards."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis
from redis import exceptions as rexc

from features.store import RedisStore
from homestream.stack.local import start_redis
from serving.redis_mux import RedisMux

ECHO_LUA = "return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1]) or false}"


@pytest.fixture
def server():
    srv = start_redis()
    try:
        yield srv
    finally:
        srv.stop()


def test_concurrent_calls_get_their_own_replies_in_one_connection(server) -> None:
    sync = redis.Redis(port=server.port)
    sync.mset({f"k{i}": f"v{i}".encode() * (i % 50 + 1) for i in range(500)})

    async def main() -> None:
        mux = RedisMux(port=server.port)
        try:
            replies = await asyncio.gather(*(mux.execute("GET", f"k{i}") for i in range(500)))
            assert replies == [f"v{i}".encode() * (i % 50 + 1) for i in range(500)]
            clients = sync.client_list()
            assert len(clients) == 2  # the sync client and the one shared connection
            # one error reply fails its own call only
            results = await asyncio.gather(mux.execute("GET", "k1"),
                                           mux.execute("INCR", "k1"),  # not an integer
                                           mux.execute("GET", "k2"), return_exceptions=True)
            assert results[0] == b"v1" * 2 and results[2] == b"v2" * 3
            assert isinstance(results[1], rexc.ResponseError)
        finally:
            await mux.aclose()

    asyncio.run(main())


def test_a_script_flushed_from_redis_is_loaded_again(server) -> None:
    sync = redis.Redis(port=server.port)
    sync.set("a", b"1")

    async def main() -> None:
        mux = RedisMux(port=server.port)
        try:
            assert await mux.evalsha(ECHO_LUA, ["a"], ["x"]) == [b"a", b"x", b"1"]
            sync.script_flush()
            assert await mux.evalsha(ECHO_LUA, ["a"], ["y"]) == [b"a", b"y", b"1"]
        finally:
            await mux.aclose()

    asyncio.run(main())


def test_a_script_between_plain_commands_in_one_write_and_after_a_flush(server) -> None:
    sync = redis.Redis(port=server.port)
    sync.set("a", b"1")
    sync.hset("h", mapping={"f": b"v"})

    async def main() -> None:
        mux = RedisMux(port=server.port)
        try:
            for _ in range(2):
                got = await mux.with_script(ECHO_LUA, ["a"], ["x"], before=[(b"GET", "a")],
                                            after=[(b"HGETALL", "h")])
                assert got == [b"1", [b"a", b"x", b"1"], [b"f", b"v"]]
                sync.script_flush()  # loaded again on the next call
            with pytest.raises(rexc.ResponseError):
                await mux.with_script(ECHO_LUA, ["a"], ["x"], after=[(b"HGETALL", "a")])
        finally:
            await mux.aclose()

    asyncio.run(main())


def test_many_commands_in_one_write_each_with_its_reply(server) -> None:
    sync = redis.Redis(port=server.port)
    sync.hset("h", "f", "v")

    async def main() -> None:
        mux = RedisMux(port=server.port)
        try:
            replies = await mux.execute_many([("SET", f"m{i}", i) for i in range(50)]
                                             + [("GET", "m7"), ("GET", "h"), ("GET", "m8")])
            assert replies[:50] == [b"OK"] * 50 and replies[50] == b"7"
            assert isinstance(replies[51], rexc.ResponseError)  # GET of a hash: its own error
            assert replies[52] == b"8"
        finally:
            await mux.aclose()

    asyncio.run(main())


def test_stopped_hung_and_restarted_redis(server) -> None:
    async def main() -> None:
        mux = RedisMux(port=server.port, timeout_s=0.4)
        try:
            assert await mux.execute("PING") == b"PONG"
            server.proc.send_signal(signal.SIGSTOP)  # hung: holds its socket, answers nothing
            try:
                started = time.monotonic()
                results = await asyncio.gather(*(mux.execute("PING") for _ in range(5)),
                                               return_exceptions=True)
                waited = time.monotonic() - started
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert all(isinstance(r, rexc.TimeoutError) for r in results), results
            assert 0.3 < waited < 1.5, waited
            assert await mux.execute("PING") == b"PONG"  # a new connection after the hang
        finally:
            await mux.aclose()

    asyncio.run(main())
    port = server.port
    server.stop()

    async def refused() -> None:
        mux = RedisMux(port=port, timeout_s=0.4)
        with pytest.raises(rexc.ConnectionError):
            await mux.execute("PING")
        await mux.aclose()

    asyncio.run(refused())


def test_redis_restarted_under_a_connected_mux() -> None:
    first = start_redis()
    port = first.port

    async def main() -> None:
        mux = RedisMux(port=port, timeout_s=1.0)
        try:
            assert await mux.execute("SET", "x", "1") == b"OK"
            first.stop()
            with pytest.raises(rexc.ConnectionError):
                await mux.execute("GET", "x")
            again = start_redis(port)
            try:
                assert await mux.execute("GET", "x") is None  # empty dataset, reconnected
            finally:
                again.stop()
        finally:
            await mux.aclose()

    asyncio.run(main())


def test_password_and_database_are_sent_on_connect() -> None:
    srv = start_redis()
    try:
        sync = redis.Redis(port=srv.port)
        sync.config_set("requirepass", "s3cret")
        sync = redis.Redis(port=srv.port, password="s3cret", db=3)
        sync.set("in-db-3", b"yes")

        async def main() -> None:
            store = RedisStore.from_url(f"redis://:s3cret@127.0.0.1:{srv.port}/3", "hs")
            mux = RedisMux.for_store(store, 1.0)
            assert mux is not None
            try:
                assert await mux.execute("GET", "in-db-3") == b"yes"
            finally:
                await mux.aclose()
                await store.close()
            wrong = RedisMux(port=srv.port, password="nope")
            with pytest.raises(rexc.AuthenticationError):
                await wrong.execute("PING")
            await wrong.aclose()

        asyncio.run(main())
    finally:
        srv.stop()
