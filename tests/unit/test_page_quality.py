"""Page-level ranking: rows filled in view first, per-member row-kind affinities, impression
discounting, and every row's titles still true to its explanation."""

from __future__ import annotations

from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from online_models.page import PageConfig, assemble_page
from online_models.row_affinity import member_row_weights
from online_models.rules import Rules
from online_models.top_picks import TopPicksModel
from tests.unit.test_page_and_model import small_catalog, watch
from tests.unit.test_page_rows import TS, rich_member, trending_list
from topics.models import Impression, Play


def in_view(page: dict, columns: int) -> list[list[str]]:
    return [[i["title_id"] for i in r["items"][:columns]] for r in page["rows"]]


def page_for(s: ProfileState, cat: Catalog, rules: Rules, row_length: int = 10) -> dict:
    return assemble_page(s, cat, trending_list(cat), TopPicksModel().score_many,
                         PageConfig(row_length=row_length, rules=rules), "US", TS + 20)


def test_rows_below_show_their_best_titles_in_view_not_the_row_aboves_tail() -> None:
    cat = small_catalog()
    s = rich_member(cat)
    page = page_for(s, cat, Rules(visible_columns=3))
    view = in_view(page, 3)
    flat = [t for r in view for t in r]
    assert len(flat) == len(set(flat))  # no title twice in view
    everything = [i["title_id"] for r in page["rows"] for i in r["items"]]
    assert len(everything) == len(set(everything))  # nor anywhere on the page
    # the rows below Top Picks show titles the row-major fill spent on Top Picks' columns
    # out of view; Top Picks' own titles in view are its ranking's head either way
    old = page_for(s, cat, Rules(visible_columns=10))

    def picks(p: dict) -> list[str]:
        return next([i["title_id"] for i in r["items"]] for r in p["rows"]
                    if r["kind"] == "top_picks")

    others = {t for r, v in zip(page["rows"], view, strict=True) if r["kind"] != "top_picks"
              for t in v}
    assert set(picks(old)[3:]) & others
    assert picks(page)[:3] == picks(old)[:3]


def test_genre_rows_hold_only_their_genre_whatever_the_fill() -> None:
    cat = small_catalog()
    s = rich_member(cat)
    for visible in (2, 5, 10):
        page = page_for(s, cat, Rules(visible_columns=visible, genre_rows=5))
        for row in page["rows"]:
            if row["kind"] == "genre":
                genre = row["title"].removeprefix("Because You Like ")
                assert all(genre in i["genres"] for i in row["items"]), row["title"]


def _counts_member(cat: Catalog, genre_takes: int, byw_takes: int) -> ProfileState:
    s = rich_member(cat)
    s.row_counts = {"genre": [200, genre_takes], "because_you_watched": [200, byw_takes]}
    return s


def test_a_member_who_plays_from_genre_rows_gets_them_higher() -> None:
    cat = small_catalog()
    rules = Rules(member_row_strength=20.0)

    def first_row(kind_a: str, kind_b: str, page: dict) -> str:
        return next(r["kind"] for r in page["rows"] if r["kind"] in (kind_a, kind_b))

    likes_genres = page_for(_counts_member(cat, 30, 0), cat, rules)
    likes_byw = page_for(_counts_member(cat, 0, 30), cat, rules)
    assert first_row("genre", "because_you_watched", likes_genres) == "genre"
    assert first_row("genre", "because_you_watched", likes_byw) == "because_you_watched"
    # the same members without per-member affinities get the same order of kinds
    off = Rules(member_row_strength=0.0)
    assert ([r["kind"] for r in page_for(_counts_member(cat, 30, 0), cat, off)["rows"]]
            == [r["kind"] for r in page_for(_counts_member(cat, 0, 30), cat, off)["rows"]])


def test_member_weights_follow_evidence_and_fall_back_to_the_population() -> None:
    w = {"genre": 0.7, "trending": 0.55}
    assert member_row_weights(w, {}, 50.0) == w
    assert member_row_weights(w, {"genre": [10, 0], "trending": [10, 0]}, 50.0) == w
    few = member_row_weights(w, {"genre": [2, 1], "trending": [2, 0]}, 50.0)
    many = member_row_weights(w, {"genre": [200, 100], "trending": [200, 0]}, 50.0)
    assert w["genre"] < few["genre"] < many["genre"]
    assert many["trending"] < few["trending"] < w["trending"]


def test_impressions_and_credited_plays_count_per_member_row_kind() -> None:
    cat = small_catalog()
    s = ProfileState("p")
    p = FeatureParams()
    for k, (tid, row) in enumerate([("t1", "genre-action"), ("t2", "genre-action"),
                                    ("t3", "trending-US")]):
        apply_event(s, Impression(event_id=f"i{k}", profile_id="p", event_ts_ms=TS + k,
                                  request_id="r", title_id=tid, row_id=row, row=0, column=k,
                                  artwork_id="a", propensity=1.0, policy="materialized"),
                    cat.genres_of, p)
    apply_event(s, Play(event_id="p", profile_id="p", event_ts_ms=TS + 100, title_id="t2",
                        action="start", position_s=0, duration_s=600.0, country="US"),
                cat.genres_of, p)
    assert s.row_counts == {"genre": [2, 1], "trending": [1, 0]}
    assert ProfileState.from_json(s.to_json()).row_counts == s.row_counts


def test_titles_shown_without_a_play_are_demoted_only_when_discounting_is_on() -> None:
    cat = small_catalog()
    s = ProfileState("p")
    for i, t in enumerate(["t0", "t5", "t10"]):
        watch(s, cat, t, TS + i)
    plain = page_for(s, cat, Rules())
    picks = next(r for r in plain["rows"] if r["kind"] == "top_picks")
    ignored = picks["items"][0]["title_id"]
    for k in range(3):
        apply_event(s, Impression(event_id=f"i{k}", profile_id="p", event_ts_ms=TS + 10 + k,
                                  request_id="r", title_id=ignored, row_id="top-picks", row=0,
                                  column=0, artwork_id="a", propensity=1.0,
                                  policy="materialized"), cat.genres_of, FeatureParams())
    kept = next(r for r in page_for(s, cat, Rules())["rows"] if r["kind"] == "top_picks")
    assert kept["items"][0]["title_id"] == ignored
    demoted = next(r for r in page_for(s, cat, Rules(impression_discount=0.5))["rows"]
                   if r["kind"] == "top_picks")
    ids = [i["title_id"] for i in demoted["items"]]
    assert ids[0] != ignored and (ignored not in ids or ids.index(ignored) > 0)


def test_marginal_gain_counts_a_title_once_and_the_late_half_apart() -> None:
    from evaluation.movielens.protocol import Interaction, Page, chunks_of, evaluate
    from tests.unit.test_movielens import Scripted

    log = [Interaction("a", f"h{i}", 4, i) for i in range(4)]
    log += [Interaction("a", "x", 4, 10), Interaction("a", "y", 4, 11)]  # chunk 2: {x, y}
    log += [Interaction("a", "z", 4, 20), Interaction("a", "w", 4, 21)]  # chunk 3: {z, w}
    # x in view twice (genre, then trending): the trending row adds nothing
    rec = Scripted({"a": Page([["x", "q"], ["x", "y"], ["z"]],
                              kinds=["genre", "trending", "because_you_watched"])})
    res = evaluate(rec, chunks_of(log, 2), catalog_size=20, genres_of=lambda t: [],
                   min_history=2, warmup_fraction=0.5, holdout_fraction=0.75)
    assert res.page_views == 2
    # view 1 (chunk {x, y}): genre adds x (1/2), trending adds y (1/2, x counted once)
    # view 2 (chunk {z, w}): because_you_watched adds z (1/2)
    assert res.kind_gain == {"genre": 0.5, "trending": 0.5, "because_you_watched": 0.5}
    assert sum(res.kind_gain.values()) / res.page_views == res.recall[10][0]
    # only the chunk starting after 75% of the interactions is in the late half
    assert res.late_page_views == 1 and res.recall_late[10][0] == 0.5


def test_a_resume_from_continue_watching_credits_that_row() -> None:
    cat = small_catalog()
    s = ProfileState("p")
    p = FeatureParams()

    def start(eid: str, ts: int, pos: float) -> list[str]:
        return apply_event(s, Play(event_id=eid, profile_id="p", event_ts_ms=ts, title_id="t3",
                                   action="start", position_s=pos, duration_s=600.0,
                                   country="US"), cat.genres_of, p).row_takes

    start("s1", TS, 0.0)
    apply_event(s, Play(event_id="h", profile_id="p", event_ts_ms=TS + 1, title_id="t3",
                        action="progress", position_s=200, duration_s=600.0, country="US"),
                cat.genres_of, p)
    assert start("s2", TS + 2, 200.0) == []  # not shown in Continue Watching: no credit
    apply_event(s, Impression(event_id="i", profile_id="p", event_ts_ms=TS + 10,
                              request_id="r", title_id="t3", row_id="continue-watching",
                              row=0, column=0, artwork_id="a", propensity=1.0,
                              policy="materialized"), cat.genres_of, p)
    assert start("s3", TS + 20, 200.0) == ["continue_watching"]
    assert s.row_counts["continue_watching"] == [1, 1]
    assert start("s4", TS + 30, 250.0) == []  # one credit per impression


def test_a_required_kind_never_played_from_stops_being_reserved() -> None:
    cat = small_catalog()
    rules = Rules(max_rows=4, required_rows_patience=30)
    s = rich_member(cat)
    s.row_counts = {"trending": [29, 0]}
    assert "trending" in [r["kind"] for r in page_for(s, cat, rules)["rows"]]
    s.row_counts = {"trending": [30, 0]}
    without = [r["kind"] for r in page_for(s, cat, rules)["rows"]]
    assert "trending" not in without and len(without) == 4
    s.row_counts = {"trending": [300, 1]}  # one play from it: still reserved
    assert "trending" in [r["kind"] for r in page_for(s, cat, rules)["rows"]]
    never = Rules(max_rows=4, required_rows_patience=0)
    s.row_counts = {"trending": [3000, 0]}
    assert "trending" in [r["kind"] for r in page_for(s, cat, never)["rows"]]


def test_the_page_benchmark_loads_another_page_module_that_builds_the_same_page() -> None:
    from pathlib import Path

    import online_models.page as installed
    from bench.page import _load_page_module

    other = _load_page_module(Path(installed.__file__))
    assert other is not installed
    cat = small_catalog()
    s = rich_member(cat)
    rules = Rules()
    a = installed.assemble_page(s, cat, trending_list(cat), TopPicksModel().score_many,
                                installed.PageConfig(row_length=6, rules=rules), "US", TS)
    b = other.assemble_page(s, cat, trending_list(cat), TopPicksModel().score_many,
                            other.PageConfig(row_length=6, rules=rules), "US", TS)
    assert a == b and a["rows"]
