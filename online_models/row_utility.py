"""Row-kind weights learned online from what members play out of each kind of row.

Every impression counts an *exposure* for the kind of row it was shown in (Top Picks,
Because You Watched, Continue Watching, ...), and a member's first play of a title shown in
a row within the attribution window counts a *take* for that kind
(:mod:`features.profile`). The take rate of each kind, shrunk toward the configured prior
weights (``Rules.row_weights``) by ``prior_strength`` pseudo-exposures, replaces the prior as
the kind's weight in the row utility: a kind members rarely play from sinks down the page,
whatever its prior.

Weights are scaled so the best kind gets the largest prior weight, so until there is
evidence (or with ``prior_strength`` very large) the page looks exactly as the priors say.

>>> u = RowKindUtility(prior_strength=100.0)
>>> prior = {"top_picks": 0.9, "continue_watching": 1.0}
>>> u.weights(prior) == prior
True
>>> u.learn({"top_picks": 1000, "continue_watching": 1000}, {"top_picks": 80})
>>> w = u.weights(prior)
>>> w["top_picks"] > w["continue_watching"], w["top_picks"]
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from online_models.checkpoint import dumps, require, restore

#: Version of the state layout :meth:`RowKindUtility.to_state` writes.
STATE_VERSION = 1


class RowKindUtility:
    """Exposures and takes per row kind, and the weights they imply.

    Parameters
    ----------
    prior_strength
        Pseudo-exposures at the prior take rate added to every kind.
    """

    def __init__(self, prior_strength: float = 500.0) -> None:
        self.prior_strength = prior_strength
        self._exposures: dict[str, float] = {}
        self._takes: dict[str, float] = {}
        self.version = 0

    def learn(self, exposures: Mapping[str, float], takes: Mapping[str, float]) -> None:
        """Add counts of exposures and takes by row kind."""
        for k, n in exposures.items():
            self._exposures[k] = self._exposures.get(k, 0.0) + n
        for k, n in takes.items():
            self._takes[k] = self._takes.get(k, 0.0) + n
        if exposures or takes:
            self.version += 1

    def take_rate(self, kind: str, prior_rate: float) -> float:
        """The kind's take rate shrunk toward ``prior_rate``."""
        a = self.prior_strength
        return ((self._takes.get(kind, 0.0) + a * prior_rate)
                / (self._exposures.get(kind, 0.0) + a))

    def weights(self, prior: Mapping[str, float]) -> dict[str, float]:
        """Row-kind weights for the utility: each kind's shrunk take rate, scaled so the
        best kind gets ``max(prior)``. The prior take rate of a kind is the overall take
        rate times its prior weight over the mean prior weight."""
        if not prior:
            return {}
        if not self._exposures:
            return dict(prior)
        total_e = sum(self._exposures.values())
        overall = (sum(self._takes.values()) + 1.0) / (total_e + 1.0)
        mean_prior = sum(prior.values()) / len(prior) or 1.0
        rates = {k: self.take_rate(k, overall * w / mean_prior) for k, w in prior.items()}
        top = max(rates.values())
        if top <= 0:
            return dict(prior)
        scale = max(prior.values()) / top
        return {k: r * scale for k, r in rates.items()}

    def counts(self) -> dict[str, tuple[float, float]]:
        """``kind -> (exposures, takes)`` learned so far."""
        kinds = set(self._exposures) | set(self._takes)
        return {k: (self._exposures.get(k, 0.0), self._takes.get(k, 0.0)) for k in sorted(kinds)}

    # -- checkpoints ----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The counts by row kind and the settings, as JSON values."""
        return {"prior_strength": self.prior_strength, "version": self.version,
                "exposures": dict(self._exposures), "takes": dict(self._takes)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RowKindUtility:
        """The model :meth:`to_state` described; :class:`CheckpointError` for a missing or
        non-numeric count."""
        name = cls.__name__
        model = cls(require(state, name, "prior_strength", float))
        model.version = require(state, name, "version", int)
        for key in ("exposures", "takes"):
            counts = require(state, name, key, dict)
            setattr(model, f"_{key}", {k: require(counts, name, k, float) for k in counts})
        return model

    def to_bytes(self) -> bytes:
        """A checkpoint of the learned counts (:mod:`online_models.checkpoint`)."""
        return dumps(type(self).__name__, STATE_VERSION, self.to_state())

    @classmethod
    def from_bytes(cls, data: bytes) -> RowKindUtility:
        """Restore a checkpoint written by :meth:`to_bytes`; :class:`CheckpointError` (a
        ``ValueError``) for anything else."""
        return restore(data, cls.__name__, {STATE_VERSION}, cls.from_state)
