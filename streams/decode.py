"""Kafka messages into events: decoding, validation and the dead letters of what is unusable.

>>> from topics.codec import default_codec
>>> d = MessageDecoder(default_codec(), lambda: 0.0, 60.0)
>>> events, letters = d.decode([RawMessage("ev", 0, 7, b"p1", b"junk")])
>>> events, letters[0].error_type, letters[0].offset
([], 'DecodeError', 7)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from topics.codec import AvroCodec, DecodeError, validate_event
from topics.models import DeadLetter, Event


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka message, as the agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The message's timestamp (broker or producer time, ms since epoch); ``None``: unknown.
    timestamp_ms: int | None = None


class SourcedEvent(NamedTuple):
    """A decoded event with the message it came in (for dead letters naming its origin; a
    named tuple: one is made for every event consumed)."""

    event: Event
    message: RawMessage
    #: Events the message held (1: a single-event message, else an ``EventBatch``).
    n_events: int


class DeadLetterSink(Protocol):
    """Where unusable input goes; ``send`` returns once the letters are durably written."""

    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


class MemoryDeadLetters:
    """A :class:`DeadLetterSink` that keeps letters in a list (unit tests, tools)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


class MessageDecoder:
    """Turns consumed messages into events and dead letters (what, where from, why).

    Parameters
    ----------
    codec
        The Avro codec.
    clock
        Wall clock in seconds (stamps when a letter was written).
    max_lateness_s
        The allowed lateness, for the reason of a late event's letter.
    max_future_skew_s
        How far an event's time may be ahead of its message's timestamp (of the wall clock
        when the message has none); an event further ahead is a dead letter.
    """

    def __init__(self, codec: AvroCodec, clock: Callable[[], float],
                 max_lateness_s: float, max_future_skew_s: float = 300.0) -> None:
        self.codec = codec
        self.clock = clock
        self.max_lateness_s = max_lateness_s
        self.max_future_skew_s = max_future_skew_s

    def letter(self, m: RawMessage, reason: str, error_type: str,
                event_id: str | None = None, value: bytes | None = None) -> DeadLetter:
        return DeadLetter(
            source_topic=m.topic, partition=m.partition, offset=m.offset, key=m.key,
            value=m.value if value is None else value, reason=reason, error_type=error_type,
            event_id=event_id, failed_at_ms=int(self.clock() * 1000),
        )

    def decode(self, messages: Sequence[RawMessage]
               ) -> tuple[list[SourcedEvent], list[DeadLetter]]:
        """Valid events in message order, each with the message it came in, and a dead
        letter for everything else.

        A batch message with some invalid events keeps the valid ones; each invalid event
        becomes its own letter holding that event re-encoded as a single-event message.
        """
        events: list[SourcedEvent] = []
        letters: list[DeadLetter] = []
        for m in messages:
            if m.value is None:
                letters.append(self.letter(m, "empty message value", "DecodeError"))
                continue
            try:
                raw = self.codec.decode_raw_events(m.value)
            except DecodeError as exc:
                letters.append(self.letter(m, str(exc), "DecodeError"))
                continue
            n_events = len(raw)
            single = n_events == 1
            key = m.key.decode("utf-8", "replace") if m.key else None
            reference = self._reference(m)
            for i, (name, record) in enumerate(raw):
                try:
                    ev = validate_event(name, record, index=i)
                except DecodeError as exc:
                    letters.append(self.letter(
                        m, str(exc), "ValidationError", event_id=record.get("event_id"),
                        value=None if single else self.codec.encode(name, record)))
                    continue
                if key is not None and ev.profile_id != key:
                    letters.append(self.letter(
                        m, f"event profile_id {ev.profile_id!r} does not match message key "
                           f"{key!r}", "KeyMismatch", event_id=ev.event_id,
                        value=None if single else self.codec.encode(name, record)))
                    continue
                future = self.future_reason(ev.event_ts_ms, m, reference)
                if future is not None:
                    letters.append(self.letter(
                        m, future if single else future + "; value is this event re-encoded "
                        f"alone (message of {len(raw)} events)", "FutureEvent",
                        event_id=ev.event_id,
                        value=None if single else self.codec.encode(name, record)))
                    continue
                events.append(SourcedEvent(ev, m, n_events))
        return events, letters

    def _reference(self, m: RawMessage) -> tuple[int, str]:
        """What the events of ``m`` are judged against, in ms, and its name: the message's
        timestamp, or the wall clock when it has none."""
        if m.timestamp_ms is not None and m.timestamp_ms > 0:
            return m.timestamp_ms, "its message's broker timestamp"
        return int(self.clock() * 1000), "the worker's clock"

    def future_reason(self, event_ts_ms: int, m: RawMessage,
                      reference: tuple[int, str] | None = None) -> str | None:
        """Why an event stamped ``event_ts_ms`` is too far in the future for its message
        (``None`` when it is not): its time against the message's timestamp, or against the
        wall clock when the message has none (``reference``: that, taken once a message)."""
        ref_ms, ref = reference or self._reference(m)
        ahead_s = (event_ts_ms - ref_ms) / 1000.0
        if ahead_s <= self.max_future_skew_s:
            return None
        return (f"event time is {ahead_s:.0f}s ahead of {ref}; max future skew is "
                f"{self.max_future_skew_s:.0f}s (HOMESTREAM_MAX_FUTURE_SKEW_S)")

    def late_letter(self, se: SourcedEvent, newest_ms: int) -> DeadLetter:
        """The dead letter of an event later than the allowed lateness: the topic, partition,
        offset and key of the message it came in, and that message's bytes when the event
        was its only one (else the event alone, re-encoded as a single-event message)."""
        ev, m = se.event, se.message
        behind = (newest_ms - ev.event_ts_ms) / 1000.0
        reason = (f"event is {behind:.0f}s older than the profile's newest event; "
                  f"max lateness is {self.max_lateness_s:.0f}s")
        if se.n_events > 1:
            reason += f"; value is this event re-encoded alone (message of {se.n_events} events)"
        return self.letter(
            m, reason, "LateEvent", event_id=ev.event_id,
            value=None if se.n_events == 1 and m.value is not None
            else self.codec.encode_event(ev))
