"""``python -m bench.row_kinds``: which row kinds members' pages carry after simulated traffic.

A diagnostic, not a benchmark (no target): the player simulator's events, Avro-encoded as
players send them, go through the worker's :class:`~streams.processor.EventProcessor` on
an in-memory store (no broker, no Redis), in micro-batches of ``--batch`` messages; then it
prints one JSON line: how many personal pages there are, how many carry each row kind, and
how many lack each required kind (``Rules.required_rows``). The README's figures for the
required rows come from::

    python -m bench.row_kinds --members 200 --events 30000
    python -m bench.row_kinds --members 50 --events 5000
    HOMESTREAM_RULES_FILE=<file with {"required_rows": []}> python -m bench.row_kinds ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from features.store import InMemoryStore
from homestream.player.simulator import PlayerSimulator, synthetic_catalog, synthetic_profiles
from homestream.settings import load_settings
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from topics.codec import default_codec


async def row_kinds(members: int, events: int, titles: int = 400, batch: int = 500,
                    seed: int = 1) -> dict[str, Any]:
    """Run the traffic through a processor and count the row kinds of the pages it wrote."""
    settings = load_settings()
    catalog = synthetic_catalog(titles, seed=seed)
    sim = PlayerSimulator(catalog, synthetic_profiles(members, seed=seed + 1), seed=seed + 2)
    stream = list(sim.events_stream(events, int(time.time() * 1000) - 3_600_000))
    last_ms = max(e.event_ts_ms for e in stream)
    store = InMemoryStore()
    await store.put_titles(catalog)
    proc = EventProcessor(settings, store, MemoryDeadLetters(),
                          clock=lambda: last_ms / 1000 + 0.2)
    codec = default_codec()
    for start in range(0, len(stream), batch):
        await proc.process([
            RawMessage("events", 0, start + i, e.profile_id.encode(), codec.encode_event(e))
            for i, e in enumerate(stream[start:start + batch])])
    kinds: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    required = proc.page_config.rules.required_rows
    for raw in store.pages.values():
        on_page = {r["kind"] for r in orjson.loads(raw)["rows"]}
        kinds.update(on_page)
        missing.update(k for k in required if k not in on_page)
    return {"members": members, "events": len(stream), "pages": len(store.pages),
            "required_rows": list(required), "pages_with_kind": dict(sorted(kinds.items())),
            "pages_missing_required": dict(sorted(missing.items()))}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the row-kind counts as one JSON line."""
    p = argparse.ArgumentParser(prog="python -m bench.row_kinds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=200)
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--titles", type=int, default=400)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    result = asyncio.run(row_kinds(args.members, args.events, args.titles, seed=args.seed))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
