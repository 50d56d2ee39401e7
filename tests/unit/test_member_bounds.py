"""A member's state stays bounded whatever the events: every per-title map, the devices, the
dedupe window and the artwork decisions keep at most their bound, oldest dropped first, and
the bounded state survives its stored JSON (the order that decides what goes is kept)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from features.profile import (
    MAX_CAST,
    MAX_DEVICES,
    MAX_PENDING_ART,
    MAX_SHOWN_ROWS,
    FeatureParams,
    ProfileState,
    apply_event,
)
from topics.models import Feedback, Impression, Play

TS = 1_700_000_000_000
PARAMS = FeatureParams(member_titles_max=20, dedupe_window=32)


def play(i: int, title: str, action: str = "progress", pos: float = 1195.0,
         device: str = "tv") -> Play:
    return Play(event_id=f"p{i}", profile_id="m", event_ts_ms=TS + i * 1000, title_id=title,
                action=action, position_s=pos, duration_s=1200.0, country="US", device=device)


def impression(i: int, title: str) -> Impression:
    return Impression(event_id=f"i{i}", profile_id="m", event_ts_ms=TS + i * 1000,
                      request_id=f"r{i}", title_id=title, row_id="top-picks", row=1, column=0,
                      artwork_id=f"{title}-a{i % 2}", propensity=0.5, policy="uniform")


def genres(title: str) -> list[str]:
    return ["Drama"]


def sizes(s: ProfileState) -> dict[str, int]:
    return {name: len(getattr(s, name)) for name in (
        "progress", "finished", "engaged", "impressions", "explicit", "rewatches", "devices",
        "seen_ids", "pending_art", "shown_rows", "cast_affinity", "ignored", "recent")}


def test_per_title_maps_keep_the_newest_titles_up_to_the_bound() -> None:
    s = ProfileState("m")
    for i in range(60):  # 60 titles watched to the end
        apply_event(s, play(i, f"t{i}"), genres, PARAMS)
    assert len(s.finished) == 20 and "t59" in s.finished and "t39" not in s.finished
    for i in range(60):  # and re-watched
        apply_event(s, play(100 + i, f"t{i}", action="start", pos=0.0), genres, PARAMS)
    for name in ("progress", "engaged", "rewatches"):
        assert len(getattr(s, name)) == 20, name
    assert list(s.progress) == [f"t{i}" for i in range(40, 60)]  # the oldest went first
    assert s.continue_watching()[0] == "t59"
    # a title played again moves to the end of the playheads: it is not the next to go
    apply_event(s, play(500, "t40", pos=100.0), genres, PARAMS)
    apply_event(s, play(501, "t99", pos=100.0), genres, PARAMS)  # a new title: one goes
    assert "t40" in s.progress and "t41" not in s.progress


def test_impressions_feedback_and_devices_are_bounded_least_recent_first() -> None:
    s = ProfileState("m")
    for i in range(50):
        apply_event(s, impression(i, f"t{i}"), genres, PARAMS)
        apply_event(s, impression(1000 + i, "t0"), genres, PARAMS)  # t0 shown again and again
        apply_event(s, Feedback(event_id=f"f{i}", profile_id="m", event_ts_ms=TS + i,
                                title_id=f"t{i}", kind="thumbs_up"), genres, PARAMS)
        apply_event(s, play(2000 + i, "t0", pos=10.0, device=f"device-{i}"), genres, PARAMS)
    assert len(s.impressions) == 20 and s.impressions["t0"] == 51  # kept: shown lately
    assert len(s.explicit) == 20 and "t49" in s.explicit and "t0" not in s.explicit
    assert len(s.devices) == MAX_DEVICES and "device-49" in s.devices


def test_the_bounded_order_survives_the_stored_json() -> None:
    s = ProfileState("m")
    for i in range(30):
        apply_event(s, play(i, f"t{i}", pos=100.0), genres, PARAMS)
    apply_event(s, play(100, "t10", pos=200.0), genres, PARAMS)  # t10 is now the newest
    back = ProfileState.from_json(s.to_json())
    assert list(back.progress) == list(s.progress) and list(back.progress)[-1] == "t10"
    apply_event(back, play(101, "t77", pos=100.0), genres, PARAMS)
    assert "t11" not in back.progress and "t10" in back.progress


events = st.lists(st.tuples(st.sampled_from(["play", "start", "impression", "feedback"]),
                            st.integers(0, 400), st.sampled_from(["tv", "web", "x", "y", "z"])),
                  min_size=1, max_size=300)


@settings(max_examples=40, deadline=None)
@given(events)
def test_no_stream_of_events_grows_a_member_past_the_bounds(
        stream: list[tuple[str, int, str]]) -> None:
    s = ProfileState("m")
    for i, (kind, t, device) in enumerate(stream):
        title = f"t{t}"
        if kind == "impression":
            ev = impression(i, title)
        elif kind == "feedback":
            ev = Feedback(event_id=f"f{i}", profile_id="m", event_ts_ms=TS + i, title_id=title,
                          kind="thumbs_down")
        else:
            ev = play(i, title, action="start" if kind == "start" else "progress",
                      pos=0.0 if kind == "start" else 1195.0, device=f"{device}{t % 40}")
        apply_event(s, ev, genres, PARAMS, cast_of=lambda t: [f"c{t}", f"d{t}"])
        back = ProfileState.from_json(s.to_json())
        assert back == s
    bounds = {"progress": 20, "finished": 20, "engaged": 20, "impressions": 20, "explicit": 20,
              "rewatches": 20, "devices": MAX_DEVICES, "seen_ids": 32,
              "pending_art": MAX_PENDING_ART, "shown_rows": MAX_SHOWN_ROWS,
              "cast_affinity": MAX_CAST, "ignored": 200, "recent": PARAMS.recent_titles}
    assert all(n <= bounds[k] for k, n in sizes(s).items()), sizes(s)


def test_a_full_shown_rows_map_drops_the_first_title_shown_at_the_oldest_time() -> None:
    from features.state_format import ShownRow

    s = ProfileState("m")
    # two titles tie for the oldest time: the first of them in the map's order goes
    s.shown_rows = {f"t{i}": ShownRow("genre", TS + 5_000 + i) for i in range(MAX_SHOWN_ROWS - 2)}
    s.shown_rows["late-tie"] = ShownRow("genre", TS)
    s.shown_rows["early-tie"] = ShownRow("genre", TS)
    s.shown_rows = {"early-tie": s.shown_rows.pop("early-tie"), **s.shown_rows}
    apply_event(s, impression(900, "new"), genres, PARAMS)
    assert len(s.shown_rows) == MAX_SHOWN_ROWS
    assert "early-tie" not in s.shown_rows and {"late-tie", "new"} <= set(s.shown_rows)


def test_artwork_decisions_are_paid_once_their_window_closed_and_not_before() -> None:
    params = FeatureParams(reward_window_s=10.0, delayed_positives=False)
    s = ProfileState("m")
    for i, title in enumerate(["a", "b", "c"]):  # decisions at TS, TS + 4 s and TS + 8 s
        apply_event(s, impression(4 * i, title), genres, params)
    assert list(s.pending_art) == ["a", "b", "c"]
    # 10 s after the first decision its window is still open (closed only past 10 s)
    fx = apply_event(s, play(10, "x"), genres, params)
    assert fx.art_rewards == [] and list(s.pending_art) == ["a", "b", "c"]
    fx = apply_event(s, play(15, "y"), genres, params)  # 15 s: a and b closed
    assert [(r.title_id, r.reward) for r in fx.art_rewards] == [("a", 0.0), ("b", 0.0)]
    assert list(s.pending_art) == ["c"]
