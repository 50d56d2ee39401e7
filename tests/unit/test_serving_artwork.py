"""Artwork chosen at serve time: bandit decisions with propensities, sticky per member,
logged with the impressions that show them."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from features.store import InMemoryStore
from homestream.settings import Settings
from serving.app import create_app
from serving.impressions import ImpressionLogger
from topics.codec import default_codec
from topics.models import Artwork, Title


class Recorder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(self, topic, value=None, key=None, on_delivery=None):
        self.values.append(value)
        if on_delivery:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


TITLES = [Title(title_id=f"t{i}", name=f"T{i}", genres=["Comedy"], maturity_rating="PG",
                release_date=dt.date(2024, 1, 1), duration_s=100.0,
                artwork=[Artwork(artwork_id=f"t{i}-art{k}", url=f"https://img/{i}/{k}",
                                 tags=[tag]) for k, tag in enumerate(["comedy", "cast", "scenic"])])
          for i in range(4)]


def stored_page() -> bytes:
    items = [{"title_id": t.title_id, "name": t.name, "artwork_id": f"{t.title_id}-art0",
              "artwork_url": "u", "score": 1.0, "maturity_rating": "PG", "genres": ["Comedy"],
              "availability": []} for t in TITLES]
    return orjson.dumps({"profile_id": "p1", "personalized": True, "country": "US",
                         "generated_at_ms": 1, "as_of_event_ts_ms": 1,
                         "context": {"genre:Comedy": 1.0},
                         "rows": [{"row_id": "top-picks", "kind": "top_picks", "title": "Top",
                                   "explanation": "", "items": items}]})


async def test_artwork_is_chosen_logged_with_propensity_and_kept_for_the_member() -> None:
    store = InMemoryStore()
    await store.put_titles(TITLES)
    await store.write_pages({"p1": stored_page()}, {})
    rec = Recorder()
    logger = ImpressionLogger("imp", rec)
    app = create_app(Settings(artwork_policy="epsilon_greedy"), store=store, impressions=logger)
    async with TestClient(TestServer(app)) as client:
        first = await (await client.get("/v1/homepage/p1?country=US&device=tv")).json()
        second = await (await client.get("/v1/homepage/p1?country=US&device=tv")).json()
        await logger.drain()
    served = [(i["title_id"], i["artwork_id"]) for i in first["rows"][0]["items"]]
    assert all(a.startswith(t + "-art") for t, a in served)
    assert [(i["title_id"], i["artwork_id"]) for i in second["rows"][0]["items"]] == served
    assert "context" not in first  # the member features stay internal
    assignments = await store.load_artwork("p1")
    assert {t: a["artwork_id"] for t, a in assignments.items()} == dict(served)
    events = [e for v in rec.values for e in default_codec().decode_events(v)]
    assert len(events) == 8
    for e in events:
        assert e.policy == "epsilon_greedy" and 0 < e.propensity <= 1
        ctx = orjson.loads(e.context_json)
        assert ctx["country"] == "US" and ctx["device"] == "tv" and ctx["genre:Comedy"] == 1.0
    # the second page repeats the first decision: same image, same logged propensity
    by_title: dict[str, set] = {}
    for e in events:
        by_title.setdefault(e.title_id, set()).add((e.artwork_id, e.propensity))
    assert all(len(v) == 1 for v in by_title.values())


async def test_the_variant_is_on_the_response_and_every_impression() -> None:
    from online_models.experiments import assign_variant

    store = InMemoryStore()
    await store.put_titles(TITLES)
    await store.write_pages({"p1": stored_page()}, {})
    rec = Recorder()
    logger = ImpressionLogger("imp", rec)
    settings = Settings(experiment_salt="s1", experiment_split="a:1,b:1")
    app = create_app(settings, store=store, impressions=logger)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/v1/homepage/p1")).json()
        await logger.drain()
    expected = assign_variant("p1", "s1", {"a": 1, "b": 1})
    assert body["variant"] == expected
    events = [e for v in rec.values for e in default_codec().decode_events(v)]
    assert events and {e.variant for e in events} == {expected}


async def test_reloaded_policies_do_not_replay_the_same_draws() -> None:
    from online_models.bandits import make_policy
    from online_models.bandits.base import Arm
    from serving.catalog_cache import ARTWORK_CHECKPOINT, ServingModels

    store = InMemoryStore()
    models = ServingModels(store, artwork_policy="uniform", seed=3)
    arms = [Arm(f"a{k}") for k in range(3)]
    first_draws = []
    for version in range(6):  # the worker checkpoints a new version each time
        policy = make_policy("uniform", 42)
        policy._version = version
        await store.save_checkpoints({ARTWORK_CHECKPOINT: policy.to_bytes()}, version + 1)
        await models.refresh()
        first_draws.append(tuple(models.artwork_policy.select({}, arms).artwork_id
                                 for _ in range(4)))
    assert len(set(first_draws)) > 1  # same checkpoint RNG state, different draws


def test_only_the_first_screen_gets_artwork_decisions() -> None:
    from features.catalog import Catalog
    from online_models.bandits import make_policy
    from serving.artwork import ArtworkChooser

    rows = [{"items": [{"title_id": t.title_id}]} for t in TITLES]  # four rows
    new = ArtworkChooser(sticky_s=60, max_rows=2).choose(
        make_policy("lin_ucb", 1), Catalog(TITLES), rows, {"country": "US"}, {}, 0)
    assert sorted(new) == ["t0", "t1"]
    assert ["policy" in r["items"][0] for r in rows] == [True, True, False, False]


def test_the_page_step_chooses_what_title_by_title_decisions_would() -> None:
    """One vectorized decision over the first screen gives the same images, propensities
    and draws as deciding each title in page order, keeps assignments within their period
    and re-decides expired and withdrawn ones."""
    import random

    from features.catalog import Catalog
    from online_models.bandits import Arm, make_policy
    from online_models.bandits.sticky import Assignment, StickyAssignment
    from serving.artwork import ArtworkChooser

    rng = random.Random(3)
    tags = ["comedy", "cast", "scenic", "romance"]
    titles = [Title(title_id=f"x{i}", name=f"X{i}", genres=["Comedy"], maturity_rating="PG",
                    release_date=dt.date(2024, 1, 1), duration_s=100.0,
                    artwork=[Artwork(artwork_id=f"x{i}-a{k}", url=f"https://img/{i}/{k}",
                                     tags=[rng.choice(tags)]) for k in range(1 + i % 3)])
              for i in range(30)]
    catalog = Catalog(titles)
    for name in ("lin_ucb", "thompson", "epsilon_greedy", "non_contextual", "uniform"):
        trained = make_policy(name, seed=9)
        for i in range(200):
            t = titles[i % 30]
            trained.learn_one({"genre:Comedy": 0.5, "country": "US"},
                              Arm(t.artwork[0].artwork_id, tuple(t.artwork[0].tags)),
                              float(i % 4 == 0))
        batched, single = (type(trained).from_bytes(trained.to_bytes()) for _ in range(2))
        rows = [{"row_id": f"r{r}", "items": [{"title_id": t.title_id}
                                              for t in titles[r * 10:(r + 1) * 10]]}
                for r in range(3)]
        previous = {"x1": {"artwork_id": "x1-a0", "chosen_at_ms": 9_000, "propensity": 0.5,
                           "policy": "old", "policy_version": 2},           # kept
                    "x2": orjson.dumps({"artwork_id": "x2-a1", "chosen_at_ms": 1_000,
                                        "propensity": 0.4}),               # expired
                    "x4": {"artwork_id": "gone", "chosen_at_ms": 9_000,
                           "propensity": 0.5}}                              # withdrawn
        ctx = {"genre:Comedy": 0.8, "country": "US", "device": "tv", "hour": 20}
        new = ArtworkChooser(sticky_s=5, max_rows=3).choose(
            batched, catalog, rows, ctx, previous, now_ms=10_000)
        sticky = StickyAssignment(period_s=5)
        for item in (it for row in rows for it in row["items"]):
            t = catalog.get(item["title_id"])
            raw = previous.get(t.title_id)
            prev = Assignment(**(orjson.loads(raw) if isinstance(raw, bytes) else raw)) \
                if raw is not None else None
            d = sticky.assign(single, ctx, [Arm(a.artwork_id, tuple(a.tags))
                                            for a in t.artwork], prev, 10_000)
            assert item["artwork_id"] == d.choice.artwork_id, (name, t.title_id)
            assert item["propensity"] == pytest.approx(d.choice.propensity, rel=1e-9)
            assert item["policy"] == d.choice.policy
            assert (t.title_id in new) == d.is_new
        assert "x1" not in new and {"x2", "x4"} <= set(new)
        assert batched._rng.random() == single._rng.random()  # the same number of draws


async def test_a_server_started_before_the_catalog_chooses_artwork_once_it_is_stored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages exist but the process loaded an empty catalog (it started first): the request
    refreshes the snapshot (``ServingModels.refreshed_for_miss``) instead of serving the
    page without artwork decisions until the next periodic refresh."""
    from serving import catalog_cache

    monkeypatch.setattr(catalog_cache, "MISS_REFRESH_S", 0.05)
    store = InMemoryStore()
    logger = ImpressionLogger("imp", Recorder())
    app = create_app(Settings(artwork_policy="epsilon_greedy"), store=store, impressions=logger)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v1/homepage/p1?country=US")).status == 200  # empty loaded
        await store.put_titles(TITLES)
        await store.write_pages({"p1": stored_page()}, {})
        await asyncio.sleep(0.1)  # past the bound, well before the 2 s periodic refresh
        page = await (await client.get("/v1/homepage/p1?country=US")).json()
        await logger.drain()
    assert [i["title_id"] for i in page["rows"][0]["items"]] == [t.title_id for t in TITLES]
    assert set(await store.load_artwork("p1")) == {t.title_id for t in TITLES}
