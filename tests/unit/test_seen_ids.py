"""A member's applied event ids: the set kept beside ``seen_ids`` answers as the list does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from features.profile import ProfileState


@given(st.lists(st.sampled_from([f"e{i}" for i in range(12)]), max_size=60),
       st.integers(1, 6))
def test_has_seen_answers_as_the_bounded_list(ids: list[str], window: int) -> None:
    state, kept = ProfileState("p"), []
    for event_id in ids:
        assert state.has_seen(event_id) == (event_id in kept)
        if event_id not in kept:
            state.note_seen(event_id, window)
            kept = [*kept, event_id][-window:]
        assert state.seen_ids == kept


def test_a_stored_state_remembers_its_ids_and_stores_no_set() -> None:
    state = ProfileState("p")
    for i in range(5):
        state.note_seen(f"e{i}", 3)
    loaded = ProfileState.from_json(state.to_json())
    assert b"_seen_set" not in state.to_json()
    assert loaded.has_seen("e4") and loaded.has_seen("e2") and not loaded.has_seen("e1")
    assert loaded == state
