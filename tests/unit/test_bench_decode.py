"""``python -m bench.decode`` times every reader over the same messages and exits 1 when the
compiled reader misses its speed-up target."""

from __future__ import annotations

import json

import pytest

from bench.decode import main
from topics.avro_bytes import _avro_read

SMALL = ["--events", "600", "--per-message", "5", "--repeat", "1", "--titles", "40",
         "--profiles", "20", "--gc", "default"]


def test_it_reports_each_reader_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["events"] == 600 and out["messages"] >= 120
    for key in ("read_python_us", "read_fastavro_us", "validate_us", "decode_messages_us"):
        assert out[key] > 0.0
    assert out["compiled_reader"] == (_avro_read is not None)


def test_a_missed_speedup_target_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--min-speedup", "1000"]) == 1
    assert "speedup" in capsys.readouterr().err
