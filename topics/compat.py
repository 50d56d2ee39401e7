"""Schema compatibility by Avro's resolution rules, so a schema change cannot strand players
or consumers on the version before it.

A new version of a schema must be *backward* compatible (a reader on the new version reads
what the previous version wrote) and *forward* compatible (a reader still on the previous
version reads what the new one writes). The check is structural, following the resolution
rules of the Avro specification, so a failure names the schema and the field; records
generated from the writer are then resolved with fastavro as a second opinion. Pure: it
takes parsed schemas and reads no files (``homestream schemas check`` loads them).

>>> old = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "string"}]}
>>> new = {"type": "record", "name": "P", "fields": [{"name": "a", "type": "string"},
...                                                 {"name": "b", "type": "int"}]}
>>> [str(p) for p in check_pair(old, new)]  # doctest: +NORMALIZE_WHITESPACE
['P v1 -> v2, backward (v2 reads v1): field b: added without a default']
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.schema import expand_schema, parse_schema
from fastavro.utils import generate_many

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# Writer type -> reader types it resolves to (Avro specification, "Schema Resolution").
PROMOTIONS = {
    "int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
    "string": {"bytes"}, "bytes": {"string"},
}
SAMPLES = 50


@dataclass(frozen=True)
class Incompatibility:
    """One way a version pair breaks resolution; ``field`` is a dotted path in the record."""

    schema: str
    old_version: int
    new_version: int
    direction: str  # "backward" (new reads old) or "forward" (old reads new)
    field: str
    reason: str

    def __str__(self) -> str:
        o, n = f"v{self.old_version}", f"v{self.new_version}"
        how = f"{n} reads {o}" if self.direction == "backward" else f"{o} reads {n}"
        return (f"{self.schema} {o} -> {n}, {self.direction} ({how}): "
                f"field {self.field or '(top level)'}: {self.reason}")


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):  # dereferenced: ``type`` is a name, never a nested schema
        return str(schema["type"])
    return str(schema)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Walker:
    """Walks a writer and a reader schema together, collecting why they do not resolve."""

    def __init__(self, missing_field_reason: str) -> None:
        self.writer_names: dict[str, Any] = {}
        self.reader_names: dict[str, Any] = {}
        self.problems: list[tuple[str, str]] = []
        self.missing_field_reason = missing_field_reason

    @staticmethod
    def deref(schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
            return _Walker.deref(schema["type"], named)
        if isinstance(schema, dict) and "name" in schema:
            named.setdefault(schema["name"], schema)
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return named[schema]
        return schema

    def resolve(self, writer: Any, reader: Any, path: str) -> list[tuple[str, str]]:
        """Problems of reading ``writer`` data with ``reader`` (does not record them)."""
        saved, self.problems = self.problems, []
        try:
            self.check(writer, reader, path)
            return self.problems
        finally:
            self.problems = saved

    def check(self, writer: Any, reader: Any, path: str) -> None:
        writer = self.deref(writer, self.writer_names)
        reader = self.deref(reader, self.reader_names)
        wk, rk = _kind(writer), _kind(reader)
        if wk == "union":
            for branch in writer:
                self.check(branch, reader, path)
        elif rk == "union":
            same = self.branch_named(writer, reader)
            if same is not None:  # a named type resolves to the branch of the same name
                self.check(writer, same, path)
            elif not any(not self.resolve(writer, b, path) for b in reader):
                self.problems.append((path, f"writer type {_describe(writer)} matches no "
                                            f"branch of the reader's union"))
        elif wk in PRIMITIVES or rk in PRIMITIVES:
            if wk != rk and rk not in PROMOTIONS.get(wk, set()):
                self.problems.append((path, f"type changed from {_describe(writer)} to "
                                            f"{_describe(reader)}, which Avro cannot resolve"))
        elif wk != rk or ("name" in reader and _short(writer["name"]) != _short(reader["name"])
                          and writer["name"] not in reader.get("aliases", [])):
            self.problems.append((path, f"type changed from {_describe(writer)} to "
                                        f"{_describe(reader)}"))
        else:
            self.check_complex(wk, writer, reader, path)

    def branch_named(self, writer: Any, union: list[Any]) -> Any:
        """The reader union's branch with the writer's name (None for unnamed writers)."""
        if not (isinstance(writer, dict) and "name" in writer):
            return None
        for branch in union:
            b = self.deref(branch, self.reader_names)
            if isinstance(b, dict) and _short(b.get("name", "")) == _short(writer["name"]):
                return b
        return None

    def check_complex(self, kind: str, writer: Any, reader: Any, path: str) -> None:
        if kind == "record":
            self.check_record(writer, reader, path)
        elif kind == "enum":
            lost = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if lost and "default" not in reader:
                self.problems.append((path, f"enum {reader['name']} lost symbols {lost} "
                                            "and has no default"))
        elif kind == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif kind == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")
        elif kind == "fixed" and writer["size"] != reader["size"]:
            self.problems.append((path, f"fixed size changed from {writer['size']} to "
                                        f"{reader['size']}"))

    def check_record(self, writer: Mapping[str, Any], reader: Mapping[str, Any],
                     path: str) -> None:
        written = {f["name"]: f for f in writer["fields"]}
        for f in writer["fields"]:
            for alias in f.get("aliases", []):
                written.setdefault(alias, f)
        for f in reader["fields"]:
            where = f"{path}.{f['name']}" if path else f["name"]
            source = written.get(f["name"]) or next(
                (written[a] for a in f.get("aliases", []) if a in written), None)
            if source is not None:
                self.check(source["type"], f["type"], where)
            elif "default" not in f:
                self.problems.append((where, self.missing_field_reason))


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        return f"{schema['type']} {schema['name']}" if "name" in schema else str(schema["type"])
    return str(schema)


def _structural(writer: Any, reader: Any, missing_reason: str) -> list[tuple[str, str]]:
    walker = _Walker(missing_reason)
    walker.check(expand_schema(writer), expand_schema(reader), "")
    return walker.problems


def _by_fastavro(writer: Any, reader: Any) -> str | None:
    """fastavro's verdict on resolving generated writer records, or None when they resolve."""
    w, r = parse_schema(expand_schema(writer)), parse_schema(expand_schema(reader))
    for record in generate_many(w, SAMPLES):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception as exc:  # fastavro raises several types for resolution failures
            return f"fastavro cannot resolve: {type(exc).__name__}: {exc}"
    return None


def check_pair(old: Any, new: Any, name: str | None = None, old_version: int = 1,
               new_version: int = 2) -> list[Incompatibility]:
    """Every reason ``new`` is not backward and forward compatible with ``old``."""
    name = name or str(new.get("name") if isinstance(new, dict) else new)
    out: list[Incompatibility] = []
    for direction, writer, reader, missing in (
            ("backward", old, new, "added without a default"),
            ("forward", new, old, "removed without a default")):
        problems = _structural(writer, reader, missing)
        if not problems:
            verdict = _by_fastavro(writer, reader)
            problems = [("", verdict)] if verdict else []
        out += [Incompatibility(name, old_version, new_version, direction, field, reason)
                for field, reason in problems]
    return out


def check_history(history: Mapping[str, Sequence[Any]]) -> list[Incompatibility]:
    """Check each version of each schema against the one before it.

    ``history`` maps a schema's name to its versions, oldest first, each with ``version``
    and ``schema`` attributes (:class:`topics.codec.SchemaVersion`).
    """
    out: list[Incompatibility] = []
    for name, versions in history.items():
        for old, new in itertools.pairwise(versions):
            out += check_pair(old.schema, new.schema, name, old.version, new.version)
    return out


def format_report(history: Mapping[str, Sequence[Any]],
                  problems: Sequence[Incompatibility]) -> str:
    """What ``homestream schemas check`` prints: each schema's versions, then any problems."""
    lines = []
    for name, versions in history.items():
        listed = ", ".join(f"v{v.version} {v.fingerprint.hex()}" for v in versions)
        lines.append(f"{name}: {listed}")
    if problems:
        lines.append(f"{len(problems)} incompatible change(s):")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append("every version is backward and forward compatible with the one before")
    return "\n".join(lines)
