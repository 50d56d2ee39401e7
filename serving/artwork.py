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
from dataclasses import asdict
from typing import Any

from features.catalog import Catalog
from online_models.bandits.base import Arm, ArtworkPolicy, Context
from online_models.bandits.sticky import Assignment, StickyAssignment


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


def _previous(raw: Any) -> Assignment | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Assignment(**raw)
    except TypeError:
        return None  # an unreadable stored assignment: choose again


class ArtworkChooser:
    """Chooses (or keeps) the artwork of each item on a page, in place."""

    def __init__(self, sticky_s: float, max_rows: int = 3) -> None:
        self.sticky = StickyAssignment(period_s=sticky_s)
        #: Rows whose artwork the policy decides (the first screen); titles further down
        #: keep their default image and are logged as such (policy ``materialized``).
        self.max_rows = max_rows

    def choose(self, policy: ArtworkPolicy, catalog: Catalog,
               rows: Sequence[dict[str, Any]], context: Context,
               previous: Mapping[str, Any], now_ms: int) -> dict[str, dict[str, Any]]:
        """Set ``artwork_id``, ``artwork_url``, ``propensity``, ``policy`` and
        ``policy_version`` on every item whose title has artwork candidates; return the new
        assignments (title id -> JSON object) to store for the member."""
        new: dict[str, dict[str, Any]] = {}
        for row in rows[: self.max_rows]:
            for item in row.get("items", ()):
                title = catalog.get(item["title_id"])
                if title is None or not title.artwork:
                    continue
                arms = [Arm(a.artwork_id, tuple(a.tags)) for a in title.artwork]
                decision = self.sticky.assign(policy, context, arms,
                                              _previous(previous.get(title.title_id)), now_ms)
                choice = decision.choice
                art = next(a for a in title.artwork if a.artwork_id == choice.artwork_id)
                item["artwork_id"], item["artwork_url"] = art.artwork_id, art.url
                item["propensity"] = choice.propensity
                item["policy"] = choice.policy
                item["policy_version"] = choice.policy_version
                if decision.is_new:
                    new[title.title_id] = asdict(decision.assignment)
        return new
