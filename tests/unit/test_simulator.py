"""Unit tests of the synthetic catalog, profiles and player sessions (pure, seeded)."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from homestream.player.simulator import (
    COUNTRIES,
    GENRES,
    NEW_RELEASE_DAYS,
    PlayerSimulator,
    SimProfile,
    events_stream,
    run_simulation,
    synthetic_catalog,
    synthetic_profiles,
)
from topics.codec import default_codec
from topics.models import Click, Event, Feedback, Impression, Play, Scroll, Search, Title

NOW = dt.date(2026, 3, 1)
T0 = 1_760_000_000_000


@pytest.fixture(scope="module")
def catalog() -> list[Title]:
    return synthetic_catalog(400, seed=11, now=NOW, artwork_base_url="https://cdn.test/a")


@pytest.fixture(scope="module")
def profiles() -> list[SimProfile]:
    return synthetic_profiles(60, seed=11)


@pytest.fixture(scope="module")
def sessions(catalog: list[Title], profiles: list[SimProfile]) -> list[list[Event]]:
    sim = PlayerSimulator(catalog, profiles, seed=5)
    return [sim.session(profiles[i % len(profiles)], T0 + i * 10_000_000) for i in range(400)]


def plays_of(events: list[Event]) -> list[list[Play]]:
    """The Play events of a session split into plays (each begins with ``start``)."""
    out: list[list[Play]] = []
    for e in events:
        if isinstance(e, Play):
            if e.action == "start":
                out.append([])
            assert out[-1][0].title_id == e.title_id if out[-1] else True
            out[-1].append(e)
    return out


# -- catalog -------------------------------------------------------------------------------
def test_catalog_is_deterministic_per_seed() -> None:
    a = synthetic_catalog(50, seed=3, now=NOW)
    assert a == synthetic_catalog(50, seed=3, now=NOW)
    assert a != synthetic_catalog(50, seed=4, now=NOW)


def test_catalog_titles_are_plausible(catalog: list[Title]) -> None:
    assert len({t.title_id for t in catalog}) == len(catalog)
    assert len({t.name for t in catalog}) == len(catalog)
    for t in catalog:
        assert 1 <= len(t.genres) <= 3 and len(set(t.genres)) == len(t.genres)
        assert set(t.genres) <= set(GENRES)
        assert 20 * 60 <= t.duration_s <= 150 * 60
        assert NOW - dt.timedelta(days=3650) <= t.release_date <= NOW
        assert len(t.cast) >= 1
        assert set(t.availability) <= set(COUNTRIES)
    assert {g for t in catalog for g in t.genres} == set(GENRES)


def test_catalog_artwork_has_three_tagged_candidates(catalog: list[Title]) -> None:
    for t in catalog:
        assert [a.artwork_id for a in t.artwork] == [f"{t.title_id}-art{k}" for k in range(3)]
        assert all(a.url.startswith(f"https://cdn.test/a/{t.title_id}/") for a in t.artwork)
        tags = sorted(a.tags[0] for a in t.artwork)
        assert "cast" in tags and "scenic" in tags
        assert t.genres[0].lower() in tags


def test_catalog_maturity_follows_genre(catalog: list[Title]) -> None:
    kids = [t for t in catalog if "Kids" in t.genres]
    assert kids and all(t.maturity_rating in ("G", "PG") for t in kids)
    animation = [t for t in catalog if "Animation" in t.genres]
    assert sum(t.maturity_rating in ("G", "PG") for t in animation) > 0.7 * len(animation)
    horror = [t for t in catalog if "Horror" in t.genres]
    assert sum(t.maturity_rating == "R" for t in horror) > 0.5 * len(horror)
    assert Counter(t.maturity_rating for t in catalog).keys() >= {"G", "PG", "PG-13", "R"}


def test_catalog_has_new_releases_and_regional_titles(catalog: list[Title]) -> None:
    new = [t for t in catalog if (NOW - t.release_date).days < NEW_RELEASE_DAYS]
    restricted = [t for t in catalog if t.availability]
    assert 0.03 * len(catalog) < len(new) < 0.2 * len(catalog)
    assert 0.1 * len(catalog) < len(restricted) < 0.4 * len(catalog)
    assert all(1 <= len(t.availability) <= 4 for t in restricted)


def test_catalog_round_trips_through_the_codec(catalog: list[Title]) -> None:
    codec = default_codec()
    assert [codec.decode_title(codec.encode_title(t)) for t in catalog[:50]] == catalog[:50]


# -- profiles ------------------------------------------------------------------------------
def test_profiles_are_deterministic_and_varied(profiles: list[SimProfile]) -> None:
    assert synthetic_profiles(60, seed=11) == profiles
    assert len({p.profile_id for p in profiles}) == 60
    assert {p.country for p in profiles} <= set(COUNTRIES)
    assert len({p.device for p in profiles}) >= 3
    for p in profiles:
        assert 1 <= len(p.genre_weights) <= 3
        assert sum(p.genre_weights.values()) == pytest.approx(1.0)
        if p.kids:
            assert set(p.genre_weights) <= {"Kids", "Animation", "Comedy"}


# -- sessions ------------------------------------------------------------------------------
def test_same_seed_gives_the_same_events(catalog: list[Title], profiles: list[SimProfile]) -> None:
    def run(seed: int) -> list[Event]:
        sim = PlayerSimulator(catalog, profiles, seed=seed)
        return [e for i in range(20) for e in sim.session(profiles[i], T0 + i * 10**8)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_timestamps_strictly_increase_and_ids_are_unique(
        sessions: list[list[Event]]) -> None:
    for evs in sessions:
        assert all(a.event_ts_ms < b.event_ts_ms for a, b in itertools.pairwise(evs))
        assert len({e.profile_id for e in evs}) <= 1
    ids = [e.event_id for evs in sessions for e in evs]
    assert len(ids) == len(set(ids))
    assert all(len(i) == 36 and i[14] == "4" for i in ids[:100])  # uuid4 text


def test_sessions_mix_every_event_type(sessions: list[list[Event]]) -> None:
    kinds = Counter(type(e) for evs in sessions for e in evs)
    assert set(kinds) == {Play, Impression, Scroll, Click, Feedback, Search}
    assert kinds[Impression] > kinds[Click] > 0
    assert sum(1 for evs in sessions if any(isinstance(e, Search) for e in evs)) < 0.4 * len(
        sessions)


def test_impressions_are_logged_with_uniform_propensity(
        sessions: list[list[Event]], catalog: list[Title]) -> None:
    art = {t.title_id: {a.artwork_id for a in t.artwork} for t in catalog}
    by_request: dict[str, list[Impression]] = defaultdict(list)
    for evs in sessions:
        for e in evs:
            if isinstance(e, Impression):
                by_request[e.request_id].append(e)
                assert e.artwork_id in art[e.title_id]
                assert e.propensity == pytest.approx(1 / 3)
                assert (e.policy, e.variant) == ("uniform", "control")
    for imps in by_request.values():
        assert len({i.title_id for i in imps}) == len(imps)  # no title twice on a page
        assert len({(i.row, i.column) for i in imps}) == len(imps)
        assert len({i.row_id for i in imps}) == len({i.row for i in imps})
    chosen = Counter(int(i.artwork_id[-1]) for imps in by_request.values() for i in imps)
    assert min(chosen.values()) > 0.25 * sum(chosen.values())


def test_plays_start_at_zero_heartbeat_and_stop(sessions: list[list[Event]]) -> None:
    plays = [p for evs in sessions for p in plays_of(evs)]
    assert plays
    for p in plays:
        assert [e.action for e in p] == ["start"] + ["progress"] * (len(p) - 2) + ["stop"]
        assert p[0].position_s == 0.0
        positions = [e.position_s for e in p]
        assert positions == sorted(positions) and positions[-1] <= p[0].duration_s
        for a, b in itertools.pairwise(p[1:-1]):  # heartbeats 60 s apart in event time
            assert b.position_s - a.position_s == pytest.approx(60.0, abs=0.11)
            assert 60_000 <= b.event_ts_ms - a.event_ts_ms <= 60_400
        if len(p) > 2:
            assert p[-1].position_s - p[-2].position_s <= 60.0 + 0.1


def test_watch_and_abandon_mix(sessions: list[list[Event]]) -> None:
    stops = [e for evs in sessions for e in evs if isinstance(e, Play) and e.action == "stop"]
    watched = [s for s in stops if s.fraction > 0.5]
    abandoned = [s for s in stops if s.fraction < 0.5]
    finished = [s for s in stops if s.fraction > 0.95]
    assert len(watched) + len(abandoned) == len(stops) >= 100
    assert 0.25 < len(watched) / len(stops) < 0.85
    assert 0.1 * len(watched) < len(finished) < 0.7 * len(watched)


def test_plays_prefer_favourite_genres(catalog: list[Title], profiles: list[SimProfile],
                                       sessions: list[list[Event]]) -> None:
    genres = {t.title_id: set(t.genres) for t in catalog}
    fav = {p.profile_id: set(p.genre_weights) for p in profiles}
    starts = [e for evs in sessions for e in evs if isinstance(e, Play) and e.action == "start"]
    hit = sum(bool(genres[s.title_id] & fav[s.profile_id]) for s in starts) / len(starts)
    base = sum(bool(genres[t.title_id] & fav[p.profile_id]) for t in catalog
               for p in profiles) / (len(catalog) * len(profiles))
    assert hit > base + 0.2


def test_feedback_agrees_with_the_play(sessions: list[list[Event]]) -> None:
    ups = downs = 0
    for evs in sessions:
        last_stop: dict[str, Play] = {}
        for e in evs:
            if isinstance(e, Play) and e.action == "stop":
                last_stop[e.title_id] = e
            elif isinstance(e, Feedback):
                stop = last_stop[e.title_id]
                if e.kind == "stars":
                    assert (e.stars or 0) >= 4 if stop.fraction > 0.5 else (e.stars or 9) <= 3
                elif stop.fraction > 0.5:
                    ups += e.kind == "thumbs_up"
                    downs += e.kind == "thumbs_down"
    assert ups > downs


def test_kids_and_regional_guardrails(catalog: list[Title]) -> None:
    kid = SimProfile("kid", "JP", "tv", {"Kids": 0.6, "Animation": 0.4}, max_rating="PG")
    sim = PlayerSimulator(catalog, [kid], seed=2)
    by_id = {t.title_id: t for t in catalog}
    evs = [e for i in range(60) for e in sim.session(kid, T0 + i * 10**8)]
    shown = {e.title_id for e in evs if isinstance(e, (Impression, Click, Play))}
    assert shown
    for tid in shown:
        assert by_id[tid].maturity_rating in ("G", "PG")
        assert by_id[tid].available_in("JP")


def test_max_heartbeats_caps_long_plays(catalog: list[Title], profiles: list[SimProfile]) -> None:
    sim = PlayerSimulator(catalog, profiles, seed=9, heartbeat_s=10.0, max_heartbeats=3)
    for i in range(80):
        for play in plays_of(sim.session(profiles[i % 60], T0 + i * 10**8)):
            assert len(play) <= 2 + 3


def test_a_profile_that_may_see_nothing_gets_an_empty_session(catalog: list[Title]) -> None:
    only_us = [t.model_copy(update={"availability": ["US"]}) for t in catalog[:5]]
    nobody = SimProfile("p", "DE", "tv", {"Drama": 1.0})
    assert PlayerSimulator(only_us, [nobody], seed=0).session(nobody, T0) == []
    with pytest.raises(ValueError, match="no profiles"):
        next(PlayerSimulator(only_us, [nobody], seed=0).interleaved(T0))


# -- streams -------------------------------------------------------------------------------
def test_events_stream_is_deterministic_and_ordered_in_event_time() -> None:
    a = list(events_stream(3000, T0, seed=4, n_titles=100, n_profiles=40, now=NOW))
    assert a == list(events_stream(3000, T0, seed=4, n_titles=100, n_profiles=40, now=NOW))
    assert len(a) == 3000
    assert all(x.event_ts_ms <= y.event_ts_ms for x, y in itertools.pairwise(a))
    assert len({e.profile_id for e in a}) > 10
    per_profile: dict[str, list[int]] = defaultdict(list)
    for e in a:
        per_profile[e.profile_id].append(e.event_ts_ms)
    # a member never runs two sessions at once, so their events stay strictly ordered
    assert all(ts == sorted(set(ts)) for ts in per_profile.values())


def test_interleaved_runs_exactly_max_sessions(catalog: list[Title],
                                               profiles: list[SimProfile]) -> None:
    sim = PlayerSimulator(catalog, profiles, seed=1, max_heartbeats=2)
    numbers = [n for n, _ in sim.interleaved(T0, max_sessions=25)]
    assert sorted(set(numbers)) == list(range(25))


# -- run_simulation ------------------------------------------------------------------------
class RecordingProducer:
    """Stands in for PlayerProducer: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.buffer = 0
        self.flushed = False

    def send(self, event: Event) -> None:
        self.sent.append(event)
        self.buffer += 1

    def flush_batches(self) -> int:
        n, self.buffer = min(self.buffer, 1), 0
        return n

    def poll(self, timeout: float = 0.0) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushed = True


def _sim(catalog: list[Title], profiles: list[SimProfile]) -> PlayerSimulator:
    return PlayerSimulator(catalog, profiles, seed=3, max_heartbeats=2)


def test_run_simulation_backlog_keeps_simulated_event_time(
        catalog: list[Title], profiles: list[SimProfile]) -> None:
    rec = RecordingProducer()
    res = run_simulation(rec, _sim(catalog, profiles), profiles[:10], sessions=12,  # type: ignore[arg-type]
                         start_ms=T0)
    assert res.sessions == 12 and res.events == len(rec.sent) > 12 and rec.flushed
    assert {e.profile_id for e in rec.sent} <= {p.profile_id for p in profiles[:10]}
    assert min(e.event_ts_ms for e in rec.sent) >= T0
    expected = list(_sim(catalog, profiles).interleaved(T0, profiles=profiles[:10],
                                                        max_sessions=12))
    assert rec.sent == [e for _, e in expected]


def test_run_simulation_realtime_stamps_wall_clock_at_the_given_rate(
        catalog: list[Title], profiles: list[SimProfile]) -> None:
    rec = RecordingProducer()
    before = int(time.time() * 1000)
    res = run_simulation(rec, _sim(catalog, profiles), sessions=None, duration_s=0.5,  # type: ignore[arg-type]
                         rate_eps=200, realtime=True)
    after = int(time.time() * 1000)
    assert 0.45 <= res.elapsed_s < 1.5
    assert 50 <= res.events <= 110  # ~200 eps for 0.5 s
    per_profile: dict[str, list[int]] = defaultdict(list)
    for e in rec.sent:
        assert before <= e.event_ts_ms <= after + len(rec.sent)
        per_profile[e.profile_id].append(e.event_ts_ms)
    assert all(ts == sorted(set(ts)) for ts in per_profile.values())


@pytest.mark.parametrize("kwargs", [{}, {"sessions": 1, "rate_eps": 0}])
def test_run_simulation_rejects_bad_arguments(kwargs: dict[str, Any], catalog: list[Title],
                                              profiles: list[SimProfile]) -> None:
    with pytest.raises(ValueError):
        run_simulation(RecordingProducer(), _sim(catalog, profiles), **kwargs)  # type: ignore[arg-type]


def test_run_simulation_stops_when_the_stop_event_is_set_and_flushes(
        catalog: list[Title], profiles: list[SimProfile]) -> None:
    rec = RecordingProducer()
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        # no sessions or duration limit: only the stop event ends this
        res = run_simulation(rec, _sim(catalog, profiles), rate_eps=100,  # type: ignore[arg-type]
                             realtime=True, stop=stop)
    finally:
        timer.cancel()
    assert 0.25 <= res.elapsed_s < 1.0
    assert rec.flushed and res.events == len(rec.sent) > 0


def test_run_simulation_with_stop_already_set_sends_nothing(
        catalog: list[Title], profiles: list[SimProfile]) -> None:
    rec = RecordingProducer()
    stop = threading.Event()
    stop.set()
    res = run_simulation(rec, _sim(catalog, profiles), stop=stop)  # type: ignore[arg-type]
    assert (res.events, rec.sent, rec.flushed) == (0, [], True)
