"""The Faust agents, driven through ``agent.test_context()`` with no broker."""

from __future__ import annotations

import asyncio

import orjson

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.app import build_app
from streams.processor import MemoryDeadLetters, MemoryPageUpdates
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000


async def test_events_agent_materializes_pages_and_dead_letters_garbage() -> None:
    store = InMemoryStore()
    letters = MemoryDeadLetters()
    await store.put_titles(make_titles(6))
    updates = MemoryPageUpdates()
    app = build_app(Settings(app_id="agent-test", batch_within_s=0.05), store, letters, updates)
    agent = app.agents["events"]
    codec = default_codec()
    ev = Play(event_id="1", profile_id="p1", event_ts_ms=TS, title_id="t2", action="start",
              position_s=0.0, duration_s=100.0, country="US")
    async with agent.test_context() as ctx:
        await ctx.put(key=b"p1", value=codec.encode_event(ev))
        await ctx.put(key=b"p1", value=b"junk")
        for _ in range(100):
            if "p1" in store.pages and letters.letters:
                break
            await asyncio.sleep(0.02)
    page = orjson.loads(store.pages["p1"])
    assert page["rows"][0]["items"][0]["title_id"] == "t2"
    assert [d.value for d in letters.letters] == [b"junk"]
    assert [p["profile_id"] for p in updates.pages] == ["p1"]  # published downstream


async def test_worker_consumer_uses_the_configured_fetch_wait() -> None:
    """faust hard-codes fetch_max_wait_ms=1500; our transport makes it a setting."""
    app = build_app(Settings(app_id="fetch-test", fetch_max_wait_ms=77), InMemoryStore(),
                    MemoryDeadLetters(), MemoryPageUpdates())
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 77


async def test_a_late_event_dead_letter_names_the_consumed_message() -> None:
    store = InMemoryStore()
    letters = MemoryDeadLetters()
    await store.put_titles(make_titles(6))
    settings = Settings(app_id="late-test", batch_within_s=0.05, max_lateness_s=60.0)
    app = build_app(settings, store, letters, MemoryPageUpdates())
    agent = app.agents["events"]
    codec = default_codec()

    def play(eid: str, ts: int) -> bytes:
        return codec.encode_event(Play(event_id=eid, profile_id="p1", event_ts_ms=ts,
                                       title_id="t2", action="start", position_s=0.0,
                                       duration_s=100.0, country="US"))

    async with agent.test_context() as ctx:
        await ctx.put(key=b"p1", value=play("new", TS + 3_600_000), partition=2)
        for _ in range(100):
            if "p1" in store.pages:
                break
            await asyncio.sleep(0.02)
        late_value = play("old", TS)  # an hour behind: later than the allowed minute
        sent = await ctx.put(key=b"p1", value=late_value, partition=2)
        for _ in range(100):
            if letters.letters:
                break
            await asyncio.sleep(0.02)
    [letter] = letters.letters
    assert (letter.error_type, letter.event_id) == ("LateEvent", "old")
    assert (letter.source_topic, letter.partition, letter.offset) == (
        sent.message.topic, 2, sent.message.offset)
    assert letter.value == late_value and letter.key == b"p1"
