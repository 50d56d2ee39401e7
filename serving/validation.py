"""Input validation: every request field checked once, a 400 naming the field otherwise."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from serving.http import InvalidInput

PROFILE_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
COUNTRY_RE = re.compile(r"[A-Z]{2}")
DEVICE_MAX_LEN = 64
TITLE_ID_MAX_LEN = 128
QUERY_MAX_LEN = 200
LIMIT_DEFAULT, LIMIT_MAX = 20, 100
RERANK_MAX_TITLES = 500
RERANK_FIELDS = ("profile_id", "title_ids", "country", "mode")
PROFILE_ID_RULE = "must be 1-128 characters of A-Z a-z 0-9 _ . : @ -"


def check_profile_id(value: Any) -> str:
    if not isinstance(value, str) or not PROFILE_ID_RE.fullmatch(value):
        raise InvalidInput("profile_id", PROFILE_ID_RULE)
    return value


def check_country(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value):
        shown = value[:16] if isinstance(value, str) else value
        raise InvalidInput("country", "must be two uppercase letters (ISO 3166-1 alpha-2), "
                                      f"got {shown!r}")
    return value


def query_profile_id(request: web.Request) -> str | None:
    value = request.query.get("profile_id")
    return None if value is None else check_profile_id(value)


def query_limit(request: web.Request, default: int = LIMIT_DEFAULT,
                maximum: int = LIMIT_MAX) -> int:
    """The ``limit`` query parameter: ``default`` when absent, else an integer from 1 to
    ``maximum`` (a 400 naming the field otherwise)."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise InvalidInput("limit", f"must be an integer from 1 to {maximum}, "
                                    f"got {raw[:16]!r}")
    return limit




async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def check_title_ids(value: Any) -> list[str]:
    if value is None:
        raise InvalidInput("title_ids", "required")
    if not isinstance(value, list) or not 1 <= len(value) <= RERANK_MAX_TITLES:
        raise InvalidInput("title_ids", f"must be a list of 1 to {RERANK_MAX_TITLES} "
                                        "title ids")
    for i, tid in enumerate(value):
        if not isinstance(tid, str) or not 1 <= len(tid) <= TITLE_ID_MAX_LEN:
            raise InvalidInput("title_ids", f"item {i} must be a string of 1-"
                                            f"{TITLE_ID_MAX_LEN} characters")
    return list(dict.fromkeys(value))  # first occurrence wins




def check_device(value: str | None) -> str | None:
    if value is not None and len(value) > DEVICE_MAX_LEN:
        raise InvalidInput("device", f"at most {DEVICE_MAX_LEN} characters")
    return value
