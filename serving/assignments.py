"""Stores the artwork assignments the server decides, after the responses have gone out.

Requests hand over their new assignments (title id, stored JSON, ...) and return at once;
one background task writes whatever has accumulated, one ``HSET`` per member, many members
per round trip to Redis, again and again until nothing is left. Shutdown waits for it
(:meth:`aclose`). A failed write is logged with the members it concerned: the member's next
visit then decides again, which costs an exploration, not a wrong page.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from features import keys
from features.store import PipelineStore, RedisStore
from serving.redis_mux import RedisMux

log = logging.getLogger(__name__)

#: Members whose assignments one round trip writes (:meth:`AssignmentWriter._write_mux`).
WRITE_CHUNK = 32


class AssignmentWriter:
    """Batches the assignment writes of many requests (see the module doc)."""

    def __init__(self, store: PipelineStore, mux: RedisMux | None = None,
                 ttl_s: float = 0.0) -> None:
        self.store = store
        #: A member's assignments expire this long after their last write (0: never): all
        #: of them are past their sticky period by then, and a member who does not come back
        #: leaves nothing behind.
        self.ttl_s = ttl_s
        #: A connection of the writer's own (reads never wait behind a burst of writes, and
        #: a slow write times out nobody's read).
        self.mux = mux
        self.written = 0
        self.failed = 0
        #: Per member, the ``HSET`` arguments of the requests since the last write.
        self._pending: dict[str, list[bytes]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, profile_id: str, assignments: list[bytes], count: int) -> None:
        """Queue ``count`` assignments of ``profile_id`` (title id, stored JSON, ...; later
        values of a title replace earlier ones)."""
        queued = self._pending.get(profile_id)
        if queued is None:
            self._pending[profile_id] = assignments  # a request's own list, not kept by it
        else:
            queued += assignments
        self._count += count
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="artwork-assignments")

    @property
    def pending(self) -> int:
        """Members whose assignments are queued and not yet written."""
        return len(self._pending)

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the requests of this loop iteration add theirs
            while self._pending:
                batch, count, self._pending, self._count = self._pending, self._count, {}, 0
                await self._write(batch, count)
        finally:
            self._task = None

    async def _write(self, batch: dict[str, list[bytes]], count: int) -> None:
        try:
            if self.mux is not None and isinstance(self.store, RedisStore):
                await self._write_mux(self.mux, self.store.prefix, batch)
            elif isinstance(self.store, RedisStore):
                pipe = self.store.client.pipeline(transaction=False)
                for command in self._commands(self.store.prefix, batch):
                    pipe.execute_command(*command)
                await pipe.execute()
            else:  # the in-memory store of tests and tools
                for profile_id, args in batch.items():
                    await self.store.save_artwork(profile_id, {
                        t.decode(): orjson.loads(v) for t, v in zip(args[::2], args[1::2],
                                                                     strict=True)})
            self.written += count
        except Exception as exc:  # a store error: counted and logged with the members
            self.failed += count
            log.warning("artwork assignments of %d member(s) not stored (%s: %s): %s",
                        len(batch), type(exc).__name__, exc, ",".join(sorted(batch)[:20]))

    def _commands(self, prefix: str, batch: dict[str, list[bytes]]) -> list[tuple[Any, ...]]:
        """One ``HSET`` per member (and its ``EXPIRE`` with a TTL)."""
        ttl = int(self.ttl_s)
        out: list[tuple[Any, ...]] = []
        for pid, args in batch.items():
            key = keys.artwork_key(prefix, pid)
            out.append((b"HSET", key, *args))
            if ttl > 0:
                out.append((b"EXPIRE", key, ttl))
        return out

    async def _write_mux(self, mux: RedisMux, prefix: str, batch: dict[str, list[bytes]]
                         ) -> None:
        """The members' commands over ``mux``, :data:`WRITE_CHUNK` members a round trip:
        Redis runs a client's pipelined commands back to back, so a burst written at once
        would hold every other client's reads for its whole length."""
        commands = self._commands(prefix, batch)
        step = WRITE_CHUNK * (2 if int(self.ttl_s) > 0 else 1)
        for i in range(0, len(commands), step):
            for reply in await mux.execute_many(commands[i:i + step]):
                if isinstance(reply, Exception):
                    raise reply

    async def aclose(self) -> None:
        """Write what is queued (shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._pending:
            batch, count, self._pending, self._count = self._pending, self._count, {}, 0
            await self._write(batch, count)
