"""A batch that raises with an error that is not an outage: its poisoned events are
dead-lettered with the exception, every other event is applied once (in-memory store)."""

from __future__ import annotations

from typing import Any

import pytest

import streams.processor as processor_module
from features.store import InMemoryStore
from homestream.settings import Settings
from streams.poison import POISON
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000
codec = default_codec()
POISONED = "t7"


def play(eid: str, profile: str, title: str, ts: int = TS) -> Play:
    return Play(event_id=eid, profile_id=profile, event_ts_ms=ts, title_id=title,
                action="progress", position_s=900.0, duration_s=1200.0, country="US")


def msg(value: bytes, key: str, offset: int) -> RawMessage:
    return RawMessage("events", 0, offset, key.encode(), value, None)


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """``apply_event`` raises for the poisoned title, as a bug met by one odd event would."""
    real = processor_module.apply_event

    def apply_event(state: Any, event: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(event, "title_id", None) == POISONED:
            raise ZeroDivisionError("a title that breaks the features")
        return real(state, event, *args, **kwargs)

    monkeypatch.setattr(processor_module, "apply_event", apply_event)


async def make_processor() -> EventProcessor:
    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    return EventProcessor(Settings(row_length=5), store, MemoryDeadLetters(),
                          clock=lambda: TS / 1000)


def batch() -> list[RawMessage]:
    """p1: one message of three events, the middle one poisoned; p2 and p3: one event each,
    p3's poisoned."""
    return [
        msg(codec.encode_batch("p1", [play("a1", "p1", "t1"), play("a2", "p1", POISONED, TS + 1),
                                      play("a3", "p1", "t2", TS + 2)]), "p1", 0),
        msg(codec.encode_event(play("b1", "p2", "t3")), "p2", 1),
        msg(codec.encode_event(play("c1", "p3", POISONED)), "p3", 2),
    ]


@pytest.mark.usefixtures("poisoned")
async def test_poisoned_events_are_dead_lettered_and_the_rest_applied_once() -> None:
    proc = await make_processor()
    rep = await proc.process(batch())
    assert (rep.applied, rep.dead_letters, rep.duplicates) == (3, 2, 0)
    letters = {x.event_id: x for x in proc.dead_letters.letters}  # type: ignore[attr-defined]
    assert set(letters) == {"a2", "c1"}
    assert all(x.error_type == POISON for x in letters.values())
    assert "ZeroDivisionError: a title that breaks the features" in letters["a2"].reason
    # the event of a three-event message goes alone, re-encoded; a single event keeps its bytes
    assert "message of 3 events" in letters["a2"].reason
    assert [e.event_id for e in codec.decode_events(letters["a2"].value)] == ["a2"]
    assert letters["c1"].value == batch()[2].value and letters["c1"].offset == 2
    store = proc.store
    assert isinstance(store, InMemoryStore)
    states = await store.load_profiles(["p1", "p2", "p3"])
    assert states["p1"].seen_ids == ["a1", "a3"] and states["p1"].n_events == 2
    assert states["p2"].n_events == 1 and "p3" not in states
    counters = await store.counters()
    assert (counters["events_applied"], counters["dead_letters"]) == (3, 2)
    assert {"p1", "p2"} <= set(store.pages)
    # a redelivery applies nothing twice (the poisoned events are dead-lettered again)
    again = await proc.process(batch())
    assert (again.applied, again.duplicates, again.dead_letters) == (0, 3, 2)
    assert (await store.counters())["events_applied"] == 3


@pytest.mark.usefixtures("poisoned")
async def test_a_poisoned_batch_learns_each_applied_event_once() -> None:
    clean = await make_processor()
    await clean.process([m for m in batch() if POISONED not in str(m.value)])
    await clean.process([msg(codec.encode_event(play(e, "p1", t, TS + i)), "p1", 9)
                         for i, (e, t) in enumerate([("a1", "t1"), ("a3", "t2")])])
    proc = await make_processor()
    await proc.process(batch())
    assert proc.model.n_learned == clean.model.n_learned > 0
    assert proc.cowatch.n_learned == clean.cowatch.n_learned


async def test_a_message_whose_decoding_raises_is_dead_lettered_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    proc = await make_processor()
    real = proc.decoder.decode

    def decode(messages: Any) -> Any:
        if any(m.offset == 1 for m in messages):
            raise RuntimeError("decoder bug")
        return real(messages)

    monkeypatch.setattr(proc.decoder, "decode", decode)
    rep = await proc.process(batch()[1:])  # p2's message breaks the decoder, p3's is fine
    assert (rep.applied, rep.dead_letters) == (1, 1)
    [letter] = proc.dead_letters.letters  # type: ignore[attr-defined]
    assert (letter.offset, letter.error_type) == (1, POISON)
    assert "decoding the message raised RuntimeError: decoder bug" in letter.reason
