"""The producer client players use: validate, key by profile, batch, and never drop silently.

Players hand events (models or plain dicts) to :class:`PlayerProducer`. Each event is
validated against its model (a bad field raises :class:`InvalidEvent` naming it), buffered
per profile, and sent as one Avro message per profile keyed by ``profile_id``: an
``EventBatch`` when the profile has several events buffered, a single-event message when it
has one. Keying by profile puts all of a profile's events on one partition, in order.

Delivery is at-least-once through librdkafka's idempotent producer (``acks=all``). Every
message's delivery report is checked; failures are kept in :attr:`PlayerProducer.failures`
with the event ids they carried, passed to ``on_failure`` and raised by
:meth:`PlayerProducer.flush` as :class:`ProducerError`. A full local queue is waited out
(``poll`` and retry), never dropped.

A producer that is still open when the interpreter exits normally (neither ``with`` nor
:meth:`PlayerProducer.close` was used) is flushed by an :mod:`atexit` hook, for at most
``exit_flush_timeout_s`` seconds; failures are logged (``ERROR``) with their event ids. The
hook holds producers weakly, so it keeps none alive, and :meth:`PlayerProducer.close`
unregisters it. Nothing is flushed on ``os._exit``, a fatal signal or in forked children.

The client is synchronous and thread-safe (players call it from their own threads); it does
not use asyncio.

Example (with a running broker)::

    with PlayerProducer(load_settings()) as producer:
        producer.send({"type": "play", "event_id": "e1", "profile_id": "p1",
                       "event_ts_ms": 1_700_000_000_000, "title_id": "t1",
                       "action": "start", "position_s": 0, "duration_s": 5400})
    # leaving the block flushes and raises ProducerError if a delivery failed
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from pydantic import ValidationError

from homestream.kafka_config import idempotent_producer_config
from homestream.settings import Settings
from topics.codec import AvroCodec
from topics.models import (
    EVENT_MODELS,
    STANDALONE_EVENTS,
    Click,
    Event,
    Feedback,
    Impression,
    Play,
    Scroll,
    Search,
    SessionStart,
)
from topics.registry import topic_specs
from topics.registry_framing import codec_for

log = logging.getLogger(__name__)

#: ``"type"`` values accepted in event dicts, and the model each one validates against.
EVENT_TYPES: dict[str, type[Event]] = {
    "play": Play,
    "impression": Impression,
    "scroll": Scroll,
    "click": Click,
    "feedback": Feedback,
    "search": Search,
    "session_start": SessionStart,
}
_MODEL_CLASSES = frozenset(EVENT_MODELS.values())
#: How many event ids a :class:`ProducerError` message lists before summarising.
MAX_IDS_IN_MESSAGE = 50
#: Default bound on the flush of a producer left open at interpreter exit.
EXIT_FLUSH_TIMEOUT_S = 10.0


class ProducerError(RuntimeError):
    """Some messages were not delivered; ``failures`` and ``undelivered_event_ids`` say which.

    Parameters
    ----------
    message
        Human-readable summary naming the event ids.
    failures
        Delivery reports that came back with an error.
    undelivered_event_ids
        Event ids of messages still without a delivery report when the flush timed out.
    """

    def __init__(self, message: str, failures: list[DeliveryFailure] | None = None,
                 undelivered_event_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])
        self.undelivered_event_ids = list(undelivered_event_ids or [])


class InvalidEvent(ValueError):
    """An event that does not validate; the text names the model and field, e.g.
    ``Play.position_s: Input should be greater than or equal to 0``.

    ``errors`` holds the same problems as ``(field, reason)`` pairs (``("position_s",
    "Input should be greater than or equal to 0")``; the field is ``"type"`` or ``"event"``
    for an event that names no known type or is not an object), for callers that report
    them field by field (the HTTP ingestion route).
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else [("event", message)]


@dataclass
class DeliveryFailure:
    """One message the broker did not take: where it was going, why, and what it carried."""

    topic: str
    key: str | None
    error: str
    event_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.topic}[key={self.key}]: {self.error} (events {_ids(self.event_ids)})"


def _ids(ids: list[str], limit: int = MAX_IDS_IN_MESSAGE) -> str:
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, ... (+{len(ids) - limit} more)"


def _describe(model: type[Event], exc: ValidationError) -> InvalidEvent:
    parts, errors = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{model.__name__}.{loc}: {err['msg']}" if loc
                     else f"{model.__name__}: {err['msg']}")
        errors.append((loc or "event", str(err["msg"])))
    return InvalidEvent("; ".join(parts), errors)


def parse_event(data: Mapping[str, Any]) -> Event:
    """Validate a plain event dict into its model; :class:`InvalidEvent` names the bad field.

    ``data["type"]`` is one of ``play, impression, scroll, click, feedback, search,
    session_start`` (or the schema name, e.g. ``homestream.Play``); the other keys are the
    model's fields.

    >>> parse_event({"type": "scroll", "event_id": "e1", "profile_id": "p1",
    ...              "event_ts_ms": 1_700_000_000_000, "row": 3}).row
    3
    >>> parse_event({"type": "play", "event_id": "e1", "profile_id": "p1",  # doctest: +ELLIPSIS
    ...              "event_ts_ms": 1_700_000_000_000, "title_id": "t1", "action": "start",
    ...              "position_s": -1, "duration_s": 60})
    Traceback (most recent call last):
    ...
    homestream.player.producer.InvalidEvent: Play.position_s: Input should be greater than or ...
    """
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"event must be an object with a 'type' key, got "
                           f"{type(data).__name__}")
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind is None:
        expected = f"expected one of {', '.join(EVENT_TYPES)}"
        raise InvalidEvent(f"type: missing; {expected}", [("type", f"missing; {expected}")])
    model = EVENT_TYPES.get(str(kind).lower()) or EVENT_MODELS.get(str(kind))
    if model is None:
        reason = f"unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}"
        raise InvalidEvent(f"type: {reason}", [("type", reason)])
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _describe(model, exc) from None


def player_producer_config(settings: Settings, client_id: str = "homestream-player",
                           ) -> dict[str, Any]:
    """librdkafka settings of a player-events producer
    (:func:`~homestream.kafka_config.idempotent_producer_config`)."""
    return idempotent_producer_config(settings, client_id)


def encode_events(codec: AvroCodec, profile_id: str, events: list[Event]) -> bytes:
    """One message value for one profile's events: the event itself when alone, else an
    ``EventBatch``."""
    if len(events) == 1:
        return codec.encode_event(events[0])
    return codec.encode_batch(profile_id, events)


def _as_event(event: Event | Mapping[str, Any]) -> Event:
    if isinstance(event, Event):
        if type(event) not in _MODEL_CLASSES:
            raise InvalidEvent(f"{type(event).__name__} is not a player event type")
        return event
    return parse_event(event)


class PlayerProducer:
    """Validating, batching, keyed producer of player events.

    Parameters
    ----------
    settings
        Broker address, linger and delivery timeout come from here.
    topic
        Target topic; default the registry's ``player_events`` topic.
    max_batch_events
        A profile's buffered events are sent as soon as this many are waiting.
    codec
        Avro codec; default :func:`topics.registry_framing.codec_for` of ``settings`` (the
        schema registry's framing when ``schema_registry_url`` is set).
    on_failure
        Called (from the thread that polls) with each :class:`DeliveryFailure`.
    extra_config
        librdkafka settings that override the defaults (e.g. ``message.timeout.ms``).
    max_batch_age_s
        When set, :meth:`send` and :meth:`poll` also send a profile's buffer once its oldest
        event has waited this long; by default buffers go out only when full or on
        :meth:`flush_batches` / :meth:`flush`.
    client_factory
        Builds the underlying client from its config dict (default
        :class:`confluent_kafka.Producer`); a hook for tests.
    exit_flush_timeout_s
        If the producer is still open at interpreter exit, flush it for at most this long;
        ``None`` turns the exit flush off (for callers that flush themselves).

    Attributes
    ----------
    failures
        Every delivery failure seen so far (never cleared).
    produced
        Messages handed to librdkafka.
    delivered, delivered_events
        Messages, and events in them, the broker acknowledged.
    """

    def __init__(self, settings: Settings, *, topic: str | None = None,
                 max_batch_events: int = 100, codec: AvroCodec | None = None,
                 on_failure: Callable[[DeliveryFailure], None] | None = None,
                 extra_config: dict[str, Any] | None = None,
                 max_batch_age_s: float | None = None,
                 client_factory: Callable[[dict[str, Any]], Any] | None = None,
                 exit_flush_timeout_s: float | None = EXIT_FLUSH_TIMEOUT_S) -> None:
        if max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        self.settings = settings
        self.topic = topic or topic_specs(settings)["player_events"].name
        self.max_batch_events = max_batch_events
        self.max_batch_age_s = max_batch_age_s
        self.codec = codec or codec_for(settings)
        self.on_failure = on_failure
        self.config: dict[str, Any] = {
            **player_producer_config(settings),
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
            "error_cb": self._on_error,
            **(extra_config or {}),
        }
        self._client = (client_factory or Producer)(self.config)
        self._lock = threading.RLock()
        self._buffers: dict[str, list[Event]] = {}
        self._buffered_since: dict[str, float] = {}
        self._in_flight: dict[int, list[str]] = {}
        self._tokens = itertools.count()
        self._reported = 0
        self._fatal: str | None = None
        self._closed = False
        self._client_closed = False
        self.failures: list[DeliveryFailure] = []
        self.produced = 0
        self.delivered = 0
        self.delivered_events = 0
        self.exit_flush_timeout_s = exit_flush_timeout_s
        self._pid = os.getpid()
        if exit_flush_timeout_s is not None:
            _OPEN_PRODUCERS.add(self)

    # -- sending ----------------------------------------------------------------------------
    def send(self, event: Event | Mapping[str, Any]) -> None:
        """Validate ``event`` and buffer it for its profile (see :func:`parse_event` for dicts).

        A ``SessionStart`` is not buffered: the profile's buffered events go out, then the
        session start as a message of its own (the worker renders the page on it, and the
        member is about to look at it).

        Raises :class:`InvalidEvent` (nothing is buffered) when it does not validate.
        """
        ev = _as_event(event)
        with self._lock:
            if self._closed:
                raise RuntimeError("PlayerProducer is closed")
            if type(ev) in STANDALONE_EVENTS:
                self._send_profile(ev.profile_id)
                self._produce(ev.profile_id, [ev])
                return
            buf = self._buffers.get(ev.profile_id)
            if buf is None:
                buf = self._buffers[ev.profile_id] = []
                self._buffered_since[ev.profile_id] = time.monotonic()
            buf.append(ev)
            if len(buf) >= self.max_batch_events:
                self._send_profile(ev.profile_id)
            elif self.max_batch_age_s is not None:
                self._send_aged()

    def send_many(self, events: Iterable[Event | Mapping[str, Any]]) -> None:
        """:meth:`send` each event in order; stops at the first invalid one (which raises)."""
        for ev in events:
            self.send(ev)

    @property
    def buffered(self) -> int:
        """Events validated but not yet handed to librdkafka."""
        with self._lock:
            return sum(len(b) for b in self._buffers.values())

    @property
    def in_flight(self) -> int:
        """Messages handed to librdkafka still waiting for a delivery report."""
        with self._lock:
            return len(self._in_flight)

    @property
    def unconfirmed_event_ids(self) -> list[str]:
        """Ids of the events buffered or in flight: not (yet) confirmed delivered."""
        with self._lock:
            return ([e.event_id for buf in self._buffers.values() for e in buf]
                    + [i for ids in self._in_flight.values() for i in ids])

    def flush_batches(self) -> int:
        """Send every profile's buffer as one message each; return the messages produced."""
        with self._lock:
            return sum(self._send_profile(pid) for pid in list(self._buffers))

    def _send_aged(self) -> int:
        assert self.max_batch_age_s is not None
        cutoff = time.monotonic() - self.max_batch_age_s
        aged = [pid for pid, since in self._buffered_since.items() if since <= cutoff]
        return sum(self._send_profile(pid) for pid in aged)

    def _send_profile(self, profile_id: str) -> int:
        events = self._buffers.pop(profile_id, None)
        self._buffered_since.pop(profile_id, None)
        if not events:
            return 0
        return self._produce(profile_id, events)

    def _produce(self, profile_id: str, events: list[Event]) -> int:
        value = encode_events(self.codec, profile_id, events)
        ids = [e.event_id for e in events]
        token = next(self._tokens)
        self._in_flight[token] = ids
        callback = self._delivery_callback(token, profile_id, ids)
        while True:
            try:
                self._client.produce(self.topic, key=profile_id.encode("utf-8"), value=value,
                                     on_delivery=callback)
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._client.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                too_large = isinstance(err, KafkaError) and \
                    err.code() == KafkaError.MSG_SIZE_TOO_LARGE
                if too_large and len(events) > 1:
                    self._in_flight.pop(token, None)
                    half = len(events) // 2
                    return (self._produce(profile_id, events[:half])
                            + self._produce(profile_id, events[half:]))
                callback(err if err is not None else str(exc), None)
                return 0
        self.produced += 1
        return 1

    def _delivery_callback(self, token: int, profile_id: str,
                           ids: list[str]) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            with self._lock:
                self._in_flight.pop(token, None)
                if err is None:
                    self.delivered += 1
                    self.delivered_events += len(ids)
                    return
                failure = DeliveryFailure(self.topic, profile_id, str(err), list(ids))
                self.failures.append(failure)
            log.error("delivery failed: %s", failure)
            if self.on_failure is not None:
                self.on_failure(failure)

        return on_delivery

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self._fatal = str(err)
            log.error("fatal producer error: %s", err)
        else:
            log.warning("producer error: %s", err)

    # -- delivery ---------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports (and aged batches); return the number of reports served."""
        if self.max_batch_age_s is not None:
            with self._lock:
                self._send_aged()
        return int(self._client.poll(timeout))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Send all buffers and wait for every delivery report.

        Raises :class:`ProducerError` listing the failures not raised before (with their
        event ids) and the messages still undelivered when ``timeout_s`` ran out.
        """
        if self._client_closed:
            return  # closed after a clean flush; sends are refused since
        with self._lock:
            self.flush_batches()
        remaining = int(self._client.flush(timeout_s))
        with self._lock:
            new = self.failures[self._reported:]
            self._reported = len(self.failures)
            undelivered = [i for ids in self._in_flight.values() for i in ids]
            pending = len(self._in_flight)
            fatal = self._fatal
        remaining = max(remaining, pending)
        if not new and not remaining and fatal is None:
            return
        parts = []
        if new:
            parts.append(f"{len(new)} message(s) failed delivery: "
                         + "; ".join(str(f) for f in new))
        if remaining:
            parts.append(f"{remaining} message(s) undelivered after {timeout_s}s "
                         f"(events {_ids(undelivered)})")
        if fatal is not None:
            parts.append(f"fatal producer error: {fatal}")
        raise ProducerError("; ".join(parts), new, undelivered)

    def close(self, timeout_s: float = 30.0) -> None:
        """Refuse further sends, flush (raising :class:`ProducerError` on failures) and release
        the client; after a failed flush the client stays open so :meth:`flush` can retry."""
        _OPEN_PRODUCERS.discard(self)  # the caller handles the outcome; no flush at exit
        if self._client_closed:
            return
        self._closed = True
        self.flush(timeout_s)
        # Only once nothing is in flight: librdkafka's close waits for outstanding messages.
        close = getattr(self._client, "close", None)
        if close is not None:
            close()
        self._client_closed = True

    def __enter__(self) -> PlayerProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        # An exception is propagating: still flush, but report failures on it, not over it.
        try:
            self.close()
        except Exception as perr:
            exc.add_note(f"while flushing PlayerProducer on exit: {type(perr).__name__}: {perr}")
            log.error("flush on exit failed while %s propagated: %s", exc_type.__name__
                      if exc_type else "?", perr)


#: Producers not closed yet, flushed at interpreter exit; weak, so they can still be collected.
_OPEN_PRODUCERS: weakref.WeakSet[PlayerProducer] = weakref.WeakSet()


def flush_open_producers() -> int:
    """Close every :class:`PlayerProducer` still open (the :mod:`atexit` hook), each within
    its ``exit_flush_timeout_s``; return how many were closed. A failed flush is logged with
    its event ids, not raised."""
    flushed = 0
    for producer in list(_OPEN_PRODUCERS):
        timeout_s = producer.exit_flush_timeout_s
        if timeout_s is None or producer._pid != os.getpid():
            continue  # exit flush turned off, or a forked child (the client's threads are gone)
        try:
            producer.close(timeout_s)
            flushed += 1
        except Exception as exc:
            log.error("PlayerProducer still open at exit: flushing it failed: %s", exc)
    return flushed


atexit.register(flush_open_producers)
