"""The soak's pure parts: memory growth figures and process-tree RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.soak import MAX_GROWTH, growth, rss_kib


def test_growth_is_relative_and_covers_memory_figures_only() -> None:
    start = {"worker_rss_kib": 1000, "redis_used_memory": 200, "redis_keys": 10}
    end = {"worker_rss_kib": 1150, "redis_used_memory": 210, "redis_keys": 99}
    assert growth(start, end) == {"worker_rss_kib": 0.15, "redis_used_memory": 0.05}
    assert growth(start, end)["worker_rss_kib"] >= MAX_GROWTH


def test_rss_counts_a_process_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone = next(int(line.split()[1]) for line in
                     Path("/proc/self/status").read_text().splitlines()
                     if line.startswith("VmRSS:"))
        kid = rss_kib(child.pid)
        assert kid > 0
        assert rss_kib(os.getpid()) >= alone + kid - 1024  # the tree: this process + child
    finally:
        child.kill()
        child.wait()
    assert rss_kib(child.pid) == 0
