"""Which rows a page keeps: required kinds, every row kind, cold members, the greedy rule,
More Like X from co-watching, and rules loaded from a file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from homestream.settings import ConfigError, Settings
from online_models.page import (
    CandidateRow,
    PageConfig,
    assemble_page,
    candidate_rows,
    row_similarity,
    select_rows,
)
from online_models.rules import ROW_KINDS, Rules, load_rules, rules_from_settings
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from tests.unit.test_page_and_model import catalogs, page_ids, small_catalog, watch
from topics.models import Artwork, Feedback, Play, Scroll, Search, Title

TS = 1_700_000_000_000
#: 60 titles, genres by ``i % 5``: Action, Comedy, Horror, Kids, Drama.
GENRE_OF = ["Action", "Comedy", "Horror", "Kids", "Drama"]


def kinds(page: dict) -> list[str]:
    return [r["kind"] for r in page["rows"]]


def rich_member(cat: Catalog) -> ProfileState:
    """Watched six titles to the end of their first half, one still in progress."""
    s = ProfileState("p")
    for i, t in enumerate(["t0", "t5", "t10", "t2", "t7", "t1"]):
        watch(s, cat, t, TS + i)
    apply_event(s, Play(event_id="cw", profile_id="p", event_ts_ms=TS + 10, title_id="t3",
                        action="progress", position_s=60, duration_s=600.0, country="US"),
                cat.genres_of, FeatureParams())
    return s


def trending_list(cat: Catalog, start: int = 30) -> list[tuple[str, float]]:
    ids = cat.title_ids()[start:]
    return [(t, float(len(ids) - i)) for i, t in enumerate(ids)]


def test_required_kinds_survive_a_short_page() -> None:
    cat = small_catalog()
    s = rich_member(cat)
    few = Rules(max_rows=4)
    cfg = PageConfig(row_length=4, rules=few)
    page = assemble_page(s, cat, trending_list(cat), TopPicksModel().score_many, cfg, "US",
                         TS + 20)
    assert len(page["rows"]) == 4
    assert set(kinds(page)) == {"continue_watching", "top_picks", "trending", "genre"}
    # without the rule a four-row page has no room for Trending (the lowest prior weight)
    free = dataclasses.replace(cfg, rules=Rules(max_rows=4, required_rows=[]))
    page = assemble_page(s, cat, trending_list(cat), TopPicksModel().score_many, free, "US",
                         TS + 20)
    assert "trending" not in kinds(page)


def test_a_rich_member_gets_every_row_kind() -> None:
    cat = small_catalog()
    s = rich_member(cat)
    apply_event(s, Feedback(event_id="f", profile_id="p", event_ts_ms=TS + 11, title_id="t2",
                            kind="thumbs_up"), cat.genres_of, FeatureParams())
    cw = CoWatchSimilarity()
    for _ in range(2):
        for h, t in [(["t0"], "t15"), (["t5", "t0"], "t20"), (["t2"], "t12")]:
            cw.learn_one(h, t)
    cfg = PageConfig(row_length=2, rules=Rules(max_rows=20, min_row_items=1))
    page = assemble_page(s, cat, trending_list(cat, 20), TopPicksModel().score_many, cfg, "US",
                         TS + 20, cowatch=cw)
    got = kinds(page)
    assert {"continue_watching", "top_picks", "because_you_watched", "more_like", "genre",
            "top10", "trending", "new_releases"} <= set(got)
    assert got.count("because_you_watched") >= 2
    assert got.count("genre") >= 2
    more = next(r for r in page["rows"] if r["kind"] == "more_like")
    assert more["title"] == "More Like T2"  # the thumbs-up title


@pytest.mark.parametrize("event", [
    Search(event_id="e", profile_id="p", event_ts_ms=TS, query="space"),
    Scroll(event_id="e", profile_id="p", event_ts_ms=TS, row=3),
])
def test_a_member_who_only_browsed_gets_the_popular_rows(event) -> None:
    cat = small_catalog()
    s = ProfileState("p")
    apply_event(s, event, cat.genres_of, FeatureParams())
    cfg = PageConfig(row_length=5)
    trending = trending_list(cat)
    page = assemble_page(s, cat, trending, None, cfg, "US", TS + 20)
    default = assemble_page(None, cat, trending, None, cfg, "US", TS + 20)
    assert page["personalized"]
    assert "popular" in kinds(page) and kinds(page).count("genre") >= 2
    assert len(page_ids(page)) >= len(page_ids(default)) >= 30


@settings(max_examples=40, deadline=None)
@given(catalog=catalogs(), browsed=st.booleans(), n_trending=st.integers(0, 20))
def test_a_profile_without_history_gets_a_full_page(catalog: Catalog, browsed: bool,
                                                    n_trending: int) -> None:
    """A full page: two rows' worth of titles, or every allowed title."""
    state = None
    if browsed:
        state = ProfileState("p")
        apply_event(state, Search(event_id="s", profile_id="p", event_ts_ms=TS, query="x"),
                    catalog.genres_of, FeatureParams())
    trending = [(t, float(n_trending - i))
                for i, t in enumerate(catalog.title_ids()[:n_trending])]
    cfg = PageConfig(row_length=5)
    page = assemble_page(state, catalog, trending, None, cfg, "US", TS)
    allowed = [t for t in catalog.titles() if t.available_in("US")]
    shown = page_ids(page)
    assert len(shown) >= min(len(allowed), 2 * cfg.row_length)
    assert len(page["rows"]) >= min(2, len(allowed) // cfg.row_length)


def _rows(draw: st.DrawFn, ids: list[str]) -> list[CandidateRow]:
    rows = []
    for i in range(draw(st.integers(1, 12))):
        ranked = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=8, unique=True))
        rows.append(CandidateRow(f"r{i}", draw(st.sampled_from(sorted(ROW_KINDS))), f"R{i}",
                                 "", [(t, 1.0) for t in ranked],
                                 utility=draw(st.floats(0.0, 1.0))))
    return rows


@settings(max_examples=80, deadline=None)
@given(data=st.data(), penalty=st.floats(0.0, 1.0), max_rows=st.integers(1, 8),
       required=st.sets(st.sampled_from(sorted(ROW_KINDS)), max_size=3))
def test_rows_follow_utility_minus_the_diversity_penalty(
        data: st.DataObject, penalty: float, max_rows: int, required: set[str]) -> None:
    """Each row taken has, among the rows it could take, the highest utility minus
    ``penalty`` x its largest similarity to the recommendation rows above it; the required
    kinds take the last free rows when they would otherwise be left out."""
    cat = small_catalog()
    cands = _rows(data.draw, cat.title_ids()[:20])
    chosen = select_rows(cands, cat, penalty, max_rows, required=required)
    assert len(chosen) == min(max_rows, len(cands))

    def adjusted(c: CandidateRow, above: list[CandidateRow]) -> float:
        sims = [row_similarity(c, a, cat) for a in above if a.kind != "continue_watching"]
        return c.utility - penalty * max(sims, default=0.0)

    for k, row in enumerate(chosen):
        above = chosen[:k]
        assert row.adjusted_utility == pytest.approx(adjusted(row, above))
        rest = [c for c in cands if c not in above]
        missing = {c.kind for c in rest if c.kind in required} - {a.kind for a in above}
        pool = ([c for c in rest if c.kind in missing]
                if missing and max_rows - k <= len(missing) else rest)
        assert row in pool
        assert row.adjusted_utility >= max(adjusted(c, above) for c in pool) - 1e-9
    left_out = {c.kind for c in cands if c not in chosen}
    assert not (left_out & required) - {c.kind for c in chosen} or len(
        {c.kind for c in cands if c.kind in required}) > max_rows
    adj = [c.adjusted_utility for c in chosen]
    assert adj == sorted(adj, reverse=True)


def test_rules_load_from_a_file_and_bad_files_name_the_setting(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"kids_max_rating": "G", "max_rows": 6,
                                "required_rows": ["top_picks"]}))
    rules = rules_from_settings(Settings(rules_file=str(good)))
    assert (rules.kids_max_rating, rules.max_rows, rules.required_rows) == ("G", 6, ["top_picks"])
    assert load_rules(None) == Rules()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"required_rows": ["trending", "spotlight"]}))
    with pytest.raises(ConfigError, match=r"(?s)HOMESTREAM_RULES_FILE.*spotlight"):
        rules_from_settings(Settings(rules_file=str(bad)))
    with pytest.raises(ConfigError, match="HOMESTREAM_RULES_FILE"):
        rules_from_settings(Settings(rules_file=str(tmp_path / "missing.json")))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"max_row": 3}))
    with pytest.raises(ConfigError, match="max_row"):
        rules_from_settings(Settings(rules_file=str(typo)))


def test_more_like_ranks_cowatched_same_genre_titles_first() -> None:
    cat = Catalog([Title(title_id=t, name=t.upper(), genres=g, maturity_rating="PG",
                         release_date=dt.date(2024, 1, 1), duration_s=600.0,
                         artwork=[Artwork(artwork_id=t + "a", url="u")])
                   for t, g in [("x", ["Drama"]), ("a", ["Drama"]), ("b", ["Drama"]),
                                ("c", ["Comedy"]), ("d", ["Drama", "Comedy"])]])
    s = ProfileState("p")
    apply_event(s, Feedback(event_id="f", profile_id="p", event_ts_ms=TS, title_id="x",
                            kind="stars", stars=5), cat.genres_of, FeatureParams())
    cw = CoWatchSimilarity()
    for _ in range(3):
        cw.learn_one(["x"], "b")
        cw.learn_one(["x"], "c")  # co-watched but shares no genre with x

    def more_like(cowatch: CoWatchSimilarity | None) -> list[str]:
        ids = set(cat.title_ids())
        rel = dict.fromkeys(ids, 0.5)
        rows = candidate_rows(s, cat, ids, rel, [], cowatch, PageConfig(), "US", TS + 1)
        return [t for t, _ in next(r for r in rows if r.kind == "more_like").ranked]

    assert more_like(cw)[0] == "b" and "c" not in more_like(cw)
    # by content alone, the Drama titles tie (d shares one of its two genres)
    assert more_like(None) == ["a", "b", "d"]
