"""A batch that fails with an error that is not an outage: find the poisoned events, keep the rest.

Faust acknowledges a ``take_events`` batch whenever the agent's loop body exits, by an error
too, so a batch whose processing raises (a bug met by one odd event, a value a model cannot
take, a Redis reply that is an error rather than an outage) would be lost whole, and the agent
would stop. Instead :func:`isolate_batch` applies the batch again one event at a time, each
event its own small batch (with the outage retries of a normal batch): the events that raise
again go to the dead-letter topic with a reason naming the exception (``error_type``
``PoisonEvent``), the others are applied, and the worker goes on with the next batch.

Exactly once: the failed attempt committed nothing unless it failed after its transaction
(then its events are duplicates now, by event id, and are not applied twice), and its
learning was dropped unless committed (:meth:`streams.processor.EventProcessor.process`);
each event applied alone commits its state, dedupe id and learning in its own transaction.
A message whose bytes make decoding itself raise is dead-lettered whole. What can be
duplicated: dead letters the failed attempt had already sent (bad input found by decoding),
sent again here. An error that every event meets (a broken dependency rather than a bad
event) dead-letters the whole batch, each event with its reason; nothing is lost, the
letters can be replayed once it is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streams.decode import RawMessage, SourcedEvent
from streams.outage import retry_transient
from topics.models import DeadLetter
from topics.registry_framing import prepare

if TYPE_CHECKING:
    from streams.processor import BatchReport, EventProcessor

log = logging.getLogger(__name__)

#: ``error_type`` of the dead letter of an event (or message) whose processing raised.
POISON = "PoisonEvent"
#: Counters of a report that add up over the events applied one at a time.
_SUMMED = ("applied", "duplicates", "dead_letters", "pages", "labels", "late", "erased",
           "published", "art_rewards", "quality_plays")


def reason_of(exc: BaseException, what: str) -> str:
    """The dead letter's reason: what failed and the exception, type and message."""
    return f"{what} raised {type(exc).__name__}: {exc}"[:1000]


def poison_letter(proc: EventProcessor, se: SourcedEvent, exc: BaseException) -> DeadLetter:
    """The dead letter of an event whose processing raised ``exc``: its message's origin and
    bytes when it was the message's only event, else the event alone, re-encoded."""
    alone = se.n_events == 1 and se.message.value is not None
    reason = reason_of(exc, f"applying event {se.event.event_id}")
    if not alone:
        reason += f"; value is this event re-encoded alone (message of {se.n_events} events)"
    return proc.decoder.letter(se.message, reason, POISON, event_id=se.event.event_id,
                               value=None if alone else proc.codec.encode_event(se.event))


async def isolate_batch(proc: EventProcessor, messages: Sequence[RawMessage],
                        exc: BaseException) -> BatchReport:
    """Apply ``messages`` (a batch that raised ``exc``) one event at a time; dead-letter the
    events (or undecodable messages) that raise again. Returns the summed report."""
    from streams.processor import BatchReport

    log.error("event batch of %d messages failed (%s: %s); applying its events one at a "
              "time, poisoned ones go to the dead-letter topic", len(messages),
              type(exc).__name__, exc, exc_info=exc)
    total = BatchReport(messages=len(messages))
    letters: list[DeadLetter] = []
    for m in messages:
        try:
            await prepare(proc.codec, [m.value])
            events, decoded_letters = proc.decode([m])
        except Exception as err:  # whatever decoding raised goes in the letter
            letters.append(proc.decoder.letter(m, reason_of(err, "decoding the message"),
                                               POISON))
            continue
        letters += decoded_letters
        total.events += len(events)
        for se in events:
            total.event_types[type(se.event).__name__] += 1
            try:
                report = await _apply_alone(proc, se)
            except Exception as err:  # the event is poisoned, not the batch
                log.error("event %s (%s, partition %d, offset %d) dead-lettered: %s: %s",
                          se.event.event_id, m.topic, m.partition, m.offset,
                          type(err).__name__, err)
                letters.append(poison_letter(proc, se, err))
                continue
            _add(total, report)
    if letters:
        await retry_transient(lambda: _send(proc, letters), "poisoned batch's dead letters",
                              proc.outage_backoff, proc.outage_stats)
        total.dead_letters += len(letters)
    total.committed = True
    return total


async def _apply_alone(proc: EventProcessor, se: SourcedEvent) -> BatchReport:
    """One event as a batch of its own, retried whole through an outage like any batch."""
    from streams.processor import BatchReport

    async def once() -> BatchReport:
        report = BatchReport(messages=0, events=1)
        await proc.process_decoded([se.message], [se], report)
        return report

    return await retry_transient(once, "poisoned batch, one event", proc.outage_backoff,
                                 proc.outage_stats)


async def _send(proc: EventProcessor, letters: list[DeadLetter]) -> None:
    """Write the letters, then count them (the counter is what operators watch)."""
    await proc.dead_letters.send(letters)
    await proc.store.commit_batch([], [], {"dead_letters": len(letters)})


def _add(total: BatchReport, report: BatchReport) -> None:
    for name in _SUMMED:
        setattr(total, name, getattr(total, name) + getattr(report, name))
    total.profiles += report.profiles
    total.freshness_ms.extend(report.freshness_ms)
