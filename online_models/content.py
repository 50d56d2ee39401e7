"""Content-based scoring: genres, cast and freshness, for new titles and new members.

Needs no interaction data about the title itself, so a title published a second ago can be
placed for members whose tastes match its metadata, with an exploration bonus while it is
new.

>>> import datetime as dt
>>> from topics.models import Artwork, Title
>>> def t(i, g, d):
...     return Title(title_id=i, name=i, genres=g, maturity_rating="PG", release_date=d,
...                  duration_s=1.0, artwork=[Artwork(artwork_id="a", url="u")])
>>> titles = [t("h", ["Horror"], dt.date(2020, 1, 1)), t("c", ["Comedy"], dt.date(2020, 1, 1)),
...           t("n", ["Comedy"], dt.date(2026, 1, 1))]
>>> s = content_scores(titles, {"Horror": 2.0, "Comedy": 0.5}, {}, dt.date(2026, 1, 10))
>>> [round(float(x), 3) for x in s]
[0.8, 0.275, 0.445]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np

from features.catalog import CatalogArrays
from topics.models import Title

GENRE_WEIGHT = 0.7
CAST_WEIGHT = 0.1
NEW_WEIGHT = 0.2
BASELINE = 0.1


def content_scores(titles: Sequence[Title], genre_affinity: Mapping[str, float],
                   cast_affinity: Mapping[str, float], today: dt.date,
                   new_release_days: int = 60) -> np.ndarray:
    """Scores in [0, 1]: genre match (affinities scaled by the member's strongest), cast
    match, and a bonus for recent releases that fades over ``new_release_days``."""
    arr = CatalogArrays(list(titles))
    return content_scores_indexed(arr, np.arange(len(arr)), genre_affinity, cast_affinity,
                                  today, new_release_days)


def content_scores_indexed(arr: CatalogArrays, idx: np.ndarray,
                           genre_affinity: Mapping[str, float],
                           cast_affinity: Mapping[str, float], today: dt.date,
                           new_release_days: int = 60) -> np.ndarray:
    """:func:`content_scores` for the titles at positions ``idx`` of ``arr``, vectorized.

    The genre term is the best affinity among the title's genres (genres the member has no
    affinity for count 0), scaled by the member's strongest affinity and floored at -1; the
    cast term is the best positive cast affinity, scaled likewise.
    """
    n = len(idx)
    if n == 0:
        return np.zeros(0)
    top_g = max((abs(v) for v in genre_affinity.values()), default=0.0) or 1.0
    top_c = max((abs(v) for v in cast_affinity.values()), default=0.0) or 1.0
    aff = np.zeros(len(arr.genre_names))
    for g, v in genre_affinity.items():
        p = arr.genre_pos.get(g)
        if p is not None:
            aff[p] = v
    gm = arr.genres[idx]
    genre = np.where(gm, aff, -np.inf).max(axis=1) if gm.shape[1] else np.zeros(n)
    genre = np.where(np.isfinite(genre), genre, 0.0) / top_g
    cast_full = np.zeros(len(arr))
    for c, v in cast_affinity.items():
        ix = arr.cast_index.get(c)
        if ix is not None and v > 0:
            np.maximum.at(cast_full, ix, v / top_c)
    cast = cast_full[idx]
    age = today.toordinal() - arr.release_ordinal[idx]
    new = np.where((age >= 0) & (age < new_release_days), 1.0 - age / new_release_days, 0.0)
    out = BASELINE + GENRE_WEIGHT * np.maximum(genre, -1.0) + CAST_WEIGHT * cast + NEW_WEIGHT * new
    return np.clip(out, 0.0, 1.0)
