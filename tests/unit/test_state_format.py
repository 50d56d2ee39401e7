"""The stored profile-state format: named entries, versioned, and old states still load."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from features.profile import FeatureParams, ProfileState, apply_event, settle_expired_art
from features.state_format import STATE_FORMAT, PendingArtwork, Playhead, ShownRow
from topics.models import Play

#: A state written by the format-1 code (positional playheads and pending decisions; ``t2``'s
#: decision marked won by a quality play held back with ``delayed_positives``).
V1_STATE = Path(__file__).parent / "data" / "profile_state_v1.json"
TS = 1_700_000_000_000
DELAYED = FeatureParams(reward_window_s=60.0, delayed_positives=True)


def test_a_format_1_state_loads_into_the_named_entries() -> None:
    s = ProfileState.from_json(V1_STATE.read_bytes())
    assert s.progress == {"t1": Playhead(600.0, 1000.0, TS + 1000),
                          "t2": Playhead(500.0, 1000.0, TS + 4000)}
    assert s.pending_art == {
        "t2": PendingArtwork(TS + 2000, "t2-a", 0.5, "uniform", 3, '{"genre:Horror": 1.0}',
                             won=True),
        "t3": PendingArtwork(TS + 3000, "t3-b", 0.25, "uniform", 3, "", won=False)}
    assert s.continue_watching() == ["t2", "t1"] and s.resume_position("t1") == 600.0
    assert s.oldest_pending_art_ms() == TS + 2000
    # the loaded decisions settle as the old code would have: t2 won, t3 not
    rewards = settle_expired_art(s, TS + 10**6, DELAYED)
    assert sorted((r.title_id, r.reward, r.policy_version) for r in rewards) == [
        ("t2", 1.0, 3), ("t3", 0.0, 3)]


def test_a_loaded_format_1_state_is_written_back_in_the_current_format() -> None:
    old = ProfileState.from_json(V1_STATE.read_bytes())
    raw = orjson.loads(old.to_json())
    assert raw["format"] == STATE_FORMAT
    # arrays of the named tuples' fields, in their declared order; won always present
    assert raw["progress"]["t1"] == list(Playhead(600.0, 1000.0, TS + 1000))
    assert raw["pending_art"]["t2"] == list(old.pending_art["t2"])
    assert len(raw["pending_art"]["t3"]) == len(PendingArtwork._fields)
    assert raw["pending_art"]["t3"][PendingArtwork._fields.index("won")] is False
    again = ProfileState.from_json(old.to_json())
    assert again == old and again.pending_art["t2"].won is True


def test_a_stored_entry_of_the_wrong_length_is_refused_naming_it() -> None:
    raw = orjson.loads(ProfileState.from_json(V1_STATE.read_bytes()).to_json())
    raw["pending_art"]["t3"] = raw["pending_art"]["t3"][:6]
    with pytest.raises(ValueError, match="PendingArtwork has 6 fields, not 7"):
        ProfileState.from_json(orjson.dumps(raw))


def test_playheads_keep_event_time_order_across_a_store_round_trip() -> None:
    s = ProfileState.from_json(V1_STATE.read_bytes())
    late = Play(event_id="late", profile_id="p1", event_ts_ms=TS, title_id="t1",
                action="progress", position_s=50.0, duration_s=1000.0, country="US")
    apply_event(s, late, lambda t: [], DELAYED)
    s = ProfileState.from_json(s.to_json())
    assert s.progress["t1"] == Playhead(600.0, 1000.0, TS + 1000)  # a late heartbeat


def test_a_state_of_an_unknown_format_is_refused_naming_it() -> None:
    raw = orjson.loads(V1_STATE.read_bytes())
    raw["format"] = STATE_FORMAT + 1
    with pytest.raises(ValueError, match=f"format {STATE_FORMAT + 1}"):
        ProfileState.from_json(orjson.dumps(raw))


def test_the_server_reads_resume_positions_from_either_format() -> None:
    from serving.home_read import ServeView

    old = V1_STATE.read_bytes()
    for raw in (old, ProfileState.from_json(old).to_json()):
        view = ServeView.from_json(raw)
        assert view.resume_position("t1") == 600.0 and view.resume_position("t9") is None


def test_shown_rows_are_named_and_stored_as_arrays() -> None:
    state = ProfileState("p1")
    state.shown_rows["t1"] = ShownRow("top_picks", 5)
    raw = orjson.loads(state.to_json())
    assert raw["shown_rows"] == {"t1": ["top_picks", 5]}
    back = ProfileState.from_json(state.to_json())
    assert back.shown_rows["t1"].kind == "top_picks" and back.shown_rows["t1"].ts_ms == 5
