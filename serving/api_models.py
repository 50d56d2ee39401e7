"""The server's request and response bodies as pydantic models: the source of the OpenAPI
document's schemas (:mod:`serving.openapi`). The handlers build plain dicts (orjson, no
model on the hot path); the schemathesis test checks that what they answer fits these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serving.validation import (
    DEVICE_MAX_LEN,
    LIMIT_MAX,
    QUERY_MAX_LEN,
    RERANK_MAX_TITLES,
    TITLE_ID_MAX_LEN,
)

#: ``serving.validation.PROFILE_ID_RE`` and ``COUNTRY_RE`` as JSON Schema patterns.
PROFILE_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"


class PageItem(BaseModel):
    """One title on a page (``online_models.page.PageItem``, the one definition of the
    shape; a unit test keeps the two in step)."""

    model_config = ConfigDict(extra="allow")
    title_id: str
    name: str
    artwork_id: str
    artwork_url: str
    score: float
    maturity_rating: str
    genres: list[str]
    availability: list[str]
    resume_position_s: float | None = Field(None, description="Continue Watching: where "
                                                              "playback resumes, in seconds")
    propensity: float | None = Field(None, description="The artwork's logging propensity")
    policy: str | None = Field(None, description="The artwork policy that decided")
    policy_version: int | None = None


class PageRow(BaseModel):
    """One row of a page (``online_models.page.PageRow``)."""

    model_config = ConfigDict(extra="allow")
    row_id: str
    kind: str
    title: str
    explanation: str
    utility: float
    adjusted_utility: float
    items: list[PageItem]


class ResultItem(PageItem):
    """A title in a similar-titles, re-rank or search answer: a page item plus where it came
    from (``source``: ``stored`` or ``content``), its relevance and the search's reason."""

    source: str | None = None
    relevance: float | None = None
    reason: str | None = None


class ErrorBody(BaseModel):
    """Every error: what was wrong; ``field`` names the offending request field (400)."""

    model_config = ConfigDict(extra="allow")
    error: str
    field: str | None = None


class ServedPage(BaseModel):
    """``GET /v1/homepage/{profile_id}``: the rows to show, after the guardrails, with the
    artwork decided for the member and the request's identifiers."""

    model_config = ConfigDict(extra="allow")
    profile_id: str | None
    personalized: bool
    country: str
    kids: bool
    max_rating: str
    generated_at_ms: int | None = Field(description="null for an empty page")
    as_of_event_ts_ms: int | None = Field(description="0 for a default page, null for an "
                                                      "empty one")
    rows: list[PageRow]
    variant: str
    request_id: str
    served_at_ms: int
    source: str = Field(description="personal, default-<country> (ALL: every country), "
                                    "latest or empty", pattern=r"^(personal|latest|empty|"
                                                               r"default-[A-Z]{2,3})$")


class SimilarTitles(BaseModel):
    """``GET /v1/titles/{title_id}/similar``."""

    title_id: str
    profile_id: str | None
    country: str | None
    items: list[ResultItem]


class RerankRequest(BaseModel):
    """``POST /v1/rerank``: the titles to order for the member."""

    model_config = ConfigDict(extra="forbid")
    profile_id: str = Field(pattern=PROFILE_ID_PATTERN)
    title_ids: list[Annotated[str, StringConstraints(min_length=1,
                                                     max_length=TITLE_ID_MAX_LEN)]] = Field(
        min_length=1, max_length=RERANK_MAX_TITLES)
    country: str | None = Field(None, pattern=COUNTRY_PATTERN)
    mode: Literal["explore", "fetch"] | None = None


class Reranked(BaseModel):
    """``POST /v1/rerank``: the known, allowed titles in order; the others named."""

    profile_id: str
    country: str | None
    mode: Literal["explore", "fetch"] | None
    personalized: bool
    items: list[ResultItem]
    unknown: list[str]
    removed: list[str]


class SearchResults(BaseModel):
    """``GET /v1/search``."""

    query: str
    mode: Literal["explore", "fetch"]
    profile_id: str | None
    country: str | None
    items: list[ResultItem]


class Health(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """``GET /readyz`` (200 and 503): each dependency's state, the impression counters."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ready", "unavailable"]
    store: str
    broker: str
    failed: list[str] | None = None
    reason: str | None = None
    impressions_delivered: int
    impressions_failed: int
    impressions_in_flight: int
    pages_queued: int


class UiConfig(BaseModel):
    """``GET /ui/config``."""

    artwork_base_url: str
    placeholder_art: str


class UiProfiles(BaseModel):
    """``GET /ui/profiles``: profile ids with a page; ``truncated`` when the scan stopped."""

    profiles: list[str]
    truncated: bool


class UiOps(BaseModel):
    """``GET /ui/ops``: the operators' view's data."""

    model_config = ConfigDict(extra="allow")
    at_ms: int
    counters: dict[str, Any]
    feed: dict[str, Any]
    streams: dict[str, Any]
    notes: dict[str, str]


#: Bounds shared by the parameters of several operations.
LIMITS = {"device": DEVICE_MAX_LEN, "title_id": TITLE_ID_MAX_LEN, "q": QUERY_MAX_LEN,
          "limit": LIMIT_MAX}
