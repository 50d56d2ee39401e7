"""Named entries of a member's stored state, and the versioned JSON format they are kept in.

:class:`~features.profile.ProfileState` keeps a playhead per title in progress
(:class:`Playhead`), an artwork decision per title waiting for its reward
(:class:`PendingArtwork`) and the row kind each title was last shown in (:class:`ShownRow`).
In memory they are named tuples; in the stored JSON they are arrays of their fields in the
order the named tuples declare them (compact, and converted without a Python call per entry:
a member can hold hundreds of pending decisions and the worker loads and stores its state
every batch), under ``"format": STATE_FORMAT``.

Format history:

* 1 (no ``format`` key): playheads ``[position_s, duration_s, ts_ms]``; pending decisions
  ``[ts_ms, artwork_id, propensity, policy, policy_version, context_json]``, with a seventh
  element ``1.0`` only once a quality play was seen. Still read.
* 2: playheads as in 1; pending decisions always carry the seventh field, ``won``, a boolean.

Shown rows are ``[kind, ts_ms]`` in both formats.

>>> playhead_of([700.0, 1000.0, 5])
Playhead(position_s=700.0, duration_s=1000.0, ts_ms=5)
>>> legacy_pending([1, "t1-a", 0.5, "uniform", 0, "", 1.0]).won
True
>>> entries_of({"t1": [1, "t1-a", 0.5, "uniform", 0, "", False]}, PendingArtwork)["t1"].policy
'uniform'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

#: Version of the stored profile-state JSON written by this code (see the module docstring).
STATE_FORMAT = 2
#: The format of a stored state without a ``format`` key.
LEGACY_FORMAT = 1


class Playhead(NamedTuple):
    """The newest playhead of a title: where the member was, of how long, at what time."""

    position_s: float
    duration_s: float
    ts_ms: int


class PendingArtwork(NamedTuple):
    """An artwork decision waiting for a quality play or the end of its reward window."""

    ts_ms: int
    artwork_id: str
    propensity: float
    policy: str
    policy_version: int
    context_json: str
    #: A quality play was seen inside the window (``delayed_positives``: paid at the close).
    won: bool = False


class ShownRow(NamedTuple):
    """The kind of row a title was last shown in, and when (a first play credits it)."""

    kind: str
    ts_ms: int


E = TypeVar("E", Playhead, PendingArtwork, ShownRow)
_new = tuple.__new__


def entries_of(raw: Mapping[str, Sequence[Any]], shape: type[E]) -> dict[str, E]:
    """Stored arrays (of the current format) as named entries, keyed as stored."""
    n = len(shape._fields)
    if not set(map(len, raw.values())) <= {n}:
        bad = next(v for v in raw.values() if len(v) != n)
        raise ValueError(f"a stored {shape.__name__} has {len(bad)} fields, not {n}: {bad!r}")
    return dict(zip(raw.keys(), map(_new, repeat(shape), raw.values()), strict=True))


def playhead_of(raw: Sequence[Any]) -> Playhead:
    """One stored playhead (any format) as a :class:`Playhead`."""
    position_s, duration_s, ts_ms = raw
    return Playhead(position_s, duration_s, ts_ms)


def legacy_pending(raw: Sequence[Any]) -> PendingArtwork:
    """A format-1 pending decision (six fields, a seventh ``1.0`` once won)."""
    ts_ms, artwork_id, propensity, policy, version, context_json, *won = raw
    return PendingArtwork(ts_ms, artwork_id, propensity, policy, version, context_json,
                          bool(won and won[0]))


#: ``orjson`` ``default`` of a stored state: a named entry (the only values orjson does not
#: serialize itself) is stored as the array of its fields.
as_arrays = tuple


def check_format(version: Any) -> int:
    """``version`` if this code reads it; a clear error for a newer or unknown format."""
    if version not in (LEGACY_FORMAT, STATE_FORMAT):
        raise ValueError(f"profile state format {version!r} is not one this code reads "
                         f"(formats {LEGACY_FORMAT}..{STATE_FORMAT})")
    return int(version)
