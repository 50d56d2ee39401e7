"""The producer client, catalog publishing and the CLI against a real Kafka-protocol broker."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer

from homestream.player import cli
from homestream.player.producer import DeliveryFailure, PlayerProducer, ProducerError
from homestream.player.simulator import (
    PlayerSimulator,
    publish_catalog,
    run_simulation,
    synthetic_catalog,
    synthetic_profiles,
)
from homestream.settings import Settings
from homestream.stack.local import ROOT, free_port
from topics.codec import BATCH_SCHEMA, default_codec
from topics.models import DeadLetter, Event, Feedback, Play, Scroll
from topics.registry import ensure_topics, topic_specs

TS = 1_760_000_000_000


def consume(settings: Settings, topic: str, expect: int, timeout_s: float = 30.0) -> list[Message]:
    """Messages of ``topic`` from the beginning, through a consumer group, until ``expect``."""
    c = Consumer({
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
        # anything beyond what was expected would be a duplicate or a stray message
        extra = c.poll(1.0)
        assert extra is None, f"unexpected extra message at offset {extra.offset()}"
    finally:
        c.close()
    assert len(out) == expect, f"got {len(out)} of {expect} messages from {topic}"
    return out


def env_for(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``load_settings()`` (as the CLI calls it) at the test's broker and topics."""
    for name, value in {
        "BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "TOPIC_PREFIX": settings.topic_prefix,
        "PARTITIONS": str(settings.partitions),
    }.items():
        monkeypatch.setenv(f"HOMESTREAM_{name}", value)


def test_events_round_trip_keyed_by_profile_batched_and_single(settings: Settings) -> None:
    ensure_topics(settings)
    p1 = [Scroll(event_id=f"a{i}", profile_id="p1", event_ts_ms=TS + i, row=i)
          for i in range(5)]
    p2 = [Play(event_id="b0", profile_id="p2", event_ts_ms=TS, title_id="t1", action="start",
               position_s=0.0, duration_s=3600.0, device="tv", country="GB")]
    p3 = [Feedback(event_id=f"c{i}", profile_id="p3", event_ts_ms=TS + i, title_id="t2",
                   kind="stars", stars=i + 1) for i in range(3)]
    with PlayerProducer(settings, max_batch_events=2) as producer:
        for a, b in zip(p1, [*p3, None, None], strict=True):
            producer.send(a)
            if b is not None:
                producer.send(b.model_dump() | {"type": "feedback"})
        producer.send(p2[0])
    # p1: 5 events in batches of 2 -> 3 messages; p3: 3 -> 2; p2: 1 single-event message
    assert (producer.delivered, producer.delivered_events, producer.failures) == (6, 9, [])

    codec = default_codec()
    topic = topic_specs(settings)["player_events"].name
    got: dict[str, list[Event]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    kinds: dict[str, list[str]] = defaultdict(list)
    for m in sorted(consume(settings, topic, expect=6), key=lambda m: m.offset()):
        key = m.key().decode()
        events = codec.decode_events(m.value())
        assert {e.profile_id for e in events} == {key}
        got[key].extend(events)
        partitions[key].add(m.partition())
        kinds[key].append(codec.decode(m.value())[0])
    assert got == {"p1": p1, "p2": p2, "p3": p3}
    assert all(len(ps) == 1 for ps in partitions.values())  # one partition per profile
    assert kinds["p2"] == ["homestream.Play"]
    assert kinds["p1"] == [BATCH_SCHEMA, BATCH_SCHEMA, "homestream.Scroll"]


def test_delivery_failure_is_raised_with_event_ids() -> None:
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="nowhere.")
    seen: list[DeliveryFailure] = []
    producer = PlayerProducer(dead, on_failure=seen.append,
                              extra_config={"message.timeout.ms": 1500})
    producer.send_many([
        Scroll(event_id="lost-1", profile_id="p1", event_ts_ms=TS, row=1),
        Scroll(event_id="lost-2", profile_id="p1", event_ts_ms=TS + 1, row=2),
        Scroll(event_id="lost-3", profile_id="p9", event_ts_ms=TS, row=1),
    ])
    started = time.monotonic()
    with pytest.raises(ProducerError) as info:
        producer.flush(timeout_s=20)
    assert time.monotonic() - started < 15
    text = str(info.value)
    assert "2 message(s) failed delivery" in text
    assert "lost-1, lost-2" in text and "lost-3" in text
    assert sorted(i for f in info.value.failures for i in f.event_ids) == [
        "lost-1", "lost-2", "lost-3"]
    assert seen == producer.failures == info.value.failures
    assert all(f.topic == "nowhere.player-events" for f in seen)
    assert producer.delivered == 0


def test_context_exit_reports_failures_without_masking_the_error() -> None:
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(ZeroDivisionError) as info, PlayerProducer(
            dead, extra_config={"message.timeout.ms": 1500}) as producer:
        producer.send(Scroll(event_id="gone", profile_id="p1", event_ts_ms=TS, row=0))
        _ = 1 / 0
    assert any("gone" in note for note in info.value.__notes__)
    assert producer.failures[0].event_ids == ["gone"]


def test_publish_catalog_round_trip(settings: Settings) -> None:
    ensure_topics(settings)
    titles = synthetic_catalog(25, seed=5, now=dt.date(2026, 1, 1))
    assert publish_catalog(settings, titles) == 25
    codec = default_codec()
    msgs = consume(settings, topic_specs(settings)["catalog"].name, expect=25)
    got = {m.key().decode(): codec.decode_title(m.value()) for m in msgs}
    assert got == {t.title_id: t for t in titles}


def test_publish_catalog_raises_when_nothing_listens() -> None:
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    titles = synthetic_catalog(2, seed=5, now=dt.date(2026, 1, 1))
    with pytest.raises(ProducerError, match="t00000"):
        publish_catalog(dead, titles, extra_config={"message.timeout.ms": 1500})


def test_run_simulation_delivers_every_event(settings: Settings) -> None:
    ensure_topics(settings)
    catalog = synthetic_catalog(60, seed=2, now=dt.date(2026, 1, 1))
    profiles = synthetic_profiles(8, seed=2)
    sim = PlayerSimulator(catalog, profiles, seed=2, max_heartbeats=3)
    with PlayerProducer(settings) as producer:
        res = run_simulation(producer, sim, sessions=6)
    assert res.sessions == 6 and producer.delivered_events == res.events
    assert producer.delivered == res.messages
    codec = default_codec()
    msgs = consume(settings, topic_specs(settings)["player_events"].name, expect=res.messages)
    events = [e for m in msgs for e in codec.decode_events(m.value())]
    assert len(events) == res.events
    assert len({e.event_id for e in events}) == res.events


def test_cli_produce_and_dead_letters(settings: Settings, tmp_path: Any,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    env_for(settings, monkeypatch)
    assert cli.main(["topics", "create"]) == 0
    assert topic_specs(settings)["catalog"].name in capsys.readouterr().out

    lines = [
        {"type": "scroll", "event_id": "s1", "profile_id": "p1", "event_ts_ms": TS, "row": 1},
        {"type": "play", "event_id": "s2", "profile_id": "p1", "event_ts_ms": TS + 1,
         "title_id": "t1", "action": "stop", "position_s": 9999, "duration_s": 60},
        {"type": "search", "event_id": "s3", "profile_id": "p2", "event_ts_ms": TS + 2,
         "query": "space"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert cli.main(["produce", "--file", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "line 2: Play: Value error, position_s (9999.0) is beyond duration_s" in err
    assert "sent 2 events in 2 messages" in out
    codec = default_codec()
    msgs = consume(settings, topic_specs(settings)["player_events"].name, expect=2)
    assert sorted(e.event_id for m in msgs for e in codec.decode_events(m.value())) == [
        "s1", "s3"]

    letter = DeadLetter(source_topic=topic_specs(settings)["player_events"].name, partition=2,
                        offset=17, key=b"p1", value=b"\x00garbage", reason="bad header",
                        error_type="DecodeError", event_id=None, failed_at_ms=TS)
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers})
    raw.produce(topic_specs(settings)["dead_letter"].name, key=b"p1",
                value=codec.encode_dead_letter(letter))
    assert raw.flush(10) == 0
    assert cli.main(["dead-letters", "--max", "1", "--timeout", "15"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert row == {
        "source_topic": letter.source_topic, "partition": 2, "offset": 17,
        "reason": "bad header", "error_type": "DecodeError", "event_id": None, "key": "p1",
        "value_len": 8, "failed_at_ms": TS,
    }


def test_cli_catalog_publish_and_simulate(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    env_for(settings, monkeypatch)
    assert cli.main(["catalog", "publish", "--titles", "12", "--seed", "3"]) == 0
    assert "published 12 titles" in capsys.readouterr().out
    assert cli.main(["simulate", "--profiles", "4", "--sessions", "3", "--titles", "12",
                     "--catalog-seed", "3", "--max-heartbeats", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulated 3 sessions: sent ")
    n_messages = int(out.split(" in ")[1].split()[0])
    codec = default_codec()
    titles = consume(settings, topic_specs(settings)["catalog"].name, expect=12)
    title_ids = {m.key().decode() for m in titles}
    msgs = consume(settings, topic_specs(settings)["player_events"].name, expect=n_messages)
    played = {e.title_id for m in msgs for e in codec.decode_events(m.value())
              if isinstance(e, Play)}
    assert played and played <= title_ids  # simulated events refer to published titles


# -- flushing on Ctrl-C and at interpreter exit (child processes) -----------------------------
def child_env(settings: Settings) -> dict[str, str]:
    """This environment without HOMESTREAM_* variables, plus the test's broker and topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESTREAM_")}
    env.update({
        "HOMESTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "HOMESTREAM_REDIS_URL": settings.redis_url,
        "HOMESTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "HOMESTREAM_PARTITIONS": str(settings.partitions),
    })
    return env


def scroll_line(event_id: str, profile_id: str, i: int) -> str:
    return json.dumps({"type": "scroll", "event_id": event_id, "profile_id": profile_id,
                       "event_ts_ms": TS + i, "row": i}) + "\n"


def test_cli_produce_flushes_accepted_events_on_sigint(settings: Settings) -> None:
    ensure_topics(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "homestream.player", "-vv", "produce"], cwd=ROOT,
        env=child_env(settings),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stderr is not None
    err_lines: list[str] = []
    accepted = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if "accepted event e6" in line:
                accepted.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        ids = [f"e{i}" for i in range(7)]
        # p1 x3, p2 x3, p3 x1: under --batch and the 0.5 s batch age, so all stay buffered
        proc.stdin.writelines(scroll_line(e, f"p{i % 3 + 1}", i) for i, e in enumerate(ids))
        proc.stdin.flush()  # stdin stays open: the command is now blocked reading it
        assert accepted.wait(30), "".join(err_lines)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(5)
    assert proc.stdout is not None
    out, err = proc.stdout.read(), "".join(err_lines)
    assert proc.returncode == 130, err
    assert "interrupted: flushing" in err
    assert "sent 7 events in 3 messages" in out, (out, err)
    codec = default_codec()
    msgs = consume(settings, topic_specs(settings)["player_events"].name, expect=3)
    assert sorted(e.event_id for m in msgs for e in codec.decode_events(m.value())) == ids


EXIT_SCRIPT = textwrap.dedent("""
    from homestream.player.producer import PlayerProducer
    from homestream.settings import load_settings
    from topics.models import Scroll

    producer = PlayerProducer(load_settings(), {extra})
    for i in range(5):
        producer.send(Scroll(event_id=f"x{{i}}", profile_id=f"p{{i % 2}}",
                             event_ts_ms={ts} + i, row=i))
    print("buffered", producer.buffered, "in flight", producer.in_flight, flush=True)
    # no close(), no with: the interpreter exits normally
""")


def test_an_unclosed_producer_is_flushed_at_interpreter_exit(settings: Settings) -> None:
    ensure_topics(settings)
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(extra="", ts=TS)],
                          cwd=ROOT, env=child_env(settings), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "buffered 5 in flight 0" in done.stdout  # nothing was sent before the exit
    codec = default_codec()
    msgs = consume(settings, topic_specs(settings)["player_events"].name, expect=2)
    events = sorted((e for m in msgs for e in codec.decode_events(m.value())),
                    key=lambda e: e.event_id)
    assert [(e.event_id, e.profile_id) for e in events] == [
        (f"x{i}", f"p{i % 2}") for i in range(5)]


def test_a_failed_flush_at_interpreter_exit_names_the_events() -> None:
    dead = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="nowhere.")
    extra = "extra_config={'message.timeout.ms': 1500}, exit_flush_timeout_s=8"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT.format(extra=extra, ts=TS)],
                          cwd=ROOT, env=child_env(dead), capture_output=True, text=True,
                          timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode == 0  # atexit cannot change the exit code; the failure is logged
    assert "PlayerProducer still open at exit: flushing it failed" in done.stderr
    assert "x0, x2, x4" in done.stderr and "x1, x3" in done.stderr
