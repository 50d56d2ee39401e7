"""The home-page path: the fallback chain, guardrails, compiled pages, artwork, impressions.

``GET /v1/homepage/{profile_id}`` reads everything it needs in one Redis round trip
(:mod:`serving.home_read`), serves the profile's page, else the default page of the country,
else of all countries, else a "Latest" row from the catalog, else an empty page, with the
guardrails applied; each server process compiles a page once (:mod:`serving.page_plan`) and
per request only decides the first screen's artwork, answers, logs the page as one message
and queues the new assignments (:mod:`serving.assignments`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import web

from features.keys import ALL_COUNTRIES
from features.profile import ProfileMeta
from features.rows import RowKind, row_kind_of
from features.store import PipelineStore, RedisStore
from online_models.page import Page, PageRow, title_item
from online_models.rules import Rules
from serving.assignments import AssignmentWriter
from serving.catalog_cache import CatalogSnapshot
from serving.home_read import (
    HomeReads,
    InProgress,
    home_country,
    read_home,
    state_view,
)
from serving.http import (
    ARTWORK,
    EXPERIMENT,
    IMPRESSIONS,
    MODELS,
    PAGE_CONFIG,
    RULES,
    STORE,
    STORE_UNAVAILABLE,
    now_ms,
)
from serving.metrics import record_page
from serving.page_plan import PagePlan
from serving.redis_mux import RedisMux
from serving.validation import COUNTRY_RE, check_country, check_device, check_profile_id
from topics.models import Title

log = logging.getLogger("serving.app")

#: The serve-time fallback row built from the catalog when no page is materialized.
LATEST_ROW = {"row_id": "latest", "kind": "latest", "title": "Latest",
              "explanation": "The newest titles"}


def empty_page(profile_id: str, country: str | None) -> dict[str, Any]:
    """What is served when nothing is materialized yet (a fresh deployment)."""
    return {"profile_id": profile_id, "personalized": False,
            "country": country or ALL_COUNTRIES, "generated_at_ms": None,
            "as_of_event_ts_ms": None, "rows": []}


def item_allowed(rules: Rules, item: Any, meta: ProfileMeta, country: str | None) -> bool:
    """``rules.allows_item``, failing closed: an item without a known rating is not shown."""
    return _fail_closed(rules.item_check(meta, country), item)


def _fail_closed(check: Callable[[dict], bool], item: Any) -> bool:
    try:
        return check(item)
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


def guard_rows(rows: list[PageRow], rules: Rules, meta: ProfileMeta,
               country: str | None) -> list[PageRow]:
    """Serve-time guardrails: drop items ``rules`` do not allow for ``meta`` in ``country``
    (no country: availability is not checked) and rows left without items, failing closed
    like :func:`item_allowed`. Input is not mutated."""
    check = rules.item_check(meta, country)
    out = []
    for row in rows:
        items = row.get("items") or ()
        try:
            kept = list(filter(check, items))
        except (KeyError, ValueError, TypeError, AttributeError):  # a malformed item
            kept = [it for it in items if _fail_closed(check, it)]
        if kept:
            out.append({**row, "items": kept})
    return out


def is_continue_watching(row: PageRow) -> bool:
    """Whether ``row`` is a Continue Watching row (by kind or by row id)."""
    row_id = row.get("row_id")
    return row.get("kind") == RowKind.CONTINUE_WATCHING or (
        isinstance(row_id, str) and row_kind_of(row_id) == RowKind.CONTINUE_WATCHING)


def drop_finished(rows: list[PageRow], state: InProgress | None) -> list[PageRow]:
    """Serve-time Continue Watching check: keep only the titles ``state`` still has in
    progress (not finished, a playhead stored), with their newest resume position. A page
    materialized before the play that finished a title is otherwise stale. Without a stored
    state nothing is known and the rows are returned as they are; other rows untouched;
    input not mutated."""
    if state is None:
        return rows
    out = []
    for row in rows:
        if not (isinstance(row, dict) and is_continue_watching(row)):
            out.append(row)
            continue
        items = []
        for it in row.get("items") or ():
            tid = it.get("title_id") if isinstance(it, dict) else None
            position = state.resume_position(tid) if isinstance(tid, str) else None
            if position is not None:
                items.append({**it, "resume_position_s": position})
        out.append({**row, "items": items})
    return out


def latest_page(snap: CatalogSnapshot, rules: Rules, meta: ProfileMeta, country: str | None,
                profile_id: str, row_length: int, at_ms: int) -> dict[str, Any] | None:
    """A page of one "Latest" row: the ``row_length`` newest titles of the catalog (release
    date, then title id, descending) that ``rules`` allow for ``meta`` in ``country``,
    scored by rank; ``None`` when none is allowed (or the catalog is empty)."""
    catalog = snap.catalog
    titles: list[Title] = []
    for tid in catalog.newest(len(catalog)):
        t = catalog.get(tid)
        if t is not None and t.artwork and rules.allows(t, meta, country):
            titles.append(t)
            if len(titles) >= row_length:
                break
    if not titles:
        return None
    n = len(titles)
    items = [title_item(t, 1.0 - i / n) for i, t in enumerate(titles)]
    return {"profile_id": profile_id, "personalized": False,
            "country": country or ALL_COUNTRIES, "generated_at_ms": at_ms,
            "as_of_event_ts_ms": None, "rows": [{**LATEST_ROW, "items": items}]}




def parse_page(raw: bytes) -> Page:
    """A stored page (materialized by the worker), checked to be an object with rows."""
    page = orjson.loads(raw)
    if not isinstance(page, dict) or not isinstance(page.get("rows"), list):
        raise ValueError("stored page is not an object with a rows list")
    return page


def impression_country(requested: str | None, page: Page) -> str:
    """The country impressions are logged with: the request's, else the page's, else ZZ."""
    if requested is not None:
        return requested
    c = page.get("country")
    return c if isinstance(c, str) and COUNTRY_RE.fullmatch(c) else "ZZ"




# -- compiled pages -------------------------------------------------------------------------
#: Compiled pages kept between two :func:`settle_heap` calls.
FREEZE_EVERY = 256
#: The cyclic collector's thresholds in a server process (Python's default: 700, 10, 10).
#: What a compiled page keeps between requests (decisions per context, a returning member's
#: parsed assignments) is made after its page was frozen; with the defaults the oldest
#: generation was walked every ~4 s under load, a 6-12 ms pause each time (measured with
#: ``gc.callbacks`` in the server of a ``python -m bench.serving`` return pass): now every
#: 100 times as rarely. The young generations keep Python's sizes: a settle collects them,
#: and with 20,000 / 20 they held a few hundred compiled pages' objects (a 30-50 ms pause).
GC_THRESHOLDS = (700, 10, 1000)


def settle_heap() -> None:
    """Collect the young generations, move every object alive to the collector's permanent
    generation (``gc.freeze``) and set :data:`GC_THRESHOLDS`: compiled pages live long and
    hold many containers, and full collections walking them again and again cost a third
    of a server's CPU and its p99 (measured by ``python -m bench.serving`` with the
    collector off). Frozen objects are still freed by reference counting when a page is
    dropped; only cyclic garbage among them would wait (compiled pages make none)."""
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)



@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while a page is compiled and first decided: those steps make
    thousands of short-lived containers (the parsed page, the guarded rows) and no cyclic
    garbage, and young collections in the middle of them walked the parsed page again and
    again (a server compiling every member's page spent ~30% less CPU per compile with the
    collector off). What stays (the compiled page) is collected and frozen by the next
    :func:`settle_heap`. Nested or overlapping uses (other requests run while one awaits)
    leave it on once the first that turned it off is done."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class HomeState:
    """What a server process keeps for the home page: the compiled plans of the pages it
    served lately (least recently served dropped beyond ``max_plans``), the writer of
    artwork assignments and, with ``multiplex``, the one connection every request's read
    shares (:mod:`serving.redis_mux`; the writer has another)."""

    def __init__(self, max_plans: int, *, redis_timeout_s: float = 1.0,
                 multiplex: bool = True, assignments_max: int = 0) -> None:
        self.max_plans = max_plans
        self.assignments_max = assignments_max
        self.redis_timeout_s = redis_timeout_s
        self.multiplex = multiplex
        self.plans: OrderedDict[str, PagePlan] = OrderedDict()
        self.compiled = 0
        self.writer: AssignmentWriter | None = None
        self._since_freeze = 0
        self._mux: RedisMux | None = None
        self._mux_store: PipelineStore | None = None

    def get(self, profile_id: str) -> PagePlan | None:
        plan = self.plans.get(profile_id)
        if plan is not None:
            self.plans.move_to_end(profile_id)
        return plan

    def put(self, profile_id: str, plan: PagePlan) -> None:
        if self.max_plans <= 0:
            return
        self.plans[profile_id] = plan
        self.plans.move_to_end(profile_id)
        while len(self.plans) > self.max_plans:
            self.plans.popitem(last=False)
        self._since_freeze += 1
        if self._since_freeze >= FREEZE_EVERY:
            self._since_freeze = 0
            settle_heap()

    def forget(self, profile_id: str) -> None:
        """Drop the compiled page of ``profile_id`` (an erased member's, for one)."""
        self.plans.pop(profile_id, None)

    def mux_for(self, store: PipelineStore) -> RedisMux | None:
        """The shared connection to ``store``'s Redis (``None``: redis-py's pool is used)."""
        if self._mux_store is not store:
            self._mux_store = store
            self._mux = RedisMux.for_store(store, self.redis_timeout_s) if (
                self.multiplex and isinstance(store, RedisStore)) else None
        return self._mux

    def writer_for(self, store: PipelineStore, ttl_s: float = 0.0) -> AssignmentWriter:
        """The writer of artwork assignments (``ttl_s``: their sticky period), made once."""
        if self.writer is None:
            self.writer = AssignmentWriter(store, RedisMux.for_store(store, self.redis_timeout_s)
                                           if self.mux_for(store) is not None else None,
                                           ttl_s=ttl_s, max_titles=self.assignments_max)
        return self.writer

    async def aclose(self) -> None:
        """Store the assignments still queued; close the shared connection."""
        try:
            if self.writer is not None:
                await self.writer.aclose()
        finally:
            for mux in (self._mux, self.writer.mux if self.writer is not None else None):
                if mux is not None:
                    await mux.aclose()


HOME = web.AppKey("home", HomeState)


#: Where :func:`plan_key` holds the requested country.
PLAN_KEY_COUNTRY = 3


def plan_key(reads: HomeReads, country: str | None, catalog_version: int,
             continue_watching: bool) -> tuple[Any, ...]:
    """What a compiled page depends on: the stored page, its source, the settings, the
    requested country, the catalog, and the state when the page has a Continue Watching
    row."""
    return (reads.page, reads.source, reads.meta_raw, country, catalog_version,
            reads.state_raw if continue_watching else None)


async def build_page(app: web.Application, profile_id: str, country: str | None,
                     reads: HomeReads, snap: CatalogSnapshot
                     ) -> tuple[dict[str, Any], str, str | None, bool, CatalogSnapshot]:
    """The page to serve before its artwork is decided: the stored page, else the default
    page, else Latest, else empty; Continue Watching checked, guardrails applied, the
    serve-time fields set. Returns the page, its source, the country it is served in,
    whether it has a Continue Watching row, and the catalog snapshot."""
    rules, models = app[RULES], app[MODELS]
    meta = reads.meta
    country = country or home_country(meta)
    if reads.page is not None:
        page, source = parse_page(reads.page), reads.source or "personal"
        if source != "personal":
            page["profile_id"] = profile_id  # served to this profile, not personalized
            page["personalized"] = False
    else:  # nothing materialized yet: the newest titles, else nothing
        latest = latest_page(snap, rules, meta, country, profile_id,
                             app[PAGE_CONFIG].row_length, now_ms())
        page, source = (latest, "latest") if latest else (empty_page(profile_id, country),
                                                          "empty")
    cw = any(isinstance(r, dict) and is_continue_watching(r) for r in page["rows"])
    state = await state_view(app[STORE], profile_id, reads) if cw else None
    page["rows"] = guard_rows(drop_finished(page["rows"], state), rules, meta, country)
    if page["rows"] and not len(snap.catalog):
        # pages exist but no catalog was loaded yet (the server started first): load it now
        # rather than serving a page without artwork decisions
        snap = await models.refreshed_for_miss()
    page["kids"] = meta.kids
    page["max_rating"] = rules.max_rating_for(meta)
    page["variant"] = app[EXPERIMENT].variant_of(profile_id)
    return page, source, country, cw, snap


async def compile_home(app: web.Application, profile_id: str, country: str | None,
                       reads: HomeReads, snap: CatalogSnapshot) -> PagePlan:
    """Build and compile the page of ``profile_id`` (:class:`~serving.page_plan.PagePlan`)."""
    page, source, served_country, cw, snap = await build_page(app, profile_id, country,
                                                               reads, snap)
    chooser = app[ARTWORK]
    return PagePlan.compile(
        profile_id=profile_id, source=source,
        key=plan_key(reads, country, snap.version, cw), page=page,
        first_rows=chooser.max_rows,
        title_art=functools.partial(chooser.title_art, snap.catalog),
        country=served_country or page.get("country"),
        impression_country=impression_country(served_country, page),
        variant=page["variant"], codec=app[IMPRESSIONS].codec, has_continue_watching=cw)


# -- the handler ----------------------------------------------------------------------------
NO_STORE = {"Cache-Control": "no-store"}


async def homepage(request: web.Request) -> web.Response:
    """``GET /v1/homepage/{profile_id}``: the page to show, logged as impressions."""
    profile_id = check_profile_id(request.match_info["profile_id"])
    country = check_country(request.query.get("country"))
    device = check_device(request.query.get("device")) or "unknown"

    app = request.app
    home, models, store = app[HOME], app[MODELS], app[STORE]
    snap = models.snapshot if models.loaded else await models.ensure()
    plan = home.get(profile_id)
    try:
        reads = await read_home(store, profile_id, country,
                                with_state=plan is None or plan.has_continue_watching,
                                with_assignments=app[ARTWORK].sticky.period_s > 0,
                                mux=home.mux_for(store))
    except STORE_UNAVAILABLE as exc:
        if plan is None or plan.key[PLAN_KEY_COUNTRY] != country:
            raise  # nothing of theirs held here: 503 with Retry-After
        log.warning("store unavailable (%s: %s): serving %s the page compiled earlier",
                    type(exc).__name__, exc, profile_id)
        response = serve_plan(app, plan, StaleReads(), device, store_down=True)
        response.headers["X-Homestream-Stale"] = "store unavailable"
        return response
    plan = home.plans.get(profile_id, plan)  # compiled by another request meanwhile?
    if plan is not None and plan.key == plan_key(reads, country, snap.version,
                                                 plan.has_continue_watching):
        return serve_plan(app, plan, reads, device)
    with collector_paused():
        plan = await compile_home(app, profile_id, country, reads, snap)
        home.compiled += 1
        if reads.page is not None and isinstance(store, RedisStore):
            home.put(profile_id, plan)
        else:  # no stored page any more (erased, expired): keep nothing of theirs
            home.forget(profile_id)
        return serve_plan(app, plan, reads, device)


class StaleReads:
    """What a request knows of the member's assignments while the store does not answer:
    nothing (their artwork is drawn again, not stored)."""

    flat: list[bytes] | None = None
    assignments: Mapping[str, Any] = MappingProxyType({})


def serve_plan(app: web.Application, plan: PagePlan, reads: HomeReads | StaleReads,
               device: str, store_down: bool = False) -> web.Response:
    """Decide the first screen's artwork, answer, log the impressions as one message and
    queue the new assignments (both after the response is built, neither blocking it)."""
    served_at_ms = now_ms()
    request_id = os.urandom(16).hex()  # 32 hex digits, as uuid4().hex without its cost
    policy = app[MODELS].artwork_policy
    decisions = plan.decisions(policy, device, served_at_ms,
                               app[ARTWORK].decisions_max_age_ms)
    served = plan.serve(decisions, policy, reads, app[ARTWORK].sticky, request_id, served_at_ms)
    record_page(plan.source, policy.name, served.decided)
    if served.assignments and not store_down:
        app[HOME].writer_for(app[STORE], app[ARTWORK].sticky.period_s).add(
            plan.profile_id, served.assignments, served.decided)
    logger = app[IMPRESSIONS]
    for suffix, reason in plan.invalid:
        logger.count_failed(request_id, [request_id + suffix], reason)
    if served.impressions is not None:
        logger.log_encoded(plan.profile_id, request_id, served.impressions,
                           plan.impression_ids)
    return web.Response(body=served.body, content_type="application/json", headers=NO_STORE)
