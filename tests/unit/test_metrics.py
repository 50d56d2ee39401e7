"""Offline metrics: hand-computed cases, edge cases, and properties."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.metrics import (
    catalog_coverage,
    intra_page_diversity,
    mean_and_ci,
    ndcg_at_k,
    novelty,
    page_title_grid,
    recall_at_k,
    recall_at_m_by_n,
)
from features.catalog import Catalog
from online_models.page import PageConfig, assemble_page
from topics.models import Artwork, Title

LOG2_3 = math.log2(3)  # 1.58496...; 1/LOG2_3 = 0.63093

GRID = [
    ["a", "b", "c", "d"],
    ["e", "f"],
    ["g", "h", "i", "j"],
]


# --- recall@M-by-N ---------------------------------------------------------------------------

def test_recall_m_by_n_hand_computed() -> None:
    rel = {"b", "f", "i", "z"}
    # 1x1 block = {a}: no hits -> 0/4
    assert recall_at_m_by_n(GRID, rel, 1, 1) == 0.0
    # 1x2 block = {a, b}: b -> 1/4
    assert recall_at_m_by_n(GRID, rel, 1, 2) == 0.25
    # 2x2 block = {a, b, e, f}: b, f -> 2/4
    assert recall_at_m_by_n(GRID, rel, 2, 2) == 0.5
    # 3x2 block = {a, b, e, f, g, h}: b, f -> 2/4 (i is in column 3)
    assert recall_at_m_by_n(GRID, rel, 3, 2) == 0.5
    # 3x3 block adds c, i: b, f, i -> 3/4; z is never shown
    assert recall_at_m_by_n(GRID, rel, 3, 3) == 0.75


def test_recall_m_by_n_short_rows_and_pages_are_fine() -> None:
    # row 2 has 2 titles; n=10 takes all of them. m=10 > 3 rows takes every row.
    assert recall_at_m_by_n(GRID, {"f", "j"}, 10, 10) == 1.0
    assert recall_at_m_by_n([], {"a"}, 3, 3) == 0.0
    assert recall_at_m_by_n([[], ["a"]], {"a"}, 2, 1) == 1.0


def test_recall_m_by_n_relevant_duplicates_count_once() -> None:
    # {b, z}: b shown -> 1/2, whatever the multiplicity of b
    assert recall_at_m_by_n(GRID, ["b", "b", "b", "z"], 1, 2) == 0.5


def test_recall_m_by_n_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        recall_at_m_by_n(GRID, set(), 2, 2)
    with pytest.raises(ValueError, match="m must be"):
        recall_at_m_by_n(GRID, {"a"}, 0, 2)
    with pytest.raises(ValueError, match="n must be"):
        recall_at_m_by_n(GRID, {"a"}, 2, 0)
    with pytest.raises(ValueError, match="n must be"):
        recall_at_m_by_n(GRID, {"a"}, 2, -1)
    with pytest.raises(TypeError):
        recall_at_m_by_n(GRID, "abc", 2, 2)
    with pytest.raises(TypeError):
        recall_at_m_by_n(["a", "b"], {"a"}, 1, 1)  # a flat list, not rows


ids = st.sampled_from([f"t{i}" for i in range(30)])
grids = st.lists(st.lists(ids, max_size=8), max_size=8)
relevants = st.sets(ids, min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(grid=grids, rel=relevants, m=st.integers(1, 10), n=st.integers(1, 10))
def test_recall_m_by_n_bounded_and_monotone(grid: list[list[str]], rel: set[str],
                                            m: int, n: int) -> None:
    r = recall_at_m_by_n(grid, rel, m, n)
    assert 0.0 <= r <= 1.0
    assert recall_at_m_by_n(grid, rel, m + 1, n) >= r
    assert recall_at_m_by_n(grid, rel, m, n + 1) >= r
    # the full page bounds every block
    assert recall_at_m_by_n(grid, rel, 100, 100) >= r


# --- page_title_grid -------------------------------------------------------------------------

def _title(i: int, genres: list[str]) -> Title:
    return Title(title_id=f"t{i}", name=f"T{i}", genres=genres, maturity_rating="PG",
                 release_date=dt.date(2024, 1, i + 1), duration_s=60.0,
                 artwork=[Artwork(artwork_id=f"t{i}-a", url=f"u{i}")])


def test_page_title_grid_from_a_dict() -> None:
    page = {"rows": [
        {"row_id": "r1", "kind": "top_picks", "title": "Top",
         "items": [{"title_id": "x", "score": 1.0}, {"title_id": "y", "score": 0.5}]},
        {"row_id": "r2", "kind": "genre", "title": "G", "items": []},
        {"row_id": "r3", "kind": "genre", "title": "H", "items": [{"title_id": "z"}]},
    ]}
    assert page_title_grid(page) == [["x", "y"], [], ["z"]]
    assert page_title_grid({"rows": []}) == []
    with pytest.raises(KeyError):
        page_title_grid({})


def test_page_title_grid_matches_assembled_page() -> None:
    cat = Catalog([_title(i, ["Drama"] if i % 2 else ["Comedy"]) for i in range(6)])
    page = assemble_page(None, cat, trending=[("t3", 9.0), ("t1", 4.0)], scorer=None,
                         config=PageConfig(row_length=2), country="US", now_ms=0)
    grid = page_title_grid(page)
    assert grid == [[i["title_id"] for i in r["items"]] for r in page["rows"]]
    assert grid[0] == ["t3", "t1"]  # trending row first
    assert recall_at_m_by_n(grid, {"t3", "t5"}, 1, 2) == 0.5


# --- NDCG@K ----------------------------------------------------------------------------------

def test_ndcg_binary_hand_computed() -> None:
    # relevant at ranks 2 and 3 of k=3:
    # DCG = 1/log2(3) + 1/log2(4) = 0.6309 + 0.5 = 1.1309
    # IDCG = 1 + 1/log2(3) = 1.6309 -> 0.6934
    got = ndcg_at_k(["x", "a", "b"], {"a", "b"}, 3)
    assert got == pytest.approx((1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3))
    assert got == pytest.approx(0.6934, abs=1e-4)
    # k=2: DCG = 1/log2(3) = 0.6309; IDCG = 1 + 0.6309 -> 0.3869
    assert ndcg_at_k(["x", "a", "b"], {"a", "b"}, 2) == pytest.approx(
        (1 / LOG2_3) / (1 + 1 / LOG2_3))
    # no relevant title in the top k -> 0
    assert ndcg_at_k(["x", "y", "a"], {"a"}, 2) == 0.0


def test_ndcg_graded_hand_computed() -> None:
    gains = {"a": 3.0, "b": 2.0, "c": 1.0}
    # ranked b, x, a at k=3: DCG = 2/1 + 0/log2(3) + 3/log2(4) = 2 + 1.5 = 3.5
    # IDCG = 3/1 + 2/log2(3) + 1/log2(4) = 3 + 1.2619 + 0.5 = 4.7619 -> 0.7350
    got = ndcg_at_k(["b", "x", "a"], gains, 3)
    assert got == pytest.approx(3.5 / (3 + 2 / LOG2_3 + 0.5))
    assert got == pytest.approx(0.7350, abs=1e-4)
    # IDCG uses only the top-k gains: k=1 -> IDCG = 3; ranked a first -> 1.0, b first -> 2/3
    assert ndcg_at_k(["a"], gains, 1) == 1.0
    assert ndcg_at_k(["b", "a"], gains, 1) == pytest.approx(2 / 3)
    # zero-gain entries are allowed as long as some gain is positive
    assert ndcg_at_k(["z", "a"], {"z": 0.0, "a": 1.0}, 2) == pytest.approx(1 / LOG2_3)


def test_ndcg_repeated_title_gains_once() -> None:
    # a, a, b with {a, b}: DCG = 1 + 0 + 0.5 = 1.5; IDCG = 1.6309 -> 0.9197 (never above 1)
    assert ndcg_at_k(["a", "a", "b"], {"a", "b"}, 3) == pytest.approx(1.5 / (1 + 1 / LOG2_3))


def test_ndcg_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="ideal DCG"):
        ndcg_at_k(["a"], set(), 3)
    with pytest.raises(ValueError, match="ideal DCG"):
        ndcg_at_k(["a"], {"a": 0.0}, 3)
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k(["a"], {"a": -1.0, "b": 2.0}, 2)
    with pytest.raises(ValueError, match="gain"):
        ndcg_at_k(["a"], {"a": math.nan}, 2)
    with pytest.raises(TypeError):
        ndcg_at_k(["a"], "a", 1)


@settings(max_examples=200, deadline=None)
@given(gains=st.dictionaries(ids, st.floats(0.0, 5.0), min_size=1, max_size=15),
       k=st.integers(1, 20), data=st.data())
def test_ndcg_is_one_for_the_ideal_ranking(gains: dict[str, float], k: int,
                                           data: st.DataObject) -> None:
    if not any(g > 0 for g in gains.values()):
        gains = {**gains, "pos": 1.0}
    ideal = sorted(gains, key=lambda t: -gains[t])
    assert ndcg_at_k(ideal, gains, k) == pytest.approx(1.0)
    assert ndcg_at_k(ideal, set(gains), k) == pytest.approx(1.0)  # binary: any order of all
    shuffled = data.draw(st.permutations(ideal))
    assert 0.0 <= ndcg_at_k(shuffled, gains, k) <= 1.0


# --- recall@K --------------------------------------------------------------------------------

def test_recall_at_k_hand_computed() -> None:
    ranked = ["a", "x", "b", "c", "y"]
    rel = {"b", "c", "d"}
    assert recall_at_k(ranked, rel, 1) == 0.0  # {a}: 0/3
    assert recall_at_k(ranked, rel, 3) == pytest.approx(1 / 3)  # {a, x, b}: b -> 1/3
    assert recall_at_k(ranked, rel, 4) == pytest.approx(2 / 3)  # + c -> 2/3
    assert recall_at_k(ranked, rel, 50) == pytest.approx(2 / 3)  # d never ranked
    assert recall_at_k(ranked, ["b", "b"], 3) == 1.0  # duplicates count once: {b} -> 1/1


def test_recall_at_k_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        recall_at_k(["a"], [], 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(["a"], {"a"}, 0)


# --- coverage --------------------------------------------------------------------------------

def test_catalog_coverage_hand_computed() -> None:
    # flat page {a, b} + grid page {b, c, a} -> distinct {a, b, c} = 3 of 10
    assert catalog_coverage([["a", "b"], [["b", "c"], ["a"]]], 10) == pytest.approx(0.3)
    # two grids: {a..j} from GRID + {k} = 11 distinct of 20
    assert catalog_coverage([GRID, [["k", "a"]]], 20) == pytest.approx(11 / 20)
    assert catalog_coverage([], 5) == 0.0
    assert catalog_coverage(iter([["a"], ["a"]]), 1) == 1.0  # any iterable, repeats once


def test_catalog_coverage_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="catalog_size must be"):
        catalog_coverage([["a"]], 0)
    with pytest.raises(ValueError, match="distinct titles shown"):
        catalog_coverage([["a", "b", "c"]], 2)


# --- diversity -------------------------------------------------------------------------------

def test_intra_page_diversity_hand_computed() -> None:
    genres = {"a": ["Drama"], "b": ["Drama", "Comedy", "Romance"], "c": ["Horror"],
              "d": ["Drama"], "e": []}
    g = genres.__getitem__
    # (a, b): 1 - 1/3 = 0.6667; (a, c): 1 - 0/2 = 1; (b, c): 1 - 0/4 = 1 -> 2.6667/3 = 0.8889
    assert intra_page_diversity(["a", "b", "c"], g) == pytest.approx((2 / 3 + 1 + 1) / 3)
    # grids work and repeats count once: {a, b} -> 1 - 1/3
    assert intra_page_diversity([["a", "b"], ["a"]], g) == pytest.approx(2 / 3)
    # same genres -> 0
    assert intra_page_diversity(["a", "d"], g) == 0.0
    # no genres vs some genres -> 1; both without genres -> 0 (Jaccard(empty, empty) = 1)
    assert intra_page_diversity(["a", "e"], g) == 1.0
    assert intra_page_diversity(["e", "e2"], lambda t: []) == 0.0


def test_intra_page_diversity_fewer_than_two_titles_is_zero() -> None:
    assert intra_page_diversity([], lambda t: ["X"]) == 0.0
    assert intra_page_diversity(["a"], lambda t: ["X"]) == 0.0
    assert intra_page_diversity([["a"], ["a"]], lambda t: ["X"]) == 0.0


def test_intra_page_diversity_with_a_catalog() -> None:
    cat = Catalog([_title(0, ["Drama"]), _title(1, ["Drama", "Comedy"]), _title(2, ["Kids"])])
    # (t0, t1): 1 - 1/2 = 0.5; (t0, t2): 1; (t1, t2): 1 -> 2.5/3
    assert intra_page_diversity(["t0", "t1", "t2"], cat.genres_of) == pytest.approx(2.5 / 3)


@settings(max_examples=100, deadline=None)
@given(page=grids, genres=st.dictionaries(
    ids, st.sets(st.sampled_from(["A", "B", "C", "D"]), max_size=3)))
def test_intra_page_diversity_bounded(page: list[list[str]], genres: dict[str, set[str]]) -> None:
    d = intra_page_diversity(page, lambda t: genres.get(t, set()))
    assert 0.0 <= d <= 1.0


# --- novelty ---------------------------------------------------------------------------------

def test_novelty_hand_computed() -> None:
    pop = {"a": 50.0, "b": 25.0, "c": 100.0, "z": 0.0}
    # a: p = 0.5 -> 1 bit; b: p = 0.25 -> 2 bits; mean 1.5
    assert novelty(["a", "b"], pop, 100) == pytest.approx(1.5)
    # c: p = 1 -> 0 bits; repeats count once: {a, c} -> (1 + 0) / 2
    assert novelty([["a", "c"], ["a"]], pop, 100) == pytest.approx(0.5)
    # unseen (absent or 0): p = 1/101 -> log2(101) = 6.6582 bits
    assert novelty(["new"], pop, 100) == pytest.approx(math.log2(101))
    assert novelty(["z"], pop, 100) == pytest.approx(math.log2(101))
    # mixed: (1 + log2(101)) / 2
    assert novelty(["a", "new"], pop, 100) == pytest.approx((1 + math.log2(101)) / 2)


def test_novelty_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="no titles"):
        novelty([], {"a": 1.0}, 10)
    with pytest.raises(ValueError, match="total"):
        novelty(["a"], {"a": 1.0}, 0)
    with pytest.raises(ValueError, match="within"):
        novelty(["a"], {"a": 11.0}, 10)
    with pytest.raises(ValueError, match="within"):
        novelty(["a"], {"a": -1.0}, 10)


# --- mean and CI -----------------------------------------------------------------------------

def test_mean_and_ci_hand_computed() -> None:
    # [1, 2, 3, 4]: mean 2.5; s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, s = 1.2910
    # se = 1.2910 / 2 = 0.6455; z(0.95) = 1.95996 -> half-width 1.2652
    mean, lo, hi = mean_and_ci([1.0, 2.0, 3.0, 4.0])
    half = 1.959964 * math.sqrt(5 / 3) / 2
    assert mean == 2.5
    assert lo == pytest.approx(2.5 - half, abs=1e-6)
    assert hi == pytest.approx(2.5 + half, abs=1e-6)
    # 90%: z = 1.644854 -> half-width 1.0617
    _, lo90, hi90 = mean_and_ci([1.0, 2.0, 3.0, 4.0], confidence=0.90)
    assert hi90 - 2.5 == pytest.approx(1.644854 * math.sqrt(5 / 3) / 2, abs=1e-6)
    assert lo < lo90 < hi90 < hi
    # constant values: zero width
    assert mean_and_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_mean_and_ci_edge_cases_raise() -> None:
    with pytest.raises(ValueError, match="at least two"):
        mean_and_ci([])
    with pytest.raises(ValueError, match="at least two"):
        mean_and_ci([1.0])
    with pytest.raises(ValueError, match="finite"):
        mean_and_ci([1.0, math.inf])
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            mean_and_ci([1.0, 2.0], confidence=c)
