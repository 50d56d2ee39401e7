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
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from serving.artwork import request_context
from serving.catalog_cache import CatalogSnapshot
from serving.http import (
    ARTWORK,
    EXPERIMENT,
    IMPRESSIONS,
    MODELS,
    PAGE_CONFIG,
    RULES,
    STORE,
    json_response,
    now_ms,
)
from serving.validation import COUNTRY_RE, check_country, check_device, check_profile_id
from topics.models import MATURITY_LEVELS, Title

log = logging.getLogger("serving.app")

#: The serve-time fallback row built from the catalog when no page is materialized.
LATEST_ROW = {"row_id": "latest", "kind": "latest", "title": "Latest",
              "explanation": "The newest titles"}
#: Used when a profile's stored settings do not parse: the strictest guardrails.
FAIL_CLOSED_META = ProfileMeta(kids=True, max_rating="G")
#: Background writes (artwork assignments) of the app, awaited at shutdown.
PENDING = web.AppKey("pending_writes", set)

#: One round trip: KEYS = page, settings, state, assignments, default pages by preference.
#: Returns ``{page or false, 0 (personal) or 1-based default index, settings, state,
#: assignments as a flat field/value list}``.
READ_HOME_LUA = """
local page = redis.call('GET', KEYS[1])
local source = 0
if not page then
  for i = 5, #KEYS do
    page = redis.call('GET', KEYS[i])
    if page then source = i - 4 break end
  end
end
return {page or false, source, redis.call('GET', KEYS[2]) or false,
        redis.call('GET', KEYS[3]) or false, redis.call('HGETALL', KEYS[4])}
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
    state: InProgress | None
    assignments: dict[str, Any]        # title id -> stored assignment (JSON bytes or dict)


_SCRIPTS: dict[int, tuple[RedisStore, Any]] = {}


def _script(store: RedisStore) -> Any:
    """The registered read script of ``store`` (EVALSHA, loaded again when Redis lost it)."""
    entry = _SCRIPTS.get(id(store))
    if entry is None or entry[0] is not store:
        entry = _SCRIPTS[id(store)] = (store, store.client.register_script(READ_HOME_LUA))
    return entry[1]


async def read_home(store: PipelineStore, profile_id: str, country: str | None) -> HomeReads:
    """The page (or the first default page that exists: ``country``'s, then all
    countries'), settings, state and assignments of ``profile_id``: one round trip to
    Redis; a second one only when no country was asked for, no personal page exists and
    the profile's home country has a default page of its own."""
    defaults = [c for c in dict.fromkeys((country, ALL_COUNTRIES)) if c is not None]
    if isinstance(store, RedisStore):
        p = store.prefix
        page, idx, meta_raw, state_raw, flat = await _script(store)(keys=[
            keys.page_key(p, profile_id), keys.profile_meta_key(p, profile_id),
            keys.profile_key(p, profile_id), keys.artwork_key(p, profile_id),
            *(keys.default_page_key(p, c) for c in defaults)])
        meta = parse_meta(meta_raw)
        state: InProgress | None = ServeView.from_json(state_raw) if state_raw else None
        assignments = {t.decode(): v for t, v in zip(flat[::2], flat[1::2], strict=True)}
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
    return HomeReads(page, source, meta, state, assignments)


def _save_in_background(app: web.Application, profile_id: str,
                        assignments: dict[str, dict[str, Any]]) -> None:
    """Store new artwork assignments after the response; shutdown waits for the writes."""
    pending: set[asyncio.Task[None]] = app[PENDING]
    task = asyncio.get_running_loop().create_task(
        app[STORE].save_artwork(profile_id, assignments))
    pending.add(task)

    def done(t: asyncio.Task[None]) -> None:
        pending.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("artwork assignments of %s not stored: %r", profile_id, t.exception())

    task.add_done_callback(done)


# -- the handler ----------------------------------------------------------------------------
async def homepage(request: web.Request) -> web.Response:
    """``GET /v1/homepage/{profile_id}``: the page to show, logged as impressions."""
    profile_id = check_profile_id(request.match_info["profile_id"])
    country = check_country(request.query.get("country"))
    device = check_device(request.query.get("device"))

    app = request.app
    rules, models = app[RULES], app[MODELS]
    reads, snap = await asyncio.gather(read_home(app[STORE], profile_id, country),
                                       models.ensure())
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
    page["rows"] = guard_rows(drop_finished(page["rows"], reads.state), rules, meta, country)
    if page["rows"] and not len(snap.catalog):
        # pages exist but no catalog was loaded yet (the server started first): load it now
        # rather than serving a page without artwork decisions
        await models.refresh()
        snap = models.snapshot
    page["kids"] = meta.kids
    page["max_rating"] = rules.max_rating_for(meta)
    page["variant"] = variant = app[EXPERIMENT].variant_of(profile_id)
    request_id = uuid.uuid4().hex
    served_at_ms = now_ms()
    page_context = page.pop("context", None)
    context = request_context(page_context if isinstance(page_context, dict) else {},
                              country or page.get("country"), device, served_at_ms)
    new = app[ARTWORK].choose(models.artwork_policy, snap.catalog, page["rows"], context,
                              reads.assignments, served_at_ms)
    if new:
        _save_in_background(app, profile_id, new)
    page["request_id"] = request_id
    page["served_at_ms"] = served_at_ms
    page["source"] = source
    if page["rows"]:
        app[IMPRESSIONS].log_page(
            profile_id, request_id, served_at_ms, page["rows"],
            device=device or "unknown", country=impression_country(country, page),
            context_json=orjson.dumps(context).decode(), variant=variant)
    return json_response(page, headers={"Cache-Control": "no-store"})
