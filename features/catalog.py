"""An in-memory index over catalog records, for feature lookups and candidate generation.

>>> import datetime as dt
>>> from topics.models import Artwork, Title
>>> def t(i, g, d):
...     return Title(title_id=i, name=i, genres=g, maturity_rating="PG",
...                  release_date=dt.date(2020, 1, d), duration_s=60.0,
...                  artwork=[Artwork(artwork_id=f"{i}-a", url=f"u/{i}")])
>>> cat = Catalog([t("a", ["Horror"], 1), t("b", ["Comedy", "Horror"], 2)])
>>> cat.by_genre("Horror"), cat.newest(1), cat.genres_of("b")
(['a', 'b'], ['b'], ['Comedy', 'Horror'])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import numpy as np

from topics.models import MATURITY_LEVELS, Title

T = TypeVar("T")


class Catalog:
    """Titles by id, with genre and release-date indexes rebuilt lazily after changes."""

    def __init__(self, titles: Iterable[Title] = ()) -> None:
        self._titles: dict[str, Title] = {}
        self._by_genre: dict[str, list[str]] | None = None
        self._newest: list[str] | None = None
        self._derived: dict[Hashable, Any] = {}
        self.version = 0
        for t in titles:
            self.upsert(t)

    def upsert(self, title: Title) -> None:
        """Add or replace a title (a newer ``updated_ts_ms`` wins; equal replaces)."""
        old = self._titles.get(title.title_id)
        if old is not None and old.updated_ts_ms > title.updated_ts_ms:
            return
        self._titles[title.title_id] = title
        self._changed()

    def remove(self, title_id: str) -> None:
        """Drop a title (a tombstone on the catalog topic)."""
        if self._titles.pop(title_id, None) is not None:
            self._changed()

    def _changed(self) -> None:
        self._by_genre = None
        self._newest = None
        self._derived = {}
        self.version += 1

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """A value computed from the catalog, cached until the catalog changes.

        >>> cat = Catalog()
        >>> cat.derived("n", lambda: len(cat))
        0
        """
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = build()
            return value

    def arrays(self) -> CatalogArrays:
        """Column arrays over the titles in catalog order (for vectorized scoring)."""
        return self.derived("arrays", lambda: CatalogArrays(list(self._titles.values())))

    def __len__(self) -> int:
        return len(self._titles)

    def __contains__(self, title_id: object) -> bool:
        return title_id in self._titles

    def get(self, title_id: str) -> Title | None:
        return self._titles.get(title_id)

    def titles(self) -> list[Title]:
        return list(self._titles.values())

    def title_ids(self) -> list[str]:
        return list(self._titles)

    def genres_of(self, title_id: str) -> list[str]:
        t = self._titles.get(title_id)
        return t.genres if t is not None else []

    def cast_of(self, title_id: str) -> list[str]:
        t = self._titles.get(title_id)
        return t.cast if t is not None else []

    def genres(self) -> list[str]:
        return sorted(self._genre_index())

    def by_genre(self, genre: str) -> list[str]:
        """Title ids of ``genre`` in catalog order."""
        return self._genre_index().get(genre, [])

    def _genre_index(self) -> dict[str, list[str]]:
        if self._by_genre is None:
            idx: dict[str, list[str]] = {}
            for t in self._titles.values():
                for g in t.genres:
                    idx.setdefault(g, []).append(t.title_id)
            self._by_genre = idx
        return self._by_genre

    def newest(self, n: int) -> list[str]:
        """The ``n`` most recently released titles."""
        if self._newest is None:
            self._newest = [
                t.title_id for t in sorted(
                    self._titles.values(), key=lambda t: (t.release_date, t.title_id),
                    reverse=True)
            ]
        return self._newest[:n]


class CatalogArrays:
    """The catalog as columns: one row per title, in catalog order.

    >>> import datetime as dt
    >>> from topics.models import Artwork
    >>> t = Title(title_id="a", name="A", genres=["Horror"], maturity_rating="R",
    ...           release_date=dt.date(2020, 1, 1), duration_s=1.0, cast=["X"],
    ...           artwork=[Artwork(artwork_id="a1", url="u")], availability=["US"])
    >>> arr = CatalogArrays([t])
    >>> arr.ids, arr.genre_names, arr.genres.tolist(), arr.maturity.tolist()
    (['a'], ['Horror'], [[True]], [3])
    >>> arr.available("US").tolist(), arr.available("FR").tolist()
    ([True], [False])
    """

    def __init__(self, titles: list[Title]) -> None:
        self.ids = [t.title_id for t in titles]
        self.pos = {tid: i for i, tid in enumerate(self.ids)}
        self.genre_names = sorted({g for t in titles for g in t.genres})
        gpos = {g: i for i, g in enumerate(self.genre_names)}
        self.genres = np.zeros((len(titles), len(self.genre_names)), dtype=bool)
        cast: dict[str, list[int]] = {}
        for i, t in enumerate(titles):
            for g in t.genres:
                self.genres[i, gpos[g]] = True
            for c in t.cast:
                cast.setdefault(c, []).append(i)
        self.genre_pos = gpos
        self.cast_index = {c: np.array(ix) for c, ix in cast.items()}
        self.maturity = np.array([MATURITY_LEVELS.index(t.maturity_rating) for t in titles],
                                 dtype=np.int8)
        self.release_ordinal = np.array([t.release_date.toordinal() for t in titles],
                                        dtype=np.int64)
        self._restricted = [(i, set(t.availability)) for i, t in enumerate(titles)
                            if t.availability]
        self._available: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def available(self, country: str) -> np.ndarray:
        """Mask of titles available in ``country`` (empty availability = everywhere)."""
        mask = self._available.get(country)
        if mask is None:
            mask = np.ones(len(self.ids), dtype=bool)
            for i, where in self._restricted:
                mask[i] = country in where
            self._available[country] = mask
        return mask
