"""Per-member row-kind affinities: which kinds of rows this member plays from.

The population's row-kind weights (:class:`~online_models.row_utility.RowKindUtility`, from
every member's impressions and the first plays that follow) say which kinds of rows pay
on average. A member's own counts (``ProfileState.row_counts``: impressions and credited
first plays by row kind) adjust them: each kind's weight is multiplied by the member's take
rate of that kind relative to their take rate over all kinds, shrunk toward 1 by
``strength`` pseudo-impressions at the member's overall rate. A member with little
evidence (or none: no play from any row yet) gets the population's weights. Pure.

>>> w = {"genre": 0.7, "because_you_watched": 0.8}
>>> counts = {"genre": [100, 10], "because_you_watched": [100, 0]}
>>> out = member_row_weights(w, counts, strength=50.0)
>>> out["genre"] > 0.7 > 0.8 * 0.5 > out["because_you_watched"]
True
>>> member_row_weights(w, {"genre": [40, 0]}, strength=50.0) == w
True
>>> member_row_weights(w, counts, strength=0.0) == w
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def member_row_weights(weights: Mapping[str, float], counts: Mapping[str, Sequence[float]],
                       strength: float) -> Mapping[str, float]:
    """``weights`` adjusted by the member's own row-kind take rates (module docstring);
    ``strength`` 0 turns the adjustment off."""
    if strength <= 0 or not counts:
        return weights
    shown = sum(c[0] for c in counts.values())
    taken = sum(c[1] for c in counts.values())
    if shown <= 0 or taken <= 0:
        return weights
    overall = taken / shown
    out = dict(weights)
    for kind, (n, k) in ((kind, c[:2]) for kind, c in counts.items()):
        if kind in out:
            out[kind] *= (k / overall + strength) / (n + strength)
    return out
