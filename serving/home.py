"""The home-page path: one store read, the fallback chain, guardrails, artwork, impressions.

``GET /v1/homepage/{profile_id}`` reads everything it needs in one Redis round trip (a Lua
script: the member's page or else the first default page that exists, the settings, the
member's state for the Continue Watching check and the artwork assignments), serves the
profile's page, else the default page of the country, else of all countries, else a
"Latest" row from the catalog, else an empty page; applies the guardrails; decides the
artwork of the first screen in one vectorized policy step; stores new assignments and logs
the page as one message after the response has gone out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import orjson
from aiohttp import web
from pydantic import ValidationError

from features import keys
from features.keys import ALL_COUNTRIES
from features.profile import ProfileMeta
from features.rows import RowKind, row_kind_of
from features.state_format import playhead_of
from features.store import PipelineStore, RedisStore
from online_models.page import Page, PageRow, title_item
from online_models.rules import Rules
from serving.assignments import AssignmentWriter
from serving.catalog_cache import CatalogSnapshot
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
from serving.validation import COUNTRY_RE, check_country, check_device, check_profile_id
from topics.models import MATURITY_LEVELS, Title

log = logging.getLogger("serving.app")

#: The serve-time fallback row built from the catalog when no page is materialized.
LATEST_ROW = {"row_id": "latest", "kind": "latest", "title": "Latest",
              "explanation": "The newest titles"}
#: Used when a profile's stored settings do not parse: the strictest guardrails.
FAIL_CLOSED_META = ProfileMeta(kids=True, max_rating="G")

#: One round trip: KEYS = page, settings, state, assignments, default pages by preference;
#: ARGV[1] = '1' to read the state too, ARGV[2] = '0' to leave the assignments out (nothing
#: is kept when the sticky period is 0). Returns ``{page or false, 0 (personal) or 1-based
#: default index, settings, state (or false), assignments as a flat field/value list}``.
READ_HOME_LUA = """
local page = redis.call('GET', KEYS[1])
local source = 0
if not page then
  for i = 5, #KEYS do
    page = redis.call('GET', KEYS[i])
    if page then source = i - 4 break end
  end
end
local state = false
if ARGV[1] == '1' then state = redis.call('GET', KEYS[3]) or false end
local assignments = {}
if ARGV[2] ~= '0' then assignments = redis.call('HGETALL', KEYS[4]) end
return {page or false, source, redis.call('GET', KEYS[2]) or false, state, assignments}
"""


def empty_page(profile_id: str, country: str | None) -> dict[str, Any]:
    """What is served when nothing is materialized yet (a fresh deployment)."""
    return {"profile_id": profile_id, "personalized": False,
            "country": country or ALL_COUNTRIES, "generated_at_ms": None,
            "as_of_event_ts_ms": None, "rows": []}


def item_allowed(rules: Rules, item: Any, meta: ProfileMeta, country: str | None) -> bool:
    """``rules.allows_item``, failing closed: an item without a known rating is not shown."""
    try:
        return rules.allows_item(item, meta, country)
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


def guard_rows(rows: list[PageRow], rules: Rules, meta: ProfileMeta,
               country: str | None) -> list[PageRow]:
    """Serve-time guardrails: drop items ``rules`` do not allow for ``meta`` in ``country``
    (no country: availability is not checked) and rows left without items. Input is not
    mutated."""
    out = []
    for row in rows:
        items = [it for it in row.get("items") or () if item_allowed(rules, it, meta, country)]
        if items:
            out.append({**row, "items": items})
    return out



@functools.lru_cache(maxsize=8192)
def parse_meta(raw: bytes | None) -> ProfileMeta:
    """A profile's settings from their stored JSON (parsed once per distinct value);
    defaults when absent; the strictest guardrails when they do not parse."""
    if raw is None:
        return ProfileMeta()
    try:
        meta = ProfileMeta.model_validate(orjson.loads(raw))
        if meta.max_rating is not None and meta.max_rating not in MATURITY_LEVELS:
            raise ValueError(f"unknown max_rating {meta.max_rating!r}")
        return meta
    except (ValidationError, ValueError) as exc:
        log.warning("a profile has invalid settings, serving kids guardrails: %s", exc)
        return FAIL_CLOSED_META


async def load_meta(store: PipelineStore, profile_id: str | None) -> ProfileMeta:
    """The profile's settings; defaults for no or an unknown profile; strictest when the
    stored settings do not parse."""
    if profile_id is None:
        return ProfileMeta()
    raw = (await store.load_profile_meta([profile_id])).get(profile_id)
    return parse_meta(None if raw is None else orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))


class InProgress(Protocol):
    """What the Continue Watching check needs of a member's state."""

    def resume_position(self, title_id: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ServeView:
    """The part of a member's stored state the server reads: playheads and finished titles.

    Playheads are kept as stored and named on read
    (:func:`~features.state_format.playhead_of`), only for the titles of a Continue Watching
    row."""

    progress: Mapping[str, Any] = field(default_factory=dict)
    finished: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes) -> ServeView:
        data = orjson.loads(raw)
        return cls(data.get("progress") or {}, data.get("finished") or {})

    def resume_position(self, title_id: str) -> float | None:
        """Where to resume ``title_id``, in seconds, if it is in progress."""
        p = self.progress.get(title_id)
        return None if p is None or title_id in self.finished else playhead_of(p).position_s


def home_country(meta: ProfileMeta) -> str | None:
    """The profile's stored home country, if it is a well-formed code."""
    c = meta.country
    return c if isinstance(c, str) and COUNTRY_RE.fullmatch(c) else None


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




# -- the one read ---------------------------------------------------------------------------
@dataclass(slots=True)
class HomeReads:
    """What one home-page request read from the store."""

    page: bytes | None
    source: str | None                 # "personal", "default-<country>", None: no page
    meta: ProfileMeta
    parsed_state: InProgress | None    # the in-memory store's; Redis's is parsed on use
    stored_assignments: dict[str, Any] | None  # the in-memory store's; Redis's: ``flat``
    meta_raw: bytes | None = None
    state_raw: bytes | None = None     # the stored state, when it was read
    state_read: bool = True
    #: The assignments as Redis returned them: title id, JSON, title id, JSON, ...
    flat: list[bytes] | None = None

    @property
    def assignments(self) -> dict[str, Any]:
        """Title id -> stored assignment (JSON bytes or dict)."""
        if self.stored_assignments is None:
            flat = self.flat or []
            self.stored_assignments = dict(zip([t.decode() for t in flat[::2]], flat[1::2],
                                               strict=True))
        return self.stored_assignments

    @property
    def state(self) -> InProgress | None:
        """The member's state as read (parsed on first use), ``None`` when absent or not
        read."""
        if self.parsed_state is None and self.state_raw:
            self.parsed_state = ServeView.from_json(self.state_raw)
        return self.parsed_state


_SCRIPTS: dict[int, tuple[RedisStore, Any]] = {}


def _script(store: RedisStore) -> Any:
    """The registered read script of ``store`` (EVALSHA, loaded again when Redis lost it)."""
    entry = _SCRIPTS.get(id(store))
    if entry is None or entry[0] is not store:
        entry = _SCRIPTS[id(store)] = (store, store.client.register_script(READ_HOME_LUA))
    return entry[1]


async def read_home(store: PipelineStore, profile_id: str, country: str | None,
                    with_state: bool = True, with_assignments: bool = True) -> HomeReads:
    """The page (or the first default page that exists: ``country``'s, then all
    countries'), settings, state (unless ``with_state`` is false) and assignments (unless
    ``with_assignments`` is false) of ``profile_id``: one round trip to Redis; a second one
    only when no country was asked for, no personal page exists and the profile's home
    country has a default page of its own. The state is parsed by :func:`state_view` when
    needed."""
    defaults = [c for c in dict.fromkeys((country, ALL_COUNTRIES)) if c is not None]
    meta_raw: bytes | None = None
    state_raw: bytes | None = None
    if isinstance(store, RedisStore):
        p = store.prefix
        page, idx, meta_raw, state_raw, flat = await _script(store)(keys=[
            keys.page_key(p, profile_id), keys.profile_meta_key(p, profile_id),
            keys.profile_key(p, profile_id), keys.artwork_key(p, profile_id),
            *(keys.default_page_key(p, c) for c in defaults)],
            args=["1" if with_state else "0", "1" if with_assignments else "0"])
        meta = parse_meta(meta_raw or None)
        meta_raw, state_raw = meta_raw or None, state_raw or None
        state: InProgress | None = None
        assignments: dict[str, Any] | None = None
    else:  # the in-memory store of tests and tools: the same answers, several calls
        page, metas, states, assignments = await asyncio.gather(
            store.get_page(profile_id), store.load_profile_meta([profile_id]),
            store.load_profiles([profile_id]), store.load_artwork(profile_id))
        raw_meta = metas.get(profile_id)
        meta = parse_meta(None if raw_meta is None else orjson.dumps(raw_meta))
        state = states.get(profile_id)
        idx = 0
        for i, c in enumerate(defaults if page is None else ()):
            page = await store.get_default_page(c)
            if page is not None:
                idx = i + 1
                break
    source = None if page is None else (
        "personal" if idx == 0 else f"default-{defaults[idx - 1]}")
    home = home_country(meta) if country is None else None
    if home is not None and source != "personal" and home != ALL_COUNTRIES:
        own = await store.get_default_page(home)
        if own is not None:
            page, source = own, f"default-{home}"
    if not isinstance(store, RedisStore):
        return HomeReads(page, source, meta, state, assignments)
    return HomeReads(page, source, meta, state, None, meta_raw, state_raw, with_state, flat)


async def state_view(store: PipelineStore, profile_id: str, reads: HomeReads) -> InProgress | None:
    """The member's state as the Continue Watching check reads it (read now if the first
    round trip left it out)."""
    if not reads.state_read and isinstance(store, RedisStore):
        reads.state_raw = await store.client.get(keys.profile_key(store.prefix, profile_id))
        reads.state_read = True
    return reads.state


# -- compiled pages -------------------------------------------------------------------------
class HomeState:
    """What a server process keeps for the home page: the compiled plans of the pages it
    served lately (least recently served dropped beyond ``max_plans``) and the writer of
    artwork assignments."""

    def __init__(self, max_plans: int) -> None:
        self.max_plans = max_plans
        self.plans: OrderedDict[str, PagePlan] = OrderedDict()
        self.compiled = 0
        self.writer: AssignmentWriter | None = None

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

    def forget(self, profile_id: str) -> None:
        """Drop the compiled page of ``profile_id`` (an erased member's, for one)."""
        self.plans.pop(profile_id, None)

    def writer_for(self, store: PipelineStore) -> AssignmentWriter:
        if self.writer is None:
            self.writer = AssignmentWriter(store)
        return self.writer

    async def aclose(self) -> None:
        """Store the assignments still queued."""
        if self.writer is not None:
            await self.writer.aclose()


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
        await models.refresh()
        snap = models.snapshot
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
                                with_assignments=app[ARTWORK].sticky.period_s > 0)
    except STORE_UNAVAILABLE as exc:
        if plan is None or plan.key[PLAN_KEY_COUNTRY] != country:
            raise  # nothing of theirs held here: 503 with Retry-After
        log.warning("store unavailable (%s: %s): serving %s the page compiled earlier",
                    type(exc).__name__, exc, profile_id)
        response = serve_plan(app, plan, StaleReads(), device, store_down=True)
        response.headers["X-Homestream-Stale"] = "store unavailable"
        return response
    if plan is None or plan.key != plan_key(reads, country, snap.version,
                                            plan.has_continue_watching):
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
    request_id = uuid.uuid4().hex
    policy = app[MODELS].artwork_policy
    decisions = plan.decisions(policy, device, served_at_ms,
                               app[ARTWORK].decisions_max_age_ms)
    served = plan.serve(decisions, reads, app[ARTWORK].sticky, request_id, served_at_ms)
    record_page(plan.source, policy.name, served.decided)
    if served.assignments and not store_down:
        app[HOME].writer_for(app[STORE]).add(plan.profile_id, served.assignments,
                                             served.decided)
    logger = app[IMPRESSIONS]
    for suffix, reason in plan.invalid:
        logger.count_failed(request_id, [request_id + suffix], reason)
    if served.impressions is not None:
        logger.log_encoded(plan.profile_id, request_id, served.impressions,
                           plan.impression_ids)
    return web.Response(body=served.body, content_type="application/json", headers=NO_STORE)
