"""The home-page HTTP service: reads materialized pages from the store, applies serve-time
guardrails, returns JSON and logs what it served as impressions.

Routes:

- ``GET /v1/homepage/{profile_id}?device=tv&country=US``: the profile's page, else the
  default page of ``country``, else the all-countries default, else an empty page; always
  200 for a well-formed request.
- ``GET /healthz``: the process is alive.
- ``GET /readyz``: 200 when the store answers a ping, else 503 with the reason; carries
  the impression-logging counters.

Every error is a JSON object ``{"error": "..."}`` (400, 404, 405, 503, 500).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.exceptions
from aiohttp import web

from features.keys import ALL_COUNTRIES
from features.store import PipelineStore, RedisStore
from serving.impressions import ImpressionLogger
from settings import Settings

log = logging.getLogger(__name__)

PROFILE_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
COUNTRY_RE = re.compile(r"[A-Z]{2}")
DEVICE_MAX_LEN = 64
PING_TIMEOUT_S = 1.0

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", PipelineStore)
IMPRESSIONS = web.AppKey("impressions", ImpressionLogger)

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


def filter_available(rows: list[dict[str, Any]], country: str) -> list[dict[str, Any]]:
    """Serve-time availability guardrail: drop items not available in ``country`` (empty
    ``availability`` = everywhere) and rows left without items. Input is not mutated."""
    out = []
    for row in rows:
        items = [it for it in row.get("items") or ()
                 if not it.get("availability") or country in it["availability"]]
        if items:
            out.append({**row, "items": items})
    return out


async def find_page(store: PipelineStore, profile_id: str,
                    country: str | None) -> tuple[dict[str, Any], str]:
    """The page to serve and its source: ``personal``, ``default-<country>`` or ``empty``."""
    raw = await store.get_page(profile_id)
    if raw is not None:
        return _parse_page(raw), "personal"
    for c in (country, ALL_COUNTRIES):
        if c is None:
            continue
        raw = await store.get_default_page(c)
        if raw is not None:
            page = _parse_page(raw)
            page["profile_id"] = profile_id  # served to this profile, though not personalized
            page["personalized"] = False
            return page, f"default-{c}"
    return empty_page(profile_id, country), "empty"


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


# -- handlers ---------------------------------------------------------------------------------
async def homepage(request: web.Request) -> web.Response:
    """``GET /v1/homepage/{profile_id}``: the page to show, logged as impressions."""
    profile_id = request.match_info["profile_id"]
    if not PROFILE_ID_RE.fullmatch(profile_id):
        return error_response(400, "profile_id: must be 1-128 characters of A-Z a-z 0-9 "
                                   "_ . : @ -")
    country = request.query.get("country")
    if country is not None and not COUNTRY_RE.fullmatch(country):
        return error_response(400, "country: must be two uppercase letters (ISO 3166-1 "
                                   f"alpha-2), got {country[:16]!r}")
    device = request.query.get("device")
    if device is not None and len(device) > DEVICE_MAX_LEN:
        return error_response(400, f"device: at most {DEVICE_MAX_LEN} characters")

    page, source = await find_page(request.app[STORE], profile_id, country)
    if country is not None:
        page["rows"] = filter_available(page["rows"], country)
    request_id = uuid.uuid4().hex
    served_at_ms = time.time_ns() // 1_000_000
    page["request_id"] = request_id
    page["served_at_ms"] = served_at_ms
    page["source"] = source
    if page["rows"]:
        request.app[IMPRESSIONS].log_page(
            profile_id, request_id, served_at_ms, page["rows"],
            device=device or "unknown", country=_impression_country(country, page))
    return json_response(page, headers={"Cache-Control": "no-store"})


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers a ping; includes impression-logging counters."""
    counters = request.app[IMPRESSIONS].stats()
    try:
        ok = await asyncio.wait_for(request.app[STORE].ping(), PING_TIMEOUT_S)
        reason = None if ok else "store ping returned false"
    except Exception as exc:  # a probe: the failure is the answer
        reason = f"store ping failed: {type(exc).__name__}: {exc}"
    if reason is None:
        return json_response({"status": "ready", "store": "ok", **counters})
    return json_response({"status": "unavailable", "reason": reason, **counters}, status=503)


# -- app --------------------------------------------------------------------------------------
async def _resources(app: web.Application,
                     own_store: bool, own_impressions: bool) -> AsyncIterator[None]:
    """Create what was not injected; start the impression logger; close on cleanup.

    The app closes the store only if it created it; it always starts and closes the
    impression logger, whose tasks live on the app's loop.
    """
    settings = app[SETTINGS]
    if own_store:
        app[STORE] = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    if own_impressions:
        app[IMPRESSIONS] = ImpressionLogger.from_settings(settings)
    app[IMPRESSIONS].start()
    try:
        yield
    finally:
        try:
            await app[IMPRESSIONS].aclose()
        finally:
            if own_store:
                await app[STORE].close()


def create_app(settings: Settings, store: PipelineStore | None = None,
               impressions: ImpressionLogger | None = None) -> web.Application:
    """The serving app; a ``RedisStore`` and a Kafka ``ImpressionLogger`` are created from
    ``settings`` at start-up unless given."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    if store is not None:
        app[STORE] = store
    if impressions is not None:
        app[IMPRESSIONS] = impressions
    app.cleanup_ctx.append(functools.partial(
        _resources, own_store=store is None, own_impressions=impressions is None))
    app.router.add_get("/v1/homepage/{profile_id}", homepage)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def run(settings: Settings) -> None:
    """Serve on ``settings.http_host:http_port`` until interrupted (prints the URL)."""
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port,
                print=functools.partial(print, flush=True))
