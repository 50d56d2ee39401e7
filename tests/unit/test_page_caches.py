"""Page assembly's per-catalog caches (base items, id ranks, More Like X's content scores)
never serve a page other than the one assembled from scratch: not after the catalog changed,
not for another model's scores; and the batched score rounding equals ``round(x, 6)``."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from homestream.player.simulator import synthetic_catalog
from online_models.page import PageConfig, _row_items, assemble_page, title_item
from online_models.similarity import CoWatchSimilarity
from topics.models import Artwork, Feedback, Play, Title

TS = 1_700_000_000_000
NOW = TS + 3_600_000


def member(pid: str, titles: list[str], rated: str) -> ProfileState:
    """A member who played ``titles`` and loved ``rated`` (so the page has a More Like row)."""
    s = ProfileState(pid)
    for i, tid in enumerate(titles):
        apply_event(s, Play(event_id=f"{pid}-{i}", profile_id=pid, event_ts_ms=TS + i,
                            title_id=tid, action="progress", position_s=300.0,
                            duration_s=600.0, country="US"), lambda _: ["Drama"],
                    FeatureParams())
    apply_event(s, Feedback(event_id=f"{pid}-r", profile_id=pid, event_ts_ms=TS + 99,
                            title_id=rated, kind="thumbs_up"), lambda _: ["Drama"],
                FeatureParams())
    return s


def scorer_from(weights: dict[str, float]):
    """A Top Picks scorer: a fixed score per title (0 for the others)."""
    def score(_: str, ids) -> np.ndarray:
        return np.array([weights.get(t, 0.0) for t in ids])
    return score


def pages(catalog: Catalog, states: list[ProfileState], scorer, cowatch) -> list[dict]:
    return [assemble_page(s, catalog, [("t0", 5.0), ("t3", 2.0)], scorer, PageConfig(), "US",
                          NOW, cowatch=cowatch) for s in states]


def test_pages_after_catalog_changes_equal_pages_from_a_fresh_catalog() -> None:
    titles = synthetic_catalog(80, seed=3, now=dt.date(2023, 11, 14))
    ids = [t.title_id for t in titles]
    states = [member(f"p{i}", ids[i:i + 4], ids[i + 1]) for i in range(0, 12, 3)]
    cowatch = CoWatchSimilarity()
    for i in range(30):
        cowatch.learn_one(ids[i:i + 3], ids[i + 3])
    scorer = scorer_from({t: (i * 37 % 80) / 80 for i, t in enumerate(ids)})
    warm = Catalog(titles)
    before = pages(warm, states, scorer, cowatch)  # fills every per-catalog cache
    # a renamed title, a title whose genres changed, a removed one, a new one sorting first
    renamed = titles[5]
    later = max(t.updated_ts_ms for t in titles) + 1
    changed = [renamed.model_copy(update={"name": "Renamed", "updated_ts_ms": later}),
               titles[2].model_copy(update={"genres": ["Documentary"], "updated_ts_ms": later}),
               titles[7].model_copy(update={"title_id": "a-first"})]
    for t in changed:
        warm.upsert(t)
    warm.remove(ids[9])
    fresh = Catalog([t for t in warm.titles()])
    after = pages(warm, states, scorer, cowatch)
    assert after == pages(fresh, states, scorer, cowatch)
    assert after != before
    names = {i["title_id"]: i["name"] for p in after for r in p["rows"] for i in r["items"]}
    assert names[renamed.title_id] == "Renamed"
    assert ids[9] not in names


def test_another_models_scores_change_the_ranking_not_a_cached_one() -> None:
    titles = synthetic_catalog(60, seed=5, now=dt.date(2023, 11, 14))
    ids = [t.title_id for t in titles]
    states = [member("p", ids[:6], ids[1])]
    old = scorer_from({t: i / 60 for i, t in enumerate(ids)})
    new = scorer_from({t: 1 - i / 60 for i, t in enumerate(ids)})
    warm = Catalog(titles)
    with_old = pages(warm, states, old, None)
    with_new = pages(warm, states, new, None)
    assert with_new == pages(Catalog(titles), states, new, None)

    def top_picks(p: dict) -> list[str]:
        return [i["title_id"] for r in p["rows"] if r["kind"] == "top_picks" for i in r["items"]]

    assert top_picks(with_old[0]) and top_picks(with_old[0]) != top_picks(with_new[0])


def test_a_titles_base_item_follows_title_item() -> None:
    t = synthetic_catalog(1, seed=1)[0]
    base = {t.title_id: title_item(t, 0.0)}
    items = _row_items(base, [(t, 0.1234565)], lambda _: {"resume_position_s": 12.0})
    assert items == [title_item(t, 0.1234565, resume_position_s=12.0)]
    assert list(items[0]) == list(title_item(t, 0.1234565, resume_position_s=12.0))


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.one_of(
    st.floats(-2.0, 2.0, allow_nan=False),
    st.integers(-2_000_000, 2_000_000).map(lambda n: (n + 0.5) / 1e6),  # halfway cases
    st.sampled_from([0.0, -0.0, 1e-7, -1e-7, 5e-7, 0.0000015, 1.0, np.float64(0.3333335)])),
    min_size=1, max_size=40))
def test_batched_rounding_equals_round(scores: list[float]) -> None:
    t: Title = synthetic_catalog(1, seed=2)[0]
    base = {t.title_id: title_item(t, 0.0)}
    got = [i["score"] for i in _row_items(base, [(t, s) for s in scores], None)]
    want = [round(float(s), 6) for s in scores]
    assert [(g, str(g)) for g in got] == [(w, str(w)) for w in want]


def test_equal_relevance_ranks_by_id_after_titles_are_added() -> None:
    def title(tid: str) -> Title:
        return Title(title_id=tid, name=tid, genres=["Drama"], maturity_rating="PG",
                     release_date=dt.date(2020, 1, 1), duration_s=60.0,
                     artwork=[Artwork(artwork_id=f"{tid}-a", url="u")])

    catalog = Catalog([title(t) for t in ("t3", "t1", "t2")])

    def popular_picks() -> list[str]:  # one row (Popular Drama) of titles all as relevant
        page = assemble_page(None, catalog, [], None, PageConfig(), "US", NOW)
        return [i["title_id"] for r in page["rows"] for i in r["items"]]

    assert popular_picks() == ["t1", "t2", "t3"]
    catalog.upsert(title("t0"))
    catalog.upsert(title("t25"))
    assert popular_picks() == ["t0", "t1", "t2", "t25", "t3"]


def test_a_popularity_list_kept_as_an_array_follows_the_catalog_and_the_list() -> None:
    titles = synthetic_catalog(60, seed=7, now=dt.date(2023, 11, 14))
    ids = [t.title_id for t in titles]
    popular = [(ids[40], 9.0), (ids[3], 5.0), (ids[12], 2.0), ("not-in-catalog", 1.0)]

    def page(catalog: Catalog, src: list) -> dict:
        return assemble_page(None, catalog, [], None, PageConfig(), "US", NOW, popular=src)

    warm = Catalog(titles)
    before = page(warm, popular)  # the list's array is kept
    assert page(warm, popular) == before == page(Catalog(titles), list(popular))
    # the catalog changes under the same list object: a listed title added, one removed
    warm.upsert(titles[0].model_copy(update={"title_id": "not-in-catalog"}))
    warm.remove(ids[40])
    after = page(warm, popular)
    assert after == page(Catalog(warm.titles()), list(popular))
    assert after != before
    # another list (its own scores) on the same catalog is not served the kept one
    other = [(ids[12], 9.0), (ids[3], 1.0)]
    assert page(warm, other) == page(Catalog(warm.titles()), list(other)) != after


def test_content_scores_follow_the_catalog_arrays_and_the_day() -> None:
    from online_models.content import content_scores_indexed

    titles = synthetic_catalog(50, seed=9, now=dt.date(2023, 11, 14))
    catalog = Catalog(titles)
    affinity = {"Drama": 1.0, "Comedy": -0.5, "Horror": 0.25}
    idx = np.arange(0, 50, 3)

    def scores(cat: Catalog, day: dt.date) -> list[float]:
        return content_scores_indexed(cat.arrays(), idx, affinity, {}, day, 60).tolist()

    days = [dt.date(2023, 11, 14), dt.date(2023, 12, 30)]
    first = [scores(catalog, d) for d in days]
    assert first[0] != first[1]  # the new-release bonus moved with the day
    assert first == [scores(Catalog(titles), d) for d in days]
    catalog.upsert(titles[0].model_copy(update={"genres": ["Comedy"],
                                                "updated_ts_ms": titles[0].updated_ts_ms + 1}))
    after = scores(catalog, days[0])
    assert after == scores(Catalog(catalog.titles()), days[0]) != first[0]



def test_rows_read_off_ranked_positions_equal_rows_ranked_from_ids() -> None:
    from online_models.page import _id_ranks, candidate_rows
    from online_models.page_arrays import RankedTitles
    from online_models.rules import Rules

    def title(tid: str, released: dt.date, genre: str) -> Title:
        return Title(title_id=tid, name=tid, genres=[genre], maturity_rating="PG",
                     release_date=released, duration_s=60.0,
                     artwork=[Artwork(artwork_id=f"{tid}-a", url="u")])

    catalog = Catalog([title("old1", dt.date(2020, 1, 1), "Drama"),
                       title("old2", dt.date(2020, 6, 1), "Comedy"),
                       title("new1", dt.date(2023, 11, 1), "Drama"),
                       title("new2", dt.date(2023, 11, 10), "Comedy"),
                       title("oldest", dt.date(2019, 1, 1), "Drama")])
    cfg = PageConfig(row_length=5, rules=Rules(new_release_days=60))
    arr = catalog.arrays()
    rel_arr = np.array([0.5, 0.9, 0.5, 0.1, 0.7])  # a tie between old1 and new1
    rel = dict(zip(arr.ids, rel_arr.tolist(), strict=True))
    idx = np.arange(len(arr))
    ranked = RankedTitles(arr, idx[np.lexsort((_id_ranks(catalog)[idx], -rel_arr))],
                          rel_arr.tolist())
    allowed = frozenset(arr.ids)
    state = member("m", ["old1"], "old1")  # engaged: left out of every row

    def rows(day: dt.datetime, fast: bool) -> dict[str, list]:
        now = int(day.timestamp() * 1000)
        got = candidate_rows(state, catalog, allowed, rel, [("new2", 3.0)], None, cfg, "US",
                             now, ranked if fast else None)
        return {r.row_id: [r.ranked, r.utility] for r in got}

    for day in (dt.datetime(2023, 11, 14, tzinfo=dt.UTC), dt.datetime(2026, 11, 14,
                                                                      tzinfo=dt.UTC)):
        assert rows(day, True) == rows(day, False)
    recent = rows(dt.datetime(2023, 11, 14, tzinfo=dt.UTC), True)["new-releases"][0]
    later = rows(dt.datetime(2026, 11, 14, tzinfo=dt.UTC), True)["new-releases"][0]
    assert [t for t, _ in recent] == ["new1", "new2"]  # released in the 60 days, by relevance
    assert [t for t, _ in later] == ["old2", "oldest", "new1", "new2"]  # the newest instead


def _neighbours_from_scratch(cw: CoWatchSimilarity, seed: str, k: int,
                             exclude: set[str]) -> list[tuple[str, float]]:
    titles = {t for t in "abcdefgh" if t != seed and t not in exclude}
    scored = [(t, cw.similarity(seed, t)) for t in titles if cw.similarity(seed, t) > 0]
    return sorted(scored, key=lambda kv: (-kv[1], kv[0]))[:k]


def test_co_watch_neighbours_are_cached_only_until_the_model_learns_again() -> None:
    cw = CoWatchSimilarity()
    for history, title in [(["a"], "b"), (["a"], "c"), (["a", "d"], "e"), (["b"], "c")]:
        cw.learn_one(history, title)
    for k, exclude in [(2, set()), (3, {"b"}), (1, {"c", "e"}), (5, set())]:
        assert cw.most_similar("a", k, exclude) == _neighbours_from_scratch(cw, "a", k, exclude)
    before = cw.most_similar("a", 5)
    for _ in range(3):  # "f" becomes a's closest neighbour: the cached ranking must not stay
        cw.learn_one(["a"], "f")
    after = cw.most_similar("a", 5)
    assert after != before and after == _neighbours_from_scratch(cw, "a", 5, set())
    after.clear()  # a caller's list is its own, not the cache's
    assert cw.most_similar("a", 5) == _neighbours_from_scratch(cw, "a", 5, set())
    restored = CoWatchSimilarity.from_bytes(cw.to_bytes())
    assert restored.most_similar("a", 3, {"f"}) == cw.most_similar("a", 3, {"f"})
