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
from collections.abc import Mapping

import orjson

from features import keys
from features.store import PipelineStore, RedisStore

log = logging.getLogger(__name__)


class AssignmentWriter:
    """Batches the assignment writes of many requests (see the module doc)."""

    def __init__(self, store: PipelineStore) -> None:
        self.store = store
        self.written = 0
        self.failed = 0
        self._pending: dict[str, dict[str, bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, profile_id: str, assignments: Mapping[str, bytes]) -> None:
        """Queue ``assignments`` of ``profile_id`` (newer values replace queued ones)."""
        self._pending.setdefault(profile_id, {}).update(assignments)
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
                batch, self._pending = self._pending, {}
                await self._write(batch)
        finally:
            self._task = None

    async def _write(self, batch: dict[str, dict[str, bytes]]) -> None:
        try:
            if isinstance(self.store, RedisStore):
                pipe = self.store.client.pipeline(transaction=False)
                for profile_id, values in batch.items():
                    pipe.hset(keys.artwork_key(self.store.prefix, profile_id), mapping=values)
                await pipe.execute()
            else:  # the in-memory store of tests and tools
                for profile_id, values in batch.items():
                    await self.store.save_artwork(
                        profile_id, {t: orjson.loads(v) for t, v in values.items()})
            self.written += sum(len(v) for v in batch.values())
        except Exception as exc:  # a store error: counted and logged with the members
            self.failed += sum(len(v) for v in batch.values())
            log.warning("artwork assignments of %d member(s) not stored (%s: %s): %s",
                        len(batch), type(exc).__name__, exc, ",".join(sorted(batch)[:20]))

    async def aclose(self) -> None:
        """Write what is queued (shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
        if self._pending:
            batch, self._pending = self._pending, {}
            await self._write(batch)
