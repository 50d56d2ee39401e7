"""Page assembly properties over generated catalogs, and the online Top Picks model."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from online_models.page import CandidateRow, PageConfig, assemble_page, select_rows
from online_models.rules import ProfileMeta
from online_models.top_picks import TopPicksModel
from topics.models import MATURITY_LEVELS, Artwork, Play, Title

GENRES = ["Action", "Comedy", "Horror", "Kids", "Drama"]
TS = 1_700_000_000_000


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    n = draw(st.integers(1, 40))
    titles = []
    for i in range(n):
        titles.append(Title(
            title_id=f"t{i}", name=f"T{i}",
            genres=draw(st.lists(st.sampled_from(GENRES), min_size=1, max_size=2, unique=True)),
            maturity_rating=draw(st.sampled_from(MATURITY_LEVELS)),
            release_date=dt.date(2020, 1, 1) + dt.timedelta(days=draw(st.integers(0, 2000))),
            duration_s=600.0, artwork=[Artwork(artwork_id=f"a{i}", url="u")],
            availability=draw(st.sampled_from([[], ["US"], ["GB"], ["US", "GB"]])),
        ))
    return Catalog(titles)


@st.composite
def histories(draw: st.DrawFn, catalog: Catalog) -> ProfileState:
    s = ProfileState("p")
    ids = catalog.title_ids()
    for i in range(draw(st.integers(0, 15))):
        tid = draw(st.sampled_from(ids))
        pos = draw(st.floats(0, 600))
        apply_event(s, Play(event_id=str(i), profile_id="p", event_ts_ms=TS + i, title_id=tid,
                            action="progress", position_s=pos, duration_s=600.0,
                            country="US"), catalog.genres_of, FeatureParams())
    return s


def page_ids(page: dict) -> list[str]:
    return [i["title_id"] for r in page["rows"] for i in r["items"]]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rating=st.sampled_from(MATURITY_LEVELS), kids=st.booleans(),
       country=st.sampled_from(["US", "GB", "FR"]))
def test_pages_never_repeat_a_title_and_respect_guardrails(
        data: st.DataObject, rating: str, kids: bool, country: str) -> None:
    catalog = data.draw(catalogs())
    state = data.draw(histories(catalog))
    trending = [(t, float(len(catalog) - i)) for i, t in enumerate(catalog.title_ids()[:10])]
    model = TopPicksModel(n_factors=4, seed=0)
    cfg = PageConfig(row_length=5)
    meta = ProfileMeta(kids=kids, max_rating=rating)
    limit = cfg.rules.max_rating_for(meta)
    for st_ in (state, None):
        page = assemble_page(st_, catalog, trending, model.score_many, cfg, country, TS, meta)
        ids = page_ids(page)
        assert len(ids) == len(set(ids))
        for tid in ids:
            t = catalog.get(tid)
            assert t is not None and t.available_in(country) and t.allowed_for(limit)
            if kids:
                assert t.allowed_for("PG") and "Horror" not in t.genres
        assert all(r["items"] for r in page["rows"])
        # rows come in greedy order: adjusted utility never increases down the page
        adjusted = [r["adjusted_utility"] for r in page["rows"]]
        assert adjusted == sorted(adjusted, reverse=True)
        assert all(r["adjusted_utility"] <= r["utility"] + 1e-9 for r in page["rows"])


def row_of(page: dict, kind: str) -> dict | None:
    return next((r for r in page["rows"] if r["kind"] == kind), None)


def small_catalog() -> Catalog:
    return Catalog([Title(title_id=f"t{i}", name=f"T{i}", genres=[GENRES[i % 5]],
                          maturity_rating="PG",
                          release_date=dt.date(2024, 1, 1) + dt.timedelta(days=i),
                          duration_s=600.0, artwork=[Artwork(artwork_id=f"a{i}", url="u")])
                    for i in range(60)])


def watch(s: ProfileState, cat: Catalog, tid: str, ts: int) -> None:
    apply_event(s, Play(event_id=f"{tid}-{ts}", profile_id="p", event_ts_ms=ts, title_id=tid,
                        action="progress", position_s=400, duration_s=600.0, country="US"),
                cat.genres_of, FeatureParams())


def test_personal_page_rows_explain_themselves() -> None:
    cat = small_catalog()
    s = ProfileState("p")
    watch(s, cat, "t2", TS)
    # short rows: with 12 Horror titles, long rows above would leave the Horror row empty
    page = assemble_page(s, cat, [("t7", 3.0), ("t2", 2.0)], TopPicksModel().score_many,
                         PageConfig(row_length=2), "US", TS)
    assert page["rows"][0]["kind"] == "continue_watching"  # utility 1.0 x weight 1.0
    genre_row = row_of(page, "genre")
    assert genre_row is not None and genre_row["title"] == "Because You Like Horror"
    assert all("Horror" in cat.genres_of(i["title_id"]) for i in genre_row["items"])
    byw = row_of(page, "because_you_watched")
    assert byw is not None and byw["title"] == "Because You Watched T2"
    picks = row_of(page, "top_picks")
    assert picks is not None and "t2" not in [i["title_id"] for i in picks["items"]]


def test_watching_a_genre_moves_its_row_up() -> None:
    cat = small_catalog()
    s = ProfileState("p")
    for i, t in enumerate(["t0", "t5", "t10"]):  # Action fan
        watch(s, cat, t, TS + i)
    cfg = PageConfig(row_length=4)

    def horror_rank(page: dict) -> int:
        ranks = [i for i, r in enumerate(page["rows"])
                 if any("Horror" in cat.genres_of(x["title_id"]) for x in r["items"][:2])
                 and r["kind"] in ("genre", "because_you_watched")]
        return ranks[0] if ranks else len(page["rows"])

    before = horror_rank(assemble_page(s, cat, [], None, cfg, "US", TS + 10))
    for i, t in enumerate(["t2", "t7"]):  # two horror titles
        watch(s, cat, t, TS + 100 + i)
    after = horror_rank(assemble_page(s, cat, [], None, cfg, "US", TS + 200))
    assert after < before


def test_diversity_penalty_separates_similar_rows() -> None:
    cat = small_catalog()
    rows = [CandidateRow("a", "genre", "A", "", [("t0", 1), ("t5", 1)], utility=0.9),
            CandidateRow("b", "genre", "B", "", [("t0", 1), ("t5", 1)], utility=0.85),
            CandidateRow("c", "genre", "C", "", [("t1", 1), ("t6", 1)], utility=0.6)]
    assert [r.row_id for r in select_rows(rows, cat, 0.0, 3)] == ["a", "b", "c"]
    # b duplicates a (similarity 1): with a penalty of 0.5 it drops below c
    chosen = select_rows(rows, cat, 0.5, 3)
    assert [r.row_id for r in chosen] == ["a", "c", "b"]
    assert [round(r.adjusted_utility, 3) for r in chosen] == [0.9, 0.6, 0.35]


def test_model_learns_a_profiles_taste_with_negative_sampling() -> None:
    m = TopPicksModel(n_factors=8, seed=3, n_negatives=2)
    ids = [f"t{i}" for i in range(50)]
    liked = ids[:5]
    for _ in range(60):
        for t in liked:
            m.learn_positive("p", t, 1.0, ids, exclude=liked)
    scores = m.score_many("p", ids)
    assert scores[:5].mean() > scores[5:].mean() + 0.3
    assert np.allclose(scores, [m.predict_one("p", t) for t in ids])


def test_model_checkpoint_round_trip_is_exact() -> None:
    m = TopPicksModel(n_factors=4, seed=1)
    for i in range(30):
        m.learn_one(f"p{i % 3}", f"t{i % 7}", (i % 2) * 1.0)
    r = TopPicksModel.from_bytes(m.to_bytes())
    assert r.n_learned == 30
    ids = ["t1", "t2", "zz"]
    assert list(r.score_many("p1", ids)) == list(m.score_many("p1", ids))


def test_unknown_checkpoint_is_refused() -> None:
    import pickle

    import pytest

    with pytest.raises(ValueError, match="checkpoint"):
        TopPicksModel.from_bytes(pickle.dumps({"format": 99}))
