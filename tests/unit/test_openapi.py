"""The OpenAPI document, built from the app's router and the pydantic models (no server)."""

from __future__ import annotations

import re
import typing

import pytest
from aiohttp import web

from homestream.settings import Settings
from online_models import page as page_shapes
from serving import api_models
from serving.app import create_app
from serving.openapi import OPERATIONS, app_routes, build_document, docs_html

#: Error responses with a body of their own (a superset of ``{"error"}``).
OWN_ERROR_BODIES = {("/v1/events", "503"), ("/readyz", "503")}


@pytest.fixture(scope="module")
def document() -> dict[str, typing.Any]:
    return build_document(create_app(Settings()))


def test_every_route_of_the_app_is_documented_and_nothing_else(
        document: dict[str, typing.Any]) -> None:
    routes = set(app_routes(create_app(Settings())))
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == routes == set(OPERATIONS)
    assert document["openapi"].startswith("3.1")


def test_a_route_without_an_entry_fails_the_build_naming_it() -> None:
    app = create_app(Settings())

    async def extra(_request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/undocumented/{x}", extra)
    with pytest.raises(KeyError, match=r"GET /v1/undocumented/\{x\}"):
        build_document(app)


def test_every_reference_resolves_and_every_operation_documents_its_errors(
        document: dict[str, typing.Any]) -> None:
    schemas = document["components"]["schemas"]
    for ref in set(re.findall(r"#/components/schemas/(\w+)", str(document))):
        assert ref in schemas, ref
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            if op.get("parameters") and any(p["in"] == "query" and "pattern" in p["schema"]
                                            for p in op["parameters"]):
                assert "400" in codes, (method, path)
            for code, response in op["responses"].items():
                if code[0] in "45" and (path, code) not in OWN_ERROR_BODIES:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    err = schemas["ErrorBody"]
    assert err["required"] == ["error"]


def test_the_page_models_carry_the_page_shapes_keys() -> None:
    for model, shape in ((api_models.PageItem, page_shapes.PageItem),
                         (api_models.PageRow, page_shapes.PageRow)):
        assert set(model.model_fields) == set(typing.get_type_hints(shape)), model.__name__


def test_the_events_body_is_each_event_model_with_its_type(
        document: dict[str, typing.Any]) -> None:
    from homestream.player.producer import EVENT_TYPES

    schemas = document["components"]["schemas"]
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    variants = schemas[body["$ref"].rsplit("/", 1)[-1]]["items"]["anyOf"]
    assert len(variants) == len(EVENT_TYPES)
    for kind, model in EVENT_TYPES.items():
        event = schemas[f"{model.__name__}Event"]
        assert event["properties"]["type"] == {"const": kind}
        assert "type" in event["required"] and "event_id" in event["required"]


def test_the_docs_page_lists_every_operation_and_schema(
        document: dict[str, typing.Any]) -> None:
    page = docs_html(document)
    for path, ops in document["paths"].items():
        for method in ops:
            assert f"{method.upper()}</span><code>{path}</code>" in page.replace("&#x27;", "'")
    for name in document["components"]["schemas"]:
        assert f"<summary>{name}</summary>" in page
    assert "<script" not in page and "http" not in page.split("/openapi.json")[0]


def test_routes_behind_keys_carry_the_security_and_access_control_answers(
        document: dict[str, typing.Any]) -> None:
    from serving.auth import needs_admin, needs_key

    assert set(document["components"]["securitySchemes"]) == {"bearer", "cookie"}
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if needs_key(path):
                assert op["security"] and {"401", "429"} <= set(op["responses"]), path
                assert ("403" in op["responses"]) == needs_admin(method.upper(), path), path
            else:
                assert "security" not in op and "401" not in op["responses"], path
    assert "security" in document["paths"]["/v1/homepage/{profile_id}"]["get"]
    assert "security" not in document["paths"]["/metrics"]["get"]
