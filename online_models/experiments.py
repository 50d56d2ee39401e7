"""A/B experiments on the live pipeline: deterministic variant assignment and per-variant
page configuration.

A member's variant is a pure function of the profile id and the experiment's salt (a stable
hash mapped to [0, 1) and cut by the configured split), so the worker that materializes the
page and the server that serves it agree without talking to each other, and a member stays
in one variant for the life of the experiment. Variants can change the page configuration
(any :class:`~online_models.rules.Rules` field: row weights, diversity penalty, guardrails);
the server records the variant on every impression, and ``python -m evaluation.abtest``
compares variants from the event stream.

>>> exp = Experiment.from_settings_values("homepage-v1", "control:1,diverse:1",
...                                       '{"diverse": {"diversity_penalty": 1.5}}')
>>> exp.variant_of("p1") == exp.variant_of("p1")
True
>>> sorted(exp.split)
['control', 'diverse']
>>> [exp.rules_for(v, Rules()).diversity_penalty for v in ("diverse", "control")]
[1.5, 0.2]
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from homestream.settings import ConfigError, Settings
from online_models.rules import Rules


def bucket(profile_id: str, salt: str) -> float:
    """The member's position in ``[0, 1)`` for the experiment ``salt`` (uniform, stable).

    >>> bucket("p1", "exp") == bucket("p1", "exp") != bucket("p1", "other")
    True
    """
    digest = hashlib.blake2b(f"{salt}\x00{profile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_variant(profile_id: str, salt: str, split: Mapping[str, float]) -> str:
    """The variant of ``profile_id`` in the experiment ``salt``; ``split`` maps variant names
    to shares (normalized by their sum).

    >>> assign_variant("p1", "exp", {"only": 1.0})
    'only'
    """
    if not split:
        raise ValueError("split must name at least one variant")
    shares = sorted(split.items())
    for name, w in shares:
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"share of {name!r} must be finite and >= 0, got {w}")
    total = sum(w for _, w in shares)
    if total <= 0:
        raise ValueError("shares must not all be 0")
    u = bucket(profile_id, salt) * total
    acc = 0.0
    for name, w in shares:
        acc += w
        if u < acc:
            return name
    return next(name for name, w in reversed(shares) if w > 0)  # float round-off at the top


def parse_split(text: str) -> dict[str, float]:
    """``"control:0.5,treatment:0.5"`` -> ``{"control": 0.5, "treatment": 0.5}``.

    >>> parse_split("a:1, b:3")
    {'a': 1.0, 'b': 3.0}
    """
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, share = part.partition(":")
        if not name.strip() or not share.strip():
            raise ValueError(f"{part!r} is not name:share")
        out[name.strip()] = float(share)
    if not out:
        raise ValueError("no variant given")
    return out


@dataclass(frozen=True)
class Experiment:
    """One experiment: its salt, split and each variant's rule overrides."""

    salt: str
    split: dict[str, float]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_settings_values(cls, salt: str, split: str, overrides: str) -> Experiment:
        split_map = parse_split(split)
        over = json.loads(overrides) if overrides.strip() else {}
        if not isinstance(over, dict):
            raise ValueError("overrides must be a JSON object of variant -> rule fields")
        unknown = set(over) - set(split_map)
        if unknown:
            raise ValueError(f"overrides name variants not in the split: {sorted(unknown)}")
        exp = cls(salt, split_map, over)
        for name in split_map:  # validate every variant's rules now, not on first use
            exp.rules_for(name, Rules())
        assign_variant("probe", salt, split_map)
        return exp

    def variant_of(self, profile_id: str) -> str:
        return assign_variant(profile_id, self.salt, self.split)

    def rules_for(self, variant: str, base: Rules) -> Rules:
        """``base`` with the variant's overrides applied (validated)."""
        over = self.overrides.get(variant)
        if not over:
            return base
        return Rules.model_validate({**base.model_dump(), **over})


def experiment_from_settings(settings: Settings) -> Experiment:
    """The configured experiment; :class:`ConfigError` names the bad setting."""
    try:
        return Experiment.from_settings_values(settings.experiment_salt,
                                               settings.experiment_split,
                                               settings.experiment_overrides)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError("invalid configuration: HOMESTREAM_EXPERIMENT_SPLIT / "
                          f"HOMESTREAM_EXPERIMENT_OVERRIDES: {exc}") from None
