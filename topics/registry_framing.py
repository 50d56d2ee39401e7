"""Confluent Schema Registry framing, the option to the single-object encoding.

With ``HOMESTREAM_SCHEMA_REGISTRY_URL`` set, every message a homestream process writes is in
the registry's wire format: the magic byte ``00``, the schema's registry id (4 bytes, big
endian), then the same Avro binary body as before. :class:`RegistryCodec` is an
:class:`~topics.codec.AvroCodec` whose headers are those 5 bytes, so every producer that
encodes through a codec (players, the impression logger, the page-updates and dead-letter
publishers, the worker's learning records) writes them unchanged. Its decoder reads both
framings, ``00`` + id and the single-object ``C3 01`` + fingerprint, so producers can move
one by one during a migration.

Subjects are per topic. A topic carrying one schema uses the TopicNameStrategy subject
``<topic>-value`` (what downstream tools expect, e.g. ``homestream.homepage-updates-value``);
the player-events topic carries several event schemas, which one subject cannot hold under a
compatibility rule, so each gets the TopicRecordNameStrategy subject
``<topic>-<record full name>``. At start-up each subject's compatibility level is set
(``HOMESTREAM_SCHEMA_REGISTRY_COMPATIBILITY``), the current schemas are registered (a schema
the level refuses stops the process with the registry's reason) and every version the
subjects hold is fetched, so messages of older and newer producers decode without a request.
A schema id seen later is fetched off the event loop (:meth:`RegistryCodec.prepare`, or in a
background thread when :meth:`~RegistryCodec.decode` meets it first: that message is then
refused with a :class:`~topics.codec.DecodeError` saying so, and the dead-letter topic keeps
its bytes).

>>> subjects = subjects_by_schema(Settings(topic_prefix="homestream."))
>>> subjects["homestream.Play"], subjects["homestream.PageUpdate"]
(['homestream.player-events-homestream.Play'], ['homestream.homepage-updates-value'])
>>> subjects["homestream.EventBatch"]
['homestream.player-events-homestream.EventBatch', 'homestream.impressions-value']
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import parse_schema

from homestream.settings import Settings
from topics.codec import (
    BATCH_SCHEMA,
    SCHEMA_DIR,
    AvroCodec,
    DecodeError,
    schema_fingerprint,
)
from topics.models import EVENT_MODELS
from topics.registry import topic_specs

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

log = logging.getLogger(__name__)

MAGIC = b"\x00"
HEADER_LEN = 5
#: Seconds before a schema id the registry could not give is asked for again.
RETRY_S = 10.0

#: The schemas each topic carries, by its role in :func:`topics.registry.topic_specs`.
TOPIC_SCHEMAS: dict[str, tuple[str, ...]] = {
    "player_events": (*EVENT_MODELS, BATCH_SCHEMA),
    "impressions": (BATCH_SCHEMA,),
    "catalog": ("homestream.Title",),
    "profiles": ("homestream.Profile",),
    "page_updates": ("homestream.PageUpdate",),
    "model_updates": ("homestream.ModelUpdate",),
    "dead_letter": ("homestream.DeadLetter",),
}


def subject_name(topic: str, schema_name: str, schemas_on_topic: int) -> str:
    """The registry subject of ``schema_name`` on ``topic``: ``<topic>-value`` when the topic
    carries that schema alone, else ``<topic>-<schema_name>``."""
    return f"{topic}-value" if schemas_on_topic == 1 else f"{topic}-{schema_name}"


def subjects_by_schema(settings: Settings) -> dict[str, list[str]]:
    """Every schema's subjects (one per topic it is written to) for the topics of
    ``settings``."""
    specs = topic_specs(settings)
    out: dict[str, list[str]] = {}
    for role, names in TOPIC_SCHEMAS.items():
        for name in names:
            out.setdefault(name, []).append(subject_name(specs[role].name, name, len(names)))
    return out


def registry_schema(parsed: Any) -> str:
    """The JSON a registry stores for a parsed schema: self-contained (referenced named types
    written out), with docs and defaults (which compatibility checks need), without
    fastavro's own bookkeeping keys."""
    from fastavro.schema import expand_schema

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return json.dumps(clean(expand_schema(parsed)), separators=(",", ":"))


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A ``confluent_kafka.schema_registry`` client for ``settings.schema_registry_url``."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {"url": settings.schema_registry_url,
                            "timeout": settings.schema_registry_timeout_s}
    user_info = settings.schema_registry_basic_auth.get_secret_value()
    if user_info:
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


class RegistryCodec(AvroCodec):
    """An :class:`AvroCodec` writing the registry's framing and reading both framings.

    Parameters
    ----------
    client
        The registry client (``confluent_kafka.schema_registry.SchemaRegistryClient``).
    subjects
        Each schema's subjects (:func:`subjects_by_schema`).
    compatibility
        The compatibility level set on every subject before registering.
    schema_dir, reader_versions
        As for :class:`AvroCodec`.
    """

    def __init__(self, client: SchemaRegistryClient, subjects: Mapping[str, Sequence[str]],
                 compatibility: str = "FULL_TRANSITIVE", schema_dir: Path = SCHEMA_DIR,
                 reader_versions: Mapping[str, int] | None = None) -> None:
        super().__init__(schema_dir, reader_versions)
        self.client = client
        self.subjects = {name: list(s) for name, s in subjects.items()}
        # schema id -> (full name, writer schema or None when it is the reader's own)
        self._by_id: dict[int, tuple[str, Any]] = {}
        self._known: dict[bytes, tuple[str, Any]] = {}
        for name, versions in self.history.items():
            for v in versions:
                reader = self._readers[name]
                self._known[schema_fingerprint(v.schema)] = (
                    name, None if v.schema is reader else v.schema)
        self._failed: dict[int, float] = {}
        self._refused: dict[int, str] = {}
        self._fetching: set[int] = set()
        self._lock = threading.Lock()
        self.ids = self._register(compatibility)
        self._prefetch()

    # -- start-up -----------------------------------------------------------------------------
    def _register(self, compatibility: str) -> dict[str, int]:
        """Set each subject's compatibility, register the current schemas; the ids by name."""
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        ids: dict[str, int] = {}
        for name, subjects in self.subjects.items():
            text = registry_schema(self._schemas[name])
            for subject in subjects:
                try:
                    self.client.set_compatibility(subject_name=subject, level=compatibility)
                    schema_id = self.client.register_schema(subject, Schema(text, "AVRO"))
                except SchemaRegistryError as exc:
                    raise RuntimeError(f"schema registry refused {name} under subject "
                                       f"{subject!r}: {exc}") from exc
                if ids.setdefault(name, schema_id) != schema_id:
                    log.warning("schema %s has id %d under %s but %d under %s; messages are "
                                "written with %d", name, schema_id, subject, ids[name],
                                subjects[0], ids[name])
            self._by_id[ids[name]] = (name, None)
            self._headers[name] = MAGIC + ids[name].to_bytes(4, "big")
        return ids

    def _prefetch(self) -> None:
        """Learn every version the subjects hold (other producers' older or newer schemas)."""
        for subject in {s for subjects in self.subjects.values() for s in subjects}:
            for version in self.client.get_versions(subject):
                registered = self.client.get_version(subject, version)
                self._learn(registered.schema_id, registered.schema.schema_str)

    def _learn(self, schema_id: int, schema_str: str) -> None:
        """Remember what schema ``schema_id`` is: one of the released versions (read as the
        codec reads them) or a version this build does not ship (resolved by Avro's rules)."""
        if schema_id in self._by_id:
            return
        parsed = parse_schema(json.loads(schema_str))
        known = self._known.get(schema_fingerprint(parsed))
        name = parsed.get("name") if isinstance(parsed, dict) else None
        if known is None and name not in self._readers:
            raise DecodeError(f"schema id {schema_id} is {name!r}, not a homestream schema")
        self._by_id[schema_id] = known or (name, parsed)

    # -- ids seen later -----------------------------------------------------------------------
    def fetch(self, ids: Iterable[int]) -> None:
        """Ask the registry for ``ids`` not known yet (blocking: call it off the event loop);
        an id it cannot give is logged and asked for again after :data:`RETRY_S`."""
        for schema_id in ids:
            if (schema_id in self._by_id or schema_id in self._refused
                    or time.monotonic() < self._failed.get(schema_id, 0)):
                continue
            try:
                self._learn(schema_id, self.client.get_schema(schema_id).schema_str)
            except DecodeError as exc:  # another application's schema: never ours
                self._refused[schema_id] = str(exc)
            except Exception as exc:  # registry down, unknown id: ask again later
                self._failed[schema_id] = time.monotonic() + RETRY_S
                log.warning("schema id %d not fetched from the registry: %s: %s", schema_id,
                            type(exc).__name__, exc)

    def unknown_ids(self, values: Iterable[bytes | None]) -> set[int]:
        """The registry ids in framed ``values`` that this codec does not know yet."""
        return {i for v in values if v and len(v) >= HEADER_LEN and v[0] == 0
                and (i := int.from_bytes(v[1:HEADER_LEN], "big")) not in self._by_id
                and i not in self._refused}

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Fetch the unknown schema ids of ``values`` in a thread, so :meth:`decode` of these
        messages needs no request (for callers on an event loop, before a batch)."""
        ids = self.unknown_ids(values)
        if ids:
            await asyncio.to_thread(self.fetch, ids)

    def _fetch_in_background(self, schema_id: int) -> None:
        with self._lock:
            if schema_id in self._fetching:
                return
            self._fetching.add(schema_id)

        def run() -> None:
            try:
                self.fetch([schema_id])
            finally:
                with self._lock:
                    self._fetching.discard(schema_id)

        threading.Thread(target=run, name=f"schema-{schema_id}", daemon=True).start()

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, data: bytes) -> tuple[str, Any]:
        """``(schema_name, record)`` of a registry-framed message, or of a single-object one
        (:meth:`AvroCodec.decode`); :class:`DecodeError` if unusable."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or data[:1] != MAGIC:
            return super().decode(data)
        if len(data) < HEADER_LEN:
            raise DecodeError(f"registry-framed message of {len(data)} bytes has no schema id")
        schema_id = int.from_bytes(data[1:HEADER_LEN], "big")
        known = self._by_id.get(schema_id)
        if known is None:
            if schema_id in self._refused:
                raise DecodeError(self._refused[schema_id])
            self._fetch_in_background(schema_id)
            raise DecodeError(f"schema id {schema_id} is not known yet (it is being fetched "
                              f"from the schema registry; the message is kept with its bytes)")
        name, writer = known
        reader = self._readers[name]
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_LEN:]), writer or reader,
                None if writer is None else reader, return_record_name=True)
        except Exception as exc:  # fastavro raises many types for truncated/corrupt bodies
            raise DecodeError(f"corrupt {name} body (schema id {schema_id}): "
                              f"{type(exc).__name__}: {exc}") from exc
        return name, record


async def prepare(codec: AvroCodec, values: Iterable[bytes | None]) -> None:
    """Before decoding ``values`` on an event loop: fetch the registry schema ids they name
    that ``codec`` does not know yet, in a thread (nothing for the single-object codec)."""
    if isinstance(codec, RegistryCodec):
        await codec.prepare(values)


_CODECS: dict[tuple[str, str], RegistryCodec] = {}


def codec_for(settings: Settings) -> AvroCodec:
    """The codec a process writes and reads with: a :class:`RegistryCodec` (one per registry
    and topic prefix, built on first use) when ``schema_registry_url`` is set, else the
    packaged single-object codec."""
    from topics.codec import default_codec

    if not settings.schema_registry_url:
        return default_codec()
    key = (settings.schema_registry_url, settings.topic_prefix)
    codec = _CODECS.get(key)
    if codec is None:
        try:
            codec = RegistryCodec(registry_client(settings), subjects_by_schema(settings),
                                  settings.schema_registry_compatibility)
        except RuntimeError:  # the registry answered and refused a schema: says which
            raise
        except Exception as exc:  # not reachable, not a registry, timed out
            raise RuntimeError(f"HOMESTREAM_SCHEMA_REGISTRY_URL={settings.schema_registry_url}"
                               f": the schema registry did not answer as one "
                               f"({type(exc).__name__}: {exc})") from exc
        _CODECS[key] = codec
        log.info("schema registry %s: messages framed with registry ids %s",
                 settings.schema_registry_url, codec.ids)
    return codec
