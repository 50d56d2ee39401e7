"""The wire format: Avro single-object encoding, decoded by schema fingerprint.

Every message value is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little
endian) + the Avro binary body, as the Avro specification's *single-object encoding*
defines. The fingerprint tells a reader which schema wrote the body without a schema
registry service, which the dev broker (Tansu) does not offer and which a player SDK should
not need to reach. The same message can therefore be a single event (``homestream.Play``)
or an :class:`EventBatch` of several events of one profile; the reader tells them apart by
the fingerprint.

>>> from topics.models import Play
>>> codec = AvroCodec()
>>> play = Play(event_id="e1", profile_id="p1", event_ts_ms=1_700_000_000_000,
...             title_id="t1", action="start", position_s=0.0, duration_s=60.0)
>>> data = codec.encode_event(play)
>>> data[:2]
b'\\xc3\\x01'
>>> codec.decode_events(data) == [play]
True
>>> codec.decode_events(codec.encode_batch("p1", [play, play])) == [play, play]
True

Schemas evolve by Avro's rules. ``topics/schemas/<Name>/v<N>.avsc`` holds every released
version of each schema and ``topics/schemas/releases.json`` lists the releases in order; the
codec encodes with the last release and decodes a body written by any release into the
current (reader) schema with Avro schema resolution, so players and consumers on the
previous version keep working while others move on. :mod:`topics.compat` checks that each
version can be read by the one before and after it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import (
    expand_schema,
    fingerprint,
    parse_schema,
    to_parsing_canonical_form,
)
from pydantic import BaseModel, ValidationError

from topics.avro_bytes import compile_reader, model_update_body, page_update_body
from topics.models import EVENT_MODELS, STANDALONE_EVENTS, DeadLetter, Event, Profile, Title

SCHEMA_DIR = Path(__file__).parent / "schemas"
RELEASES_FILE = "releases.json"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10
# Order matters: named types must be parsed before the schemas that reference them.
SCHEMA_ORDER = (
    "Play", "Impression", "Scroll", "Click", "Feedback", "Search", "SessionStart",
    "EventBatch", "Title", "DeadLetter", "Profile", "PageUpdate", "ModelUpdate",
)
BATCH_SCHEMA = "homestream.EventBatch"
PAGE_UPDATE_SCHEMA = "homestream.PageUpdate"
MODEL_UPDATE_SCHEMA = "homestream.ModelUpdate"
#: Schemas written by :mod:`topics.avro_bytes` instead of fastavro, with the fingerprint
#: (expanded form, hex) of the one version each writer is for; a codec whose current
#: version of one of them differs writes it with fastavro.
DIRECT_WRITERS = {PAGE_UPDATE_SCHEMA: "fd51f4c297de7a2a", MODEL_UPDATE_SCHEMA: "a7a055ddfc7a0fcb"}


class DecodeError(ValueError):
    """A message that cannot be turned into valid events; the text says why."""


@dataclass(frozen=True)
class SchemaVersion:
    """One released wire form of a schema: what a writer of that release put on the wire.

    ``version`` counts the schema's distinct fingerprints in release order, so a schema that
    references a changed type (EventBatch holds every event) gets a new version from the
    same file; ``file`` names the ``.avsc`` it was parsed from.
    """

    name: str
    version: int
    release: int
    file: str
    fingerprint: bytes
    schema: Any = field(repr=False, compare=False)


def schema_fingerprint(parsed: Any, expand: bool = True) -> bytes:
    """The CRC-64-AVRO fingerprint of a parsed schema, little endian as in messages.

    With ``expand`` (the Avro specification's form) the named types the schema references
    from other files are written out, so EventBatch changes fingerprint when an event
    changes; without it they stay references by name, the form release 1 was written with.
    The two agree for every schema that references no other file.
    """
    canonical = to_parsing_canonical_form(expand_schema(parsed) if expand else parsed)
    return int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")


def load_history(schema_dir: Path = SCHEMA_DIR) -> dict[str, list[SchemaVersion]]:
    """Every released version of every schema, oldest first, keyed by full name.

    A new version starts when a schema's expanded form changes. Versions of release 1 keep
    the fingerprint they were released with (references by name) so messages written then
    still decode; later versions are fingerprinted in the expanded form.
    """
    releases = json.loads((schema_dir / RELEASES_FILE).read_text())["releases"]
    files: dict[str, int] = {}
    history: dict[str, list[SchemaVersion]] = {}
    expanded: dict[str, bytes] = {}
    for release in releases:
        files.update(release["changes"])
        unknown = set(files) - set(SCHEMA_ORDER)
        if unknown:
            raise ValueError(f"release {release['release']} names unknown schemas {unknown}")
        named: dict[str, Any] = {}
        for stem in SCHEMA_ORDER:
            if stem not in files:  # first released later (SessionStart, release 3)
                continue
            rel_path = f"{stem}/v{files[stem]}.avsc"
            parsed = parse_schema(json.loads((schema_dir / rel_path).read_text()),
                                  named_schemas=named)
            name, form = parsed["name"], schema_fingerprint(parsed)
            if expanded.get(name) == form:
                continue
            expanded[name] = form
            versions = history.setdefault(name, [])
            wire = schema_fingerprint(parsed, expand=False) if not versions else form
            versions.append(SchemaVersion(name, len(versions) + 1, int(release["release"]),
                                          rel_path, wire, parsed))
    return history


class AvroCodec:
    """Encodes models to single-object Avro with the current schemas and decodes any
    released version by fingerprint, resolved into the current schema.

    Parameters
    ----------
    schema_dir
        Folder holding ``releases.json`` and the ``<Name>/v<N>.avsc`` files.
    reader_versions
        Decode these schemas into an older version (``{"homestream.PageUpdate": 1}``): for
        a consumer whose code was written for that version. It still needs the writer's
        schema, which the history in ``schema_dir`` provides. Encoding is unaffected.
    """

    def __init__(self, schema_dir: Path = SCHEMA_DIR,
                 reader_versions: Mapping[str, int] | None = None) -> None:
        self.schema_dir = schema_dir
        self.history = load_history(schema_dir)
        pins = dict(reader_versions or {})
        for name, n in pins.items():
            if not 1 <= n <= len(self.history.get(name, ())):
                raise ValueError(f"no version {n} of schema {name!r} to read with")
        self._schemas: dict[str, Any] = {}
        self._readers: dict[str, Any] = {}
        self._headers: dict[str, bytes] = {}
        # fingerprint -> (name, writer schema); the writer is None for the reader's own
        # version, which is read without resolution (the fast path).
        self._by_fingerprint: dict[bytes, tuple[str, Any]] = {}
        for name, versions in self.history.items():
            current = versions[-1]
            reader = versions[pins.get(name, len(versions)) - 1]
            self._schemas[name] = current.schema
            self._readers[name] = reader.schema
            self._headers[name] = MAGIC + current.fingerprint
            for v in versions:
                self._by_fingerprint[v.fingerprint] = (
                    name, None if v is reader else v.schema)
        # The player events' own versions, read by code written for each schema (the rest,
        # and anything it does not read exactly as fastavro does, by fastavro).
        self._fast_readers = {name: compile_reader(self._readers[name])
                              for name in (*EVENT_MODELS, BATCH_SCHEMA) if name in self._readers}
        self._direct = {name: name in self._schemas
                        and schema_fingerprint(self._schemas[name]).hex() == fp
                        for name, fp in DIRECT_WRITERS.items()}

    @property
    def schema_names(self) -> list[str]:
        """Full names of every schema the codec knows."""
        return list(self._schemas)

    def schema(self, name: str) -> Any:
        """The parsed schema for ``name`` (for documentation and tools)."""
        return self._schemas[name]

    def header(self, name: str) -> bytes:
        """The bytes every message of schema ``name`` starts with (the single-object header
        of its current version), for messages assembled from prebuilt pieces."""
        return self._headers[name]

    def batch_branch(self, name: str) -> int:
        """The index of schema ``name`` in the event union of :data:`BATCH_SCHEMA` (what
        precedes each such event's fields inside a batch)."""
        items = self._schemas[BATCH_SCHEMA]["fields"][1]["type"]["items"]
        names = [i if isinstance(i, str) else i.get("name") for i in items]
        return names.index(name)

    def fingerprint_hex(self, name: str) -> str:
        """The current version's fingerprint as written in messages, in hex."""
        return self._headers[name][2:].hex()

    def encode_version(self, version: SchemaVersion, record: dict[str, Any]) -> bytes:
        """Encode ``record`` with an older released version, as a player or service still
        on that version does (for tests and migration tools)."""
        buf = io.BytesIO()
        buf.write(MAGIC + version.fingerprint)
        fastavro.schemaless_writer(buf, version.schema, record)
        return buf.getvalue()

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, schema_name: str, record: dict[str, Any]) -> bytes:
        """Encode a plain record with the named schema."""
        buf = io.BytesIO()
        buf.write(self._headers[schema_name])
        fastavro.schemaless_writer(buf, self._schemas[schema_name], record)
        return buf.getvalue()

    def encode_model(self, model: BaseModel) -> bytes:
        """Encode a model with the schema its class names."""
        return self.encode(type(model).schema_name, model.model_dump())  # type: ignore[attr-defined]

    def encode_event(self, event: Event) -> bytes:
        """Encode one player event as a single-event message."""
        return self.encode_model(event)

    def encode_batch(self, profile_id: str, events: Sequence[Event]) -> bytes:
        """Encode several events of ``profile_id`` as one :data:`BATCH_SCHEMA` message."""
        for e in events:
            if type(e) in STANDALONE_EVENTS:
                raise ValueError(f"event {e.event_id} is a {type(e).__name__}, which is sent "
                                 "as a message of its own, never in a batch")
            if e.profile_id != profile_id:
                raise ValueError(
                    f"event {e.event_id} has profile_id {e.profile_id!r}, batch is for "
                    f"{profile_id!r}"
                )
        items = [(type(e).schema_name, e.model_dump()) for e in events]
        return self.encode(BATCH_SCHEMA, {"profile_id": profile_id, "events": items})

    def encode_title(self, title: Title) -> bytes:
        """Encode a catalog record."""
        return self.encode_model(title)

    def encode_dead_letter(self, letter: DeadLetter) -> bytes:
        """Encode a dead-letter record."""
        return self.encode_model(letter)

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, data: bytes) -> tuple[str, Any]:
        """Return ``(schema_name, record)`` for one message; :class:`DecodeError` if unusable."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"message value is {type(data).__name__}, expected bytes")
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 header)")
        fp = bytes(data[2:HEADER_LEN])
        known = self._by_fingerprint.get(fp)
        if known is None:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()} (no released version "
                              "in topics/schemas; written by a newer schema than this build?)")
        name, writer = known
        if writer is None and type(data) is bytes:
            fast = self._fast_readers.get(name)
            if fast is not None:  # on any error fastavro below reads it: its result or error
                with contextlib.suppress(Exception):
                    return name, fast(data, HEADER_LEN)
        reader = self._readers[name]
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_LEN:]), writer or reader,
                None if writer is None else reader, return_record_name=True,
            )
        except Exception as exc:  # fastavro raises many types for truncated/corrupt bodies
            raise DecodeError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        return name, record

    def decode_raw_events(self, data: bytes) -> list[tuple[str, dict[str, Any]]]:
        """Decode a single-event or batch message into ``(schema_name, record)`` pairs,
        without semantic validation."""
        name, record = self.decode(data)
        if name == BATCH_SCHEMA:
            return record["events"]  # a new list of (name, record) pairs
        if name in EVENT_MODELS:
            return [(name, record)]
        raise DecodeError(f"{name} is not a player event message")

    def decode_events(self, data: bytes) -> list[Event]:
        """Decode and validate every event of a message; raise on the first invalid one."""
        out = []
        for i, (name, record) in enumerate(self.decode_raw_events(data)):
            out.append(validate_event(name, record, index=i))
        return out

    def decode_title(self, data: bytes) -> Title:
        """Decode and validate a catalog record."""
        name, record = self.decode(data)
        if name != Title.schema_name:
            raise DecodeError(f"{name} on the catalog topic, expected {Title.schema_name}")
        try:
            return Title.model_validate(record)
        except ValidationError as exc:
            raise DecodeError(describe_validation_error(exc)) from exc

    def decode_profile(self, data: bytes) -> Profile:
        """Decode and validate a profile record."""
        name, record = self.decode(data)
        if name != Profile.schema_name:
            raise DecodeError(f"{name} on the profiles topic, expected {Profile.schema_name}")
        try:
            return Profile.model_validate(record)
        except ValidationError as exc:
            raise DecodeError(describe_validation_error(exc)) from exc

    def encode_page_update(self, page: dict[str, Any]) -> bytes:
        """Encode a materialized page (as built by :mod:`online_models.page`) for the
        downstream recommendations topic."""
        if self._direct[PAGE_UPDATE_SCHEMA]:
            return self._headers[PAGE_UPDATE_SCHEMA] + page_update_body(page)
        return self.encode(PAGE_UPDATE_SCHEMA, page_update_record(page))

    def encode_model_update(self, sources: Sequence[str],
                            items: Sequence[Sequence[tuple[Any, ...]]]) -> bytes:
        """Encode a ``homestream.ModelUpdate`` from its source names and its four item
        arrays (labels, watches, artwork, rows), each item a tuple of its record's fields
        in schema order (:mod:`streams.learning`'s named tuples)."""
        if self._direct[MODEL_UPDATE_SCHEMA]:
            return self._headers[MODEL_UPDATE_SCHEMA] + model_update_body(sources, *items)
        fields = self._schemas[MODEL_UPDATE_SCHEMA]["fields"]
        record: dict[str, Any] = {"sources": sources}
        for f, values in zip(fields[1:], items, strict=True):
            names = [g["name"] for g in f["type"]["items"]["fields"]]
            record[f["name"]] = [dict(zip(names, v, strict=True)) for v in values]
        return self.encode(MODEL_UPDATE_SCHEMA, record)

    def decode_dead_letter(self, data: bytes) -> DeadLetter:
        """Decode a dead-letter record."""
        name, record = self.decode(data)
        if name != DeadLetter.schema_name:
            raise DecodeError(f"{name} is not a dead letter")
        return DeadLetter.model_validate(record)


def page_update_record(page: dict[str, Any]) -> dict[str, Any]:
    """A materialized page as the ``homestream.PageUpdate`` schema's plain record."""
    return {
        "profile_id": page["profile_id"] or "",
        "personalized": bool(page["personalized"]),
        "country": page["country"],
        "generated_at_ms": int(page["generated_at_ms"]),
        "as_of_event_ts_ms": int(page["as_of_event_ts_ms"] or 0),
        "kids": bool(page.get("kids", False)),
        "rows": [{"row_id": r["row_id"], "kind": r["kind"], "title": r["title"],
                  "explanation": r["explanation"], "utility": float(r.get("utility", 0.0)),
                  "items": [{"title_id": i["title_id"], "artwork_id": i["artwork_id"],
                             "score": float(i["score"])} for i in r["items"]]}
                 for r in page["rows"]],
    }


def validate_event(name: str, record: dict[str, Any], index: int = 0) -> Event:
    """Validate a decoded record as its event model; :class:`DecodeError` names the field."""
    model = EVENT_MODELS[name]
    try:  # model_validate without its wrapper (called for every event consumed)
        return model.__pydantic_validator__.validate_python(record)
    except ValidationError as exc:
        where = f"events[{index}] " if index else ""
        raise DecodeError(f"{where}{model.__name__}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(model)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@lru_cache(maxsize=1)
def default_codec() -> AvroCodec:
    """A process-wide codec over the packaged schemas (built on first use, not at import):
    with ``HOMESTREAM_SCHEMA_REGISTRY_URL`` set, the schema registry's framing
    (:func:`topics.registry_framing.codec_for` of the environment's settings), else the
    single-object encoding."""
    if os.environ.get("HOMESTREAM_SCHEMA_REGISTRY_URL", "").strip():
        from homestream.settings import load_settings
        from topics.registry_framing import codec_for

        return codec_for(load_settings())
    return AvroCodec()

