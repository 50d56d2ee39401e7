"""Similar titles, re-ranking and search: personalized with ``online_models.page.relevance``
like the pages, without its co-watch signal (see :mod:`serving.app` for the contracts)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from features.profile import ProfileMeta, ProfileState
from online_models import search as search_mod
from online_models.page import PageConfig, relevance, title_item
from online_models.rules import Rules
from online_models.similarity import CoWatchSimilarity, similar_titles
from serving.catalog_cache import CatalogSnapshot
from serving.home import HOME
from serving.home_read import home_country, member_reads
from serving.http import (
    MODELS,
    PAGE_CONFIG,
    RULES,
    STORE,
    InvalidInput,
    error_response,
    json_response,
    now_ms,
)
from serving.validation import (
    QUERY_MAX_LEN,
    RERANK_FIELDS,
    TITLE_ID_MAX_LEN,
    check_country,
    check_profile_id,
    check_title_ids,
    json_object,
    query_limit,
    query_profile_id,
)
from topics.models import Title

#: Relevance over more titles than this is computed in a worker thread.
INLINE_RELEVANCE_MAX = 256
#: Searches over bigger catalogs are scored in a worker thread.
INLINE_SEARCH_TITLES = 2000
#: Rerank weights ``(position in the request, relevance)`` by mode.
RERANK_WEIGHTS: dict[str | None, tuple[float, float]] = {
    None: (0.0, 1.0), "explore": (0.3, 0.7), "fetch": (0.7, 0.3)}


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


async def member_inputs(app: web.Application, profile_id: str | None, country: str | None,
                        at_ms: int) -> tuple[CatalogSnapshot, ProfileMeta, ProfileState | None,
                                             str | None, dict[str, float]]:
    """What rerank and search score with: ``(catalog, settings, state, country,
    popularity)``; the settings and the state in one round trip. Without a requested country
    the profile's home country applies, so popularity is read once the settings are known
    (usually from the in-memory cache)."""
    store, models = app[STORE], app[MODELS]
    snap = models.snapshot if models.loaded else await models.ensure()
    meta, state, _ = await member_reads(store, app[HOME].mux_for(store), profile_id,
                                        with_state=True)
    country = country or (home_country(meta) if profile_id is not None else None)
    return snap, meta, state, country, await models.popularity(country, at_ms)




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
    store, rules, models = app[STORE], app[RULES], app[MODELS]
    snap = models.snapshot if models.loaded else await models.ensure()
    meta, _, stored = await member_reads(store, app[HOME].mux_for(store), profile_id,
                                         similar_of=title_id)
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


async def rerank(request: web.Request) -> web.Response:
    """``POST /v1/rerank``: the given titles in the member's order (see the module doc)."""
    body = await json_object(request)
    extra = sorted(set(body) - set(RERANK_FIELDS))
    if extra:
        raise InvalidInput("body", f"unknown field(s) {', '.join(map(repr, extra))}; "
                                   f"expected {', '.join(RERANK_FIELDS)}")
    if "profile_id" not in body:
        raise InvalidInput("profile_id", "required")
    profile_id = check_profile_id(body["profile_id"])
    title_ids = check_title_ids(body.get("title_ids"))
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


