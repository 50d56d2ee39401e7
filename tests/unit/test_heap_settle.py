"""The collector settings of the worker and of the server: what a settle freezes, the
thresholds it sets, that cycles are still freed, and that the server freezes its compiled
pages every :data:`~serving.home.FREEZE_EVERY` compiles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serving import home
from streams import worker

SETTLES = pytest.mark.parametrize(("settle", "thresholds"), [
    (worker.settle_heap, worker.GC_THRESHOLDS), (home.settle_heap, home.GC_THRESHOLDS)],
    ids=["worker", "server"])


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
    """Ids of every object a collection would walk."""
    return {id(o) for generation in range(3) for o in gc.get_objects(generation)}


@SETTLES
def test_a_settle_freezes_what_is_alive_and_sets_the_thresholds(
        restored_collector: None, settle: Callable[[], None],
        thresholds: tuple[int, int, int]) -> None:
    kept = [Node() for _ in range(100)]
    settle()
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() >= len(kept)
    walked = _walked()
    assert not any(id(n) in walked for n in kept)  # no collection walks them any more


@SETTLES
def test_cycles_made_after_a_settle_are_still_collected(
        restored_collector: None, settle: Callable[[], None],
        thresholds: tuple[int, int, int]) -> None:
    settle()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_the_server_freezes_compiled_pages_every_freeze_every_compiles(
        restored_collector: None) -> None:
    state = home.HomeState(max_plans=10 * home.FREEZE_EVERY)
    plans: list[Any] = [Node() for _ in range(home.FREEZE_EVERY)]
    for i, plan in enumerate(plans[:-1]):
        state.put(f"p{i}", plan)
    walked = _walked()
    assert all(id(p) in walked for p in plans[:-1])  # not yet
    state.put("last", plans[-1])
    walked = _walked()
    assert not any(id(p) in walked for p in plans)
