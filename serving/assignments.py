"""Stores the artwork assignments the server decides, after the responses have gone out.

Requests hand over their new assignments (title id -> stored JSON) and return at once; one
background task writes whatever has accumulated, all members' in one pipelined round trip
to Redis, again and again until nothing is left. Shutdown waits for it (:meth:`aclose`). A
failed write is logged with the members it concerned: the member's next visit then decides
again, which costs an exploration, not a wrong page.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from redis.exceptions import NoScriptError

from features import keys
from features.store import PipelineStore, RedisStore
from serving.page_plan import fields
from serving.redis_mux import RedisMux

log = logging.getLogger(__name__)


#: KEYS[1] = the member's assignments hash, ARGV[1] = title id, JSON, ... as length-prefixed
#: fields (serving.page_plan.fields): one argument to pack however many titles were decided.
HSET_FIELDS_LUA = """
local s, args, i = ARGV[1], {}, 1
while i <= #s do
  local c = string.find(s, ':', i, true)
  local n = tonumber(string.sub(s, i, c - 1))
  args[#args + 1] = string.sub(s, c + 1, c + n)
  i = c + n + 1
end
for j = 1, #args, 200 do
  redis.call('HSET', KEYS[1], unpack(args, j, math.min(j + 199, #args)))
end
return #args / 2
"""


#: Members whose assignments one round trip writes (:meth:`AssignmentWriter._write_mux`).
WRITE_CHUNK = 32


class AssignmentWriter:
    """Batches the assignment writes of many requests (see the module doc)."""

    def __init__(self, store: PipelineStore, mux: RedisMux | None = None) -> None:
        self.store = store
        #: A connection of the writer's own (reads never wait behind a write's scripts, and
        #: a slow write times out nobody's read).
        self.mux = mux
        self.written = 0
        self.failed = 0
        #: Per member, the blobs of the requests since the last write (joined when written:
        #: later fields of a title replace earlier ones).
        self._pending: dict[str, list[bytes]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._sha: str | None = None

    def add(self, profile_id: str, assignments: bytes, count: int) -> None:
        """Queue ``count`` assignments of ``profile_id`` (length-prefixed title, value
        fields; later values of a title replace earlier ones)."""
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

    async def _write(self, queued: dict[str, list[bytes]], count: int) -> None:
        batch = {pid: blobs[0] if len(blobs) == 1 else b"".join(blobs)
                 for pid, blobs in queued.items()}
        try:
            if self.mux is not None and isinstance(self.store, RedisStore):
                await self._write_mux(self.mux, self.store.prefix, batch)
            elif isinstance(self.store, RedisStore):
                await self._write_redis(self.store, batch)
            else:  # the in-memory store of tests and tools
                for profile_id, blob in batch.items():
                    f = fields(blob)
                    await self.store.save_artwork(profile_id, {
                        t.decode(): orjson.loads(v) for t, v in zip(f[::2], f[1::2],
                                                                     strict=True)})
            self.written += count
        except Exception as exc:  # a store error: counted and logged with the members
            self.failed += count
            log.warning("artwork assignments of %d member(s) not stored (%s: %s): %s",
                        len(batch), type(exc).__name__, exc, ",".join(sorted(batch)[:20]))

    @staticmethod
    async def _write_mux(mux: RedisMux, prefix: str, batch: dict[str, bytes]) -> None:
        """The fields script per member over ``mux``, :data:`WRITE_CHUNK` members a round
        trip: Redis runs a client's pipelined commands back to back, so a burst written at
        once would hold every other client's reads for its whole length."""
        calls = [([keys.artwork_key(prefix, pid)], [blob]) for pid, blob in batch.items()]
        for i in range(0, len(calls), WRITE_CHUNK):
            for reply in await mux.evalsha_many(HSET_FIELDS_LUA, calls[i:i + WRITE_CHUNK]):
                if isinstance(reply, Exception):
                    raise reply

    async def _write_redis(self, store: RedisStore, batch: dict[str, bytes]) -> None:
        """One pipelined round trip: the fields script per member (loaded again if Redis
        lost its scripts)."""
        for attempt in (1, 2):
            if self._sha is None:
                self._sha = await store.client.script_load(HSET_FIELDS_LUA)
            pipe = store.client.pipeline(transaction=False)
            for profile_id, blob in batch.items():
                pipe.evalsha(self._sha, 1, keys.artwork_key(store.prefix, profile_id), blob)
            try:
                await pipe.execute()
                return
            except NoScriptError:
                if attempt == 2:
                    raise
                self._sha = None

    async def aclose(self) -> None:
        """Write what is queued (shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._pending:
            batch, count, self._pending, self._count = self._pending, self._count, {}, 0
            await self._write(batch, count)
