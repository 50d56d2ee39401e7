"""Row ids and row kinds: which kind of home-page row a ``row_id`` names.

Page assembly (:mod:`online_models.page`) builds row ids from a kind and a seed
(``because-you-watched-t42``, ``genre-horror``, ``top10-US``); impressions carry only the
row id, and the worker credits a play to the kind of row it was shown in. This module is the
one place that maps the two.

>>> row_kind_of("because-you-watched-t42"), row_kind_of("top10-US"), row_kind_of("top-picks")
('because_you_watched', 'top10', 'top_picks')
>>> row_kind_of("hand-made")
'other'
"""

from __future__ import annotations

#: ``(row id prefix, row kind)``, longest prefixes first where one extends another.
ROW_ID_PREFIXES: tuple[tuple[str, str], ...] = (
    ("continue-watching", "continue_watching"),
    ("top-picks", "top_picks"),
    ("because-you-watched-", "because_you_watched"),
    ("more-like-", "more_like"),
    ("genre-", "genre"),
    ("top10-", "top10"),
    ("trending-", "trending"),
    ("new-releases", "new_releases"),
    ("popular", "popular"),
)


def row_kind_of(row_id: str) -> str:
    """The kind of row ``row_id`` names (``"other"`` for ids page assembly never builds)."""
    for prefix, kind in ROW_ID_PREFIXES:
        if row_id.startswith(prefix):
            return kind
    return "other"
