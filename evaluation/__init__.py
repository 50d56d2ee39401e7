"""Offline (off-policy) evaluation of bandit policies from logged data.

``evaluation.offline`` holds the estimators (replay, IPS, SNIPS, direct method, doubly
robust) and is pure: no I/O. ``evaluation.obd`` fetches the Open Bandit Dataset sample at
run time and reproduces the published check; ``python -m evaluation obd`` prints it.
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
