"""docs/evaluation.md and its plots, from a :class:`Report`. Pure (returns strings).

Plots are PNG (matplotlib): one line per method of Recall@M-by-5 against M.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.movielens.baselines import RatingScore
from evaluation.movielens.protocol import M_MAX, PageMetrics
from evaluation.published import RIVER_MOVIELENS

COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f")


def report_from_json(data: dict) -> Report:
    """A :class:`Report` from the raw numbers ``--json`` wrote (``dataclasses.asdict``)."""

    def stat(v: list | tuple) -> tuple[float, float, float]:
        return (float(v[0]), float(v[1]), float(v[2]))

    def metrics(d: dict) -> PageMetrics:
        m = PageMetrics(**{k: v for k, v in d.items() if k in PageMetrics.__dataclass_fields__})
        m.recall = {int(k): stat(v) for k, v in d["recall"].items()}
        m.recall_reco_rows = {int(k): stat(v) for k, v in d["recall_reco_rows"].items()}
        m.recall_late = {int(k): stat(v) for k, v in d.get("recall_late", {}).items()}
        m.recall_3x4, m.ndcg10, m.diversity = (stat(d["recall_3x4"]), stat(d["ndcg10"]),
                                               stat(d["diversity"]))
        return m

    runs = [ChunkRun(**{**r, "results": [metrics(m) for m in r["results"]]})
            for r in data["runs"]]
    scores = [RatingScore(**s) for s in data["rating_scores"]]
    return Report(**{**data, "runs": runs, "rating_scores": scores})


@dataclass
class ChunkRun:
    """The page protocol run with one chunking, for every method."""

    label: str
    description: str
    chunks: int
    results: list[PageMetrics]
    seconds: dict[str, float] = field(default_factory=dict)
    plot: str = ""


@dataclass
class Report:
    """Everything docs/evaluation.md shows."""

    command: str
    generated: str
    ratings: int
    members: int
    titles: int
    first_day: str
    last_day: str
    rating_scores: list[RatingScore]
    runs: list[ChunkRun]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def _ci(stat: tuple[float, float, float], digits: int = 3) -> str:
    mean, lo, hi = stat
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return not (a[1] > b[2] or b[1] > a[2])


def compare(target: PageMetrics, others: Sequence[PageMetrics], m: int = 5) -> list[str]:
    """Sentences saying where ``target`` beats, ties or trails each other method on
    Recall@``m``-by-5 (by whether the 95% intervals overlap)."""
    out = []
    t = target.recall[m]
    for o in others:
        if o is target:
            continue
        s = o.recall[m]
        if _overlap(t, s):
            verdict = "is within the uncertainty of"
        elif t[0] > s[0]:
            verdict = "**beats**"
        else:
            verdict = "**trails**"
        out.append(f"{target.name} ({t[0]:.3f}) {verdict} {o.name} ({s[0]:.3f})")
    return out


def png_recall_plot(results: Sequence[PageMetrics], title: str, path: Path) -> None:
    """Write Recall@M-by-5 against M for each method as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for i, r in enumerate(results):
        ms = [m for m in sorted(r.recall) if not math.isnan(r.recall[m][0])]
        ax.plot(ms, [r.recall[m][0] for m in ms], marker="o", markersize=3,
                color=COLORS[i % len(COLORS)], label=r.name)
    ax.set_xlim(1, M_MAX)
    ax.set_xticks(range(1, M_MAX + 1))
    ax.set_xlabel("M (rows of the page, first 5 titles of each)")
    ax.set_ylabel("Recall@M-by-5")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _run_section(run: ChunkRun) -> list[str]:
    lines = [f"### Chunks: {run.description}", ""]
    head = run.results[0] if run.results else None
    if head is not None:
        lines += [f"{run.chunks} chunks; {head.page_views} page views of {head.members} "
                  f"members scored (the same for every method); on average "
                  f"{head.mean_relevant:.1f} relevant titles per page view; a random page of "
                  f"25 unseen titles would get Recall@5-by-5 = "
                  f"{head.random_recall_5x5:.4f} in expectation.", ""]
    lines += [
        "| method | R@1x5 | R@3x5 | R@5x5 | R@10x5 | R@3x4 | R@5x5 without Continue Watching "
        "| NDCG@10 primary row | coverage (10x5) | diversity (10x5) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in run.results:
        lines.append(
            f"| {r.name} | {_f(r.recall[1][0])} | {_f(r.recall[3][0])} | {_ci(r.recall[5])} "
            f"| {_ci(r.recall[10])} | {_f(r.recall_3x4[0])} | {_f(r.recall_reco_rows[5][0])} "
            f"| {_ci(r.ndcg10)} | {_f(r.coverage)} | {_f(r.diversity[0])} "
            f"| {run.seconds.get(r.name, math.nan):.0f} |")
    lines += ["", "Recall@M-by-5 for every M (mean over page views):", "",
              "| method | " + " | ".join(f"M={m}" for m in range(1, M_MAX + 1)) + " |",
              "|---|" + "---|" * M_MAX]
    for r in run.results:
        lines.append(f"| {r.name} | "
                     + " | ".join(_f(r.recall[m][0]) for m in range(1, M_MAX + 1)) + " |")
    pipes = [r for r in run.results if r.name.startswith("pipeline")]
    pipe = pipes[0] if pipes else None
    if pipe is not None:
        lines += ["", "The pipeline without its Continue Watching rows (the rows below move up):",
                  "", "| method | " + " | ".join(f"M={m}" for m in range(1, M_MAX + 1)) + " |",
                  "|---|" + "---|" * M_MAX]
        lines += [f"| {p.name}, recommendation rows | "
                  + " | ".join(_f(p.recall_reco_rows[m][0]) for m in range(1, M_MAX + 1))
                  + " |" for p in pipes]
        lines += _kind_table(pipe)
        lines += ["", "Recall@5-by-5, the pipeline against each method (95% intervals):", ""]
        for target in run.results:
            if target.name.startswith("pipeline"):
                lines += [f"- {s}" for s in compare(target, run.results)]
    lines += _late_table(run)
    if run.plot:
        lines += ["", f"![Recall@M-by-5, {run.description}]({run.plot})"]
    return [*lines, ""]


def _kind_table(pipe: PageMetrics) -> list[str]:
    """Where the pipeline's hits come from, and each row kind's marginal gain."""
    if not pipe.kind_rows:
        return []
    total_hits = sum(pipe.kind_hits.values()) or 1
    views = max(1, pipe.page_views)
    lines = ["", f"Where `{pipe.name}`'s hits come from, by row kind (first 10 rows x 5 "
             "columns of every page view). *Marginal gain*: the share of the page view's "
             "relevant titles a row adds to the rows above it, per row shown and summed per "
             "page view (the kinds' sums add up to R@10x5):", "",
             "| row kind | rows shown | per page view | relevant titles found "
             "| share of all found | found per row shown | marginal gain per row "
             "| marginal gain per page view |", "|---|---|---|---|---|---|---|---|"]
    for kind, n in sorted(pipe.kind_rows.items(), key=lambda kv: -kv[1]):
        h = pipe.kind_hits.get(kind, 0)
        gain = pipe.kind_gain.get(kind, 0.0)
        lines.append(f"| {kind} | {n} | {n / views:.2f} | {h} | {h / total_hits:.1%} "
                     f"| {h / n:.3f} | {gain / n:.4f} | {gain / views:.4f} |")
    return lines


def _late_table(run: ChunkRun) -> list[str]:
    """Recall on the second half of the timeline, where parameters chosen on the first
    half are reported."""
    late = [r for r in run.results if r.recall_late]
    if not late:
        return []
    lines = ["", "The second half of the timeline only (page views of chunks starting after "
             "half of the ratings; the page parameters were chosen on the first half, "
             "see the notes):", "", "| method | page views | R@5x5 | R@10x5 |",
             "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.late_page_views} | {_ci(r.recall_late[5])} "
              f"| {_ci(r.recall_late[10])} |" for r in late]
    return lines


def render_markdown(report: Report, protocol_text: str, mapping_text: str) -> str:
    """The whole docs/evaluation.md."""
    lines = [
        "# Evaluation on MovieLens-100K",
        "",
        f"Generated by `{report.command}` on {report.generated} in "
        f"{report.wall_seconds / 60:.1f} min (wall clock, 2-core machine). Do not edit by "
        "hand: rerun the command.",
        "",
        f"Data: {report.ratings:,} ratings by {report.members:,} members of "
        f"{report.titles:,} titles, {report.first_day} to {report.last_day}, replayed in "
        "stable timestamp order (half the rows share their second with another row; file "
        "order breaks ties). MovieLens is fetched at run time from the `recbole==1.2.1` wheel "
        "and cached in `~/.cache/homestream/ml-100k`; GroupLens' terms forbid redistributing "
        "it, so it is never stored in this repository.",
        "",
        "## Rating prediction (the published streaming anchor)",
        "",
        "Predict, then learn, one pass in timestamp order; predictions clipped to [1, 5]. "
        "Published: River's documentation, *Matrix Factorization for Recommender Systems, "
        "part 1* (same models and hyper-parameters).",
        "",
        "| model | MAE | RMSE | published MAE | published RMSE | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for s in report.rating_scores:
        pub = RIVER_MOVIELENS.get(s.name)
        pm, pr = (f"{pub[0]:.4f}", f"{pub[1]:.4f}") if pub else ("", "")
        lines.append(f"| {s.name} | {s.mae:.4f} | {s.rmse:.4f} | {pm} | {pr} | "
                     f"{s.seconds:.1f} |")
    lines += [
        "",
        "River's data file orders the rows that share a timestamp differently from the "
        "RecBole file; the order of first appearance decides which random latent vector each "
        "member and title gets, which is why BiasedMF is a few 1e-4 away from the published "
        "value while the running mean (order-independent within ties) matches exactly.",
        "",
        "## Home pages: the prequential page protocol",
        "",
        protocol_text.strip(),
        "",
        "### From ratings to player events",
        "",
        mapping_text.strip(),
        "",
        "## Results",
        "",
    ]
    for run in report.runs:
        lines += _run_section(run)
    if report.notes:
        lines += ["## Reading the numbers", ""] + [f"- {n}" for n in report.notes] + [""]
    if report.settings:
        lines += ["## Pipeline settings used", "", "| setting | value |", "|---|---|"]
        lines += [f"| `{k}` | `{v}` |" for k, v in report.settings.items()]
        lines.append("")
    lines += [
        "## How to rerun",
        "",
        "```sh",
        "python -m evaluation movielens                     # full data, writes this file",
        "python -m evaluation movielens --limit 3000 --out /tmp/eval.md   # a quick slice",
        "python -m evaluation movielens --chunk day          # one chunking only",
        "python -m evaluation movielens --no-pipeline        # baselines only (no broker)",
        "python -m evaluation movielens --pipeline-runs 2    # replay the pipeline twice",
        "```",
        "",
        "The pipeline replay starts its own broker (Tansu) and Redis on free ports and a "
        "`python -m streams.worker` child process; nothing else needs to run.",
        "",
    ]
    return "\n".join(lines)
