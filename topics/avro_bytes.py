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

__all__ = ["array_block_header", "double_bytes", "long_bytes", "string_bytes"]

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
