"""Implicit and explicit feedback: from raw player events to engagement levels and labels.

A play that passes ``WATCH_FRACTION`` (50%) of the title's duration is a *watch*; a play
that never does is a *click*. Engagement only ever rises, so replayed or reordered
heartbeats cannot produce a second label for the same level.

>>> derive_play_level(ENGAGED_NONE, 0.1)
(1, 'click')
>>> derive_play_level(ENGAGED_CLICK, 0.6)
(2, 'watch')
>>> derive_play_level(ENGAGED_WATCH, 0.9)
(2, None)
>>> explicit_label("stars", 5), explicit_label("thumbs_down", None)
(1.0, 0.0)
"""

from __future__ import annotations

WATCH_FRACTION = 0.5
FINISHED_FRACTION = 0.95

ENGAGED_NONE = 0
ENGAGED_CLICK = 1
ENGAGED_WATCH = 2

#: Regression targets for the profile-title model, per implicit signal: a play that stays
#: under ``WATCH_FRACTION`` (click), one past it (watch), a stop under 10% of a title only
#: clicked (abandon), a title shown three times and never played or rated (negative), a
#: new start of a finished title (rewatch: the top target again). Finishing a title
#: (``FINISHED_FRACTION``) earns no label of its own: the watch it implies already did.
LABEL_TARGET = {"click": 0.5, "watch": 1.0, "abandon": 0.1, "negative": 0.0, "rewatch": 1.0}
#: Genre-affinity increments per signal.
AFFINITY_WEIGHT = {"click": 0.3, "watch": 1.0}


def derive_play_level(previous: int, fraction: float) -> tuple[int, str | None]:
    """New engagement level of a (profile, title) after a play at ``fraction`` of the title,
    and the label it earns (``'click'``, ``'watch'``) if the level rose."""
    level = ENGAGED_WATCH if fraction > WATCH_FRACTION else ENGAGED_CLICK
    if level <= previous:
        return previous, None
    return level, ("watch" if level == ENGAGED_WATCH else "click")


def explicit_label(kind: str, stars: int | None) -> float:
    """Target in [0, 1] for explicit feedback (stars map linearly, 1 -> 0.0, 5 -> 1.0)."""
    if kind == "thumbs_up":
        return 1.0
    if kind == "thumbs_down":
        return 0.0
    if kind == "stars" and stars is not None:
        return (stars - 1) / 4.0
    raise ValueError(f"unknown feedback {kind!r} / stars={stars!r}")


def is_finished(fraction: float) -> bool:
    """A title whose playhead passed ``FINISHED_FRACTION`` leaves Continue Watching."""
    return fraction >= FINISHED_FRACTION
