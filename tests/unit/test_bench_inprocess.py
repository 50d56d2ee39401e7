"""The in-process measurement of the worker's batch step applies every simulated event and
times the pages it assembles."""

from __future__ import annotations

import asyncio
import gc

import pytest

from bench.inprocess import measure, parse_args
from online_models.page import assemble_page
from streams import render


@pytest.mark.parametrize("gc_mode", ["default", "worker"])
def test_every_measured_event_is_applied_and_the_collector_is_accounted(gc_mode: str) -> None:
    before = gc.get_threshold()
    try:
        out = asyncio.run(measure(parse_args([
            "--events", "400", "--warm", "200", "--per-message", "2", "--batch", "20",
            "--titles", "60", "--profiles", "30", "--gc", gc_mode])))
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert out["events"] == 400  # the warm-up's events are not counted
    assert out["messages"] >= 200  # at most two events a message
    assert out["pages"] > 0 and out["events_per_cpu_s"] > 0
    assert len(out["gc_collections"]) == 3 and out["gc_cpu_s"] >= 0.0
    # the pages' assembly is timed within the step, and the renderer is left as it was
    assert 0.0 < out["page_cpu_s"] <= out["cpu_s"] and out["ms_per_page"] > 0.0
    assert render.assemble_page is assemble_page


def test_topic_mode_encodes_the_learning_and_pages_instead_of_learning_in_place() -> None:
    args = ["--events", "300", "--per-message", "3", "--batch", "20", "--titles", "60",
            "--profiles", "20", "--gc", "default"]
    before = gc.get_threshold()
    try:
        topic = asyncio.run(measure(parse_args([*args, "--learner-mode", "topic"])))
        inline = asyncio.run(measure(parse_args(args)))
    finally:
        gc.set_threshold(*before)
    assert topic["learner_mode"] == "topic" and inline["learner_mode"] == "inline"
    assert topic["events"] == inline["events"] == 300
    # the records for the learner and the changed pages, as the worker's producers encode them
    assert topic["encoded_bytes"] > 1000 and inline["encoded_bytes"] == 0


def test_a_negative_warm_up_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--warm", "-1"])
    assert "--warm" in capsys.readouterr().err
