"""Reading catalog and profile files: validation with the models, bad rows with line numbers
and reasons, deletions, CSV cells, and the CLI refusing a file with bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homestream.player import cli
from homestream.player.loaders import LoadFileError, read_records
from topics.models import Profile, Title

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def title(tid: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "title_id": tid, "name": f"Title {tid}", "genres": ["Drama"],
        "maturity_rating": "PG", "release_date": "2024-01-01", "duration_s": 1200.0,
        "artwork": [{"artwork_id": f"{tid}-a", "url": f"https://img.test/{tid}.jpg"}]}
    return base | fields


def write_lines(path: Path, rows: list[object | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_json_lines_good_rows_deletions_and_bad_rows_with_line_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "catalog.jsonl", [
        title("t1"),
        "",                                             # blank line 2 skipped
        title("t2", maturity_rating="XXX"),             # 3: bad rating
        "{not json",                                    # 4
        {"title_id": "t3", "deleted": True},            # 5: deletion needs only the id
        title("t4", artwork=[]),                        # 6: no artwork
        title("t1", name="again"),                      # 7: repeated id
        [1, 2],                                         # 8: not an object
        {"deleted": True},                              # 9: deletion without id
        title("t5", extra_field=1),                     # 10: unknown field
    ])
    loaded = read_records(path, "catalog")
    assert [(r.line, r.key, r.deleted) for r in loaded.records] == [
        (1, "t1", False), (5, "t3", True)]
    assert isinstance(loaded.records[0].model, Title)
    reasons = {e.line: e.reason for e in loaded.errors}
    assert sorted(reasons) == [3, 4, 6, 7, 8, 9, 10]
    assert reasons[3].startswith("maturity_rating:")
    assert reasons[4].startswith("invalid JSON")
    assert reasons[6].startswith("artwork:")
    assert reasons[7] == "title_id 't1' repeats line 1"
    assert reasons[8] == "expected an object, got list"
    assert reasons[9] == "title_id: a deletion needs the id"
    assert "extra_field" in reasons[10]
    assert (loaded.rows, loaded.upserts, loaded.deletions) == (9, 1, 1)
    assert str(loaded.errors[0]) == f"line 3: {reasons[3]}"


def test_csv_lists_artwork_urls_defaults_and_deletions(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "title_id,name,genres,maturity_rating,release_date,duration_s,artwork,availability,"
        "deleted\n"
        "t1,One,Drama|Comedy,PG,2024-01-01,1200,https://a/1.jpg|https://a/2.jpg,,\n"
        't2,"Two, the sequel",Horror,R,2024-02-01,90,'
        '"[{""artwork_id"": ""x"", ""url"": ""https://a/x.jpg"", ""tags"": [""dark""]}]",'
        "US|GB,false\n"
        "t3,,,,,,,,true\n"
        "t4,Four,Drama,PG,2024-13-01,1200,https://a/4.jpg,,\n"
        "t5,Five,Drama,PG,2024-01-01,1200,https://a/5.jpg,,maybe\n")
    loaded = read_records(path, "catalog")
    t1, t2 = (r.model for r in loaded.records[:2])
    assert isinstance(t1, Title) and isinstance(t2, Title)
    assert t1.genres == ["Drama", "Comedy"] and t1.availability == []
    assert [(a.artwork_id, a.url) for a in t1.artwork] == [("t1-art0", "https://a/1.jpg"),
                                                          ("t1-art1", "https://a/2.jpg")]
    assert t2.name == "Two, the sequel" and t2.artwork[0].tags == ["dark"]
    assert t2.availability == ["US", "GB"]
    assert (loaded.records[2].key, loaded.records[2].deleted) == ("t3", True)
    assert [(e.line, e.reason.split(":")[0]) for e in loaded.errors] == [
        (5, "release_date"), (6, "deleted")]


def test_csv_rows_with_extra_cells_are_bad_and_multiline_cells_keep_line_numbers(
        tmp_path: Path) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text('profile_id,kids,country\np1,true,US\np2,false,US,extra\n'
                    '"p\n3",false,GB\np4,yes,ZZZ\n')
    loaded = read_records(path, "profiles")
    assert [r.key for r in loaded.records] == ["p1", "p\n3"]
    assert isinstance(loaded.records[0].model, Profile) and loaded.records[0].model.kids
    assert [(e.line, e.reason.split(" ")[0]) for e in loaded.errors] == [(3, "more"),
                                                                        (6, "country:")]


def test_unreadable_files_are_refused_as_a_whole(tmp_path: Path) -> None:
    with pytest.raises(LoadFileError, match=r"unknown file type \.xlsx"):
        read_records(tmp_path / "catalog.xlsx", "catalog")
    with pytest.raises(LoadFileError, match="cannot read"):
        read_records(tmp_path / "missing.jsonl", "catalog")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LoadFileError, match="empty CSV"):
        read_records(tmp_path / "empty.csv", "profiles")


def test_the_example_files_are_valid_and_include_a_kids_profile() -> None:
    catalog = read_records(EXAMPLES / "catalog.jsonl", "catalog")
    profiles = read_records(EXAMPLES / "profiles.csv", "profiles")
    assert not catalog.errors and not profiles.errors
    assert catalog.upserts >= 30
    assert all(r.model.artwork for r in catalog.records)  # type: ignore[union-attr]
    kids = [r.model for r in profiles.records if r.model.kids]  # type: ignore[union-attr]
    assert kids and all(p.max_maturity_rating == "G" for p in kids)  # type: ignore[union-attr]
    assert any(r.model.maturity_rating == "G" for r in catalog.records)  # type: ignore[union-attr]


def test_the_cli_refuses_a_file_with_bad_rows_and_names_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is published: the broker address is unreachable and never contacted."""
    monkeypatch.setenv("HOMESTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = write_lines(tmp_path / "c.jsonl", [title("t1"), title("t2", duration_s=-5)])
    assert cli.main(["catalog", "load", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: line 2: duration_s:" in err
    assert "refused: 1 bad row(s) of 2; nothing published" in err
    assert cli.main(["catalog", "load", str(path), "--skip-invalid", "--dry-run"]) == 1
    assert "valid: 1 record(s) and 0 deletion(s)" in capsys.readouterr().out


def test_docker_compose_loads_the_example_files_with_commands_the_cli_knows() -> None:
    import shlex

    import yaml

    root = EXAMPLES.parent
    service = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["catalog"]
    assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert service["volumes"] == ["./examples:/app/examples:ro"]
    steps = [shlex.split(part) for part in service["command"][-1].split("&&")]
    loaded = []
    for argv in steps:
        assert argv[0] == "homestream"
        args = cli.build_parser().parse_args(argv[1:])
        assert args.handler is cli.cmd_load and not args.skip_invalid
        assert not read_records(root / args.file, args.kind).errors
        loaded.append(args.kind)
    assert loaded == ["catalog", "profiles"]


def test_records_the_broker_never_took_are_named(tmp_path: Path) -> None:
    """A real client with nowhere to deliver: every id comes back in the error."""
    from homestream.player.loaders import publish_records
    from homestream.player.producer import ProducerError
    from homestream.settings import Settings

    loaded = read_records(write_lines(tmp_path / "c.jsonl", [title("t1"), title("t2")]),
                          "catalog")
    settings = Settings(bootstrap_servers="127.0.0.1:1", producer_delivery_timeout_ms=1000)
    with pytest.raises(ProducerError) as err:
        publish_records(settings, "catalog", loaded.records, timeout_s=10)
    named = {f.key for f in err.value.failures} | set(err.value.undelivered_event_ids)
    assert named == {"t1", "t2"}
