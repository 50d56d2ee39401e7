"""homestream.stack.process: real child processes (short Python one-liners), started, watched,
waited for and stopped."""

from __future__ import annotations

import sys
import time

import pytest

from homestream.stack.process import (
    Child,
    ChildExited,
    WaitTimeout,
    free_port,
    port_open,
    wait_for,
    wait_for_port,
)


def python(code: str, **kw: object) -> Child:
    return Child([sys.executable, "-c", code], name="snippet", **kw)  # type: ignore[arg-type]


def test_output_goes_to_the_log_and_exit_is_seen() -> None:
    child = python("print('hello'); import sys; sys.exit(3)")
    wait_for(lambda: not child.alive(), 10, "the child to exit")
    assert child.returncode == 3
    assert child.tail() == "hello"
    with pytest.raises(ChildExited, match=r"(?s)snippet exited with 3 while booting.*\nhello"):
        child.check_alive("booting")


def test_env_is_added_to_the_environment() -> None:
    with python("import os; print(os.environ['HS_TEST_VALUE'], 'PATH' in os.environ)",
                env={"HS_TEST_VALUE": "42"}) as child:
        wait_for(lambda: not child.alive(), 10, "the child to exit")
    assert child.tail() == "42 True"


def test_stop_terminates_and_kills_what_ignores_sigterm() -> None:
    polite = python("import time; time.sleep(60)")
    polite.stop(5)
    assert polite.returncode is not None and not polite.alive()
    stubborn = python("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('ready', flush=True); time.sleep(60)")
    wait_for(lambda: "ready" in stubborn.tail(), 10, "the child to ignore SIGTERM")
    t0 = time.monotonic()
    stubborn.stop(0.5)
    assert stubborn.returncode == -9 and time.monotonic() - t0 < 5
    stubborn.stop()  # stopping a stopped child does nothing


def test_cpu_seconds_grow_with_work() -> None:
    with python("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: "
                "pass\nprint('done', flush=True)\ntime.sleep(30)") as child:
        wait_for(lambda: "done" in child.tail(), 20, "the busy loop")
        cpu = child.cpu_s()
        assert cpu is not None and cpu >= 0.25


def test_wait_for_returns_the_value_and_times_out_with_what_and_detail() -> None:
    calls: list[int] = []
    assert wait_for(lambda: calls.append(1) or (len(calls) >= 3 and "yes"), 5, "x") == "yes"
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"after 0.2s waiting for the moon\ncounters 7"):
        wait_for(lambda: False, 0.2, "the moon", detail=lambda: "counters 7")
    assert 0.2 <= time.monotonic() - t0 < 2


def test_wait_for_fails_early_when_a_watched_child_exits() -> None:
    child = python("print('boom'); raise SystemExit(2)")
    t0 = time.monotonic()
    with pytest.raises(ChildExited, match=r"(?s)exited with 2 while waiting for a port.*boom"):
        wait_for(lambda: False, 30, "a port", watch=[child])
    assert time.monotonic() - t0 < 10


def test_wait_for_port_sees_a_listener() -> None:
    port = free_port()
    assert not port_open(port)
    code = ("import socket, time; s = socket.socket(); "
            f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)")
    with python(code) as child:
        wait_for_port(port, 10, child)
        assert port_open(port)
