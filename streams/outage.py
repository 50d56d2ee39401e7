"""Riding out a Redis outage: which errors are an outage, retrying with backoff, skipping a tick.

A worker whose Redis stops (or restarts, or is unreachable for a while) must neither crash nor
drop the batch it holds: the batch is retried, whole, with exponential backoff until Redis
answers, and the worker takes no new batch meanwhile (the agent is busy with this one, so the
consumer pauses). Retrying the whole batch keeps exactly-once: a batch's states, dedupe ids,
trending and counters are committed in one transaction, so after an outage that cut a batch
short either nothing of it was committed (it applies now) or all of it was (its events are
duplicates now, counted as such, and their members' pages are rendered again). Timers (model
checkpoints, artwork settling, queued and default pages) skip a tick instead: the next tick
does the same work.

Pure: no I/O here; sleeping is injected, so the tests run without waiting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors that mean "the store cannot take writes now", not "this input is bad": Redis refused,
#: reset or timed out a connection, is still loading its dataset after a restart, is a replica
#: during a failover (READONLY, MASTERDOWN), or is full (OOM: the worker waits until memory is
#: freed rather than lose the batch). A transaction failing with any of them ran nothing.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, MasterDownError,
    OutOfMemoryError, TryAgainError, ClusterDownError, ConnectionError, TimeoutError)


#: Error replies that mean "Redis cannot serve now" although redis-py has no class for them:
#: a script running past its time limit (``BUSY``) blocks every other command until it ends.
TRANSIENT_REPLIES = ("BUSY ",)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error that caused it) is an outage worth retrying."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, TRANSIENT_ERRORS) or (
                isinstance(cur, ResponseError) and str(cur).startswith(TRANSIENT_REPLIES)):
            return True
        seen.add(id(cur))
        cur = cur.__cause__
    return False


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial_s``, then ``factor`` times more each attempt, at most
    ``max_s`` (no jitter: one worker retries one batch, there is no herd to spread)."""

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 < self.initial_s <= self.max_s or self.factor < 1.0:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s and factor >= 1, got "
                             f"{self.initial_s}, {self.max_s}, {self.factor}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))


@dataclass
class OutageStats:
    """What riding out outages cost so far (for logs and metrics)."""

    outages: int = 0
    retries: int = 0
    skipped_ticks: int = 0
    paused_s: float = 0.0


async def retry_transient(op: Callable[[], Awaitable[T]], what: str, backoff: Backoff,
                          stats: OutageStats | None = None,
                          sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                          clock: Callable[[], float] = time.monotonic) -> T:
    """Run ``op`` until it returns, retrying (forever, with ``backoff``) while it fails with an
    outage error (:func:`is_transient`); any other error propagates at once. ``what`` names
    the work in the log lines: one warning when the outage starts, one line when it ends.

    There is deliberately no giving up, not even when the worker stops: Faust acknowledges a
    ``take_events`` batch whenever the agent's loop body exits, by an error or a cancellation
    too, and the shutdown commits acknowledged offsets, so a batch given up would be lost.
    A worker stopped during an outage holds its batch until Redis answers or it is killed;
    killed, its batch is read again by the next worker (and applied once, by event id).
    """
    attempt, started = 0, None
    while True:
        try:
            result = await op()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            wait = backoff.delay(attempt)
            if started is None:
                started = clock()
                if stats is not None:
                    stats.outages += 1
                log.warning("%s: store unreachable (%s: %s); pausing and retrying with "
                            "backoff (%.1f s up to %.1f s)", what, type(exc).__name__, exc,
                            wait, backoff.max_s)
            else:
                log.debug("%s: retry %d failed (%s); next in %.1f s", what, attempt,
                          type(exc).__name__, wait)
            if stats is not None:
                stats.retries += 1
            await sleep(wait)
            continue
        if started is not None:
            paused = clock() - started
            if stats is not None:
                stats.paused_s += paused
            log.warning("%s: store reachable again after %.1f s and %d retries; resumed",
                        what, paused, attempt)
        return result


def skip_transient(fun: Callable[..., Awaitable[Any]], stats: OutageStats | None = None
                   ) -> Callable[..., Awaitable[Any]]:
    """``fun`` (a timer's body) that logs and returns ``None`` when it fails with an outage
    error instead of raising (a timer raising stops the whole worker); the next tick retries.
    The wrapper keeps ``fun``'s signature (Faust inspects it)."""

    @functools.wraps(fun)
    async def ride_out(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fun(*args, **kwargs)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if stats is not None:
                stats.skipped_ticks += 1
            log.warning("%s skipped: store unreachable (%s: %s)",
                        getattr(fun, "__name__", fun), type(exc).__name__, exc)
            return None

    return ride_out
