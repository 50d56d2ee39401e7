"""Unit tests of the player producer client and the ``homestream`` CLI, with an in-process
stand-in for confluent-kafka's Producer (no sockets)."""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

import homestream.player.producer as producer_mod
from homestream.player import cli
from homestream.player.interrupts import InterruptGuard
from homestream.player.producer import (
    DeliveryFailure,
    InvalidEvent,
    PlayerProducer,
    ProducerError,
    parse_event,
)
from homestream.settings import Settings
from topics.codec import BATCH_SCHEMA, default_codec
from topics.models import Event, Play, Scroll

TS = 1_700_000_000_000
SETTINGS = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.",
                    producer_linger_ms=7, producer_delivery_timeout_ms=4321)


class FakeMessage:
    def __init__(self, topic: str, key: bytes, value: bytes) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class FakeProducer:
    """Records produced messages; delivery reports are served on poll/flush.

    ``buffer_errors`` makes the next produce calls raise BufferError; ``fail_keys`` makes
    deliveries of those keys fail; ``hold`` keeps reports back (a flush that times out);
    ``max_value_bytes`` rejects larger values as librdkafka does.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.messages: list[FakeMessage] = []
        self.pending: list[tuple[Callable[[Any, Any], None], FakeMessage]] = []
        self.buffer_errors = 0
        self.polls = 0
        self.fail_keys: set[bytes] = set()
        self.hold = False
        self.max_value_bytes: int | None = None
        self.closed = False

    def produce(self, topic: str, key: bytes, value: bytes,
                on_delivery: Callable[[Any, Any], None]) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("Local: Queue full")
        if self.max_value_bytes is not None and len(value) > self.max_value_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        msg = FakeMessage(topic, key, value)
        self.messages.append(msg)
        self.pending.append((on_delivery, msg))

    def poll(self, timeout: float = 0.0) -> int:
        self.polls += 1
        if self.hold:
            return 0
        served, self.pending = self.pending, []
        for cb, msg in served:
            err = KafkaError(KafkaError._MSG_TIMED_OUT) if msg.key() in self.fail_keys else None
            cb(err, msg)
        return len(served)

    def flush(self, timeout: float | None = None) -> int:
        self.poll(0)
        return len(self.pending)

    def close(self) -> bool:
        self.closed = True
        return True


def make(**kwargs: Any) -> tuple[PlayerProducer, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[0]

    kwargs.setdefault("exit_flush_timeout_s", None)  # no flushes of fakes at pytest's exit
    p = PlayerProducer(SETTINGS, client_factory=factory, **kwargs)
    return p, made[0]


def scroll(profile: str, i: int) -> Scroll:
    return Scroll(event_id=f"{profile}-e{i}", profile_id=profile, event_ts_ms=TS + i, row=i)


def play_dict(**over: Any) -> dict[str, Any]:
    d = {"type": "play", "event_id": "e1", "profile_id": "p1", "event_ts_ms": TS,
         "title_id": "t1", "action": "progress", "position_s": 30.0, "duration_s": 600.0}
    d.update(over)
    return d


# -- parse_event ---------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "expected"), [
    (play_dict(position_s=-1), "Play.position_s: Input should be greater than or equal to 0"),
    (play_dict(event_ts_ms=1_700_000_000),
     "Play.event_ts_ms: Input should be greater than or equal to 1000000000000"),
    (play_dict(action="pause"), "Play.action: Input should be 'start', 'progress' or 'stop'"),
    (play_dict(bogus=1), "Play.bogus: Extra inputs are not permitted"),
    ({k: v for k, v in play_dict().items() if k != "title_id"}, "Play.title_id: Field required"),
    (play_dict(position_s=900.0), "Play: Value error, position_s (900.0) is beyond duration_s"),
    ({"type": "feedback", "event_id": "e", "profile_id": "p", "event_ts_ms": TS,
      "title_id": "t", "kind": "stars"}, "Feedback: Value error, stars must be given"),
    ({"event_id": "e1"}, "type: missing; expected one of play, impression"),
    ({"type": "pause"}, "type: unknown event type 'pause'"),
    (["not", "a", "dict"], "event must be an object with a 'type' key, got list"),
])
def test_parse_event_names_the_bad_field(data: Any, expected: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(data)
    assert str(info.value).startswith(expected)


def test_parse_event_accepts_every_type_and_schema_names() -> None:
    assert parse_event(play_dict()) == Play(**{k: v for k, v in play_dict().items()
                                               if k != "type"})
    assert isinstance(parse_event({**play_dict(), "type": "homestream.Play"}), Play)
    assert isinstance(parse_event({**play_dict(), "type": "PLAY"}), Play)
    base = {"event_id": "e", "profile_id": "p", "event_ts_ms": TS}
    for kind, extra in {
        "impression": {"request_id": "r", "title_id": "t", "row_id": "top", "row": 0,
                       "column": 1, "artwork_id": "a", "propensity": 0.5, "policy": "uniform"},
        "scroll": {"row": 2},
        "click": {"title_id": "t"},
        "feedback": {"title_id": "t", "kind": "thumbs_up"},
        "search": {"query": "space"},
    }.items():
        assert type(parse_event({"type": kind, **base, **extra})).__name__.lower() == kind


def test_send_rejects_invalid_events_without_buffering() -> None:
    p, fake = make()
    with pytest.raises(InvalidEvent, match=r"Play\.position_s"):
        p.send(play_dict(position_s=-5))
    with pytest.raises(InvalidEvent, match="not a player event type"):
        p.send(Event(event_id="e", profile_id="p", event_ts_ms=TS))
    assert p.buffered == 0
    assert p.flush_batches() == 0
    assert fake.messages == []


# -- batching ------------------------------------------------------------------------------
def test_config_comes_from_settings_and_extra_config_overrides() -> None:
    p, fake = make(extra_config={"message.timeout.ms": 1500, "compression.type": "none"})
    cfg = fake.config
    assert cfg["bootstrap.servers"] == "127.0.0.1:1"
    assert cfg["enable.idempotence"] is True and cfg["acks"] == "all"
    assert cfg["linger.ms"] == 7 and cfg["delivery.timeout.ms"] == 4321
    assert cfg["message.timeout.ms"] == 1500 and cfg["compression.type"] == "none"
    assert p.topic == "unit.player-events"


def test_flush_batches_sends_one_message_per_profile_keyed_by_profile() -> None:
    p, fake = make()
    events = [scroll("p1", 0), scroll("p2", 1), scroll("p1", 2), scroll("p3", 3),
              scroll("p1", 4)]
    p.send_many(events)
    assert fake.messages == [] and p.buffered == 5
    assert p.flush_batches() == 3
    codec = default_codec()
    by_key = {m.key(): m for m in fake.messages}
    assert set(by_key) == {b"p1", b"p2", b"p3"}
    assert all(m.topic() == "unit.player-events" for m in fake.messages)
    assert codec.decode(by_key[b"p1"].value())[0] == BATCH_SCHEMA
    assert codec.decode_events(by_key[b"p1"].value()) == [events[0], events[2], events[4]]
    # a lone event goes as a single-event message, not a batch of one
    assert codec.decode(by_key[b"p3"].value())[0] == "homestream.Scroll"
    assert codec.decode_events(by_key[b"p3"].value()) == [events[3]]
    assert p.flush_batches() == 0
    p.flush()
    assert (p.produced, p.delivered, p.delivered_events, p.failures) == (3, 3, 5, [])


def test_a_full_profile_batch_is_sent_immediately_and_splits_in_order() -> None:
    p, fake = make(max_batch_events=3)
    events = [scroll("p1", i) for i in range(7)]
    for i, ev in enumerate(events):
        p.send(ev)
        assert len(fake.messages) == (i + 1) // 3
    p.send(scroll("p2", 0))
    assert p.flush_batches() == 2
    codec = default_codec()
    p1 = [codec.decode_events(m.value()) for m in fake.messages if m.key() == b"p1"]
    assert [len(b) for b in p1] == [3, 3, 1]
    assert [e for b in p1 for e in b] == events


@hyp_settings(max_examples=60, deadline=None)
@given(profiles=st.lists(st.integers(0, 4), max_size=40), max_batch=st.integers(1, 6),
       flush_every=st.integers(1, 50))
def test_batching_keeps_every_event_once_in_per_profile_order(
        profiles: list[int], max_batch: int, flush_every: int) -> None:
    p, fake = make(max_batch_events=max_batch)
    sent = [scroll(f"p{k}", i) for i, k in enumerate(profiles)]
    for i, ev in enumerate(sent, start=1):
        p.send(ev)
        if i % flush_every == 0:
            p.flush_batches()
    p.flush()
    codec = default_codec()
    got: dict[str, list[Event]] = {}
    for m in fake.messages:
        batch = codec.decode_events(m.value())
        assert 1 <= len(batch) <= max_batch
        assert {e.profile_id for e in batch} == {m.key().decode()}
        got.setdefault(m.key().decode(), []).extend(batch)
    want: dict[str, list[Event]] = {}
    for ev in sent:
        want.setdefault(ev.profile_id, []).append(ev)
    assert got == want
    assert p.delivered_events == len(sent)


def test_threads_can_share_one_producer() -> None:
    p, fake = make(max_batch_events=7)

    def player(k: int) -> None:
        for i in range(200):
            p.send(scroll(f"p{k}", i))

    threads = [threading.Thread(target=player, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.flush()
    codec = default_codec()
    got: dict[str, list[Event]] = {}
    for m in fake.messages:
        got.setdefault(m.key().decode(), []).extend(codec.decode_events(m.value()))
    assert got == {f"p{k}": [scroll(f"p{k}", i) for i in range(200)] for k in range(6)}
    assert p.delivered_events == 1200


def test_max_batch_age_sends_waiting_batches_on_send_and_poll() -> None:
    p, fake = make(max_batch_age_s=0.0)
    p.send(scroll("p1", 0))
    assert len(fake.messages) == 1  # waited "long enough" already
    p2, fake2 = make(max_batch_age_s=3600.0)
    p2.send(scroll("p1", 0))
    p2.poll(0)
    assert fake2.messages == []


def test_local_queue_full_is_waited_out_not_dropped() -> None:
    p, fake = make()
    fake.buffer_errors = 3
    p.send(scroll("p1", 0))
    assert p.flush_batches() == 1
    assert fake.polls >= 3 and len(fake.messages) == 1
    p.flush()
    assert p.delivered_events == 1


def test_a_batch_too_large_for_the_broker_is_split() -> None:
    p, fake = make()
    events = [scroll("p1", i) for i in range(8)]
    p.send_many(events)
    fake.max_value_bytes = len(default_codec().encode_batch("p1", events[:3]))
    p.flush()
    decoded = [e for m in fake.messages for e in default_codec().decode_events(m.value())]
    assert decoded == events and len(fake.messages) >= 3
    assert p.failures == []


def test_a_message_the_broker_rejects_outright_is_a_failure() -> None:
    p, fake = make()
    fake.max_value_bytes = 10
    p.send(scroll("p1", 0))
    with pytest.raises(ProducerError, match="p1-e0"):
        p.flush()
    assert p.failures[0].event_ids == ["p1-e0"]


# -- delivery failures ---------------------------------------------------------------------
def test_delivery_failures_are_recorded_reported_and_raised_once() -> None:
    seen: list[DeliveryFailure] = []
    p, fake = make(on_failure=seen.append)
    fake.fail_keys = {b"p2"}
    p.send_many([scroll("p1", 0), scroll("p2", 1), scroll("p2", 2)])
    with pytest.raises(ProducerError) as info:
        p.flush()
    err = info.value
    assert "1 message(s) failed delivery" in str(err)
    assert "p2-e1, p2-e2" in str(err) and "timed out" in str(err)
    assert err.failures == p.failures == seen
    assert seen[0] == DeliveryFailure("unit.player-events", "p2", seen[0].error,
                                      ["p2-e1", "p2-e2"])
    assert (p.delivered, p.delivered_events) == (1, 1)
    p.flush()  # already reported: nothing new to raise
    assert len(p.failures) == 1


def test_flush_timeout_lists_undelivered_event_ids() -> None:
    p, fake = make()
    fake.hold = True
    p.send_many([scroll("p1", 0), scroll("p1", 1)])
    with pytest.raises(ProducerError, match=r"1 message\(s\) undelivered") as info:
        p.flush(timeout_s=0.01)
    assert info.value.undelivered_event_ids == ["p1-e0", "p1-e1"]
    assert p.in_flight == 1
    fake.hold = False
    p.flush()
    assert p.in_flight == 0 and p.delivered_events == 2


def test_context_manager_flushes_on_exit_and_closes() -> None:
    p, fake = make()
    with p:
        p.send(scroll("p1", 0))
    assert p.delivered_events == 1 and fake.closed
    with pytest.raises(RuntimeError, match="closed"):
        p.send(scroll("p1", 1))


def test_exit_with_an_exception_still_flushes_and_does_not_mask_it() -> None:
    p, fake = make()
    fake.fail_keys = {b"p1"}
    with pytest.raises(KeyError, match="boom") as info, p:
        p.send(scroll("p1", 0))
        raise KeyError("boom")
    assert len(fake.messages) == 1  # flushed although the block failed
    notes = getattr(info.value, "__notes__", [])
    assert any("p1-e0" in n and "ProducerError" in n for n in notes)


def test_exit_without_exception_raises_delivery_failures() -> None:
    p, fake = make()
    fake.fail_keys = {b"p1"}
    with pytest.raises(ProducerError, match="p1-e0"), p:
        p.send(scroll("p1", 0))
    assert not fake.closed  # client kept so flush can be retried


# -- flush at interpreter exit -------------------------------------------------------------
def test_an_open_producer_is_flushed_by_the_exit_hook_and_a_closed_one_is_not() -> None:
    left_open, fake_open = make(exit_flush_timeout_s=1.0)
    closed, _ = make(exit_flush_timeout_s=1.0)
    left_open.send(scroll("p1", 0))
    closed.close()
    assert left_open in producer_mod._OPEN_PRODUCERS
    assert closed not in producer_mod._OPEN_PRODUCERS  # close() unregisters
    assert producer_mod.flush_open_producers() >= 1
    assert fake_open.closed and left_open.delivered_events == 1
    assert left_open not in producer_mod._OPEN_PRODUCERS


def test_the_exit_hook_does_not_keep_producers_alive() -> None:
    p, fake = make(exit_flush_timeout_s=1.0)
    ref = weakref.ref(p)
    p.send(scroll("p1", 0))  # even with events buffered
    assert p in producer_mod._OPEN_PRODUCERS
    del p, fake  # the fake client refers back to the producer (its error_cb)
    gc.collect()
    assert ref() is None


def test_exit_flush_can_be_turned_off_and_failures_are_logged_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    off, _ = make()  # make() turns it off
    assert off not in producer_mod._OPEN_PRODUCERS
    failing, fake = make(exit_flush_timeout_s=1.0)
    fake.fail_keys = {b"p1"}
    failing.send(scroll("p1", 0))
    producer_mod.flush_open_producers()  # must not raise
    assert "p1-e0" in caplog.text and "still open at exit" in caplog.text


# -- InterruptGuard --------------------------------------------------------------------------
def test_interrupt_guard_holds_signals_inside_deferred_blocks() -> None:
    before = signal.getsignal(signal.SIGINT)
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), InterruptGuard((signal.SIGINT,)) as guard:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("finished the critical step")  # not interrupted half-way
        steps.append("after the block")  # never reached: raised on leaving the block
    assert steps == ["finished the critical step"]
    assert guard.received == signal.SIGINT and guard.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_interrupt_guard_raises_at_once_outside_deferred_and_once_with_raise_once() -> None:
    with InterruptGuard((signal.SIGTERM,), raise_once=True) as guard:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # not reached: the handler raises first
        os.kill(os.getpid(), signal.SIGTERM)  # the second one is ignored
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
    assert guard.exit_code == 143


# -- CLI -------------------------------------------------------------------------------------
@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    """Every PlayerProducer the CLI builds gets a FakeProducer; returns them."""
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[-1]

    monkeypatch.setattr(producer_mod, "Producer", factory)
    for var in ("HOMESTREAM_PARTITIONS", "HOMESTREAM_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    return made


def _lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def test_cli_produce_reports_invalid_lines_and_sends_the_rest(
        tmp_path: Any, fake_kafka: list[FakeProducer], capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(_lines(
        json.dumps(play_dict()),
        json.dumps(play_dict(event_id="e2", position_s=-1)),
        "",
        json.dumps({"type": "scroll", "event_id": "e3", "profile_id": "p2",
                    "event_ts_ms": TS, "row": 1}),
        "{not json",
    ))
    assert cli.main(["produce", "--file", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "line 2: Play.position_s: Input should be greater than or equal to 0" in err
    assert "line 5: invalid JSON" in err
    assert [ln.split(":")[0] for ln in err.splitlines() if ln.startswith("line ")] == [
        "line 2", "line 5"]
    assert "sent 2 events in 2 messages" in out
    (fake,) = fake_kafka
    assert sorted(m.key() for m in fake.messages) == [b"p1", b"p2"]


def test_cli_produce_from_stdin_all_valid_exits_0(
        monkeypatch: pytest.MonkeyPatch, fake_kafka: list[FakeProducer],
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(_lines(
        json.dumps(play_dict()), json.dumps(play_dict(event_id="e2")))))
    assert cli.main(["produce"]) == 0
    assert "sent 2 events in 1 messages" in capsys.readouterr().out


def test_cli_delivery_failure_exits_1(tmp_path: Any, fake_kafka: list[FakeProducer],
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def failing(config: dict[str, Any]) -> FakeProducer:
        fake = FakeProducer(config)
        fake.fail_keys = {b"p1"}
        return fake

    monkeypatch.setattr(producer_mod, "Producer", failing)
    path = tmp_path / "e.jsonl"
    path.write_text(_lines(json.dumps(play_dict())))
    assert cli.main(["produce", "-f", str(path)]) == 1
    assert "delivery failed" in capsys.readouterr().err


def test_cli_config_error_exits_2(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOMESTREAM_PARTITIONS", "zero")
    assert cli.main(["produce", "--file", "/nonexistent"]) == 2
    assert "HOMESTREAM_PARTITIONS" in capsys.readouterr().err


def test_cli_missing_entrypoint_module_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._entrypoint("no_such_pkg.worker", "run") is None
    assert "no_such_pkg.worker is not available" in capsys.readouterr().err


def test_cli_demo_passes_remaining_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    fake_demo = types.ModuleType("homestream.stack.demo")
    fake_demo.main = lambda argv: calls.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "homestream.stack.demo", fake_demo)
    assert cli.main(["demo", "--profiles", "5", "--fast"]) == 3
    assert calls == [["--profiles", "5", "--fast"]]


class InterruptingLines:
    """A stdin whose reading is interrupted (KeyboardInterrupt) after ``lines``."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __iter__(self) -> Any:
        yield from self.lines
        raise KeyboardInterrupt


def test_cli_produce_flushes_accepted_events_on_ctrl_c_and_exits_130(
        monkeypatch: pytest.MonkeyPatch, fake_kafka: list[FakeProducer],
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", InterruptingLines(
        [json.dumps(play_dict()) + "\n", json.dumps(play_dict(event_id="e2")) + "\n"]))
    assert cli.main(["produce"]) == 130
    out, err = capsys.readouterr()
    assert "interrupted: flushing 2 buffered event(s)" in err
    assert "sent 2 events in 1 messages" in out
    (fake,) = fake_kafka
    assert fake.closed and [m.key() for m in fake.messages] == [b"p1"]


def test_cli_produce_reports_events_undelivered_after_ctrl_c(
        monkeypatch: pytest.MonkeyPatch, fake_kafka: list[FakeProducer],
        capsys: pytest.CaptureFixture[str]) -> None:
    def holding(config: dict[str, Any]) -> FakeProducer:
        fake = FakeProducer(config)
        fake.hold = True  # the broker never answers
        return fake

    monkeypatch.setattr(producer_mod, "Producer", holding)
    monkeypatch.setattr(sys, "stdin", InterruptingLines([json.dumps(play_dict()) + "\n"]))
    assert cli.main(["produce", "--flush-timeout", "0.1"]) == 130
    out, err = capsys.readouterr()
    assert "1 message(s) undelivered after 0.1s (events e1)" in err
    assert "1 event(s) not delivered" in err
    assert "sent 0 events in 0 messages" in out


def test_cli_produce_finishes_the_line_a_sigint_arrives_in(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    made: list[FakeProducer] = []

    class SignallingProducer(FakeProducer):
        def produce(self, topic: str, key: bytes, value: bytes,
                    on_delivery: Callable[[Any, Any], None]) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the event is being handed over
            super().produce(topic, key, value, on_delivery)

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(SignallingProducer(config))
        return made[-1]

    monkeypatch.setattr(producer_mod, "Producer", factory)
    path = tmp_path / "e.jsonl"
    path.write_text(_lines(*(json.dumps(play_dict(event_id=f"e{i}")) for i in range(3))))
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["produce", "--batch", "1", "-f", str(path)]) == 130
    assert signal.getsignal(signal.SIGINT) is before
    # the first line was accepted whole and delivered; reading stopped there
    assert [default_codec().decode_events(m.value())[0].event_id
            for m in made[0].messages] == ["e0"]
    assert "sent 1 events in 1 messages" in capsys.readouterr().out
