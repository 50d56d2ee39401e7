"""What the worker's memory is made of, logged every ``HOMESTREAM_WORKER_MEMORY_LOG_S``.

One JSON log line per tick: the process' resident memory (and its high-water mark), the C
allocator's view (glibc ``mallinfo2``: bytes in use, bytes free but kept in its heap, bytes
in its own ``mmap``-ed blocks), the objects Python's allocator holds, the cyclic collector's
counts and collections, the batches since the last tick (largest in messages and bytes) and
the sizes of the worker's own queues. With ``PYTHONTRACEMALLOC`` set it adds the lines of
code whose live allocations grew most since the last tick. It only observes: an operator
turns it on to see where a worker's RSS goes (``docs/hardening.md`` reads it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import logging
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streams.processor import RawMessage

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def malloc_info() -> dict[str, int]:
    """glibc's heap in KiB: ``heap`` obtained by ``brk``/arenas, ``in_use`` of it, ``free``
    kept by the allocator, ``mmapped`` large blocks; empty where ``mallinfo2`` is missing."""
    fn = getattr(_LIBC, "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"heap": m.arena // 1024, "in_use": m.uordblks // 1024,
            "free": m.fordblks // 1024, "mmapped": m.hblkhd // 1024}


def malloc_trim() -> bool:
    """Give the C allocator's free memory back to the system (glibc ``malloc_trim(0)``);
    whether any was released."""
    fn = getattr(_LIBC, "malloc_trim", None)
    return bool(fn(0)) if fn is not None else False


def proc_status() -> dict[str, int]:
    """The process' resident memory and its high-water mark, in KiB (``/proc/self/status``)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


class BatchSizes:
    """The batches seen since the last :meth:`take`: count, bytes, and the largest one (in
    bytes) by topic with the age of its oldest message."""

    def __init__(self) -> None:
        self.batches = self.bytes = self.max_messages = self.max_bytes = 0
        self.largest: dict[str, Any] = {}

    def observe(self, messages: Sequence[RawMessage], now_ms: float) -> None:
        """Count one batch of ``messages`` (keys and values), received at ``now_ms``."""
        by_topic: dict[str, list[int]] = {}
        oldest = now_ms
        for m in messages:
            entry = by_topic.setdefault(m.topic, [0, 0])
            entry[0] += 1
            entry[1] += len(m.value or b"") + len(m.key or b"")
            oldest = min(oldest, m.timestamp_ms or now_ms)
        nbytes = sum(b for _, b in by_topic.values())
        self.batches += 1
        self.bytes += nbytes
        self.max_messages = max(self.max_messages, len(messages))
        if nbytes > self.max_bytes:
            self.max_bytes = nbytes
            self.largest = {"by_topic": by_topic, "oldest_age_s": round(
                (now_ms - oldest) / 1000, 1)}

    def take(self) -> dict[str, Any]:
        """The figures since the last call, then start again."""
        out = dict(vars(self))
        self.__init__()  # type: ignore[misc]
        return out


class MemoryProbe:
    """Builds the log line; ``sizes`` returns the worker's own queue sizes by name."""

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.sizes = sizes
        self.batches = BatchSizes()
        self._snapshot: tracemalloc.Snapshot | None = None

    def report(self) -> dict[str, Any]:
        """One tick's figures (see the module's docstring)."""
        out: dict[str, Any] = {"proc_kib": proc_status(), "malloc_kib": malloc_info(),
                               "py_blocks": sys.getallocatedblocks(),
                               "gc_count": gc.get_count(),
                               "gc_collections": [s["collections"] for s in gc.get_stats()],
                               "gc_objects": [len(gc.get_objects(g)) for g in range(3)],
                               "gc_frozen": gc.get_freeze_count(),
                               "batches": self.batches.take(), "queues": self.sizes()}
        if tracemalloc.is_tracing():
            out["traced_kib"] = tracemalloc.get_traced_memory()[0] // 1024
            out["traced_growth"] = self._traced_growth()
        return out

    def _traced_growth(self, top: int = 12) -> list[str]:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        before, self._snapshot = self._snapshot, snap
        if before is None:
            return []
        return [f"{d.traceback[0].filename}:{d.traceback[0].lineno} "
                f"{d.size_diff // 1024:+d} KiB ({d.size // 1024} KiB, {d.count} blocks)"
                for d in snap.compare_to(before, "lineno")[:top]]

    def log(self) -> None:
        """Log one tick's figures as a JSON line."""
        log.info("worker memory %s", json.dumps(self.report()))
