"""The worker's members' states kept between batches, so a batch reads from Redis only the
states it does not hold (an LRU of committed states).

Without it every batch loads each of its members' states (an ``MGET`` and a JSON parse,
~80 us for a 5 KB state, more for the 20-30 KB of a member with a full dedupe window) and
live traffic, about one event per member per batch, pays that for nearly every event.

What the cache holds is what Redis holds: a state goes in once it is committed (a batch's
transaction, the artwork settler's) or as loaded from Redis; a batch that fails before its
commit has changed its members' states in place, so the worker drops them
(:meth:`StateCache.discard`) and their next batch loads the committed ones. The worker also
drops a member on erasure and everything on a rebalance (a partition that comes back may
have been changed by another worker meanwhile) and when Redis lost its dataset.

>>> from features.profile import ProfileState
>>> cache = StateCache(2)
>>> cache.put_many([ProfileState("a"), ProfileState("b")])
>>> hits, misses = cache.get_many(["a", "c"])
>>> sorted(hits), misses
(['a'], ['c'])
>>> cache.put_many([ProfileState("c")])  # "b" is the least recently used: it goes
>>> sorted(cache.get_many(["a", "b", "c"])[0]), cache.hits, cache.misses
(['a', 'c'], 3, 2)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from features.profile import ProfileState


class StateCache:
    """Committed member states by profile id, the least recently used dropped first.

    Parameters
    ----------
    max_members
        Most states held (0: none, every batch loads from the store).
    """

    def __init__(self, max_members: int) -> None:
        self.max_members = max_members
        self._states: OrderedDict[str, ProfileState] = OrderedDict()
        #: Lookups answered from the cache, and not, since :meth:`take_hit_share`.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def get_many(self, profile_ids: Sequence[str]) -> tuple[dict[str, ProfileState], list[str]]:
        """The held states of ``profile_ids`` (now the most recently used) and the ids of
        those not held."""
        states = self._states
        hits: dict[str, ProfileState] = {}
        misses: list[str] = []
        for pid in profile_ids:
            s = states.get(pid)
            if s is None:
                misses.append(pid)
            else:
                states.move_to_end(pid)
                hits[pid] = s
        self.hits += len(hits)
        self.misses += len(misses)
        return hits, misses

    def take_hit_share(self) -> float:
        """The share of lookups answered from the cache since the last call (0 without
        lookups); the counts start again.

        >>> cache = StateCache(1)
        >>> _ = cache.get_many(["a"]); cache.put_many([ProfileState("a")])
        >>> _ = cache.get_many(["a"]); cache.take_hit_share(), cache.take_hit_share()
        (0.5, 0.0)
        """
        looked_up = self.hits + self.misses
        share = self.hits / looked_up if looked_up else 0.0
        self.hits = self.misses = 0
        return share

    def put_many(self, states: Iterable[ProfileState]) -> None:
        """Hold ``states`` (committed, or as loaded from the store), dropping the least
        recently used beyond :attr:`max_members`."""
        if self.max_members <= 0:
            return
        held = self._states
        for s in states:
            held[s.profile_id] = s
            held.move_to_end(s.profile_id)
        while len(held) > self.max_members:
            held.popitem(last=False)

    def discard(self, profile_ids: Iterable[str]) -> None:
        """Forget these members' states (changed and not committed, or erased)."""
        for pid in profile_ids:
            self._states.pop(pid, None)

    def clear(self) -> None:
        """Forget every state (a rebalance, or the store lost its dataset)."""
        self._states.clear()
