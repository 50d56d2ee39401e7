"""The worker's event decoding reads what fastavro reads and dead-letters what it did.

The codec reads the player events' own schema versions with readers made for them
(:func:`topics.avro_bytes.compile_reader`: the compiled ``topics._avro_read.Reader`` and the
Python reference), falling back to fastavro on anything they do not read exactly as it
does. Both, compared with a codec that reads everything with fastavro: the same
records for real backlog messages, for every event type alone and in batches and for edge
values; the same records or the same :class:`DecodeError` text for thousands of corrupted
and truncated messages; and :class:`MessageDecoder` gives equal events and equal dead
letters (reasons included) for a mix of good, corrupt, invalid, mismatched and future input.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
from pydantic import ValidationError

from bench.inprocess import messages
from homestream.player.simulator import synthetic_catalog, synthetic_profiles
from streams.decode import MessageDecoder, RawMessage
from topics.avro_bytes import _avro_read, compile_reader, long_bytes, string_bytes
from topics.codec import (
    BATCH_SCHEMA,
    EVENT_MODELS,
    HEADER_LEN,
    AvroCodec,
    DecodeError,
    describe_validation_error,
)
from topics.models import (
    Click,
    Event,
    Feedback,
    Impression,
    Play,
    Scroll,
    Search,
    SessionStart,
)

TS = 1_700_000_000_000
#: The decoders' clock (the backlog's events are from six hours before the wall clock).
NOW_MS = int(time.time() * 1000)
#: The reference: every body read by fastavro.
slow = AvroCodec()
slow._fast_readers = {}
#: Bodies read by the Python written for each schema (the compiled reader's reference).
python_read = AvroCodec()
python_read._fast_readers = {name: compile_reader(python_read.schema(name), compiled=False)
                             for name in python_read._fast_readers}


@pytest.fixture(params=["compiled", "python"])
def codec(request: pytest.FixtureRequest) -> AvroCodec:
    """The codec as the worker has it (compiled readers when built), and one reading with
    the Python readers."""
    return AvroCodec() if request.param == "compiled" else python_read


def odd_events(profile: str = "p1") -> list[Event]:
    """Every batched event type, with values at the edges of their encodings."""
    base = {"profile_id": profile, "event_ts_ms": TS}
    return [
        Play(event_id="1", title_id="t", action="stop", position_s=5, duration_s=10,
             country="US", session_id="s", app_version="9.1", **base),
        Play(event_id="é" * 100, title_id="\u2603", action="start", position_s=0.0,
             duration_s=100_000.0, session_id=None, **base),
        Impression(event_id="2", request_id="r", title_id="t", row_id="top-picks", row=1,
                   column=2**31 - 1, artwork_id="", propensity=1e-300, policy="eps",
                   policy_version=2**62, variant="b", context_json='{"a": "' + "x" * 3000 + '"}',
                   **base),
        Scroll(event_id="3", row=0, column=0, request_id=None, **base),
        Scroll(event_id="3b", row=64, column=8191, request_id="r", **base),
        Click(event_id="4", title_id="t", row_id=None, **base),
        Feedback(event_id="5", title_id="t", kind="stars", stars=5, **base),
        Feedback(event_id="5b", title_id="t", kind="thumbs_down", **base),
        Search(event_id="6", query="space horror", device="", **base),
    ]


def same_text(text: str) -> str:
    """``text`` without object addresses (fastavro's errors name the stream object)."""
    return re.sub(r" at 0x[0-9a-f]+", " at 0x...", text)


def outcome(c: AvroCodec, data: Any) -> tuple[str, Any]:
    """What ``c`` makes of a message: its schema and record, or its error's text."""
    try:
        return c.decode(data)
    except DecodeError as exc:
        return "DecodeError", same_text(str(exc))


@pytest.fixture(scope="module")
def backlog() -> list[RawMessage]:
    titles, profiles = synthetic_catalog(200, 5), synthetic_profiles(300, 5)
    return messages(3000, 20, 6, titles, profiles)


def test_every_player_event_schema_has_a_compiled_reader(codec: AvroCodec) -> None:
    assert set(codec._fast_readers) == {*EVENT_MODELS, BATCH_SCHEMA}
    assert all(codec._fast_readers.values())


def test_schemas_it_cannot_read_get_no_reader(codec: AvroCodec) -> None:
    # Title has a date (logical type), DeadLetter bytes; both stay with fastavro
    assert compile_reader(codec.schema("homestream.Title")) is None
    assert compile_reader(codec.schema("homestream.DeadLetter")) is None
    assert compile_reader({"type": "map", "values": "long"}) is None


def test_backlog_messages_read_as_fastavro_reads_them(codec: AvroCodec,
                                                     backlog: list[RawMessage]) -> None:
    assert len(backlog) > 100
    for m in backlog:
        assert codec.decode(m.value) == slow.decode(m.value)
        assert codec.decode_events(m.value) == slow.decode_events(m.value)


@pytest.mark.parametrize("event", odd_events(), ids=lambda e: type(e).__name__)
def test_odd_events_read_as_fastavro_reads_them(codec: AvroCodec, event: Event) -> None:
    for data in (codec.encode_event(event), codec.encode_batch("p1", [event, event])):
        assert codec.decode(data) == slow.decode(data)
        assert codec.decode_events(data) == slow.decode_events(data)
        assert event in codec.decode_events(data)


def test_a_session_start_reads_as_fastavro_reads_it(codec: AvroCodec) -> None:
    ev = SessionStart(event_id="s", profile_id="p", event_ts_ms=TS, app_version="1")
    data = codec.encode_event(ev)
    assert codec.decode(data) == slow.decode(data) and codec.decode_events(data) == [ev]


def corrupted(values: list[bytes], n: int, seed: int) -> list[bytes]:
    """``n`` messages cut short or with a few bytes of their body overwritten."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        v = bytearray(rnd.choice(values))
        if rnd.random() < 0.3:
            v = v[:rnd.randrange(HEADER_LEN, len(v))]
        else:
            for _ in range(rnd.randint(1, 3)):
                v[rnd.randrange(HEADER_LEN, len(v))] = rnd.randrange(256)
        out.append(bytes(v))
    return out


def test_corrupt_messages_give_fastavros_record_or_error(codec: AvroCodec,
                                                        backlog: list[RawMessage]) -> None:
    values = [m.value for m in backlog[:50]]
    values += [codec.encode_event(e) for e in odd_events()]
    kinds = {"record": 0, "error": 0}
    for data in corrupted(values, 4000, 11):
        got, want = outcome(codec, data), outcome(slow, data)
        assert repr(got) == repr(want)  # repr: a corrupted double may be a NaN
        kinds["error" if got[0] == "DecodeError" else "record"] += 1
    assert kinds["record"] > 100 and kinds["error"] > 1000


def scroll_batch(ts: bytes = long_bytes(TS), row: bytes = long_bytes(3), count: bytes = b"\x02",
                 branch: bytes = long_bytes(2), event_id: bytes = string_bytes("e")) -> bytes:
    """An EventBatch body of one Scroll, written field by field (``ts`` and ``row`` are
    the encoded varints, ``count`` the array block's header, ``branch`` the union index)."""
    scroll = (event_id + string_bytes("p") + ts + b"\x00" + row + long_bytes(0)
              + string_bytes("tv"))
    return string_bytes("p") + count + branch + scroll + b"\x00"


@pytest.mark.parametrize("body", [
    scroll_batch(),
    scroll_batch(ts=b"\xff" * 9 + b"\x7f"),  # a varint longer than 64 bits
    scroll_batch(ts=b"\xff" * 9 + b"\x01"),  # 64 bits: the smallest int64
    scroll_batch(ts=b"\x80" * 10 + b"\x01"),  # eleven bytes
    scroll_batch(row=long_bytes(2**40)),  # an int beyond 32 bits
    scroll_batch(row=long_bytes(-(2**31))),  # the smallest int32
    scroll_batch(row=long_bytes(-1)),  # a negative int of one byte
    scroll_batch(count=long_bytes(-1) + long_bytes(30)),  # a block with its byte size
    scroll_batch(branch=long_bytes(7)),  # union index past the 6 branches
    scroll_batch(branch=long_bytes(-1)),  # a negative union index
    scroll_batch(event_id=b"\x04\xff\xfe"),  # invalid UTF-8
    scroll_batch(event_id=b"\x01"),  # a negative string length
    scroll_batch()[:-4],  # truncated in the last string
    scroll_batch()[:-6],  # truncated in a varint
])
def test_edge_bodies_give_fastavros_record_or_error(codec: AvroCodec, body: bytes) -> None:
    data = codec.header(BATCH_SCHEMA) + body
    assert repr(outcome(codec, data)) == repr(outcome(slow, data))


def test_other_buffers_read_as_bytes_do(codec: AvroCodec) -> None:
    data = codec.encode_batch("p1", odd_events())
    assert codec.decode(memoryview(data)) == codec.decode(bytearray(data)) == codec.decode(data)


def test_validation_errors_are_named_as_model_validate_names_them(codec: AvroCodec) -> None:
    bad = [("homestream.Play", {"event_id": "", "profile_id": "p", "event_ts_ms": 5,
                                "title_id": "t", "action": "stop", "position_s": 20.0,
                                "duration_s": 10.0, "device": "d", "country": "usa",
                                "session_id": None, "app_version": ""}),
           ("homestream.Feedback", {"event_id": "e", "profile_id": "p", "event_ts_ms": TS,
                                    "title_id": "t", "kind": "stars", "stars": None})]
    for name, record in bad:
        with pytest.raises(DecodeError) as fast:
            codec.decode_events(codec.encode(name, record))
        model = EVENT_MODELS[name]
        with pytest.raises(ValidationError) as reference:
            model.model_validate(record)
        assert str(fast.value) == f"{model.__name__}: {describe_validation_error(reference.value)}"
        cause = fast.value.__cause__
        assert isinstance(cause, ValidationError)
        assert cause.errors(include_context=False) == reference.value.errors(include_context=False)


def mixed_messages(codec: AvroCodec, backlog: list[RawMessage]) -> list[RawMessage]:
    """Good, corrupt, semantically invalid, key-mismatched and future messages, with and
    without a broker timestamp."""
    out = list(backlog[:40])
    for i, data in enumerate(corrupted([m.value for m in backlog[:40]], 300, 12)):
        out.append(RawMessage("ev", 1, i, b"p04196", data, (None, NOW_MS, TS)[i % 3]))
    invalid = {**odd_events()[0].model_dump(), "position_s": -1.0}
    future = odd_events()[3].model_copy(update={"event_ts_ms": NOW_MS + 10**7})
    out += [
        RawMessage("ev", 2, 0, b"p1", codec.encode("homestream.Play", invalid), TS),
        RawMessage("ev", 2, 1, b"p1", codec.encode_batch("p1", odd_events()), TS),
        RawMessage("ev", 2, 2, b"other", codec.encode_batch("p1", odd_events()), None),
        RawMessage("ev", 2, 3, b"p1", codec.encode_batch("p1", [future, *odd_events()]), TS),
        RawMessage("ev", 2, 4, b"p1", codec.encode_event(future), None),
        RawMessage("ev", 2, 5, None, None, None),
        RawMessage("ev", 2, 6, None, b"junk", TS),
        RawMessage("ev", 2, 7, b"p1", codec.encode_batch("p1", odd_events())[:-3], TS),
    ]
    return out


def test_the_decoder_gives_the_same_events_and_dead_letters(
        codec: AvroCodec, backlog: list[RawMessage]) -> None:
    msgs = mixed_messages(codec, backlog)
    events, letters = MessageDecoder(codec, lambda: NOW_MS / 1000, 60.0).decode(msgs)
    want_events, want_letters = MessageDecoder(slow, lambda: NOW_MS / 1000, 60.0).decode(msgs)
    assert [(e.event, e.message, e.n_events) for e in events] == [
        (e.event, e.message, e.n_events) for e in want_events]
    assert [d.model_copy(update={"reason": same_text(d.reason)}) for d in letters] == [
        d.model_copy(update={"reason": same_text(d.reason)}) for d in want_letters]
    types = {d.error_type for d in letters}
    assert {"DecodeError", "ValidationError", "KeyMismatch", "FutureEvent"} <= types
    assert len(events) > 500


def read_outcome(reader: Any, data: bytes) -> str:
    """What one body reader makes of ``data``: its value, or that it refused it."""
    try:
        return repr(reader(data, HEADER_LEN))  # repr: a corrupted double may be a NaN
    except Exception:
        return "refused"


def test_the_compiled_reader_reads_and_refuses_what_the_python_one_does(
        backlog: list[RawMessage]) -> None:
    """Readers compared directly (the codec's fastavro fallback would hide a reader that
    refuses too much): the same values for good bodies, refusals for the same bad ones. The
    reader is built at install wherever a C compiler is: not built fails here."""
    assert _avro_read is not None, "topics._avro_read was not built (no C compiler?)"
    compiled = AvroCodec()
    values = [m.value for m in backlog[:50]] + [compiled.encode_event(e) for e in odd_events()]
    values += [compiled.encode_batch("p1", odd_events())]
    kinds = {"read": 0, "refused": 0}
    for data in values + corrupted(values, 4000, 13):
        name = compiled._by_fingerprint[bytes(data[2:HEADER_LEN])][0]
        fast, reference = compiled._fast_readers[name], python_read._fast_readers[name]
        assert isinstance(fast, _avro_read.Reader)
        got = read_outcome(fast, data)
        assert got == read_outcome(reference, data)
        kinds["refused" if got == "refused" else "read"] += 1
    assert kinds["read"] > 500 and kinds["refused"] > 1000
