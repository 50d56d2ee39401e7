"""The web app served beside the API: a member's home page as a person sees it, and a view
for operators. Plain HTML, CSS and ES modules under ``serving/web/`` (no build step).

Routes added by :func:`add_webapp`:

- ``GET /``: pick or type a profile and see their page, rows of title tiles with the
  chosen artwork, row titles and explanations, score and propensity on hover. The page's
  data is the real ``GET /v1/homepage/{profile_id}`` (artwork decisions and impressions are
  real); it re-reads it whenever the member's page changes (the stream below).
- ``GET /ops``: the worker's counters, consumer lag as far as it can be known, freshness
  and the latest dead letters, refreshed every second from ``GET /ui/ops``.
- ``GET /static/...``: the app's files.
- ``GET /art/{title_id}/{artwork_id}.svg``: a placeholder image of one artwork candidate
  (the title's name on the colours of the artwork's tags). The app shows it instead of
  every artwork URL under ``HOMESTREAM_ARTWORK_BASE_URL`` (the synthetic catalog's
  made-up image host), so pages look right offline; other URLs are shown as they are.
- ``GET /ui/config``: what the app needs to know of the settings.
- ``GET /ui/profiles?q=&limit=``: profile ids that have a materialized page (a bounded
  SCAN, so it never walks a big keyspace: ``truncated`` says when it stopped early).
- ``GET /ui/stream/{profile_id}``: server-sent events; ``ready`` once subscribed, then
  ``page`` (``{"profile_id", "generated_at_ms", "as_of_event_ts_ms", "personalized",
  "rows"}``) each time the worker publishes a new page of the profile on the
  page-updates topic (:mod:`serving.page_stream`), and a comment every
  :data:`HEARTBEAT_S` seconds.
- ``GET /ui/ops``: the operators' view's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape, quoteattr

import orjson
from aiohttp import web

from features.keys import default_page_key, page_key
from features.store import PipelineStore
from homestream.settings import Settings
from serving.catalog_cache import CatalogSnapshot
from serving.http import MODELS, SETTINGS, STORE, json_response
from serving.page_stream import PageUpdateHub, TopicFeed
from serving.validation import check_profile_id, query_limit
from topics.models import Artwork, Title

WEB_DIR = Path(__file__).with_name("web")
#: The app's files served under ``/static/`` (the directory's files, listed once).
STATIC_FILES = frozenset(p.name for p in WEB_DIR.iterdir() if p.is_file())
#: Seconds between two keep-alive comments on an idle page stream.
HEARTBEAT_S = 15.0
#: Longest a new page stream waits for the topic feed before saying "ready" anyway.
FEED_READY_S = 5.0
#: The profile list: ids returned at most, SCAN calls at most (``COUNT`` keys each).
PROFILES_DEFAULT, PROFILES_MAX = 50, 500
SCAN_CALLS, SCAN_COUNT = 20, 1000
LAG_NOTE = ("lag = high watermark - the worker group's committed offset. On Apache Kafka "
            "that is the consumer lag. On Tansu 0.6 (the local and test broker) the high "
            "watermark is the base offset of a partition's last batch + 1, not its end, so "
            "this lag is wrong there (often too low or negative): trust the processed "
            "counts instead.")


class Feed(Protocol):
    """What the web app needs of the topic feed (:class:`~serving.page_stream.TopicFeed`)."""

    def ensure_started(self) -> None: ...

    async def wait_running(self, timeout_s: float) -> bool: ...

    async def stop(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...


FeedFactory = Callable[[Settings, PageUpdateHub], Feed]
HUB = web.AppKey("page_update_hub", PageUpdateHub)
FEED = web.AppKey("topic_feed", Feed)  # type: ignore[type-abstract]


def default_feed(settings: Settings, hub: PageUpdateHub) -> Feed:
    """The real feed: a Kafka consumer thread feeding ``hub``."""
    return TopicFeed(settings, hub.publish, lambda: hub.watched)


def add_webapp(app: web.Application, settings: Settings,
               feed_factory: FeedFactory = default_feed) -> None:
    """Register the web app's routes on ``app``. Its topic feed starts when a view first
    needs it (a page stream or the operators' data) and stops with the app."""
    hub = PageUpdateHub()
    app[HUB] = hub
    app[FEED] = feed_factory(settings, hub)

    async def end_streams(_app: web.Application) -> None:
        hub.close()  # open page streams end, so a graceful shutdown does not wait on them

    async def stop_feed(app: web.Application) -> None:
        hub.close()
        await app[FEED].stop()

    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_feed)
    app.router.add_get("/", _file_handler("index.html"))
    app.router.add_get("/ops", _file_handler("ops.html"))
    app.router.add_get("/static/{filename}", static_file)
    app.router.add_get("/art/{title_id}/{artwork_id}.svg", placeholder_art)
    app.router.add_get("/ui/config", ui_config)
    app.router.add_get("/ui/profiles", profiles)
    app.router.add_get("/ui/stream/{profile_id}", page_stream)
    app.router.add_get("/ui/ops", ops)


async def static_file(request: web.Request) -> web.FileResponse:
    """``GET /static/{filename}``: one of the app's files; any other name is a 404 in the
    one error shape (a static directory route would answer an empty body)."""
    name = request.match_info["filename"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(WEB_DIR / name, headers={"Cache-Control": "no-cache"})


def _file_handler(name: str) -> Callable[[web.Request], Any]:
    path = WEB_DIR / name

    async def handler(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    handler.__doc__ = f"``{name}`` of the web app."
    return handler


# -- placeholder artwork ----------------------------------------------------------------------
def tag_colour(tag: str, lightness: int = 42) -> str:
    """A stable colour for an artwork tag (its hue from a hash of the tag).

    >>> tag_colour("dark") == tag_colour("dark"), tag_colour("dark") != tag_colour("bright")
    (True, True)
    """
    hue = int.from_bytes(hashlib.sha1(tag.encode()).digest()[:2], "big") % 360
    return f"hsl({hue}, 62%, {lightness}%)"


def wrap(text: str, width: int = 20, max_lines: int = 3) -> list[str]:
    """``text`` in lines of about ``width`` characters, at most ``max_lines`` (the last one
    ends with an ellipsis when text was left out).

    >>> wrap("The Quiet Harbour of Long Winter Nights", 16)
    ['The Quiet', 'Harbour of Long', 'Winter Nights']
    """
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word[: width * 2])
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines or [""]


def placeholder_svg(name: str, artwork_id: str, tags: list[str]) -> str:
    """A 320x180 SVG: a gradient of the tags' colours, the title's name, the tags as chips
    and the artwork id."""
    colours = [tag_colour(t) for t in tags] or ["hsl(220, 10%, 35%)"]
    # one tag: from its colour to a darker shade of it
    shades = colours if len(colours) > 1 else [colours[0], tag_colour(tags[0], 20) if tags
                                               else "hsl(220, 10%, 18%)"]
    stops = "".join(f'<stop offset="{i / (len(shades) - 1):.2f}" stop-color="{c}"/>'
                    for i, c in enumerate(shades))
    lines = "".join(
        f'<text x="16" y="{48 + 28 * i}" font-size="24" font-weight="700">{escape(line)}</text>'
        for i, line in enumerate(wrap(name)))
    chips, x = [], 16
    for tag, colour in zip(tags[:4], colours, strict=False):
        w = 14 + 8 * len(tag[:16])
        chips.append(f'<rect x="{x}" y="140" rx="10" width="{w}" height="22" fill="{colour}" '
                     f'stroke="#fff" stroke-opacity="0.6"/><text x="{x + 7}" y="156" '
                     f'font-size="13">{escape(tag[:16])}</text>')
        x += w + 6
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180" '
        f'viewBox="0 0 320 180" role="img" aria-label={quoteattr(name)}>'
        '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
        f'{stops}</linearGradient></defs><rect width="320" height="180" fill="url(#g)"/>'
        '<rect width="320" height="180" fill="#000" fill-opacity="0.18"/>'
        '<g fill="#fff" font-family="system-ui, sans-serif">'
        f'{lines}{"".join(chips)}<text x="304" y="20" font-size="11" text-anchor="end" '
        f'fill-opacity="0.75">{escape(artwork_id)}</text></g></svg>')


async def placeholder_art(request: web.Request) -> web.Response:
    """``GET /art/{title_id}/{artwork_id}.svg``: one artwork candidate's placeholder image;
    404 when the catalog has no such title or the title no such artwork."""
    title_id = request.match_info["title_id"]
    artwork_id = request.match_info["artwork_id"]
    models = request.app[MODELS]
    found = _artwork(await models.ensure(), title_id, artwork_id)
    if found is None:  # a page made from a newer catalog than this process last read
        found = _artwork(await models.refreshed_for_miss(), title_id, artwork_id)
    if found is None:
        raise web.HTTPNotFound()
    title, art = found
    return web.Response(text=placeholder_svg(title.name, art.artwork_id, list(art.tags)),
                        content_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=300"})


def _artwork(snap: CatalogSnapshot, title_id: str, artwork_id: str
             ) -> tuple[Title, Artwork] | None:
    """The title and its artwork candidate in ``snap`` (``None``: either is missing)."""
    title = snap.catalog.get(title_id)
    art = next((a for a in title.artwork if a.artwork_id == artwork_id), None) if title else None
    return None if title is None or art is None else (title, art)


# -- data for the pages -------------------------------------------------------------------------
async def ui_config(request: web.Request) -> web.Response:
    """``GET /ui/config``: the synthetic artwork base URL and the placeholder route."""
    settings = request.app[SETTINGS]
    return json_response({"artwork_base_url": settings.artwork_base_url,
                          "placeholder_art": "/art/{title_id}/{artwork_id}.svg"})


async def known_profiles(store: PipelineStore, prefix: str, limit: int,
                         contains: str = "") -> tuple[list[str], bool]:
    """Profile ids with a materialized page (those containing ``contains``), sorted, at most
    ``limit``; and whether the search stopped before seeing every page key. On Redis a
    SCAN of the page keys, at most :data:`SCAN_CALLS` calls."""
    head, defaults = page_key(prefix, ""), default_page_key(prefix, "")
    found: set[str] = set()
    client = getattr(store, "client", None)
    truncated = False
    if client is None:  # the in-memory store of tests and tools
        keys = [page_key(prefix, p) for p in getattr(store, "pages", {})]
    else:
        keys, cursor = [], 0
        for _ in range(SCAN_CALLS):
            cursor, batch = await client.scan(cursor, match=page_key(prefix, "*"),
                                              count=SCAN_COUNT)
            keys.extend(k.decode() if isinstance(k, bytes) else k for k in batch)
            if cursor == 0 or len(keys) >= 4 * limit + 200:
                break
        truncated = cursor != 0
    for key in keys:
        if key.startswith(head) and not key.startswith(defaults):
            pid = key[len(head):]
            if contains.lower() in pid.lower():
                found.add(pid)
    ordered = sorted(found)
    return ordered[:limit], truncated or len(ordered) > limit


async def profiles(request: web.Request) -> web.Response:
    """``GET /ui/profiles?q=&limit=``: ``{"profiles": [...], "truncated": bool}``."""
    limit = query_limit(request, PROFILES_DEFAULT, PROFILES_MAX)
    q = request.query.get("q", "")[:128]
    settings = request.app[SETTINGS]
    ids, truncated = await known_profiles(request.app[STORE], settings.key_prefix, limit, q)
    return json_response({"profiles": ids, "truncated": truncated})


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event.

    >>> sse_event("page", {"a": 1})
    b'event: page\\ndata: {"a":1}\\n\\n'
    """
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def page_stream(request: web.Request) -> web.StreamResponse:
    """``GET /ui/stream/{profile_id}``: the profile's page updates as server-sent events."""
    profile_id = check_profile_id(request.match_info["profile_id"])
    hub = request.app[HUB]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    feed = request.app[FEED]
    feed.ensure_started()
    # subscribed and the feed's offsets fixed before "ready": the browser reads the page
    # then, and no update can fall between that read and the stream
    queue = hub.subscribe(profile_id)
    try:
        await feed.wait_running(FEED_READY_S)
        await resp.prepare(request)
        status = feed.snapshot()["status"]
        await resp.write(b"retry: 1000\n" + sse_event(
            "ready", {"profile_id": profile_id, "feed": status}))
        while True:
            try:
                update = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if update is None:  # the server is stopping
                break
            await resp.write(sse_event("page", update))
    except ConnectionResetError:
        pass  # the browser went away: nothing to send to
    finally:
        hub.unsubscribe(profile_id, queue)
    if resp.prepared:
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    return resp


async def ops(request: web.Request) -> web.Response:
    """``GET /ui/ops``: the worker's counters (Redis), what this server's topic feed saw
    (freshness, dead letters, offsets and lag) and its page streams."""
    app = request.app
    app[FEED].ensure_started()
    counters = await app[STORE].counters()
    hub = app[HUB]
    return json_response({
        "at_ms": int(time.time() * 1000),
        "counters": counters,
        "feed": app[FEED].snapshot(),
        "streams": {"profiles_watched": len(hub.watched), "updates_delivered": hub.delivered},
        "notes": {"lag": LAG_NOTE},
    }, headers={"Cache-Control": "no-store"})
