"""The project's evaluations, run from a checkout (not installed): ``python -m evaluation
movielens | artwork | obd`` (:mod:`evaluation.cli`).

``evaluation.offline`` holds the off-policy estimators (replay, IPS, SNIPS, direct method,
doubly robust) and is pure: no I/O; ``evaluation.stats`` the one z-value helper and interval
type; ``evaluation.metrics`` the page metrics; ``evaluation.published`` the published
reference numbers. ``evaluation.obd`` fetches the Open Bandit Dataset sample at run time and
reproduces the published check; ``evaluation.artwork`` and ``evaluation.movielens`` run the
real pipeline; ``evaluation.abtest`` compares variants from the event stream.
"""

from evaluation.offline import (
    BanditLogs,
    Estimate,
    LoggedRound,
    direct_method,
    doubly_robust,
    ips,
    on_policy,
    paired_difference,
    per_position,
    replay,
    snips,
)

__all__ = [
    "BanditLogs",
    "Estimate",
    "LoggedRound",
    "direct_method",
    "doubly_robust",
    "ips",
    "on_policy",
    "paired_difference",
    "per_position",
    "replay",
    "snips",
]
