"""What a micro-batch teaches the shared models, as pure data (a ``homestream.ModelUpdate``).

Workers do not learn the item-side models in place: each batch becomes one
:class:`LearningRecord` (Top Picks triples with their sampled negatives, co-watch updates,
artwork rewards, row-kind exposures and takes), every item tagged with the message it came
from (topic-partition and offset). A :class:`LearningSink` takes it: the worker's sink
produces it to the 1-partition model-updates topic for the single learner
(:mod:`streams.learner`); :class:`InlineLearning` applies it to a local
:class:`~streams.models.ModelSet` (unit tests, the in-process evaluation, a one-worker
deployment).

>>> b = RecordBuilder()
>>> b.watch("player-events", 3, 17, ["t1"], "t2")
>>> b.row("player-events", 3, 17, "top-picks", 1.0, 0.0)
>>> rec = b.build()
>>> rec.sources, rec.watches[0].src, rec.rows[0].offset
(['player-events:3'], 0, 17)
>>> LearningRecord.from_avro(rec.to_avro()) == rec
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from topics.codec import AvroCodec

#: ``src`` of an item that comes from no message (a settled artwork zero): always learned.
NO_SOURCE = -1
SCHEMA = "homestream.ModelUpdate"


class LabelItem(NamedTuple):
    """A Top Picks (profile, title, target) triple."""

    src: int
    offset: int
    profile_id: str
    title_id: str
    target: float


class WatchItem(NamedTuple):
    """A watch of ``title_id`` after ``history`` (most recent first), for co-watch counts."""

    src: int
    offset: int
    history: list[str]
    title_id: str


class ArtworkItem(NamedTuple):
    """The reward of one artwork decision, with the policy that logged it."""

    src: int
    offset: int
    context_json: str
    artwork_id: str
    tags: list[str]
    reward: float
    policy: str


class RowItem(NamedTuple):
    """Exposures and takes of one row kind in one message."""

    src: int
    offset: int
    kind: str
    exposures: float
    takes: float


@dataclass
class LearningRecord:
    """The learning of one micro-batch (or of one settling chunk)."""

    sources: list[str] = field(default_factory=list)
    labels: list[LabelItem] = field(default_factory=list)
    watches: list[WatchItem] = field(default_factory=list)
    artwork: list[ArtworkItem] = field(default_factory=list)
    rows: list[RowItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels) + len(self.watches) + len(self.artwork) + len(self.rows)

    def to_avro(self) -> dict[str, Any]:
        """The record as the ``homestream.ModelUpdate`` schema's plain dict."""
        return {"sources": self.sources,
                "labels": [i._asdict() for i in self.labels],
                "watches": [i._asdict() for i in self.watches],
                "artwork": [i._asdict() for i in self.artwork],
                "rows": [i._asdict() for i in self.rows]}

    @staticmethod
    def from_avro(d: dict[str, Any]) -> LearningRecord:
        """The record of a decoded ``homestream.ModelUpdate``."""
        return LearningRecord(
            list(d["sources"]), [LabelItem(**i) for i in d["labels"]],
            [WatchItem(**i) for i in d["watches"]], [ArtworkItem(**i) for i in d["artwork"]],
            [RowItem(**i) for i in d["rows"]])

    def split(self, max_items: int) -> list[LearningRecord]:
        """The record as several records of at most ~``max_items`` items each (a message of
        the model-updates topic must stay under the broker's size limit), never splitting
        one source message's items, in ascending offset per source partition: the learner's
        high-water marks then skip exactly what a replay repeats.

        >>> b = RecordBuilder()
        >>> for off in (3, 1, 2):
        ...     b.watch("ev", 0, off, [], f"t{off}"); b.label("ev", 0, off, "p", f"t{off}", 1.0)
        >>> [[w.offset for w in r.watches] for r in b.build().split(3)]
        [[1], [2], [3]]
        """
        if len(self) <= max_items:
            return [self]
        # (src, offset) -> that message's labels, watches, artwork and rows
        groups: dict[tuple[int, int], tuple[list[Any], ...]] = {}
        for kind, items in enumerate((self.labels, self.watches, self.artwork, self.rows)):
            for item in items:
                group = groups.get(item[:2])
                if group is None:
                    group = groups[item[:2]] = ([], [], [], [])
                group[kind].append(item)
        out: list[LearningRecord] = []
        current = LearningRecord(list(self.sources))
        size = 0
        for key in sorted(groups):
            labels, watches, artwork, rows = groups[key]
            n = len(labels) + len(watches) + len(artwork) + len(rows)
            if size and size + n > max_items:
                out.append(current)
                current, size = LearningRecord(list(self.sources)), 0
            current.labels += labels
            current.watches += watches
            current.artwork += artwork
            current.rows += rows
            size += n
        out.append(current)
        return out

    def encode(self, codec: AvroCodec) -> bytes:
        """The record as one ``homestream.ModelUpdate`` message of ``codec``."""
        return codec.encode_model_update(
            self.sources, (self.labels, self.watches, self.artwork, self.rows))


#: Builds a named tuple from a tuple of its fields without its Python-level ``__new__``
#: (the builder makes one for every learning item: about one an event).
_make = tuple.__new__


class RecordBuilder:
    """Collects a batch's learning items; source topic-partitions get small indexes."""

    def __init__(self) -> None:
        self.record = LearningRecord()
        self._src: dict[tuple[str, int], int] = {}
        self._last: tuple[str | None, int, int] = (None, 0, NO_SOURCE)

    def src(self, topic: str | None, partition: int) -> int:
        """The index of ``topic:partition`` in the record (``NO_SOURCE`` for ``None``)."""
        last = self._last
        if last[0] == topic and last[1] == partition:  # a message's events come in a row
            return last[2]
        if topic is None:
            return NO_SOURCE
        key = (topic, partition)
        i = self._src.get(key)
        if i is None:
            i = self._src[key] = len(self.record.sources)
            self.record.sources.append(f"{topic}:{partition}")
        self._last = (topic, partition, i)
        return i

    def label(self, topic: str | None, partition: int, offset: int, profile_id: str,
              title_id: str, target: float) -> None:
        self.record.labels.append(_make(LabelItem, (
            self.src(topic, partition), offset, profile_id, title_id, float(target))))

    def watch(self, topic: str | None, partition: int, offset: int, history: Sequence[str],
              title_id: str) -> None:
        self.record.watches.append(_make(WatchItem, (
            self.src(topic, partition), offset, list(history), title_id)))

    def artwork(self, topic: str | None, partition: int, offset: int, context_json: str,
                artwork_id: str, tags: Sequence[str], reward: float, policy: str) -> None:
        self.record.artwork.append(_make(ArtworkItem, (
            self.src(topic, partition), offset, context_json, artwork_id, list(tags),
            float(reward), policy)))

    def row(self, topic: str | None, partition: int, offset: int, kind: str,
            exposures: float, takes: float) -> None:
        self.record.rows.append(_make(RowItem, (
            self.src(topic, partition), offset, kind, float(exposures), float(takes))))

    def build(self) -> LearningRecord:
        return self.record


class LearningSink(Protocol):
    """Where a batch's learning goes; ``send`` returns once it is durably taken."""

    async def send(self, record: LearningRecord) -> None: ...


class MemoryLearning:
    """A :class:`LearningSink` that keeps the records in a list (tests)."""

    def __init__(self) -> None:
        self.records: list[LearningRecord] = []

    async def send(self, record: LearningRecord) -> None:
        self.records.append(record)
