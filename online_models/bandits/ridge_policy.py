"""The artwork policies that score with one shared :class:`HybridRidge` (LinUCB, linear
Thompson sampling, epsilon-greedy): how they learn a reward and what their checkpoints hold.
They differ only in how they turn the posterior into propensities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from online_models.bandits.base import Arm, ArtworkPolicy, Context
from online_models.bandits.features import Featurizer
from online_models.bandits.hybrid import HybridRidge

__all__ = ["RidgePolicy"]


class RidgePolicy(ArtworkPolicy):
    """An :class:`ArtworkPolicy` over ``self.featurizer`` and a ``self._model`` ridge (set by
    the subclass's constructor)."""

    featurizer: Featurizer
    _model: HybridRidge

    def _learn_one(self, context: Context, arm: Arm, reward: float) -> None:
        self._model.learn_one(self.featurizer(context, arm), arm.artwork_id, reward)

    def _learn_many(self, contexts: Sequence[Context], arms: Sequence[Arm],
                    rewards: Sequence[float]) -> None:
        featurize = self.featurizer
        self._model.learn_many([featurize(c, a) for c, a in zip(contexts, arms, strict=True)],
                               [a.artwork_id for a in arms], rewards)

    def _learned_state(self) -> dict[str, Any]:
        return {"featurizer": self.featurizer.to_state(),
                **{f"model.{k}": v for k, v in self._model.to_state().items()}}

    def _restore_learned(self, state: dict[str, Any]) -> None:
        self.featurizer = Featurizer.from_state(state.get("featurizer"))
        self._model = HybridRidge.from_state(
            {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
