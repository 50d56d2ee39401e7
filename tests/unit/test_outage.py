"""Riding out a Redis outage (streams.outage) and the processor's retries on a store that fails
like an unreachable Redis: pure unit tests, in-memory store, no sockets, no real waiting."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from features.store import InMemoryStore
from homestream.settings import ConfigError, Settings, load_settings
from streams.outage import Backoff, OutageStats, is_transient, retry_transient, skip_transient
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Play

TS = 1_700_000_000_000
codec = default_codec()


class Sleeps:
    """An injected ``sleep`` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(n: int, exc: BaseException, result: Any = "done"):
    """An async operation failing with ``exc`` ``n`` times, then returning ``result``."""
    calls = {"n": 0}

    async def op() -> Any:
        calls["n"] += 1
        if calls["n"] <= n:
            raise exc
        return result

    return op, calls


def test_backoff_doubles_up_to_its_cap_and_refuses_nonsense() -> None:
    b = Backoff(0.1, 1.0)
    assert [round(b.delay(a), 3) for a in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for bad in ((0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (0.1, 1.0, 0.5)):
        with pytest.raises(ValueError, match="backoff"):
            Backoff(*bad)


def test_outage_errors_are_told_from_bad_input() -> None:
    for exc in (RedisConnectionError("refused"), RedisTimeoutError("slow"),
                BusyLoadingError("loading"), ReadOnlyError("READONLY replica"),
                OutOfMemoryError("OOM command not allowed"),
                ConnectionRefusedError(111, "refused"), TimeoutError(),
                ResponseError("BUSY Redis is busy running a script. You can only call "
                              "SCRIPT KILL or SHUTDOWN NOSAVE.")):
        assert is_transient(exc), exc
    wrapped = RuntimeError("batch failed")
    wrapped.__cause__ = RedisConnectionError("reset")
    assert is_transient(wrapped)
    for exc in (ValueError("bad event"), KeyError("x"), RuntimeError("bug"),
                ResponseError("WRONGTYPE Operation against a key holding the wrong kind")):
        assert not is_transient(exc), exc


async def test_retry_waits_with_backoff_until_the_store_answers() -> None:
    op, calls = failing(4, RedisConnectionError("Error 111 connecting"))
    sleeps, stats = Sleeps(), OutageStats()
    ticks = iter([10.0, 12.5])
    got = await retry_transient(op, "event batch", Backoff(0.1, 0.3), stats, sleep=sleeps,
                                clock=lambda: next(ticks))
    assert got == "done" and calls["n"] == 5
    assert [round(w, 3) for w in sleeps.waits] == [0.1, 0.2, 0.3, 0.3]
    assert (stats.outages, stats.retries, stats.paused_s) == (1, 4, 2.5)


async def test_retry_lets_any_other_error_through_at_once() -> None:
    op, calls = failing(1, ValueError("a bug, not an outage"))
    sleeps = Sleeps()
    with pytest.raises(ValueError, match="a bug"):
        await retry_transient(op, "event batch", Backoff(), sleep=sleeps)
    assert calls["n"] == 1 and sleeps.waits == []


async def test_a_timer_skips_its_tick_during_an_outage_and_keeps_its_signature() -> None:
    stats = OutageStats()

    async def tick(app: object) -> str:
        raise RedisConnectionError("Error 111 connecting")

    wrapped = skip_transient(tick, stats)
    assert list(inspect.signature(wrapped).parameters) == ["app"]  # Faust passes the app
    assert await wrapped(object()) is None
    assert stats.skipped_ticks == 1

    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await skip_transient(broken)()


def test_a_backoff_whose_first_wait_exceeds_its_longest_names_both_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMESTREAM_OUTAGE_RETRY_INITIAL_S", "10")
    monkeypatch.setenv("HOMESTREAM_OUTAGE_RETRY_MAX_S", "1")
    with pytest.raises(ConfigError, match=r"HOMESTREAM_OUTAGE_RETRY_INITIAL_S.*"
                                          r"HOMESTREAM_OUTAGE_RETRY_MAX_S"):
        load_settings()


# -- the processor on a store that fails like an unreachable Redis ---------------------------

class FlakyStore(InMemoryStore):
    """An in-memory store whose ``commit_batch`` fails ``failures`` times with a connection
    error, before writing (``applied=False``: the transaction never reached Redis) or after
    (``applied=True``: it ran but the reply was lost, the ambiguous case)."""

    def __init__(self, failures: int, applied: bool) -> None:
        super().__init__()
        self.failures, self.applied = failures, applied

    async def commit_batch(self, states, trending, counters, art_due=()) -> None:
        if self.failures and self.applied:
            await super().commit_batch(states, trending, counters, art_due)
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        await super().commit_batch(states, trending, counters, art_due)


def batch(n: int, profiles: int = 3) -> list[RawMessage]:
    out = []
    for i in range(n):
        p = f"p{i % profiles}"
        ev = Play(event_id=f"e{i}", profile_id=p, event_ts_ms=TS + i, title_id=f"t{i % 12}",
                  action="progress", position_s=float(10 + i), duration_s=1200.0, country="US")
        out.append(RawMessage("events", 0, i, p.encode(), codec.encode_event(ev), TS + i))
    return out


async def processor_on(store: InMemoryStore) -> EventProcessor:
    await store.put_titles(make_titles(12))
    settings = Settings(row_length=5, clock_quorum=1, outage_retry_initial_s=0.001,
                        outage_retry_max_s=0.002)
    return EventProcessor(settings, store, MemoryDeadLetters(), clock=lambda: TS / 1000)


@pytest.mark.parametrize("applied", [False, True], ids=["not-committed", "reply-lost"])
async def test_a_batch_cut_short_by_an_outage_is_retried_and_applied_once(
        applied: bool) -> None:
    store = FlakyStore(failures=3, applied=applied)
    proc = await processor_on(store)
    report = await proc.process(batch(30))
    counters = await store.counters()
    assert counters["events_applied"] == 30  # once, whether or not the failed commit ran
    states = await store.load_profiles(["p0", "p1", "p2"])
    assert [states[p].n_events for p in ("p0", "p1", "p2")] == [10, 10, 10]
    # the retry that found the batch committed counts its events as duplicates
    assert report.duplicates == (30 if applied else 0)
    assert set(store.pages) == {"p0", "p1", "p2"}  # every member's page written
    assert proc.outage_stats.outages == 1 and proc.outage_stats.retries == 3
    # a redelivery of the same batch (the consumer's offset was not committed) changes nothing
    await proc.process(batch(30))
    assert (await store.counters())["events_applied"] == 30
    # the models learned the batch once (when the failed commit had not run) or, when it had
    # run, not from the retry: they went back to the last checkpoint (none here)
    clean = await processor_on(InMemoryStore())
    await clean.process(batch(30))
    learned = proc.model.n_learned + proc.cowatch.n_learned
    assert learned == (0 if applied else clean.model.n_learned + clean.cowatch.n_learned)


async def test_a_catalog_lost_by_the_store_is_written_back() -> None:
    store = InMemoryStore()
    proc = await processor_on(store)
    await proc.process(batch(3))
    store.catalog.clear()
    store.version = 0  # Redis restarted with an empty dataset
    await proc.refresh_default_pages()
    assert sorted(store.catalog) == sorted(t.title_id for t in make_titles(12))
    assert store.version == 1 and proc.catalog_version == 1
    assert proc.store_reset  # streams.rebuild reads the topics back
    assert store.default_pages  # and pages are assembled from it again


async def test_the_rebuilder_reads_the_topics_back_only_when_the_store_lost_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import rebuild

    titles = make_titles(3)
    reads: list[str] = []

    def read(settings: Settings, topic: str) -> list[RawMessage]:
        reads.append(topic)
        if "catalog" in topic:
            return [RawMessage(topic, 0, i, t.title_id.encode(), codec.encode_model(t), None)
                    for i, t in enumerate(titles)]
        return []

    monkeypatch.setattr(rebuild, "read_compacted", read)
    store = InMemoryStore()
    proc = await processor_on(store)
    await proc.start()
    rebuilder = rebuild.StoreRebuilder(proc.settings, proc)
    assert await rebuilder.check() == 0 and reads == []  # the store holds a catalog
    store.catalog.clear()
    store.version = 0
    await proc.refresh_catalog()  # a batch finds the catalog gone
    assert await rebuilder.check() == 3
    assert sorted(reads) == sorted(rebuilder.topics) and rebuilder.rebuilds == 1
    assert not proc.store_reset
    assert await rebuilder.check() == 0 and len(reads) == 2  # once per loss

    fresh = await processor_on(InMemoryStore())
    fresh.store.catalog.clear()
    fresh.store.version = 0  # a worker starting on a store that lost its dataset
    assert await rebuild.StoreRebuilder(fresh.settings, fresh).check() == 3
    assert sorted(fresh.store.catalog) == ["t0", "t1", "t2"]
