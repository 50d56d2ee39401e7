"""Loading a real catalog or real profile settings from a file onto their compacted topics.

A file is JSON lines (``.jsonl``, ``.ndjson``, ``.json``: one object per line) or CSV
(``.csv``, a header row naming the fields). Each row is validated with its model
(:class:`topics.models.Title` or :class:`topics.models.Profile`); a row with
``"deleted": true`` (CSV: a ``deleted`` column set to ``true``) only needs its id and becomes
a tombstone, which removes the record from the compacted topic and from the pages.

In CSV cells, list fields (``genres``, ``availability``, ``cast``, ``tags``) are separated by
``|``; ``artwork`` is either a JSON array of ``{"artwork_id", "url", "tags"}`` objects or
``|``-separated URLs (ids ``<title_id>-art0``, ``-art1``...); an empty cell means the
field's default.

Reading is pure (:func:`read_records`): it returns the good records and every bad row with
its line number and reason, and the caller decides (the CLI refuses the whole file unless
``--skip-invalid``). :func:`publish_records` sends them keyed by id and waits for the broker.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from homestream.settings import Settings
from topics.codec import describe_validation_error
from topics.models import Profile, Title

Kind = Literal["catalog", "profiles"]
#: Per kind: the model of a row and its key field.
KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "catalog": (Title, "title_id"),
    "profiles": (Profile, "profile_id"),
}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
LIST_FIELDS = ("genres", "availability", "cast", "tags")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no", "")


class LoadFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, no CSV header)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One good row: its line, key, and the model (``None``: delete the key)."""

    line: int
    key: str
    model: BaseModel | None

    @property
    def deleted(self) -> bool:
        return self.model is None


@dataclass(frozen=True, slots=True)
class RowError:
    """A bad row: its line number in the file and what is wrong with it."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class LoadedFile:
    """Everything read from one file: the good records and the bad rows."""

    kind: str
    records: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.errors)

    @property
    def upserts(self) -> int:
        return sum(not r.deleted for r in self.records)

    @property
    def deletions(self) -> int:
        return sum(r.deleted for r in self.records)


def read_records(path: str | Path, kind: Kind) -> LoadedFile:
    """Read and validate every row of ``path`` as ``kind`` (``catalog`` or ``profiles``).

    Raises :class:`LoadFileError` when the file itself cannot be read; bad rows are collected
    in :attr:`LoadedFile.errors`, including an id repeated within the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*JSON_SUFFIXES, ".csv"):
        raise LoadFileError(f"{path}: unknown file type {suffix or '(none)'}; use .csv or "
                            f"JSON lines ({', '.join(JSON_SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadFileError(f"cannot read {path}: {exc}") from exc
    rows = _csv_rows(text, path) if suffix == ".csv" else _json_rows(text)
    return validate_rows(rows, kind)


def validate_rows(rows: Iterator[tuple[int, dict[str, Any] | str]], kind: Kind) -> LoadedFile:
    """Validate ``(line, row)`` pairs (a ``str`` row is a parse error already described)."""
    model, key_field = KINDS[kind]
    out = LoadedFile(kind)
    first_seen: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            out.errors.append(RowError(line, row))
            continue
        try:
            record = _record(line, row, model, key_field)
        except ValueError as exc:
            out.errors.append(RowError(line, str(exc)))
            continue
        if record.key in first_seen:
            out.errors.append(RowError(line, f"{key_field} {record.key!r} repeats line "
                                             f"{first_seen[record.key]}"))
            continue
        first_seen[record.key] = line
        out.records.append(record)
    return out


def _record(line: int, row: dict[str, Any], model: type[BaseModel], key_field: str) -> Record:
    deleted = row.pop("deleted", False)
    if isinstance(deleted, str):
        word = deleted.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f"deleted: must be true or false, got {deleted!r}")
        deleted = word in TRUE_WORDS
    elif not isinstance(deleted, bool):
        raise ValueError(f"deleted: must be true or false, got {deleted!r}")
    if deleted:
        key = row.get(key_field)
        if not isinstance(key, str) or not key:
            raise ValueError(f"{key_field}: a deletion needs the id")
        return Record(line, key, None)
    try:
        item = model.model_validate(row)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None
    return Record(line, getattr(item, key_field), item)


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, f"invalid JSON: {exc}"
            continue
        yield n, row if isinstance(row, dict) else f"expected an object, got " \
                                                    f"{type(row).__name__}"


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise LoadFileError(f"{path}: empty CSV file (a header row names the fields)")
    start = reader.line_num + 1
    for raw in reader:
        line, start = start, reader.line_num + 1
        if None in raw:
            yield line, f"more cells than the header's {len(reader.fieldnames)} columns"
            continue
        try:
            yield line, _csv_cells(raw)
        except ValueError as exc:
            yield line, str(exc)


def _csv_cells(raw: dict[str, str | None]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, cell in raw.items():
        value = (cell or "").strip()
        if not value:
            continue  # the field's default
        if name in LIST_FIELDS:
            row[name] = [v.strip() for v in value.split("|") if v.strip()]
        elif name == "artwork":
            row[name] = _csv_artwork(value, raw.get("title_id") or "")
        else:
            row[name] = value
    return row


def _csv_artwork(value: str, title_id: str) -> list[Any]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"artwork: invalid JSON array: {exc}") from None
        if not isinstance(parsed, list):
            raise ValueError("artwork: expected a JSON array")
        return parsed
    urls = [u.strip() for u in value.split("|") if u.strip()]
    return [{"artwork_id": f"{title_id}-art{i}", "url": u} for i, u in enumerate(urls)]


def publish_records(settings: Settings, kind: Kind, records: Sequence[Record], *,
                    timeout_s: float = 30.0) -> int:
    """Produce ``records`` to the ``kind`` topic keyed by id (deletions as tombstones) and
    wait for the broker; return how many were delivered. Raises
    :class:`~homestream.player.producer.ProducerError` naming the ids not delivered."""
    from confluent_kafka import Producer

    from homestream.kafka_config import librdkafka_config
    from homestream.player.producer import DeliveryFailure, ProducerError
    from topics.codec import default_codec
    from topics.registry import topic_specs

    codec = default_codec()
    topic = topic_specs(settings)[kind].name
    producer = Producer(librdkafka_config(settings, {
        "client.id": f"homestream-{kind}-loader", "enable.idempotence": True, "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "delivery.timeout.ms": settings.producer_delivery_timeout_ms,
        "logger": logging.getLogger(f"{__name__}.librdkafka")}))
    failures: list[DeliveryFailure] = []
    delivered: set[str] = set()

    def on_delivery(err: Any, msg: Any) -> None:
        key = msg.key().decode("utf-8", "replace") if msg is not None and msg.key() else ""
        if err is None:
            delivered.add(key)
        else:
            failures.append(DeliveryFailure(topic, key, str(err), [key]))

    for record in records:
        value = None if record.model is None else codec.encode_model(record.model)
        while True:
            try:
                producer.produce(topic, key=record.key.encode("utf-8"), value=value,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(timeout_s)
    failed = {f.key for f in failures}
    undelivered = [r.key for r in records if r.key not in delivered and r.key not in failed]
    if failures or undelivered:
        raise ProducerError(
            f"{len(failures)} record(s) failed and {len(undelivered)} undelivered after "
            f"{timeout_s}s on {topic}: "
            + "; ".join([str(f) for f in failures[:10]] + undelivered[:10]),
            failures, undelivered)
    return len(delivered)
