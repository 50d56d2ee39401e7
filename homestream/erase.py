"""Erasing a member (the right to be forgotten): ``homestream erase PROFILE_ID`` and
``DELETE /v1/profiles/{profile_id}`` both call :func:`erase_profiles`.

In one Redis transaction the member is marked erased (a marker named by a SHA-256 digest of
the id, kept ``HOMESTREAM_ERASED_TTL_S``) and their page, state, settings and artwork
assignments are deleted and they leave the artwork due sets; then a tombstone for them goes
to the compacted profiles topic (compaction drops their settings record). The worker applies
the tombstone of a marked member (``streams.erasure``): it deletes the keys again, forgets
their Top Picks parameters and checkpoints the models, and drops events of the member still
in flight while the marker lives. Events already on the event topics leave with the topics'
retention (``HOMESTREAM_EVENT_RETENTION_MS``), which the marker's TTL should cover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from features.store import PipelineStore, RedisStore
from homestream.settings import Settings


def publish_tombstones(settings: Settings, profile_ids: Sequence[str],
                       timeout_s: float = 30.0) -> int:
    """Tombstones for the members on the profiles topic, acknowledged by the broker (raises
    :class:`~homestream.player.producer.ProducerError` naming the ids not delivered)."""
    from homestream.player.loaders import Record, publish_records

    return publish_records(settings, "profiles", [Record(0, p, None) for p in profile_ids],
                           timeout_s=timeout_s)


async def erase_profiles(settings: Settings, store: PipelineStore, profile_ids: Sequence[str],
                         timeout_s: float = 30.0) -> int:
    """Erase the members from Redis and publish their tombstones (the producer runs in a
    thread, off the event loop); returns the Redis keys deleted."""
    ids = list(dict.fromkeys(profile_ids))
    deleted = await store.erase_profiles(ids, settings.partitions, settings.erased_ttl_s)
    await asyncio.get_running_loop().run_in_executor(
        None, publish_tombstones, settings, ids, timeout_s)
    return deleted


def erase_command(settings: Settings, profile_ids: Sequence[str], timeout_s: float = 30.0
                  ) -> int:
    """``homestream erase``: erase the members on a store of its own; the keys deleted."""
    async def run() -> int:
        store = RedisStore.from_url(settings.redis_url, settings.key_prefix)
        try:
            return await erase_profiles(settings, store, profile_ids, timeout_s)
        finally:
            await store.close()

    return asyncio.run(run())
