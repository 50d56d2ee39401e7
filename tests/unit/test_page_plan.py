"""Compiled pages (serving.page_plan): the spliced response and impressions are exactly what
deciding and encoding item by item gives, and the Avro pieces are fastavro's bytes."""

from __future__ import annotations

import datetime as dt
import functools
import io
import itertools
import random
from typing import Any

import fastavro
import hiredis
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.catalog import Catalog
from online_models.bandits import Arm, make_policy
from online_models.bandits.sticky import StickyAssignment
from serving.artwork import ArtworkChooser, request_context
from serving.impressions import ImpressionLogger, ServedPage
from serving.page_plan import PagePlan
from serving.resp import bulk_string, command_header
from topics.avro_bytes import double_bytes, long_bytes, string_bytes
from topics.codec import BATCH_SCHEMA, default_codec
from topics.models import Artwork, Impression, Title

CODEC = default_codec()
TAGS = ["comedy", "cast", "scenic", "romance"]


def _titles() -> list[Title]:
    rng = random.Random(3)
    return [Title(title_id=f"x{i}", name=f"X{i}", genres=["Comedy"], maturity_rating="PG",
                  release_date=dt.date(2024, 1, 1), duration_s=100.0,
                  artwork=[Artwork(artwork_id=f"x{i}-a{k}", url=f"https://img/{i}/{k}",
                                   tags=[rng.choice(TAGS)]) for k in range(1 + i % 3)])
            for i in range(40)]


TITLES = _titles()


def _page() -> dict[str, Any]:
    rows = [{"row_id": f"r{r}", "kind": "top_picks", "title": f"Row {r}", "explanation": "",
             "items": [{"title_id": t.title_id, "name": t.name, "score": 0.5,
                        "artwork_id": t.artwork[0].artwork_id, "artwork_url": "stored"}
                       for t in TITLES[r * 8:(r + 1) * 8]]}
            for r in range(5)]
    rows[4]["items"][0]["policy"] = "materialized-by-test"  # a later row carrying a policy
    return {"profile_id": "p1", "personalized": True, "country": "US", "generated_at_ms": 1,
            "as_of_event_ts_ms": 1, "context": {"genre:Comedy": 0.7, "genre:Drama": -0.2},
            "rows": rows, "kids": False, "max_rating": "R", "variant": "control"}


def _trained(name: str) -> Any:
    policy = make_policy(name, seed=9)
    for i in range(150):
        t = TITLES[i % len(TITLES)]
        policy.learn_one({"genre:Comedy": 0.5, "country": "US"},
                         Arm(t.artwork[-1].artwork_id, tuple(t.artwork[-1].tags)),
                         float(i % 3 == 0))
    return policy


class _Reads:
    def __init__(self, assignments: dict[str, Any], flat: list[bytes] | None = None) -> None:
        self.assignments = assignments
        self.flat = flat


def _assignments(args: list[bytes]) -> dict[str, bytes]:
    """The ``HSET`` arguments of new assignments as title id -> stored JSON (later wins)."""
    return {t.decode(): v for t, v in zip(args[::2], args[1::2], strict=True)}


def _item_by_item(policy: Any, previous: dict[str, Any], now_ms: int,
                  request_id: str) -> tuple[dict[str, Any], bytes]:
    """What the server did before pages were compiled: decide, then encode every item."""
    page = _page()
    context = request_context(page.pop("context"), "US", "tv", now_ms)
    ArtworkChooser(sticky_s=60, max_rows=3).choose(policy, Catalog(TITLES), page["rows"],
                                                   context, previous, now_ms)
    page.update(request_id=request_id, served_at_ms=now_ms, source="personal")
    logger = ImpressionLogger("imp", producer=None, codec=CODEC)  # type: ignore[arg-type]
    events = logger.build_events(ServedPage("p1", request_id, now_ms, page["rows"], "tv", "US",
                                            orjson.dumps(context).decode(), "control"))
    value = CODEC.encode(BATCH_SCHEMA, {"profile_id": "p1", "events": [
        (Impression.schema_name, e) for e in events]})
    return page, value


def _compiled(policy: Any, previous: dict[str, Any], now_ms: int, request_id: str,
              flat: list[bytes] | None = None) -> tuple[PagePlan, Any]:
    plan = PagePlan.compile(
        profile_id="p1", source="personal", key=(), page=_page(), first_rows=3,
        title_art=functools.partial(ArtworkChooser(60).title_art, Catalog(TITLES)),
        country="US", impression_country="US", variant="control", codec=CODEC)
    decisions = plan.decisions(policy, "tv", now_ms)
    return plan, plan.serve(decisions, policy, _Reads(previous, flat), StickyAssignment(60),
                            request_id, now_ms)


PREVIOUS = {
    "x1": {"artwork_id": "x1-a1", "chosen_at_ms": 9_000, "propensity": 0.5, "policy": "old",
           "policy_version": 2},                                              # kept
    "x2": orjson.dumps({"artwork_id": "x2-a1", "chosen_at_ms": -100_000,
                        "propensity": 0.4}),                                  # expired
    "x4": {"artwork_id": "gone", "chosen_at_ms": 9_000, "propensity": 0.5},   # withdrawn
}


NOW = 1_796_370_000_123  # a decision time of today's 13 digits (prepared assignment pieces)


@pytest.mark.parametrize(("name", "now"), [
    ("lin_ucb", NOW), ("thompson", NOW), ("epsilon_greedy", NOW), ("non_contextual", NOW),
    ("uniform", NOW), ("lin_ucb", 10_000)])
def test_a_compiled_page_answers_and_logs_what_item_by_item_serving_did(name: str,
                                                                        now: int) -> None:
    trained = _trained(name)
    old_policy, new_policy = (type(trained).from_bytes(trained.to_bytes()) for _ in range(2))
    # Thompson's Monte Carlo propensities depend on which titles are decided together:
    # compare it on a first visit, where both paths decide the whole first screen
    previous = {} if name == "thompson" else {
        t: v if isinstance(v, bytes) else {**v, "chosen_at_ms": now - 1_000}
        for t, v in PREVIOUS.items()}
    rid = "0123456789abcdef0123456789abcdef"
    expected_page, expected_value = _item_by_item(old_policy, previous, now, rid)
    plan, served = _compiled(new_policy, previous, now, rid)
    assert orjson.loads(served.body) == expected_page
    assert served.impressions == expected_value
    assert served.impression_count == 40
    decided = {t for r in expected_page["rows"][:3] for t in
               (i["title_id"] for i in r["items"])} - ({"x1"} if previous else set())
    new = _assignments(served.assignments.args())
    assert set(new) == decided and served.decided == len(decided)
    for title_id, raw in new.items():
        stored = orjson.loads(raw)
        item = next(i for r in expected_page["rows"] for i in r["items"]
                    if i["title_id"] == title_id)
        assert stored == {"artwork_id": item["artwork_id"], "chosen_at_ms": now,
                          "propensity": item["propensity"], "policy": item["policy"],
                          "policy_version": item["policy_version"]}
    assert len(plan.slots) == 24


def test_stored_assignments_are_kept_while_their_period_lasts_then_drawn_again() -> None:
    policy = _trained("lin_ucb")
    first_plan, first = _compiled(policy, {}, 10_000, "a" * 32)
    stored = _assignments(first.assignments.args())
    flat = [b for t, v in stored.items() for b in (t.encode(), v)]
    plan = first_plan
    decisions = plan.decisions(policy, "tv", 20_000)
    sticky = StickyAssignment(60)
    again = plan.serve(decisions, policy, _Reads(stored, flat), sticky, "b" * 32, 20_000)
    assert len(again.assignments) == 0 and again.decided == 0
    shown = lambda s: [(i["title_id"], i["artwork_id"], i["propensity"])  # noqa: E731
                       for r in orjson.loads(s.body)["rows"][:3] for i in r["items"]]
    assert shown(again) == shown(first)
    # the same stored bytes again: the remembered answer, with this request's id and time
    third = plan.serve(decisions, policy, _Reads({}, flat), sticky, "c" * 32, 30_000)
    assert shown(third) == shown(first) and orjson.loads(third.body)["request_id"] == "c" * 32
    assert third.impressions is not None and b"c" * 32 in third.impressions
    # past the period (10 s + 60 s) every title is decided again and stored anew
    late = plan.serve(decisions, policy, _Reads(stored, flat), sticky, "d" * 32, 71_000)
    assert set(_assignments(late.assignments.args())) == set(stored)


@pytest.mark.parametrize("now", [10_000, 1_764_000_000_000])
def test_new_assignments_as_protocol_bytes_are_their_hset_arguments(now: int) -> None:
    policy = _trained("lin_ucb")
    plan, first = _compiled(policy, {}, now, "a" * 32)
    args = first.assignments.args()
    assert len(first.assignments) == len(args) // 2 == first.decided == len(plan.slots)
    packed = hiredis.pack_command((b"HSET", b"k", *args))
    assert command_header(2 + len(args), b"HSET") + bulk_string(b"k") + first.assignments.resp(
    ) == packed
    # a returning member with two titles forgotten: only those two are new, in page order
    stored = _assignments(args)
    gone = [s.title_id for s in plan.slots[3:5]]
    kept = {t: v for t, v in stored.items() if t not in gone}
    flat = [b for t, v in kept.items() for b in (t.encode(), v)]
    again = plan.serve(plan.decisions(policy, "tv", now + 1), policy, _Reads(kept, flat),
                       StickyAssignment(60), "b" * 32, now + 1)
    assert [t.decode() for t in again.assignments.args()[::2]] == gone
    assert again.assignments.resp() == b"".join(map(bulk_string, again.assignments.args()))


def test_decisions_follow_the_policy_version_and_the_hour() -> None:
    policy = _trained("lin_ucb")
    plan, _ = _compiled(policy, {}, 10_000, "a" * 32)
    d1 = plan.decisions(policy, "tv", 10_000)
    assert plan.decisions(policy, "tv", 20_000) is d1
    assert plan.decisions(policy, "tv", 10_000 + 3_600_000) is not d1
    assert plan.decisions(policy, "phone", 10_000) is not d1
    d2 = plan.decisions(policy, "tv", 10_000)
    policy.learn_one({"country": "US"}, Arm("x0-a0", ("comedy",)), 1.0)
    # a newer version: recomputed at once, or after max_age_ms with the older one
    assert plan.decisions(policy, "tv", 10_000) is not d2
    d3 = plan.decisions(policy, "tv", 10_000)
    policy.learn_one({"country": "US"}, Arm("x0-a0", ("comedy",)), 0.0)
    assert plan.decisions(policy, "tv", 30_000, max_age_ms=60_000) is d3
    assert d3.policy_version == policy.version - 1
    assert plan.decisions(policy, "tv", 70_001, max_age_ms=60_000) is not d3


def test_decisions_keep_no_old_policy_alive_and_drop_its_entries() -> None:
    """A compiled page holds decisions per context; an old policy object (each reload makes
    one, ~0.5-1 MB) must not stay alive through them, and a new version's decisions replace
    the old version's of every context."""
    import gc
    import weakref

    old = _trained("lin_ucb")
    plan, _ = _compiled(old, {}, 10_000, "a" * 32)
    plan.decisions(old, "phone", 10_000)
    alive = weakref.ref(old)
    new = _trained("lin_ucb")
    d = plan.decisions(new, "tv", 10_000)
    served = plan.serve(d, new, _Reads({}), StickyAssignment(0), "f" * 32, 10_000)
    assert served.decided == len(plan.slots)
    del old
    gc.collect()
    assert alive() is None
    assert list(plan._decisions.values()) == [d]


def test_items_without_a_title_id_are_reported_not_logged() -> None:
    page = _page()
    page["rows"][4]["items"].append({"name": "no id"})
    plan = PagePlan.compile(
        profile_id="p1", source="personal", key=(), page=page, first_rows=3,
        title_art=functools.partial(ArtworkChooser(60).title_art, Catalog(TITLES)),
        country="US", impression_country="US", variant="control", codec=CODEC)
    assert plan.invalid == [("-4-8", "invalid impression at row 4 column 8: "
                                     "title_id=None row_id='r4'")]
    policy = make_policy("uniform", 1)
    served = plan.serve(plan.decisions(policy, "tv", 5), policy, _Reads({}),
                        StickyAssignment(0), "e" * 32, 5)
    name, batch = CODEC.decode(served.impressions or b"")
    assert name == BATCH_SCHEMA and len(batch["events"]) == 40


def _fastavro(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), value)
    return buf.getvalue()


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(),
       st.floats(allow_nan=False))
def test_avro_pieces_are_fastavros_bytes(n: int, s: str, x: float) -> None:
    assert long_bytes(n) == _fastavro("long", n)
    assert string_bytes(s) == _fastavro("string", s)
    assert double_bytes(x) == _fastavro("double", x)


def test_a_new_catalog_s_artwork_is_served_though_the_propensities_are_the_same() -> None:
    policy = _trained("lin_ucb")
    moved = [t.model_copy(update={"artwork": [a.model_copy(update={"url": a.url + "/v2"})
                                              for a in t.artwork]}) for t in TITLES]
    urls = []
    for titles in (TITLES, moved):
        plan = PagePlan.compile(
            profile_id="p1", source="personal", key=(), page=_page(), first_rows=3,
            title_art=functools.partial(ArtworkChooser(60).title_art, Catalog(titles)),
            country="US", impression_country="US", variant="control", codec=CODEC)
        served = plan.serve(plan.decisions(policy, "tv", NOW), policy, _Reads({}),
                            StickyAssignment(0), "0123456789abcdef0123456789abcdef", NOW)
        urls.append([i["artwork_url"] for r in orjson.loads(served.body)["rows"][:3]
                     for i in r["items"]])
    assert all(u.startswith("https://img/") and not u.endswith("/v2") for u in urls[0])
    assert all(u.endswith("/v2") for u in urls[1]) and len(urls[1]) == 24


class _Counting:
    """A policy wrapper counting the titles it is asked about (the rest is the policy's)."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.asked = policy, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def propensities_many(self, context: Any, groups: Any) -> Any:
        self.asked += len(groups)
        return self.policy.propensities_many(context, groups)


ONE_CATALOG = functools.partial(ArtworkChooser(60).title_art, Catalog(TITLES))


def _fresh_plan(titles: list[Title] | None = None) -> PagePlan:
    """A page compiled anew, with the artwork of one catalog (or of ``titles``)."""
    return PagePlan.compile(
        profile_id="p1", source="personal", key=(), page=_page(), first_rows=3,
        title_art=ONE_CATALOG if titles is None else functools.partial(
            ArtworkChooser(60).title_art, Catalog(titles)),
        country="US", impression_country="US", variant="control", codec=CODEC)


@pytest.mark.parametrize("name", ["lin_ucb", "epsilon_greedy", "non_contextual", "uniform"])
def test_a_context_seen_on_another_page_is_decided_by_lookups(name: str) -> None:
    policy = _Counting(_trained(name))
    first = _fresh_plan().decisions(policy, "tv", NOW)  # type: ignore[arg-type]
    assert policy.asked == 0  # nothing asked until a title is drawn
    first_drawn = first.drawable(policy, _fresh_plan().slots)  # type: ignore[arg-type]
    asked = policy.asked
    assert asked == 24
    again = _fresh_plan().decisions(policy, "tv", NOW)  # type: ignore[arg-type]
    again_drawn = again.drawable(policy, _fresh_plan().slots)  # type: ignore[arg-type]
    assert policy.asked == asked  # the same context: nothing asked
    assert again_drawn == first_drawn
    phone = _fresh_plan().decisions(policy, "phone", NOW)  # type: ignore[arg-type]
    phone.drawable(policy, _fresh_plan().slots)  # type: ignore[arg-type]
    assert policy.asked == 2 * asked  # another context: asked again
    # the numbers are what asking about the whole page gives
    context = request_context(_page()["context"], "US", "tv", NOW)
    arms = [s.art.arms for s in _fresh_plan().slots]
    expected = policy.policy.propensities_many(context, arms)
    assert [c[:-1] for c in again_drawn[0]] == [
        list(itertools.accumulate(p.values()))[:-1] for p in expected]


def test_contexts_are_decided_again_for_another_policy_catalog_or_a_joint_policy() -> None:
    def decide(policy: Any, plan: PagePlan) -> None:
        plan.decisions(policy, "tv", NOW).drawable(policy, plan.slots)

    policy = _Counting(_trained("lin_ucb"))
    decide(policy, _fresh_plan())
    other = _Counting(_trained("lin_ucb"))  # the same name and version, another object
    decide(other, _fresh_plan())
    assert other.asked == 24
    moved = [t.model_copy(update={"artwork": list(t.artwork)}) for t in TITLES]
    decide(other, _fresh_plan(moved))
    assert other.asked == 48  # another catalog's artwork objects
    joint = _Counting(_trained("thompson"))
    for _ in range(2):
        decide(joint, _fresh_plan())
    assert joint.asked == 48


def test_a_returning_member_whose_titles_keep_their_artwork_asks_the_policy_nothing() -> None:
    policy = _Counting(_trained("lin_ucb"))
    plan = _fresh_plan()
    first = plan.serve(plan.decisions(policy, "tv", NOW), policy,  # type: ignore[arg-type]
                       _Reads({}), StickyAssignment(60), "a" * 32, NOW)
    assert policy.asked == 24 and first.decided == 24
    stored = _assignments(first.assignments.args())
    later = _fresh_plan()  # a new server process: nothing decided yet
    again = later.serve(later.decisions(policy, "phone", NOW + 1_000),  # type: ignore[arg-type]
                        policy, _Reads(stored), StickyAssignment(60), "b" * 32, NOW + 1_000)
    assert policy.asked == 24 and again.decided == 0
    assert [i["artwork_id"] for r in orjson.loads(again.body)["rows"][:3] for i in r["items"]] == [
        orjson.loads(stored[s.title_id])["artwork_id"] for s in later.slots]
    expired = later.serve(later.decisions(policy, "phone", NOW + 61_000),  # type: ignore[arg-type]
                          policy, _Reads(stored), StickyAssignment(60), "c" * 32, NOW + 61_000)
    assert expired.decided == 24 and policy.asked == 48
