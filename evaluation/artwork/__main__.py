"""``python -m evaluation.artwork [--quick]``: the OBD check, the simulated population on the
real pipeline for each policy, offline evaluation on the pipeline's own logs, and
``docs/artwork.md`` with ``docs/artwork_take_fraction.png``.

Exits 1 when the pipeline (or the OBD check) could not run; a ranking of the policies other
than the expected one is reported, not treated as a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import pickle
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from evaluation.artwork.logs import DrawRepeats, draw_repeats, evaluate_logs, is_uniform_logging
from evaluation.artwork.report import (
    ArtworkResults,
    RunSummary,
    replay_vs_online,
    write_report,
)
from evaluation.artwork.simulate import (
    IMAGE_TAGS,
    PolicyRun,
    PreferenceModel,
    SimConfig,
    run_policy,
    take_fraction,
)
from evaluation.obd.check import BtsCheck, ContextualComparison
from evaluation.published import OBD_BTS
from online_models.bandits import POLICIES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES = ("uniform", "non_contextual", "epsilon_greedy", "lin_ucb")
DEFAULT_CANDIDATES = ("uniform", "non_contextual", "epsilon_greedy", "lin_ucb")
CONTEXTUAL = ("lin_ucb", "epsilon_greedy", "thompson")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.artwork", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="short runs (40 s per policy, 1000 members visiting every 8-12 s), "
                        "10,000 BTS slates, offline on 15,000 rounds")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                   help="policies to run online, in order (comma-separated)")
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                   help="policies to evaluate offline on each run's logs")
    p.add_argument("--seconds", type=float, default=None,
                   help="visit loop per policy (default 150, quick 40)")
    p.add_argument("--members", type=int, default=None, help="simulated members (default 2000)")
    p.add_argument("--titles-per-genre", type=int, default=None)
    p.add_argument("--p-match", type=float, default=0.30)
    p.add_argument("--p-other", type=float, default=0.10)
    p.add_argument("--other-genre-factor", type=float, default=1.0,
                   help="take multiplier for a title outside the member's favourite genre "
                        "(default 1: the take depends on the image only; < 1 lets the page "
                        "mix, which follows the member's plays, move it)")
    p.add_argument("--bucket", type=int, default=len(IMAGE_TAGS),
                   help="run the policies other than uniform on every N-th member only (default "
                        "%(default)s = images per title: as many decisions as replay's matched "
                        "rounds on the uniform logs, over the same time); 1 = every member")
    p.add_argument("--fill-uniform", action=argparse.BooleanOptionalAction, default=True,
                   help="in a bucket run, the other members still visit, served uniform images "
                        "by a second server the worker does not learn from (default on)")
    p.add_argument("--offline-max-rounds", type=int, default=None,
                   help="rounds used by IPS/SNIPS/DR (default 60,000, quick 15,000; 0 = all)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--delayed-positives", action=argparse.BooleanOptionalAction, default=None,
                   help="run the worker with HOMESTREAM_ARTWORK_DELAYED_POSITIVES on / off "
                        "(default: the setting's default)")
    p.add_argument("--skip-obd", action="store_true")
    p.add_argument("--cache-dir", default=None, help="OBD cache (default ~/.cache/homestream/obd)")
    p.add_argument("--out", default=str(ROOT / "docs" / "artwork.md"))
    p.add_argument("--json", default=None,
                   help="also write the raw numbers here (default: <log dir>/artwork.json)")
    p.add_argument("--render", default=None, metavar="PICKLE",
                   help="only re-render the document from a results.pickle of an earlier run")
    return p


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _machine() -> str:
    return (f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation (or, with ``--render``, only re-write its report); exit status 1
    when a part failed."""
    args = build_parser().parse_args(argv)
    if args.render:
        with open(args.render, "rb") as f:
            saved = pickle.load(f)
        _say("wrote " + ", ".join(str(p) for p in write_report(saved, Path(args.out))))
        return 1 if saved.failures else 0
    started = time.perf_counter()
    policies = [p for p in args.policies.split(",") if p]
    candidates = [p for p in args.candidates.split(",") if p]
    for name in (*policies, *candidates):
        if name not in POLICIES:
            build_parser().error(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    if args.bucket < 1:
        build_parser().error("--bucket must be >= 1")
    max_rounds = args.offline_max_rounds
    if max_rounds is None:
        max_rounds = 15_000 if args.quick else 60_000
    base = _base_config(args)
    log_root = Path(tempfile.mkdtemp(prefix="homestream-artwork-eval-"))
    _say(f"logs and raw results under {log_root}")
    failures: list[str] = []
    runtime: dict[str, float] = {}
    t = time.perf_counter()
    check, comparison = _obd(args, failures)
    runtime["obd"] = time.perf_counter() - t
    t = time.perf_counter()
    runs = _simulations(args, base, policies, log_root, failures)
    runtime["simulations"] = time.perf_counter() - t
    t = time.perf_counter()
    offline, replay_online, draw_check = _offline(args, runs, candidates, max_rounds, failures)
    runtime["offline"] = time.perf_counter() - t

    # the report
    t = time.perf_counter()
    summaries = [RunSummary.from_run(r) for r in runs.values()]
    contextual = [r for r in summaries if r.policy in CONTEXTUAL]
    best_ctx = max(contextual, key=lambda r: r.take.value).policy if contextual else "n/a"
    config = {**base.to_dict(), "bucket": args.bucket, "policies": policies,
              "candidates": candidates,
              "offline_max_rounds": max_rounds or None,
              "notes": _notes(runs, summaries, best_ctx)}
    given = list(sys.argv[1:] if argv is None else argv)  # [] from the front door: no flags
    command = "python -m evaluation artwork" + (f" {shlex.join(given)}" if given else "")
    res = ArtworkResults(
        command=command.rstrip(), generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        quick=args.quick, config=config, runs=summaries, offline=offline,
        replay_online=replay_online, obd_check=check, obd_comparison=comparison,
        draw_check=draw_check, runtime_s=runtime, failures=failures, machine=_machine(),
        contextual=best_ctx)
    runtime["report"] = 0.0
    runtime["total"] = time.perf_counter() - started
    written = write_report(res, Path(args.out))
    runtime["report"] = time.perf_counter() - t
    runtime["total"] = time.perf_counter() - started
    written = write_report(res, Path(args.out))  # again, with the final runtime
    with (log_root / "results.pickle").open("wb") as f:
        pickle.dump(res, f)  # for --render
    raw = Path(args.json) if args.json else log_root / "artwork.json"
    raw.write_text(json.dumps({
        "runtime_s": runtime, "failures": failures, "config": config,
        "runs": {p: r.to_dict() for p, r in runs.items()},
        "offline": [o.to_dict() for o in offline],
        "obd": {"bts_check": check.to_dict() if check else None,
                "contextual": comparison.to_dict() if comparison else None},
    }, indent=2, default=str))
    _say("wrote " + ", ".join(str(p) for p in [*written, raw]))
    _say(f"total {runtime['total']:.0f} s; " + ("FAILED: " + "; ".join(failures) if failures
                                                 else "ok"))
    return 1 if failures else 0


def _base_config(args: argparse.Namespace) -> SimConfig:
    """The simulation settings shared by every policy's run."""
    overrides: dict[str, object] = {}
    if args.quick:  # fewer members visiting more often: the same load, more visits each
        overrides.update(members=1000, visit_interval_s=(8.0, 12.0))
    if args.members:
        overrides["members"] = args.members
    if args.titles_per_genre:
        overrides["titles_per_genre"] = args.titles_per_genre
    if args.delayed_positives is not None:
        overrides["delayed_positives"] = args.delayed_positives
    return SimConfig(
        seconds=args.seconds or (40.0 if args.quick else 150.0), seed=args.seed,
        preference=PreferenceModel(args.p_match, args.p_other, args.other_genre_factor),
        **overrides)  # type: ignore[arg-type]


def _obd(args: argparse.Namespace, failures: list[str]
         ) -> tuple[BtsCheck | None, ContextualComparison | None]:
    """1. The OBD check (a failure is recorded in ``failures``, not raised)."""
    if args.skip_obd:
        return None, None
    try:
        from evaluation.obd import fetch_obd, run_bts_check, run_contextual_comparison

        fetch_obd(args.cache_dir)
        check = run_bts_check(args.cache_dir, n_sim=10_000 if args.quick else 100_000)
        comparison = run_contextual_comparison(args.cache_dir)
        _say(f"OBD: BTS IPS {check.ips} (published {OBD_BTS['ipw']}, "
             f"true {OBD_BTS['true']})")
        return check, comparison
    except Exception as exc:  # reported in the document and in the exit status
        failures.append(f"OBD check failed: {type(exc).__name__}: {exc}")
        _say(failures[-1])
        return None, None


def _simulations(args: argparse.Namespace, base: SimConfig, policies: Sequence[str],
                 log_root: Path, failures: list[str]) -> dict[str, PolicyRun]:
    """2. Each policy on the real pipeline (failures recorded, the others still run)."""
    runs: dict[str, PolicyRun] = {}
    for policy in policies:
        cfg = dataclasses.replace(base, policy=policy,
                                  bucket=1 if policy == "uniform" else args.bucket,
                                  fill_uniform=args.fill_uniform)
        try:
            runs[policy] = run_policy(cfg, log_root / policy, progress=_say)
        except Exception as exc:
            failures.append(f"simulation of {policy} failed: {type(exc).__name__}: {exc}")
            _say(failures[-1])
            traceback.print_exc()
    return runs


def _offline(args: argparse.Namespace, runs: dict[str, PolicyRun], candidates: Sequence[str],
             max_rounds: int, failures: list[str]) -> tuple[list, list, DrawRepeats | None]:
    """3. Offline evaluation on each run's logs, and replay against the online runs."""
    offline: list = []
    replay_online: list = []
    draw_check = None
    for policy, run in runs.items():
        if len(run.rounds) < 2:
            failures.append(f"{policy}: fewer than two logged rounds")
            continue
        _say(f"offline evaluation on the {policy} run's {len(run.rounds):,} rounds")
        results = evaluate_logs(run.rounds, candidates, max_rounds=max_rounds or None,
                                timing_stretch=1 if args.bucket > 1 else None,
                                progress=_say)
        offline.extend(results)
        if is_uniform_logging(run.rounds):
            draw_check = draw_check or draw_repeats(run.rounds)
            for cand in candidates:
                if cand in runs:
                    mine = [res for res in results if res.target == cand
                            and any(k.startswith("replay") for k in res.estimates)]
                    # with buckets every run spans the logging run's time: whole runs
                    replay_online.append(replay_vs_online(mine, runs[cand],
                                                          bucket=args.bucket > 1))
    return offline, replay_online, draw_check


def _notes(runs: dict[str, PolicyRun], summaries: Sequence[RunSummary], best_ctx: str) -> list[str]:
    """Findings computed from the runs, for the report."""
    notes = []
    ctx = [s for s in summaries if s.policy in CONTEXTUAL]
    if ctx:
        listed = ", ".join(f"`{s.policy}` {s.take.value:.4f}" for s in ctx)
        notes.append(f"Contextual policy: `{best_ctx}` has the highest online take fraction of "
                     f"the contextual policies run ({listed}).")
    for policy, run in runs.items():
        n = len(run.outcomes)
        if policy == "uniform" or n < 20:
            continue
        k = n // 10
        first = take_fraction(run.outcomes[:k], run.member_index[:k])
        rest = take_fraction(run.outcomes[k:], run.member_index[k:])
        notes.append(f"`{policy}`: take fraction {first.value:.4f} over the first 10% of the "
                     f"items seen, {rest.value:.4f} over the rest.")
    for s in summaries:
        e = s.expected
        gap = e.get("oracle", math.nan) - e.get("random", math.nan)
        if s.policy != "uniform" and gap > 0:
            share = (e["shown"] - e["random"]) / gap
            notes.append(f"`{s.policy}` closed {share:.0%} of the gap between random images and "
                         "each member's best image (preference-model values over the items it "
                         "served).")
    return notes


if __name__ == "__main__":
    sys.exit(main())
