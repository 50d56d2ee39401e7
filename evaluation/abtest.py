"""A/B testing: deterministic variant assignment and per-variant engagement from the streams.

Assignment (:func:`assign_variant`) is a pure function of the member and the experiment's
salt: ``blake2b(salt NUL profile_id)`` read as a number in ``[0, 1)`` and mapped onto the
variants' cumulative shares (variants in name order, so reordering the mapping does not
reassign anyone). The same member always gets the same variant in one experiment; a new
salt reshuffles everyone independently of other experiments.

Metrics (:func:`variant_metrics`) come from the two event streams, as logged: impressions
(each carries the ``variant`` that served it) and plays.

* **Take rate**: impressions followed by a play ``start`` of the same title by the same
  member within ``window_s`` seconds (event time; ``0 <= play - impression <= window``),
  over impressions. Each impression is judged on its own, so one play can take several
  impressions of its title that preceded it within the window.
* **Plays per impression**: play starts by the variant's members from their first
  impression on, over the variant's impressions.

Both are ratios of sums over members, so impressions of one member are not treated as
independent: the 95% interval is the delta-method (cluster-robust) one for a ratio of
means with the member as the unit (Deng, Knoblich and Lu, 2018), see :func:`ratio_ci`.
Members whose impressions carry more than one variant (an assignment leak) are left out
and counted. Events are deduplicated by ``event_id`` (the streams are at-least-once).

:func:`compare` gives the difference of a metric between a variant and the control with a
95% interval (independent groups: the standard errors add in quadrature).

``python -m evaluation.abtest --bootstrap-servers HOST:PORT --topic-prefix homestream.``
reads the impressions and player-events topics from the beginning up to their current end
and prints the table.

>>> assign_variant("p1", "exp-1", {"control": 0.5, "treatment": 0.5}) in {"control",
...                                                                      "treatment"}
True
>>> assign_variant("p1", "exp-1", {"a": 1.0})
'a'
"""

from __future__ import annotations

import argparse
import math
import sys
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from evaluation.stats import Z95, Interval
from online_models.experiments import assign_variant, bucket  # the pipeline's own
from topics.models import Event, Impression, Play

__all__ = [
    "Comparison",
    "RatioStat",
    "VariantMetrics",
    "assign_variant",
    "bucket",
    "compare",
    "main",
    "ratio_ci",
    "render_table",
    "variant_metrics",
]

@dataclass(frozen=True)
class RatioStat:
    """``sum(y) / sum(x)`` over units with its 95% delta-method interval."""

    value: float
    low: float
    high: float
    numerator: float
    denominator: float
    units: int

    @property
    def se(self) -> float:
        return (self.high - self.value) / Z95 if math.isfinite(self.high) else math.nan

    @property
    def interval(self) -> Interval:
        """The interval as the evaluations' one interval type."""
        return Interval(self.value, self.low, self.high, self.se)


def ratio_ci(ys: Sequence[float], xs: Sequence[float], z: float = Z95) -> RatioStat:
    """Ratio of sums with a delta-method interval, one ``(y, x)`` pair per unit (member).

    ``r = sum(y) / sum(x)``; ``Var(r) ~= sum((y_i - r x_i)^2) / (n (n - 1) xbar^2)``, the
    usual linearization of a ratio of means with the sample variance of the residuals
    ``y_i - r x_i``. With fewer than two units the interval is ``nan``.

    Examples
    --------
    Three members: (taken, impressions) = (1, 2), (0, 2), (2, 4): r = 3/8 = 0.375;
    residuals 0.25, -0.75, 0.5; sum of squares 0.875; xbar = 8/3;
    Var = 0.875 / (3 * 2 * 64/9) = 0.0205; se = 0.1432.

    >>> s = ratio_ci([1, 0, 2], [2, 2, 4])
    >>> round(s.value, 4), round(s.se, 4)
    (0.375, 0.1432)
    """
    if len(ys) != len(xs):
        raise ValueError("ys and xs must have the same length")
    n = len(xs)
    sx, sy = float(sum(xs)), float(sum(ys))
    if n == 0 or sx <= 0:
        return RatioStat(math.nan, math.nan, math.nan, sy, sx, n)
    r = sy / sx
    if n < 2:
        return RatioStat(r, math.nan, math.nan, sy, sx, n)
    xbar = sx / n
    ss = sum((y - r * x) ** 2 for y, x in zip(ys, xs, strict=True))
    se = math.sqrt(ss / (n * (n - 1))) / xbar
    return RatioStat(r, r - z * se, r + z * se, sy, sx, n)


@dataclass(frozen=True)
class VariantMetrics:
    """Engagement of one variant."""

    variant: str
    members: int
    impressions: int
    taken: int
    plays: int
    take_rate: RatioStat
    plays_per_impression: RatioStat


@dataclass(frozen=True)
class Comparison:
    """``treatment - control`` of one metric, with a 95% interval and the relative lift."""

    metric: str
    control: str
    treatment: str
    control_value: float
    treatment_value: float
    difference: float
    low: float
    high: float

    @property
    def relative(self) -> float:
        return self.difference / self.control_value if self.control_value else math.nan

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def variant_metrics(events: Iterable[Event], window_s: float = 3600.0
                    ) -> tuple[dict[str, VariantMetrics], int]:
    """Per-variant take rate and plays per impression from impression and play events
    (other event types are ignored). Returns the metrics by variant and the number of
    members left out because their impressions carried several variants."""
    window_ms = window_s * 1000.0
    seen: set[str] = set()
    imps: dict[str, list[Impression]] = defaultdict(list)
    starts: dict[tuple[str, str], list[int]] = defaultdict(list)
    member_starts: dict[str, list[int]] = defaultdict(list)
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if isinstance(ev, Impression):
            imps[ev.profile_id].append(ev)
        elif isinstance(ev, Play) and ev.action == "start":
            starts[(ev.profile_id, ev.title_id)].append(ev.event_ts_ms)
            member_starts[ev.profile_id].append(ev.event_ts_ms)
    for lst in (*starts.values(), *member_starts.values()):
        lst.sort()
    per_variant: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    leaked = 0
    for member, shown in imps.items():
        variants = {i.variant for i in shown}
        if len(variants) > 1:
            leaked += 1
            continue
        taken = 0
        for imp in shown:
            ts = starts.get((member, imp.title_id), [])
            k = bisect_left(ts, imp.event_ts_ms)
            if k < len(ts) and ts[k] - imp.event_ts_ms <= window_ms:
                taken += 1
        first = min(i.event_ts_ms for i in shown)
        ms = member_starts.get(member, [])
        plays = len(ms) - bisect_left(ms, first)
        per_variant[variants.pop()].append((taken, len(shown), plays))
    out = {}
    for variant, rows in sorted(per_variant.items()):
        taken = [r[0] for r in rows]
        shown = [r[1] for r in rows]
        plays = [r[2] for r in rows]
        out[variant] = VariantMetrics(
            variant=variant, members=len(rows), impressions=sum(shown), taken=sum(taken),
            plays=sum(plays), take_rate=ratio_ci(taken, shown),
            plays_per_impression=ratio_ci(plays, shown))
    return out, leaked


def compare(metrics: Mapping[str, VariantMetrics], control: str = "control",
            metric: str = "take_rate", z: float = Z95) -> list[Comparison]:
    """Each non-control variant against ``control`` on ``metric`` (``take_rate`` or
    ``plays_per_impression``): the difference with a 95% interval.

    Examples
    --------
    Control 10/100, treatment 15/100, hand-made standard errors 0.03 and 0.04: the
    difference 0.05 has se 0.05, so the interval is 0.05 +/- 0.098.

    >>> def vm(v, r, se):
    ...     s = RatioStat(r, r - Z95 * se, r + Z95 * se, r * 100, 100, 10)
    ...     return VariantMetrics(v, 10, 100, int(r * 100), 0, s, s)
    >>> c = compare({"control": vm("control", 0.10, 0.03), "b": vm("b", 0.15, 0.04)})[0]
    >>> round(c.difference, 3), round(c.low, 3), round(c.high, 3), c.significant
    (0.05, -0.048, 0.148, False)
    """
    if control not in metrics:
        raise ValueError(f"no control variant {control!r} among {sorted(metrics)}")
    c: RatioStat = getattr(metrics[control], metric)
    out = []
    for name, vm in sorted(metrics.items()):
        if name == control:
            continue
        t: RatioStat = getattr(vm, metric)
        diff = t.value - c.value
        se = math.sqrt(t.se**2 + c.se**2)
        out.append(Comparison(metric, control, name, c.value, t.value, diff,
                              diff - z * se, diff + z * se))
    return out


def render_table(metrics: Mapping[str, VariantMetrics], control: str = "control",
                 leaked: int = 0) -> str:
    """The per-variant table and the comparisons, as plain text."""

    def ci(s: RatioStat) -> str:
        if math.isnan(s.value):
            return "n/a"
        if math.isnan(s.low):
            return f"{s.value:.4f}"
        return f"{s.value:.4f} [{s.low:.4f}, {s.high:.4f}]"

    lines = [f"{'variant':<14}{'members':>9}{'impressions':>13}{'taken':>8}{'plays':>8}  "
             f"{'take rate [95% CI]':<28}plays/impression [95% CI]"]
    for name, vm in sorted(metrics.items()):
        lines.append(f"{name:<14}{vm.members:>9}{vm.impressions:>13}{vm.taken:>8}"
                     f"{vm.plays:>8}  {ci(vm.take_rate):<28}{ci(vm.plays_per_impression)}")
    if control in metrics and len(metrics) > 1:
        lines.append("")
        lines.append(f"against {control}:")
        for metric in ("take_rate", "plays_per_impression"):
            for c in compare(metrics, control, metric):
                rel = f"{c.relative:+.1%}" if math.isfinite(c.relative) else "n/a"
                lines.append(f"  {c.treatment:<12}{metric:<22}{c.difference:+.4f} "
                             f"[{c.low:+.4f}, {c.high:+.4f}] ({rel})"
                             + ("  significant" if c.significant else ""))
    if leaked:
        lines.append(f"\n{leaked} member(s) left out: impressions from several variants")
    return "\n".join(lines)


# -- CLI --------------------------------------------------------------------------------------
def read_events(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = 60.0
                ) -> tuple[list[Event], int]:
    """Every event on ``topics`` from offset 0 up to their end
    (:func:`topics.reader.read_topics`), and the number of messages that could not be
    decoded."""
    from topics.codec import DecodeError, default_codec
    from topics.reader import read_topics

    codec = default_codec()
    events: list[Event] = []
    bad = 0
    for msg in read_topics(bootstrap_servers, topics, timeout_s=timeout_s,
                           group_prefix="abtest"):
        try:
            events.extend(codec.decode_events(msg.value()))
        except DecodeError:
            bad += 1
    return events, bad


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.abtest",
                                description="Per-variant engagement from the event topics.")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic-prefix", default="homestream.")
    p.add_argument("--window-s", type=float, default=3600.0,
                   help="a play counts for an impression within this many seconds after it")
    p.add_argument("--control", default="control")
    p.add_argument("--timeout-s", type=float, default=60.0)
    args = p.parse_args(argv)
    topics = [f"{args.topic_prefix}impressions", f"{args.topic_prefix}player-events"]
    events, bad = read_events(args.bootstrap_servers, topics, args.timeout_s)
    metrics, leaked = variant_metrics(events, args.window_s)
    print(f"{len(events)} events read from {', '.join(topics)}"
          + (f" ({bad} undecodable messages skipped)" if bad else ""))
    if not metrics:
        print("no impressions: nothing to compare")
        return 1
    print(render_table(metrics, args.control, leaked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
