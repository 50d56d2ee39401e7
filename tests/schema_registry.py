"""A minimal schema registry for tests: the REST subset of Confluent's Schema Registry that
``confluent_kafka.schema_registry`` uses, over real HTTP on the loopback interface.

No registry server installs from PyPI or Debian here (Karapace is not on PyPI; Confluent's
and Apicurio's are JVM images), so the framing tests talk to this one. It keeps the
semantics the client and the codec rely on: schema ids are global and the same schema text
gets the same id under every subject; registering a schema a subject already holds returns
its id; a subject's compatibility level (``PUT /config/{subject}``) is enforced on register
with :func:`topics.compat.check_pair` (backward / forward / full, against the latest version
or, ``*_TRANSITIVE``, every version) and a refusal is HTTP 409 with the reason.

Endpoints: ``POST /subjects/{s}/versions``, ``POST /subjects/{s}`` (lookup),
``GET /subjects``, ``GET /subjects/{s}/versions``, ``GET /subjects/{s}/versions/{v|latest}``,
``GET /schemas/ids/{id}``, ``GET|PUT /config/{s}``.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from fastavro.schema import parse_schema

from topics.compat import check_pair

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryState:
    """Subjects, versions, ids and compatibility levels (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: dict[str, int] = {}          # canonical schema text -> id
        self.schemas: dict[int, str] = {}      # id -> schema text as registered first
        self.subjects: dict[str, list[int]] = {}
        self.config: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []

    def register(self, subject: str, text: str) -> tuple[int, dict[str, Any] | None]:
        key = json.dumps(json.loads(text), sort_keys=True)
        with self.lock:
            versions = self.subjects.setdefault(subject, [])
            known = self.ids.get(key)
            if known is not None and known in versions:
                return known, None
            problem = self._incompatible(subject, versions, text)
            if problem:
                return 0, {"error_code": 409, "message": problem}
            schema_id = known or len(self.ids) + 1
            self.ids[key] = schema_id
            self.schemas.setdefault(schema_id, text)
            versions.append(schema_id)
            return schema_id, None

    def _incompatible(self, subject: str, versions: list[int], text: str) -> str:
        level = self.config.get(subject, "BACKWARD")
        if level == "NONE" or not versions:
            return ""
        against = versions if level.endswith("_TRANSITIVE") else versions[-1:]
        wanted = {"BACKWARD": {"backward"}, "FORWARD": {"forward"},
                  "FULL": {"backward", "forward"}}[level.removesuffix("_TRANSITIVE")]
        new = parse_schema(json.loads(text))
        for i in against:
            old = parse_schema(json.loads(self.schemas[i]))
            problems = [p for p in check_pair(old, new) if p.direction in wanted]
            if problems:
                return f"Schema being registered is incompatible ({level}): {problems[0]}"
        return ""


def _handler(state: RegistryState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass  # quiet: the test's output is pytest's, not one line per request

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def _route(self, method: str) -> None:
            path = urlparse(self.path).path
            state.requests.append((method, unquote(path)))
            for pattern, fn in ROUTES:
                m = re.fullmatch(pattern, path)
                if m and fn.__name__.startswith(method.lower()):
                    status, body = fn(self, *(unquote(g) for g in m.groups()))
                    self._send(status, body)
                    return
            self._send(404, {"error_code": 404, "message": f"no route {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        # -- routes ---------------------------------------------------------------------
        def post_versions(self, subject: str) -> tuple[int, Any]:
            schema_id, error = state.register(subject, self._body()["schema"])
            return (409, error) if error else (200, {"id": schema_id})

        def post_lookup(self, subject: str) -> tuple[int, Any]:
            key = json.dumps(json.loads(self._body()["schema"]), sort_keys=True)
            schema_id = state.ids.get(key)
            versions = state.subjects.get(subject, [])
            if schema_id not in versions:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, self._version_body(subject, versions.index(schema_id) + 1)

        def _version_body(self, subject: str, version: int) -> dict[str, Any]:
            schema_id = state.subjects[subject][version - 1]
            return {"subject": subject, "version": version, "id": schema_id,
                    "schema": state.schemas[schema_id]}

        def get_subjects(self) -> tuple[int, Any]:
            return 200, sorted(state.subjects)

        def get_versions(self, subject: str) -> tuple[int, Any]:
            if not state.subjects.get(subject):
                return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
            return 200, list(range(1, len(state.subjects[subject]) + 1))

        def get_version(self, subject: str, version: str) -> tuple[int, Any]:
            versions = state.subjects.get(subject) or []
            n = len(versions) if version == "latest" else int(version)
            if not 1 <= n <= len(versions):
                return 404, {"error_code": 40402, "message": "Version not found."}
            return 200, self._version_body(subject, n)

        def get_schema(self, schema_id: str) -> tuple[int, Any]:
            text = state.schemas.get(int(schema_id))
            if text is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, {"schema": text}

        def get_config(self, subject: str) -> tuple[int, Any]:
            return 200, {"compatibilityLevel": state.config.get(subject, "BACKWARD")}

        def put_config(self, subject: str) -> tuple[int, Any]:
            level = self._body()["compatibility"]
            state.config[subject] = level
            return 200, {"compatibility": level}

    ROUTES = [
        (r"/subjects/([^/]+)/versions", Handler.post_versions),
        (r"/subjects/([^/]+)", Handler.post_lookup),
        (r"/subjects", Handler.get_subjects),
        (r"/subjects/([^/]+)/versions", Handler.get_versions),
        (r"/subjects/([^/]+)/versions/([^/]+)", Handler.get_version),
        (r"/schemas/ids/(\d+)", Handler.get_schema),
        (r"/config/([^/]+)", Handler.get_config),
        (r"/config/([^/]+)", Handler.put_config),
    ]
    return Handler


class SchemaRegistryServer:
    """The registry on ``127.0.0.1:<free port>`` in a thread; a context manager."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> SchemaRegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
