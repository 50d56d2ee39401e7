"""Search: query classification, text scoring and personalized ranking (pure logic)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import Catalog
from online_models.search import (
    MAX_CANDIDATES,
    SearchIndex,
    classify_query,
    index_of,
    match,
    normalize,
    search,
    text_score,
)
from topics.models import Artwork, Title


def title(tid: str, name: str, genres: list[str] | None = None,
          cast: list[str] | None = None) -> Title:
    return Title(title_id=tid, name=name, genres=genres or [], cast=cast or [],
                 maturity_rating="PG", release_date=dt.date(2020, 1, 1), duration_s=60.0,
                 artwork=[Artwork(artwork_id=f"{tid}-a", url=f"u/{tid}")])


CAT = Catalog([
    title("a", "Star Voyage", ["Sci-Fi"], ["Mia Chen"]),
    title("b", "Star Voyage II", ["Sci-Fi"]),
    title("c", "Star Light", ["Drama"], ["Mia Chen"]),
    title("d", "Star Hunters", ["Action"]),
    title("e", "Star Trail", ["Drama"]),
    title("f", "Quiet Garden", ["Drama", "Family"]),
    title("g", "Drama Queen", ["Comedy"]),
])


def test_normalize() -> None:
    assert normalize("  Ça   VA?! ") == "ca va"
    assert normalize("Sci-Fi") == "sci fi"
    assert normalize("!!!") == ""


def test_classification_rules() -> None:
    assert classify_query("star voyage", CAT) == "fetch"         # exact name
    assert classify_query("Drama Queen", CAT) == "fetch"         # exact, though it has a genre
    assert classify_query("drama", CAT) == "explore"             # a genre
    assert classify_query("mia chen", CAT) == "explore"          # a cast member
    assert classify_query("quiet gar", CAT) == "fetch"           # prefix of one title
    assert classify_query("star", CAT) == "explore"              # prefix of many: broad
    assert classify_query("st", CAT) == "explore"                # too short to name one
    assert classify_query("garden quiet", CAT) == "fetch"        # all words of one name
    assert classify_query("hunters", CAT) == "fetch"             # half of one name's words
    assert classify_query("family sci fi", CAT) == "explore"     # genre words
    assert classify_query("nothing like it", CAT) == "explore"


def test_fetch_text_tiers_then_relevance_breaks_ties() -> None:
    cat = Catalog([title("n1", "Night Watch 1"), title("n2", "Night Watch 2"),
                   title("w", "Watch Night"), title("x", "The Night")])
    got = search("night watch", cat, {"n1": 0.1, "n2": 0.9, "w": 1.0, "x": 1.0}, limit=10,
                 mode="fetch")
    assert [t for t, _, _ in got] == ["n2", "n1", "w", "x"]  # prefix (tie: rel), words, any
    assert [why for _, _, why in got] == ["title prefix", "title prefix", "title words",
                                          "matched words"]
    assert got[0][1] == got[1][1] > got[2][1] > got[3][1]


def test_explore_is_mostly_personal_and_drops_weak_matches() -> None:
    rel = {"c": 0.9, "e": 0.1, "f": 0.5, "a": 1.0}
    got = search("drama", CAT, rel, limit=10)
    assert [t for t, _, _ in got] == ["c", "f", "g", "e"]
    assert dict((t, s) for t, s, _ in got)["c"] == round(0.3 * 0.6 + 0.7 * 0.9, 6)
    m = match("drama family", CAT)
    # "f" matches both words; titles matching one word (0.3) stay (>= half of 0.6)
    assert m.mode == "explore" and m.scores["f"] == 0.6 and m.scores["c"] == 0.3
    assert "a" not in m.scores


def test_empty_query_and_unknown_words_match_nothing() -> None:
    assert search("", CAT, {}, 10) == [] and search("?!", CAT, {}, 10) == []
    assert search("zebra", CAT, {}, 10) == []
    assert search("star", CAT, {}, 0) == []


def test_index_is_cached_per_catalog_version() -> None:
    cat = Catalog([title("a", "Alpha")])
    first = index_of(cat)
    assert index_of(cat) is first
    cat.upsert(title("b", "Beta"))
    assert index_of(cat) is not first and len(index_of(cat)) == 2
    assert index_of(first) is first


def test_candidates_are_capped() -> None:
    cat = SearchIndex([title(f"t{i:04d}", f"Show {i}", ["Drama"]) for i in range(1200)])
    assert len(match("drama", cat).scores) == MAX_CANDIDATES


# -- properties ---------------------------------------------------------------------------
WORDS = ["star", "Star", "night", "NIGHT", "watch", "café", "cafe", "moon", "the", "II",
         "drama", "Comedy", "mia", "chen", "a", "x1"]
GENRES = ["Drama", "Comedy", "Horror", "Sci-Fi", "Star"]
CAST = ["Mia Chen", "Ana Lima", "Night Owl"]

names = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(
    lambda ws: " ".join(ws)) | st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "Zs", "P")),
    min_size=1, max_size=20)


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    raw = draw(st.lists(names.filter(lambda n: normalize(n) != "" and n.strip() != ""),
                        min_size=1, max_size=8, unique_by=normalize))
    titles = [title(f"t{i}", name, draw(st.lists(st.sampled_from(GENRES), max_size=2)),
                    draw(st.lists(st.sampled_from(CAST), max_size=2)))
              for i, name in enumerate(raw)]
    return Catalog(titles)


relevances = st.dictionaries(st.sampled_from([f"t{i}" for i in range(8)]),
                             st.floats(0.0, 1.0), max_size=8)


@settings(max_examples=200, deadline=None)
@given(cat=catalogs(), rel=relevances, data=st.data())
def test_exact_name_in_fetch_mode_comes_first(cat: Catalog, rel: dict[str, float],
                                              data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(cat.titles()))
    assert classify_query(target.name, cat) == "fetch"
    got = search(target.name, cat, rel, limit=data.draw(st.integers(1, 10)), mode="fetch")
    assert got[0][0] == target.title_id and got[0][2] == "exact title"


@settings(max_examples=200, deadline=None)
@given(cat=catalogs(), rel=relevances, q=names, limit=st.integers(0, 12),
       mode=st.sampled_from([None, "fetch", "explore"]))
def test_results_have_no_duplicates_and_respect_the_limit(
        cat: Catalog, rel: dict[str, float], q: str, limit: int, mode: str | None) -> None:
    got = search(q, cat, rel, limit, mode=mode)  # type: ignore[arg-type]
    tids = [t for t, _, _ in got]
    assert len(tids) == len(set(tids)) <= limit
    assert set(tids) <= set(cat.title_ids())
    scores = [s for _, s, _ in got]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


@settings(max_examples=200, deadline=None)
@given(cat=catalogs(), q=names)
def test_match_scores_every_title_as_the_reference_text_score(cat: Catalog, q: str) -> None:
    index = index_of(cat)
    m = match(q, index, mode="fetch")  # fetch: no explore floor, nothing dropped
    nq = normalize(q)
    expected = {}
    for tid, doc in index.docs.items():
        score, reason = text_score(nq, doc) if nq else (0.0, "")
        if score > 0:
            expected[tid] = (score, reason)
    assert {tid: (s, m.reason(tid)) for tid, s in m.scores.items()} == expected
