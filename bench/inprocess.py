"""``python -m bench.inprocess``: the worker's batch step without Faust, the broker or Redis.

The bench's simulated backlog, encoded as the players' messages, goes through
:class:`~streams.processor.EventProcessor` on an in-memory store in batches; prints one JSON
line with the events per CPU second of that step, the pages it wrote, the CPU seconds spent
assembling them and what the cyclic collector cost (CPU seconds inside collections,
collections per generation). CPU time, not
wall time, so the numbers hold on a machine other work shares: compare ``--gc`` settings
or code versions with it, a few runs each.

``--learner-mode topic`` measures the step as the benchmarked worker runs it: the batch's
learning is encoded for the learner (not learned in place) and changed pages are encoded
for the recommendations topic.

``--warm N`` first applies N backlog-shaped events (unmeasured) so the measured events are
those of members who have a state and a page; with ``--per-message 2`` and a small
``--batch`` that is the shape of live traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from homestream.player.cli import positive_int

#: ``--gc`` choices: Python's collector thresholds, or the worker's (:func:`settle_heap`).
GC_MODES = ("default", "worker")


def messages(n_events: int, per_message: int, seed: int, titles: Sequence[Any],
             profiles: Sequence[Any]) -> list[Any]:
    """``n_events`` simulated events as raw messages of up to ``per_message`` events of one
    member (event time from six hours ago)."""
    from homestream.player.simulator import PlayerSimulator
    from streams.processor import RawMessage
    from topics.codec import default_codec

    codec, sim = default_codec(), PlayerSimulator(titles, profiles, seed, max_heartbeats=4)
    buffers: dict[str, list[Any]] = {}
    encoded: list[tuple[str, bytes]] = []
    for ev in sim.events_stream(n_events, int(time.time() * 1000) - 6 * 3600 * 1000):
        buf = buffers.setdefault(ev.profile_id, [])
        buf.append(ev)
        if len(buf) >= per_message:
            encoded.append((ev.profile_id, codec.encode_batch(ev.profile_id, buf)))
            buffers[ev.profile_id] = []
    encoded += [(p, codec.encode_batch(p, b)) for p, b in buffers.items() if b]
    return [RawMessage("events", 0, i, p.encode(), v, None) for i, (p, v) in enumerate(encoded)]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Apply the warm-up and the measured events; return the measurements."""
    from features.store import InMemoryStore
    from homestream.player.simulator import synthetic_catalog, synthetic_profiles
    from homestream.settings import Settings
    from streams.processor import EventProcessor, MemoryDeadLetters
    from streams.worker import settle_heap

    titles = synthetic_catalog(args.titles, args.seed)
    profiles = synthetic_profiles(args.profiles, args.seed)
    store = InMemoryStore()
    await store.put_titles(titles)
    learning, pages = _sinks(args.learner_mode)
    proc = EventProcessor(Settings(render_window_ms=args.render_window_ms), store,
                          MemoryDeadLetters(), page_updates=pages, learning=learning)
    await proc.start()
    warm = messages(args.warm, 20, args.seed + 1, titles, profiles) if args.warm else []
    measured = messages(args.events, args.per_message, args.seed, titles, profiles)
    if args.gc == "worker":
        settle_heap()
    for i in range(0, len(warm), 300):
        await proc.process(warm[i:i + 300])
    await proc.flush_pages(final=True)
    before = await store.counters()
    in_gc = {"cpu_s": 0.0, "started": 0.0, "collections": [0, 0, 0]}

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            in_gc["started"] = time.process_time()
        else:
            in_gc["cpu_s"] += time.process_time() - in_gc["started"]
            in_gc["collections"][info["generation"]] += 1

    gc.callbacks.append(timed)
    restore, in_pages = _count_page_cpu()
    t0 = time.process_time()
    try:
        for i in range(0, len(measured), args.batch):
            await proc.process(measured[i:i + args.batch])
        await proc.flush_pages(final=True)
    finally:
        cpu = time.process_time() - t0
        gc.callbacks.remove(timed)
        restore()
    after = await store.counters()
    applied = after.get("events_applied", 0) - before.get("events_applied", 0)
    return {
        "gc": args.gc, "learner_mode": args.learner_mode, "events": applied,
        "messages": len(measured), "cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(applied / cpu) if cpu else None,
        "pages": after.get("pages_written", 0) - before.get("pages_written", 0),
        "gc_cpu_s": round(in_gc["cpu_s"], 3), "gc_collections": in_gc["collections"],
        "page_cpu_s": round(in_pages[0], 3),
        "ms_per_page": round(1000 * in_pages[0] / in_pages[1], 3) if in_pages[1] else None,
        "encoded_bytes": sum(sink.bytes for sink in (learning, pages) if sink is not None),
    }


class _EncodedLearning:
    """A learning sink that encodes each record as the worker's producer does (in parts of
    at most ``MODEL_UPDATE_MAX_ITEMS``) and keeps only the byte count."""

    def __init__(self) -> None:
        from streams.app import MODEL_UPDATE_MAX_ITEMS
        from topics.codec import default_codec

        self.codec, self.max_items, self.bytes = default_codec(), MODEL_UPDATE_MAX_ITEMS, 0

    async def send(self, record: Any) -> None:
        self.bytes += sum(len(part.encode(self.codec)) for part in record.split(self.max_items))


class _EncodedPages:
    """A page-update sink that encodes each changed page as the worker's producer does and
    keeps only the byte count."""

    def __init__(self) -> None:
        from topics.codec import default_codec

        self.codec, self.bytes = default_codec(), 0

    async def send(self, pages: Sequence[dict]) -> None:
        self.bytes += sum(len(self.codec.encode_page_update(p)) for p in pages)


def _sinks(mode: str) -> tuple[_EncodedLearning | None, _EncodedPages | None]:
    """``(learning sink, page-update sink)`` for ``--learner-mode``."""
    if mode == "inline":
        return None, None
    return _EncodedLearning(), _EncodedPages()


def _count_page_cpu() -> tuple[Callable[[], None], list[float]]:
    """Time every page the renderer assembles (CPU seconds, pages) until the returned
    function puts the renderer's ``assemble_page`` back."""
    from streams import render

    assemble = render.assemble_page
    totals = [0.0, 0]

    def timed_page(*args: Any, **kwargs: Any) -> Any:
        t = time.process_time()
        try:
            return assemble(*args, **kwargs)
        finally:
            totals[0] += time.process_time() - t
            totals[1] += 1

    def restore() -> None:
        render.assemble_page = assemble

    render.assemble_page = timed_page
    return restore, totals


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.inprocess",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=positive_int, default=60_000, help="measured events")
    p.add_argument("--warm", type=int, default=0, help="unmeasured events applied first")
    p.add_argument("--per-message", type=positive_int, default=20,
                   help="events a message (the bench's backlog: 20; live traffic: ~2)")
    p.add_argument("--batch", type=positive_int, default=300, help="messages a batch")
    p.add_argument("--gc", choices=GC_MODES, default="worker")
    p.add_argument("--learner-mode", choices=("inline", "topic"), default="inline",
                   help="topic: encode the learning and changed pages (the bench's worker)")
    p.add_argument("--render-window-ms", type=float, default=1000.0)
    p.add_argument("--titles", type=positive_int, default=500)
    p.add_argument("--profiles", type=positive_int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.warm < 0:
        p.error("--warm must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line of measurements."""
    from homestream.blas import single_threaded

    single_threaded()  # as in the worker (numpy loads with the processor, after this)
    print(json.dumps(asyncio.run(measure(parse_args(argv)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
