"""``homestream catalog load`` / ``profiles load`` / ``catalog delete`` against the real broker:
what a file publishes is read back from the compacted topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homestream.player import cli
from homestream.settings import Settings
from tests.integration.helpers import read_topic
from topics.codec import default_codec
from topics.registry import ensure_topics, topic_specs


def use(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the CLI with the test's settings (as the environment variables they come from)."""
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)


def title(tid: str, **fields: object) -> str:
    return json.dumps({
        "title_id": tid, "name": f"Title {tid}", "genres": ["Drama"], "maturity_rating": "PG",
        "release_date": "2024-01-01", "duration_s": 1200.0,
        "artwork": [{"artwork_id": f"{tid}-a", "url": f"https://img.test/{tid}.jpg"}],
    } | fields)


def test_a_catalog_file_lands_on_the_compacted_topic_and_bad_rows_are_named(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    use(settings, monkeypatch)
    ensure_topics(settings)
    topic = topic_specs(settings)["catalog"].name
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join([title("t1"), title("t2", maturity_rating="X"), title("t3"),
                               '{"title_id": "t4", "name": ', title("t5")]) + "\n")

    assert cli.main(["catalog", "load", str(path)]) == 1  # refused: nothing published
    err = capsys.readouterr().err
    assert "line 2: maturity_rating:" in err and "line 4: invalid JSON" in err
    assert read_topic(settings, topic, expect=1, timeout_s=3) == []

    assert cli.main(["catalog", "load", str(path), "--skip-invalid"]) == 1
    out, err = capsys.readouterr()
    assert "published 3 catalog record(s) and 0 deletion(s); skipped 2 bad row(s)" in out
    assert "line 2: maturity_rating:" in err and "line 4: invalid JSON" in err
    codec = default_codec()
    msgs = read_topic(settings, topic, expect=3)
    assert [m.key() for m in msgs] == [b"t1", b"t3", b"t5"]
    assert [codec.decode_title(m.value()).title_id for m in msgs] == ["t1", "t3", "t5"]

    assert cli.main(["catalog", "delete", "t3", "t3"]) == 0
    assert "deleted 1 catalog record(s)" in capsys.readouterr().out
    deletion = tmp_path / "more.csv"
    deletion.write_text("title_id,deleted\nt5,true\n")
    assert cli.main(["catalog", "load", str(deletion)]) == 0
    msgs = read_topic(settings, topic, expect=5)
    assert [(m.key(), m.value()) for m in msgs[3:]] == [(b"t3", None), (b"t5", None)]


def test_the_example_profiles_load_as_profile_records(
        settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    use(settings, monkeypatch)
    examples = Path(__file__).resolve().parents[2] / "examples"
    assert cli.main(["profiles", "load", str(examples / "profiles.csv")]) == 0
    assert "published 5 profiles record(s)" in capsys.readouterr().out
    msgs = read_topic(settings, topic_specs(settings)["profiles"].name, expect=5)
    profiles = {p.profile_id: p for p in
                (default_codec().decode_profile(m.value()) for m in msgs)}
    assert profiles["member-kid-lea"].kids
    assert profiles["member-kid-lea"].max_maturity_rating == "G"
    assert len(profiles) == 5
