"""Guardrails and business rules as declarative configuration, applied at materialization and
again at serve time.

Rules live in a JSON file named by ``HOMESTREAM_RULES_FILE`` (the defaults below apply when
it is unset), so changing what a kids profile may see is a configuration change, not a code
edit. :meth:`Rules.allows` is the single check both the worker and the server use.

>>> import datetime as dt
>>> from topics.models import Artwork, Title
>>> t = Title(title_id="t1", name="Night", genres=["Horror"], maturity_rating="R",
...           release_date=dt.date(2020, 1, 1), duration_s=60.0,
...           artwork=[Artwork(artwork_id="a", url="u")], availability=["US"])
>>> rules = Rules()
>>> rules.allows(t, ProfileMeta(kids=True), "US"), rules.allows(t, ProfileMeta(), "US")
(False, True)
>>> rules.allows(t, ProfileMeta(), "FR")
False
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.catalog import Catalog
from features.profile import ProfileMeta
from features.rows import RowKind
from homestream.settings import ConfigError, Settings
from topics.models import MATURITY_LEVELS, Title

__all__ = ["ProfileMeta", "Rules", "load_rules", "rules_from_settings"]

Rating = Literal["G", "PG", "PG-13", "R", "NC-17"]


#: The signals :func:`online_models.page.relevance_indexed` blends.
RELEVANCE_SIGNALS = frozenset({"model", "cowatch", "content", "popularity"})
#: The row kinds :func:`online_models.page.candidate_rows` builds.
ROW_KINDS = frozenset(k.value for k in RowKind if k is not RowKind.OTHER)
#: Rules objects' JSON by id (each entry holds its object, so an id is not reused meanwhile).
_RULES_JSON: dict[int, tuple[Rules, str]] = {}
_RULES_JSON_KEPT = 256


class Rules(BaseModel):
    """Declarative guardrails and row-ranking weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Highest maturity rating a kids profile may see.
    kids_max_rating: Rating = "PG"
    #: Highest maturity rating any other profile may see unless its own setting is lower.
    default_max_rating: Rating = "NC-17"
    #: Genres never shown to kids profiles, whatever their rating.
    kids_blocked_genres: list[str] = Field(default_factory=lambda: ["Horror"])
    #: Titles never shown (licensing, takedowns).
    blocked_titles: list[str] = Field(default_factory=list)
    #: Hide titles not available in the member's country.
    enforce_availability: bool = True
    #: Prior weight of each row kind in the row-utility score.
    row_weights: dict[str, float] = Field(default_factory=lambda: {
        "continue_watching": 1.0, "top_picks": 0.9, "because_you_watched": 0.8,
        "genre": 0.7, "top10": 0.6, "trending": 0.55, "new_releases": 0.5,
        "more_like": 0.6, "popular": 0.65,
    })
    #: Weights of the relevance blend (see :func:`online_models.page.relevance_indexed`):
    #: ``model`` (Top Picks matrix factorization), ``cowatch`` (item-to-item co-watch
    #: similarity to the member's history), ``content`` (genre and cast match, new-release
    #: bonus) and ``popularity`` (decayed play counts in the member's country).
    relevance_weights: dict[str, float] = Field(default_factory=lambda: {
        "model": 0.3, "cowatch": 1.0, "content": 0.1, "popularity": 0.6,
    })
    #: History size at which the personal signals (``model``, ``cowatch``) get half their
    #: weight: a member with ``n`` titles engaged or rated gets ``n / (n + ramp)`` of it.
    personal_ramp: float = Field(5.0, gt=0.0)
    #: Weight of the ``i``-th most recent title in the co-watch signal: ``history_decay ** i``
    #: (1: the whole recent history counts alike; lower: the last titles count most).
    history_decay: float = Field(0.85, gt=0.0, le=1.0)
    #: Penalty on a row's utility per unit of overlap with rows already placed.
    diversity_penalty: float = Field(0.2, ge=0.0)
    #: Most rows on a page.
    max_rows: int = Field(10, ge=1)
    #: Titles of a row in view before the member scrolls it: every row's first
    #: ``visible_columns`` titles are placed before any row's further titles (no title
    #: twice on the page), and a row's utility is that of its titles in view.
    visible_columns: int = Field(5, ge=1)
    #: Pseudo-impressions that shrink a member's own row-kind take rates toward their
    #: overall rate (:mod:`online_models.row_affinity`; 0: the population's weights only).
    member_row_strength: float = Field(10.0, ge=0.0)
    #: Relevance multiplier per time a title was shown to the member and not played
    #: (1: no discount).
    impression_discount: float = Field(1.0, gt=0.0, le=1.0)
    #: Fewest titles a recommendation row may show once titles placed above are removed
    #: (capped at the row length); shorter rows are left out.
    min_row_items: int = Field(4, ge=1)
    #: Row kinds every page keeps when it has a candidate of that kind with enough titles:
    #: the greedy selection reserves the last free rows for them (a page of ``max_rows``
    #: rows would otherwise leave out a low-utility kind such as Trending).
    required_rows: list[str] = Field(default_factory=lambda: [
        "continue_watching", "top_picks", "trending", "genre"])
    #: How many genre rows ("Because You Like <genre>", the member's strongest genres) are
    #: candidates; the selection keeps those worth their place.
    genre_rows: int = Field(5, ge=0)
    #: How much a seed's similarity orders the titles of its row (Because You Watched X,
    #: More Like X): relevance x (1 - a + a x similarity); 0: by relevance alone, among
    #: the seed's neighbours.
    neighbour_similarity: float = Field(0.5, ge=0.0, le=1.0)
    #: A required kind shown to a member this many times (impressions) without one play
    #: from it is no longer reserved a place on their pages: it still competes on utility
    #: (the required rules' cost is bounded per member); 0: always reserved.
    required_rows_patience: int = Field(15, ge=0)
    #: How many "Because You Watched" rows at most.
    because_you_watched_rows: int = Field(5, ge=0)
    #: Days a title counts as a new release.
    new_release_days: int = Field(60, ge=1)

    @field_validator("relevance_weights")
    @classmethod
    def _known_signals(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - RELEVANCE_SIGNALS)
        if unknown:
            raise ValueError(f"unknown relevance signal(s) {unknown}; known: "
                             f"{sorted(RELEVANCE_SIGNALS)}")
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError("relevance weights must be >= 0 with at least one > 0")
        return v

    @field_validator("row_weights", "required_rows")
    @classmethod
    def _known_kinds(cls, v: dict[str, float] | list[str]) -> dict[str, float] | list[str]:
        unknown = sorted(set(v) - ROW_KINDS)
        if unknown:
            raise ValueError(f"unknown row kind(s) {unknown}; known: {sorted(ROW_KINDS)}")
        return v

    def max_rating_for(self, meta: ProfileMeta) -> str:
        """The strictest of the rule's and the profile's own rating limits."""
        limit = self.kids_max_rating if meta.kids else self.default_max_rating
        if meta.max_rating is not None and (
                MATURITY_LEVELS.index(meta.max_rating) < MATURITY_LEVELS.index(limit)):
            limit = meta.max_rating
        return limit

    def allows(self, title: Title, meta: ProfileMeta, country: str | None) -> bool:
        """Whether ``title`` may be shown to a profile with ``meta`` in ``country``."""
        if title.title_id in self.blocked_titles:
            return False
        if not title.allowed_for(self.max_rating_for(meta)):
            return False
        if meta.kids and any(g in self.kids_blocked_genres for g in title.genres):
            return False
        return not (self.enforce_availability and country and country not in ("ALL", "ZZ")
                    and not title.available_in(country))

    def _json(self) -> str:
        """The rules as JSON (a cache key), kept per rules object (they are frozen)."""
        hit = _RULES_JSON.get(id(self))
        if hit is None or hit[0] is not self:
            hit = _RULES_JSON[id(self)] = (self, self.model_dump_json())
            while len(_RULES_JSON) > _RULES_JSON_KEPT:
                del _RULES_JSON[next(iter(_RULES_JSON))]
        return hit[1]

    def allowed_mask(self, catalog: Catalog, meta: ProfileMeta, country: str | None) -> np.ndarray:
        """:meth:`allows` over the whole catalog at once, as a boolean mask in catalog order
        (cached per catalog version, rules, rating limit and country)."""
        limit = self.max_rating_for(meta)
        key = ("allowed", self._json(), meta.kids, limit, country)

        def build() -> np.ndarray:
            arr = catalog.arrays()
            mask = arr.maturity <= MATURITY_LEVELS.index(limit)
            if meta.kids:
                for g in self.kids_blocked_genres:
                    if g in arr.genre_pos:
                        mask &= ~arr.genres[:, arr.genre_pos[g]]
            for tid in self.blocked_titles:
                if tid in arr.pos:
                    mask[arr.pos[tid]] = False
            if self.enforce_availability and country and country not in ("ALL", "ZZ"):
                mask &= arr.available(country)
            return mask

        return catalog.derived(key, build)

    def allows_item(self, item: dict, meta: ProfileMeta, country: str | None) -> bool:
        """The same check on a materialized page item (server side, no catalog needed)."""
        return self.item_check(meta, country)(item)

    def item_check(self, meta: ProfileMeta, country: str | None) -> Callable[[dict], bool]:
        """:meth:`allows_item` for one profile and country, with what depends only on them
        worked out once (a page's items are checked with one). Raises ``KeyError`` /
        ``ValueError`` on an item without a title id or a known rating."""
        blocked, levels = self.blocked_titles, MATURITY_LEVELS
        limit = levels.index(self.max_rating_for(meta))
        kids_genres = self.kids_blocked_genres if meta.kids else None
        where = country if (self.enforce_availability and country
                            and country not in ("ALL", "ZZ")) else None

        def allowed(item: dict) -> bool:
            if item["title_id"] in blocked or levels.index(item["maturity_rating"]) > limit:
                return False
            if kids_genres is not None and any(g in kids_genres
                                               for g in item.get("genres", ())):
                return False
            avail = item.get("availability") or []
            return not (where and avail and where not in avail)

        return allowed


def load_rules(path: str | None) -> Rules:
    """Rules from a JSON file, or the defaults when ``path`` is empty.

    Raises ``ValueError`` naming the file and the bad key on invalid content.
    """
    if not path:
        return Rules()
    try:
        return Rules.model_validate(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"rules file {path}: {exc}") from exc
    except Exception as exc:  # pydantic ValidationError: re-raise with the file name
        raise ValueError(f"rules file {path}: {exc}") from exc


def rules_from_settings(settings: Settings) -> Rules:
    """The rules named by ``HOMESTREAM_RULES_FILE``; :class:`ConfigError` names the setting."""
    try:
        return load_rules(settings.rules_file)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: HOMESTREAM_RULES_FILE: {exc}") from None
