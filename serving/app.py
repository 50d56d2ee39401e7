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
- ``POST /v1/events``: a JSON array of player events, validated one by one and produced
  keyed by profile; answered once the broker acknowledged (:mod:`serving.ingest`).
- ``GET /healthz``: the process is alive.
- ``GET /readyz``: 200 when the store answers a ping and the broker the impressions go to
  answers a metadata request with the impressions topic (checked in a worker thread, the
  answer reused for a few seconds: :mod:`serving.ready`); else 503 naming the failed
  dependencies in ``failed`` with the reasons. Carries the impression-logging counters.
- ``GET /metrics``: Prometheus metrics of every server process (:mod:`serving.metrics`).
- ``GET /openapi.json`` and ``GET /docs``: the API document of every route and a page
  listing its operations (:mod:`serving.openapi`).

Items of every route have ``title_id, name, artwork_id, artwork_url, score,
maturity_rating, genres, availability``. A profile without stored settings gets the
default ones; settings that do not parse fail closed (kids, rated G at most). A request
without ``country`` uses the profile's stored home country (``ProfileMeta.country``) for
availability, the default page and popularity; the ``country`` of the similar, rerank and
search answers is the one applied (``null`` when neither was known).

Every error is a JSON object ``{"error": "..."}`` (400, 404, 405, 413, 503, 500); a 400
starts with the offending field's name and carries it as ``field``.

The server is split into rooms: :mod:`serving.validation` (request fields),
:mod:`serving.home` (the home-page path and its fallback chain), :mod:`serving.routes`
(similar, rerank, search), :mod:`serving.http` (application keys, the error shape) and this
module (health, readiness, wiring); :mod:`serving.processes` runs it in
``HOMESTREAM_HTTP_WORKERS`` processes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from features.store import PipelineStore, RedisStore
from homestream.logs import setup_logging
from homestream.settings import Settings
from online_models.experiments import experiment_from_settings
from online_models.page import PageConfig
from online_models.rules import Rules, rules_from_settings
from serving.artwork import ArtworkChooser
from serving.auth import auth_middleware
from serving.catalog_cache import ServingModels
from serving.erasure import add_erasure
from serving.home import (
    HOME,
    HomeState,
    drop_finished,
    guard_rows,
    homepage,
    settle_heap,
)
from serving.http import (
    ARTWORK,
    BROKER_CHECK,
    EXPERIMENT,
    IMPRESSIONS,
    MODELS,
    PAGE_CONFIG,
    RULES,
    SETTINGS,
    STORE,
    InvalidInput,
    error_middleware,
    error_response,
    json_response,
)
from serving.impressions import ImpressionLogger
from serving.ingest import add_ingest
from serving.metrics import metrics_endpoint, metrics_middleware, multiprocess_dir, sampling
from serving.openapi import add_openapi
from serving.processes import serve_processes
from serving.ready import BROKER_TIMEOUT_S, BROKER_TTL_S, BrokerCheck
from serving.routes import rerank, search, similar
from serving.validation import check_country, check_profile_id

__all__ = [
    "IMPRESSIONS", "MODELS", "STORE", "InvalidInput", "check_country", "check_profile_id",
    "create_app", "drop_finished", "error_response", "guard_rows", "json_response", "run",
]

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 1.0


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
                                        max_connections=settings.redis_max_connections,
                                        socket_timeout_s=settings.serve_redis_timeout_s)
    if own_impressions:
        # off the loop: with a schema registry, the codec registers its schemas over HTTP
        app[IMPRESSIONS] = await asyncio.get_running_loop().run_in_executor(
            None, ImpressionLogger.from_settings, settings)
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
            await app[HOME].aclose()  # artwork assignments still queued
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
    app = web.Application(middlewares=[metrics_middleware, error_middleware,
                                       auth_middleware(settings)])
    app[SETTINGS] = settings
    app[HOME] = HomeState(settings.serve_plan_cache,
                          redis_timeout_s=settings.serve_redis_timeout_s,
                          multiplex=settings.serve_redis_multiplex,
                          assignments_max=settings.artwork_assignments_max)
    app[BROKER_CHECK] = BrokerCheck(broker_timeout_s, broker_ttl_s)
    app[RULES] = rules if rules is not None else rules_from_settings(settings)
    app[ARTWORK] = ArtworkChooser(settings.artwork_sticky_s, settings.artwork_rows,
                                  settings.artwork_decisions_max_age_s)
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
    app.cleanup_ctx.append(sampling)
    app.router.add_get("/v1/homepage/{profile_id}", homepage)
    app.router.add_get("/v1/titles/{title_id}/similar", similar)
    app.router.add_post("/v1/rerank", rerank)
    app.router.add_get("/v1/search", search)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    from serving.webapp import add_webapp  # it imports this module: bound here, not on top
    add_ingest(app, settings)  # POST /v1/events
    add_erasure(app)  # DELETE /v1/profiles/{profile_id}
    add_webapp(app, settings)
    add_openapi(app)  # /openapi.json and /docs: every route above, documented
    return app




def serve_one(settings: Settings) -> None:
    """One server process: serve until SIGTERM/SIGINT, then stop accepting, let in-flight
    requests finish (``http_shutdown_s``), store pending writes and flush impressions."""
    if settings.http_workers > 1:  # a spawned child: set up its logging like the parent
        setup_logging(settings.log_format)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    app = create_app(settings)
    settle_heap()  # what start-up imported and built lives as long as the process
    web.run_app(app, host=settings.http_host, port=settings.http_port,
                reuse_port=settings.http_workers > 1 or None,
                shutdown_timeout=settings.http_shutdown_s,
                print=functools.partial(print, flush=True))


def run(settings: Settings) -> int:
    """Serve on ``settings.http_host:http_port`` with ``settings.http_workers`` processes
    until interrupted (prints the URL); the exit code (0: stopped cleanly)."""
    with multiprocess_dir(settings.http_workers):  # the children's metrics, added up
        return serve_processes(functools.partial(serve_one, settings), settings.http_workers,
                               stop_timeout_s=settings.http_shutdown_s + 30.0)
