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

from collections.abc import Iterable

from topics.models import Title


class Catalog:
    """Titles by id, with genre and release-date indexes rebuilt lazily after changes."""

    def __init__(self, titles: Iterable[Title] = ()) -> None:
        self._titles: dict[str, Title] = {}
        self._by_genre: dict[str, list[str]] | None = None
        self._newest: list[str] | None = None
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
        self.version += 1

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
