"""Published reference numbers the evaluations reproduce, defined once.

Each comes with where it was published; the reports print them next to what was measured.
"""

from __future__ import annotations

__all__ = ["OBD_BTS", "OBD_BTS_N_SIM", "OBD_BTS_SEED", "RIVER_MOVIELENS"]

#: obp quickstart (examples/quickstart/obd.ipynb): BernoulliTS(is_zozotown_prior=True,
#: campaign="all", random_state=12345).compute_batch_action_dist(n_sim=100000) evaluated on
#: the random/all logs of the Open Bandit Dataset sample; DM and DR there use a
#: logistic-regression reward model. ``true`` is the mean click of the bts/all logs
#: (OpenBanditDataset.calc_on_policy_policy_value_estimate).
OBD_BTS = {"ipw": 0.004553, "dm": 0.003545, "dr": 0.004727, "true": 0.0042}
#: The Monte Carlo seed and slate count behind :data:`OBD_BTS`.
OBD_BTS_SEED = 12345
OBD_BTS_N_SIM = 100_000

#: River's docs, "Matrix Factorization for Recommender Systems, part 1" (MovieLens 100K,
#: progressive validation): (MAE, RMSE) per model.
RIVER_MOVIELENS = {
    "River BiasedMF": (0.748559, 0.947854),
    "River Baseline": (0.754651, 0.954148),
    "running mean": (0.942162, 1.125783),
}
