"""The soak's pure parts: memory growth figures and process-tree RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.soak import (
    MAX_GROWTH,
    MIN_PLAYER_SHARE,
    bytes_by_kind,
    growth,
    kind_growth,
    player_load,
    rss_kib,
    warmed_up,
)


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


class _FakeRedis:
    """``scan_iter`` and a pipeline of ``memory_usage`` over fixed key sizes."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes, self.asked = sizes, []

    def scan_iter(self, count: int = 0) -> list[bytes]:
        return [k.encode() for k in self.sizes]

    def pipeline(self, transaction: bool = True) -> _FakeRedis:
        return self

    def memory_usage(self, key: str, samples: int | None = None) -> None:
        self.asked.append(key)

    def execute(self) -> list[int]:
        return [self.sizes[k] for k in self.asked]


def test_redis_bytes_are_summed_by_kind_of_key_and_growth_by_kind() -> None:
    r = _FakeRedis({"hs:profile:a": 100, "hs:profile:b": 50, "hs:page:a": 7,
                    "hs:page:__default__:US": 3, "hs:stats": 1})
    kinds = bytes_by_kind(r, "hs:")
    assert kinds == {"page": {"keys": 1, "bytes": 7}, "page:__default__": {"keys": 1, "bytes": 3},
                     "profile": {"keys": 2, "bytes": 150}, "stats": {"keys": 1, "bytes": 1}}
    later = {**kinds, "profile": {"keys": 2, "bytes": 180}, "artwork": {"keys": 1, "bytes": 9}}
    assert kind_growth({"redis_bytes_by_kind": kinds}, {"redis_bytes_by_kind": later}) == {
        "artwork": 9, "page": 0, "page:__default__": 0, "profile": 30, "stats": 0}


def test_the_warm_up_ends_when_redis_memory_is_flat_over_the_window() -> None:
    assert not warmed_up([])
    assert not warmed_up([(0, 100), (30, 100)])  # no sample a window old yet
    assert warmed_up([(0, 100), (30, 100), (60, 101)])
    assert not warmed_up([(0, 100), (30, 110), (60, 130), (90, 131)])  # 110 -> 131 in 60 s


def test_the_load_counts_the_served_pages_impressions_in_half_the_throughput() -> None:
    # players and impressions together are half of what the worker measured
    assert player_load(5000, 90, 20) + 90 * 20 == 2500
    assert player_load(5000, 0, 20) == 2500
    # impressions alone past half: players keep a floor, the soak still has player traffic
    assert player_load(5000, 200, 20) == 5000 * MIN_PLAYER_SHARE
