"""Features of a (member context, artwork) pair: context x artwork-tag crosses, hashed.

Artwork ids are per title, so a model keyed by artwork id knows nothing about a new title's
images. Tags ("comedy", "romance", "cast", ...) are shared across titles, so crosses of the
member's context with the image's tags (``"genre:Comedy*tag:comedy"``) learned on old titles
score a new title's images from their first impression. Every name is hashed with a stable
hash (BLAKE2b, not Python's per-process ``hash``) into ``n_dims`` buckets, so the feature
space is fixed whatever titles, tags or countries appear later; checkpoints stay valid
across restarts.

What one (context, arm) pair yields:

- ``bias`` (1.0) and ``tag:<tag>`` (1.0) for each tag of the arm (``untagged`` if none),
- ``art:<artwork_id>`` (1.0) when ``arm_id_feature`` (an image's own appeal; 0 while cold),
- ``<context feature>*tag:<tag>`` for every context feature and tag: numeric values enter as
  ``sign(v) * log1p(|v|)`` (affinities stay ~linear, counts are damped), strings as
  ``<key>=<value>`` with 1.0, keys in ``categorical`` (e.g. ``hour``) like strings.

Context-only features are left out on purpose: they add the same amount to every candidate of
the title and so cannot change which image wins.

>>> from online_models.bandits.base import Arm
>>> f = Featurizer(n_dims=2**10)
>>> names = f.names({"genre:Comedy": 0.8, "country": "US", "hour": 21}, Arm("t1-a", ("comedy",)))
>>> for name, value in names.items():
...     print(name, round(value, 3))
bias 1.0
tag:comedy 1.0
art:t1-a 1.0
country=US*tag:comedy 1.0
genre:Comedy*tag:comedy 0.588
hour=21*tag:comedy 1.0
>>> x = f({"genre:Comedy": 0.8, "country": "US", "hour": 21}, Arm("t1-a", ("comedy",)))
>>> len(x), all(0 <= i < 2**10 for i in x)
(6, True)
>>> x == f({"hour": 21, "country": "US", "genre:Comedy": 0.8}, Arm("t1-a", ("Comedy",)))
True
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from online_models.bandits.base import Arm
from online_models.checkpoint import CheckpointError

__all__ = ["Featurizer", "stable_hash"]

UNTAGGED = "untagged"


@functools.lru_cache(maxsize=1 << 16)
def stable_hash(name: str) -> int:
    """A 64-bit hash of ``name`` that is the same in every process and Python version
    (the recent ones kept: every page asks for the same context x tag crosses).

    >>> stable_hash("genre:Comedy*tag:comedy") == stable_hash("genre:Comedy*tag:comedy")
    True
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _normalize_tags(tags: Sequence[str]) -> tuple[str, ...]:
    cleaned = sorted({t.strip().lower() for t in tags if t and t.strip()})
    return tuple(cleaned) or (UNTAGGED,)


@dataclass(frozen=True)
class Featurizer:
    """Turns (context, arm) into a sparse ``{bucket: value}`` dict of hashed crosses.

    Pure: no state, no I/O; the same inputs always give the same dict.

    Parameters
    ----------
    n_dims
        Number of hash buckets (colliding names add up).
    categorical
        Context keys whose numeric values are categories (``hour=21``), not magnitudes.
    arm_id_feature
        Add an ``art:<artwork_id>`` indicator (the image's own appeal beyond its tags).
    """

    n_dims: int = 2**18
    categorical: frozenset[str] = frozenset({"hour", "weekday", "day_of_week"})
    arm_id_feature: bool = True

    def to_state(self) -> dict[str, Any]:
        """The settings as JSON values (for policy checkpoints)."""
        return {"n_dims": self.n_dims, "categorical": sorted(self.categorical),
                "arm_id_feature": self.arm_id_feature}

    @classmethod
    def from_state(cls, state: Any) -> Featurizer:
        """The featurizer :meth:`to_state` described; :class:`CheckpointError` otherwise."""
        if not isinstance(state, dict):
            raise CheckpointError("featurizer state is not an object")
        n_dims, categorical = state.get("n_dims"), state.get("categorical")
        arm_id = state.get("arm_id_feature")
        if (not isinstance(n_dims, int) or n_dims < 1 or not isinstance(arm_id, bool)
                or not isinstance(categorical, list)
                or not all(isinstance(c, str) for c in categorical)):
            raise CheckpointError(f"featurizer state {state!r} is not n_dims, categorical, "
                                  "arm_id_feature")
        return cls(n_dims=n_dims, categorical=frozenset(categorical), arm_id_feature=arm_id)

    def context_terms(self, context: Mapping[str, object]) -> list[tuple[str, float]]:
        """The context as (name, value) terms, sorted by name, zero values dropped."""
        terms: list[tuple[str, float]] = []
        for key in sorted(context):
            value = context[key]
            if value is None:
                continue
            if isinstance(value, str):
                if value:
                    terms.append((f"{key}={value}", 1.0))
                continue
            if not isinstance(value, numbers.Real):
                raise TypeError(f"context value of {key!r} must be str or number, "
                                f"got {type(value).__name__}")
            v = float(value)
            if not math.isfinite(v):
                continue
            if key in self.categorical:
                label = int(v) if v.is_integer() else v
                terms.append((f"{key}={label}", 1.0))
            elif v != 0.0:
                terms.append((key, math.copysign(math.log1p(abs(v)), v)))
        return terms

    def names_from_terms(self, terms: Sequence[tuple[str, float]], arm: Arm) -> dict[str, float]:
        """Unhashed features of ``arm`` given precomputed :meth:`context_terms`."""
        tags = _normalize_tags(arm.tags)
        out: dict[str, float] = {"bias": 1.0}
        for tag in tags:
            out[f"tag:{tag}"] = 1.0
        if self.arm_id_feature:
            out[f"art:{arm.artwork_id}"] = 1.0
        for tag in tags:
            for name, value in terms:
                out[f"{name}*tag:{tag}"] = value
        return out

    def names(self, context: Mapping[str, object], arm: Arm) -> dict[str, float]:
        """Unhashed feature names and values (for debugging and explanations)."""
        return self.names_from_terms(self.context_terms(context), arm)

    def hashed(self, names: Mapping[str, float]) -> dict[int, float]:
        """Hash feature names into ``n_dims`` buckets, summing collisions."""
        out: dict[int, float] = {}
        for name, value in names.items():
            i = stable_hash(name) % self.n_dims
            out[i] = out.get(i, 0.0) + value
        return out

    def __call__(self, context: Mapping[str, object], arm: Arm) -> dict[int, float]:
        return self.hashed(self.names(context, arm))

    def many(self, context: Mapping[str, object], arms: Sequence[Arm]) -> list[dict[int, float]]:
        """Hashed features of every arm, featurizing the context once. Without the artwork
        id feature, arms with the same tags share one dict (read-only: models recognize the
        shared dicts and featurize them once)."""
        terms = self.context_terms(context)
        if self.arm_id_feature:
            return [self.hashed(self.names_from_terms(terms, arm)) for arm in arms]
        # without the artwork id, arms with the same tags have the same features
        by_tags: dict[tuple[str, ...], dict[int, float]] = {}
        out = []
        for arm in arms:
            z = by_tags.get(arm.tags)
            if z is None:
                z = by_tags[arm.tags] = self.hashed(self.names_from_terms(terms, arm))
            out.append(z)
        return out
