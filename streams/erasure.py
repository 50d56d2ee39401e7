"""Erasing members in the worker: what the worker holds of a member besides Redis.

An erasure (``homestream.erase``) marks the member erased in Redis (a TTL'd marker named by a
digest of the id), deletes their keys and publishes a tombstone on the compacted profiles
topic. The worker applies the tombstone of a marked member with :func:`erase_members`: it
deletes the keys again (a batch that loaded the member before the erasure may have written
them back), forgets the member's Top Picks parameters and checkpoints the models at once
(so the stored checkpoint no longer holds them), and forgets what the stream clock, the
page renderer and the held states remember of them. Events of a marked member still in
flight are dropped before they are applied (:func:`drop_erased`), counted as ``erased_dropped``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.decode import SourcedEvent
    from streams.processor import EventProcessor

log = logging.getLogger(__name__)


async def erase_members(proc: EventProcessor, profile_ids: Sequence[str]) -> int:
    """Erase the members from the worker's store keys, models and memory; returns the keys
    deleted. With learning in a learner process (``HOMESTREAM_LEARNER_MODE=topic``) the
    learner forgets them by the erasure log (:meth:`streams.learner.Learner.forget_erased`)
    and the workers' copies follow its next snapshot."""
    if not profile_ids:
        return 0
    await proc.start()
    async with proc._state_lock:
        deleted = await proc.store.erase_profiles(profile_ids, proc.settings.partitions,
                                                  proc.settings.erased_ttl_s)
        forgot = [p for p in profile_ids if proc.models.model.forget_profile(p)]
        proc.stream_clock.forget(profile_ids)
        proc.renderer.forget(profile_ids)
        proc.states.discard(profile_ids)
    if forgot:
        await proc.checkpoint(force=True)
    log.info("erased %d members (%d keys deleted, %d with model parameters)",
             len(profile_ids), deleted, len(forgot))
    return deleted


async def drop_erased(proc: EventProcessor, by_profile: dict[str, list[SourcedEvent]]
                      ) -> int:
    """Remove the events of members marked erased from ``by_profile`` (one store read) and
    forget their held states (the tombstone may come later, or after the mark's TTL);
    returns how many events were dropped."""
    erased = await proc.store.erased(list(by_profile))
    proc.states.discard(list(erased))
    return sum(len(by_profile.pop(pid)) for pid in erased)
