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
    top_g = max((abs(v) for v in genre_affinity.values()), default=0.0) or 1.0
    top_c = max((abs(v) for v in cast_affinity.values()), default=0.0) or 1.0
    out = np.empty(len(titles))
    for i, t in enumerate(titles):
        g = max((genre_affinity.get(x, 0.0) for x in t.genres), default=0.0) / top_g
        c = max((cast_affinity.get(x, 0.0) for x in t.cast), default=0.0) / top_c
        age = (today - t.release_date).days
        new = max(0.0, 1.0 - age / new_release_days) if 0 <= age < new_release_days else 0.0
        out[i] = BASELINE + GENRE_WEIGHT * max(g, -1.0) + CAST_WEIGHT * c + NEW_WEIGHT * new
    return np.clip(out, 0.0, 1.0)
