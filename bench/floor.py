"""The floor of serving: a bare aiohttp server whose one handler GETs a member's page key from
Redis and returns the bytes, in ``HOMESTREAM_HTTP_WORKERS`` processes like the real server.

``python -m bench.floor`` serves on ``HOMESTREAM_HTTP_HOST:PORT`` until SIGTERM;
:mod:`bench.serving` measures the home-page server against it.
"""

from __future__ import annotations

import functools
from typing import Any


def floor_app(redis_url: str, prefix: str, max_connections: int) -> Any:
    """The floor: ``GET /v1/homepage/{profile_id}`` returns the stored page bytes (404
    without one); ``GET /healthz``. Nothing else."""
    import redis.asyncio as aioredis
    from aiohttp import web

    from features.keys import page_key

    redis_key = web.AppKey("redis", aioredis.Redis)

    async def homepage(request: web.Request) -> web.Response:
        raw = await request.app[redis_key].get(page_key(prefix, request.match_info["profile_id"]))
        if raw is None:
            return web.Response(status=404)
        return web.Response(body=raw, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pool(app: web.Application) -> Any:
        app[redis_key] = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections))
        yield
        await app[redis_key].aclose()

    app = web.Application()
    app.cleanup_ctx.append(pool)
    app.router.add_get("/v1/homepage/{profile_id}", homepage)
    app.router.add_get("/healthz", healthz)
    return app


def serve_floor(settings: Any) -> None:
    """One floor process (serves until SIGTERM)."""
    from aiohttp import web

    web.run_app(floor_app(settings.redis_url, settings.key_prefix,
                          settings.redis_max_connections),
                host=settings.http_host, port=settings.http_port,
                reuse_port=settings.http_workers > 1 or None, print=None, access_log=None)


def run_floor() -> None:
    """Serve the floor on ``HOMESTREAM_HTTP_HOST:PORT`` with ``HOMESTREAM_HTTP_WORKERS``
    processes (the same process model as the real server)."""
    from homestream.settings import load_settings
    from serving.processes import serve_processes

    settings = load_settings()
    serve_processes(functools.partial(serve_floor, settings), settings.http_workers)



if __name__ == "__main__":
    run_floor()
