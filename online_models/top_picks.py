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

import random
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from river import optim, reco

from online_models.checkpoint import (
    CheckpointError,
    dumps,
    random_state,
    require,
    require_array,
    require_strings,
    restore,
    set_random_state,
)

#: Version of the state layout :meth:`TopPicksModel.to_state` writes.
STATE_VERSION = 1
#: River's optimizers inside ``BiasedMF`` whose step counts a checkpoint carries.
_OPTIMIZERS = ("bias_optimizer", "latent_optimizer", "u_bias_optimizer", "i_bias_optimizer",
               "u_latent_optimizer", "i_latent_optimizer")


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

    def forget_profile(self, profile_id: str) -> bool:
        """Remove everything learned about one member (their bias and factors), for an
        erasure; whether there was anything. Titles keep what the member taught them."""
        mf = self._mf
        had = profile_id in mf.u_biases or profile_id in mf.u_latents
        mf.u_biases.pop(profile_id, None)
        mf.u_latents.pop(profile_id, None)
        return had

    def profile_ids(self) -> set[str]:
        """Every member the model holds parameters of."""
        return set(self._mf.u_biases) | set(self._mf.u_latents)

    def knows_profile(self, profile_id: str) -> bool:
        """Whether the model holds parameters of the member."""
        return profile_id in self._mf.u_biases or profile_id in self._mf.u_latents

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
    def to_state(self) -> dict[str, Any]:
        """The settings and learned state as JSON values and arrays: biases and factors of
        profiles and titles (ids with one row each), the global mean, the optimizers' step
        counts and the random generators (negative sampling, factor initialization)."""
        mf = self._mf
        init_rng = mf.latent_initializer._rng.get_state(legacy=True)
        state: dict[str, Any] = {
            "n_factors": self.n_factors, "learning_rate": self.learning_rate, "l2": self.l2,
            "n_negatives": self.n_negatives, "seed": self.seed, "n_learned": self.n_learned,
            "version": self.version, "rng": random_state(self._rng),
            "mf_rng": random_state(mf._rng),
            "global_mean": [float(mf.global_mean.n), float(mf.global_mean._mean)],
            "steps": {name: getattr(mf, name).n_iterations for name in _OPTIMIZERS},
            "init_rng_keys": np.asarray(init_rng[1], dtype="<u4"),
            "init_rng": [int(init_rng[2]), int(init_rng[3]), float(init_rng[4])],
        }
        for side in ("u", "i"):
            biases, latents = getattr(mf, f"{side}_biases"), getattr(mf, f"{side}_latents")
            state[f"{side}_bias_ids"] = list(biases)
            state[f"{side}_biases"] = np.fromiter(biases.values(), float, len(biases))
            state[f"{side}_latent_ids"] = list(latents)
            state[f"{side}_latents"] = (np.stack(list(latents.values())) if latents
                                        else np.zeros((0, self.n_factors)))
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TopPicksModel:
        """The model :meth:`to_state` described; :class:`CheckpointError` when a value is
        missing, of the wrong type or of a shape that does not fit the others."""
        name = cls.__name__
        k = require(state, name, "n_factors", int)
        if k < 1:
            raise CheckpointError(f"{name} checkpoint n_factors is {k}")
        model = cls(n_factors=k, learning_rate=require(state, name, "learning_rate", float),
                    l2=require(state, name, "l2", float),
                    n_negatives=require(state, name, "n_negatives", int),
                    seed=require(state, name, "seed", int))
        model.n_learned = require(state, name, "n_learned", int)
        model.version = require(state, name, "version", int)
        set_random_state(model._rng, state.get("rng"), name)
        mf = model._mf
        set_random_state(mf._rng, state.get("mf_rng"), name)
        n, mean = require(state, name, "global_mean", list)
        mf.global_mean.n, mf.global_mean._mean = float(n), float(mean)
        steps = require(state, name, "steps", dict)
        for opt in _OPTIMIZERS:
            getattr(mf, opt).n_iterations = require(steps, name, opt, int)
        keys = require_array(state, name, "init_rng_keys", (624,), "u")
        pos, has_gauss, gauss = require(state, name, "init_rng", list)
        mf.latent_initializer._rng.set_state(("MT19937", keys, int(pos), int(has_gauss),
                                              float(gauss)))
        for side in ("u", "i"):
            ids = require_strings(state, name, f"{side}_bias_ids")
            values = require_array(state, name, f"{side}_biases", (len(ids),))
            getattr(mf, f"{side}_biases").update(zip(ids, values.tolist(), strict=True))
            ids = require_strings(state, name, f"{side}_latent_ids")
            rows = require_array(state, name, f"{side}_latents", (len(ids), k))
            getattr(mf, f"{side}_latents").update(zip(ids, rows, strict=True))
        return model

    def to_bytes(self) -> bytes:
        """A checkpoint of the learned state (:mod:`online_models.checkpoint`)."""
        return dumps(type(self).__name__, STATE_VERSION, self.to_state())

    @classmethod
    def from_bytes(cls, data: bytes) -> TopPicksModel:
        """Restore a checkpoint written by :meth:`to_bytes`; :class:`CheckpointError` (a
        ``ValueError``) for anything else."""
        return restore(data, cls.__name__, {STATE_VERSION}, cls.from_state)

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
