"""Feature transitions: feedback derivation, dedupe, event time, affinity, trending."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.feedback import ENGAGED_CLICK, ENGAGED_WATCH, derive_play_level
from features.profile import FeatureParams, ProfileState, apply_event, settle_expired_art
from features.trending import EPOCH_HALF_LIVES, decayed_weight, merge_epochs
from topics.models import Feedback, Impression, Play, Scroll

TS = 1_700_000_000_000
GENRES = {"h1": ["Horror"], "c1": ["Comedy"], "d1": ["Drama", "Horror"]}
P = FeatureParams(dedupe_window=16)


def genres(t: str) -> list[str]:
    return GENRES.get(t, [])


def play(eid: str, title: str, pos: float, ts: int = TS, action: str = "progress",
         dur: float = 100.0) -> Play:
    return Play(event_id=eid, profile_id="p", event_ts_ms=ts, title_id=title, action=action,
                position_s=pos, duration_s=dur, country="US")


@pytest.mark.parametrize(("fraction", "level", "label"), [
    (0.0, ENGAGED_CLICK, "click"), (0.5, ENGAGED_CLICK, "click"),
    (0.51, ENGAGED_WATCH, "watch"), (1.0, ENGAGED_WATCH, "watch"),
])
def test_more_than_half_is_a_watch(fraction: float, level: int, label: str) -> None:
    assert derive_play_level(0, fraction) == (level, label)


def test_click_then_watch_labels_once_each_and_affinity_ends_at_watch_weight() -> None:
    s = ProfileState("p")
    a = apply_event(s, play("1", "h1", 10, action="start"), genres, P)
    b = apply_event(s, play("2", "h1", 30, ts=TS + 1), genres, P)
    c = apply_event(s, play("3", "h1", 60, ts=TS + 2), genres, P)
    d = apply_event(s, play("4", "h1", 80, ts=TS + 3), genres, P)
    assert (a.labels, b.labels, c.labels, d.labels) == ([("h1", 0.5)], [], [("h1", 1.0)], [])
    assert a.plays == [("US", "h1", TS)] and c.plays == []  # one trending play per title
    assert s.affinity["Horror"][0] == pytest.approx(1.0)


def test_duplicate_event_changes_nothing() -> None:
    s = ProfileState("p")
    apply_event(s, play("1", "h1", 70), genres, P)
    before = s.to_json()
    fx = apply_event(s, play("1", "h1", 70), genres, P)
    assert fx.duplicate and not fx.labels and s.to_json() == before


def test_late_heartbeat_does_not_rewind_the_playhead() -> None:
    s = ProfileState("p")
    apply_event(s, play("1", "c1", 40, ts=TS + 10), genres, P)
    apply_event(s, play("2", "c1", 20, ts=TS), genres, P)
    assert s.resume_position("c1") == 40


def test_finished_titles_leave_continue_watching_until_rewatched() -> None:
    s = ProfileState("p")
    apply_event(s, play("1", "c1", 30), genres, P)
    apply_event(s, play("2", "d1", 40, ts=TS + 1), genres, P)
    assert s.continue_watching() == ["d1", "c1"]
    apply_event(s, play("3", "c1", 99, ts=TS + 2, action="stop"), genres, P)
    assert s.continue_watching() == ["d1"]
    apply_event(s, play("4", "c1", 0, ts=TS + 3, action="start"), genres, P)
    assert s.continue_watching() == ["c1", "d1"]


def test_dedupe_window_is_bounded() -> None:
    s = ProfileState("p")
    for i in range(40):
        scroll = Scroll(event_id=str(i), profile_id="p", event_ts_ms=TS + i, row=i)
        apply_event(s, scroll, genres, P)
    assert len(s.seen_ids) == 16 and s.seen_ids[-1] == "39" and s.n_events == 40


def test_explicit_feedback_moves_affinity_both_ways() -> None:
    s = ProfileState("p")
    up = Feedback(event_id="1", profile_id="p", event_ts_ms=TS, title_id="h1", kind="thumbs_up")
    down = Feedback(event_id="2", profile_id="p", event_ts_ms=TS, title_id="c1",
                    kind="thumbs_down")
    assert apply_event(s, up, genres, P).labels == [("h1", 1.0)]
    assert apply_event(s, down, genres, P).labels == [("c1", 0.0)]
    aff = s.genre_affinity(TS, P.affinity_half_life_s)
    assert aff["Horror"] > 0 > aff["Comedy"]


def test_affinity_decays_by_half_life_in_event_time() -> None:
    s = ProfileState("p")
    apply_event(s, play("1", "h1", 80), genres, P)
    hl = P.affinity_half_life_s
    later = TS + int(hl * 1000)
    assert s.genre_affinity(later, hl)["Horror"] == pytest.approx(0.5)


def test_impressions_are_counted_without_changing_the_page() -> None:
    s = ProfileState("p")
    imp = Impression(event_id="1", profile_id="p", event_ts_ms=TS, request_id="r",
                     title_id="h1", row_id="x", row=0, column=0, artwork_id="a",
                     propensity=1.0, policy="p")
    fx = apply_event(s, imp, genres, P)
    assert s.impressions == {"h1": 1} and not fx.page_changed


def test_state_json_round_trip() -> None:
    s = ProfileState("p")
    apply_event(s, play("1", "d1", 70), genres, P)
    assert ProfileState.from_json(s.to_json()) == s


@given(st.permutations(list(range(8))))
def test_final_state_does_not_depend_on_arrival_order(order: list[int]) -> None:
    events = [play(str(i), "d1" if i % 2 else "h1", 10.0 * i, ts=TS + i * 1000)
              for i in range(8)]
    a, b = ProfileState("p"), ProfileState("p")
    for e in events:
        apply_event(a, e, genres, P)
    for i in order:
        apply_event(b, events[i], genres, P)
    assert a.progress == b.progress and a.engaged == b.engaged
    assert a.continue_watching() == b.continue_watching()
    # affinity may differ only by how much a click's weight decayed between the events
    # (seconds here, against a 14-day half-life)
    for g in a.affinity:
        assert a.genre_affinity(TS + 10_000, P.affinity_half_life_s)[g] == pytest.approx(
            b.genre_affinity(TS + 10_000, P.affinity_half_life_s)[g], rel=1e-5)


def test_forward_decay_ranks_like_decayed_counts() -> None:
    hl = 3600.0
    # 3 plays an hour ago vs 2 plays now: decayed counts 1.5 vs 2 -> "new" wins
    old = [decayed_weight(TS - 3_600_000, hl)[1] for _ in range(3)]
    new = [decayed_weight(TS, hl)[1] for _ in range(2)]
    assert sum(new) > sum(old)


def test_epochs_merge_with_the_previous_scaled_down() -> None:
    hl = 1.0
    span_ms = int(hl * 1000 * EPOCH_HALF_LIVES)
    e0, w0 = decayed_weight(span_ms - 1, hl)
    e1, w1 = decayed_weight(span_ms, hl)
    assert (e0, e1) == (0, 1) and w1 == 1.0
    # one play just before the boundary is worth about as much as one just after it
    merged = dict(merge_epochs([("a", w1)], [("b", w0)], 2))
    assert merged["b"] == pytest.approx(merged["a"], rel=0.01)


def art_impression(eid: str, title: str, art: str, ts: int, policy: str = "lin_ucb") -> Impression:
    return Impression(event_id=eid, profile_id="p", event_ts_ms=ts, request_id="r",
                      title_id=title, row_id="x", row=0, column=0, artwork_id=art,
                      propensity=0.25, policy=policy, policy_version=7,
                      context_json='{"genre:Horror": 1.0}')


def test_quality_play_in_the_window_rewards_the_artwork() -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i", "h1", "h1-a2", TS), genres, P)
    start = apply_event(s, play("1", "h1", 0, ts=TS + 60_000, action="start"), genres, P)
    assert start.art_rewards == []  # a click alone earns nothing yet
    fx = apply_event(s, play("2", "h1", 40, ts=TS + 120_000), genres, P)  # 40% >= 30%
    (r,) = fx.art_rewards
    assert (r.artwork_id, r.reward, r.propensity, r.policy, r.policy_version) == (
        "h1-a2", 1.0, 0.25, "lin_ucb", 7)
    assert r.context_json == '{"genre:Horror": 1.0}' and not s.pending_art


def test_no_quality_play_in_the_window_settles_with_zero() -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i", "h1", "h1-a2", TS), genres, P)
    apply_event(s, play("1", "h1", 5, ts=TS + 1000, action="stop"), genres, P)  # a click only
    later = TS + int(P.reward_window_s * 1000) + 5000
    fx = apply_event(s, Scroll(event_id="s", profile_id="p", event_ts_ms=later, row=1),
                     genres, P)
    assert [(r.artwork_id, r.reward) for r in fx.art_rewards] == [("h1-a2", 0.0)]
    # a quality play after the window rewards nothing
    assert apply_event(s, play("2", "h1", 90, ts=later + 1), genres, P).art_rewards == []


def test_a_late_impression_older_than_every_pending_decision_settles_first() -> None:
    """The oldest pending decision's time is remembered between events: an impression that
    arrives late, older than all of them, must still close first."""
    s = ProfileState("p")
    window = int(P.reward_window_s * 1000)
    apply_event(s, art_impression("i1", "h1", "h1-a", TS), genres, P)
    scroll = Scroll(event_id="s1", profile_id="p", event_ts_ms=TS + 10, row=1)
    assert apply_event(s, scroll, genres, P).art_rewards == []  # h1's window still open
    apply_event(s, art_impression("i0", "h0", "h0-a", TS - 5_000), genres, P)  # late
    late = Scroll(event_id="s2", profile_id="p", event_ts_ms=TS - 5_000 + window + 1, row=1)
    assert [r.title_id for r in apply_event(s, late, genres, P).art_rewards] == ["h0"]
    assert list(s.pending_art) == ["h1"]
    assert b"_art_floor_ms" not in s.to_json()  # derived, never stored
    after = Scroll(event_id="s3", profile_id="p", event_ts_ms=TS + window + 1, row=1)
    assert [r.title_id for r in apply_event(s, after, genres, P).art_rewards] == ["h1"]


def test_sticky_repeats_are_one_decision_and_materialized_pages_are_not_bandit_decisions(
        ) -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i1", "h1", "h1-a2", TS), genres, P)
    apply_event(s, art_impression("i2", "h1", "h1-a2", TS + 10), genres, P)
    assert s.pending_art["h1"].ts_ms == TS
    fx = apply_event(s, art_impression("i3", "h1", "h1-a0", TS + 20), genres, P)
    assert [(r.artwork_id, r.reward) for r in fx.art_rewards] == [("h1-a2", 0.0)]
    apply_event(s, art_impression("i4", "c1", "c1-a0", TS, policy="materialized"), genres, P)
    assert "c1" not in s.pending_art


DELAYED = FeatureParams(dedupe_window=16, reward_window_s=60.0, delayed_positives=True)


def test_delayed_positive_is_paid_when_the_window_closes_and_only_once() -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i", "h1", "h1-a2", TS), genres, DELAYED)
    fx = apply_event(s, play("1", "h1", 40, ts=TS + 10_000), genres, DELAYED)  # quality
    assert fx.art_rewards == [] and s.pending_art["h1"].won is True  # marked, not paid
    again = apply_event(s, play("2", "h1", 90, ts=TS + 20_000), genres, DELAYED)
    assert again.art_rewards == [] and s.pending_art["h1"].won is True
    # the mark survives a restart (the state is stored as JSON)
    s = ProfileState.from_json(s.to_json())
    assert s.oldest_pending_art_ms() == TS  # still due, like an open zero
    assert settle_expired_art(s, TS + 60_000, DELAYED) == []  # window not closed yet
    (r,) = settle_expired_art(s, TS + 60_001, DELAYED)
    assert (r.artwork_id, r.reward, r.impression_ts_ms) == ("h1-a2", 1.0, TS)
    assert s.pending_art == {} and settle_expired_art(s, TS + 10**6, DELAYED) == []


def test_delayed_mode_keeps_the_rewards_of_immediate_mode() -> None:
    def run(params: FeatureParams) -> list[tuple[str, float]]:
        s = ProfileState("p")
        evs = [art_impression("i1", "h1", "h1-a2", TS), art_impression("i2", "c1", "c1-a0", TS),
               art_impression("i3", "d1", "d1-a1", TS),
               play("1", "h1", 40, ts=TS + 1_000),                # quality: 1
               play("2", "c1", 10, ts=TS + 2_000),                # a click only: 0
               play("3", "d1", 90, ts=TS + 61_000),               # after the window: 0
               art_impression("i4", "h1", "h1-a0", TS + 70_000),  # a new decision
               play("4", "h1", 50, ts=TS + 71_000)]               # quality: 1
        rewards = [r for ev in evs for r in apply_event(s, ev, genres, params).art_rewards]
        rewards += settle_expired_art(s, TS + 10**6, params)
        return sorted((r.artwork_id, r.reward) for r in rewards)

    immediate = FeatureParams(dedupe_window=16, reward_window_s=60.0)
    expected = [("c1-a0", 0.0), ("d1-a1", 0.0), ("h1-a0", 1.0), ("h1-a2", 1.0)]
    assert run(immediate) == expected and run(DELAYED) == expected


def test_delayed_positive_of_a_replaced_decision_is_paid_when_replaced() -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i1", "h1", "h1-a2", TS), genres, DELAYED)
    apply_event(s, play("1", "h1", 40, ts=TS + 1_000), genres, DELAYED)
    fx = apply_event(s, art_impression("i2", "h1", "h1-a0", TS + 2_000), genres, DELAYED)
    assert [(r.artwork_id, r.reward) for r in fx.art_rewards] == [("h1-a2", 1.0)]
    assert s.pending_art["h1"].won is False  # the new decision starts unmarked


def test_a_member_event_past_the_window_pays_a_delayed_positive() -> None:
    s = ProfileState("p")
    apply_event(s, art_impression("i", "h1", "h1-a2", TS), genres, DELAYED)
    apply_event(s, play("1", "h1", 40, ts=TS + 1_000), genres, DELAYED)
    fx = apply_event(s, Scroll(event_id="s", profile_id="p", event_ts_ms=TS + 61_000, row=1),
                     genres, DELAYED)
    assert [(r.artwork_id, r.reward) for r in fx.art_rewards] == [("h1-a2", 1.0)]
