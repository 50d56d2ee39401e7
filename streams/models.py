"""The shared item-side models as one unit: learn a :class:`~streams.learning.LearningRecord`,
snapshot to blobs, restore from them.

A :class:`ModelSet` holds Top Picks (River ``BiasedMF``), the co-watch similarity, the artwork
policy and the row-kind utility, plus what makes replays safe: per source topic-partition the
highest offset learned (the high-water marks), the model-updates offset the learning covers
and counters of the items learned. Items at or below their partition's mark are skipped, so
a batch replayed after a worker crash is never learned twice. Pure: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import orjson

from homestream.settings import Settings
from online_models.bandits import ArtworkPolicy, make_policy
from online_models.bandits.base import Arm
from online_models.checkpoint import CheckpointError
from online_models.row_utility import RowKindUtility
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.learning import NO_SOURCE, LearningRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

MODEL_CHECKPOINT = "top-picks"
COWATCH_CHECKPOINT = "co-watch"
ARTWORK_CHECKPOINT = "artwork-policy"
ROW_UTILITY_CHECKPOINT = "row-utility"
#: The snapshot's bookkeeping (JSON: version, high-water marks, covered offset, counters).
LEARNER_CHECKPOINT = "learner"
COUNTER_NAMES = ("labels", "watches", "artwork", "rows", "skipped")


@dataclass
class LearnerMeta:
    """What a snapshot covers besides the model blobs."""

    version: int = 0
    #: Highest source offset learned, by ``topic:partition``.
    hwm: dict[str, int] = field(default_factory=dict)
    #: Offset of the last model-updates message learned (-1: none).
    covered_offset: int = -1
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @staticmethod
    def from_bytes(data: bytes) -> LearnerMeta:
        """The bookkeeping :meth:`to_bytes` wrote; :class:`CheckpointError` for anything
        that is not that JSON object."""
        try:
            d = orjson.loads(data)
            meta = LearnerMeta(int(d["version"]), {str(k): int(v) for k, v in d["hwm"].items()},
                               int(d["covered_offset"]))
            meta.counters.update({k: int(v) for k, v in d.get("counters", {}).items()})
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"learner bookkeeping is not its JSON object: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return meta


class ModelSet:
    """The four shared models and their high-water marks.

    >>> from streams.learning import RecordBuilder
    >>> ms = ModelSet(Settings())
    >>> b = RecordBuilder(); b.watch("ev", 0, 5, ["a"], "b"); rec = b.build()
    >>> sorted(ms.learn(rec)), ms.learn(rec), ms.meta.counters["skipped"]
    (['a', 'b'], set(), 1)
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = TopPicksModel(n_factors=settings.model_factors, seed=settings.model_seed)
        self.artwork_policy: ArtworkPolicy = make_policy(settings.artwork_policy,
                                                         settings.model_seed)
        self.cowatch = CoWatchSimilarity()
        self.row_utility = RowKindUtility(settings.row_prior_strength)
        self.meta = LearnerMeta()
        #: Items learned since the last snapshot.
        self.unsaved = 0

    # -- learning -------------------------------------------------------------------------
    def _fresh(self, src: int, offset: int, sources: list[str]) -> bool:
        """Whether an item is above its partition's high-water mark (not learned yet)."""
        if src == NO_SOURCE:
            return True
        return offset > self.meta.hwm.get(sources[src], -1)

    def learn(self, record: LearningRecord, covered_offset: int | None = None) -> set[str]:
        """Learn the record's items not learned before; returns the titles whose co-watch
        neighbours changed. ``covered_offset``: the model-updates offset of the record."""
        srcs, fresh, c = record.sources, self._fresh, self.meta.counters
        n0 = sum(c[k] for k in COUNTER_NAMES[:4])
        for lab in record.labels:
            if fresh(lab.src, lab.offset, srcs):
                self.model.learn_one(lab.profile_id, lab.title_id, lab.target)
                c["labels"] += 1
        changed: set[str] = set()
        for w in record.watches:
            if fresh(w.src, w.offset, srcs):
                changed |= self.cowatch.learn_one([h for h in w.history if h != w.title_id],
                                                  w.title_id)
                c["watches"] += 1
        rewards = [a for a in record.artwork if fresh(a.src, a.offset, srcs)]
        if rewards:  # one update for the record's rewards (a ridge policy's is ~10x cheaper)
            self.artwork_policy.learn_many([_context(a.context_json) for a in rewards],
                                           [Arm(a.artwork_id, tuple(a.tags)) for a in rewards],
                                           [a.reward for a in rewards])
            c["artwork"] += len(rewards)
        exposures: dict[str, float] = {}
        takes: dict[str, float] = {}
        for r in record.rows:
            if fresh(r.src, r.offset, srcs):
                exposures[r.kind] = exposures.get(r.kind, 0.0) + r.exposures
                takes[r.kind] = takes.get(r.kind, 0.0) + r.takes
                c["rows"] += 1
        self.row_utility.learn({k: v for k, v in exposures.items() if v},
                               {k: v for k, v in takes.items() if v})
        learned = sum(c[k] for k in COUNTER_NAMES[:4]) - n0
        c["skipped"] += len(record) - learned
        self.unsaved += learned
        self._advance_marks(record)
        if covered_offset is not None:
            self.meta.covered_offset = max(self.meta.covered_offset, covered_offset)
        return changed

    def _advance_marks(self, record: LearningRecord) -> None:
        top: dict[int, int] = {}
        for items in (record.labels, record.watches, record.artwork, record.rows):
            for it in items:
                if it.src != NO_SOURCE and it.offset > top.get(it.src, -1):
                    top[it.src] = it.offset
        for src, off in top.items():
            tp = record.sources[src]
            if off > self.meta.hwm.get(tp, -1):
                self.meta.hwm[tp] = off

    # -- snapshots ------------------------------------------------------------------------
    def to_blobs(self) -> dict[str, bytes]:
        """A snapshot: the four models and the bookkeeping, by checkpoint name; bumps the
        version (the Top Picks checkpoint carries it too, for readers of that one alone)."""
        # a worker's own checkpoints carry no bookkeeping blob: continue the restored model's
        # numbering so a reader of the Top Picks checkpoint alone sees it grow
        self.meta.version = max(self.meta.version, self.model.version) + 1
        self.model.version = self.meta.version
        self.unsaved = 0
        return {MODEL_CHECKPOINT: self.model.to_bytes(),
                COWATCH_CHECKPOINT: self.cowatch.to_bytes(),
                ARTWORK_CHECKPOINT: self.artwork_policy.to_bytes(),
                ROW_UTILITY_CHECKPOINT: self.row_utility.to_bytes(),
                LEARNER_CHECKPOINT: self.meta.to_bytes()}

    def restore(self, blobs: Mapping[str, bytes | None]) -> None:
        """Replace the models by those of a snapshot (the blobs it has). A blob that is not
        a checkpoint this build reads (:mod:`online_models.checkpoint`: corrupt, of another
        model or version, or a pickle of the format before) is logged and that model starts
        fresh; nothing in a blob is ever executed."""
        model = _decode(blobs, MODEL_CHECKPOINT, TopPicksModel.from_bytes)
        if model is not None:
            self.model = model
            log.info("restored model checkpoint v%d (%d labels learned)",
                     self.model.version, self.model.n_learned)
        policy = _decode(blobs, ARTWORK_CHECKPOINT, ArtworkPolicy.from_bytes)
        if policy is not None:
            if policy.name == self.artwork_policy.name:
                self.artwork_policy = policy
            else:
                log.warning("artwork checkpoint is %s, configured policy is %s: starting fresh",
                            policy.name, self.artwork_policy.name)
        self.cowatch = _decode(blobs, COWATCH_CHECKPOINT, CoWatchSimilarity.from_bytes
                               ) or self.cowatch
        row_utility = _decode(blobs, ROW_UTILITY_CHECKPOINT, RowKindUtility.from_bytes)
        if row_utility is not None:
            self.row_utility = row_utility
            self.row_utility.prior_strength = self.settings.row_prior_strength
        self.meta = _decode(blobs, LEARNER_CHECKPOINT, LearnerMeta.from_bytes) or self.meta
        self.unsaved = 0

CHECKPOINT_NAMES = (MODEL_CHECKPOINT, COWATCH_CHECKPOINT, ARTWORK_CHECKPOINT,
                    ROW_UTILITY_CHECKPOINT, LEARNER_CHECKPOINT)


def _decode(blobs: Mapping[str, bytes | None], name: str, read: Callable[[bytes], T]
            ) -> T | None:
    """The model in checkpoint ``name``, or None when there is none or it is refused (then
    logged: the model starts fresh and the next checkpoint replaces the blob)."""
    data = blobs.get(name)
    if data is None:
        return None
    try:
        return read(data)
    except CheckpointError as exc:
        log.warning("checkpoint %r refused, that model starts fresh (the next checkpoint "
                    "replaces it): %s", name, exc)
        return None


def _context(context_json: str) -> dict:
    """An artwork decision's context (``{}`` when it is not a JSON object)."""
    try:
        context = orjson.loads(context_json) if context_json else {}
    except orjson.JSONDecodeError:
        return {}
    return context if isinstance(context, dict) else {}
