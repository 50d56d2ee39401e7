"""What every room of the server shares: the application keys, JSON responses, the one
error shape and the middleware that turns exceptions into it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.exceptions
from aiohttp import web

from features.store import PipelineStore
from homestream.settings import Settings
from online_models.experiments import Experiment
from online_models.page import PageConfig
from online_models.rules import Rules
from serving.artwork import ArtworkChooser
from serving.catalog_cache import ServingModels
from serving.impressions import ImpressionLogger
from serving.ready import BrokerCheck

log = logging.getLogger("serving.app")

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
        resp = error_response(503, f"store unavailable: {type(exc).__name__}: {exc}",
                              type=type(exc).__name__)
        resp.headers["Retry-After"] = "1"
        return resp
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}",
                              type=type(exc).__name__)




def now_ms() -> int:
    """Wall-clock milliseconds."""
    return time.time_ns() // 1_000_000
