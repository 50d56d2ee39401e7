"""Time-decayed popularity by *forward decay*, so counts only ever grow and merge by addition.

An event at time ``t`` adds ``2 ** ((t - L) / half_life)`` to its title's score, where ``L``
is the start of the current *epoch* (``EPOCH_HALF_LIVES`` half-lives long). Ranking by the
sum is the same as ranking by exponentially decayed counts at any query time, yet every
update is a plain increment (``ZINCRBY``), idempotent under dedupe and order-insensitive, so
late events land where their event time says. Scores stay below ``2**64`` within an epoch;
a reader merges the current epoch with the previous one scaled by ``2**-EPOCH_HALF_LIVES``.

>>> hl = 3600.0
>>> e, w = decayed_weight(0, hl)
>>> (e, w)
(0, 1.0)
>>> decayed_weight(3_600_000, hl)
(0, 2.0)
>>> merge_epochs([("a", 4.0)], [("b", 2.0 ** 64 * 8)], limit=2)
[('b', 8.0), ('a', 4.0)]
"""

from __future__ import annotations

from collections.abc import Iterable

EPOCH_HALF_LIVES = 64


def epoch_of(ts_ms: int, half_life_s: float) -> int:
    """The decay epoch an event time falls in."""
    return int(ts_ms // (half_life_s * 1000.0 * EPOCH_HALF_LIVES))


def decayed_weight(ts_ms: int, half_life_s: float, weight: float = 1.0) -> tuple[int, float]:
    """``(epoch, increment)`` for one event of ``weight`` at event time ``ts_ms``."""
    epoch = epoch_of(ts_ms, half_life_s)
    start_ms = epoch * half_life_s * 1000.0 * EPOCH_HALF_LIVES
    return epoch, weight * 2.0 ** ((ts_ms - start_ms) / (half_life_s * 1000.0))


def merge_epochs(
    current: Iterable[tuple[str, float]], previous: Iterable[tuple[str, float]], limit: int
) -> list[tuple[str, float]]:
    """Top ``limit`` titles of the current epoch's scores plus the previous epoch's, rescaled
    to the current landmark."""
    scale = 2.0 ** -EPOCH_HALF_LIVES
    total: dict[str, float] = {}
    for tid, s in current:
        total[tid] = total.get(tid, 0.0) + s
    for tid, s in previous:
        total[tid] = total.get(tid, 0.0) + s * scale
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
