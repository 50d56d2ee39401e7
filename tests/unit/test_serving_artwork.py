"""Artwork chosen at serve time: bandit decisions with propensities, sticky per member,
logged with the impressions that show them."""

from __future__ import annotations

import datetime as dt

import orjson
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
        await store.save_checkpoint(ARTWORK_CHECKPOINT, policy.to_bytes())
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
