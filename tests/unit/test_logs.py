"""The JSON log formatter and the one logging set-up function of the entrypoints."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from homestream.logs import JsonFormatter, setup_logging
from homestream.player import cli


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_context_fields() -> None:
    stream = io.StringIO()
    setup_logging("json", logging.INFO, stream)
    log = logging.getLogger("homestream.test")
    log.warning("dead-lettered %s", "e1",
                extra={"event_id": "e1", "partition": 3, "offset": 42, "unrelated": "x"})
    log.debug("not at info level")
    line = json.loads(stream.getvalue())
    assert line.pop("time").endswith("Z")
    assert line == {"level": "WARNING", "logger": "homestream.test",
                    "message": "dead-lettered e1", "event_id": "e1", "partition": 3,
                    "offset": 42}


def test_exceptions_and_odd_values_stay_one_json_line() -> None:
    stream = io.StringIO()
    setup_logging("json", logging.INFO, stream)
    try:
        raise ValueError("bad\nrow")
    except ValueError:
        logging.getLogger("x").exception("failed", extra={"offset": object()})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert "ValueError: bad\nrow" in record["error"]
    assert record["offset"].startswith("<object object")


def test_text_stays_the_default_and_a_second_setup_replaces_the_first() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(stream=first)
    setup_logging("json", stream=second)
    logging.getLogger("y").info("hello")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "hello"
    text = io.StringIO()
    setup_logging("text", stream=text)
    logging.getLogger("y").info("hello")
    assert text.getvalue().rstrip().endswith("INFO y: hello")
    with pytest.raises(ValueError, match="text or json"):
        setup_logging("yaml")


def test_the_formatter_uses_utc_milliseconds() -> None:
    record = logging.LogRecord("n", logging.ERROR, __file__, 1, "m", None, None)
    record.created = 1_700_000_000.1234
    assert json.loads(JsonFormatter().format(record))["time"] == "2023-11-14T22:13:20.123Z"


def test_the_cli_logs_json_when_the_setting_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(cli, "setup_logging", lambda fmt, level: seen.append((fmt, level)))
    monkeypatch.setenv("HOMESTREAM_LOG_FORMAT", "json")
    parser_ok = cli.main(["-v", "catalog", "load", "/no/such/file.jsonl"])
    assert parser_ok == 1
    assert seen == [("json", logging.INFO)]
    monkeypatch.setenv("HOMESTREAM_LOG_FORMAT", "xml")
    assert cli.main(["catalog", "load", "/no/such/file.jsonl"]) == 2


def test_other_handlers_stay_and_the_default_stream_is_the_current_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    foreign = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(foreign)
    setup_logging("json")
    setup_logging("json")
    logging.getLogger("z").warning("to stderr")
    assert foreign in logging.getLogger().handlers
    assert [json.loads(x)["message"] for x in capsys.readouterr().err.splitlines()] == [
        "to stderr"]
    logging.getLogger().removeHandler(foreign)
