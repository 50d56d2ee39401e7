"""Top Picks: a profile-title scorer learned online with River's ``BiasedMF``.

Implicit feedback only says what a member liked, so every positive label is paired with
``n_negatives`` titles sampled uniformly from the catalog that the member has not engaged
with, learned as target 0 (negative sampling, seeded). Scoring a whole catalog for one
profile is vectorized over the model's learned factors instead of calling ``predict_one``
per title, which would cost ~5 µs a title.

>>> m = TopPicksModel(n_factors=4, seed=1)
>>> for _ in range(30):
...     m.learn_one("p1", "liked", 1.0)
...     m.learn_one("p1", "disliked", 0.0)
>>> s = m.score_many("p1", ["liked", "disliked", "never-seen"])
>>> bool(s[0] > s[2] > s[1])
True
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Collection, Sequence

import numpy as np
from river import optim, reco

CHECKPOINT_FORMAT = 1


class TopPicksModel:
    """Online matrix factorization over (profile, title, target) triples.

    Parameters
    ----------
    n_factors
        Latent dimensions.
    learning_rate
        SGD step for biases and factors.
    l2
        L2 penalty on factors.
    n_negatives
        Sampled negatives per positive label in :meth:`learn_positive`.
    seed
        Seeds the factor initialization and negative sampling.
    """

    def __init__(self, n_factors: int = 16, learning_rate: float = 0.05, l2: float = 0.001,
                 n_negatives: int = 1, seed: int = 42) -> None:
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.n_negatives = n_negatives
        self.seed = seed
        self._rng = random.Random(seed)
        self._mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            l2_latent=l2,
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self.n_learned = 0
        self.version = 0

    # -- learning -------------------------------------------------------------------------
    def learn_one(self, profile_id: str, title_id: str, y: float) -> None:
        """Learn one (profile, title, target) triple."""
        self._mf.learn_one(profile_id, title_id, y)
        self.n_learned += 1

    def learn_positive(self, profile_id: str, title_id: str, y: float,
                       catalog_ids: Sequence[str], exclude: Collection[str] = ()) -> None:
        """Learn a label and, when it is positive, ``n_negatives`` sampled negatives."""
        self.learn_one(profile_id, title_id, y)
        if y <= 0.0:
            return
        for neg in sample_negatives(self._rng, title_id, catalog_ids, exclude,
                                    self.n_negatives):
            self.learn_one(profile_id, neg, 0.0)

    @property
    def sampling_rng(self) -> random.Random:
        """The generator of :meth:`learn_positive`'s negatives (checkpointed with the model),
        for callers that sample the negatives themselves and learn the triples."""
        return self._rng

    # -- scoring --------------------------------------------------------------------------
    def predict_one(self, profile_id: str, title_id: str) -> float:
        """River's own prediction for one pair (for tests and tools)."""
        return float(self._mf.predict_one(profile_id, title_id))

    def score_many(self, profile_id: str, title_ids: Sequence[str]) -> np.ndarray:
        """Scores of ``title_ids`` for ``profile_id``; unknown titles get the global mean
        plus the profile bias (same as ``predict_one``) without growing the model.

        The titles' biases and factors are gathered once per (title list, model state) and
        reused for every profile scored against the same list.
        """
        mf = self._mf
        key = (tuple(title_ids), self.n_learned)
        cached = getattr(self, "_item_cache", None)
        if cached is None or cached[0] != key:
            zeros = np.zeros(self.n_factors)
            biases = np.fromiter((mf.i_biases.get(t, 0.0) for t in title_ids), float,
                                 len(title_ids))
            lat = mf.i_latents
            items = (np.stack([lat.get(t, zeros) for t in title_ids]) if title_ids
                     else np.zeros((0, self.n_factors)))
            cached = self._item_cache = (key, biases, items)
        _, biases, items = cached
        scores = mf.global_mean.get() + mf.u_biases.get(profile_id, 0.0) + biases
        u = mf.u_latents.get(profile_id)
        if u is not None and len(title_ids):
            scores = scores + items @ u
        return scores

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_item_cache", None)  # derived; never checkpointed
        return state

    # -- checkpoints ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """A versioned checkpoint of the learned state."""
        return pickle.dumps({"format": CHECKPOINT_FORMAT, "model": self})

    @staticmethod
    def from_bytes(data: bytes) -> TopPicksModel:
        """Restore a checkpoint written by :meth:`to_bytes`."""
        obj = pickle.loads(data)
        if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a TopPicksModel checkpoint of a known format")
        model = obj["model"]
        if not isinstance(model, TopPicksModel):
            raise ValueError("checkpoint holds no TopPicksModel")
        return model


def sample_negatives(rng: random.Random, title_id: str, catalog_ids: Sequence[str],
                     exclude: Collection[str], n: int) -> list[str]:
    """``n`` titles drawn uniformly from ``catalog_ids`` other than ``title_id`` and the
    member's engaged titles (five draws each at most): Top Picks' negative labels."""
    out: list[str] = []
    if not catalog_ids:
        return out
    for _ in range(n):
        for _attempt in range(5):
            neg = catalog_ids[rng.randrange(len(catalog_ids))]
            if neg != title_id and neg not in exclude:
                out.append(neg)
                break
    return out
