"""Stores the artwork assignments the server decides, after the responses have gone out.

Requests hand over their new assignments (:class:`Assignments`: the pieces they are made of)
and return at once; one background task writes whatever has accumulated, one ``HSET`` per
member, many members per round trip to Redis, again and again until nothing is left. Over
the writer's own connection each command is joined from prepared protocol pieces rather than
packed argument by argument. Shutdown waits for it
(:meth:`aclose`). A failed write is logged with the members it concerned: the member's next
visit then decides again, which costs an exploration, not a wrong page.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
import orjson

from features import keys
from features.store import PipelineStore, RedisStore
from serving.redis_mux import RedisMux
from serving.resp import bulk_string, command_header

log = logging.getLogger(__name__)

#: Members whose assignments one round trip writes (:meth:`AssignmentWriter._write_mux`).
WRITE_CHUNK = 32


class Assignments(Protocol):
    """New assignments of one request, as the writer takes them."""

    def __len__(self) -> int:
        """How many titles."""

    def args(self) -> list[bytes]:
        """Title id, stored JSON, title id, ...: the ``HSET`` arguments after the key."""

    def resp(self) -> bytes:
        """:meth:`args` as bulk strings of Redis's protocol."""


@dataclass(frozen=True, slots=True)
class PlainAssignments:
    """Assignments given as their ``HSET`` arguments (title id, stored JSON, ...)."""

    pairs: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.pairs) // 2

    def args(self) -> list[bytes]:
        return list(self.pairs)

    def resp(self) -> bytes:
        return b"".join(map(bulk_string, self.pairs))


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
        #: Per member, the assignments of the requests since the last write, in order.
        self._pending: dict[str, list[Assignments]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, profile_id: str, assignments: Assignments, count: int) -> None:
        """Queue ``count`` assignments of ``profile_id`` (later values of a title replace
        earlier ones)."""
        queued = self._pending.get(profile_id)
        if queued is None:
            self._pending[profile_id] = [assignments]
        else:
            queued.append(assignments)
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

    async def _write(self, batch: dict[str, list[Assignments]], count: int) -> None:
        try:
            if self.mux is not None and isinstance(self.store, RedisStore):
                await self._write_mux(self.mux, self.store.prefix, batch)
            elif isinstance(self.store, RedisStore):
                pipe = self.store.client.pipeline(transaction=False)
                for command in self._commands(self.store.prefix, batch):
                    pipe.execute_command(*command)
                await pipe.execute()
            else:  # the in-memory store of tests and tools
                for profile_id, queued in batch.items():
                    args = _args(queued)
                    await self.store.save_artwork(profile_id, {
                        t.decode(): orjson.loads(v) for t, v in zip(args[::2], args[1::2],
                                                                     strict=True)})
            self.written += count
        except Exception as exc:  # a store error: counted and logged with the members
            self.failed += count
            log.warning("artwork assignments of %d member(s) not stored (%s: %s): %s",
                        len(batch), type(exc).__name__, exc, ",".join(sorted(batch)[:20]))

    def _commands(self, prefix: str, batch: dict[str, list[Assignments]]
                  ) -> list[tuple[Any, ...]]:
        """One ``HSET`` per member (and its ``EXPIRE`` with a TTL)."""
        ttl = int(self.ttl_s)
        out: list[tuple[Any, ...]] = []
        for pid, queued in batch.items():
            key = keys.artwork_key(prefix, pid)
            out.append((b"HSET", key, *_args(queued)))
            if ttl > 0:
                out.append((b"EXPIRE", key, ttl))
        return out

    def _packed(self, prefix: str, batch: dict[str, list[Assignments]]) -> list[bytes]:
        """:meth:`_commands` in Redis's protocol, each ``HSET`` joined from its pieces."""
        ttl = int(self.ttl_s)
        out: list[bytes] = []
        for pid, queued in batch.items():
            key = keys.artwork_key(prefix, pid)
            pairs = sum(map(len, queued))
            out.append(command_header(2 + 2 * pairs, b"HSET") + bulk_string(key.encode())
                       + b"".join([a.resp() for a in queued]))
            if ttl > 0:
                out.append(hiredis.pack_command((b"EXPIRE", key, ttl)))
        return out

    async def _write_mux(self, mux: RedisMux, prefix: str,
                         batch: dict[str, list[Assignments]]) -> None:
        """The members' commands over ``mux``, :data:`WRITE_CHUNK` members a round trip:
        Redis runs a client's pipelined commands back to back, so a burst written at once
        would hold every other client's reads for its whole length."""
        commands = self._packed(prefix, batch)
        step = WRITE_CHUNK * (2 if int(self.ttl_s) > 0 else 1)
        for i in range(0, len(commands), step):
            for reply in await mux.execute_packed(commands[i:i + step]):
                if isinstance(reply, Exception):
                    raise reply

    async def aclose(self) -> None:
        """Write what is queued (shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._pending:
            batch, count, self._pending, self._count = self._pending, self._count, {}, 0
            await self._write(batch, count)


def _args(queued: list[Assignments]) -> list[bytes]:
    """The ``HSET`` arguments of a member's queued assignments, in order."""
    return list(itertools.chain.from_iterable(a.args() for a in queued))
