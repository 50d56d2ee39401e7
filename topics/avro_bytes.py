"""Avro binary encoding written and read in plain Python, for the messages of every event.

Avro's binary encoding of a record is the concatenation of its fields' encodings, and an
array is a count followed by its items, so a message whose records differ only in a few
fields can be kept as bytes cut at those fields and joined per use (the serving process
logs each page's impressions this way, :mod:`serving.page_plan`). These functions write
exactly what ``fastavro.schemaless_writer`` writes for the same values (tested against it).
The worker's page and model updates are written whole here (:func:`page_update_body`,
:func:`model_update_body`): joining cached pieces costs a third of what fastavro's walk of
the schema over per-item dicts does. :func:`compile_reader` reads the player events the
same way, in Python written for each schema, for what fastavro reads in two thirds more time.

>>> long_bytes(1), long_bytes(-1), long_bytes(64)
(b'\\x02', b'\\x01', b'\\x80\\x01')
>>> string_bytes("ab")
b'\\x04ab'
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["array_block_header", "double_bytes", "items_block_py", "long_bytes",
           "model_update_body", "page_update_body", "string_bytes"]

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


def items_block_py(items: Sequence[Mapping[str, Any]]) -> bytes:
    """A page row's items as an Avro array block (its count, then each item's
    ``title_id``, ``artwork_id`` and ``score``; not the closing zero): the reference of the
    compiled ``topics._avro_page.items_block``, used where that was not built.

    >>> items_block_py([{"title_id": "t1", "artwork_id": "a", "score": 0.5}])
    b'\\x02\\x04t1\\x02a\\x00\\x00\\x00\\x00\\x00\\x00\\xe0?'
    """
    sb, pack = string_bytes, _DOUBLE.pack
    return long_bytes(len(items)) + b"".join(
        [sb(i["title_id"]) + sb(i["artwork_id"]) + pack(float(i["score"])) for i in items])


try:  # the compiled items (setup.py builds it when a C compiler is there)
    from topics._avro_page import items_block as _items_block
except ImportError:  # pragma: no cover - an install without a compiler
    _items_block = items_block_py


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
            if r["items"]:
                out.append(_items_block(r["items"]))
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


# -- reading ----------------------------------------------------------------------------------
class _Unsupported(Exception):
    """A schema with a type :func:`compile_reader` does not read."""


_INT32 = 1 << 31

#: The opcodes of a :func:`reader_program` (``topics/_avro_read.pyx`` has the same).
_OPS = {"long": 0, "int": 1, "string": 2, "double": 3, "float": 4, "boolean": 5, "null": 6,
        "enum": 7, "record": 8, "array": 9, "union": 10}


class _ReaderSource:
    """The Python source of a reader for one :func:`reader_program`, a line at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def emit(self, depth: int, *lines: str) -> None:
        self.lines += ["    " * depth + line for line in lines]

    def long(self, depth: int, var: str, bits: int = 64) -> None:
        """A zig-zag varint into ``var``; longer than fastavro reads it: an error."""
        self.emit(depth, "b = buf[pos]; pos += 1", "if b & 0x80:")
        self.emit(depth + 1, "n = b & 0x7F; shift = 7", "while True:")
        self.emit(depth + 2, "b = buf[pos]; pos += 1", "n |= (b & 0x7F) << shift",
                  "if not b & 0x80: break", "shift += 7",
                  "if shift > 63: raise ValueError('varint too long')")
        self.emit(depth + 1, "if n >> 64: raise ValueError('varint too long')",
                  f"{var} = (n >> 1) ^ -(n & 1)")
        self.emit(depth, "else:", f"    {var} = (b >> 1) ^ -(b & 1)")
        if bits == 32:
            self.emit(depth, f"if not -{_INT32} <= {var} < {_INT32}: "
                             "raise ValueError('int out of range')")

    def value(self, prog: tuple[Any, ...], depth: int, var: str) -> None:
        """Read one value of the program ``prog`` into ``var``."""
        op = prog[0]
        if op in (_OPS["long"], _OPS["int"]):
            self.long(depth, var, 64 if op == _OPS["long"] else 32)
        elif op == _OPS["string"]:
            self.long(depth, "n")
            self.emit(depth, "end = pos + n",
                      "if n < 0 or end > size: raise ValueError('string past the end')",
                      f"{var} = buf[pos:end].decode(); pos = end")
        elif op in (_OPS["double"], _OPS["float"]):
            fmt, width = ("unpack_d", 8) if op == _OPS["double"] else ("unpack_f", 4)
            self.emit(depth, f"{var}, = {fmt}(buf, pos); pos += {width}")
        elif op == _OPS["boolean"]:
            self.emit(depth, "b = buf[pos]; pos += 1",
                      "if b > 1: raise ValueError('boolean byte')", f"{var} = b == 1")
        elif op == _OPS["null"]:
            self.emit(depth, f"{var} = None")
        elif op == _OPS["enum"]:
            self.long(depth, "i")
            self.emit(depth, f"if not 0 <= i < {len(prog[1])}: raise ValueError('enum index')",
                      f"{var} = {prog[1]!r}[i]")
        elif op == _OPS["record"]:
            fields = [(name, self.var()) for name in prog[1]]
            for field_prog, (_, v) in zip(prog[2], fields, strict=True):
                self.value(field_prog, depth, v)
            self.emit(depth, f"{var} = {{" + ", ".join(f"{n!r}: {v}" for n, v in fields) + "}")
        elif op == _OPS["array"]:
            item = self.var()
            self.emit(depth, f"{var} = []", "while True:")
            self.long(depth + 1, "count")
            self.emit(depth + 1, "if count == 0: break",
                      "if count < 0: raise ValueError('array block with a size')",
                      "for _ in range(count):")
            self.value(prog[1], depth + 2, item)
            self.emit(depth + 2, f"{var}.append({item})")
        else:
            self.union(prog[1], depth, var)

    def union(self, branches: tuple[Any, ...], depth: int, var: str) -> None:
        """A union: a branch index, then that branch; a record branch as ``(name, record)``
        (fastavro's ``return_record_name``)."""
        index = self.var()
        self.long(depth, index)
        for i, (branch, record_name) in enumerate(branches):
            self.emit(depth, f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            self.value(branch, depth + 1, var)
            if record_name is not None:
                self.emit(depth + 1, f"{var} = ({record_name!r}, {var})")
        self.emit(depth, "else: raise ValueError('union index')")


def compile_reader(schema: Any, compiled: bool = True) -> Callable[[bytes, int], Any] | None:
    """A function reading the Avro body of ``schema`` (a fastavro-parsed schema) from
    ``buf`` at ``pos``, as ``fastavro.schemaless_reader(..., return_record_name=True)``
    reads it with no reader schema to resolve against: the compiled
    ``topics._avro_read.Reader`` walking the schema's :func:`reader_program` (with
    ``compiled`` and where it was built), else Python written for this schema (the
    reference); ``None`` for a schema with a type it does not read (bytes, fixed, map,
    logical types, named types other than records in unions).

    It raises on every input it is not sure to read as fastavro does (a truncated body,
    an index out of range, a varint too long, an array block carrying its byte size):
    let fastavro read those, for its result or its error.
    """
    try:
        program = reader_program(schema)
    except _Unsupported:
        return None
    if compiled and _avro_read is not None:
        return _avro_read.Reader(program)
    src = _ReaderSource()
    src.value(program, 1, "out")
    name = schema.get("name", "value") if isinstance(schema, dict) else schema
    code = "\n".join(["def read(buf, pos):", "    size = len(buf)", *src.lines,
                      "    return out"])
    scope: dict[str, Any] = {"unpack_d": _DOUBLE.unpack_from,
                             "unpack_f": struct.Struct("<f").unpack_from}
    exec(compile(code, f"<avro reader of {name}>", "exec"), scope)
    return scope["read"]


def _named(schema: Any) -> Mapping[str, Any]:
    return schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}


def reader_program(schema: Any, named: Mapping[str, Any] | None = None,
                   open_records: frozenset[str] = frozenset()) -> tuple[Any, ...]:
    """``schema`` as the program the readers of :func:`compile_reader` follow (the compiled
    one walks it, the Python one is written from it): ``(opcode,)`` for a primitive,
    ``(enum, symbols)``, ``(record, field names, field programs)``, ``(array, item
    program)`` and ``(union, ((branch program, record name or None), ...))``; types the
    readers do not read (bytes, fixed, map, logical types, recursive records, named types
    other than records in unions) raise ``_Unsupported``.

    >>> reader_program({"type": "array", "items": ["null", "long"]})
    (9, (10, (((6,), None), ((0,), None))))
    """
    named = _named(schema) if named is None else named
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if isinstance(schema, dict) and "logicalType" in schema:
        raise _Unsupported(schema["logicalType"])
    if isinstance(kind, list):
        return (_OPS["union"], tuple(_branch(b, named, open_records) for b in kind))
    if kind == "enum":
        return (_OPS["enum"], tuple(schema["symbols"]))
    if kind == "record":
        if schema["name"] in open_records:
            raise _Unsupported("recursive record")
        inner = open_records | {schema["name"]}
        return (_OPS["record"], tuple(f["name"] for f in schema["fields"]),
                tuple(reader_program(f["type"], named, inner) for f in schema["fields"]))
    if kind == "array":
        return (_OPS["array"], reader_program(schema["items"], named, open_records))
    if isinstance(kind, str) and kind in _OPS and kind != "union":
        return (_OPS[kind],)
    raise _Unsupported(kind)


def _branch(branch: Any, named: Mapping[str, Any], open_records: frozenset[str]
            ) -> tuple[tuple[Any, ...], str | None]:
    resolved = named.get(branch, branch) if isinstance(branch, str) else branch
    if isinstance(resolved, dict) and resolved.get("type") in ("enum", "fixed"):
        raise _Unsupported("named type in a union")
    record = isinstance(resolved, dict) and resolved.get("type") == "record"
    return reader_program(resolved, named, open_records), resolved["name"] if record else None


try:  # the compiled reader (setup.py builds it when a C compiler is there)
    from topics import _avro_read
except ImportError:  # pragma: no cover - an install without a compiler
    _avro_read = None  # type: ignore[assignment]
