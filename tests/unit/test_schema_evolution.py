"""Schema evolution: the repo's version history is compatible, older writers decode into the
current schema, and the compatibility check fails naming the field of a breaking change."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest

from homestream.player.cli import main
from topics.codec import SCHEMA_DIR, AvroCodec, default_codec, load_history
from topics.compat import _by_fastavro, check_history, check_pair
from topics.models import Play

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# What producers wrote before schemas had versions: these must keep decoding.
RELEASE_1 = {
    "homestream.Play": "132de347e1f37b13",
    "homestream.EventBatch": "3a0764a6ffdcd52f",
    "homestream.PageUpdate": "eb22e54cbb9ba74e",
    "homestream.Title": "73760ffc95e43acc",
}


def play_v1() -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / "Play" / "v1.avsc").read_text())


def play(**extra: Any) -> Play:
    return Play(event_id="e1", profile_id="p1", event_ts_ms=1_700_000_000_000, title_id="t1",
                action="stop", position_s=50.0, duration_s=60.0, **extra)


def v1_record(event: Play) -> dict[str, Any]:
    record = event.model_dump()
    del record["app_version"]
    return record


def test_the_repo_schemas_are_backward_and_forward_compatible() -> None:
    history = load_history()
    assert check_history(history) == []
    assert [v.version for v in history["homestream.Play"]] == [1, 2]


def test_every_schema_file_is_in_a_release() -> None:
    releases = json.loads((SCHEMA_DIR / "releases.json").read_text())["releases"]
    named = {f"{name}/v{n}.avsc" for r in releases for name, n in r["changes"].items()}
    on_disk = {str(p.relative_to(SCHEMA_DIR)) for p in SCHEMA_DIR.glob("*/*.avsc")}
    assert on_disk == named, "a schema file is not in releases.json (or one is missing)"


def test_release_1_fingerprints_are_kept() -> None:
    history = load_history()
    for name, fp in RELEASE_1.items():
        assert history[name][0].fingerprint.hex() == fp, name


def test_every_version_is_in_the_readme_history_or_table() -> None:
    for name, versions in load_history().items():
        short = name.split(".")[-1]
        for v in versions:
            row = f"| `{short}` | v{v.version} | `{v.fingerprint.hex()}` | `{v.file}` |"
            only = len(versions) == 1 and f"| `{short}` | `{v.fingerprint.hex()}` |" in README
            assert row in README or only, row


def test_current_version_encodes_and_older_versions_decode_into_it() -> None:
    codec = default_codec()
    history = codec.history
    new = play(app_version="5.2.1")
    data = codec.encode_event(new)
    assert data[2:10] == history["homestream.Play"][-1].fingerprint
    assert codec.decode_events(data) == [new]

    old = codec.encode_version(history["homestream.Play"][0], v1_record(play()))
    assert old[2:10].hex() == RELEASE_1["homestream.Play"]
    assert codec.decode_events(old) == [play()]
    assert codec.decode_events(old)[0].app_version == ""


def test_a_v1_batch_holding_v1_plays_decodes_next_to_a_current_batch() -> None:
    codec = default_codec()
    batch_v1 = codec.history["homestream.EventBatch"][0]
    old = codec.encode_version(batch_v1, {"profile_id": "p1", "events": [
        ("homestream.Play", v1_record(play()))]})
    assert old[2:10].hex() == RELEASE_1["homestream.EventBatch"]
    assert codec.decode_events(old) == [play()]
    new = codec.encode_batch("p1", [play(app_version="6.0")])
    assert new[2:10] != old[2:10]
    assert codec.decode_events(new)[0].app_version == "6.0"


def test_a_reader_on_page_update_v1_reads_a_page_written_with_v2() -> None:
    codec = default_codec()
    v1, v2 = codec.history["homestream.PageUpdate"]
    data = codec.encode_page_update({
        "profile_id": "p1", "personalized": True, "country": "US", "kids": True,
        "generated_at_ms": 2, "as_of_event_ts_ms": 1,
        "rows": [{"row_id": "r", "kind": "top_picks", "title": "Top Picks", "explanation": "",
                  "items": [{"title_id": "t1", "artwork_id": "a", "score": 0.5}]}]})
    assert data[2:10] == v2.fingerprint
    old_reader = fastavro.schemaless_reader(io.BytesIO(data[10:]), v2.schema, v1.schema)
    assert "kids" not in old_reader
    assert old_reader["rows"][0]["items"][0]["title_id"] == "t1"
    assert codec.decode(data)[1]["kids"] is True


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s["fields"][5].update(type="string"),
     "backward (v2 reads v1): field position_s: type changed from double to string"),
    (lambda s: s["fields"].append({"name": "app_build", "type": "int"}),
     "backward (v2 reads v1): field app_build: added without a default"),
    (lambda s: s["fields"].pop(3),
     "forward (v1 reads v2): field title_id: removed without a default"),
    (lambda s: s["fields"][4]["type"].update(symbols=["start", "stop"]),
     "backward (v2 reads v1): field action: enum homestream.PlayAction lost symbols "
     "['progress']"),
    (lambda s: s["fields"][9].update(type="string", default=""),
     "backward (v2 reads v1): field session_id: type changed from null to string"),
])
def test_an_incompatible_change_fails_naming_the_field(change: Any, expected: str) -> None:
    new = play_v1()
    change(new)
    problems = [str(p) for p in check_pair(play_v1(), new, "homestream.Play")]
    assert any(p.startswith(f"homestream.Play v1 -> v2, {expected}") for p in problems), problems


def test_a_nested_field_is_named_by_its_path() -> None:
    codec = default_codec()
    old = codec.history["homestream.PageUpdate"][-1].schema
    new = json.loads((SCHEMA_DIR / "PageUpdate" / "v2.avsc").read_text())
    new["fields"][5]["type"]["items"]["fields"][5]["type"]["items"]["fields"][2]["type"] = "int"
    problems = [str(p) for p in check_pair(old, new)]
    assert any("field rows[].items[].score: type changed from double to int" in p
               for p in problems), problems


def test_promotions_and_defaulted_fields_are_compatible_one_way_only() -> None:
    old = play_v1()
    widened = copy.deepcopy(old)
    widened["fields"][2]["type"] = "double"  # event_ts_ms: long -> double
    problems = check_pair(old, widened)
    assert [(p.direction, p.field) for p in problems] == [("forward", "event_ts_ms")]


def test_fastavro_agrees_a_type_change_does_not_resolve() -> None:
    old = play_v1()
    new = copy.deepcopy(old)
    new["fields"][3]["type"] = "long"
    assert _by_fastavro(old, new) is not None
    assert _by_fastavro(old, json.loads((SCHEMA_DIR / "Play" / "v2.avsc").read_text())) is None


def test_a_codec_over_a_history_with_a_breaking_version_is_caught(tmp_path: Path) -> None:
    for src in SCHEMA_DIR.rglob("*"):
        if src.is_file():
            dst = tmp_path / src.relative_to(SCHEMA_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(src.read_text())
    bad = json.loads((tmp_path / "Play" / "v2.avsc").read_text())
    bad["fields"].append({"name": "app_build", "type": "int"})
    (tmp_path / "Play" / "v3.avsc").write_text(json.dumps(bad))
    releases = json.loads((tmp_path / "releases.json").read_text())
    releases["releases"].append({"release": 3, "changes": {"Play": 3}})
    (tmp_path / "releases.json").write_text(json.dumps(releases))
    problems = check_history(AvroCodec(tmp_path).history)
    assert [str(p) for p in problems] == [
        "homestream.Play v2 -> v3, backward (v3 reads v2): field app_build: "
        "added without a default",
        "homestream.EventBatch v2 -> v3, backward (v3 reads v2): field events[].app_build: "
        "added without a default"]


def test_schemas_check_command_reports_every_version(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    assert main(["schemas", "check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"homestream\.Play: v1 132de347e1f37b13, v2 [0-9a-f]{16}", out)
    assert "every version is backward and forward compatible" in out


def test_a_codec_pinned_to_page_update_v1_decodes_v2_pages_without_the_new_field() -> None:
    old_consumer = AvroCodec(reader_versions={"homestream.PageUpdate": 1})
    data = default_codec().encode_page_update({
        "profile_id": "p1", "personalized": False, "country": "US", "kids": True,
        "generated_at_ms": 2, "as_of_event_ts_ms": 0, "rows": []})
    name, record = old_consumer.decode(data)
    assert name == "homestream.PageUpdate" and "kids" not in record
    assert record["country"] == "US"
    v1 = old_consumer.history["homestream.PageUpdate"][0]
    old_page = {"profile_id": "p1", "personalized": True, "country": "US",
                "generated_at_ms": 2, "as_of_event_ts_ms": 1, "rows": []}
    assert old_consumer.decode(old_consumer.encode_version(v1, old_page))[1] == old_page
    with pytest.raises(ValueError, match="no version 3"):
        AvroCodec(reader_versions={"homestream.PageUpdate": 3})
