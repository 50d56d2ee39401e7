"""``python -m homestream.stack.demo`` end to end, as a child process: it shows the before/after
pages, stops by itself with ``DEMO_SECONDS`` and on SIGINT, and leaves no process behind.

The demo starts its own Tansu, Redis, worker and server (on the free ports given here), so
these tests do not use the shared ``infra`` fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from homestream.stack.local import ROOT, free_port

#: Small sizes keep the start-up (topics, catalog, worker, server) to ~15-25 s.
DEMO_ARGS = ["--profiles", "30", "--titles", "80", "--rate", "100"]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
AFTER_PAGE = "after the plays (page changed after"
#: The first line of the member's personal page, printed after ``AFTER_PAGE``.
PERSONAL_PAGE = "page for demo-member (personal, personalized=True)"


@dataclass
class Demo:
    """A running demo: its process, ports and the lines it printed (with arrival times)."""

    proc: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[tuple[float, str]] = field(default_factory=list)
    after_page: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def time_of(self, text: str) -> float:
        return next(t for t, line in self.lines if text in line)

    def child_pids(self) -> dict[str, int]:
        """The ``processes: tansu=.. redis=.. worker=.. server=..`` line the demo prints."""
        match = re.search(r"^processes: (.*)$", self.output, re.MULTILINE)
        assert match, self.output
        return {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}


@contextlib.contextmanager
def running_demo(extra_env: dict[str, str], tmp_path: Path) -> Iterator[Demo]:
    """Start the demo on free ports, its logs under ``tmp_path``; on the way out, kill
    whatever of it still runs."""
    ports = {"DEMO_BROKER_PORT": free_port(), "DEMO_REDIS_PORT": free_port(),
             "HOMESTREAM_HTTP_PORT": free_port()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOMESTREAM_", "DEMO_"))}
    env.update({k: str(v) for k, v in ports.items()}, PYTHONUNBUFFERED="1",
               TMPDIR=str(tmp_path), **extra_env)
    # its own session: nothing the test does reaches the demo's group but what it sends
    proc = subprocess.Popen([sys.executable, "-m", "homestream.stack.demo", *DEMO_ARGS], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    demo = Demo(proc, ports)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            demo.lines.append((time.monotonic(), line))
            if PERSONAL_PAGE in line:
                demo.after_page.set()
            if line.startswith("processes: "):
                demo.started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield demo
    finally:
        if proc.poll() is None:  # a failed test: do not leave the demo's processes around
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(10)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def assert_pages_shown(demo: Demo) -> None:
    out = demo.output
    assert "== demo-member before any play ==" in out, out
    assert out.index("personalized=False") < out.index(AFTER_PAGE), out  # not personal yet
    assert "demo-member watches " in out, out
    assert out.index("before any play") < out.index(AFTER_PAGE) < out.index(PERSONAL_PAGE)


def curl(line: str) -> tuple[int, dict]:
    """Run one printed ``curl -s [-X M] [-H h] [-d body] URL`` line (with urllib, so the test
    needs no curl binary): ``(status, JSON body)``."""
    args = shlex.split(line)
    assert args[:2] == ["curl", "-s"], line
    method, headers, data, url = "GET", {}, None, None
    it = iter(args[2:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(it).encode()
        else:
            url = arg
    assert url is not None, line
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_curl_lines_work(demo: Demo) -> None:
    """The ``try it`` block's lines, run while the demo runs, all answer 200, and the posted
    play is accepted."""
    wait = time.monotonic() + 10
    while "curl -s -X POST" not in demo.output and time.monotonic() < wait:
        time.sleep(0.1)
    lines = [line.strip() for _, line in demo.lines if line.strip().startswith("curl ")]
    assert len(lines) == 6, demo.output
    answers = [curl(line) for line in lines]
    assert [status for status, _ in answers] == [200] * 6, answers
    home, similar, search, posted, server_ready, worker_ready = (a for _, a in answers)
    assert home["profile_id"] == "demo-member" and home["rows"]
    assert similar["items"] and search["items"]
    assert len(posted["accepted"]) == 1 and posted["rejected"] == []
    assert server_ready["status"] == worker_ready["status"] == "ready"


def assert_all_stopped(demo: Demo, simulated: bool = True) -> None:
    """Simulator flushed, every child process gone and every port closed."""
    out = demo.output
    if simulated:
        delivered = re.search(r"simulator stopped: (\d+) events delivered", out)
        assert delivered and int(delivered.group(1)) > 0, out
        assert "simulator:" not in out, out  # no delivery failure reported
    assert out.rstrip().endswith("stopped"), out
    pids = demo.child_pids()
    assert set(pids) == {"tansu", "redis", "worker", "server"}
    assert {name: pid for name, pid in pids.items() if alive(pid)} == {}
    assert {name: port for name, port in demo.ports.items() if listening(port)} == {}


def test_demo_seconds_stops_by_itself_after_the_pages(tmp_path: Path) -> None:
    with running_demo({"DEMO_SECONDS": "2"}, tmp_path) as demo:
        rc = demo.proc.wait(START_TIMEOUT_S + STOP_TIMEOUT_S)
        time.sleep(0.2)  # the reader thread takes the last lines
    assert rc == 0, demo.output
    assert_pages_shown(demo)
    # DEMO_SECONDS counts from the "after" page on
    ran = demo.time_of("stopping (DEMO_SECONDS=2 elapsed)") - demo.time_of(PERSONAL_PAGE)
    assert 1.8 <= ran < 10, ran
    assert_all_stopped(demo)


def test_sigint_after_the_pages_stops_everything_cleanly(tmp_path: Path) -> None:
    with running_demo({}, tmp_path) as demo:
        if not demo.after_page.wait(START_TIMEOUT_S):
            pytest.fail(f"no 'after' page within {START_TIMEOUT_S}s:\n{demo.output}")
        assert demo.proc.poll() is None  # without DEMO_SECONDS it keeps running
        assert_curl_lines_work(demo)
        demo.proc.send_signal(signal.SIGINT)  # the demo only, as `kill -INT <pid>` does
        sent = time.monotonic()
        rc = demo.proc.wait(STOP_TIMEOUT_S)
        stop_s = time.monotonic() - sent
        time.sleep(0.2)
    assert rc == 0, demo.output  # documented: a clean stop on Ctrl-C exits 0
    assert_pages_shown(demo)
    assert "stopping (SIGINT)" in demo.output
    assert stop_s < 30, stop_s
    assert_all_stopped(demo)


def test_sigint_during_start_up_leaves_no_process_behind(tmp_path: Path) -> None:
    with running_demo({}, tmp_path) as demo:
        if not demo.started.wait(START_TIMEOUT_S):
            pytest.fail(f"the demo did not start its processes:\n{demo.output}")
        demo.proc.send_signal(signal.SIGINT)  # while the worker and server are starting
        rc = demo.proc.wait(STOP_TIMEOUT_S)
        time.sleep(0.2)
    assert rc == 0, demo.output
    assert "stopping (SIGINT)" in demo.output and AFTER_PAGE not in demo.output
    assert_all_stopped(demo, simulated=False)
