"""The compiled page core (``online_models._page_core``) builds the pages the Python
reference builds, byte for byte: members with histories, ratings, impressions and an
in-progress title, under rules that change every step it takes (row length, titles in
view, rows, the diversity penalty, required kinds, short rows)."""

from __future__ import annotations

import datetime as dt
import random
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import online_models.content as content_module
import online_models.page as page_module
from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from homestream.player.simulator import synthetic_catalog
from online_models.page import CandidateRow, PageConfig, assemble_page
from online_models.rules import Rules
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from topics.models import Feedback, Impression, Play

TS = 1_700_000_000_000
NOW = TS + 86_400_000


def test_the_compiled_core_is_built() -> None:
    # the install (setup.py) builds it wherever a C compiler is; CI must run it, not the
    # Python fallback, or the comparisons below compare the reference with itself
    assert page_module._page_core is not None, "online_models._page_core was not built"
    from streams.worker import page_core

    assert page_core() == "compiled"  # what the worker logs at start-up


def _world(seed: int) -> tuple[Catalog, list[ProfileState], TopPicksModel, CoWatchSimilarity]:
    """A catalog, members who played, rated and were shown titles, and models learned from
    their plays."""
    rng = random.Random(seed)
    titles = synthetic_catalog(150, seed=seed, now=dt.date(2023, 11, 14))
    cat = Catalog(titles)
    ids = cat.title_ids()
    model, cowatch = TopPicksModel(), CoWatchSimilarity()
    states = []
    for m in range(12):
        pid = f"p{m}"
        s = ProfileState(pid)
        history: list[str] = []
        for k in range(rng.randrange(0, 30)):
            tid, ts = rng.choice(ids), TS + 1000 * k
            event = rng.random()
            if event < 0.6:
                action = rng.choice(["start", "progress", "stop"])
                apply_event(s, Play(event_id=f"{pid}-{k}", profile_id=pid, event_ts_ms=ts,
                                    title_id=tid, action=action,
                                    position_s=rng.uniform(0, 600), duration_s=600.0,
                                    country="US"), cat.genres_of, FeatureParams())
                model.learn_one(pid, tid, 1.0)
                if history:
                    cowatch.learn_one(history[-3:], tid)
                history.append(tid)
            elif event < 0.75:
                apply_event(s, Feedback(event_id=f"{pid}-{k}", profile_id=pid, event_ts_ms=ts,
                                        title_id=tid, kind=rng.choice(["thumbs_up",
                                                                       "thumbs_down"])),
                            cat.genres_of, FeatureParams())
            else:
                apply_event(s, Impression(event_id=f"{pid}-{k}", profile_id=pid,
                                          event_ts_ms=ts, request_id="r", title_id=tid,
                                          row_id="top-picks", row=0, column=k % 5,
                                          artwork_id="a", propensity=1.0,
                                          policy="materialized"),
                            cat.genres_of, FeatureParams())
        states.append(s)
    return cat, states, model, cowatch


def _both(monkeypatch: pytest.MonkeyPatch, cat: Catalog, state: ProfileState | None,
          model: TopPicksModel, cowatch: CoWatchSimilarity, config: PageConfig
          ) -> tuple[bytes, bytes]:
    # scores tied in threes (Trending's stable sort), a title the catalog does not hold
    trending = [(t, float((60 - i) // 3)) for i, t in enumerate(cat.title_ids()[10:60])]
    trending.insert(5, ("not-in-the-catalog", trending[5][1]))

    def page() -> bytes:
        return orjson.dumps(assemble_page(state, cat, trending, model.score_many, config,
                                          "US", NOW, cowatch=cowatch),
                            option=orjson.OPT_SORT_KEYS)

    compiled = page()
    with monkeypatch.context() as m:
        m.setattr(page_module, "_page_core", None)
        m.setattr(content_module, "_page_core", None)
        reference = page()
    return compiled, reference


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 3), row_length=st.integers(1, 25), visible=st.integers(1, 8),
       max_rows=st.integers(1, 12), penalty=st.sampled_from([0.0, 0.2, 0.7, 3.0]),
       min_items=st.integers(1, 6), required=st.sampled_from(
           [[], ["top_picks"], ["continue_watching", "top10", "new_releases"]]),
       discount=st.sampled_from([1.0, 0.5]))
def test_compiled_pages_equal_the_reference(seed: int, row_length: int, visible: int,
                                            max_rows: int, penalty: float, min_items: int,
                                            required: list[str], discount: float) -> None:
    cat, states, model, cowatch = _world(seed)
    rules = Rules(visible_columns=visible, max_rows=max_rows, diversity_penalty=penalty,
                  min_row_items=min_items, required_rows=required,
                  impression_discount=discount)
    config = PageConfig(row_length=row_length, rules=rules)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for state in [None, *states]:
            compiled, reference = _both(monkeypatch, cat, state, model, cowatch, config)
            assert compiled == reference


def test_a_row_with_a_title_not_in_the_catalog_takes_the_python_path() -> None:
    cat = _world(1)[0]
    rows = [CandidateRow("r", "top_picks", "", "", [("not-a-title", 1.0)])]
    arr = cat.arrays()
    assert page_module._page_core is not None
    assert page_module._page_core.select_fill(
        rows, arr.pos, page_module.genre_counts(cat), [{}] * len(arr), arr.ids, 0.2, 5, 10,
        1, frozenset(), 5, "continue_watching") is None


def test_selection_sets_the_utilities_the_reference_sets() -> None:
    cat = _world(2)[0]
    ids = cat.title_ids()
    rng = random.Random(7)

    def rows() -> list[CandidateRow]:
        out = []
        for i, kind in enumerate(["top_picks", "genre", "trending", "continue_watching"]):
            ranked = [(t, rng.random()) for t in rng.sample(ids, 30)]
            rels = [rng.random() for _ in ranked] if kind != "trending" else None
            out.append(CandidateRow(f"r{i}", kind, "", "", ranked, utility=0.9 - 0.1 * i,
                                    weight=1.0 - 0.1 * i, rels=rels))
        return out

    state = rng.getstate()
    compiled_rows = rows()
    rng.setstate(state)
    reference_rows = rows()
    compiled = page_module._select_fill_compiled(compiled_rows, cat, Rules(max_rows=3), 10,
                                                 4, ["trending"], 5)
    assert compiled is not None
    reference = page_module.select_rows(reference_rows, cat, 0.2, 3, 10, 4, ["trending"], 5)
    assert [c.row_id for c in compiled[0]] == [c.row_id for c in reference]
    assert [(c.utility, c.adjusted_utility) for c in compiled_rows] == [
        (c.utility, c.adjusted_utility) for c in reference_rows]


def test_rows_over_positions_refuse_a_title_not_in_the_catalog() -> None:
    from features.rows import RowKind
    from online_models.page_arrays import RankedTitles
    from online_models.page_positions import PositionRows, RelevanceByPosition, Unplaced

    cat = _world(3)[0]
    arr = cat.arrays()
    rel = [0.5] * len(arr)
    ranked = RankedTitles(arr, page_module.np.arange(len(arr)), rel, page_module.np.array(rel),
                          page_module._id_ranks(cat))
    rows = PositionRows(RelevanceByPosition(ranked), set(arr.ids), set(), 30, {})
    rows.use_ranked(ranked)
    rows.add("top10", RowKind.TOP10, "", "", [(arr.ids[0], 1.0), (arr.ids[1], 0.5)])
    assert rows.rows[0].positions.tolist() == [0, 1]
    assert rows.rows[0].rels.tolist() == [0.5, 0.5]
    with pytest.raises(Unplaced):
        rows.add("top10", RowKind.TOP10, "", "", [("not-a-title", 1.0)])
    with pytest.raises(Unplaced):
        rows.by_rel_near([(arr.ids[2], 0.3), ("not-a-title", 0.9)])
    near = rows.by_rel_near([(arr.ids[2], 0.3), (arr.ids[1], 0.9), (arr.ids[0], 0.3)])
    # relevance x (1 - a + a x similarity): the closer neighbour first, ties by id
    assert near.pos.tolist() == [1, 0, 2]


@settings(max_examples=3000, deadline=None)
@given(x=st.one_of(st.floats(allow_nan=False), st.floats(-3000, 3000),
                   st.integers(-10**7, 10**7).map(lambda k: (k + 0.5) / 1e6)))
def test_the_compiled_rounding_is_pythons(x: float) -> None:
    # the fast path (millionths below 2**31, not near a half) and the printf one
    got = page_module._page_core.round6(x)
    assert struct.pack("<d", got) == struct.pack("<d", round(x, 6))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 5), genre_aff=st.dictionaries(
           st.sampled_from(["Action", "Comedy", "Drama", "Horror", "Kids", "Nope"]),
           st.floats(-50, 50), max_size=6),
       cast_aff=st.dictionaries(st.text(min_size=1, max_size=12), st.floats(-5, 5),
                                max_size=8),
       days=st.integers(1, 400), subset=st.integers(1, 7))
def test_compiled_content_scores_equal_the_reference(seed: int, genre_aff: dict[str, float],
                                                     cast_aff: dict[str, float], days: int,
                                                     subset: int) -> None:
    titles = synthetic_catalog(60, seed=seed, now=dt.date(2023, 11, 14))
    arr = Catalog(titles).arrays()
    cast = [c for t in titles for c in t.cast][:3]
    cast_aff = {**cast_aff, **{c: 1.5 - i for i, c in enumerate(cast)}}
    idx = page_module.np.arange(0, len(arr), subset)
    today = dt.date(2023, 11, 14)
    compiled = content_module.content_scores_indexed(arr, idx, genre_aff, cast_aff, today, days)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(content_module, "_page_core", None)
        reference = content_module.content_scores_indexed(arr, idx, genre_aff, cast_aff, today,
                                                          days)
    assert compiled.tobytes() == reference.tobytes()


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_the_compiled_blend_is_the_reference(n: int, data: st.DataObject) -> None:
    signal = st.tuples(
        st.floats(-2, 2), st.one_of(
            st.lists(st.floats(-3, 3), min_size=n, max_size=n),
            st.floats(-3, 3).map(lambda v: [v] * n),  # equal for every title
            st.lists(st.sampled_from([0.5, float("nan")]), min_size=n, max_size=n)))
    signals = [(w, page_module.np.array(x)) for w, x in data.draw(
        st.lists(signal, min_size=1, max_size=5))]
    compiled = page_module._page_core.blend(signals)
    reference = page_module.blend(signals)
    if reference is None:
        assert compiled is None
    else:
        assert compiled.tobytes() == reference.tobytes()


def _more_like_by_full_sort(catalog: Catalog, seed: str, cowatch: CoWatchSimilarity, k: int,
                            allowed: set[str], exclude: set[str]) -> list[tuple[str, float]]:
    """More Like X scored over every content neighbour and sorted whole (the reference of
    ``_more_like``, which reads only the best of the content neighbours' cached order)."""
    seed_genres = set(catalog.genres_of(seed))
    content = dict(page_module.content_neighbors(catalog, seed))
    keyed = {t: -round(0.6 * s, 6) for t, s in content.items()
             if t in allowed and t not in exclude}
    near = [(t, s) for t, s in cowatch.most_similar(seed, 2 * k, exclude=exclude)
            if t in allowed and not seed_genres.isdisjoint(catalog.genres_of(t))]
    top = max((s for _, s in near), default=0.0) or 1.0
    for t, s in near:
        keyed[t] = -round(0.6 * content.get(t, 0.0) + 0.4 * (s / top), 6)
    keyed.pop(seed, None)
    return [(t, -v) for v, t in sorted((v, t) for t, v in keyed.items())[:k]]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 3), pick=st.integers(0, 149), k=st.integers(1, 40),
       allowed_share=st.sampled_from([1.0, 0.7, 0.2]), excluded=st.integers(0, 30))
def test_more_like_equals_the_full_sort(seed: int, pick: int, k: int, allowed_share: float,
                                       excluded: int) -> None:
    cat, _, _, cowatch = _world(seed)
    ids = cat.title_ids()
    rng = random.Random(pick)
    allowed = {t for t in ids if rng.random() < allowed_share}
    exclude = set(rng.sample(ids, excluded))
    title = ids[pick]
    assert page_module._more_like(cat, title, cowatch, k, allowed, exclude) == \
        _more_like_by_full_sort(cat, title, cowatch, k, allowed, exclude)
