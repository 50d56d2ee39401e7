"""The session-start event: its model and wire form, the producer client sending it alone,
the worker rendering the member's page on it (even with a render window), and its dead
letters. No broker or Redis (tests/integration/test_session_start.py has them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest

from evaluation.movielens.data import Rating, session_start, to_events, view_impressions
from features.profile import FeatureParams, ProfileState, apply_event
from homestream.player.producer import InvalidEvent, parse_event
from serving.ingest import messages_by_profile
from streams.decode import MessageDecoder
from streams.processor import RawMessage
from tests.unit.test_producer_unit import make, scroll
from tests.unit.test_render import as_of, play_msg, windowed
from topics.codec import BATCH_SCHEMA, SCHEMA_DIR, AvroCodec, default_codec
from topics.models import SessionStart, message_groups

TS = 1_700_000_000_000
codec = default_codec()


def start(eid: str = "s1", profile: str = "p1", ts: int = TS) -> SessionStart:
    return SessionStart(event_id=eid, profile_id=profile, event_ts_ms=ts, device="tv",
                        country="US")


def start_msg(eid: str, profile: str, ts: int, offset: int) -> RawMessage:
    return RawMessage("events", 0, offset, profile.encode(),
                      codec.encode_event(start(eid, profile, ts)))


# -- the model and its wire form -----------------------------------------------------------
def test_a_session_start_round_trips_as_a_message_of_its_own() -> None:
    ev = start()
    data = codec.encode_event(ev)
    assert data[2:10].hex() == codec.fingerprint_hex("homestream.SessionStart")
    assert codec.decode_events(data) == [ev]


def test_a_session_start_is_refused_inside_a_batch() -> None:
    with pytest.raises(ValueError, match="message of its own"):
        codec.encode_batch("p1", [scroll("p1", 1), start()])
    items = codec.schema(BATCH_SCHEMA)["fields"][1]["type"]["items"]
    assert "homestream.SessionStart" not in items  # the batch's union is unchanged


def test_parse_event_names_the_bad_field_of_a_session_start() -> None:
    ok = parse_event({"type": "session_start", "event_id": "s", "profile_id": "p",
                      "event_ts_ms": TS})
    assert isinstance(ok, SessionStart) and ok.device == "unknown" and ok.country == "ZZ"
    with pytest.raises(InvalidEvent, match=r"SessionStart\.event_ts_ms"):
        parse_event({"type": "session_start", "event_id": "s", "profile_id": "p",
                     "event_ts_ms": TS // 1000})  # seconds, not ms


# -- the producer client and the HTTP ingestion's grouping --------------------------------
def test_the_producer_sends_the_buffer_then_the_session_start_alone() -> None:
    p, fake = make(max_batch_events=100)
    p.send(scroll("p1", 1))
    p.send(scroll("p1", 2))
    p.send(start("s", "p1", TS + 3))
    assert p.buffered == 0  # nothing waits: the member is opening the app
    p.send(scroll("p1", 4))
    p.flush()
    decoded = [[e.event_id for e in codec.decode_events(m.value())] for m in fake.messages]
    assert decoded == [["p1-e1", "p1-e2"], ["s"], ["p1-e4"]]
    assert {m.key() for m in fake.messages} == {b"p1"}


def test_ingest_groups_put_a_session_start_in_a_message_of_its_own() -> None:
    evs = [scroll("p1", 1), start("s", "p1", TS + 2), scroll("p2", 1), scroll("p1", 3)]
    groups = messages_by_profile(evs)
    assert [(pid, [e.event_id for e in g]) for pid, g in groups] == [
        ("p1", ["p1-e1"]), ("p1", ["s"]), ("p1", ["p1-e3"]), ("p2", ["p2-e1"])]
    assert message_groups([start("a"), start("b")]) == [[start("a")], [start("b")]]


# -- the worker ----------------------------------------------------------------------------
def test_apply_event_marks_the_page_changed_once_per_event_id() -> None:
    state = ProfileState("p1")
    fx = apply_event(state, start(), lambda _: [], FeatureParams())
    assert fx.page_changed and not fx.duplicate and not fx.labels and not fx.plays
    assert state.last_event_ts_ms == TS and state.session["start_ms"] == TS
    assert apply_event(state, start(), lambda _: [], FeatureParams()).duplicate


async def test_a_session_start_renders_the_page_now_even_within_a_render_window() -> None:
    proc, store, clock = await windowed(500)
    await proc.process([play_msg("1", "p1", 100, TS, 0)])  # first page: rendered at once
    clock.t += 0.1
    rep = await proc.process([play_msg("2", "p1", 200, TS + 1, 1)])
    assert rep.pages == 0 and proc.renderer.held == 1  # a change within the window waits
    rep = await proc.process([start_msg("s", "p1", TS + 2, 2)])
    assert rep.pages == 1 and rep.applied == 1 and rep.event_types["SessionStart"] == 1
    assert as_of(store, "p1") == TS + 2 and proc.renderer.held == 0  # the held change too
    page = orjson.loads(store.pages["p1"])
    assert page["rows"] and page["personalized"]
    rep = await proc.process([start_msg("s", "p1", TS + 2, 3)])  # redelivered: renders again
    assert rep.duplicates == 1 and rep.pages == 1


async def test_a_malformed_session_start_is_a_dead_letter_with_its_reason() -> None:
    proc, store, _ = await windowed(0)
    bad = codec.encode("homestream.SessionStart", {
        "event_id": "s", "profile_id": "p1", "event_ts_ms": TS // 1000, "device": "tv",
        "country": "USA", "app_version": ""})
    rep = await proc.process([RawMessage("events", 0, 5, b"p1", bad)])
    assert rep.dead_letters == 1 and rep.applied == 0 and "p1" not in store.pages
    letter = proc.dead_letters.letters[0]  # type: ignore[attr-defined]
    assert letter.error_type == "ValidationError" and letter.offset == 5
    assert "SessionStart" in letter.reason and "event_ts_ms" in letter.reason
    assert "country" in letter.reason and letter.value == bad


def test_a_worker_of_release_2_dead_letters_it_as_an_unknown_fingerprint(tmp_path: Path
                                                                         ) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path / "schemas")
    releases_file = tmp_path / "schemas" / "releases.json"
    releases = json.loads(releases_file.read_text())
    releases["releases"] = [r for r in releases["releases"] if r["release"] <= 2]
    releases_file.write_text(json.dumps(releases))
    old = AvroCodec(tmp_path / "schemas")
    assert "homestream.SessionStart" not in old.schema_names
    assert old.header(BATCH_SCHEMA) == codec.header(BATCH_SCHEMA)  # batches unchanged
    d = MessageDecoder(old, lambda: TS / 1000, 60.0)
    events, letters = d.decode([start_msg("s", "p1", TS, 9), play_msg("2", "p1", 5, TS, 10)])
    assert [e.event.event_id for e in events] == ["2"]  # the rest of the stream goes on
    assert letters[0].error_type == "DecodeError" and letters[0].offset == 9
    assert "unknown schema fingerprint" in letters[0].reason


# -- the evaluation's visit ----------------------------------------------------------------
def test_the_evaluation_session_start_precedes_the_page_view_and_the_visit_plays() -> None:
    now_ts = 880_000_000
    ev = session_start("7", now_ts)
    page = {"rows": [{"row_id": "top-picks", "items": [{"title_id": "m1", "artwork_id": "a"}]}]}
    shown = view_impressions(page, "7", now_ts)
    plays = to_events(Rating("7", "m2", 4.0, now_ts))
    assert ev.event_ts_ms < min(i.event_ts_ms for i in shown) < plays[0].event_ts_ms
    assert ev.event_id == session_start("7", now_ts).event_id  # a re-sent visit dedupes
    assert ev.event_id != session_start("7", now_ts + 1).event_id


# -- the simulated player ------------------------------------------------------------------
def test_simulated_sessions_open_with_a_session_start_only_when_asked() -> None:
    from homestream.player.simulator import (
        PlayerSimulator,
        synthetic_catalog,
        synthetic_profiles,
    )

    catalog, profiles = synthetic_catalog(40, 3), synthetic_profiles(4, seed=5)
    plain = PlayerSimulator(catalog, profiles, seed=9).session(profiles[0], TS)
    assert not any(isinstance(e, SessionStart) for e in plain)
    opened = PlayerSimulator(catalog, profiles, seed=9, session_starts=True).session(
        profiles[0], TS)
    first = opened[0]
    assert isinstance(first, SessionStart) and first.event_ts_ms == TS
    assert first.device == profiles[0].device and first.country == profiles[0].country
    assert len(opened) > 1 and all(e.event_ts_ms > TS for e in opened[1:])
    assert plain == PlayerSimulator(catalog, profiles, seed=9).session(profiles[0], TS)
