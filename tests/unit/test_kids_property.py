"""Property: over generated catalogs and pages, a kids profile never receives a title above
PG or in a kids-blocked genre, from the home page, similar titles, rerank or search."""

from __future__ import annotations

import datetime as dt

import orjson
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.catalog import Catalog
from features.profile import FeatureParams, ProfileState, apply_event
from features.store import InMemoryStore
from homestream.settings import Settings
from online_models.page import PageConfig, assemble_page
from serving.app import create_app
from serving.impressions import ImpressionLogger
from topics.models import MATURITY_LEVELS, Artwork, Play, Title

GENRES = ["Action", "Comedy", "Horror", "Kids", "Drama"]
WORDS = ["night", "dark", "happy", "space", "castle", "river"]
TS = 1_700_000_000_000


class NullProducer:
    def produce(self, topic, value=None, key=None, on_delivery=None):
        if on_delivery:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Title], list[str], str]:
    n = draw(st.integers(2, 25))
    titles = [Title(
        title_id=f"t{i}",
        name=" ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))) + f" {i}",
        genres=draw(st.lists(st.sampled_from(GENRES), min_size=1, max_size=2, unique=True)),
        maturity_rating=draw(st.sampled_from(MATURITY_LEVELS)),
        release_date=dt.date(2020, 1, 1) + dt.timedelta(days=draw(st.integers(0, 1500))),
        duration_s=600.0, artwork=[Artwork(artwork_id=f"a{i}", url="u")],
        cast=draw(st.lists(st.sampled_from(["Ann Lee", "Bo Kim"]), max_size=1)),
    ) for i in range(n)]
    history = draw(st.lists(st.sampled_from([t.title_id for t in titles]), max_size=6))
    query = draw(st.sampled_from([*WORDS, *GENRES, "Ann Lee", titles[0].name]))
    return titles, history, query


def unsafe(items: list[dict], catalog: Catalog) -> list[str]:
    bad = []
    for i in items:
        t = catalog.get(i["title_id"])
        assert t is not None
        if not t.allowed_for("PG") or "Horror" in t.genres:
            bad.append(t.title_id)
    return bad


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds())
async def test_kids_profiles_never_receive_mature_titles_anywhere(world) -> None:
    titles, history, query = world
    catalog = Catalog(titles)
    store = InMemoryStore()
    await store.put_titles(titles)
    state = ProfileState("kid")
    for k, tid in enumerate(history):
        apply_event(state, Play(event_id=str(k), profile_id="kid", event_ts_ms=TS + k,
                                title_id=tid, action="progress", position_s=400.0,
                                duration_s=600.0, country="US"),
                    catalog.genres_of, FeatureParams())
    await store.commit_batch([state], [], {})
    # pages materialized *without* the kids setting (stale) must still be filtered at serve time
    adult_page = assemble_page(state, catalog, [(t.title_id, 1.0) for t in titles[:5]], None,
                               PageConfig(), "US", TS)
    default = assemble_page(None, catalog, [], None, PageConfig(), "ALL", TS)
    await store.write_pages({"kid": orjson.dumps(adult_page)}, {"ALL": orjson.dumps(default)})
    await store.put_profile_meta({"kid": {"kids": True}, "kid2": {"kids": True}})
    logger = ImpressionLogger("imp", NullProducer())
    app = create_app(Settings(), store=store, impressions=logger)
    async with TestClient(TestServer(app)) as client:
        for pid in ("kid", "kid2"):
            home = await (await client.get(f"/v1/homepage/{pid}?country=US")).json()
            assert not unsafe([i for r in home["rows"] for i in r["items"]], catalog)
            sim = await (await client.get(f"/v1/titles/t0/similar?profile_id={pid}")).json()
            assert not unsafe(sim["items"], catalog)
            ranked = await (await client.post("/v1/rerank", json={
                "profile_id": pid, "title_ids": [t.title_id for t in titles]})).json()
            assert not unsafe(ranked["items"], catalog)
            found = await (await client.get("/v1/search", params={
                "q": query, "profile_id": pid})).json()
            assert not unsafe(found["items"], catalog)
