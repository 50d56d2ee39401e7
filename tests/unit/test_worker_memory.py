"""The worker's memory: a batch of many bytes is applied in bounded parts, in order, and the
memory log line says what the worker's memory is made of."""

from __future__ import annotations

import asyncio
import json
import logging
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.store import InMemoryStore
from homestream.settings import ConfigError, Settings, load_settings
from streams.app import build_app, split_by_bytes
from streams.memory import BatchSizes, MemoryProbe, malloc_info
from streams.processor import MemoryDeadLetters, MemoryPageUpdates, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000


def _size(m: RawMessage) -> int:
    return len(m.key or b"") + len(m.value or b"")


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 500))
def test_parts_keep_every_message_in_order_within_the_bound(sizes: list[int],
                                                            bound: int) -> None:
    messages = [RawMessage("t", 0, i, b"k", b"x" * n, None) for i, n in enumerate(sizes)]
    parts = split_by_bytes(messages, bound)
    assert [m.offset for part in parts for m in part] == list(range(len(sizes)))
    for part in parts:
        assert part and (len(part) == 1 or sum(map(_size, part)) <= bound)
    for a, b in pairwise(parts):  # a part is cut only when full
        assert sum(map(_size, a)) + _size(b[0]) > bound


def _play(i: int) -> bytes:
    return default_codec().encode_event(Play(
        event_id=str(i), profile_id=f"p{i % 7}", event_ts_ms=TS + i, title_id=f"t{i % 5}",
        action="start", position_s=0.0, duration_s=100.0, country="US"))


async def test_the_events_agent_applies_a_large_batch_in_parts_of_bounded_bytes() -> None:
    store = InMemoryStore()
    await store.put_titles(make_titles(6))
    settings = Settings(app_id="parts-test", batch_within_s=0.2, batch_max_bytes=1024)
    app = build_app(settings, store, MemoryDeadLetters(), MemoryPageUpdates())
    processor, parts = app.processor, []
    inner = processor.process

    async def recording(messages: list[RawMessage]) -> object:
        parts.append(messages)
        return await inner(messages)

    processor.process = recording
    values = [_play(i) for i in range(60)]
    assert sum(len(v) + 2 for v in values) > 3 * 1024  # keys are 2 bytes
    async with app.agents["events"].test_context() as ctx:
        for i, v in enumerate(values):
            await ctx.put(key=f"p{i % 7}".encode(), value=v)
        for _ in range(1000):  # up to 20 s on a loaded machine
            if sum(map(len, parts)) == len(values):
                break
            await asyncio.sleep(0.02)
    assert [m.value for part in parts for m in part] == values  # all of them, in order
    assert all(sum(map(_size, part)) <= 1024 for part in parts)
    assert len(parts) < len(values)  # batched: parts of several messages, not one by one
    assert (await store.counters())["events_applied"] == len(values)


def test_batch_max_bytes_is_a_setting_with_a_named_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMESTREAM_BATCH_MAX_BYTES", "65536")
    assert load_settings().batch_max_bytes == 65536
    monkeypatch.setenv("HOMESTREAM_BATCH_MAX_BYTES", "10")
    with pytest.raises(ConfigError, match="BATCH_MAX_BYTES"):
        load_settings()


def test_batch_sizes_name_the_largest_batch_by_topic_and_age() -> None:
    sizes = BatchSizes()
    sizes.observe([RawMessage("a", 0, 0, b"k", b"xx", 1_000)], 3_000)
    sizes.observe([RawMessage("a", 0, 1, b"k", b"x", 2_500),
                   RawMessage("b", 1, 0, None, b"y" * 9, 2_000)], 3_000)
    out = sizes.take()
    assert out["batches"] == 2 and out["bytes"] == 3 + 2 + 9 and out["max_messages"] == 2
    assert out["largest"] == {"by_topic": {"a": [1, 2], "b": [1, 9]}, "oldest_age_s": 1.0}
    assert sizes.take()["batches"] == 0  # counted again from zero


def test_the_memory_log_line_reports_rss_allocator_collector_and_queues(
        caplog: pytest.LogCaptureFixture) -> None:
    probe = MemoryProbe(lambda: {"pages_held": 3})
    with caplog.at_level(logging.INFO, logger="streams.memory"):
        probe.log()
    line = json.loads(caplog.records[-1].getMessage().split("worker memory ", 1)[1])
    assert line["proc_kib"]["VmRSS"] > 0 and line["py_blocks"] > 0
    assert len(line["gc_count"]) == 3 and line["queues"] == {"pages_held": 3}
    assert line["malloc_kib"] == {} or line["malloc_kib"]["heap"] > 0
    assert malloc_info() == {} or set(malloc_info()) == {"heap", "in_use", "free", "mmapped"}
