"""The server's API contract: an OpenAPI 3.1 document of every route, built from the
router and the pydantic models of :mod:`serving.api_models`, served at ``GET /openapi.json``,
with a self-contained page listing the operations at ``GET /docs``.

Each route of the app has an entry in :data:`OPERATIONS` (keyed by method and path
template); :func:`build_document` fails on a route without one, so a new route cannot go
undocumented (a unit test builds the document of the real app). Request parameters carry
the bounds :mod:`serving.validation` enforces; every operation lists the error responses
its handler can give, each with the one error shape (:class:`~serving.api_models.ErrorBody`).
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from homestream.player.producer import EVENT_TYPES
from serving import api_models as m
from serving.auth import KEY_COOKIE, needs_admin, needs_key
from serving.ingest import IngestResponse, IngestUnavailable
from serving.validation import LIMIT_DEFAULT
from serving.webapp import PROFILES_DEFAULT, PROFILES_MAX

REF = "#/components/schemas/{model}"
#: How a key is sent (needed only when ``HOMESTREAM_API_KEYS`` is set: :mod:`serving.auth`).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "An API key of HOMESTREAM_API_KEYS (read or admin role)"},
    "cookie": {"type": "apiKey", "in": "cookie", "name": KEY_COOKIE,
               "description": "The same key, for the web app (an EventSource cannot send "
                              "headers)"},
}
JSON, TEXT, HTML = "application/json", "text/plain", "text/html"
MODELS: tuple[type[BaseModel], ...] = (
    m.ErrorBody, m.ServedPage, m.SimilarTitles, m.RerankRequest, m.Reranked, m.SearchResults,
    m.Health, m.Readiness, m.UiConfig, m.UiProfiles, m.UiOps, IngestResponse,
    IngestUnavailable, *EVENT_TYPES.values())
DOCUMENT = web.AppKey("openapi_document", dict)


@dataclass(frozen=True)
class Response:
    """One documented response: what it means, its media type and body schema (a
    component's name, or an inline schema)."""

    description: str
    schema: str | dict[str, Any] = "ErrorBody"
    media: str = JSON


@dataclass(frozen=True)
class Operation:
    """One route's documentation."""

    summary: str
    responses: dict[int, Response]
    params: tuple[dict[str, Any], ...] = ()
    body: str | dict[str, Any] | None = None
    tags: tuple[str, ...] = ("api",)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def param(name: str, where: str, schema: dict[str, Any], description: str,
          required: bool = False) -> dict[str, Any]:
    """An OpenAPI parameter object (path parameters are always required)."""
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema}


PROFILE = {"type": "string", "pattern": m.PROFILE_ID_PATTERN}
COUNTRY_Q = param("country", "query", {"type": "string", "pattern": m.COUNTRY_PATTERN},
                  "ISO 3166-1 alpha-2 country; default: the profile's home country")
PROFILE_Q = param("profile_id", "query", PROFILE, "Personalize for this profile")
LIMIT_Q = param("limit", "query", {"type": "integer", "minimum": 1,
                                   "maximum": m.LIMITS["limit"], "default": LIMIT_DEFAULT},
                "Most items to return")
BAD = Response("A request field is malformed; `error` starts with its name, `field` names it")
NOT_FOUND = Response("Not found")
UNAVAILABLE = Response("The store (Redis) cannot be reached")
UNAUTHORIZED = Response("No API key, or an unknown one (only when keys are configured)")
FORBIDDEN = Response("The key is not an admin key")
RATE_LIMITED = Response("The key's rate limit is exceeded (see `Retry-After`)")
TEXT_BODY = {"type": "string"}
EVENTS_BODY_NOTE = ("A JSON array of events, each an object with `type` and its model's "
                    "fields; each event is validated on its own.")

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/v1/homepage/{profile_id}"): Operation(
        "The profile's home page",
        {200: Response("The page to show (personal, else a default page, else the newest "
                       "titles, else empty), logged as impressions", "ServedPage"),
         400: BAD, 503: UNAVAILABLE},
        (param("profile_id", "path", PROFILE, "The member's profile"), COUNTRY_Q,
         param("device", "query", {"type": "string", "maxLength": m.LIMITS["device"]},
               "The device class (artwork context), e.g. tv"))),
    ("GET", "/v1/titles/{title_id}/similar"): Operation(
        "Titles similar to a title, allowed for the profile",
        {200: Response("Stored co-watch neighbours topped up with content neighbours",
                       "SimilarTitles"),
         400: BAD, 404: Response("The title is not in the catalog"), 503: UNAVAILABLE},
        (param("title_id", "path", {"type": "string", "minLength": 1,
                                    "maxLength": m.LIMITS["title_id"]}, "The title"),
         PROFILE_Q, COUNTRY_Q, LIMIT_Q)),
    ("POST", "/v1/rerank"): Operation(
        "Order the given titles for the member",
        {200: Response("The known, allowed titles in order; `unknown` and `removed` name "
                       "the others", "Reranked"),
         400: BAD, 503: UNAVAILABLE},
        body="RerankRequest"),
    ("GET", "/v1/search"): Operation(
        "Search the catalog, personalized and guarded",
        {200: Response("Matches ranked by match and relevance", "SearchResults"),
         400: BAD, 503: UNAVAILABLE},
        (param("q", "query", {"type": "string", "minLength": 1,
                              "maxLength": m.LIMITS["q"]},
               "The query; must contain a letter or a digit", required=True),
         PROFILE_Q, COUNTRY_Q, LIMIT_Q)),
    ("POST", "/v1/events"): Operation(
        "Send player events (for players without a Kafka client)",
        {200: Response("Every valid event was acknowledged by the broker", "IngestResponse"),
         400: Response("The body is not a JSON array of events, or no event is valid (then "
                       "with `accepted` and `rejected` as in a 200)"),
         413: Response("Too large: over the byte or event-count limit (nothing was sent)"),
         503: Response("The broker did not acknowledge some events (`not_accepted`); "
                       "sending them again is safe", "IngestUnavailable")},
        body="events", description=EVENTS_BODY_NOTE),
    ("DELETE", "/v1/profiles/{profile_id}"): Operation(
        "Erase a member (admin key)",
        {202: Response("Erased from Redis; the worker forgets the member's model parameters "
                       "within seconds of the tombstone", {
                           "type": "object", "properties": {
                               "profile_id": {"type": "string"}, "erased": {"type": "boolean"},
                               "keys_deleted": {"type": "integer"},
                               "tombstone": {"type": "boolean"}}}),
         400: BAD, 401: Response("No API key, or an unknown one"),
         403: Response("The key is not an admin key"),
         429: Response("The key's rate limit is exceeded (see `Retry-After`)"),
         503: Response("Redis cannot be reached, or the tombstone was not delivered (retry)")},
        (param("profile_id", "path", PROFILE, "The member to erase"),)),
    ("GET", "/healthz"): Operation("Liveness", {200: Response("The process answers",
                                                              "Health")}, tags=("ops",)),
    ("GET", "/readyz"): Operation(
        "Readiness: the store and the impressions broker answer",
        {200: Response("Ready", "Readiness"),
         503: Response("A dependency did not answer (`failed`, `reason`)", "Readiness")},
        tags=("ops",)),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics of every server process",
        {200: Response("The Prometheus text format", TEXT_BODY, TEXT)}, tags=("ops",)),
    ("GET", "/openapi.json"): Operation(
        "This document", {200: Response("OpenAPI 3.1", {"type": "object"})}, tags=("ops",)),
    ("GET", "/docs"): Operation(
        "The operations as a web page", {200: Response("HTML", TEXT_BODY, HTML)},
        tags=("ops",)),
    ("GET", "/"): Operation("The web app: a member's home page",
                            {200: Response("HTML", TEXT_BODY, HTML)}, tags=("web app",)),
    ("GET", "/ops"): Operation("The web app: the operators' view",
                               {200: Response("HTML", TEXT_BODY, HTML)}, tags=("web app",)),
    ("GET", "/static/{filename}"): Operation(
        "The web app's files",
        {200: Response("The file", TEXT_BODY, "*/*"), 404: NOT_FOUND},
        (param("filename", "path", {"type": "string", "pattern": r"^[a-z]+\.(js|css|html)$"},
               "A file of the web app"),), tags=("web app",)),
    ("GET", "/art/{title_id}/{artwork_id}.svg"): Operation(
        "A placeholder image of one artwork candidate",
        {200: Response("SVG", TEXT_BODY, "image/svg+xml"),
         404: Response("No such title or artwork"), 503: UNAVAILABLE},
        (param("title_id", "path", {"type": "string", "minLength": 1}, "The title"),
         param("artwork_id", "path", {"type": "string", "minLength": 1}, "The artwork")),
        tags=("web app",)),
    ("GET", "/ui/config"): Operation("The web app's settings",
                                     {200: Response("Settings", "UiConfig")},
                                     tags=("web app",)),
    ("GET", "/ui/profiles"): Operation(
        "Profiles with a materialized page",
        {200: Response("Sorted ids", "UiProfiles"), 400: BAD, 503: UNAVAILABLE},
        (param("q", "query", {"type": "string"}, "Only ids containing this"),
         param("limit", "query", {"type": "integer", "minimum": 1, "maximum": PROFILES_MAX,
                                  "default": PROFILES_DEFAULT}, "Most ids to return")),
        tags=("web app",)),
    ("GET", "/ui/stream/{profile_id}"): Operation(
        "The profile's page updates as server-sent events (`ready`, then `page`)",
        {200: Response("An endless event stream", TEXT_BODY, "text/event-stream"),
         400: BAD},
        (param("profile_id", "path", PROFILE, "The member's profile"),), tags=("web app",)),
    ("GET", "/ui/ops"): Operation(
        "The operators' view's data",
        {200: Response("Counters, feed, streams", "UiOps"), 503: UNAVAILABLE},
        tags=("web app",)),
}


def component_schemas() -> dict[str, Any]:
    """Every model's JSON schema under ``components.schemas`` (their nested types too), and
    ``events``: the body of ``POST /v1/events``."""
    _, top = models_json_schema([(model, "validation") for model in MODELS],
                                ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    variants = []
    for kind, model in EVENT_TYPES.items():
        event = copy.deepcopy(schemas[model.__name__])
        event["properties"] = {"type": {"const": kind}, **event["properties"]}
        event["required"] = ["type", *event.get("required", [])]
        schemas[f"{model.__name__}Event"] = event
        variants.append({"$ref": REF.format(model=f"{model.__name__}Event")})
    schemas["events"] = {"type": "array", "minItems": 1, "items": {"anyOf": variants},
                         "description": EVENTS_BODY_NOTE}
    return schemas


def _schema(schema: str | dict[str, Any]) -> dict[str, Any]:
    return {"$ref": REF.format(model=schema)} if isinstance(schema, str) else schema


def auth_responses(method: str, path: str) -> dict[int, Response]:
    """The answers :mod:`serving.auth` may give on the route when keys are configured."""
    if not needs_key(path):
        return {}
    found = {401: UNAUTHORIZED, 429: RATE_LIMITED}
    if needs_admin(method, path):
        found[403] = FORBIDDEN
    return found


def operation_object(method: str, path: str, op: Operation) -> dict[str, Any]:
    """The OpenAPI operation object of ``op`` (with the key it needs, if any, and the
    access-control answers)."""
    responses = {**auth_responses(method, path), **op.responses}
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_') or 'index'}"
                       .replace("{", "").replace("}", "").replace(".", "_"),
        "summary": op.summary, "tags": list(op.tags),
        "responses": {str(code): {"description": r.description,
                                  "content": {r.media: {"schema": _schema(r.schema)}}}
                      for code, r in sorted(responses.items())},
    }
    if needs_key(path):
        out["security"] = [{"bearer": []}, {"cookie": []}]
    if op.description:
        out["description"] = op.description
    if op.params:
        out["parameters"] = list(op.params)
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {JSON: {"schema": _schema(op.body)}}}
    return out


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    """``(method, path template)`` of every route of ``app`` (HEAD, added with each GET, is
    left out)."""
    return [(route.method, resource.canonical) for resource in app.router.resources()
            for route in resource if route.method != "HEAD"]


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes; ``KeyError`` names a route that has no
    entry in :data:`OPERATIONS`."""
    paths: dict[str, dict[str, Any]] = {}
    missing = [f"{meth} {path}" for meth, path in app_routes(app)
               if (meth, path) not in OPERATIONS]
    if missing:
        raise KeyError(f"routes without an OpenAPI entry in serving.openapi.OPERATIONS: "
                       f"{', '.join(missing)}")
    for method, path in app_routes(app):
        op = OPERATIONS[(method, path)]
        paths.setdefault(path, {})[method.lower()] = operation_object(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "homestream", "version": "1",
                 "description": "Home pages materialized by the streaming pipeline, similar "
                                "titles, re-ranking, search, event ingestion and the web app. "
                                "Every error is a JSON object with `error`."},
        "paths": paths,
        "components": {"schemas": component_schemas(), "securitySchemes": SECURITY_SCHEMES},
    }


def document_of(app: web.Application) -> dict[str, Any]:
    """``app``'s document (built at start-up, when every route is registered)."""
    return app[DOCUMENT]


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.Response(body=orjson.dumps(document_of(request.app)),
                        content_type="application/json")


def docs_html(doc: dict[str, Any]) -> str:
    """A self-contained page listing the operations, their parameters and responses, with
    each schema folded under its name (no scripts, no downloads)."""
    esc = html.escape
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>{esc(doc['info']['title'])}"
             " API</title><style>body{font:15px system-ui,sans-serif;max-width:60em;margin:2em "
             "auto}code,pre{background:#f4f4f4}h2{border-top:1px solid #ccc;padding-top:.6em}"
             ".m{font-weight:700;margin-right:.5em}</style>",
             f"<h1>{esc(doc['info']['title'])} API</h1><p>{esc(doc['info']['description'])}"
             "</p><p>Machine-readable: <a href=/openapi.json>/openapi.json</a></p>"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2 id={esc(op['operationId'])}><span class=m>{method.upper()}"
                         f"</span><code>{esc(path)}</code></h2><p>{esc(op['summary'])}</p>")
            for p in op.get("parameters", ()):
                parts.append(f"<li><code>{esc(p['name'])}</code> ({p['in']}"
                             f"{', required' if p['required'] else ''}): "
                             f"{esc(p['description'])} <code>{esc(str(p['schema']))}</code>")
            if "requestBody" in op:
                parts.append(f"<p>Body: <code>{esc(_names(op['requestBody']))}</code></p>")
            parts.append("<ul>" + "".join(
                f"<li><b>{code}</b> {esc(r['description'])} <code>{esc(_names(r))}</code>"
                for code, r in op["responses"].items()) + "</ul>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        body = esc(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode())
        parts.append(f"<details id=schema-{esc(name)}><summary>{esc(name)}</summary>"
                     f"<pre>{body}</pre></details>")
    return "".join(parts) + "</html>"


def _names(obj: dict[str, Any]) -> str:
    """``media: schema name`` of a response or request body."""
    return ", ".join(f"{media}: {s['schema'].get('$ref', '').rsplit('/', 1)[-1] or 'inline'}"
                     for media, s in obj["content"].items())


async def docs_page(request: web.Request) -> web.Response:
    """``GET /docs``."""
    return web.Response(text=docs_html(document_of(request.app)), content_type="text/html")


def add_openapi(app: web.Application) -> None:
    """Register ``/openapi.json`` and ``/docs`` on ``app``; the document is built when
    the app starts."""
    app[DOCUMENT] = {}

    async def build(app: web.Application) -> None:
        app[DOCUMENT].update(build_document(app))  # fails the start-up on a missing entry

    app.on_startup.append(build)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
