"""Access control for the API: hashed keys with read and admin roles, per-key rate limits.

With ``HOMESTREAM_API_KEYS`` set, every ``/v1`` route and the web app's data routes
(``/ui/...``) need a key, sent as ``Authorization: Bearer <key>`` or, for the browser, in the
``homestream_key`` cookie (the web app asks for the key once and stores it there, because an
``EventSource`` cannot send headers). Admin routes need an admin key. Keys are configured
as their SHA-256 digests and compared with :func:`hmac.compare_digest` against every
configured digest, so neither the keys nor the timing of a comparison give them away.
Health, readiness, metrics, the API description and the web app's static files stay open.
A key with the ``events`` role (a player app's) may only send events (``POST /v1/events``).
Without keys the API is open, as the local demo wants, and the server logs a warning.

Each key gets a token bucket per server process: ``HOMESTREAM_API_RATE_PER_S`` requests per
second with bursts of ``HOMESTREAM_API_RATE_BURST``; past it, 429 with ``Retry-After``.

>>> b = TokenBucket(rate_per_s=2.0, burst=1)
>>> b.take(now=0.0), b.take(now=0.1), round(b.retry_after(now=0.1), 2)
(True, False, 0.4)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from homestream.settings import API_ROLES, Settings
from serving.http import error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The cookie the web app keeps the key in.
KEY_COOKIE = "homestream_key"
#: Paths that need no key (exact), and prefixes of paths that need none.
OPEN_PATHS = frozenset({"/", "/ops", "/healthz", "/readyz", "/metrics", "/openapi.json",
                        "/docs"})
OPEN_PREFIXES = ("/static/", "/art/")
#: (method, path prefix) of the routes only admin keys may call.
ADMIN_ROUTES = (("DELETE", "/v1/profiles/"),)
#: (method, path) of the only routes ``events`` keys may call.
EVENTS_ROUTES = (("POST", "/v1/events"),)


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of a key, as ``HOMESTREAM_API_KEYS`` stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


#: Rounding allowed when counting whole tokens (elapsed times are differences of large clocks).
_ROUNDING = 1e-9


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved; one per request."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        # a clock read before this bucket's last one adds nothing (never takes tokens away)
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def take(self, now: float | None = None) -> bool:
        """Spend a token if there is one (within float rounding of a whole one)."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0 - _ROUNDING:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def retry_after(self, now: float | None = None) -> float:
        """Seconds until the next token."""
        self._refill(time.monotonic() if now is None else now)
        return max(0.0, (1.0 - self.tokens) / self.rate)


class KeyRing:
    """The configured key digests with their roles, and each key's rate bucket."""

    def __init__(self, hashes: tuple[tuple[str, str], ...], rate_per_s: float,
                 burst: int) -> None:
        self.hashes = hashes
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}

    def role_of(self, key: str) -> str | None:
        """The role of ``key`` (``None``: not a configured key). Every configured digest is
        compared, in constant time each, whatever matched before."""
        digest = key_digest(key).encode()
        role = None
        for r, d in self.hashes:
            if hmac.compare_digest(digest, d.encode()) and (
                    role is None or API_ROLES.index(r) > API_ROLES.index(role)):
                role = r
        return role

    def bucket(self, key: str) -> TokenBucket | None:
        """The key's bucket (``None`` when requests are not limited)."""
        if self.rate_per_s <= 0:
            return None
        digest = key_digest(key)
        b = self.buckets.get(digest)
        if b is None:
            b = self.buckets[digest] = TokenBucket(self.rate_per_s, self.burst)
        return b


def needs_key(path: str) -> bool:
    """Whether a request for ``path`` needs a key (when keys are configured)."""
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def needs_admin(method: str, path: str) -> bool:
    """Whether the route is an admin route."""
    return any(method == m and path.startswith(p) for m, p in ADMIN_ROUTES)


def role_needed(method: str, path: str) -> str:
    """The weakest role that may call the route."""
    if needs_admin(method, path):
        return "admin"
    return "events" if (method, path) in EVENTS_ROUTES else "read"


def presented_key(request: web.Request) -> str | None:
    """The key of the request: ``Authorization: Bearer`` first, else the cookie."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return urllib.parse.unquote(request.cookies.get(KEY_COOKIE, "")) or None


def _unauthorized(message: str) -> web.Response:
    resp = error_response(401, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="homestream"'
    return resp


def auth_middleware(settings: Settings) -> Callable[[web.Request, Handler],
                                                     Awaitable[web.StreamResponse]]:
    """The aiohttp middleware enforcing ``settings``' keys and rate limits (a pass-through,
    with a warning logged once, when no keys are configured)."""
    ring = KeyRing(settings.api_key_hashes, settings.api_rate_per_s, settings.api_rate_burst)
    if not ring.hashes:
        log.warning("HOMESTREAM_API_KEYS is not set: the API is open to anyone who can reach "
                    "this server (fine for the local demo, not for production)")

    @web.middleware
    async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not ring.hashes or not needs_key(request.path):
            return await handler(request)
        key = presented_key(request)
        if key is None:
            return _unauthorized("missing API key: send the header 'Authorization: Bearer "
                                 f"<key>' (or the {KEY_COOKIE} cookie)")
        role = ring.role_of(key)
        if role is None:
            return _unauthorized("unknown API key")
        needed = role_needed(request.method, request.path)
        if API_ROLES.index(role) < API_ROLES.index(needed):
            roles = " or ".join(API_ROLES[API_ROLES.index(needed):])
            return error_response(403, f"{request.method} {request.path} needs {needed} "
                                       f"access ({roles} key); this key's role is {role}")
        bucket = ring.bucket(key)
        if bucket is not None and not bucket.take():
            wait = bucket.retry_after()
            resp = error_response(429, f"rate limit of this key exceeded "
                                       f"({ring.rate_per_s:g} requests/s, bursts of "
                                       f"{ring.burst}); retry after {wait:.2f}s")
            resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return resp
        return await handler(request)

    return check_key
