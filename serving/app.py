"""The home-page HTTP service: reads materialized pages from the store, applies serve-time
guardrails, returns JSON and logs what it served as impressions; also similar titles,
re-ranking and search, personalized with ``online_models.page.relevance`` like the pages,
but without its co-watch signal (the co-watch similarity lives in the workers; the other
signals' weights are renormalized).

Routes:

- ``GET /v1/homepage/{profile_id}?device=tv&country=US``: the profile's page, else the
  default page of ``country``, else the all-countries default, else a "Latest" row built
  from the catalog cache (newest titles by release date), else an empty page (``source``:
  ``personal``, ``default-<country>``, ``latest`` or ``empty``); always 200 for a
  well-formed request. Every item passes the guardrails for the profile's settings
  (``Rules.allows_item``), so a kids profile never sees a mature title even from a default
  or stale page; Continue Watching keeps only the titles the member's stored state still
  has in progress (a page materialized before the play that finished a title still lists
  it); rows left empty are dropped. ``kids`` and ``max_rating`` say what was enforced.
- ``GET /v1/titles/{title_id}/similar?profile_id=&country=&limit=20``: the stored
  similar-titles list topped up with content neighbours (``source``: ``stored`` or
  ``content``); 404 when the title is not in the catalog. Returns ``{"title_id",
  "profile_id", "country", "items"}``.
- ``POST /v1/rerank`` with ``{"profile_id", "title_ids": [...], "country"?, "mode"?}``:
  the known, allowed titles ordered by ``w_pos * (1 - i / n) + w_rel * relevance`` where
  ``i`` is a title's position in the request and ``(w_pos, w_rel)`` is ``(0, 1)`` without
  a mode, ``(0.3, 0.7)`` for ``explore`` and ``(0.7, 0.3)`` for ``fetch`` (ties keep the
  request order). Returns ``{"profile_id", "country", "mode", "personalized", "items",
  "unknown", "removed"}``.
- ``GET /v1/search?q=&profile_id=&country=&limit=20``: :mod:`online_models.search`;
  returns ``{"query", "mode", "profile_id", "country", "items"}``, each item with its
  ``reason``.
- ``GET /healthz``: the process is alive.
- ``GET /readyz``: 200 when the store answers a ping and the broker the impressions go to
  answers a metadata request with the impressions topic (checked in a worker thread, the
  answer reused for a few seconds: :mod:`serving.ready`); else 503 naming the failed
  dependencies in ``failed`` with the reasons. Carries the impression-logging counters.

Items of every route have ``title_id, name, artwork_id, artwork_url, score,
maturity_rating, genres, availability``. A profile without stored settings gets the
default ones; settings that do not parse fail closed (kids, rated G at most). A request
without ``country`` uses the profile's stored home country (``ProfileMeta.country``) for
availability, the default page and popularity; the ``country`` of the similar, rerank and
search answers is the one applied (``null`` when neither was known).

Every error is a JSON object ``{"error": "..."}`` (400, 404, 405, 413, 503, 500); a 400
starts with the offending field's name and carries it as ``field``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis.exceptions
from aiohttp import web
from pydantic import ValidationError

from features.keys import ALL_COUNTRIES
from features.profile import ProfileMeta, ProfileState
from features.rows import row_kind_of
from features.store import PipelineStore, RedisStore
from homestream.settings import Settings
from online_models import search as search_mod
from online_models.experiments import Experiment, experiment_from_settings
from online_models.page import PageConfig, relevance, title_item
from online_models.rules import Rules, rules_from_settings
from online_models.similarity import CoWatchSimilarity, similar_titles
from serving.artwork import ArtworkChooser, request_context
from serving.catalog_cache import CatalogSnapshot, ServingModels
from serving.impressions import ImpressionLogger
from serving.ready import BROKER_TIMEOUT_S, BROKER_TTL_S, BrokerCheck
from topics.models import MATURITY_LEVELS, Title

log = logging.getLogger(__name__)

PROFILE_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
COUNTRY_RE = re.compile(r"[A-Z]{2}")
DEVICE_MAX_LEN = 64
TITLE_ID_MAX_LEN = 128
QUERY_MAX_LEN = 200
LIMIT_DEFAULT, LIMIT_MAX = 20, 100
RERANK_MAX_TITLES = 500
#: The serve-time fallback row built from the catalog when no page is materialized.
LATEST_ROW = {"row_id": "latest", "kind": "latest", "title": "Latest",
              "explanation": "The newest titles"}
CONTINUE_WATCHING = "continue_watching"
PING_TIMEOUT_S = 1.0
#: Relevance over more titles than this is computed in a worker thread.
INLINE_RELEVANCE_MAX = 256
#: Searches over bigger catalogs are scored in a worker thread.
INLINE_SEARCH_TITLES = 2000
#: Rerank weights ``(position in the request, relevance)`` by mode.
RERANK_WEIGHTS: dict[str | None, tuple[float, float]] = {
    None: (0.0, 1.0), "explore": (0.3, 0.7), "fetch": (0.7, 0.3)}
#: Used when a profile's stored settings do not parse: the strictest guardrails.
FAIL_CLOSED_META = ProfileMeta(kids=True, max_rating="G")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", PipelineStore)
IMPRESSIONS = web.AppKey("impressions", ImpressionLogger)
RULES = web.AppKey("rules", Rules)
MODELS = web.AppKey("models", ServingModels)
PAGE_CONFIG = web.AppKey("page_config", PageConfig)
ARTWORK = web.AppKey("artwork", ArtworkChooser)
EXPERIMENT = web.AppKey("experiment", Experiment)
BROKER_CHECK = web.AppKey("broker_check", BrokerCheck)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """The one error shape: ``{"error": message, ...extra}``."""
    return json_response({"error": message, **extra}, status=status)


# -- errors -----------------------------------------------------------------------------------
class InvalidInput(Exception):
    """A malformed request: answered 400 with ``{"error": "<field>: <problem>", "field"}``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


#: Exceptions meaning the store cannot be reached: answered with 503, not 500.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    ConnectionError, TimeoutError,
)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into JSON; log unexpected exceptions with their traceback."""
    try:
        return await handler(request)
    except InvalidInput as exc:
        return error_response(400, str(exc), field=exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"not found: {request.path}"
        elif isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"method {request.method} not allowed on {request.path}; use {allowed}"
        else:
            message = exc.reason
        resp = error_response(exc.status, message)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except STORE_UNAVAILABLE as exc:
        log.warning("store unavailable for %s %s: %r", request.method, request.path, exc)
        return error_response(503, f"store unavailable: {type(exc).__name__}: {exc}",
                              type=type(exc).__name__)
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}",
                              type=type(exc).__name__)


# -- pages ------------------------------------------------------------------------------------
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


def guard_rows(rows: list[dict[str, Any]], rules: Rules, meta: ProfileMeta,
               country: str | None) -> list[dict[str, Any]]:
    """Serve-time guardrails: drop items ``rules`` do not allow for ``meta`` in ``country``
    (no country: availability is not checked) and rows left without items. Input is not
    mutated."""
    out = []
    for row in rows:
        items = [it for it in row.get("items") or () if item_allowed(rules, it, meta, country)]
        if items:
            out.append({**row, "items": items})
    return out


async def load_meta(store: PipelineStore, profile_id: str | None) -> ProfileMeta:
    """The profile's settings; defaults for no or an unknown profile; strictest when the
    stored settings do not parse."""
    if profile_id is None:
        return ProfileMeta()
    raw = (await store.load_profile_meta([profile_id])).get(profile_id)
    if raw is None:
        return ProfileMeta()
    try:
        meta = ProfileMeta.model_validate(raw)
        if meta.max_rating is not None and meta.max_rating not in MATURITY_LEVELS:
            raise ValueError(f"unknown max_rating {meta.max_rating!r}")
        return meta
    except (ValidationError, ValueError) as exc:
        log.warning("profile %s has invalid settings, serving kids guardrails: %s",
                    profile_id, exc)
        return FAIL_CLOSED_META


async def load_state(store: PipelineStore, profile_id: str | None) -> ProfileState | None:
    """The profile's stored state (``None`` for no or an unknown profile)."""
    if profile_id is None:
        return None
    return (await store.load_profiles([profile_id])).get(profile_id)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def model_scorer(app: web.Application) -> Any:
    """The loaded Top Picks model's ``score_many``, or ``None`` before one is loaded."""
    model = app[MODELS].model
    return model.score_many if model is not None else None


async def personal_relevance(app: web.Application, state: ProfileState | None,
                             titles: Sequence[Title], popularity: dict[str, float],
                             at_ms: int) -> dict[str, float]:
    """``online_models.page.relevance`` for one member over ``titles``; large sets run in a
    worker thread so the loop keeps serving."""
    if not titles:
        return {}
    args = (state, list(titles), popularity, model_scorer(app), at_ms, app[PAGE_CONFIG])
    if len(titles) <= INLINE_RELEVANCE_MAX:
        return relevance(*args)
    return await asyncio.get_running_loop().run_in_executor(None, relevance, *args)


def run_search(snap: CatalogSnapshot, q: str, limit: int, rules: Rules, meta: ProfileMeta,
               country: str | None, state: ProfileState | None,
               popularity: dict[str, float], scorer: Any, at_ms: int,
               config: PageConfig) -> tuple[str, list[dict[str, Any]]]:
    """The CPU part of a search: match, guardrails, relevance, ranking; ``(mode, items)``."""
    found = search_mod.match(q, snap.search)
    allowed = [t for t in map(snap.catalog.get, found.scores)
               if t is not None and rules.allows(t, meta, country)]
    rel = relevance(state, allowed, popularity, scorer, at_ms, config) if allowed else {}
    items = []
    for tid, score, reason in search_mod.rank(found, rel, limit, allowed=rel):
        title = snap.catalog.get(tid)
        if title is not None:
            items.append(title_item(title, score, reason=reason,
                                    relevance=round(rel.get(tid, 0.0), 6)))
    return found.mode, items


def home_country(meta: ProfileMeta) -> str | None:
    """The profile's stored home country, if it is a well-formed code."""
    c = meta.country
    return c if isinstance(c, str) and COUNTRY_RE.fullmatch(c) else None


def is_continue_watching(row: dict[str, Any]) -> bool:
    """Whether ``row`` is a Continue Watching row (by kind or by row id)."""
    row_id = row.get("row_id")
    return row.get("kind") == CONTINUE_WATCHING or (
        isinstance(row_id, str) and row_kind_of(row_id) == CONTINUE_WATCHING)


def drop_finished(rows: list[dict[str, Any]],
                  state: ProfileState | None) -> list[dict[str, Any]]:
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


async def default_page(store: PipelineStore, profile_id: str,
                       country: str | None) -> tuple[dict[str, Any], str] | None:
    """The default page of ``country``, else of all countries, served to ``profile_id``, and
    its source ``default-<country>``; ``None`` when the worker has written neither."""
    for c in dict.fromkeys((country, ALL_COUNTRIES)):
        if c is None:
            continue
        raw = await store.get_default_page(c)
        if raw is not None:
            page = _parse_page(raw)
            page["profile_id"] = profile_id  # served to this profile, though not personalized
            page["personalized"] = False
            return page, f"default-{c}"
    return None


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


async def member_inputs(app: web.Application, profile_id: str | None, country: str | None,
                        at_ms: int) -> tuple[CatalogSnapshot, ProfileMeta, ProfileState | None,
                                             str | None, dict[str, float]]:
    """What rerank and search score with: ``(catalog, settings, state, country,
    popularity)``, read concurrently. Without a requested country the profile's home
    country applies, so popularity is read once the settings are known (usually from the
    in-memory cache)."""
    store, models = app[STORE], app[MODELS]
    if country is not None or profile_id is None:
        snap, meta, state, popularity = await asyncio.gather(
            models.ensure(), load_meta(store, profile_id), load_state(store, profile_id),
            models.popularity(country, at_ms))
        return snap, meta, state, country, popularity
    snap, meta, state = await asyncio.gather(
        models.ensure(), load_meta(store, profile_id), load_state(store, profile_id))
    country = home_country(meta)
    return snap, meta, state, country, await models.popularity(country, at_ms)


def _parse_page(raw: bytes) -> dict[str, Any]:
    page = orjson.loads(raw)
    if not isinstance(page, dict) or not isinstance(page.get("rows"), list):
        raise ValueError("stored page is not an object with a rows list")
    return page


def _impression_country(requested: str | None, page: dict[str, Any]) -> str:
    if requested is not None:
        return requested
    c = page.get("country")
    return c if isinstance(c, str) and COUNTRY_RE.fullmatch(c) else "ZZ"


# -- input ------------------------------------------------------------------------------------
PROFILE_ID_RULE = "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -"


def check_profile_id(value: Any) -> str:
    if not isinstance(value, str) or not PROFILE_ID_RE.fullmatch(value):
        raise InvalidInput("profile_id", PROFILE_ID_RULE)
    return value


def check_country(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value):
        shown = value[:16] if isinstance(value, str) else value
        raise InvalidInput("country", "must be two uppercase letters (ISO 3166-1 alpha-2), "
                                      f"got {shown!r}")
    return value


def query_profile_id(request: web.Request) -> str | None:
    value = request.query.get("profile_id")
    return None if value is None else check_profile_id(value)


def query_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIMIT_MAX:
        raise InvalidInput("limit", f"must be an integer from 1 to {LIMIT_MAX}, "
                                    f"got {raw[:16]!r}")
    return limit


# -- handlers ---------------------------------------------------------------------------------
async def homepage(request: web.Request) -> web.Response:
    """``GET /v1/homepage/{profile_id}``: the page to show, logged as impressions."""
    profile_id = check_profile_id(request.match_info["profile_id"])
    country = check_country(request.query.get("country"))
    device = request.query.get("device")
    if device is not None and len(device) > DEVICE_MAX_LEN:
        raise InvalidInput("device", f"at most {DEVICE_MAX_LEN} characters")

    app = request.app
    store, rules = app[STORE], app[RULES]
    # the state is read with the page (one concurrent GET) for the Continue Watching check
    raw, meta, state, previous, snap = await asyncio.gather(
        store.get_page(profile_id), load_meta(store, profile_id),
        load_state(store, profile_id), store.load_artwork(profile_id), app[MODELS].ensure())
    country = country or home_country(meta)
    found: tuple[dict[str, Any], str] | None
    if raw is not None:
        found = _parse_page(raw), "personal"
    else:
        found = await default_page(store, profile_id, country)
        if found is None:  # nothing materialized yet: the newest titles, else nothing
            latest = latest_page(snap, rules, meta, country, profile_id,
                                 app[PAGE_CONFIG].row_length, now_ms())
            found = (latest, "latest") if latest else (empty_page(profile_id, country), "empty")
    page, source = found
    page["rows"] = guard_rows(drop_finished(page["rows"], state), rules, meta, country)
    if page["rows"] and not len(snap.catalog):
        # pages exist but no catalog was loaded yet (the server started first): load it now
        # rather than serving a page without artwork decisions
        await app[MODELS].refresh()
        snap = app[MODELS].snapshot
    page["kids"] = meta.kids
    page["max_rating"] = rules.max_rating_for(meta)
    page["variant"] = variant = app[EXPERIMENT].variant_of(profile_id)
    request_id = uuid.uuid4().hex
    served_at_ms = now_ms()
    page_context = page.pop("context", None)
    context = request_context(page_context if isinstance(page_context, dict) else {},
                              country or page.get("country"), device, served_at_ms)
    new = app[ARTWORK].choose(app[MODELS].artwork_policy, snap.catalog, page["rows"], context,
                              previous, served_at_ms)
    if new:
        await store.save_artwork(profile_id, new)
    page["request_id"] = request_id
    page["served_at_ms"] = served_at_ms
    page["source"] = source
    if page["rows"]:
        request.app[IMPRESSIONS].log_page(
            profile_id, request_id, served_at_ms, page["rows"],
            device=device or "unknown", country=_impression_country(country, page),
            context_json=orjson.dumps(context).decode(), variant=variant)
    return json_response(page, headers={"Cache-Control": "no-store"})


async def similar(request: web.Request) -> web.Response:
    """``GET /v1/titles/{title_id}/similar``: stored neighbours, topped up with content
    neighbours, all allowed for the profile in the country."""
    title_id = request.match_info["title_id"]
    if not 1 <= len(title_id) <= TITLE_ID_MAX_LEN:
        raise InvalidInput("title_id", f"must be 1-{TITLE_ID_MAX_LEN} characters")
    profile_id = query_profile_id(request)
    country = check_country(request.query.get("country"))
    limit = query_limit(request)

    app = request.app
    store, rules = app[STORE], app[RULES]
    snap, meta, stored = await asyncio.gather(app[MODELS].ensure(),
                                              load_meta(store, profile_id),
                                              store.get_similar(title_id))
    country = country or home_country(meta)
    title = snap.catalog.get(title_id)
    if title is None:
        return error_response(404, f"title not found: {title_id}", title_id=title_id)

    items: list[dict[str, Any]] = []
    taken = {title_id}
    for entry in stored or ():
        if not isinstance(entry, list | tuple) or len(entry) < 2:
            continue  # a malformed stored entry: skip it, serve the rest
        tid, score = entry[0], entry[1]
        if not isinstance(score, int | float):
            continue
        other = snap.catalog.get(tid) if isinstance(tid, str) else None
        if other is None or tid in taken or not rules.allows(other, meta, country):
            continue
        taken.add(tid)
        items.append(title_item(other, score, source="stored"))
        if len(items) >= limit:
            break
    if len(items) < limit:
        # the best allowed content neighbours; similar_titles scores and orders them
        candidates: list[Title] = []
        for tid in snap.content_neighbours(title_id):
            other = snap.catalog.get(tid)
            if other is not None and tid not in taken and rules.allows(other, meta, country):
                candidates.append(other)
                if len(candidates) >= limit - len(items):
                    break
        # content neighbours rank below the stored ones, as in similar_titles
        floor = 0.5 * items[-1]["score"] if items else 1.0
        for tid, score in similar_titles(title, candidates, CoWatchSimilarity(),
                                         limit - len(items), exclude=taken):
            other = snap.catalog.get(tid)
            if other is not None:
                items.append(title_item(other, score * floor, source="content"))
    return json_response({"title_id": title_id, "profile_id": profile_id,
                          "country": country, "items": items})


RERANK_FIELDS = ("profile_id", "title_ids", "country", "mode")


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def _check_title_ids(value: Any) -> list[str]:
    if value is None:
        raise InvalidInput("title_ids", "required")
    if not isinstance(value, list) or not 1 <= len(value) <= RERANK_MAX_TITLES:
        raise InvalidInput("title_ids", f"must be a list of 1 to {RERANK_MAX_TITLES} "
                                        "title ids")
    for i, tid in enumerate(value):
        if not isinstance(tid, str) or not 1 <= len(tid) <= TITLE_ID_MAX_LEN:
            raise InvalidInput("title_ids", f"item {i} must be a string of 1-"
                                            f"{TITLE_ID_MAX_LEN} characters")
    return list(dict.fromkeys(value))  # first occurrence wins


async def rerank(request: web.Request) -> web.Response:
    """``POST /v1/rerank``: the given titles in the member's order (see the module doc)."""
    body = await _json_object(request)
    extra = sorted(set(body) - set(RERANK_FIELDS))
    if extra:
        raise InvalidInput("body", f"unknown field(s) {', '.join(map(repr, extra))}; "
                                   f"expected {', '.join(RERANK_FIELDS)}")
    if "profile_id" not in body:
        raise InvalidInput("profile_id", "required")
    profile_id = check_profile_id(body["profile_id"])
    title_ids = _check_title_ids(body.get("title_ids"))
    country = check_country(body.get("country"))
    mode = body.get("mode")
    if mode is not None and mode not in search_mod.MODES:
        raise InvalidInput("mode", f"must be one of {', '.join(search_mod.MODES)}, "
                                   f"got {str(mode)[:16]!r}")

    app = request.app
    rules = app[RULES]
    at_ms = now_ms()
    snap, meta, state, country, popularity = await member_inputs(app, profile_id, country,
                                                                 at_ms)
    unknown, removed, allowed = [], [], []
    position: dict[str, int] = {}
    for i, tid in enumerate(title_ids):
        title = snap.catalog.get(tid)
        if title is None:
            unknown.append(tid)
        elif not rules.allows(title, meta, country):
            removed.append(tid)
        else:
            allowed.append(title)
            position[tid] = i
    rel = await personal_relevance(app, state, allowed, popularity, at_ms)
    w_pos, w_rel = RERANK_WEIGHTS[mode]
    n = len(title_ids)
    scored = sorted(
        ((w_pos * (1.0 - position[t.title_id] / n) + w_rel * rel[t.title_id], t)
         for t in allowed),
        key=lambda st: (-round(st[0], 9), position[st[1].title_id]))
    items = [title_item(t, score, relevance=round(rel[t.title_id], 6)) for score, t in scored]
    return json_response({"profile_id": profile_id, "country": country, "mode": mode,
                          "personalized": state is not None, "items": items,
                          "unknown": unknown, "removed": removed})


async def search(request: web.Request) -> web.Response:
    """``GET /v1/search``: fetch or explore (:mod:`online_models.search`), guarded."""
    q = request.query.get("q")
    if q is None or not q.strip():
        raise InvalidInput("q", "required and must not be empty")
    if len(q) > QUERY_MAX_LEN:
        raise InvalidInput("q", f"at most {QUERY_MAX_LEN} characters")
    if not search_mod.normalize(q):
        raise InvalidInput("q", "must contain a letter or a digit")
    profile_id = query_profile_id(request)
    country = check_country(request.query.get("country"))
    limit = query_limit(request)

    app = request.app
    rules = app[RULES]
    at_ms = now_ms()
    snap, meta, state, country, popularity = await member_inputs(app, profile_id, country,
                                                                 at_ms)
    args = (snap, q, limit, rules, meta, country, state, popularity, model_scorer(app), at_ms,
            app[PAGE_CONFIG])
    if len(snap.search) <= INLINE_SEARCH_TITLES:
        mode, items = run_search(*args)
    else:  # a big catalog: keep the loop serving while this one is scored
        mode, items = await asyncio.get_running_loop().run_in_executor(None, run_search, *args)
    return json_response({"query": q, "mode": mode, "profile_id": profile_id,
                          "country": country, "items": items})


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def _store_check(store: PipelineStore) -> str | None:
    """``None`` when the store answers a ping within ``PING_TIMEOUT_S``, else why not."""
    try:
        ok = await asyncio.wait_for(store.ping(), PING_TIMEOUT_S)
        return None if ok else "ping returned false"
    except Exception as exc:  # a probe: the failure is the answer
        return f"ping failed: {type(exc).__name__}: {exc}"


async def _broker_check(app: web.Application) -> str | None:
    """``None`` when the impressions broker answered (or cannot be asked), else why not."""
    impressions = app[IMPRESSIONS]
    if not impressions.can_check_broker:
        return None
    return await app[BROKER_CHECK].check(impressions.check_broker)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers a ping and the impressions broker a metadata request.

    200 ``{"status": "ready", "store": "ok", "broker": "ok", ...counters}``; else 503 with
    ``failed`` (the dependencies that did not answer), each one's reason under its name and
    all of them in ``reason``. A producer that cannot be asked (a test fake) shows
    ``"broker": "not checked"``.
    """
    app = request.app
    counters = app[IMPRESSIONS].stats()
    store_reason, broker_reason = await asyncio.gather(_store_check(app[STORE]),
                                                       _broker_check(app))
    reasons = {"store": store_reason, "broker": broker_reason}
    failed = [name for name, why in reasons.items() if why is not None]
    body: dict[str, Any] = {name: why or "ok" for name, why in reasons.items()}
    if not app[IMPRESSIONS].can_check_broker:
        body["broker"] = "not checked"
    if not failed:
        return json_response({"status": "ready", **body, **counters})
    reason = "; ".join(f"{name} {reasons[name]}" for name in failed)
    return json_response({"status": "unavailable", "failed": failed, "reason": reason,
                          **body, **counters}, status=503)


# -- app --------------------------------------------------------------------------------------
async def _resources(app: web.Application, own_store: bool, own_impressions: bool,
                     own_models: bool) -> AsyncIterator[None]:
    """Create what was not injected; start the impression logger and the models refresh;
    close on cleanup.

    The app closes the store only if it created it; it always starts and closes the
    impression logger and the serving models, whose tasks live on the app's loop.
    """
    settings = app[SETTINGS]
    if own_store:
        app[STORE] = RedisStore.from_url(settings.redis_url, settings.key_prefix,
                                        max_connections=settings.redis_max_connections)
    if own_impressions:
        app[IMPRESSIONS] = ImpressionLogger.from_settings(settings)
    if own_models:
        app[MODELS] = ServingModels(app[STORE],
                                    popularity_half_life_s=settings.popularity_half_life_s,
                                    artwork_policy=settings.artwork_policy,
                                    seed=settings.model_seed)
    app[IMPRESSIONS].start()
    app[MODELS].start()
    try:
        yield
    finally:
        try:
            await app[MODELS].aclose()
            await app[IMPRESSIONS].aclose()
        finally:
            if own_store:
                await app[STORE].close()


def create_app(settings: Settings, store: PipelineStore | None = None,
               impressions: ImpressionLogger | None = None, rules: Rules | None = None,
               models: ServingModels | None = None, *,
               broker_timeout_s: float = BROKER_TIMEOUT_S,
               broker_ttl_s: float = BROKER_TTL_S) -> web.Application:
    """The serving app; a ``RedisStore``, a Kafka ``ImpressionLogger`` and the
    ``ServingModels`` are created from ``settings`` at start-up unless given. Rules come
    from ``HOMESTREAM_RULES_FILE`` unless given (:class:`~settings.ConfigError` if invalid).
    ``/readyz`` waits ``broker_timeout_s`` for the broker and reuses its answer for
    ``broker_ttl_s``."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[BROKER_CHECK] = BrokerCheck(broker_timeout_s, broker_ttl_s)
    app[RULES] = rules if rules is not None else rules_from_settings(settings)
    app[ARTWORK] = ArtworkChooser(settings.artwork_sticky_s, settings.artwork_rows)
    app[EXPERIMENT] = experiment_from_settings(settings)
    app[PAGE_CONFIG] = PageConfig(row_length=settings.row_length,
                                  affinity_half_life_s=settings.affinity_half_life_s,
                                  rules=app[RULES])
    if store is not None:
        app[STORE] = store
    if impressions is not None:
        app[IMPRESSIONS] = impressions
    if models is not None:
        app[MODELS] = models
    app.cleanup_ctx.append(functools.partial(
        _resources, own_store=store is None, own_impressions=impressions is None,
        own_models=models is None))
    app.router.add_get("/v1/homepage/{profile_id}", homepage)
    app.router.add_get("/v1/titles/{title_id}/similar", similar)
    app.router.add_post("/v1/rerank", rerank)
    app.router.add_get("/v1/search", search)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    from serving.webapp import add_webapp  # it imports this module: bound here, not on top
    add_webapp(app, settings)
    return app


def run(settings: Settings) -> None:
    """Serve on ``settings.http_host:http_port`` until interrupted (prints the URL)."""
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port,
                print=functools.partial(print, flush=True))
