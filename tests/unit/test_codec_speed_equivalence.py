"""The worker's fast encoders write exactly what fastavro writes, on real and odd input.

Pages and learning records of a simulated backlog (the processor on an in-memory store),
plus hand-made ones at the edges of the encoding (empty arrays, multi-byte lengths and
varints, non-ASCII text, negative sources, integer scores, missing optional keys), encode to
the same bytes with :mod:`topics.avro_bytes` as with ``fastavro.schemaless_writer`` on the
schema's plain record; the learner reads them back as the same record.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.inprocess import messages
from features.store import InMemoryStore
from homestream.player.simulator import synthetic_catalog, synthetic_profiles
from homestream.settings import Settings
from streams.learning import LearningRecord, MemoryLearning, RecordBuilder
from streams.processor import EventProcessor, MemoryDeadLetters
from streams.render import MemoryPageUpdates
from topics.codec import (
    MODEL_UPDATE_SCHEMA,
    PAGE_UPDATE_SCHEMA,
    SCHEMA_DIR,
    AvroCodec,
    default_codec,
    page_update_record,
)

codec = default_codec()


async def simulate() -> tuple[list[dict[str, Any]], list[LearningRecord]]:
    """The pages and learning records of 3000 simulated backlog events."""
    titles, profiles = synthetic_catalog(300, 3), synthetic_profiles(400, 3)
    store = InMemoryStore()
    await store.put_titles(titles)
    pages, learning = MemoryPageUpdates(), MemoryLearning()
    proc = EventProcessor(Settings(render_window_ms=1000), store, MemoryDeadLetters(),
                          page_updates=pages, learning=learning)
    await proc.start()
    msgs = messages(3000, 20, 4, titles, profiles)
    for i in range(0, len(msgs), 40):
        await proc.process(msgs[i:i + 40])
    await proc.flush_pages(final=True)
    return pages.pages, learning.records


@pytest.fixture(scope="module")
def backlog() -> tuple[list[dict[str, Any]], list[LearningRecord]]:
    return asyncio.run(simulate())


def fastavro_page(page: dict[str, Any]) -> bytes:
    return codec.encode(PAGE_UPDATE_SCHEMA, page_update_record(page))


def fastavro_record(record: LearningRecord) -> bytes:
    return codec.encode(MODEL_UPDATE_SCHEMA, record.to_avro())


def test_the_packaged_schemas_take_the_direct_writers() -> None:
    assert codec._direct == {PAGE_UPDATE_SCHEMA: True, MODEL_UPDATE_SCHEMA: True}


def test_real_pages_encode_to_fastavros_bytes(backlog: Any) -> None:
    pages, _ = backlog
    assert len(pages) > 50 and sum(len(r["items"]) for p in pages for r in p["rows"]) > 2000
    for page in pages:
        assert codec.encode_page_update(page) == fastavro_page(page)


def odd_pages() -> list[dict[str, Any]]:
    item = {"title_id": "t1", "artwork_id": "t1-a0", "score": 0.25, "name": "ignored"}
    row = {"row_id": "r", "kind": "k", "title": "T", "explanation": "", "utility": 1.5,
           "items": [item]}
    base = {"profile_id": "p1", "personalized": True, "country": "US",
            "generated_at_ms": 1_700_000_000_000, "as_of_event_ts_ms": 1_699_999_999_000,
            "kids": False, "rows": [row], "variant": "extra keys are not written"}
    long_text = "é" * 70 + "\u2603" * 40  # multi-byte UTF-8, lengths above one varint byte
    many = [{**item, "title_id": f"t{i}", "score": i / 7} for i in range(200)]
    return [
        base,
        {**base, "profile_id": None, "as_of_event_ts_ms": None, "personalized": 0},
        {k: v for k, v in base.items() if k != "kids"},
        {**base, "kids": 1, "rows": []},
        {**base, "rows": [{**row, "items": []}, {k: v for k, v in row.items() if k != "utility"}]},
        {**base, "rows": [{**row, "title": long_text, "items": many}]},
        {**base, "rows": [{**row, "utility": 3, "items": [{**item, "score": 2}]}]},
        {**base, "rows": [{**row, "utility": -0.0,
                           "items": [{**item, "score": math.inf}, {**item, "score": -1e300}]}]},
        {**base, "generated_at_ms": 2**62, "as_of_event_ts_ms": -5, "country": ""},
        {**base, "generated_at_ms": 1.7e12, "rows": [row] * 64},
    ]


@pytest.mark.parametrize("page", odd_pages())
def test_odd_pages_encode_to_fastavros_bytes(page: dict[str, Any]) -> None:
    data = codec.encode_page_update(page)
    assert data == fastavro_page(page)
    name, record = codec.decode(data)
    assert name == PAGE_UPDATE_SCHEMA and record["kids"] is bool(page.get("kids", False))


def test_real_learning_records_encode_to_fastavros_bytes(backlog: Any) -> None:
    _, records = backlog
    assert sum(len(r.rows) for r in records) > 500 and sum(len(r.labels) for r in records)
    for record in records:
        for part in record.split(300):
            data = part.encode(codec)
            assert data == fastavro_record(part)
            assert LearningRecord.from_avro(codec.decode(data)[1]) == part


def odd_records() -> list[LearningRecord]:
    empty = RecordBuilder().build()
    b = RecordBuilder()
    b.label("events", 0, 2**40, "p\u00e9", "t1", 0.5)
    b.label(None, -1, -1, "p", "t2", 0)
    b.watch("events", 3, 5000, [], "t3")
    b.watch("events", 3, 5000, [f"t{i}" for i in range(70)], "t4")
    b.artwork(None, -1, -1, json.dumps({"d": "tv" * 100}), "a1", [], 1.0, "lin_ucb")
    b.artwork("impressions", 1, 7, "", "a2", ["dark", "\u2603"], -0.0, "uniform")
    b.row("impressions", 1, 7, "top_picks", 3, 1.0)
    for i in range(70):  # more than 63 sources and items: two-byte counts
        b.row(f"topic-{i}", i, i * 1000, "trending", 1.0, 0.0)
    return [empty, b.build()]


@pytest.mark.parametrize("record", odd_records())
def test_odd_learning_records_encode_to_fastavros_bytes(record: LearningRecord) -> None:
    data = record.encode(codec)
    assert data == fastavro_record(record)
    assert LearningRecord.from_avro(codec.decode(data)[1]) == record


def reference_split(record: LearningRecord, max_items: int) -> list[LearningRecord]:
    """The split as first written: one record per source message, joined in offset order."""
    if len(record) <= max_items:
        return [record]
    kinds = ("labels", "watches", "artwork", "rows")
    groups: dict[tuple[int, int], LearningRecord] = {}
    for kind in kinds:
        for item in getattr(record, kind):
            group = groups.setdefault((item.src, item.offset), LearningRecord())
            getattr(group, kind).append(item)
    out: list[LearningRecord] = []
    current = LearningRecord(list(record.sources))
    for key in sorted(groups):
        group = groups[key]
        if len(current) and len(current) + len(group) > max_items:
            out.append(current)
            current = LearningRecord(list(record.sources))
        for kind in kinds:
            getattr(current, kind).extend(getattr(group, kind))
    out.append(current)
    return out


@pytest.mark.parametrize("max_items", [1, 7, 50, 300, 2000, 100_000])
def test_split_matches_the_reference(backlog: Any, max_items: int) -> None:
    _, records = backlog
    for record in [*records, *odd_records()]:
        assert record.split(max_items) == reference_split(record, max_items)


def test_the_fallback_writers_write_the_same_bytes() -> None:
    """A codec that writes with fastavro (a schema the direct writers are not for) turns
    pages and tuples into the schema's records the same way."""
    slow = AvroCodec()
    slow._direct = dict.fromkeys(slow._direct, False)
    for page in odd_pages():
        assert slow.encode_page_update(page) == codec.encode_page_update(page)
    for record in odd_records():
        assert record.encode(slow) == record.encode(codec)


def test_a_changed_schema_is_written_by_fastavro(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    path = schemas / "PageUpdate" / "v2.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "note", "type": "string", "default": "n"})
    path.write_text(json.dumps(schema))
    changed = AvroCodec(schemas)
    assert changed._direct == {PAGE_UPDATE_SCHEMA: False, MODEL_UPDATE_SCHEMA: True}
    page = odd_pages()[0]
    data = changed.encode_page_update(page)
    assert data == changed.encode(PAGE_UPDATE_SCHEMA, page_update_record(page))
    assert changed.decode(data)[1]["note"] == "n"


def test_compiled_items_are_built_and_write_the_reference_bytes() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from topics._avro_page import items_block  # setup.py builds it wherever gcc is

    from topics import avro_bytes

    assert avro_bytes._items_block is items_block
    item = st.fixed_dictionaries({
        "title_id": st.text(max_size=80), "artwork_id": st.text(max_size=3),
        "score": st.one_of(st.floats(allow_nan=False), st.integers(-2**40, 2**40))})

    @settings(max_examples=200, deadline=None)
    @given(st.lists(item, max_size=150))
    def same(items: list[dict[str, Any]]) -> None:
        assert items_block(items) == avro_bytes.items_block_py(items)

    same()
