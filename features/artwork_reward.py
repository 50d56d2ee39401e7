"""The artwork reward rule in event time: which play rewards a pending artwork decision and
when its reward window has closed. Pure.

One definition for the two places that settle decisions: the worker's per-member state
(:mod:`features.profile`) and the evaluation's join of logged impressions and plays
(``evaluation.artwork.logs.build_rounds``), so the rewards the evaluation replays are the ones
the worker paid.
"""

from __future__ import annotations

__all__ = ["is_quality_play", "window_closed"]


def is_quality_play(decision_ts_ms: float, play_ts_ms: float, fraction: float, *,
                    reward_window_s: float, quality_fraction: float) -> bool:
    """Whether a play at ``play_ts_ms`` reaching ``fraction`` of the title rewards a decision
    made at ``decision_ts_ms``: at least ``quality_fraction``, inside the window (ends
    included).

    >>> is_quality_play(1_000, 61_000, 0.3, reward_window_s=60, quality_fraction=0.3)
    True
    >>> is_quality_play(1_000, 61_001, 0.9, reward_window_s=60, quality_fraction=0.3)
    False
    >>> is_quality_play(1_000, 999, 0.9, reward_window_s=60, quality_fraction=0.3)
    False
    """
    return (fraction >= quality_fraction
            and decision_ts_ms <= play_ts_ms <= decision_ts_ms + reward_window_s * 1000.0)


def window_closed(decision_ts_ms: float, now_ms: float, reward_window_s: float) -> bool:
    """Whether the reward window of a decision made at ``decision_ts_ms`` has closed by event
    time ``now_ms`` (a play at exactly the window's end still counts, so it closes after).

    >>> window_closed(1_000, 61_000, 60), window_closed(1_000, 61_001, 60)
    (False, True)
    """
    return now_ms - decision_ts_ms > reward_window_s * 1000.0
