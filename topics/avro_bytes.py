"""Avro binary encodings of single values, for messages assembled from prebuilt pieces.

Avro's binary encoding of a record is the concatenation of its fields' encodings, and an
array is a count followed by its items, so a message whose records differ only in a few
fields can be kept as bytes cut at those fields and joined per use (the serving process
logs each page's impressions this way, :mod:`serving.page_plan`). These functions write
exactly what ``fastavro.schemaless_writer`` writes for the same values (tested against it).

>>> long_bytes(1), long_bytes(-1), long_bytes(64)
(b'\\x02', b'\\x01', b'\\x80\\x01')
>>> string_bytes("ab")
b'\\x04ab'
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["array_block_header", "double_bytes", "long_bytes", "model_update_body",
           "page_update_body", "string_bytes"]

_DOUBLE = struct.Struct("<d")


def _varint(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(i) for i in range(4096)]


def long_bytes(value: int) -> bytes:
    """An Avro ``int`` or ``long``: zig-zag, then a little-endian base-128 varint."""
    return _SMALL[value] if 0 <= value < 4096 else _varint(value)


@functools.lru_cache(maxsize=1 << 16)
def string_bytes(value: str) -> bytes:
    """An Avro ``string``: its UTF-8 length as a long, then the bytes (the recent ones
    kept: title, row and artwork ids recur on every page)."""
    data = value.encode()
    return long_bytes(len(data)) + data


def double_bytes(value: float) -> bytes:
    """An Avro ``double``: 8 bytes, IEEE 754, little-endian."""
    return _DOUBLE.pack(value)


def array_block_header(count: int) -> bytes:
    """The start of an array written as one block of ``count`` items (end it with
    ``b"\\x00"``, the empty block); an empty array is just ``b"\\x00"``."""
    return long_bytes(count)


@functools.lru_cache(maxsize=1 << 12)
def _recurring_long(value: int) -> bytes:
    """:func:`long_bytes`, the recent ones kept (source offsets recur on a message's items)."""
    return long_bytes(value)


def _text(value: str) -> bytes:
    """An Avro ``string`` that is not kept (values that rarely recur, such as contexts)."""
    data = value.encode()
    return long_bytes(len(data)) + data


def _bool(value: object) -> bytes:
    return b"\x01" if value else b"\x00"


def page_update_body(page: Mapping[str, Any]) -> bytes:
    """The Avro body of ``homestream.PageUpdate`` v2 for a materialized page (a dict as
    :mod:`online_models.page` builds it; keys the schema does not have are ignored), the
    same bytes ``fastavro.schemaless_writer`` writes for the record
    :meth:`topics.codec.AvroCodec.encode_page_update` describes."""
    sb, pack = string_bytes, _DOUBLE.pack
    out = [sb(page["profile_id"] or ""), _bool(page["personalized"]), sb(page["country"]),
           long_bytes(int(page["generated_at_ms"])),
           long_bytes(int(page["as_of_event_ts_ms"] or 0))]
    rows = page["rows"]
    if rows:
        out.append(long_bytes(len(rows)))
        for r in rows:
            out += (sb(r["row_id"]), sb(r["kind"]), sb(r["title"]), sb(r["explanation"]),
                    pack(float(r.get("utility", 0.0))))
            items = r["items"]
            if items:
                out.append(long_bytes(len(items)))
                out += [sb(i["title_id"]) + sb(i["artwork_id"]) + pack(float(i["score"]))
                        for i in items]
            out.append(b"\x00")
    out += (b"\x00", _bool(page.get("kids", False)))
    return b"".join(out)


def model_update_body(sources: Sequence[str], labels: Sequence[tuple[Any, ...]],
                      watches: Sequence[tuple[Any, ...]], artwork: Sequence[tuple[Any, ...]],
                      rows: Sequence[tuple[Any, ...]]) -> bytes:
    """The Avro body of ``homestream.ModelUpdate`` v1 from its arrays, each item a tuple of
    the item record's fields in schema order (``streams.learning``'s named tuples), the same
    bytes ``fastavro.schemaless_writer`` writes for the record of dicts."""
    sb, lb, pack = string_bytes, _recurring_long, _DOUBLE.pack
    out: list[bytes] = []
    if sources:
        out.append(lb(len(sources)))
        out += [sb(s) for s in sources]
    out.append(b"\x00")
    if labels:
        out.append(lb(len(labels)))
        out += [lb(s) + lb(o) + sb(p) + sb(t) + pack(y) for s, o, p, t, y in labels]
    out.append(b"\x00")
    if watches:
        out.append(lb(len(watches)))
        out += [lb(s) + lb(o) + _strings(h) + sb(t) for s, o, h, t in watches]
    out.append(b"\x00")
    if artwork:
        out.append(lb(len(artwork)))
        out += [lb(s) + lb(o) + _text(c) + sb(a) + _strings(g) + pack(r) + sb(p)
                for s, o, c, a, g, r, p in artwork]
    out.append(b"\x00")
    if rows:
        out.append(lb(len(rows)))
        out += [lb(s) + lb(o) + sb(k) + pack(e) + pack(t)
                for s, o, k, e, t in rows]
    out.append(b"\x00")
    return b"".join(out)


def _strings(values: Sequence[str]) -> bytes:
    """An Avro ``array`` of ``string`` as one block."""
    if not values:
        return b"\x00"
    return long_bytes(len(values)) + b"".join([string_bytes(v) for v in values]) + b"\x00"
