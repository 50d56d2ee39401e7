"""One multiplexed Redis connection for the home page's hot commands.

redis-py's asyncio client checks a connection out of a pool, wraps every reply in a timeout
and parses through several layers: ~45-50 us of CPU per ``EVALSHA`` of the home read, as much
as the rest of a served page (measured with 32 concurrent callers, 28 KB replies). Redis
answers the commands of one connection in order, so many requests can share one connection
instead: :class:`RedisMux` writes the commands of one event-loop iteration in a single
``write`` (pipelined), and one C parser (hiredis) turns the replies back into results for the
waiting requests in the order they were sent: ~12 us per call.

Failures keep redis-py's types, so the server's outage handling is unchanged: a lost or
refused connection fails every waiting call with :class:`redis.exceptions.ConnectionError`
(the next call reconnects); replies later than ``timeout_s`` fail every waiting call with
:class:`redis.exceptions.TimeoutError` and drop the connection (a hung Redis answers nobody,
and a late reply must never reach a later caller); an error reply raises
:class:`redis.exceptions.ResponseError` (``NoScriptError`` for ``NOSCRIPT``) for its call only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rexc

log = logging.getLogger(__name__)


class _Protocol(asyncio.Protocol):
    """The connection: commands out in batches, replies matched to waiters in order."""

    def __init__(self, on_lost: Any) -> None:
        self.reader = hiredis.Reader(protocolError=rexc.InvalidResponse,
                                     replyError=rexc.ResponseError)
        #: (future, monotonic send time) of every call sent and not yet answered.
        self.waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters, gets = self.waiters, self.reader.gets
        try:
            while (reply := gets()) is not False:
                fut = waiters.popleft()[0]
                if fut.done():
                    continue
                if isinstance(reply, rexc.ResponseError):
                    fut.set_exception(_typed(reply))
                else:
                    fut.set_result(reply)
        except rexc.InvalidResponse as exc:
            self.fail(rexc.ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rexc.ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def send(self, packed: bytes, now: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiters.append((fut, now))
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def fail(self, exc: Exception) -> None:
        """Fail every waiting call with ``exc`` and close the connection (once)."""
        waiters, self.waiters = self.waiters, collections.deque()
        self._out.clear()
        for fut, _ in waiters:
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._on_lost(self)


def _typed(err: rexc.ResponseError) -> rexc.ResponseError:
    """redis-py's error type for an error reply (``NOSCRIPT`` -> ``NoScriptError``)."""
    msg = str(err)
    return rexc.NoScriptError(msg) if msg.startswith("NOSCRIPT") else err


class RedisMux:
    """Commands over one shared connection (see the module doc).

    ``host``/``port`` or ``path`` (a Unix socket) name the server; ``username``/``password``
    and ``db`` are sent when connecting; ``timeout_s`` bounds connecting and every reply.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 timeout_s: float = 1.0) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._scripts: dict[str, bytes] = {}

    @classmethod
    def for_store(cls, store: Any, timeout_s: float) -> RedisMux | None:
        """A mux to the server of ``store``'s redis-py client (plain TCP or a Unix socket);
        ``None`` for what it does not speak (TLS, Sentinel, other clients)."""
        pool = getattr(getattr(store, "client", None), "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None)
        if kwargs is None or getattr(pool, "connection_class", None) is None:
            return None
        name = pool.connection_class.__name__
        if name not in ("Connection", "UnixDomainSocketConnection"):
            return None
        return cls(host=kwargs.get("host", "127.0.0.1"), port=int(kwargs.get("port", 6379)),
                   path=kwargs.get("path"), db=int(kwargs.get("db") or 0),
                   username=kwargs.get("username"), password=kwargs.get("password"),
                   timeout_s=timeout_s)

    async def execute(self, *args: Any) -> Any:
        """Send one command (str, bytes or int arguments) and return its reply."""
        (fut,) = await self._send([hiredis.pack_command(args)])
        return await fut

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and return their replies, or the exception of
        each failed one, in order (no task per command)."""
        return await self.execute_packed(list(map(hiredis.pack_command, commands)))

    async def execute_packed(self, packed: list[bytes]) -> list[Any]:
        """:meth:`execute_many` for commands already in Redis's protocol, one command each
        (:mod:`serving.resp` builds them): callers that assemble
        a long command from prepared pieces skip packing every argument again."""
        return list(await asyncio.gather(*await self._send(packed), return_exceptions=True))

    async def _send(self, packed: list[bytes]) -> list[asyncio.Future[Any]]:
        """Queue ``packed`` commands on the connection (made first if needed) and arm the
        watchdog."""
        proto = self._proto or await self._connect()
        loop = asyncio.get_running_loop()
        now = loop.time()
        futs = [proto.send(p, now) for p in packed]
        if self._watchdog is None and futs:
            self._watchdog = loop.call_later(self.timeout_s / 4, self._check_timeouts)
        return futs

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` by its SHA1, loading it first when the server does not have it
        (a restarted or flushed Redis forgets its scripts)."""
        sha = self._scripts.get(script)
        if sha is not None:
            try:
                return await self.execute(b"EVALSHA", sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                pass  # Redis lost its scripts (restart, SCRIPT FLUSH): load it again below
        sha = self._scripts[script] = await self.execute(b"SCRIPT", b"LOAD", script)
        return await self.execute(b"EVALSHA", sha, len(keys), *keys, *args)

    async def with_script(self, script: str, keys: list[str], args: list[Any],
                          before: Sequence[tuple[Any, ...]] = (),
                          after: Sequence[tuple[Any, ...]] = ()) -> list[Any]:
        """The replies of ``before``, ``script`` (EVALSHA, loaded first when the server does
        not have it) and ``after``, sent in one write: plain commands move their values
        without a copy through the script's Lua strings. A failed command raises."""
        async def send() -> list[Any]:
            sha = self._scripts.get(script)
            if sha is None:
                sha = self._scripts[script] = await self.execute(b"SCRIPT", b"LOAD", script)
            return await self.execute_many(
                [*before, (b"EVALSHA", sha, len(keys), *keys, *args), *after])

        replies = await send()
        if isinstance(replies[len(before)], rexc.NoScriptError):
            del self._scripts[script]  # Redis lost its scripts (restart, flush): load again
            replies = await send()
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    def _check_timeouts(self) -> None:
        """Every quarter timeout while calls wait: fail them all and drop the connection
        when the oldest waited longer than ``timeout_s``."""
        self._watchdog = None
        proto = self._proto
        if proto is None or not proto.waiters:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - proto.waiters[0][1] > self.timeout_s:
            log.warning("Redis answered nothing for %.2f s: failing %d call(s), reconnecting",
                        self.timeout_s, len(proto.waiters))
            proto.fail(rexc.TimeoutError(f"Timeout reading from Redis ({self.timeout_s} s)"))
            return
        self._watchdog = loop.call_later(self.timeout_s / 4, self._check_timeouts)

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None

    async def _connect(self) -> _Protocol:
        """Connect (once for all callers waiting at the same time), authenticate, select."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.path:
                    _, proto = await loop.create_unix_connection(
                        lambda: _Protocol(self._lost), self.path)
                else:
                    _, proto = await loop.create_connection(
                        lambda: _Protocol(self._lost), self.host, self.port)
                hello: list[asyncio.Future[Any]] = []
                if self.password:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    hello.append(proto.send(hiredis.pack_command((b"AUTH", *auth)), loop.time()))
                if self.db:
                    hello.append(proto.send(hiredis.pack_command((b"SELECT", self.db)),
                                            loop.time()))
                try:
                    await asyncio.gather(*hello)
                except rexc.ResponseError as exc:
                    proto.fail(rexc.ConnectionError("closed"))
                    raise rexc.AuthenticationError(f"Redis refused the connection: {exc}"
                                                   ) from exc
        except TimeoutError as exc:
            raise rexc.TimeoutError(f"Timeout connecting to Redis ({self.timeout_s} s)") from exc
        except OSError as exc:
            raise rexc.ConnectionError(f"Error connecting to Redis: {exc}") from exc
        self._proto = proto
        return proto

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionError``."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._proto is not None:
            self._proto.fail(rexc.ConnectionError("Redis connection closed"))
