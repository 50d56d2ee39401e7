"""``python -m bench.page``: time page assembly per page, against its own relevance step.

A micro benchmark of :func:`online_models.page.assemble_page`, the worker's per-page cost.
The first ``--ratings`` MovieLens-100K ratings are replayed in chunks of 100 through the
worker's :class:`~streams.processor.EventProcessor` in process (the evaluation's
:class:`~evaluation.movielens.inprocess.InProcessPipeline`: every chunk's members view
their page first, and the views are logged back as impressions), so the members' states,
the models and the learned row statistics are those of a running worker. Then the pages of
``--members`` members are assembled ``--repeats`` times with the models of the end of the
replay, and so is the relevance step alone (:func:`~online_models.page.relevance_indexed`,
which every page needs: the floor measured in the same run).

It prints one JSON line (milliseconds per page: mean, p50, p99; the floor's mean; their
ratio) and exits 1 when the ratio exceeds ``--max-ratio``: the rows, their selection and
their filling may cost at most that many times the relevance scoring they start from.
Ratios, not absolute times, compare across runs on a shared machine. ``--against FILE``
also times another version of ``online_models/page.py`` (say, a checkout of an older commit's)
on the same pages, interleaved page by page, and reports its mean and the ratio of the two
means (``against_ratio``: below 1, this version is faster); it exits 1 too when that ratio
exceeds ``--max-against-ratio`` (default 1: page assembly must not get slower).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from evaluation.movielens.data import event_time_ms, fetch_ml100k, load_ml100k, to_catalog
from evaluation.movielens.inprocess import InProcessPipeline
from evaluation.movielens.protocol import chunks_of
from features.keys import ALL_COUNTRIES
from homestream.settings import Settings
from online_models.page import assemble_page, relevance_indexed
from streams.render import PageRenderer, RenderInputs


def _replay(ratings: int, row_length: int) -> tuple[InProcessPipeline, list[str], int]:
    """The worker after ``ratings`` ratings with every chunk's page views logged; the
    members and the stream's event time at the end."""
    all_ratings, items = load_ml100k(fetch_ml100k(None))
    log = all_ratings[:ratings]
    rec = InProcessPipeline(to_catalog(items), Settings(partitions=1, row_length=row_length))
    for chunk in chunks_of(log, 100):
        for member in sorted({r.user for r in chunk}):
            rec.page(member, chunk[0].timestamp)
        rec.learn(chunk)
    members = sorted({r.user for r in log})
    return rec, members, max(event_time_ms(r.timestamp) for r in log)


def _load_page_module(path: Path) -> ModuleType:
    """Another version of ``online_models/page.py``, imported from ``path`` under its own
    module name (it uses the installed versions of every other module)."""
    spec = importlib.util.spec_from_file_location("bench_page_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def measure(ratings: int, members: int, repeats: int, row_length: int = 20,
            against: Path | None = None) -> dict[str, Any]:
    """Milliseconds per page and per relevance step (see the module docstring)."""
    rec, ids, now_ms = _replay(ratings, row_length)
    rec.close()
    proc = rec.processor
    # the in-memory store's reads need no particular event loop
    states = list(asyncio.run(proc.store.load_profiles(ids[:members])).values())
    trending, popular = asyncio.run(proc.renderer.popularity([ALL_COUNTRIES], now_ms))
    inp = RenderInputs(proc.catalog, proc.model, proc.cowatch, proc.row_utility, now_ms)
    config = proc.page_config_for(None)
    arr = inp.catalog.arrays()
    idx = np.arange(len(arr))
    pop_src = popular[ALL_COUNTRIES]
    top = pop_src[0][1] if pop_src else 1.0
    popularity = {t: s / top for t, s in pop_src}
    page_ms: list[float] = []
    floor_ms: list[float] = []
    other_ms: list[float] = []
    other = _load_page_module(against) if against is not None else None
    other_config = other.PageConfig(
        row_length=config.row_length, affinity_half_life_s=config.affinity_half_life_s,
        rules=config.rules, row_weights=config.row_weights) if other is not None else None
    for _ in range(repeats):
        for s in states:
            c = PageRenderer.country_of(s)
            if other is not None:
                t0 = time.perf_counter()
                other.assemble_page(s, inp.catalog, trending.get(c, []), inp.model.score_many,
                                    other_config, c, inp.now_ms, None, inp.cowatch,
                                    popular=pop_src)
                other_ms.append(1000 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            assemble_page(s, inp.catalog, trending.get(c, []), inp.model.score_many, config, c,
                          inp.now_ms, None, inp.cowatch, popular=pop_src)
            t1 = time.perf_counter()
            relevance_indexed(s, arr, idx, popularity, inp.model.score_many, inp.now_ms,
                              config, inp.cowatch)
            t2 = time.perf_counter()
            page_ms.append(1000 * (t1 - t0))
            floor_ms.append(1000 * (t2 - t1))
    page_ms.sort()
    mean_page, mean_floor = statistics.fmean(page_ms), statistics.fmean(floor_ms)
    out = {"ratings": ratings, "pages": len(page_ms), "page_ms_mean": round(mean_page, 3),
           "page_ms_p50": round(page_ms[len(page_ms) // 2], 3),
           "page_ms_p99": round(page_ms[int(0.99 * (len(page_ms) - 1))], 3),
           "relevance_ms_mean": round(mean_floor, 3),
           "ratio_to_relevance": round(mean_page / mean_floor, 2)}
    if other_ms:
        other_ms.sort()
        out["against_ms_mean"] = round(statistics.fmean(other_ms), 3)
        out["against_ms_p50"] = round(other_ms[len(other_ms) // 2], 3)
        out["against_ratio"] = round(mean_page / statistics.fmean(other_ms), 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the timings as one JSON line; exit 1 when the ratio target is missed."""
    p = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratings", type=int, default=20_000)
    p.add_argument("--members", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-ratio", type=float, default=8.0,
                   help="most a page may cost, in relevance steps (default 8)")
    p.add_argument("--max-against-ratio", type=float, default=1.0,
                   help="with --against: most this version's mean may be of the other's")
    p.add_argument("--against", type=Path, default=None, metavar="PAGE_PY",
                   help="also time this other online_models/page.py on the same pages")
    args = p.parse_args(argv)
    result = measure(args.ratings, args.members, args.repeats, against=args.against)
    result["max_ratio"] = args.max_ratio
    print(json.dumps(result))
    slower = result.get("against_ratio", 0.0) > args.max_against_ratio
    return 0 if result["ratio_to_relevance"] <= args.max_ratio and not slower else 1


if __name__ == "__main__":
    sys.exit(main())
