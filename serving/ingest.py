"""HTTP event ingestion for players that cannot run a Kafka client: ``POST /v1/events``.

TV and phone players send a JSON array of events, each an object with a ``"type"`` (``play,
impression, scroll, click, feedback, search, session_start``) and the fields of its model,
exactly what the producer client takes (:func:`homestream.player.producer.parse_event`: the
same models, the same messages). Each event is validated on its own: the valid ones are
produced, the invalid ones are reported with their index, event id, field and reason, and
do not stop the others.

The valid events are grouped by profile, in request order, and sent as one message per
profile (an ``EventBatch``, or the event alone; :func:`~homestream.player.producer.
encode_events`) keyed by ``profile_id`` to the player-events topic, through one idempotent
producer per server process (``acks=all``, :func:`~homestream.player.producer.
player_producer_config`), created at start-up and flushed and closed at shutdown. The
response goes out only once the broker acknowledged every message: a poll task serves the
producer's delivery reports in a thread of its own, and each report resolves its message's
future on the event loop (``loop.call_soon_threadsafe``), so the loop never blocks.

Answers:

- 200 ``{"accepted": [ids], "rejected": [{"index", "event_id", "field", "reason",
  "error"}]}``: every valid event was acknowledged by the broker (``accepted`` in request
  order; ``rejected`` lists the invalid ones, which were not sent);
- 400 (same body, with ``error`` and ``field``): the body is not a JSON array of events,
  or no event in it is valid;
- 413: the body is larger than ``HOMESTREAM_INGEST_MAX_BYTES`` or holds more than
  ``HOMESTREAM_INGEST_MAX_EVENTS`` events (nothing was sent);
- 503 ``{"error", "accepted", "not_accepted", "rejected"}`` with ``Retry-After``: the broker
  did not acknowledge the events in ``not_accepted`` (within the producer's delivery
  timeout); ``accepted`` ones were. Sending the same events again is safe: the worker
  applies an event id once per profile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException, Producer
from pydantic import BaseModel

from homestream.player.producer import (
    InvalidEvent,
    encode_events,
    parse_event,
    player_producer_config,
)
from homestream.settings import ENV_PREFIX, Settings
from serving.http import InvalidInput, error_response, json_response
from topics.codec import AvroCodec, default_codec
from topics.models import Event, message_groups
from topics.registry import topic_specs

log = logging.getLogger(__name__)

#: Most events of one profile in one message (as the producer client batches them).
MAX_EVENTS_PER_MESSAGE = 100
#: How long the poll task's thread waits for delivery reports per call.
POLL_TIMEOUT_S = 0.05
#: Slack past the producer's delivery timeout before a request stops waiting for reports.
DELIVERY_SLACK_S = 5.0
READ_CHUNK = 65536


class RejectedEvent(BaseModel):
    """An event that did not validate: where it was in the array, what was wrong."""

    index: int
    event_id: str | None
    field: str
    reason: str
    #: The producer client's message for the event (every problem, model-qualified).
    error: str


class IngestResponse(BaseModel):
    """200 (and the 400 of a request whose events were all invalid, with ``error``)."""

    accepted: list[str]
    rejected: list[RejectedEvent]


class IngestUnavailable(BaseModel):
    """503: the broker did not acknowledge the events in ``not_accepted``."""

    error: str
    accepted: list[str]
    not_accepted: list[str]
    rejected: list[RejectedEvent]


class TooLarge(Exception):
    """A request over one of the ingestion limits (answered 413)."""


def validate_events(items: list[Any]) -> tuple[list[Event], list[RejectedEvent]]:
    """Each item validated on its own: ``(valid events in order, rejected ones)``."""
    valid: list[Event] = []
    rejected: list[RejectedEvent] = []
    for index, item in enumerate(items):
        try:
            valid.append(parse_event(item))
        except InvalidEvent as exc:
            field, reason = exc.errors[0]
            event_id = item.get("event_id") if isinstance(item, dict) else None
            rejected.append(RejectedEvent(
                index=index, event_id=event_id if isinstance(event_id, str) else None,
                field=field, reason=reason, error=str(exc)))
    return valid, rejected


def messages_by_profile(events: list[Event],
                        max_events: int = MAX_EVENTS_PER_MESSAGE) -> list[tuple[str, list[Event]]]:
    """The events grouped by profile (request order kept within a profile), in chunks of at
    most ``max_events``: one ``(profile_id, events)`` per message (a session start alone,
    :func:`topics.models.message_groups`)."""
    by_profile: dict[str, list[Event]] = {}
    for event in events:
        by_profile.setdefault(event.profile_id, []).append(event)
    return [(pid, group[i:i + max_events]) for pid, evs in by_profile.items()
            for group in message_groups(evs) for i in range(0, len(group), max_events)]


class EventIngest:
    """Produces validated player events and waits for the broker's acknowledgements.

    Parameters
    ----------
    settings
        Broker, security, linger, delivery timeout and the ingestion limits.
    client
        A ``confluent_kafka.Producer`` (default: an idempotent one from the settings).
    codec
        Avro codec; the packaged schemas by default.

    Call :meth:`start` in the running loop, :meth:`aclose` at shutdown.
    """

    def __init__(self, settings: Settings, client: Any = None,
                 codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.topic = topic_specs(settings)["player_events"].name
        self.codec = codec or default_codec()
        self.client = client if client is not None else Producer(
            {**player_producer_config(settings, f"{settings.app_id}-ingest"),
             "logger": logging.getLogger(f"{__name__}.librdkafka")})
        self.delivery_wait_s = settings.producer_delivery_timeout_ms / 1000 + DELIVERY_SLACK_S
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "ingest-poll")
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the task that serves delivery reports (idempotent)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="ingest-poll")

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            await loop.run_in_executor(self._executor, self.client.poll, POLL_TIMEOUT_S)

    async def aclose(self) -> None:
        """Stop the poll task, flush what is in flight (in a thread), close the producer."""
        self._closing = True
        self._wakeup.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(self._executor, self.client.flush, 10.0)
        if remaining:
            log.error("ingestion producer closed with %d message(s) unacknowledged", remaining)
        close = getattr(self.client, "close", None)
        if close is not None:
            await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

    async def deliver(self, events: list[Event]) -> tuple[list[str], dict[str, str]]:
        """Produce ``events`` keyed by profile and wait for their acknowledgements:
        ``(acknowledged event ids, {not acknowledged event id: why})``."""
        loop = asyncio.get_running_loop()
        sent: list[tuple[asyncio.Future[str | None], list[str]]] = []
        failed: dict[str, str] = {}
        for profile_id, chunk in messages_by_profile(events):
            await self._produce(loop, profile_id, chunk, sent, failed)
        if sent:
            await asyncio.wait([f for f, _ in sent], timeout=self.delivery_wait_s)
        accepted: list[str] = []
        for future, ids in sent:
            if not future.done():
                future.cancel()
                why = f"no acknowledgement within {self.delivery_wait_s:g}s"
            else:
                why = future.result()
            if why is None:
                accepted += ids
            else:
                failed.update(dict.fromkeys(ids, why))
        return accepted, failed

    async def _produce(self, loop: asyncio.AbstractEventLoop, profile_id: str,
                       events: list[Event], sent: list[tuple[asyncio.Future[str | None],
                                                             list[str]]],
                       failed: dict[str, str]) -> None:
        """Hand one profile's message to librdkafka (waiting out a full queue; splitting a
        message the broker finds too large); its future goes into ``sent``."""
        ids = [e.event_id for e in events]
        future: asyncio.Future[str | None] = loop.create_future()
        value = encode_events(self.codec, profile_id, events)
        deadline = loop.time() + self.delivery_wait_s
        while True:
            try:
                self.client.produce(self.topic, key=profile_id.encode(), value=value,
                                    on_delivery=self._on_delivery(loop, future))
                break
            except BufferError:
                if loop.time() > deadline:
                    failed.update(dict.fromkeys(ids, "producer queue full"))
                    return
                await asyncio.sleep(0.01)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else exc
                if (isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE
                        and len(events) > 1):
                    half = len(events) // 2
                    await self._produce(loop, profile_id, events[:half], sent, failed)
                    await self._produce(loop, profile_id, events[half:], sent, failed)
                else:
                    failed.update(dict.fromkeys(ids, str(err)))
                return
        sent.append((future, ids))
        self._pending += 1
        self._wakeup.set()

    def _on_delivery(self, loop: asyncio.AbstractEventLoop,
                     future: asyncio.Future[str | None]) -> Callable[[Any, Any], None]:
        """The delivery callback (called in the poll thread): resolve ``future`` on the loop
        with ``None`` (acknowledged) or the error."""
        def resolve(err: Any) -> None:
            self._pending -= 1
            if not future.done():
                future.set_result(None if err is None else str(err))

        def on_delivery(err: Any, _msg: Any) -> None:
            loop.call_soon_threadsafe(resolve, err)

        return on_delivery


INGEST = web.AppKey("ingest", EventIngest)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused (:class:`TooLarge`) past ``max_bytes`` without reading the
    rest."""
    limit = f"the limit {ENV_PREFIX}INGEST_MAX_BYTES is {max_bytes} bytes"
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"body: {request.content_length} bytes; {limit}")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"body: more than {max_bytes} bytes; {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_array(raw: bytes, max_events: int) -> list[Any]:
    """The body as a non-empty JSON array of at most ``max_events`` items."""
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidInput("body", f"must be a JSON array of events, got "
                                   f"{type(items).__name__}")
    if not items:
        raise InvalidInput("body", "must hold at least one event")
    if len(items) > max_events:
        raise TooLarge(f"body: {len(items)} events; the limit {ENV_PREFIX}INGEST_MAX_EVENTS "
                       f"is {max_events} events per request")
    return items


async def post_events(request: web.Request) -> web.Response:
    """``POST /v1/events``: validate, produce keyed by profile, answer once acknowledged."""
    ingest = request.app[INGEST]
    settings = ingest.settings
    try:
        raw = await read_body(request, settings.ingest_max_bytes)
        items = parse_array(raw, settings.ingest_max_events)
    except TooLarge as exc:
        return error_response(413, str(exc), field="body")
    valid, rejected = validate_events(items)
    rejected_json = [r.model_dump() for r in rejected]
    if not valid:
        return error_response(400, f"body: none of the {len(items)} event(s) is valid",
                              field="body", accepted=[], rejected=rejected_json)
    _, failed = await ingest.deliver(valid)
    # in request order (the messages went out grouped by profile)
    accepted = [e.event_id for e in valid if e.event_id not in failed]
    if failed:
        reasons = sorted(set(failed.values()))
        log.warning("ingestion: %d event(s) not acknowledged: %s", len(failed), reasons[0])
        body = IngestUnavailable(
            error=f"the broker did not acknowledge {len(failed)} event(s): "
                  f"{'; '.join(reasons[:3])}",
            accepted=accepted, not_accepted=[e.event_id for e in valid if e.event_id in failed],
            rejected=rejected)
        return json_response(body.model_dump(), status=503, headers={"Retry-After": "1"})
    return json_response({"accepted": accepted, "rejected": rejected_json})


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """One producer per server process: made at start-up (unless one was given), started
    on the loop, flushed and closed at shutdown."""
    own = INGEST not in app
    if own:
        app[INGEST] = EventIngest(app[INGEST_SETTINGS])
    app[INGEST].start()
    try:
        yield
    finally:
        if own:
            await app[INGEST].aclose()


INGEST_SETTINGS = web.AppKey("ingest_settings", Settings)


def add_ingest(app: web.Application, settings: Settings,
               ingest: EventIngest | None = None) -> None:
    """Register ``POST /v1/events`` on ``app`` with its producer's life cycle (``ingest``
    given: that one is used, and closed by its owner)."""
    app[INGEST_SETTINGS] = settings
    if ingest is not None:
        app[INGEST] = ingest
    app.cleanup_ctx.append(_ingest_ctx)
    app.router.add_post("/v1/events", post_events)
