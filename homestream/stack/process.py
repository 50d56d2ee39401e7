"""Run a child process and wait for a condition: the one way the stack, the demo, the
evaluation, the bench and the integration tests start workers, servers and brokers.

:class:`Child` is a process with its own log file (stdout and stderr), started in its own
process group (a terminal's Ctrl-C reaches the parent only, which stops its children in order:
a broker killed before the worker would leave the worker hanging). :func:`wait_for` polls a
condition until it holds, failing early when a watched child exits and with a
:class:`WaitTimeout` naming what it waited for (and the children's log tails) when time runs out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: The project root: ``python -m`` children run from here.
ROOT = Path(__file__).resolve().parents[2]


class ChildExited(RuntimeError):
    """A child process exited while it was expected to run."""


class WaitTimeout(TimeoutError):
    """A condition did not hold within its time limit."""


def log_tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a log file (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``), else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Child:
    """A child process logging to a file, stopped by :meth:`stop` (or leaving a ``with``).

    Parameters
    ----------
    argv
        The command line.
    name
        What to call it in errors (default: the program's name).
    env
        Variables added to this process's environment.
    log_path
        Where its output goes (default: a new temporary file).
    cwd
        Its working directory (default: the project root).
    """

    def __init__(self, argv: Sequence[str], *, name: str = "", env: Mapping[str, str] = {},
                 log_path: Path | None = None, cwd: Path | str = ROOT) -> None:
        self.name = name or Path(argv[0]).name
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"homestream-{self.name}-", suffix=".log")
            os.close(fd)
            log_path = Path(tmp)
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(list(argv), cwd=cwd, env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT,
                                         process_group=0)

    @classmethod
    def module(cls, module: str, env: Mapping[str, str] = {}, *,
               log_path: Path | None = None, name: str = "") -> Child:
        """``python -m module`` from the project root with this interpreter."""
        return cls([sys.executable, "-m", module], name=name or module, env=env,
                   log_path=log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def check_alive(self, doing: str = "") -> None:
        """Raise :class:`ChildExited` (with its exit code and log tail) if it has exited."""
        if self.proc.poll() is not None:
            during = f" while {doing}" if doing else ""
            raise ChildExited(f"{self.name} exited with {self.proc.returncode}{during}; "
                              f"log {self.log_path}:\n{self.tail()}")

    def cpu_s(self) -> float | None:
        """CPU seconds it has used so far (``None`` when not readable)."""
        return proc_cpu_s(self.proc.pid)

    def tail(self, n: int = 30) -> str:
        """The last ``n`` lines of its log."""
        return log_tail(self.log_path, n)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate it and wait; kill it if it has not stopped after ``timeout_s``. Stopping
        a stopped child does nothing."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, *,
             watch: Iterable[Child] = (), interval_s: float = 0.05,
             detail: Callable[[], str] | None = None) -> object:
    """Poll ``predicate`` until it returns something truthy and return that.

    Polls start 2 ms apart and back off to ``interval_s``. Raises :class:`ChildExited` as soon
    as a ``watch`` child exits, and :class:`WaitTimeout` after ``timeout_s``, naming ``what``,
    ``detail()`` (e.g. counters) and the watched children's log tails.
    """
    watched = list(watch)
    deadline = time.monotonic() + timeout_s
    delay = min(0.002, interval_s)
    while True:
        value = predicate()
        if value:
            return value
        for child in watched:
            child.check_alive(f"waiting for {what}")
        if time.monotonic() > deadline:
            parts = [f"timed out after {timeout_s:g}s waiting for {what}"]
            if detail is not None:
                parts.append(detail())
            parts += [f"{c.name} log {c.log_path}:\n{c.tail()}" for c in watched]
            raise WaitTimeout("\n".join(parts))
        time.sleep(delay)
        delay = min(interval_s, delay * 1.5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
        return True
    return False


def wait_for_port(port: int, timeout_s: float = 15.0, child: Child | None = None) -> None:
    """Block until something accepts connections on ``port``; fail early if ``child`` exits."""
    wait_for(lambda: port_open(port), timeout_s, f"a listener on 127.0.0.1:{port}",
             watch=() if child is None else (child,))
