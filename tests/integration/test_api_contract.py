"""The API contract, property-based: schemathesis generates requests for every operation of
the server's own ``/openapi.json`` and sends them to the real server (two processes) on the
real broker and Redis, with a worker that has loaded a catalog and materialized pages. No
request may get a 5xx, and every response must be one the document lists, with its media
type and a body that fits its schema."""

from __future__ import annotations

import html
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import schemathesis
import urllib3
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from homestream.player.producer import PlayerProducer
from homestream.player.simulator import publish_catalog
from homestream.settings import Settings
from homestream.stack.local import ModuleProcess, free_port, wait_for_port
from serving.openapi import OPERATIONS
from tests.conftest import Infra
from tests.integration.helpers import WorkerProcess, make_titles, page, wait_for_catalog, wait_until
from topics.models import Play
from topics.registry import ensure_topics

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
#: Examples per operation and mode (~18 operations x 2 modes in well under a minute).
EXAMPLES = 15
#: An endless stream: its responses never end, so it is left to the web app's own test.
STREAM = "/ui/stream/{profile_id}"


@pytest.fixture(scope="module")
def server(infra: Infra) -> Iterator[str]:
    """A worker and a two-process server on names of their own; the server's base URL."""
    tag = uuid.uuid4().hex[:8]
    cfg = Settings(bootstrap_servers=infra.bootstrap_servers, redis_url=infra.redis_url,
                   topic_prefix=f"t{tag}.", key_prefix=f"t{tag}:", app_id=f"test-{tag}",
                   partitions=2, worker_data_dir=f"/tmp/homestream-test-{tag}",
                   http_port=free_port(), http_workers=2)
    ensure_topics(cfg)
    publish_catalog(cfg, make_titles(30))
    worker = WorkerProcess(cfg)
    proc = ModuleProcess("serving", cfg.to_env(), log_prefix="server-")
    try:
        wait_for_catalog(cfg, 30, timeout_s=60)
        with PlayerProducer(cfg) as producer:
            producer.send(Play(event_id=uuid.uuid4().hex, profile_id="ana",
                               event_ts_ms=int(time.time() * 1000), title_id="t1",
                               action="progress", position_s=300.0, duration_s=1200.0,
                               country="US", device="tv"))
        wait_until(lambda: page(cfg, "ana"), 60, what="ana's page")
        wait_for_port(cfg.http_port, 30, proc=proc.proc)
        yield f"http://127.0.0.1:{cfg.http_port}"
    finally:
        proc.stop()
        worker.stop()


@pytest.fixture(scope="module")
def api_schema(server: str) -> BaseSchema:
    """The server's document, as it serves it."""
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


def cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with requests that fit the document; those with query parameters or
    a body also with requests that do not (the others have nothing to get wrong)."""
    out = []
    for (method, path), op in sorted(OPERATIONS.items()):
        if path == STREAM:
            continue
        out.append((method, path, GenerationMode.POSITIVE))
        if op.body is not None or any(p["in"] == "query" for p in op.params):
            out.append((method, path, GenerationMode.NEGATIVE))
    return out


@pytest.mark.parametrize(("method", "path", "mode"), cases())
def test_every_operation_conforms_and_never_fails(
        api_schema: BaseSchema, method: str, path: str, mode: GenerationMode) -> None:
    """No 5xx; status, media type and body as documented; invalid requests rejected."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=10)

    check()


def test_the_served_document_lists_every_operation(server: str) -> None:
    """``/openapi.json`` as served lists every operation of :data:`OPERATIONS` (the server
    builds it from its router at start-up and fails on a route without an entry)."""
    doc = orjson.loads(urllib3.request("GET", f"{server}/openapi.json").data)
    served = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == set(OPERATIONS)
    docs = urllib3.request("GET", f"{server}/docs")
    assert docs.status == 200 and docs.headers["Content-Type"].startswith("text/html")
    assert all(f"<code>{html.escape(path)}</code>" in docs.data.decode() for _, path in served)
