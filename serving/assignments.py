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
import math
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
#: A member's hash past its cap is trimmed to this share of it (not at every write).
TRIM_TO = 0.75


def oldest_titles(flat: Sequence[bytes], keep: int) -> list[bytes]:
    """The titles of a stored assignments hash (``HGETALL``'s title, JSON, ... reply) beyond
    the ``keep`` most recently chosen; values that do not parse count as the oldest.

    >>> flat = [b"a", b'{"chosen_at_ms":3}', b"b", b'{"chosen_at_ms":9}', b"c", b"?"]
    >>> oldest_titles(flat, 1)
    [b'a', b'c']
    """
    def chosen_at(value: bytes) -> float:
        try:
            return float(orjson.loads(value).get("chosen_at_ms") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return -math.inf
    ordered = sorted(zip(flat[::2], flat[1::2], strict=True), key=lambda tv: chosen_at(tv[1]),
                     reverse=True)
    return [title for title, _ in ordered[max(keep, 0):]]


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
                 ttl_s: float = 0.0, max_titles: int = 0) -> None:
        self.store = store
        #: Most titles a member's hash keeps (0: no cap): past it the oldest decisions are
        #: dropped down to :data:`TRIM_TO` of it (those titles are drawn again when shown).
        self.max_titles = max_titles
        self.trimmed = 0
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
                if over := self._over_cap(list(batch), await pipe.execute()):
                    await self._trim(self.store.prefix, over)
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
        """One ``HSET`` per member (and its ``EXPIRE`` with a TTL, its ``HLEN`` with a cap)."""
        ttl = int(self.ttl_s)
        out: list[tuple[Any, ...]] = []
        for pid, queued in batch.items():
            key = keys.artwork_key(prefix, pid)
            out.append((b"HSET", key, *_args(queued)))
            if ttl > 0:
                out.append((b"EXPIRE", key, ttl))
            if self.max_titles > 0:
                out.append((b"HLEN", key))
        return out

    @property
    def _per_member(self) -> int:
        """Commands written per member."""
        return 1 + (int(self.ttl_s) > 0) + (self.max_titles > 0)

    def _over_cap(self, members: list[str], replies: list[Any]) -> list[str]:
        """The members whose ``HLEN`` reply (the last of each member's commands) is over
        the cap."""
        if self.max_titles <= 0:
            return []
        n = self._per_member
        return [pid for pid, length in zip(members, replies[n - 1::n], strict=True)
                if isinstance(length, int) and length > self.max_titles]

    async def _trim(self, prefix: str, members: list[str]) -> None:
        """Drop the oldest assignments of ``members`` down to :data:`TRIM_TO` of the cap
        (one round trip to read the hashes, one to delete)."""
        names = [keys.artwork_key(prefix, pid) for pid in members]
        keep = int(self.max_titles * TRIM_TO)
        if self.mux is not None:
            hashes = await self.mux.execute_many([(b"HGETALL", k) for k in names])
        else:
            assert isinstance(self.store, RedisStore)
            pipe = self.store.client.pipeline(transaction=False)
            for k in names:
                pipe.hgetall(k)
            hashes = [[x for tv in h.items() for x in tv] if isinstance(h, dict) else h
                      for h in await pipe.execute()]
        deletes = [(b"HDEL", k, *old) for k, flat in zip(names, hashes, strict=True)
                   if isinstance(flat, list) and (old := oldest_titles(flat, keep))]
        if not deletes:
            return
        if self.mux is not None:
            replies = await self.mux.execute_many(deletes)
        else:
            pipe = self.store.client.pipeline(transaction=False)
            for command in deletes:
                pipe.execute_command(*command)
            replies = await pipe.execute()
        self.trimmed += sum(r for r in replies if isinstance(r, int))

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
            if self.max_titles > 0:
                out.append(hiredis.pack_command((b"HLEN", key)))
        return out

    async def _write_mux(self, mux: RedisMux, prefix: str,
                         batch: dict[str, list[Assignments]]) -> None:
        """The members' commands over ``mux``, :data:`WRITE_CHUNK` members a round trip:
        Redis runs a client's pipelined commands back to back, so a burst written at once
        would hold every other client's reads for its whole length."""
        commands, members = self._packed(prefix, batch), list(batch)
        n = self._per_member
        for i in range(0, len(members), WRITE_CHUNK):
            replies = await mux.execute_packed(commands[i * n:(i + WRITE_CHUNK) * n])
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if over := self._over_cap(members[i:i + WRITE_CHUNK], replies):
                await self._trim(prefix, over)

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
