"""The worker consumer's eager hand-over (``TunedConsumer.wait_first``): every case gives what
mode's ``Service.wait_first`` gives, and a callback that finishes at once makes no task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from mode.services import Service

from features.store import InMemoryStore
from homestream.settings import Settings
from streams.app import build_app
from streams.processor import MemoryDeadLetters, MemoryPageUpdates
from streams.transport import TunedConsumer, _Resumed


@pytest.fixture
async def consumer() -> TunedConsumer:
    """The worker app's consumer, made on the test's loop (its tasks run there)."""
    app = build_app(Settings(app_id="wait-first-test"), InMemoryStore(), MemoryDeadLetters(),
                    MemoryPageUpdates())
    assert isinstance(app.consumer, TunedConsumer)
    return app.consumer


Factory = Callable[[], tuple[Coroutine[Any, Any, Any], Coroutine[Any, Any, Any]]]


async def _both(consumer: TunedConsumer, make: Factory, after: Callable[[], None] = lambda: None
                ) -> list[tuple[str, Any]]:
    """The outcome (results, or the exception) of the tuned and of the original wait_first on
    the same pair of coroutines, ``after`` run once both are under way."""
    outcomes = []
    for wait_first in (consumer.wait_first,
                       lambda *c: Service.wait_first(consumer, *c)):
        task = asyncio.ensure_future(wait_first(*make()))
        for _ in range(3):
            await asyncio.sleep(0)
        after()
        try:
            got = await task
            outcomes.append(("results", got.results, got.stopped))
        except Exception as exc:  # the same exception both ways
            outcomes.append(("raised", type(exc), str(exc)))
    return outcomes


async def test_a_callback_that_finishes_at_once_needs_no_task(consumer: TunedConsumer) -> None:
    async def callback() -> int:
        return 42

    flow = asyncio.Event()
    cb, suspended = callback(), flow.wait()
    before = len(asyncio.all_tasks())
    tasks: list[int] = []
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    loop.set_task_factory(lambda lp, coro, **kw: tasks.append(1) or asyncio.Task(coro, loop=lp))
    try:
        got = await consumer.wait_first(cb, suspended)
    finally:
        loop.set_task_factory(factory)
    assert got.results == [42] and got.done == [cb] and not got.stopped
    assert tasks == [] and len(asyncio.all_tasks()) == before
    assert suspended.cr_frame is None  # closed, never left pending


async def test_same_outcome_as_mode_for_a_finished_callback(consumer: TunedConsumer) -> None:
    async def callback() -> str:
        return "done"

    flow = asyncio.Event()
    outcomes = await _both(consumer, lambda: (callback(), flow.wait()))
    assert outcomes[0] == outcomes[1] == ("results", ["done"], False)


async def test_a_waiting_callback_is_continued_and_its_result_returned(
        consumer: TunedConsumer) -> None:
    gate = asyncio.Event()
    flow = asyncio.Event()

    async def callback() -> int:
        await gate.wait()
        await asyncio.sleep(0)
        return 7

    outcomes = await _both(consumer, lambda: (callback(), flow.wait()), gate.set)
    assert outcomes[0] == outcomes[1] == ("results", [7], False)


async def test_a_suspended_flow_wins_over_a_waiting_callback_which_is_cancelled(
        consumer: TunedConsumer) -> None:
    cancelled: list[bool] = []
    flow = asyncio.Event()

    async def callback() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    outcomes = await _both(consumer, lambda: (callback(), flow.wait()), flow.set)
    assert outcomes[0] == outcomes[1] == ("results", [True], False)
    await asyncio.sleep(0)  # the cancellations reach both callbacks
    assert cancelled == [True, True]


@pytest.mark.parametrize("waits_first", [False, True])
async def test_a_callback_raising_raises_the_same(consumer: TunedConsumer,
                                                  waits_first: bool) -> None:
    flow = asyncio.Event()

    async def callback() -> None:
        if waits_first:
            await asyncio.sleep(0)
        raise ValueError("bad message")

    outcomes = await _both(consumer, lambda: (callback(), flow.wait()))
    assert outcomes[0] == outcomes[1] == ("raised", ValueError, "bad message")


async def test_while_the_flow_is_suspended_the_original_path_runs(
        consumer: TunedConsumer) -> None:
    stepped: list[bool] = []

    async def callback() -> None:
        stepped.append(True)

    consumer.suspend_flow.set()
    call = consumer.wait_first(callback(), consumer.suspend_flow.wait())
    assert stepped == []  # not run before the call is awaited, as mode's
    got = await call
    assert set(got.results) == {None, True}  # both finished: mode's answer
    consumer.suspend_flow.clear()


async def test_a_resumed_coroutine_gets_what_the_task_throws_and_is_closed_with_it() -> None:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = []

    async def victim() -> str:
        fut = loop.create_future()  # each its own (no task here resets a future's blocking)
        futures.append(fut)
        try:
            await fut
        except ValueError as exc:
            return f"caught {exc}"
        return "not thrown"

    coro = victim()
    steps = _Resumed(coro, coro.send(None)).__await__()
    assert next(steps) is futures[0]  # the task waits on what the first step waited on
    with pytest.raises(StopIteration) as stop:
        steps.throw(ValueError("x"))
    assert stop.value.value == "caught x"

    closed = victim()
    steps = _Resumed(closed, closed.send(None)).__await__()
    next(steps)
    steps.close()
    assert closed.cr_frame is None
