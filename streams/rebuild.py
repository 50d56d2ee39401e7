"""Rebuilding Redis from the compacted topics after it lost its dataset.

The catalog and the members' settings (kids profile, maturity, country) live on compacted
topics; the worker's agents copy them into Redis as they arrive and commit their offsets, so a
Redis restarted with an empty dataset would never see them again: no catalog, and a kids
profile served as an adult one. A timer here notices the loss (the store's catalog version,
which only grows, went back: :attr:`EventProcessor.store_reset`; or a worker starts on a
store without a catalog) and reads both topics from the beginning in a thread, applying them
as the agents do (idempotent: storing a title or a setting again changes nothing), and saves
the models it holds at once (a worker learning inline; the learner saves its own with its next
snapshot). Members' states, pages, trending and counters are not on any topic: those come back
with new events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from homestream.kafka_config import librdkafka_security
from homestream.settings import Settings
from streams.decode import RawMessage
from topics.reader import read_topics
from topics.registry import topic_specs

log = logging.getLogger(__name__)
#: Seconds between two checks of whether the store lost its dataset.
CHECK_INTERVAL_S = 2.0


def read_compacted(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[RawMessage]:
    """Every message of a (compacted) topic, from the beginning (blocking: run in a thread)."""
    return [RawMessage(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                       m.timestamp()[1] if m.timestamp()[0] else None)
            for m in read_topics(settings.bootstrap_servers, [topic], timeout_s=timeout_s,
                                 missing_ok=True, config=librdkafka_security(settings))]


class StoreRebuilder:
    """Puts the catalog and the profiles' settings back from their topics when the store lost
    them (see the module docstring); :meth:`check` is the timer's body."""

    def __init__(self, settings: Settings, processor) -> None:  # processor: EventProcessor
        self.settings = settings
        self.processor = processor
        specs = topic_specs(settings)
        self.topics: Sequence[str] = (specs["catalog"].name, specs["profiles"].name)
        self._checked_at_start = False
        #: Rebuilds done so far.
        self.rebuilds = 0

    async def needed(self) -> bool:
        """Whether the store lost what the topics hold: the processor saw its catalog
        version go back, or (first check) the store holds no catalog at all."""
        if self.processor.store_reset:
            return True
        if self._checked_at_start:
            return False
        self._checked_at_start = True
        return await self.processor.store.catalog_version() == 0

    async def check(self) -> int:
        """Rebuild when :meth:`needed`; returns the records applied (0: nothing to do)."""
        if not await self.needed():
            return 0
        lost = self.processor.store_reset  # a live loss: the models in memory are the latest
        self.processor.store_reset = False  # a reset during the read flags it again
        try:
            catalog, profiles = await asyncio.gather(
                *(asyncio.to_thread(read_compacted, self.settings, t) for t in self.topics))
            titles = await self.processor.process_catalog(catalog) if catalog else 0
            metas = await self.processor.process_profiles(profiles) if profiles else 0
        except BaseException:
            self.processor.store_reset = True  # the next tick tries again
            raise
        if lost and await self.processor.checkpoint(force=True):
            log.warning("models checkpointed again into the emptied store")
        if not catalog and not profiles:
            return 0
        self.rebuilds += 1
        log.warning("store rebuilt from the compacted topics: %d catalog records, %d profile "
                    "settings (members' states, pages and trending come back with their "
                    "next events)", titles, metas)
        return titles + metas


def install_rebuilder(app, settings: Settings, processor) -> StoreRebuilder:
    """Add the rebuild check to the worker's Faust ``app`` as a timer (its ticks are skipped
    while Redis is unreachable, :class:`streams.transport.HomestreamApp`)."""
    rebuilder = StoreRebuilder(settings, processor)

    @app.timer(CHECK_INTERVAL_S)
    async def rebuild_store() -> None:
        await rebuilder.check()

    return rebuilder
