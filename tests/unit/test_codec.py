"""Wire format: single-object Avro round trips, fingerprints, and clear decode errors."""

from __future__ import annotations

import datetime as dt

import pytest

from topics.codec import MAGIC, AvroCodec, DecodeError
from topics.models import (
    Artwork,
    Click,
    DeadLetter,
    Feedback,
    Impression,
    Play,
    Scroll,
    Search,
    Title,
)

TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def all_events() -> list:
    base = {"profile_id": "p1", "event_ts_ms": TS}
    return [
        Play(event_id="1", title_id="t", action="stop", position_s=5, duration_s=10,
             country="US", session_id="s", **base),
        Impression(event_id="2", request_id="r", title_id="t", row_id="top-picks", row=1,
                   column=2, artwork_id="a", propensity=0.25, policy="eps", variant="b",
                   **base),
        Scroll(event_id="3", row=4, column=1, **base),
        Click(event_id="4", title_id="t", row_id="x", **base),
        Feedback(event_id="5", title_id="t", kind="stars", stars=4, **base),
        Search(event_id="6", query="space horror", **base),
    ]


def test_every_event_type_round_trips_alone_and_in_a_batch(codec: AvroCodec) -> None:
    events = all_events()
    for e in events:
        assert codec.decode_events(codec.encode_event(e)) == [e]
    assert codec.decode_events(codec.encode_batch("p1", events)) == events


def test_header_is_magic_plus_little_endian_fingerprint(codec: AvroCodec) -> None:
    data = codec.encode_event(all_events()[0])
    assert data[:2] == MAGIC
    assert data[2:10].hex() == codec.fingerprint_hex("homestream.Play")
    # every schema has its own fingerprint
    fps = {codec.fingerprint_hex(n) for n in codec.schema_names}
    assert len(fps) == len(codec.schema_names)


def test_catalog_and_dead_letter_round_trip(codec: AvroCodec) -> None:
    t = Title(title_id="t1", name="Alien", genres=["Horror", "Sci-Fi"], maturity_rating="R",
              release_date=dt.date(1979, 5, 25), duration_s=7020.0,
              artwork=[Artwork(artwork_id="a1", url="u", tags=["horror"])],
              availability=["US", "GB"], cast=["Sigourney Weaver"])
    assert codec.decode_title(codec.encode_title(t)) == t
    d = DeadLetter(source_topic="x", partition=1, offset=2, key=b"k", value=b"\x00",
                   reason="bad", error_type="DecodeError", failed_at_ms=TS)
    assert codec.decode_dead_letter(codec.encode_dead_letter(d)) == d


@pytest.mark.parametrize(("data", "message"), [
    (b"{}", "single-object"),
    (MAGIC + b"\x00" * 8 + b"x", "unknown schema fingerprint"),
])
def test_garbage_is_rejected_with_a_reason(codec: AvroCodec, data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode_events(data)


def test_truncated_body_is_a_decode_error(codec: AvroCodec) -> None:
    data = codec.encode_event(all_events()[0])
    with pytest.raises(DecodeError, match=r"corrupt homestream\.Play"):
        codec.decode_events(data[:14])


def test_semantic_validation_names_the_field(codec: AvroCodec) -> None:
    rec = all_events()[0].model_dump()
    rec["position_s"] = -1.0
    with pytest.raises(DecodeError, match="position_s"):
        codec.decode_events(codec.encode("homestream.Play", rec))


def test_batch_rejects_events_of_another_profile(codec: AvroCodec) -> None:
    e = all_events()[0]
    with pytest.raises(ValueError, match="profile_id"):
        codec.encode_batch("someone-else", [e])


def test_catalog_decoder_refuses_events(codec: AvroCodec) -> None:
    with pytest.raises(DecodeError, match="catalog topic"):
        codec.decode_title(codec.encode_event(all_events()[0]))
