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

import orjson

from features import keys
from features.store import PipelineStore, RedisStore
from serving.redis_mux import RedisMux

log = logging.getLogger(__name__)

#: Members whose assignments one round trip writes (:meth:`AssignmentWriter._write_mux`).
WRITE_CHUNK = 32


class AssignmentWriter:
    """Batches the assignment writes of many requests (see the module doc)."""

    def __init__(self, store: PipelineStore, mux: RedisMux | None = None) -> None:
        self.store = store
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
            self._pending[profile_id] = list(assignments)
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
                for profile_id, args in batch.items():
                    pipe.execute_command("HSET", keys.artwork_key(self.store.prefix, profile_id),
                                         *args)
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

    @staticmethod
    async def _write_mux(mux: RedisMux, prefix: str, batch: dict[str, list[bytes]]) -> None:
        """One ``HSET`` per member over ``mux``, :data:`WRITE_CHUNK` members a round trip:
        Redis runs a client's pipelined commands back to back, so a burst written at once
        would hold every other client's reads for its whole length."""
        commands = [(b"HSET", keys.artwork_key(prefix, pid), *args)
                    for pid, args in batch.items()]
        for i in range(0, len(commands), WRITE_CHUNK):
            for reply in await mux.execute_many(commands[i:i + WRITE_CHUNK]):
                if isinstance(reply, Exception):
                    raise reply

    async def aclose(self) -> None:
        """Write what is queued (shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._pending:
            batch, count, self._pending, self._count = self._pending, self._count, {}, 0
            await self._write(batch, count)
