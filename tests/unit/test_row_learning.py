"""Row-kind learning (impression -> first play attribution, learned row weights), co-watch
relevance and marginal row utility; and the in-process replay harness that uses them."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from evaluation.movielens.data import Rating, to_catalog, view_impressions
from evaluation.movielens.inprocess import InProcessPipeline
from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from features.rows import ROW_ID_PREFIXES, row_kind_of
from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.page import CandidateRow, PageConfig, assemble_page, relevance, select_rows
from online_models.row_utility import RowKindUtility
from online_models.rules import Rules
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.processor import EventProcessor, MemoryDeadLetters, RawMessage
from tests.integration.helpers import make_titles
from topics.codec import default_codec
from topics.models import Artwork, Impression, Play, Title

TS = 1_700_000_000_000
GENRES = ["Action", "Comedy", "Horror", "Drama", "Romance"]
P = FeatureParams(row_attribution_window_s=3600.0)


def catalog(n: int = 40) -> Catalog:
    return Catalog([Title(title_id=f"t{i}", name=f"T{i}", genres=[GENRES[i % 5]],
                          maturity_rating="PG",
                          release_date=dt.date(2024, 1, 1) + dt.timedelta(days=i),
                          duration_s=600.0, artwork=[Artwork(artwork_id=f"a{i}", url="u")])
                    for i in range(n)])


def impression(eid: str, title: str, row_id: str, ts: int = TS) -> Impression:
    return Impression(event_id=eid, profile_id="p", event_ts_ms=ts, request_id="r",
                      title_id=title, row_id=row_id, row=0, column=0, artwork_id="a",
                      propensity=1.0, policy="materialized")


def play(eid: str, title: str, ts: int, pos: float = 400.0) -> Play:
    return Play(event_id=eid, profile_id="p", event_ts_ms=ts, title_id=title,
                action="progress", position_s=pos, duration_s=600.0, country="US")


# -- row ids ------------------------------------------------------------------------------
def test_every_row_page_assembly_builds_maps_back_to_its_kind() -> None:
    cat = catalog()
    s = ProfileState("p")
    for i, t in enumerate(["t0", "t5", "t2"]):
        apply_event(s, play(f"w{i}", t, TS + i), cat.genres_of, P)
    apply_event(s, play("c", "t7", TS + 9, pos=60.0), cat.genres_of, P)  # in progress
    cw = CoWatchSimilarity()
    cw.learn_one(["t0"], "t10")
    kinds = set()
    for state in (s, None):
        page = assemble_page(state, cat, [("t3", 5.0), ("t4", 2.0)],
                             TopPicksModel().score_many, PageConfig(row_length=4), "US", TS,
                             cowatch=cw)
        for row in page["rows"]:
            assert row_kind_of(row["row_id"]) == row["kind"], row["row_id"]
            kinds.add(row["kind"])
    assert {"continue_watching", "top_picks", "because_you_watched", "genre",
            "popular"} <= kinds
    assert {k for _, k in ROW_ID_PREFIXES} >= kinds


# -- attribution --------------------------------------------------------------------------
def test_a_first_play_after_an_impression_credits_that_row_kind_once() -> None:
    s = ProfileState("p")
    fx = apply_event(s, impression("i1", "t1", "top-picks"), lambda t: [], P)
    assert fx.row_exposures == ["top_picks"] and s.shown_rows["t1"].kind == "top_picks"
    fx = apply_event(s, play("p1", "t1", TS + 60_000, pos=60.0), lambda t: [], P)  # a click
    assert fx.row_takes == ["top_picks"]
    fx = apply_event(s, play("p2", "t1", TS + 120_000), lambda t: [], P)  # now a watch
    assert fx.row_takes == []  # not a first play
    fx = apply_event(s, impression("i2", "t1", "genre-horror", TS + 130_000), lambda t: [], P)
    assert fx.row_exposures == ["genre"] and "t1" not in s.shown_rows  # already played


def test_a_play_outside_the_attribution_window_credits_nothing() -> None:
    s = ProfileState("p")
    apply_event(s, impression("i1", "t1", "continue-watching"), lambda t: [], P)
    fx = apply_event(s, play("p1", "t1", TS + 3601_000), lambda t: [], P)
    assert fx.row_takes == [] and "t1" not in s.shown_rows
    assert ProfileState.from_json(s.to_json()) == s


def test_the_latest_impression_of_a_title_gets_the_credit() -> None:
    s = ProfileState("p")
    apply_event(s, impression("i1", "t1", "trending-US"), lambda t: [], P)
    apply_event(s, impression("i2", "t1", "because-you-watched-t9", TS + 10), lambda t: [], P)
    fx = apply_event(s, play("p1", "t1", TS + 20), lambda t: [], P)
    assert fx.row_takes == ["because_you_watched"]


# -- learned weights ----------------------------------------------------------------------
def test_row_weights_start_at_the_priors_and_follow_take_rates() -> None:
    prior = Rules().row_weights
    u = RowKindUtility(prior_strength=100.0)
    assert u.weights(prior) == prior
    u.learn({"continue_watching": 5000, "top_picks": 5000, "genre": 5000},
            {"top_picks": 900, "genre": 400})
    w = u.weights(prior)
    assert w["top_picks"] == pytest.approx(max(prior.values()))
    assert w["top_picks"] > w["genre"] > w["continue_watching"]
    assert w["continue_watching"] < 0.05
    # kinds without evidence keep their prior take rate: relative order among them holds
    assert w["top10"] > w["new_releases"]
    again = RowKindUtility.from_bytes(u.to_bytes())
    assert again.weights(prior) == w and again.counts() == u.counts()


def test_a_strong_prior_keeps_the_configured_order() -> None:
    prior = Rules().row_weights
    u = RowKindUtility(prior_strength=1e9)
    u.learn({"continue_watching": 100}, {})
    w = u.weights(prior)
    assert w["continue_watching"] == pytest.approx(prior["continue_watching"], rel=1e-3)


async def test_the_worker_learns_row_weights_and_moves_a_row_without_takes_down() -> None:
    store = InMemoryStore()
    await store.put_titles(make_titles(30))
    settings = Settings(row_length=5, row_prior_strength=2.0)
    # the wall clock an hour on: the 20 minutes of events are not in its future
    proc = EventProcessor(settings, store, MemoryDeadLetters(), clock=lambda: TS / 1000 + 3600)
    codec = default_codec()
    offset = 0

    async def send(events: list) -> None:
        nonlocal offset
        offset += 1
        await proc.process([RawMessage("events", 0, offset, b"p",
                                       codec.encode_batch("p", events))])

    # the member starts t1 (Continue Watching), then is shown pages and plays from Top Picks
    await send([play("s", "t1", TS, pos=60.0)])
    first = orjson.loads(store.pages["p"])
    assert first["rows"][0]["kind"] == "continue_watching"
    for k in range(20):
        ts = TS + (k + 1) * 60_000
        page = orjson.loads(store.pages["p"])
        shown = [impression(f"i{k}-{r}-{c}", it["title_id"], row["row_id"], ts)
                 for r, row in enumerate(page["rows"]) for c, it in enumerate(row["items"])]
        picks = next(r for r in page["rows"] if r["kind"] == "top_picks")
        await send([*shown, play(f"p{k}", picks["items"][0]["title_id"], ts + 1000)])
    counts = proc.row_utility.counts()
    assert counts["top_picks"][1] == 20
    assert counts["continue_watching"][0] >= 20 and counts["continue_watching"][1] == 0
    w = proc.page_config_for("control").row_weights
    assert w is not None and w["continue_watching"] < w["top_picks"]
    kinds = [r["kind"] for r in orjson.loads(store.pages["p"])["rows"]]
    assert kinds[0] == "top_picks" and kinds.index("continue_watching") > 0
    # the counts survive a restart through the checkpoint
    await proc.checkpoint(force=True)
    again = EventProcessor(settings, store, MemoryDeadLetters(), clock=lambda: TS / 1000)
    await again.start()
    assert again.row_utility.counts() == counts


# -- relevance and selection --------------------------------------------------------------
def test_cowatch_raises_the_relevance_of_titles_watched_with_the_members_history() -> None:
    cat = catalog(10)
    cw = CoWatchSimilarity()
    for _ in range(5):
        cw.learn_one(["t0"], "t6")  # t6 (Comedy) is co-watched with t0 (Action)
    s = ProfileState("p")
    apply_event(s, play("w", "t0", TS), cat.genres_of, P)
    rules = Rules(relevance_weights={"model": 0.0, "cowatch": 1.0, "content": 0.2,
                                     "popularity": 0.0})
    cfg = PageConfig(rules=rules)
    with_cw = relevance(s, cat.titles(), {}, None, TS, cfg, cw)
    without = relevance(s, cat.titles(), {}, None, TS, cfg, None)
    assert with_cw["t6"] > with_cw["t1"]  # t1 is Comedy too, never co-watched
    assert without["t6"] == without["t1"]


def test_a_row_whose_best_titles_are_already_placed_loses_utility() -> None:
    cat = catalog(10)
    a = CandidateRow("a", "top_picks", "A", "", [("t0", 1), ("t1", 1)], utility=0.9,
                     weight=0.9, rels=[1.0, 1.0])
    b = CandidateRow("b", "genre", "B", "", [("t0", 1), ("t1", 1), ("t2", 1)], utility=0.8,
                     weight=0.8, rels=[1.0, 1.0, 0.25])
    c = CandidateRow("c", "genre", "C", "", [("t5", 1)], utility=0.5, weight=0.5, rels=[1.0])
    chosen = select_rows([a, b, c], cat, 0.0, 3, row_length=2)
    assert [r.row_id for r in chosen] == ["a", "c", "b"]
    assert b.utility == pytest.approx(0.8 * 0.25)  # only t2 is left for b
    without = select_rows([CandidateRow("a", "top_picks", "A", "", [("t0", 1)], utility=0.9),
                           CandidateRow("b", "genre", "B", "", [("t0", 1)], utility=0.8)],
                          cat, 0.0, 2)
    assert [r.row_id for r in without] == ["a", "b"]


# -- the in-process replay harness --------------------------------------------------------
def test_in_process_replay_serves_pages_and_logs_them_as_impressions() -> None:
    from evaluation.movielens.data import Item

    items = [Item(f"m{i}", f"Movie {i}", 1990 + i % 8, (GENRES[i % 5],)) for i in range(30)]
    rec = InProcessPipeline(to_catalog(items), Settings(row_length=5))
    try:
        t0 = 880_000_000
        first = [Rating(str(u), f"m{(u * 7 + k) % 30}", 4, t0 + 60 * k)
                 for u in range(6) for k in range(4)]
        rec.learn(first)
        page = rec.page("1", t0 + 1000)
        assert page and "top_picks" in page.kinds
        assert rec.default_pages_served == 0
        rec.learn([Rating("1", page[1][0], 5, t0 + 1100)])  # played from the second row
        counts = rec.processor.row_utility.counts()
        assert sum(e for e, _ in counts.values()) == sum(min(5, len(r)) for r in page[:10])
        assert sum(t for _, t in counts.values()) == 1
        assert counts[page.kinds[1]][1] == 1
        assert rec.page("stranger", t0 + 1200) and rec.default_pages_served == 1
    finally:
        rec.close()


def test_view_impressions_cover_the_scored_block_only() -> None:
    rows = [{"row_id": f"genre-g{r}", "items": [{"title_id": f"t{r}-{c}", "artwork_id": "a"}
                                                for c in range(8)]} for r in range(12)]
    imps = view_impressions({"rows": rows}, "u", 880_000_000)
    assert len(imps) == 50 and {i.row for i in imps} == set(range(10))
    assert max(i.column for i in imps) == 4 and len({i.event_id for i in imps}) == 50


def test_the_ranking_diagnostic_serves_top_picks_as_rows_and_logs_the_home_page() -> None:
    from evaluation.movielens.data import Item

    items = [Item(f"m{i}", f"Movie {i}", 1990 + i % 8, (GENRES[i % 5],)) for i in range(40)]
    rec = InProcessPipeline(to_catalog(items), Settings(row_length=50), ranking_only=True)
    try:
        t0 = 880_000_000
        rec.learn([Rating("1", f"m{k}", 4, t0 + k) for k in range(5)])
        page = rec.page("1", t0 + 100)
        home = orjson.loads(rec._run(rec.store.get_page("1")))
        picks = next(r for r in home["rows"] if r["kind"] == "top_picks")
        assert page.kinds is None and [len(r) for r in page] == [5] * 7  # 35 unseen titles
        assert [t for r in page for t in r] == [i["title_id"] for i in picks["items"]]
        assert {i.row_id for i in rec._pending} == {r["row_id"] for r in home["rows"][:10]}
    finally:
        rec.close()


def test_relevance_weights_name_unknown_signals() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown relevance signal.*'pop'"):
        Rules(relevance_weights={"pop": 1.0})
    with pytest.raises(ValidationError, match="at least one > 0"):
        Rules(relevance_weights={"model": 0.0})


async def test_plays_feed_short_trending_and_long_popularity_lists() -> None:
    from features.keys import popular_list

    store = InMemoryStore()
    await store.put_titles(make_titles(12))
    settings = Settings(row_length=5, trending_half_life_s=3600.0,
                        popularity_half_life_s=30 * 86400.0,
                        clock_quorum=1)  # the one recent member's play moves the clock
    proc = EventProcessor(settings, store, MemoryDeadLetters(), clock=lambda: TS / 1000)
    codec = default_codec()
    old = TS - 2 * 86400_000  # two days earlier: forgotten by trending, not by popularity
    msgs = [RawMessage("events", 0, i, f"u{i}".encode(), codec.encode_event(
        Play(event_id=f"e{i}", profile_id=f"u{i}", event_ts_ms=ts, title_id=t,
             action="progress", position_s=500.0, duration_s=600.0, country="US")))
        for i, (t, ts) in enumerate([("t1", old), ("t1", old), ("t1", old), ("t2", TS)])]
    await proc.process(msgs)
    lists = {name for name, _ in store.trending}
    assert {"US", "ALL", popular_list("US"), popular_list("ALL")} <= lists
    short = await store.top_trending(["US"], proc._trending_epoch(), 5)
    long = await store.top_trending([popular_list("US")],
                                    proc._trending_epoch(settings.popularity_half_life_s), 5)
    assert short["US"][0][0] == "t2"  # the recent play leads the trending list
    assert long[popular_list("US")][0][0] == "t1"  # three plays two days ago still count


def test_a_row_left_with_too_few_titles_is_dropped_once_the_page_has_rows() -> None:
    cat = catalog(20)

    def row(rid: str, ids: list[str], u: float) -> CandidateRow:
        return CandidateRow(rid, "genre", rid, "", [(t, 1.0) for t in ids], utility=u,
                            weight=u, rels=[1.0] * len(ids))

    rows = [row("a", ["t0", "t1"], 0.9), row("b", ["t2", "t3"], 0.8),
            row("c", ["t4", "t5"], 0.7),
            row("d", ["t0", "t1", "t2", "t6"], 0.6),  # only t6 would be left
            row("e", ["t7", "t8", "t9"], 0.1)]
    chosen = select_rows(rows, cat, 0.0, 10, row_length=2, min_items=2)
    assert [r.row_id for r in chosen] == ["a", "b", "c", "e"]
    # with fewer rows taken, a short row still shows (a small catalog fills a page)
    short = select_rows([row("a", ["t0", "t1"], 0.9), row("d", ["t0", "t6"], 0.6)], cat,
                        0.0, 10, row_length=2, min_items=2)
    assert [r.row_id for r in short] == ["a", "d"]


def test_cowatch_scores_follow_a_new_position_map_without_relearning() -> None:
    cw = CoWatchSimilarity()
    cw.learn_one(["a"], "b")
    first = cw.score_history(["a"], {"a": 0, "b": 1, "c": 2}, 3)
    moved = cw.score_history(["a"], {"b": 0, "a": 1, "c": 2}, 3)  # a new catalog order
    assert first.tolist() == [0.0, 1.0, 0.0] and moved.tolist() == [1.0, 0.0, 0.0]
