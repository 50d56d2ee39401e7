"""Per-profile signals of the issue, applied through ``apply_event`` with explicit event times.

Session features, scroll depth, time-of-day / device / country context, impressions without
a play (and the weak negative), cast affinity with decay, early abandon, re-watch and
completion, recent titles, and star calibration per member. Every expected value is worked
out by hand in the comments.
"""

from __future__ import annotations

import pytest

from features.feedback import LABEL_TARGET
from features.profile import (
    MAX_CAST,
    SESSION_GAP_MS,
    Effects,
    FeatureParams,
    ProfileState,
    apply_event,
)
from topics.models import Click, Event, Feedback, Impression, Play, Scroll

#: 2023-11-14 22:13:20 UTC: ``(TS // 3_600_000) % 24 == 22``.
TS = 1_700_000_000_000
MIN = 60_000
HOUR = 3_600_000
P = FeatureParams()
HL_S = P.affinity_half_life_s
HL_MS = int(HL_S * 1000)
GENRES = {"h1": ["Horror"], "c1": ["Comedy"], "d1": ["Drama", "Horror"]}
CAST = {"h1": ["a", "b", "c", "d", "e", "f"], "c1": ["a", "z"]}


def genres(t: str) -> list[str]:
    return GENRES.get(t, [])


def cast(t: str) -> list[str]:
    return CAST.get(t, [])


def play(eid: str, title: str, pos: float, ts: int, action: str = "progress",
         device: str = "tv", country: str = "US") -> Play:
    """A play of a 100 s title, so ``pos`` is the percentage watched."""
    return Play(event_id=eid, profile_id="p", event_ts_ms=ts, title_id=title, action=action,
                position_s=pos, duration_s=100.0, device=device, country=country)


def scroll(eid: str, row: int, ts: int) -> Scroll:
    return Scroll(event_id=eid, profile_id="p", event_ts_ms=ts, row=row)


def shown(eid: str, title: str, ts: int, device: str = "unknown") -> Impression:
    return Impression(event_id=eid, profile_id="p", event_ts_ms=ts, request_id="r",
                      title_id=title, row_id="top-picks", row=0, column=0, artwork_id="a",
                      propensity=1.0, policy="materialized", device=device)


def stars(eid: str, title: str, n: int, ts: int) -> Feedback:
    return Feedback(event_id=eid, profile_id="p", event_ts_ms=ts, title_id=title,
                    kind="stars", stars=n)


def apply(state: ProfileState, event: Event) -> Effects:
    return apply_event(state, event, genres, P, cast)


def apply_all(state: ProfileState, events: list[Event]) -> list[tuple[str, float]]:
    return [label for ev in events for label in apply(state, ev).labels]


# -- session features and scroll depth ------------------------------------------------------

def test_session_counts_events_genres_duration_and_scroll_depth_until_a_30_min_gap() -> None:
    s = ProfileState("p")
    apply_all(s, [play("1", "h1", 0, TS, action="start"),   # Horror
                  Click(event_id="2", profile_id="p", event_ts_ms=TS + MIN, title_id="c1"),
                  scroll("3", 5, TS + 2 * MIN),
                  scroll("4", 2, TS + 3 * MIN),                # shallower: depth stays 5
                  play("5", "d1", 10, TS + 10 * MIN)])         # Drama, Horror
    assert s.session_features() == {"events": 5, "duration_s": 600.0,
                                    "genres": {"Horror": 2, "Comedy": 1, "Drama": 1},
                                    "max_row": 5}
    # exactly 30 minutes later is still the same session ...
    apply(s, scroll("6", 1, TS + 40 * MIN))
    assert s.session_features()["events"] == 6
    assert s.session_features()["duration_s"] == 2400.0
    # ... one millisecond more than 30 minutes of silence starts a new one
    apply(s, scroll("7", 1, TS + 70 * MIN + 1))
    assert s.session_features() == {"events": 1, "duration_s": 0.0, "genres": {},
                                    "max_row": 1}
    assert s.max_scroll_row == 5  # lifetime depth keeps the first session's row
    # judged at a later event time, the idle session is over
    assert s.session_features(now_ms=TS + 70 * MIN + 1 + SESSION_GAP_MS)["events"] == 1
    assert s.session_features(now_ms=TS + 70 * MIN + 2 + SESSION_GAP_MS)["events"] == 0


def test_late_event_of_an_earlier_session_leaves_the_current_session_alone() -> None:
    s = ProfileState("p")
    apply(s, scroll("1", 1, TS + 2 * HOUR))
    apply(s, scroll("2", 2, TS + 2 * HOUR + MIN))
    before = dict(s.session)
    apply(s, scroll("3", 9, TS))  # two hours late: belonged to an earlier session
    assert s.session == before
    assert s.session_features()["max_row"] == 2 and s.max_scroll_row == 9
    # a late event less than 30 minutes before the start joins the session, moving its start
    apply(s, play("4", "c1", 0, TS + 2 * HOUR - 20 * MIN, action="start"))
    assert s.session_features() == {"events": 3, "duration_s": 1260.0,  # 20 min + 1 min
                                    "genres": {"Comedy": 1}, "max_row": 2}


# -- time of day, device and country --------------------------------------------------------

def test_context_has_newest_and_usual_device_hour_country_and_the_session() -> None:
    s = ProfileState("p")
    apply_all(s, [play("1", "h1", 0, TS, action="start"),                # hour 22, tv
                  play("2", "h1", 30, TS + MIN),                         # progress: no hour
                  play("3", "c1", 0, TS + 24 * HOUR, action="start"),    # hour 22, tv
                  play("4", "d1", 0, TS + 25 * HOUR, action="start",     # hour 23, newest
                       device="phone", country="GB"),
                  shown("5", "h1", TS + 25 * HOUR + 1000, device="web"),  # server: no device
                  scroll("6", 2, TS + 25 * HOUR + 2000)])                # device "unknown"
    assert s.play_hours == {"22": 2, "23": 1}
    assert s.devices == {"tv": 3, "phone": 1}
    expected = {"country": "GB", "device": "phone", "usual_device": "tv",
                "hour_utc": 23, "usual_hour_utc": 22,
                "session_events": 3, "session_duration_s": 2.0,
                "session_genres": {"Drama": 1, "Horror": 1}, "session_max_row": 2,
                "max_scroll_row": 2}
    assert s.context() == expected
    # a late play from elsewhere counts in the habits but does not move country or device
    apply(s, play("7", "h1", 0, TS + 1000, action="start", device="web", country="FR"))
    assert s.play_hours == {"22": 3, "23": 1} and s.devices["web"] == 1
    assert s.context() == expected
    # at a later time: that hour, and no current session
    later = s.context(now_ms=TS + 27 * HOUR)  # hour (22 + 27) % 24 = 1
    assert (later["hour_utc"], later["session_events"], later["session_genres"]) == (1, 0, {})


def test_context_of_a_new_profile() -> None:
    assert ProfileState("p").context() == {
        "country": "ZZ", "device": "unknown", "usual_device": None, "hour_utc": 0,
        "usual_hour_utc": None, "session_events": 0, "session_duration_s": 0.0,
        "session_genres": {}, "session_max_row": 0, "max_scroll_row": 0}


# -- impressions without play and the weak negative -----------------------------------------

def test_third_impression_without_a_play_is_a_weak_negative_once() -> None:
    s = ProfileState("p")
    labels = [apply(s, shown(str(i), "h1", TS + i)).labels for i in range(4)]
    assert labels == [[], [], [("h1", LABEL_TARGET["negative"])], []]
    assert LABEL_TARGET["negative"] == 0.0
    assert s.impressions_without_play() == {"h1": 4}


def test_impressions_without_play_leave_out_played_titles() -> None:
    s = ProfileState("p")
    for i, t in enumerate(["h1", "h1", "c1", "c1", "d1"]):
        apply(s, shown(f"i{i}", t, TS + i))
    assert s.impressions_without_play() == {"h1": 2, "c1": 2, "d1": 1}
    assert apply(s, play("p1", "c1", 10, TS + 10, action="start")).labels == [("c1", 0.5)]
    # played, then shown again: no weak negative, and no longer "without play"
    assert apply(s, shown("i5", "c1", TS + 11)).labels == []
    assert s.impressions_without_play() == {"h1": 2, "d1": 1}
    assert s.impressions == {"h1": 2, "c1": 3, "d1": 1}


def test_an_ignored_title_played_later_gets_its_play_label() -> None:
    s = ProfileState("p")
    apply_all(s, [shown(str(i), "d1", TS + i) for i in range(3)])
    assert apply(s, play("p", "d1", 60, TS + 10)).labels == [("d1", 1.0)]
    assert s.impressions_without_play() == {}


def test_a_rated_title_shown_three_times_is_not_a_weak_negative() -> None:
    s = ProfileState("p")
    up = Feedback(event_id="f", profile_id="p", event_ts_ms=TS, title_id="h1",
                  kind="thumbs_up")
    assert apply(s, up).labels == [("h1", 1.0)]
    assert apply_all(s, [shown(str(i), "h1", TS + 1 + i) for i in range(3)]) == []


# -- cast affinity with decay ---------------------------------------------------------------

def test_cast_affinity_bumps_the_leading_five_and_decays_by_half_life() -> None:
    s = ProfileState("p")
    apply(s, play("1", "h1", 70, TS))  # a watch: +1.0 for a..e, not the sixth billed "f"
    assert s.cast_affinity == {c: [1.0, TS] for c in "abcde"}
    apply(s, play("2", "c1", 10, TS + HL_MS, action="start"))  # a click, a half-life later
    # a: 1.0 halved to 0.5, plus 0.3; z: 0.3
    assert s.cast_affinity["a"] == [pytest.approx(0.8), TS + HL_MS]
    assert s.cast_affinity["z"] == [pytest.approx(0.3), TS + HL_MS]
    scores = s.cast_scores(TS + 2 * HL_MS, HL_S)
    assert scores == pytest.approx({"a": 0.4, "b": 0.25, "c": 0.25, "d": 0.25, "e": 0.25,
                                    "z": 0.15})


def test_late_cast_feedback_is_added_decayed_to_the_stored_time() -> None:
    s = ProfileState("p")
    apply(s, play("1", "c1", 70, TS + HL_MS))  # a watch: a and z at 1.0
    down = Feedback(event_id="2", profile_id="p", event_ts_ms=TS, title_id="c1",
                    kind="thumbs_down")
    apply(s, down)  # -1.0, one half-life older than the stored scores: -0.5
    assert s.cast_affinity == {"a": [pytest.approx(0.5), TS + HL_MS],
                               "z": [pytest.approx(0.5), TS + HL_MS]}


def test_early_abandon_takes_back_the_clicks_genre_and_cast_weight() -> None:
    s = ProfileState("p")
    labels = apply_all(s, [play("1", "c1", 0, TS, action="start"),
                           play("2", "c1", 5, TS + 1000, action="stop")])
    assert labels == [("c1", 0.5), ("c1", 0.1)]  # click, then abandon
    # +0.3 decayed over one second, then -0.3: zero to within 2e-7
    assert s.genre_affinity(TS + 1000, HL_S)["Comedy"] == pytest.approx(0.0, abs=1e-6)
    assert s.cast_scores(TS + 1000, HL_S) == pytest.approx({"a": 0.0, "z": 0.0}, abs=1e-6)


def test_a_stop_at_ten_percent_or_after_a_watch_is_no_abandon() -> None:
    s = ProfileState("p")
    assert apply_all(s, [play("1", "c1", 0, TS, action="start"),
                         play("2", "c1", 10, TS + 1, action="stop")]) == [("c1", 0.5)]
    assert apply_all(s, [play("3", "h1", 60, TS + 2),
                         play("4", "h1", 5, TS + 3, action="stop")]) == [("h1", 1.0)]


def test_cast_kept_when_trimmed_is_the_strongest_now_not_the_largest_stored() -> None:
    s = ProfileState("p")
    cast_of = {"old": ["o1"]} | {f"t{i}": [f"n{i}-{j}" for j in range(5)] for i in range(20)}
    apply_event(s, play("w", "old", 70, TS), genres, P, cast_of.__getitem__)  # o1: 1.0
    later = TS + 10 * HL_MS  # o1 decayed to 1/1024, below a click's 0.3
    for i in range(20):  # 100 new cast members at 0.3: 101 in all, one too many
        apply_event(s, play(f"c{i}", f"t{i}", 10, later + i, action="start"), genres, P,
                    cast_of.__getitem__)
    assert MAX_CAST == 100 and len(s.cast_affinity) == 100 and "o1" not in s.cast_affinity


# -- completion and re-watch ----------------------------------------------------------------

def test_completion_at_95_percent_finishes_the_title_without_a_label_of_its_own() -> None:
    s = ProfileState("p")
    assert apply(s, play("1", "h1", 0, TS, action="start")).labels == [("h1", 0.5)]
    assert apply(s, play("2", "h1", 94, TS + 1000)).labels == [("h1", 1.0)]  # watch
    assert s.finished == {} and s.continue_watching() == ["h1"]
    assert apply(s, play("3", "h1", 95, TS + 2000)).labels == []
    assert s.finished == {"h1": TS + 2000} and s.continue_watching() == []
    # a late heartbeat past 95% does not move the completion time back
    apply(s, play("4", "h1", 99, TS + 1500))
    assert s.finished == {"h1": TS + 2000}
    # straight to the end: one watch label, nothing for completing
    assert apply(s, play("5", "c1", 100, TS + 3000, action="stop")).labels == [("c1", 1.0)]


def test_rewatch_after_finishing_labels_counts_and_returns_to_continue_watching() -> None:
    s = ProfileState("p")
    apply_all(s, [play("1", "h1", 0, TS, action="start"), play("2", "h1", 97, TS + MIN)])
    assert s.finished == {"h1": TS + MIN} and s.rewatches == {}
    # a start older than the completion (late) is not a re-watch
    assert apply(s, play("3", "h1", 0, TS + 1000, action="start")).labels == []
    fx = apply(s, play("4", "h1", 0, TS + HOUR, action="start"))
    assert fx.labels == [("h1", LABEL_TARGET["rewatch"])] and LABEL_TARGET["rewatch"] == 1.0
    assert s.rewatches == {"h1": 1} and s.continue_watching() == ["h1"]
    # resuming within the re-watch is not another one
    assert apply(s, play("5", "h1", 40, TS + HOUR + MIN, action="start")).labels == []
    # finishing again, then a third viewing: counted again
    assert apply(s, play("6", "h1", 99, TS + 2 * HOUR)).labels == []
    assert apply(s, play("7", "h1", 0, TS + 3 * HOUR, action="start")).labels == [("h1", 1.0)]
    assert s.rewatches == {"h1": 2}


# -- recent titles ---------------------------------------------------------------------------

def test_recent_titles_are_ordered_by_latest_event_time_and_bounded() -> None:
    s = ProfileState("p")
    params = FeatureParams(recent_titles=3)
    for i, t in enumerate(["a", "b", "c", "a", "d"]):
        apply_event(s, play(str(i), t, 10, TS + i * 1000, action="start"), genres, params)
    assert s.recent_title_ids() == ["d", "a", "c"]  # "a" moved up, "b" fell off
    apply_event(s, play("late", "c", 20, TS), genres, params)  # older: does not move "c"
    assert s.recent == [["d", TS + 4000], ["a", TS + 3000], ["c", TS + 2000]]


# -- stars calibrated per member -------------------------------------------------------------

def rate(state: ProfileState, eid: str, title: str, n: int, ts: int) -> float:
    (label,) = apply(state, stars(eid, title, n, ts)).labels
    assert label[0] == title and state.explicit[title] == label[1]
    return label[1]


def copy(state: ProfileState) -> ProfileState:
    return ProfileState.from_json(state.to_json())


def test_stars_are_calibrated_per_member() -> None:
    generous, spread = ProfileState("p"), ProfileState("p")
    firsts = []
    for i in range(20):  # one member rates everything 5, the other 1, 2, 3, 4, 5, 1, ...
        rate(generous, f"g{i}", f"m{i}", 5, TS + i * MIN)
        firsts.append(rate(spread, f"s{i}", f"m{i}", i % 5 + 1, TS + i * MIN))
    # with no history a rating means what it says: the prior 3 +/- 1 gives z = -2 -> 0.0
    assert firsts[0] == 0.0
    assert generous.star_stats == [20, 5.0, 0.0]
    assert spread.star_stats == pytest.approx([20, 3.0, 40.0])  # 4 x (4 + 1 + 0 + 1 + 4)

    # shrunk by 3 pseudo-ratings of 3 +/- 1:
    #   generous: mean (20*5 + 9)/23 = 109/23, var 3/23 -> z = (6/23)/sqrt(3/23) = 6/sqrt(69)
    #   spread:   mean (60 + 9)/23 = 3,       var 43/23 -> z = (r - 3)*sqrt(23/43)
    # target = 0.5 + z/4 (clipped to [0, 1])
    g5 = rate(copy(generous), "x", "probe", 5, TS + HOUR)
    s5 = rate(copy(spread), "x", "probe", 5, TS + HOUR)
    s4 = rate(copy(spread), "x", "probe", 4, TS + HOUR)
    assert g5 == pytest.approx(0.5 + 1.5 / 69**0.5)          # 0.6806
    assert s5 == pytest.approx(0.5 + 0.5 * (23 / 43) ** 0.5)  # 0.8657
    assert s4 == pytest.approx(0.5 + 0.25 * (23 / 43) ** 0.5)  # 0.6828
    assert g5 < s5 and g5 == pytest.approx(s4, abs=0.01)     # one's 5 is the other's 4


def test_calibrated_stars_move_affinity_by_the_calibrated_target() -> None:
    s = ProfileState("p")
    for i in range(20):
        rate(s, f"g{i}", f"m{i}", 5, TS)  # titles without genres
    y = rate(s, "x", "h1", 5, TS)
    # affinity moves by 2y - 1, here 2 * (0.5 + 1.5/sqrt(69)) - 1 = 3/sqrt(69)
    assert s.genre_affinity(TS, HL_S) == {"Horror": pytest.approx(3 / 69**0.5)}
    assert 2 * y - 1 == pytest.approx(3 / 69**0.5)
