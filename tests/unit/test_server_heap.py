"""The server's collector settings: what a settle freezes, the thresholds it sets, that cycles
are still freed, and that compiled pages are frozen every :data:`FREEZE_EVERY` compiles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from serving.home import FREEZE_EVERY, GC_THRESHOLDS, HomeState, settle_heap


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


def _walked() -> set[int]:
    return {id(o) for generation in range(3) for o in gc.get_objects(generation)}


def test_settle_heap_freezes_what_is_alive_and_sets_the_thresholds(
        restored_collector: None) -> None:
    kept = [Node() for _ in range(100)]
    settle_heap()
    assert gc.get_threshold() == GC_THRESHOLDS
    walked = _walked()
    assert not any(id(n) in walked for n in kept)


def test_cycles_made_after_a_settle_are_still_collected(restored_collector: None) -> None:
    settle_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_compiled_pages_are_frozen_every_freeze_every_compiles(
        restored_collector: None) -> None:
    home = HomeState(max_plans=10 * FREEZE_EVERY)
    plans: list[Any] = [Node() for _ in range(FREEZE_EVERY)]
    for i, plan in enumerate(plans[:-1]):
        home.put(f"p{i}", plan)
    walked = _walked()
    assert all(id(p) in walked for p in plans[:-1])  # not yet
    home.put("last", plans[-1])
    walked = _walked()
    assert not any(id(p) in walked for p in plans)
