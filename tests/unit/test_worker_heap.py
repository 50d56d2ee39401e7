"""The worker's collector settings: what start-up freezes and that cycles are still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.worker import GC_THRESHOLDS, settle_heap


class Node:
    """A container that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settle_heap_freezes_what_is_alive_and_raises_the_thresholds(
        restored_collector: None) -> None:
    kept = [Node() for _ in range(100)]
    settle_heap()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() >= len(kept)
    walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    assert not any(id(n) in walked for n in kept)  # no collection walks them any more


def test_cycles_made_after_start_up_are_still_collected(restored_collector: None) -> None:
    settle_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
