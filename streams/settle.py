"""Settling artwork decisions whose reward window closed with no quality play (a timer's job).

The :class:`ArtworkSettler` works for an :class:`~streams.processor.EventProcessor`: it takes
the processor's batch lock one bounded chunk at a time, within a time budget per call, so a
due backlog never holds the event batches up longer than a chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from features.profile import ArtworkReward, ProfileState, settle_expired_art
from features.store import ArtworkDue
from streams.learning import LearningRecord, RecordBuilder

if TYPE_CHECKING:
    from streams.processor import EventProcessor

#: Due profiles settled per lock hold and partition (the event batches run in between).
SETTLE_CHUNK = 10
#: Wall-clock budget of one settling call (a timer tick): about a fifth of the worker's
#: time at the default one-second interval (a duration, not a clock reading).
SETTLE_BUDGET_S = 0.2
#: Settled rewards the policy learns between two yields to the event loop.
LEARN_SLICE = 100


class ArtworkSettler:
    """Gives the decisions of the owned partitions whose window closed their reward."""

    def __init__(self, processor: EventProcessor) -> None:
        self.proc = processor
        #: Set by :meth:`stop`: no settling starts any more.
        self.stopped = False
        self._runs: set[asyncio.Future[int]] = set()

    async def stop(self) -> None:
        """Start no more settling and wait for the settling under way: its committed rewards
        are sent while the worker's producer still runs (a worker stopping calls this
        before its producer stops)."""
        self.stopped = True
        if self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)

    async def settle_due(self, partitions: Collection[int] | None = None) -> int:
        """Settle the artwork decisions whose reward window closed before the watermark
        (event time), for the profiles of ``partitions`` (the event-topic partitions this
        worker owns; ``None``: all): reward 0, or 1 for a quality play held back until the
        close (``HOMESTREAM_ARTWORK_DELAYED_POSITIVES``). Returns the rewards learned.

        The profiles' states lose those decisions in the same Redis transaction that moves
        their entries in the due index, and the rewards are learned (or sent to the learner)
        only after it committed: a later play finds nothing to reward and a restart finds
        nothing to settle again (a crash in between loses at most one chunk's rewards).
        After :meth:`stop` nothing is settled (returns 0): the decisions stay due for the
        partitions' next owner.
        """
        if self.stopped:
            return 0
        # a task, so stop() can wait for it (the worker's timer runs this to completion even
        # when cancelled: streams.app._finish_even_if_cancelled)
        run = asyncio.ensure_future(self._settle_due(partitions))
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)
        return await run

    async def _settle_due(self, partitions: Collection[int] | None) -> int:
        n_parts = self.proc.settings.partitions
        parts = sorted({-1, *(range(n_parts) if partitions is None else partitions)})
        total = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < SETTLE_BUDGET_S and not self.stopped:
            n = await self._settle_chunk(parts)
            if n < 0:
                break
            total += n
            await asyncio.sleep(0)
        return total

    async def _settle_chunk(self, parts: Sequence[int]) -> int:
        """Settle up to ``SETTLE_CHUNK`` due profiles; ``-1`` when none was due."""
        proc = self.proc
        async with proc._state_lock:
            await proc.start()
            watermark = proc.watermark_ms()
            if watermark is None:
                return -1
            before = watermark - int(proc.params.reward_window_s * 1000)
            due = await proc.store.due_artwork(parts, before, SETTLE_CHUNK)
            if not due:
                return -1
            await proc.refresh_catalog()
            states = await proc.load_states(sorted({pid for _, pid in due}))
            try:
                rewards = await self._settle_states(due, states, watermark)
            except BaseException:  # changed in place and not committed
                proc.forget_uncommitted(states)
                raise
        # committed: learn outside the lock, a slice at a time, yielding to the event batches
        for i in range(0, len(rewards), LEARN_SLICE):
            await proc._learn(self._record(rewards[i: i + LEARN_SLICE]))
            await asyncio.sleep(0)
        return len(rewards)

    async def _settle_states(self, due: Sequence[tuple[int, str]],
                             states: Mapping[str, ProfileState], watermark: int
                             ) -> list[ArtworkReward]:
        """Settle the due members' expired decisions in ``states`` and commit them (one
        transaction with the counters and the members' new settling deadlines)."""
        proc = self.proc
        changed: list[ProfileState] = []
        rewards: list[ArtworkReward] = []
        art_due: list[ArtworkDue] = []
        for part, pid in due:
            state = states.get(pid)
            if state is not None:
                settled = settle_expired_art(state, watermark, proc.params)
                if settled:
                    rewards += settled
                    changed.append(state)
            art_due.append((part, pid, None if state is None
                            else state.oldest_pending_art_ms()))
        await proc.store.commit_batch(changed, [], {
            "artwork_rewards": len(rewards), "artwork_settled_by_watermark": len(rewards),
            "artwork_quality_plays": sum(r.reward > 0 for r in rewards),
        }, art_due)
        return rewards

    def _record(self, rewards: Sequence[ArtworkReward]) -> LearningRecord:
        """The learning of settled rewards (no source message: always learned)."""
        b = RecordBuilder()
        self.proc.artwork_learning((None, -1, -1), rewards, b)
        return b.build()
