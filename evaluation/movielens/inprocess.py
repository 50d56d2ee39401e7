"""The worker's own code, without a broker or Redis, as a page-protocol recommender.

:class:`InProcessPipeline` feeds each chunk's player events, Avro-encoded exactly as the
producer client encodes them, to :class:`streams.processor.EventProcessor` over an
:class:`~features.store.InMemoryStore`, one micro-batch per ``batch_events`` events, and
reads the member's materialized page from that store. It runs the same decoding, feature,
model and page-assembly code as the worker, in a fraction of the time (no sockets, no
group protocol, no waiting for a child process), so page and model settings can be tried on
the whole of MovieLens in a couple of minutes. It is a development tool, not the proof:
:mod:`evaluation.movielens.pipeline` replays through the real broker, worker and Redis, and
the report's pipeline rows come from there.

Messages are built one per member and micro-batch (an ``EventBatch`` when a member has
several events in it), as :class:`~player.producer.PlayerProducer` does.

With ``ranking_only=True`` (a diagnostic) a page view is the member's Top Picks ranking cut
into rows of 5, as the baselines' pages are, instead of the home page: the difference
between the two is what the page's diverse rows cost under Recall@M-by-N, and the ranking
alone compares the pipeline's models with the baselines' on equal terms.

With ``session_starts=True`` (the default) each scored member's visit starts with a
:class:`~topics.models.SessionStart` (:func:`~evaluation.movielens.data.session_start`),
processed before the page is read, as the player sends one when the app opens: the page
read is the one the worker renders then, with the models and trends of the moment. With
``False`` the page read is the one written after the member's previous events.

With ``workers=N`` (N > 1) the members are split over N processors by partition (CRC32 of
the member id, as the producer's partitioner), each sending its learning to one shared
:class:`~streams.learner.Learner` that snapshots after every micro-batch round; the
processors reload the snapshot and rank with it, as scaled-out workers do.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from evaluation.movielens.data import Rating, session_start, to_events, view_impressions
from evaluation.movielens.protocol import InteractionLike, Page
from features.keys import ALL_COUNTRIES
from features.rows import RowKind
from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.page import Page as PageDoc
from online_models.rules import Rules, rules_from_settings
from streams.learner import Learner
from streams.learning import LearningRecord
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from topics.codec import default_codec
from topics.models import Event, Title


class InProcessPipeline:
    """:class:`~streams.processor.EventProcessor` on an in-memory store (module docstring).

    Parameters
    ----------
    titles
        The catalog, stored before the first chunk.
    settings
        Pipeline settings (page shape, model, rules); broker and Redis ones are unused.
    events_of
        Rating to player events (default :func:`~evaluation.movielens.data.to_events`).
    batch_events
        Events per micro-batch (the worker's ``HOMESTREAM_BATCH_MAX_EVENTS``).
    name
        The method's name in reports.
    ranking_only
        Serve the Top Picks ranking cut into rows of 5 (module docstring); set
        ``settings.row_length`` to at least 50 so the row holds 10 rows' worth.
    workers
        Processors the members are split over, sharing one learner (module docstring).
    rules
        The page rules (default: ``HOMESTREAM_RULES_FILE``'s; with ``ranking_only``, those
        with every title of a row in view, so the Top Picks row is its ranking's first
        ``row_length`` titles whatever the rows below show).
    log_impressions
        Log each page view as impressions (:func:`~evaluation.movielens.data.view_impressions`),
        sent with the next chunk, as the server logs the pages it serves.
    session_starts
        Start each scored member's visit with a session start (module docstring).
    """

    def __init__(self, titles: Sequence[Title], settings: Settings | None = None, *,
                 events_of: Callable[[Rating], list[Event]] = to_events,
                 batch_events: int = 500, name: str = "pipeline-inprocess",
                 log_impressions: bool = True, ranking_only: bool = False,
                 workers: int = 1, rules: Rules | None = None,
                 session_starts: bool = True) -> None:
        self.name = name
        self.session_starts = session_starts
        self.settings = settings or Settings()
        if rules is None and ranking_only:
            rules = rules_from_settings(self.settings).model_copy(
                update={"visible_columns": self.settings.row_length})
        self.events_of = events_of
        self.batch_events = batch_events
        self.codec = default_codec()
        self.store = InMemoryStore()
        self.dead_letters = MemoryDeadLetters()
        self.learner: Learner | None = None
        if workers > 1:
            self.learner = Learner(self.settings, self.store, self.codec)
            sink = _LearnerSink(self.learner, self.codec)
            self.processors = [EventProcessor(self.settings, self.store, self.dead_letters,
                                              codec=self.codec, learning=sink, rules=rules)
                               for _ in range(workers)]
        else:
            self.processors = [EventProcessor(self.settings, self.store, self.dead_letters,
                                              codec=self.codec, rules=rules)]
        self.processor = self.processors[0]
        self.default_pages_served = 0
        self.log_impressions = log_impressions
        self.ranking_only = ranking_only
        self._pending: list[Event] = []
        self.sent = 0
        self._offset = 0
        self._loop = asyncio.new_event_loop()
        self._run(self.processor.process_catalog(
            [self._message(t.title_id, self.codec.encode_title(t)) for t in titles]))

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def _message(self, key: str, value: bytes, partition: int = 0) -> RawMessage:
        self._offset += 1
        return RawMessage("in-process", partition, self._offset, key.encode("utf-8"), value)

    def _worker_of(self, member: str) -> int:
        return zlib.crc32(member.encode("utf-8")) % len(self.processors)

    def close(self) -> None:
        """Release the event loop."""
        self._loop.close()

    def learn(self, chunk: Sequence[InteractionLike]) -> None:
        """Send the chunk's events through the processor in micro-batches."""
        events: list[Event] = self._pending  # the impressions of the pages just viewed
        self._pending = []
        events += [ev for r in chunk for ev in self.events_of(r)]  # type: ignore[arg-type]
        self.sent += len(events)
        for i in range(0, len(events), self.batch_events):
            by_member: dict[str, list[Event]] = {}
            for ev in events[i: i + self.batch_events]:
                by_member.setdefault(ev.profile_id, []).append(ev)
            by_worker: dict[int, list[RawMessage]] = {}
            for pid, evs in by_member.items():
                w = self._worker_of(pid)
                by_worker.setdefault(w, []).append(self._message(
                    pid, self.codec.encode_event(evs[0]) if len(evs) == 1
                    else self.codec.encode_batch(pid, evs), w))
            for w, msgs in sorted(by_worker.items()):
                report = self._run(self.processors[w].process(msgs))
                if report.dead_letters or report.late:
                    raise RuntimeError(f"{report.dead_letters + report.late} events "
                                       f"dead-lettered: {self.dead_letters.letters[:3]}")
            self._share_learning()
        for proc in self.processors:
            self._run(proc.refresh_default_pages())

    def prepare(self, members: Sequence[str], now_ts: int) -> None:
        """With ``session_starts``: the visit of each member starts (the app opens) before
        the page is read; the worker renders their pages from what it learned so far."""
        if not self.session_starts:
            return
        by_worker: dict[int, list[RawMessage]] = {}
        for member in members:
            w = self._worker_of(member)
            by_worker.setdefault(w, []).append(self._message(
                member, self.codec.encode_event(session_start(member, now_ts)), w))
        self.sent += len(members)
        for w, msgs in sorted(by_worker.items()):
            report = self._run(self.processors[w].process(msgs))
            if report.dead_letters or report.late:
                raise RuntimeError(f"session starts dead-lettered: "
                                   f"{self.dead_letters.letters[:3]}")

    def _share_learning(self) -> None:
        """With a learner: snapshot its models and have every processor reload them."""
        if self.learner is None:
            return
        self._run(self.learner.snapshot())
        for proc in self.processors:
            self._run(proc.reload_models())

    def page(self, member: str, now_ts: int) -> Page:
        """The member's materialized page (the default page when they have none)."""
        raw = self._run(self.store.get_page(member))
        if raw is None:
            raw = self._run(self.store.get_default_page(ALL_COUNTRIES))
            self.default_pages_served += 1
        if raw is None:
            return Page([], kinds=[])
        page = orjson.loads(raw)
        if self.log_impressions:  # the home page is what the member was shown
            self._pending.extend(view_impressions(page, member, now_ts))
        if self.ranking_only:
            ranking = _ranking_page(page)
            if ranking is not None:  # a ranking cut into rows, as a baseline's page
                return Page(ranking)
        rows = page.get("rows", [])
        return Page([[str(i["title_id"]) for i in r.get("items", ())] for r in rows],
                    kinds=[str(r.get("kind", "")) for r in rows])


class _LearnerSink:
    """Hands each learning record to the in-process learner as the topic would (encoded,
    with the next model-updates offset)."""

    def __init__(self, learner: Learner, codec: Any) -> None:
        self.learner = learner
        self.codec = codec
        self.offset = -1

    async def send(self, record: LearningRecord) -> None:
        self.offset += 1
        self.learner.learn(self.offset, record.encode(self.codec))


def _ranking_page(page: PageDoc, rows: int = 10, columns: int = 5) -> list[list[str]] | None:
    """The Top Picks row of ``page`` cut into ``rows`` rows of ``columns`` title ids (``None``
    when the page has no Top Picks row, e.g. a default page).

    >>> items = [{"title_id": f"t{i}"} for i in range(7)]
    >>> _ranking_page({"rows": [{"kind": "top_picks", "items": items}]}, rows=2, columns=3)
    [['t0', 't1', 't2'], ['t3', 't4', 't5']]
    """
    picks = next((r for r in page.get("rows", []) if r.get("kind") == RowKind.TOP_PICKS), None)
    if picks is None:
        return None
    ids = [str(i["title_id"]) for i in picks["items"]][: rows * columns]
    return [ids[i: i + columns] for i in range(0, len(ids), columns)]


__all__ = ["InProcessPipeline"]
