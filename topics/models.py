"""Typed event and catalog models; each matches the current version of one schema in
``topics/schemas`` (``<Name>/v<N>.avsc``).

The models are the validation layer: the producer client validates before sending and the
worker validates after decoding, so a bad field is named the same way on both sides.

>>> Play(event_id="e1", profile_id="p1", event_ts_ms=1_700_000_000_000, title_id="t1",
...      action="progress", position_s=600.0, duration_s=1200.0).fraction
0.5
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: Maturity ladder, least to most restricted audience. A profile allowed up to ``PG`` sees
#: ``G`` and ``PG`` titles only.
MATURITY_LEVELS: tuple[str, ...] = ("G", "PG", "PG-13", "R", "NC-17")

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=False)]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
# Event time must be a plausible epoch in milliseconds (2001-09-09 .. 2286-11-20); seconds
# sent by mistake fall below the floor and are rejected with this field's name.
EventTs = Annotated[int, Field(ge=1_000_000_000_000, le=9_999_999_999_999)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_name: ClassVar[str]


class Event(_Model):
    """Fields every player event has."""

    event_id: Id
    profile_id: Id
    event_ts_ms: EventTs


class Play(Event):
    """Playback start, progress heartbeat or stop; ``position_s`` is the playhead."""

    schema_name: ClassVar[str] = "homestream.Play"
    title_id: Id
    action: Literal["start", "progress", "stop"]
    position_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0, le=100_000.0)
    device: str = "unknown"
    country: Country = "ZZ"
    session_id: str | None = None
    app_version: str = Field("", max_length=64)

    @model_validator(mode="after")
    def _position_within_duration(self) -> Play:
        if self.position_s > self.duration_s * 1.01:
            raise ValueError(
                f"position_s ({self.position_s}) is beyond duration_s ({self.duration_s})"
            )
        return self

    @property
    def fraction(self) -> float:
        """Share of the title watched at this playhead (0..1)."""
        return min(1.0, self.position_s / self.duration_s)


#: ``Impression.policy`` of an artwork fixed when the page was materialized (no bandit chose it).
MATERIALIZED_POLICY = "materialized"


class Impression(Event):
    """One title shown on a page, with the artwork chosen and the chooser's propensity."""

    schema_name: ClassVar[str] = "homestream.Impression"
    request_id: Id
    title_id: Id
    row_id: Id
    row: int = Field(ge=0)
    column: int = Field(ge=0)
    artwork_id: str
    propensity: float = Field(gt=0.0, le=1.0)
    policy: str
    policy_version: int = Field(0, ge=0)
    variant: str = "control"
    device: str = "unknown"
    country: Country = "ZZ"
    context_json: str = Field("", max_length=4000)


class Scroll(Event):
    """The member scrolled to ``row`` (and ``column`` within it)."""

    schema_name: ClassVar[str] = "homestream.Scroll"
    request_id: str | None = None
    row: int = Field(ge=0)
    column: int = Field(0, ge=0)
    device: str = "unknown"


class Click(Event):
    """The member selected a title (opened its details)."""

    schema_name: ClassVar[str] = "homestream.Click"
    title_id: Id
    request_id: str | None = None
    row_id: str | None = None
    device: str = "unknown"


class Feedback(Event):
    """Explicit feedback: thumbs up / down, or ``stars`` from 1 to 5."""

    schema_name: ClassVar[str] = "homestream.Feedback"
    title_id: Id
    kind: Literal["thumbs_up", "thumbs_down", "stars"]
    stars: int | None = Field(None, ge=1, le=5)

    @model_validator(mode="after")
    def _stars_iff_kind_stars(self) -> Feedback:
        if (self.kind == "stars") != (self.stars is not None):
            raise ValueError("stars must be given exactly when kind is 'stars'")
        return self


class Search(Event):
    """A search query typed by the member."""

    schema_name: ClassVar[str] = "homestream.Search"
    query: str = Field(min_length=1, max_length=500)
    device: str = "unknown"


class SessionStart(Event):
    """The player opened the app: the member is about to look at the home page, so the
    worker renders it now with the models and trends of the moment (a page written after
    the member's previous visit may be days old). Sent as a message of its own, never
    inside an ``EventBatch`` (whose union of events it is not part of)."""

    schema_name: ClassVar[str] = "homestream.SessionStart"
    device: str = "unknown"
    country: Country = "ZZ"
    app_version: str = Field("", max_length=64)


PlayerEvent = Play | Impression | Scroll | Click | Feedback | Search | SessionStart

#: Schema full name -> model, for every player event type.
EVENT_MODELS: dict[str, type[Event]] = {
    m.schema_name: m for m in (Play, Impression, Scroll, Click, Feedback, Search, SessionStart)
}
#: Event models sent only as a message of their own (not in ``EventBatch``'s union).
STANDALONE_EVENTS: frozenset[type[Event]] = frozenset({SessionStart})


def message_groups(events: list[Event]) -> list[list[Event]]:
    """One profile's events as the messages they go out in, order kept: runs of events
    that batch together, and each stand-alone event (``SessionStart``) alone.

    >>> ts = 1_700_000_000_000
    >>> evs = [Scroll(event_id="a", profile_id="p", event_ts_ms=ts, row=1),
    ...        SessionStart(event_id="s", profile_id="p", event_ts_ms=ts + 1),
    ...        Scroll(event_id="b", profile_id="p", event_ts_ms=ts + 2, row=0),
    ...        Scroll(event_id="c", profile_id="p", event_ts_ms=ts + 3, row=2)]
    >>> [[e.event_id for e in g] for g in message_groups(evs)]
    [['a'], ['s'], ['b', 'c']]
    """
    groups: list[list[Event]] = []
    run: list[Event] = []
    for ev in events:
        if type(ev) in STANDALONE_EVENTS:
            if run:
                groups.append(run)
                run = []
            groups.append([ev])
        else:
            run.append(ev)
    if run:
        groups.append(run)
    return groups


class Artwork(_Model):
    """One artwork candidate of a title; ``tags`` say what it highlights."""

    artwork_id: Id
    url: str
    tags: list[str] = Field(default_factory=list)


class Title(_Model):
    """A catalog record, keyed by ``title_id`` on the compacted catalog topic."""

    schema_name: ClassVar[str] = "homestream.Title"
    title_id: Id
    name: str = Field(min_length=1)
    genres: list[str] = Field(default_factory=list)
    maturity_rating: Literal["G", "PG", "PG-13", "R", "NC-17"]
    release_date: dt.date
    duration_s: float = Field(gt=0.0)
    artwork: list[Artwork] = Field(min_length=1)
    availability: list[Country] = Field(default_factory=list)
    cast: list[str] = Field(default_factory=list)
    updated_ts_ms: int = Field(0, ge=0)

    def available_in(self, country: str) -> bool:
        """True when the title may be shown in ``country`` (empty availability = everywhere)."""
        return not self.availability or country in self.availability

    def allowed_for(self, max_rating: str) -> bool:
        """True when the title's rating is at or below ``max_rating`` on the ladder."""
        return MATURITY_LEVELS.index(self.maturity_rating) <= MATURITY_LEVELS.index(max_rating)


class DeadLetter(_Model):
    """An input the worker could not use: where it came from, why, and its original bytes."""

    schema_name: ClassVar[str] = "homestream.DeadLetter"
    source_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    reason: str
    error_type: str
    event_id: str | None = None
    failed_at_ms: int


class Profile(_Model):
    """Account settings of a profile: kids profiles and the member's own rating limit."""

    schema_name: ClassVar[str] = "homestream.Profile"
    profile_id: Id
    kids: bool = False
    max_maturity_rating: Literal["G", "PG", "PG-13", "R", "NC-17"] | None = None
    country: Country | None = None
    updated_ts_ms: int = Field(0, ge=0)
