"""Checkpoint cost: each model's ``to_bytes()`` / ``from_bytes()`` against ``pickle`` of the
same object, in one process (the pickle is the floor: the format before checkpoints were
data).

``python -m bench.checkpoints [--profiles N] [--titles N] [--watches N] [--max-ratio R]``
prints one JSON line per model (bytes, write and read seconds, both formats, their ratio)
and exits 1 when a model's write + read takes more than ``--max-ratio`` times pickle's. Ratios
within one run are what to compare on a shared machine, not seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import pickle  # the floor being compared against; never used to read a checkpoint
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from online_models.bandits import ArtworkPolicy, make_policy
from online_models.bandits.base import Arm
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel


def top_picks(profiles: int, titles: int) -> TopPicksModel:
    """Top Picks with ``profiles`` and ``titles`` learned factors (random values)."""
    model = TopPicksModel(n_factors=16)
    mf, rng = model._mf, np.random.default_rng(0)
    for i in range(profiles):
        mf.u_latents[f"profile-{i}"] = rng.normal(size=16)
        mf.u_biases[f"profile-{i}"] = 0.1
    for i in range(titles):
        mf.i_latents[f"title-{i}"] = rng.normal(size=16)
        mf.i_biases[f"title-{i}"] = 0.1
    return model


def co_watch(watches: int, titles: int) -> CoWatchSimilarity:
    """Co-watch counts of ``watches`` random watches, five titles of history each."""
    cw, rng = CoWatchSimilarity(), random.Random(0)
    for _ in range(watches):
        cw.learn_one([f"t{rng.randrange(titles)}" for _ in range(5)], f"t{rng.randrange(titles)}")
    return cw


def lin_ucb(rewards: int, titles: int) -> ArtworkPolicy:
    """The default artwork policy after ``rewards`` rewards over ``titles`` titles' images."""
    policy, rng = make_policy("lin_ucb", seed=1), random.Random(0)
    for i in range(rewards):
        context = {"genre:Comedy": rng.random(), "genre:Drama": rng.random(),
                   "country": "US", "hour": i % 24}
        tag = ("comedy", "drama", "cast")[i % 3]
        policy.learn_one(context, Arm(f"t{i % titles}-{i % 3}", (tag,)),
                         float(rng.random() < 0.3))
    return policy


def measure(name: str, model: Any, read: Callable[[bytes], Any]) -> dict[str, Any]:
    """Sizes and seconds of both formats for ``model``."""
    t0 = time.perf_counter()
    data = model.to_bytes()
    t1 = time.perf_counter()
    read(data)
    t2 = time.perf_counter()
    floor = pickle.dumps(model)
    t3 = time.perf_counter()
    pickle.loads(floor)
    t4 = time.perf_counter()
    ratio = (t2 - t0) / max(t4 - t2, 1e-9)
    return {"model": name, "bytes": len(data), "write_s": round(t1 - t0, 3),
            "read_s": round(t2 - t1, 3), "pickle_bytes": len(floor),
            "pickle_write_s": round(t3 - t2, 3), "pickle_read_s": round(t4 - t3, 3),
            "ratio": round(ratio, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoints", description=__doc__)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--titles", type=int, default=5_000)
    parser.add_argument("--watches", type=int, default=200_000)
    parser.add_argument("--rewards", type=int, default=5_000)
    parser.add_argument("--max-ratio", type=float, default=2.0,
                        help="largest write + read time allowed, in pickle's")
    args = parser.parse_args(argv)
    rows = [
        measure("top-picks", top_picks(args.profiles, args.titles), TopPicksModel.from_bytes),
        measure("co-watch", co_watch(args.watches, args.titles), CoWatchSimilarity.from_bytes),
        measure("artwork-policy", lin_ucb(args.rewards, args.titles // 5),
                ArtworkPolicy.from_bytes),
    ]
    missed = [r["model"] for r in rows if r["ratio"] > args.max_ratio]
    for row in rows:
        print(json.dumps(row))
    if missed:
        print(f"slower than {args.max_ratio}x pickle: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
