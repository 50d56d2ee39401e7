"""Artwork in the loop: the server picks the image of every title on a page it serves.

The server, not the worker, chooses: only the server sees the request's context (device,
time of day) at the moment the image is shown, each request can explore, and the decision
is logged right there with the impression that shows it (artwork id, propensity, policy
name and version, and the context as JSON). A member keeps a title's image for
``HOMESTREAM_ARTWORK_STICKY_S`` (attribution and recognizability); new titles and new
artwork have no assignment yet, so they are explored from their first impression. The
worker learns from the impressions and the plays that follow them
(:func:`features.profile.apply_event`) and checkpoints the policy, which the server reloads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from features.catalog import Catalog
from online_models.bandits.base import Arm, ArtworkPolicy, Choice, Context
from online_models.bandits.sticky import Assignment, StickyAssignment
from online_models.page import PageRow
from topics.models import Artwork


def request_context(page_context: Mapping[str, Any], country: str | None, device: str | None,
                    now_ms: int) -> Context:
    """The policy's context: the member features the worker stored with the page, plus
    where, on what and when the page is shown.

    >>> request_context({"genre:Horror": 1.0}, "US", "tv", 3_600_000 * 21)
    {'genre:Horror': 1.0, 'country': 'US', 'device': 'tv', 'hour': 21}
    """
    ctx: Context = {k: float(v) for k, v in page_context.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
    ctx["country"] = country or "ZZ"
    ctx["device"] = device or "unknown"
    ctx["hour"] = int(now_ms // 3_600_000) % 24
    return ctx


def previous_assignment(raw: Any) -> Assignment | None:
    """A stored assignment (JSON bytes or a dict), ``None`` when absent or unreadable."""
    if isinstance(raw, bytes | str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(raw, dict):
        return None
    try:
        return Assignment(**raw)
    except TypeError:
        return None  # an unreadable stored assignment: choose again


class TitleArt(NamedTuple):
    """A title's artwork candidates: the policy's arms and the images by artwork id."""

    arms: list[Arm]
    images: dict[str, Artwork]


class ArtworkChooser:
    """Chooses (or keeps) the artwork of each item on a page, in place.

    The titles of the first screen whose assignment is missing or expired are decided
    together: one :meth:`~online_models.bandits.base.ArtworkPolicy.propensities_many` call
    (one posterior over all their candidates), then one draw per title in page order, which
    gives the same propensities and draws as deciding title by title. The candidates of each
    title are built once per catalog snapshot.
    """

    def __init__(self, sticky_s: float, max_rows: int = 3,
                 decisions_max_age_s: float = 0.0) -> None:
        self.sticky = StickyAssignment(period_s=sticky_s)
        #: How long a compiled page keeps deciding with the policy version it was prepared
        #: for after a newer one is loaded (:meth:`serving.page_plan.PagePlan.decisions`).
        self.decisions_max_age_ms = decisions_max_age_s * 1000.0
        #: Rows whose artwork the policy decides (the first screen); titles further down
        #: keep their default image and are logged as such (policy ``materialized``).
        self.max_rows = max_rows
        self._catalog: Catalog | None = None
        self._art: dict[str, TitleArt | None] = {}

    def title_art(self, catalog: Catalog, title_id: Any) -> TitleArt | None:
        """The candidates of ``title_id`` in ``catalog`` (built once per catalog snapshot);
        ``None`` for a title without artwork or an unknown one."""
        if catalog is not self._catalog:
            self._catalog, self._art = catalog, {}
        try:
            return self._art[title_id]
        except KeyError:
            pass  # not built for this catalog yet: built below
        except TypeError:
            return None  # not a usable title id
        title = catalog.get(title_id)
        art = None if title is None or not title.artwork else TitleArt(
            [Arm(a.artwork_id, tuple(a.tags)) for a in title.artwork],
            {a.artwork_id: a for a in title.artwork})
        self._art[title_id] = art
        return art

    def choose(self, policy: ArtworkPolicy, catalog: Catalog,
               rows: Sequence[PageRow], context: Context,
               previous: Mapping[str, Any], now_ms: int) -> dict[str, dict[str, Any]]:
        """Set ``artwork_id``, ``artwork_url``, ``propensity``, ``policy`` and
        ``policy_version`` on every item whose title has artwork candidates; return the new
        assignments (title id -> JSON object) to store for the member."""
        kept: list[tuple[dict[str, Any], TitleArt, Choice]] = []
        todo: list[tuple[dict[str, Any], TitleArt]] = []
        for row in rows[: self.max_rows]:
            for item in row.get("items", ()):
                art = self.title_art(catalog, item.get("title_id"))
                if art is None:
                    continue
                prev = previous_assignment(previous.get(item["title_id"]))
                if self.sticky.keep(prev, now_ms, art.images.keys()):
                    assert prev is not None
                    kept.append((item, art, prev.to_choice()))
                else:
                    todo.append((item, art))
        new: dict[str, dict[str, Any]] = {}
        if todo:
            props = policy.propensities_many(context, [art.arms for _, art in todo])
            for (item, art), p in zip(todo, props, strict=True):
                choice = policy.draw(p)
                kept.append((item, art, choice))
                new[item["title_id"]] = {
                    "artwork_id": choice.artwork_id, "chosen_at_ms": now_ms,
                    "propensity": choice.propensity, "policy": choice.policy,
                    "policy_version": choice.policy_version}  # Assignment's fields
        for item, art, choice in kept:
            image = art.images[choice.artwork_id]
            item["artwork_id"], item["artwork_url"] = image.artwork_id, image.url
            item["propensity"] = choice.propensity
            item["policy"] = choice.policy
            item["policy_version"] = choice.policy_version
        return new
