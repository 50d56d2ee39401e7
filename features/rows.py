"""Row ids and row kinds: the one place that builds a ``row_id`` and reads its kind back.

Page assembly (:mod:`online_models.page`) builds row ids from a kind and a seed with
:func:`row_id` (``because-you-watched-t42``, ``genre-horror``, ``top10-US``); impressions
carry only the row id, and the worker credits a play to the kind of row it was shown in with
:func:`row_kind_of`. The kinds are the :class:`RowKind` members; their values are the strings
pages, rules (``row_weights``, ``required_rows``) and stored row statistics use.

>>> row_kind_of("because-you-watched-t42"), row_kind_of("top10-US"), row_kind_of("top-picks")
('because_you_watched', 'top10', 'top_picks')
>>> row_kind_of("hand-made")
'other'
>>> row_id(RowKind.BECAUSE_YOU_WATCHED, "t42"), row_id(RowKind.NEW_RELEASES)
('because-you-watched-t42', 'new-releases')
>>> genre_row_id("Children's Comedy")
'genre-childrens-comedy'
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache


class RowKind(StrEnum):
    """The kinds of home-page row page assembly builds (``OTHER``: an id it never builds)."""

    CONTINUE_WATCHING = "continue_watching"
    TOP_PICKS = "top_picks"
    BECAUSE_YOU_WATCHED = "because_you_watched"
    MORE_LIKE = "more_like"
    GENRE = "genre"
    TOP10 = "top10"
    TRENDING = "trending"
    NEW_RELEASES = "new_releases"
    POPULAR = "popular"
    OTHER = "other"


#: ``(row id prefix, row kind)``, longest prefixes first where one extends another. A prefix
#: ending in ``-`` is followed by a seed (a title id, a genre slug or a country).
ROW_ID_PREFIXES: tuple[tuple[str, RowKind], ...] = (
    ("continue-watching", RowKind.CONTINUE_WATCHING),
    ("top-picks", RowKind.TOP_PICKS),
    ("because-you-watched-", RowKind.BECAUSE_YOU_WATCHED),
    ("more-like-", RowKind.MORE_LIKE),
    ("genre-", RowKind.GENRE),
    ("top10-", RowKind.TOP10),
    ("trending-", RowKind.TRENDING),
    ("new-releases", RowKind.NEW_RELEASES),
    ("popular", RowKind.POPULAR),
)
_PREFIX_OF = {kind: prefix for prefix, kind in ROW_ID_PREFIXES}


def row_id(kind: RowKind, seed: str = "") -> str:
    """The id of a ``kind`` row; ``seed`` (title id, genre slug, country) for seeded kinds."""
    prefix = _PREFIX_OF[kind]
    if seed and not prefix.endswith("-"):
        raise ValueError(f"row kind {kind.value} takes no seed (got {seed!r})")
    return prefix + seed


def genre_row_id(genre: str) -> str:
    """The id of the row of one genre (lower case, spaces as ``-``, apostrophes dropped)."""
    return row_id(RowKind.GENRE, genre.lower().replace(" ", "-").replace("'", ""))


@lru_cache(maxsize=8192)  # every impression asks; a page's row ids repeat
def row_kind_of(row_id: str) -> str:
    """The kind of row ``row_id`` names (``"other"`` for ids page assembly never builds).

    The kind's value, a plain ``str``: kinds key the row statistics stored as JSON, and
    orjson accepts only exact ``str`` dict keys.
    """
    for prefix, kind in ROW_ID_PREFIXES:
        if row_id.startswith(prefix):
            return kind.value
    return RowKind.OTHER.value
