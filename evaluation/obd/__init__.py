"""The Open Bandit Dataset (OBD) evaluation: fetch and load the data (:mod:`.data`), obp's
BTS policy and the contextual CTR models (:mod:`.models`), the checks (:mod:`.check`), the
power of the contextual comparison (:mod:`.power`) and their text report (:mod:`.report`).
``python -m evaluation obd`` runs them.

Imports go one way: data <- models <- power <- check <- report.
"""

from evaluation.obd.check import (
    MIN_MATCHED_CLICKS,
    BtsCheck,
    ContextualComparison,
    PolicyReport,
    run_bts_check,
    run_contextual_comparison,
    smoothed_ctr_by_item_position,
)
from evaluation.obd.data import (
    BEHAVIORS,
    CAMPAIGNS,
    OBP_REQUIREMENT,
    OBP_WHEEL,
    ObdLogs,
    default_cache_dir,
    fetch_obd,
    load_bts_prior,
    load_obd,
    parse_prior_yaml,
)
from evaluation.obd.models import (
    RidgeLogisticCtr,
    SegmentCtrModel,
    action_dist_from_rankings,
    bts_action_dist,
    bts_rankings,
    cross_validated_l2,
)

__all__ = [
    "BEHAVIORS",
    "CAMPAIGNS",
    "MIN_MATCHED_CLICKS",
    "OBP_REQUIREMENT",
    "OBP_WHEEL",
    "BtsCheck",
    "ContextualComparison",
    "ObdLogs",
    "PolicyReport",
    "RidgeLogisticCtr",
    "SegmentCtrModel",
    "action_dist_from_rankings",
    "bts_action_dist",
    "bts_rankings",
    "cross_validated_l2",
    "default_cache_dir",
    "fetch_obd",
    "load_bts_prior",
    "load_obd",
    "parse_prior_yaml",
    "run_bts_check",
    "run_contextual_comparison",
    "smoothed_ctr_by_item_position",
]
