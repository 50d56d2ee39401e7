"""Synthetic catalog, profiles and player sessions for demos, tests, backlogs and benches.

The module is longer than ~500 lines because the catalog, the members and their sessions are
drawn from the same seeded generators in a fixed order that the demo, the benches, the
evaluations and the tests rely on; splitting it would spread that order over several files.

Everything here is pure and seeded (one private ``random.Random`` per call or simulator), so
the same seed gives the same titles, profiles and events. The only I/O is in
:func:`run_simulation` (drives a :class:`~player.producer.PlayerProducer`) and
:func:`publish_catalog` (produces titles to the catalog topic).

A session is what one member does in one visit, in event time: sometimes a search, a page of
impressions (one artwork candidate per title, chosen uniformly, so propensity 1/3), scrolls,
clicks, and plays of titles the member likes more often than others. A play is a ``start``
at 0, ``progress`` heartbeats every ``heartbeat_s`` of event time, and a ``stop`` either
early (abandoned, under 50%) or late (watched, over 50%; sometimes finished, over 95%).
Thumbs or stars follow now and then.

It lives in the product, not with the evaluations, because the product uses it: the
``homestream simulate`` command and the demo (``make demo``) publish its catalog and drive its
members against a running pipeline; the evaluations and benches reuse it from here.

>>> import datetime as dt
>>> cat = synthetic_catalog(50, seed=1, now=dt.date(2026, 1, 1))
>>> sim = PlayerSimulator(cat, synthetic_profiles(5, seed=1), seed=1)
>>> evs = sim.session(sim.profiles[0], start_ms=1_700_000_000_000)
>>> all(a.event_ts_ms < b.event_ts_ms for a, b in zip(evs, evs[1:]))
True
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from features.rows import RowKind, row_id, row_kind_of
from topics.models import (
    MATURITY_LEVELS,
    Artwork,
    Click,
    Event,
    Feedback,
    Impression,
    Play,
    Scroll,
    Search,
    SessionStart,
    Title,
)

if TYPE_CHECKING:  # imported lazily at run time: the pure part needs no Kafka client
    from homestream.player.producer import PlayerProducer
    from homestream.settings import Settings

GENRES: tuple[str, ...] = (
    "Action", "Comedy", "Drama", "Horror", "Romance", "Documentary", "Kids", "Sci-Fi",
    "Thriller", "Animation",
)
#: Relative share of titles whose main genre this is.
GENRE_SHARE: dict[str, float] = {
    "Action": 12, "Comedy": 14, "Drama": 16, "Horror": 7, "Romance": 8, "Documentary": 6,
    "Kids": 9, "Sci-Fi": 8, "Thriller": 11, "Animation": 9,
}
#: Genres that plausibly go with a main genre (second and third genres come from here).
COMPANIONS: dict[str, tuple[str, ...]] = {
    "Action": ("Thriller", "Sci-Fi", "Comedy", "Drama"),
    "Comedy": ("Romance", "Drama", "Action", "Animation"),
    "Drama": ("Romance", "Thriller", "Documentary", "Comedy"),
    "Horror": ("Thriller", "Sci-Fi", "Comedy"),
    "Romance": ("Comedy", "Drama"),
    "Documentary": ("Drama",),
    "Kids": ("Animation", "Comedy"),
    "Sci-Fi": ("Action", "Thriller", "Drama", "Horror"),
    "Thriller": ("Action", "Drama", "Horror"),
    "Animation": ("Kids", "Comedy", "Action", "Sci-Fi"),
}
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "BR", "IN", "JP")
COUNTRY_SHARE: tuple[float, ...] = (35, 12, 10, 9, 12, 14, 8)
DEVICES: tuple[str, ...] = ("tv", "web", "mobile", "tablet")
DEVICE_SHARE: tuple[float, ...] = (45, 20, 25, 10)
ARTWORK_TAGS: tuple[str, ...] = ("cast", "scenic")
#: Titles released this recently count as new releases.
NEW_RELEASE_DAYS = 30

_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Midnight", "Crimson", "Electric",
    "Frozen", "Wild", "Lost", "Secret", "Burning", "Distant", "Hollow", "Iron", "Little",
    "Savage", "Velvet", "Winter", "Paper", "Northern", "Quiet", "Restless",
)
_NOUNS = (
    "Harbor", "Kingdom", "Signal", "Garden", "Empire", "River", "Echo", "Frontier", "Orchard",
    "Protocol", "Lighthouse", "Mirror", "Circus", "Voyage", "Station", "Canyon", "Letters",
    "Machine", "Summer", "Shadows", "Island", "Detective", "Dragon", "Galaxy",
)
_PLACES = ("Avalon", "the North", "Lisbon", "Mars", "Tokyo", "the Deep", "Old Town", "Rio")
_FIRST = (
    "Ava", "Ben", "Chloe", "Diego", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jude", "Kai",
    "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera",
)
_LAST = (
    "Adams", "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Ito",
    "Jensen", "Khan", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Silva",
)
_ROW_COLUMNS = (4, 8)
_ROWS = (2, 4)


def _uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (deterministic for a seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _slug(genre: str) -> str:
    return genre.lower().replace(" ", "-")


# -- catalog ---------------------------------------------------------------------------------
def _genres(rng: random.Random) -> list[str]:
    main = rng.choices(GENRES, weights=[GENRE_SHARE[g] for g in GENRES])[0]
    n = rng.choices((1, 2, 3), weights=(45, 40, 15))[0]
    others = list(COMPANIONS[main])
    rng.shuffle(others)
    return [main, *others[: n - 1]]


def _rating(genres: Sequence[str], rng: random.Random) -> str:
    if "Kids" in genres:
        return rng.choices(("G", "PG"), weights=(65, 35))[0]
    if "Animation" in genres:
        return rng.choices(("G", "PG", "PG-13"), weights=(45, 42, 13))[0]
    if "Horror" in genres:
        return rng.choices(("PG-13", "R", "NC-17"), weights=(20, 75, 5))[0]
    return rng.choices(MATURITY_LEVELS, weights=(5, 15, 40, 35, 5))[0]


def _duration_min(genres: Sequence[str], rng: random.Random) -> int:
    if rng.random() < 0.1:  # specials and episodes
        return rng.randint(20, 60)
    if "Kids" in genres or "Animation" in genres:
        return rng.randint(20, 100)
    if "Documentary" in genres:
        return rng.randint(40, 120)
    return rng.randint(80, 150)


def _name(rng: random.Random, taken: set[str]) -> str:
    pattern = rng.randrange(3)
    adj, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
    base = (f"The {adj} {noun}", f"{noun} of {rng.choice(_PLACES)}", f"{adj} {noun}")[pattern]
    name, k = base, 2
    while name in taken:
        name, k = f"{base} {k}", k + 1
    taken.add(name)
    return name


def synthetic_catalog(n_titles: int, seed: int, now: dt.date | None = None, *,
                      artwork_base_url: str = "https://img.example.com/art/") -> list[Title]:
    """``n_titles`` plausible titles, the same for the same ``seed`` and ``now``.

    Parameters
    ----------
    n_titles
        How many titles (ids ``t00000``, ``t00001``, ...).
    seed
        Seed of the private random generator.
    now
        Release dates are spread over the ten years before this date (default today); about
        8% fall in the last :data:`NEW_RELEASE_DAYS` days.
    artwork_base_url
        Artwork URLs are ``{base}{title_id}/art{k}.jpg``.

    >>> cat = synthetic_catalog(3, seed=7, now=dt.date(2026, 1, 1))
    >>> [len(t.artwork) for t in cat], cat[0].artwork[0].artwork_id
    ([3, 3, 3], 't00000-art0')
    """
    rng = random.Random(seed)
    today = now or dt.date.today()
    updated = int(dt.datetime.combine(today, dt.time(), dt.UTC).timestamp() * 1000)
    base = artwork_base_url.rstrip("/") + "/"
    taken: set[str] = set()
    titles = []
    for i in range(n_titles):
        title_id = f"t{i:05d}"
        genres = _genres(rng)
        if rng.random() < 0.08:
            age_days = rng.randrange(NEW_RELEASE_DAYS)
        else:
            age_days = rng.randrange(NEW_RELEASE_DAYS, 3650)
        tag_sets = [[_slug(genres[0])], *([t] for t in ARTWORK_TAGS)]
        rng.shuffle(tag_sets)
        artwork = [
            Artwork(artwork_id=f"{title_id}-art{k}", url=f"{base}{title_id}/art{k}.jpg",
                    tags=tags)
            for k, tags in enumerate(tag_sets)
        ]
        availability: list[str] = []
        if rng.random() < 0.25:
            availability = sorted(rng.sample(COUNTRIES, rng.randint(1, 4)))
        cast = [f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for _ in range(rng.randint(2, 5))]
        titles.append(Title(
            title_id=title_id, name=_name(rng, taken), genres=genres,
            maturity_rating=_rating(genres, rng),
            release_date=today - dt.timedelta(days=age_days),
            duration_s=float(_duration_min(genres, rng) * 60), artwork=artwork,
            availability=availability, cast=list(dict.fromkeys(cast)), updated_ts_ms=updated,
        ))
    return titles


# -- profiles --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimProfile:
    """A simulated member: where and how they watch, and what they like.

    ``genre_weights`` holds the favourite genres with weights summing to 1; other genres are
    liked a little (see :meth:`affinity`). ``activity`` scales how often the member visits.
    """

    profile_id: str
    country: str
    device: str
    genre_weights: Mapping[str, float] = field(hash=False)
    max_rating: str = "NC-17"
    activity: float = 1.0

    @property
    def kids(self) -> bool:
        """A kids profile (restricted to ``G`` and ``PG``)."""
        return MATURITY_LEVELS.index(self.max_rating) <= MATURITY_LEVELS.index("PG")

    def affinity(self, genres: Sequence[str]) -> float:
        """How much the member likes a title of ``genres``, from 0 (not at all) to 1."""
        top = max(self.genre_weights.values(), default=0.0)
        if not top:
            return 0.1
        best = max((self.genre_weights.get(g, 0.0) for g in genres), default=0.0)
        return 0.1 + 0.9 * best / top

    def allows(self, title: Title) -> bool:
        """Whether this member may see ``title`` (country and maturity)."""
        return title.available_in(self.country) and title.allowed_for(self.max_rating)


def synthetic_profiles(n: int, seed: int) -> list[SimProfile]:
    """``n`` members (ids ``p00000``, ...) with 1-3 favourite genres; about 10% kids profiles.

    >>> ps = synthetic_profiles(3, seed=1)
    >>> [p.profile_id for p in ps], all(abs(sum(p.genre_weights.values()) - 1) < 1e-9
    ...                                   for p in ps)
    (['p00000', 'p00001', 'p00002'], True)
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kids = rng.random() < 0.1
        country = rng.choices(COUNTRIES, weights=COUNTRY_SHARE)[0]
        if kids:
            device = rng.choice(("tv", "tablet"))
            favourites = rng.sample(("Kids", "Animation", "Comedy"), rng.randint(1, 3))
        else:
            device = rng.choices(DEVICES, weights=DEVICE_SHARE)[0]
            favourites = rng.sample([g for g in GENRES if g != "Kids"], rng.randint(1, 3))
        raw = [rng.random() + 0.2 for _ in favourites]
        total = sum(raw)
        out.append(SimProfile(
            profile_id=f"p{i:05d}", country=country, device=device,
            genre_weights={g: w / total for g, w in zip(favourites, raw, strict=True)},
            max_rating="PG" if kids else "NC-17",
            activity=rng.lognormvariate(0.0, 0.8),
        ))
    return out


# -- sessions --------------------------------------------------------------------------------
class _Session:
    """Builds one session's events with strictly increasing event time."""

    def __init__(self, rng: random.Random, profile: SimProfile, start_ms: int) -> None:
        self.rng = rng
        self.profile = profile
        self.t = start_ms - 1
        self.events: list[Event] = []

    def emit(self, model: type[Event], after_ms: float, **fields: Any) -> None:
        self.t += max(1, int(after_ms))
        self.events.append(model(event_id=_uuid(self.rng), profile_id=self.profile.profile_id,
                                 event_ts_ms=self.t, **fields))


class PlayerSimulator:
    """Generates realistic sessions for simulated members over a catalog.

    Parameters
    ----------
    catalog
        Titles the members can see and play.
    profiles
        Members drawn from by :meth:`interleaved` and :meth:`events_stream`.
    seed
        Seed of the private random generator: the same seed and the same calls give the same
        events.
    heartbeat_s
        Event-time seconds between ``progress`` heartbeats of a play.
    max_heartbeats
        When set, a play has at most this many heartbeats (their spacing stretches), which
        keeps long plays short in event count.
    search_p
        Probability that a session starts with a search.
    session_starts
        Open each session with a ``SessionStart`` (the app opening), as players do; off by
        default so the benches' event streams stay as they were.
    """

    def __init__(self, catalog: Sequence[Title], profiles: Sequence[SimProfile] = (),
                 seed: int = 0, *, heartbeat_s: float = 60.0, max_heartbeats: int | None = None,
                 search_p: float = 0.2, session_starts: bool = False) -> None:
        if not catalog:
            raise ValueError("the catalog is empty")
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        self.catalog = list(catalog)
        self.profiles = list(profiles)
        self.seed = seed
        self.heartbeat_s = heartbeat_s
        self.max_heartbeats = max_heartbeats
        self.search_p = search_p
        self.session_starts = session_starts
        self._rng = random.Random(seed)
        # Zipf-like popularity over a seeded permutation: a few titles get most plays.
        order = list(range(len(self.catalog)))
        self._rng.shuffle(order)
        self._popularity = {self.catalog[i].title_id: 1.0 / (rank + 1) ** 0.8
                            for rank, i in enumerate(order)}
        self._eligible: dict[tuple[str, str], list[Title]] = {}

    def eligible(self, profile: SimProfile) -> list[Title]:
        """Titles ``profile`` may see (its country and maturity), in catalog order."""
        key = (profile.country, profile.max_rating)
        if key not in self._eligible:
            self._eligible[key] = [t for t in self.catalog if profile.allows(t)]
        return self._eligible[key]

    # -- one session --------------------------------------------------------------------------
    def session(self, profile: SimProfile, start_ms: int) -> list[Event]:
        """The events of one visit of ``profile`` starting at ``start_ms`` (event time).

        Empty when no title is available to the profile.
        """
        titles = self.eligible(profile)
        if not titles:
            return []
        rng = self._rng
        s = _Session(rng, profile, start_ms)
        if self.session_starts:
            s.emit(SessionStart, 0, device=profile.device, country=profile.country)
        session_id = _uuid(rng)
        if rng.random() < self.search_p:
            self._search(s, titles, session_id)
        for visit in range(1 + (rng.random() < 0.3)):
            self._page_visit(s, titles, session_id, gap_ms=0 if visit == 0 else 20_000)
        return s.events

    def _weight(self, profile: SimProfile, title: Title) -> float:
        return self._popularity[title.title_id] * profile.affinity(title.genres) ** 2

    def _pick(self, pool: Sequence[Title], weights: Sequence[float], k: int,
              taken: set[str]) -> list[Title]:
        """Up to ``k`` distinct titles from ``pool`` not in ``taken``, weighted."""
        cands = [(t, w) for t, w in zip(pool, weights, strict=True) if t.title_id not in taken]
        chosen: list[Title] = []
        while cands and len(chosen) < k:
            i = self._rng.choices(range(len(cands)), weights=[w for _, w in cands])[0]
            chosen.append(cands.pop(i)[0])
        taken.update(t.title_id for t in chosen)
        return chosen

    def _rows(self, profile: SimProfile, titles: list[Title]) -> list[tuple[str, list[Title]]]:
        rng = self._rng
        taken: set[str] = set()
        n_rows = rng.randint(*_ROWS)
        specs = [row_id(RowKind.TOP_PICKS), row_id(RowKind.TRENDING, profile.country),
                 row_id(RowKind.NEW_RELEASES)]
        fav = sorted(profile.genre_weights, key=lambda g: -profile.genre_weights[g])
        specs += [row_id(RowKind.GENRE, _slug(g)) for g in fav]
        rows = []
        for spec in specs:
            if len(rows) == n_rows:
                break
            k = rng.randint(*_ROW_COLUMNS)
            kind = row_kind_of(spec)
            if kind == RowKind.TOP_PICKS:
                picked = self._pick(titles, [self._weight(profile, t) for t in titles], k, taken)
            elif kind == RowKind.TRENDING:
                picked = self._pick(titles, [self._popularity[t.title_id] for t in titles], k,
                                    taken)
            elif kind == RowKind.NEW_RELEASES:
                newest = sorted(titles, key=lambda t: t.release_date, reverse=True)
                picked = [t for t in newest if t.title_id not in taken][:k]
                taken.update(t.title_id for t in picked)
            else:
                genre = fav[specs.index(spec) - 3]
                pool = [t for t in titles if genre in t.genres]
                picked = self._pick(pool, [self._popularity[t.title_id] for t in pool], k, taken)
            if picked:
                rows.append((spec, picked))
        return rows

    def _page_visit(self, s: _Session, titles: list[Title], session_id: str,
                    gap_ms: int) -> None:
        rng, p = self._rng, s.profile
        request_id = _uuid(rng)
        s.t += gap_ms
        shown: list[tuple[int, int, str, Title]] = []
        for r, (shown_row_id, row) in enumerate(self._rows(p, titles)):
            if r > 0:
                s.emit(Scroll, rng.uniform(800, 4000), request_id=request_id, row=r,
                       device=p.device)
            for c, title in enumerate(row):
                if c > 0 and c % 4 == 0:  # swiping right along the row
                    s.emit(Scroll, rng.uniform(500, 2500), request_id=request_id, row=r,
                           column=c, device=p.device)
                art = rng.choice(title.artwork)
                s.emit(Impression, rng.uniform(2, 40), request_id=request_id,
                       title_id=title.title_id, row_id=shown_row_id, row=r, column=c,
                       artwork_id=art.artwork_id, propensity=1.0 / len(title.artwork),
                       policy="uniform", variant="control", device=p.device, country=p.country)
                shown.append((r, c, shown_row_id, title))
        n_clicks = rng.choices((0, 1, 2), weights=(25, 55, 20))[0]
        weights = [(0.2 + 2.0 * p.affinity(t.genres)) / (1 + 0.3 * c + 0.2 * r)
                   for r, c, _, t in shown]
        clicked: set[str] = set()
        for _ in range(n_clicks):
            _, _, row_id, title = shown[rng.choices(range(len(shown)), weights=weights)[0]]
            if title.title_id in clicked:
                continue
            clicked.add(title.title_id)
            s.emit(Click, rng.uniform(1500, 12_000), title_id=title.title_id,
                   request_id=request_id, row_id=row_id, device=p.device)
            if rng.random() < 0.75:
                self._play(s, title, session_id)

    def _search(self, s: _Session, titles: list[Title], session_id: str) -> None:
        rng, p = self._rng, s.profile
        target = self._pick(titles, [self._weight(p, t) for t in titles], 1, set())[0]
        words = [w for w in target.name.split() if w not in ("The", "of")]
        query = rng.choice((" ".join(words[:2]).lower(), target.genres[0].lower()))
        s.emit(Search, rng.uniform(500, 3000), query=query, device=p.device)
        if rng.random() < 0.6:
            s.emit(Click, rng.uniform(2000, 8000), title_id=target.title_id, row_id="search",
                   device=p.device)
            if rng.random() < 0.8:
                self._play(s, target, session_id)

    def _play(self, s: _Session, title: Title, session_id: str) -> None:
        rng, p = self._rng, s.profile
        duration = title.duration_s
        if rng.random() < 0.3 + 0.5 * p.affinity(title.genres):
            fraction = rng.uniform(0.95, 1.0) if rng.random() < 0.4 else rng.uniform(0.51, 0.95)
        else:
            fraction = rng.uniform(0.02, 0.49)
        target = round(fraction * duration, 1)
        play = {"title_id": title.title_id, "duration_s": duration, "device": p.device,
                "country": p.country, "session_id": session_id}
        s.emit(Play, rng.uniform(1000, 5000), action="start", position_s=0.0, **play)
        interval = self.heartbeat_s
        n = max(0, math.ceil(target / interval) - 1)
        if self.max_heartbeats is not None and n > self.max_heartbeats:
            n = self.max_heartbeats
            interval = target / (n + 1)
        position = 0.0
        for _ in range(n):
            position += interval
            s.emit(Play, interval * 1000 + rng.uniform(0, 300), action="progress",
                   position_s=round(position, 1), **play)
        s.emit(Play, (target - position) * 1000 + rng.uniform(0, 300), action="stop",
               position_s=target, **play)
        watched = fraction > 0.5
        u = rng.random()
        if u < 0.12:
            liked = rng.random() < (0.9 if watched else 0.2)
            s.emit(Feedback, rng.uniform(2000, 10_000), title_id=title.title_id,
                   kind="thumbs_up" if liked else "thumbs_down")
        elif u < 0.17:
            stars = rng.randint(4, 5) if watched else rng.randint(1, 3)
            s.emit(Feedback, rng.uniform(2000, 10_000), title_id=title.title_id, kind="stars",
                   stars=stars)

    # -- many sessions ------------------------------------------------------------------------
    def interleaved(self, start_ms: int, *, profiles: Sequence[SimProfile] | None = None,
                    max_sessions: int | None = None,
                    mean_gap_ms: float = 2000.0) -> Iterator[tuple[int, Event]]:
        """``(session number, event)`` for sessions of many members, in event-time order.

        Sessions start at exponentially spaced times (mean ``mean_gap_ms``) for members drawn
        by activity, never two at once for one member; their events are merged so event time
        never goes backwards across the stream. Endless unless ``max_sessions`` is set.
        """
        pool = [p for p in (profiles if profiles is not None else self.profiles)
                if self.eligible(p)]
        if not pool:
            raise ValueError("no profiles to simulate (or none may see any title)")
        rng = self._rng
        activity = [p.activity for p in pool]
        busy_until: dict[str, int] = {}
        heap: list[tuple[int, int, int]] = []  # (next event ts, session number, index)
        sessions: dict[int, list[Event]] = {}
        arrival = float(start_ms)
        started = 0
        while True:
            can_start = max_sessions is None or started < max_sessions
            if can_start and (not heap or arrival <= heap[0][0]):
                at = int(arrival)
                arrival += rng.expovariate(1.0 / mean_gap_ms) + 1
                for _ in range(5):  # a busy member does not start a second session
                    profile = rng.choices(pool, weights=activity)[0]
                    if busy_until.get(profile.profile_id, -1) < at:
                        break
                else:
                    continue
                events = self.session(profile, at)
                if not events:
                    continue
                busy_until[profile.profile_id] = events[-1].event_ts_ms
                sessions[started] = events
                heapq.heappush(heap, (events[0].event_ts_ms, started, 0))
                started += 1
                continue
            if not heap:
                return
            _, number, i = heapq.heappop(heap)
            events = sessions[number]
            yield number, events[i]
            if i + 1 < len(events):
                heapq.heappush(heap, (events[i + 1].event_ts_ms, number, i + 1))
            else:
                del sessions[number]

    def events_stream(self, n_events: int, start_ms: int, **kwargs: Any) -> Iterator[Event]:
        """The first ``n_events`` events of :meth:`interleaved` (same keyword arguments)."""
        for _, ev in itertools.islice(self.interleaved(start_ms, **kwargs), n_events):
            yield ev


def events_stream(n_events: int, start_ms: int, seed: int, *, n_titles: int = 200,
                  n_profiles: int = 100, heartbeat_s: float = 60.0,
                  max_heartbeats: int | None = None,
                  now: dt.date | None = None) -> Iterator[Event]:
    """``n_events`` interleaved events of ``n_profiles`` members over a fresh catalog.

    For backlogs and benches; the catalog is ``synthetic_catalog(n_titles, seed, now)``, so
    publish that one first when the events must join titles.

    >>> evs = list(events_stream(50, 1_700_000_000_000, seed=3, now=dt.date(2026, 1, 1)))
    >>> len(evs), all(a.event_ts_ms <= b.event_ts_ms for a, b in zip(evs, evs[1:]))
    (50, True)
    """
    catalog = synthetic_catalog(n_titles, seed, now)
    sim = PlayerSimulator(catalog, synthetic_profiles(n_profiles, seed), seed,
                          heartbeat_s=heartbeat_s, max_heartbeats=max_heartbeats)
    return sim.events_stream(n_events, start_ms)


# -- I/O helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationResult:
    """What :func:`run_simulation` sent."""

    sessions: int
    events: int
    messages: int
    elapsed_s: float


#: Send rate of a real-time simulation when none is given.
DEFAULT_REALTIME_RATE_EPS = 100.0


def run_simulation(producer: PlayerProducer, simulator: PlayerSimulator,
                   profiles: Sequence[SimProfile] | None = None, *,
                   sessions: int | None = None, duration_s: float | None = None,
                   rate_eps: float | None = None, realtime: bool = False,
                   start_ms: int | None = None, flush_timeout_s: float = 30.0,
                   stop: threading.Event | None = None) -> SimulationResult:
    """Send simulated sessions through ``producer``; stop after ``sessions`` sessions,
    ``duration_s`` wall-clock seconds or when ``stop`` is set, whichever comes first, then
    flush.

    Parameters
    ----------
    sessions, duration_s
        At least one must be given (or ``stop``, to run until it is set).
    rate_eps
        Pace sending to this many events per second (default: as fast as possible, or
        :data:`DEFAULT_REALTIME_RATE_EPS` in real-time mode).
    realtime
        Stamp each event with the wall clock when it is sent (kept strictly increasing per
        member), as live players do. Otherwise events keep their simulated event time,
        starting at ``start_ms`` (default six hours ago, for a backlog).
    stop
        Set from another thread to end the simulation early (within ~50 ms); what was sent
        is still flushed.

    Raises :class:`~player.producer.ProducerError` when a delivery failed.
    """
    if sessions is None and duration_s is None and stop is None:
        raise ValueError("give sessions, duration_s or stop")
    if realtime and rate_eps is None:
        rate_eps = DEFAULT_REALTIME_RATE_EPS
    if rate_eps is not None and rate_eps <= 0:
        raise ValueError("rate_eps must be positive")
    if start_ms is None:
        start_ms = int(time.time() * 1000) - 6 * 3600 * 1000
    stream = simulator.interleaved(start_ms, profiles=profiles, max_sessions=sessions)
    last_ts: dict[str, int] = {}
    seen_sessions: set[int] = set()
    n_events = messages = 0
    t0 = time.monotonic()
    for number, event in stream:
        if duration_s is not None and time.monotonic() - t0 >= duration_s:
            break
        if rate_eps is not None:
            due = t0 + n_events / rate_eps
            while (wait := due - time.monotonic()) > 0 and not (stop and stop.is_set()):
                messages += producer.flush_batches()  # send what is waiting before idling
                producer.poll(0)
                # librdkafka rounds sub-millisecond poll timeouts to 0 (a busy loop): sleep
                time.sleep(min(wait, 0.05))
        if stop is not None and stop.is_set():
            break
        if realtime:
            ts = max(int(time.time() * 1000), last_ts.get(event.profile_id, 0) + 1)
            last_ts[event.profile_id] = ts
            event = event.model_copy(update={"event_ts_ms": ts})
        producer.send(event)
        seen_sessions.add(number)
        n_events += 1
        if n_events % 1000 == 0:
            messages += producer.flush_batches()
            producer.poll(0)
    messages += producer.flush_batches()
    producer.flush(flush_timeout_s)
    return SimulationResult(len(seen_sessions), n_events, messages, time.monotonic() - t0)


def publish_catalog(settings: Settings, titles: Sequence[Title], *, topic: str | None = None,
                    timeout_s: float = 30.0, extra_config: dict[str, Any] | None = None) -> int:
    """Produce ``titles`` to the catalog topic keyed by ``title_id``; return how many were
    delivered. Raises :class:`~player.producer.ProducerError` naming the titles not
    delivered."""
    from confluent_kafka import Producer

    from homestream.kafka_config import idempotent_producer_config
    from homestream.player.producer import DeliveryFailure, ProducerError
    from topics.codec import default_codec
    from topics.registry import topic_specs

    codec = default_codec()
    topic = topic or topic_specs(settings)["catalog"].name
    producer = Producer(idempotent_producer_config(settings, "homestream-catalog",
                                                   extra_config))
    failures: list[DeliveryFailure] = []
    delivered = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            key = msg.key().decode() if msg is not None and msg.key() else None
            failures.append(DeliveryFailure(topic, key, str(err), [key] if key else []))

    for title in titles:
        value = codec.encode_title(title)
        while True:
            try:
                producer.produce(topic, key=title.title_id.encode(), value=value,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(timeout_s)
    if failures or remaining:
        detail = "; ".join(str(f) for f in failures)
        raise ProducerError(
            f"catalog publish: {len(failures)} title(s) failed, {remaining} undelivered after "
            f"{timeout_s}s" + (f": {detail}" if detail else ""), failures)
    return delivered
