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

try:  # the compiled page core (setup.py); the numpy code below is its reference
    from online_models import _page_core
except ImportError:  # pragma: no cover - an install without a C compiler
    _page_core = None

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


class _Columns:
    """What content scoring reads of one :class:`CatalogArrays` besides its own columns: the
    genre matrix genre-major and the new-release bonus by day."""

    def __init__(self, arr: CatalogArrays) -> None:
        self.arr = arr
        self.genres_t = np.ascontiguousarray(arr.genres.T)
        #: The genre flags title-major as bytes (the compiled core's view).
        self.genres_u8 = np.ascontiguousarray(arr.genres).view(np.uint8)
        self._new: dict[tuple[int, int], np.ndarray] = {}

    def new_release(self, today: int, days: int) -> np.ndarray:
        """Every title's bonus for recent release on day ``today`` (an ordinal)."""
        hit = self._new.get((today, days))
        if hit is None:
            if len(self._new) > 8:
                self._new.clear()
            age = today - self.arr.release_ordinal
            hit = np.where((age >= 0) & (age < days), 1.0 - age / days, 0.0)
            hit.flags.writeable = False
            self._new[(today, days)] = hit
        return hit


#: :class:`_Columns` of the catalog arrays in use, by id (each holds its arrays).
_COLUMNS: dict[int, _Columns] = {}


def _columns(arr: CatalogArrays) -> _Columns:
    hit = _COLUMNS.get(id(arr))
    if hit is None or hit.arr is not arr:
        if len(_COLUMNS) > 8:
            _COLUMNS.clear()
        hit = _COLUMNS[id(arr)] = _Columns(arr)
    return hit


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
    cached = _columns(arr)
    cast_full = np.zeros(len(arr))
    for c, v in cast_affinity.items():
        ix = arr.cast_index.get(c)
        if ix is not None and v > 0:
            cast_full[ix] = np.maximum(cast_full[ix], v / top_c)
    new_full = cached.new_release(today.toordinal(), new_release_days)
    if _page_core is not None and idx.dtype == np.int64:
        return _page_core.content_at(idx, cached.genres_u8, aff, top_g, cast_full, new_full,
                                     BASELINE, GENRE_WEIGHT, CAST_WEIGHT, NEW_WEIGHT)
    if len(arr.genre_names):
        # the best affinity among each title's genres: a reduction over the genres of the
        # catalog's genre-major copy (across titles, not along each title's short row)
        genre = np.where(cached.genres_t, aff[:, None], -np.inf).max(axis=0)[idx]
    else:
        genre = np.zeros(n)
    genre = np.where(np.isfinite(genre), genre, 0.0) / top_g
    cast = cast_full[idx]
    new = new_full[idx]
    out = BASELINE + GENRE_WEIGHT * np.maximum(genre, -1.0) + CAST_WEIGHT * cast + NEW_WEIGHT * new
    return np.clip(out, 0.0, 1.0)
