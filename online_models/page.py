"""Home-page assembly: candidate rows from features and models, de-duplicated, as plain data.

Pure: takes a profile's state (or ``None`` for a member without history), the catalog, the
country's trending list and a scoring function, and returns the page as a JSON-ready dict.
No title appears twice on a page; Continue Watching claims its titles first.

>>> import datetime as dt
>>> from features.catalog import Catalog
>>> from topics.models import Artwork, Title
>>> cat = Catalog([Title(title_id=f"t{i}", name=f"T{i}", genres=["Drama"],
...     maturity_rating="PG", release_date=dt.date(2024, 1, i + 1), duration_s=60.0,
...     artwork=[Artwork(artwork_id=f"t{i}-a", url=f"u{i}")]) for i in range(5)])
>>> page = assemble_page(None, cat, trending=[("t3", 9.0)], scorer=None,
...                      config=PageConfig(row_length=3), country="US", now_ms=0)
>>> [(r["row_id"], [i["title_id"] for i in r["items"]]) for r in page["rows"]]
[('trending-US', ['t3']), ('new-releases', ['t4', 't2', 't1']), ('genre-drama', ['t0'])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.catalog import Catalog
from features.profile import ProfileState
from topics.models import Title

Scorer = Callable[[str, Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PageConfig:
    """Shape of a materialized page."""

    row_length: int = 20
    genre_rows: int = 2
    affinity_half_life_s: float = 14 * 24 * 3600.0
    max_rating: str = "NC-17"


def _item(title: Title, score: float, **extra: Any) -> dict[str, Any]:
    art = title.artwork[0]
    return {
        "title_id": title.title_id,
        "name": title.name,
        "artwork_id": art.artwork_id,
        "artwork_url": art.url,
        "score": round(float(score), 6),
        "maturity_rating": title.maturity_rating,
        "availability": list(title.availability),
        **extra,
    }


class _RowFiller:
    """Fills rows from ranked candidates, skipping titles already on the page or not
    allowed for this member (country, maturity)."""

    def __init__(self, catalog: Catalog, country: str, max_rating: str, length: int) -> None:
        self.catalog = catalog
        self.country = country
        self.max_rating = max_rating
        self.length = length
        self.used: set[str] = set()

    def allowed(self, title: Title | None) -> bool:
        return (title is not None and title.available_in(self.country)
                and title.allowed_for(self.max_rating))

    def fill(self, ranked: Iterable[tuple[str, float]],
             extra: Callable[[str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        items = []
        for tid, score in ranked:
            if tid in self.used:
                continue
            title = self.catalog.get(tid)
            if not self.allowed(title):
                continue
            assert title is not None
            items.append(_item(title, score, **(extra(tid) if extra else {})))
            self.used.add(tid)
            if len(items) >= self.length:
                break
        return items


def _row(row_id: str, kind: str, title: str, explanation: str,
         items: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not items:
        return None
    return {"row_id": row_id, "kind": kind, "title": title, "explanation": explanation,
            "items": items}


def _genre_slug(genre: str) -> str:
    return "genre-" + genre.lower().replace(" ", "-").replace("'", "")


def assemble_page(state: ProfileState | None, catalog: Catalog,
                  trending: Sequence[tuple[str, float]], scorer: Scorer | None,
                  config: PageConfig, country: str, now_ms: int) -> dict[str, Any]:
    """Build one profile's page (or the default page when ``state`` is ``None``)."""
    fill = _RowFiller(catalog, country, config.max_rating, config.row_length)
    top = trending[0][1] if trending else 1.0
    trend_rank = [(t, s / top) for t, s in trending]
    trend_score = dict(trend_rank)
    rows: list[dict[str, Any] | None] = []
    n = config.row_length

    def newest() -> list[tuple[str, float]]:
        ids = catalog.newest(4 * n)
        return [(t, 1.0 - i / max(1, len(ids))) for i, t in enumerate(ids)]

    def by_popularity(ids: Iterable[str], skip: set[str]) -> list[tuple[str, float]]:
        ranked = [(t, trend_score.get(t, 0.0)) for t in ids if t not in skip]
        ranked.sort(key=lambda kv: -kv[1])  # stable: catalog order breaks ties
        return ranked

    if state is None:
        rows.append(_row(f"trending-{country}", "trending", f"Trending Now in {country}",
                         "Popular with members in your country right now",
                         fill.fill(trend_rank)))
        rows.append(_row("new-releases", "new_releases", "New Releases", "Recently added",
                         fill.fill(newest())))
        genre_pop: dict[str, float] = {}
        for t, s in trending:
            for g in catalog.genres_of(t):
                genre_pop[g] = genre_pop.get(g, 0.0) + s
        genres = sorted(catalog.genres(), key=lambda g: (-genre_pop.get(g, 0.0), g))
        for g in genres[: config.genre_rows]:
            rows.append(_row(_genre_slug(g), "genre", f"Popular {g}", f"Popular {g} titles",
                             fill.fill(by_popularity(catalog.by_genre(g), set()))))
        return _page(None, False, country, now_ms, 0, rows)

    engaged = set(state.engaged) | set(state.finished)
    cw = state.continue_watching()
    rows.append(_row("continue-watching", "continue_watching", "Continue Watching",
                     "Pick up where you left off",
                     fill.fill(((t, 1.0 - i / max(1, len(cw))) for i, t in enumerate(cw)),
                               extra=lambda t: {"resume_position_s": state.resume_position(t)})))
    if scorer is not None:
        cands = [t.title_id for t in catalog.titles()
                 if t.title_id not in engaged and fill.allowed(t)]
        if cands:
            scores = scorer(state.profile_id, cands)
            order = np.argsort(-scores, kind="stable")[: 3 * n]
            rows.append(_row("top-picks", "top_picks", "Top Picks for You",
                             "Learned from what you watched and rated",
                             fill.fill((cands[i], float(scores[i])) for i in order)))
    affinity = state.genre_affinity(now_ms, config.affinity_half_life_s)
    liked = [g for g, s in sorted(affinity.items(), key=lambda kv: (-kv[1], kv[0])) if s > 0]
    for g in liked[: config.genre_rows]:
        rows.append(_row(_genre_slug(g), "genre", f"Because You Like {g}",
                         f"You have been watching {g}",
                         fill.fill(by_popularity(catalog.by_genre(g), engaged))))
    rows.append(_row(f"trending-{country}", "trending", f"Trending Now in {country}",
                     "Popular with members in your country right now",
                     fill.fill((t, s) for t, s in trend_rank if t not in engaged)))
    rows.append(_row("new-releases", "new_releases", "New Releases", "Recently added",
                     fill.fill((t, s) for t, s in newest() if t not in engaged)))
    return _page(state.profile_id, True, country, now_ms, state.last_event_ts_ms, rows)


def _page(profile_id: str | None, personalized: bool, country: str, now_ms: int,
          as_of: int, rows: list[dict[str, Any] | None]) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "personalized": personalized,
        "country": country,
        "generated_at_ms": now_ms,
        "as_of_event_ts_ms": as_of,
        "rows": [r for r in rows if r is not None],
    }
