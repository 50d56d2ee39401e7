"""The worker's event-time clock: the "now" pages are assembled at, that trending epochs and
decays follow and that settles artwork reward windows, robust to single liars.

Each member's newest event time is kept per event-topic partition. A partition's watermark
is the ``quorum``-th newest of its members' times, and the clock is the ``quorum``-th newest
of the partitions' watermarks (with fewer members or partitions than ``quorum``, the oldest
of them), never ahead of the wall clock plus the allowed future skew, and never moving back.
So one member's events, however far ahead they claim to be, cannot move the clock past what
other members already showed, and one partition cannot move it past what other partitions
already showed: an event stamped a year ahead changes nobody else's page.

Pure: no I/O; the wall clock is passed in.

>>> c = StreamClock(quorum=2, max_future_ms=300_000)
>>> for pid, ts in [("a", 1_000), ("b", 2_000), ("liar", 9_999_999_999)]:
...     c.observe(0, pid, ts)
>>> c.now_ms(wall_ms=5_000)
2000
>>> c.observe(1, "c", 1_500)
>>> c.now_ms(wall_ms=5_000)  # the second newest partition: 1500 < 2000, but never back
2000
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Collection, Iterable

#: Members remembered per partition (the least recently seen are forgotten first).
MAX_MEMBERS_PER_PARTITION = 512


def kth_newest(times: Iterable[int], quorum: int) -> int | None:
    """The ``quorum``-th largest of ``times`` (the smallest when there are fewer), ``None``
    for none.

    >>> kth_newest([5, 9, 7], 2), kth_newest([5], 3), kth_newest([], 2)
    (7, 5, None)
    """
    top = heapq.nlargest(quorum, times)
    return top[-1] if top else None


class StreamClock:
    """Per-partition member watermarks folded into one clock no single member, event or
    partition can move (see the module docstring).

    Parameters
    ----------
    quorum
        How many members of a partition (and how many partitions) must have reached a time
        before the clock does; 1 is the newest event time seen (no protection).
    max_future_ms
        The clock is never ahead of the wall clock by more than this.
    max_members
        Members remembered per partition.
    """

    def __init__(self, quorum: int = 3, max_future_ms: int = 300_000,
                 max_members: int = MAX_MEMBERS_PER_PARTITION) -> None:
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        self.max_future_ms = max_future_ms
        self.max_members = max_members
        self._members: dict[int, OrderedDict[str, int]] = {}
        self._now = 0
        #: Partitions' watermarks as last computed, and the partitions changed since (a
        #: watermark is recomputed only after its partition changed: the clock is read
        #: several times a batch, and each read walked every member of every partition).
        self._marks: dict[int, int | None] = {}
        self._dirty: set[int] = set()

    def observe(self, partition: int, profile_id: str, ts_ms: int) -> None:
        """Note that ``profile_id`` (of ``partition``) applied an event at ``ts_ms``."""
        members = self._members.get(partition)
        if members is None:
            members = self._members[partition] = OrderedDict()
        old = members.pop(profile_id, None)
        members[profile_id] = ts_ms if old is None or ts_ms > old else old
        if len(members) > self.max_members:
            members.popitem(last=False)
        self._dirty.add(partition)

    def retain(self, partitions: Collection[int]) -> None:
        """Forget the partitions this worker no longer owns (after a rebalance), so a
        partition another worker now reads does not hold the clock back."""
        for p in [p for p in self._members if p not in partitions]:
            del self._members[p]
            self._marks.pop(p, None)
            self._dirty.discard(p)

    def forget(self, profile_ids: Collection[str]) -> None:
        """Forget members (erased); the clock itself keeps its time."""
        for members in self._members.values():
            for pid in profile_ids:
                members.pop(pid, None)
        self._dirty.update(self._members)

    def watermark_ms(self, partition: int) -> int | None:
        """The partition's watermark (``None`` before its first event)."""
        if partition in self._dirty or partition not in self._marks:
            members = self._members.get(partition)
            self._marks[partition] = kth_newest(members.values(), self.quorum) \
                if members else None
            self._dirty.discard(partition)
        return self._marks[partition]

    def now_ms(self, wall_ms: int) -> int | None:
        """The clock: the ``quorum``-th newest partition watermark, at most ``wall_ms`` plus
        the allowed future skew, never earlier than before (``None`` before any event)."""
        marks = (self.watermark_ms(p) for p in self._members)
        now = kth_newest((m for m in marks if m is not None), self.quorum)
        if now is not None:
            self._now = max(self._now, min(now, wall_ms + self.max_future_ms))
        return self._now or None
