"""Per-profile sequential features as pure state transitions: ``apply_event(state, event)``.

The module is longer than ~500 lines because every transition of one member's state (plays,
feedback, impressions, artwork decisions, rows shown, sessions) sits next to the state it
changes and they share private helpers; the named entries and their stored format are in
:mod:`features.state_format`, row ids in :mod:`features.rows`.

State is plain data (JSON round-trippable) so any store can keep it. Every transition is
idempotent by event id (a bounded window of applied ids travels with the state) and uses
event time only: a late heartbeat never rewinds a newer playhead.

>>> from topics.models import Play
>>> st = ProfileState("p1")
>>> ev = Play(event_id="e1", profile_id="p1", event_ts_ms=1_700_000_000_000, title_id="t1",
...           action="progress", position_s=700.0, duration_s=1000.0, country="US")
>>> fx = apply_event(st, ev, lambda t: ["Horror"], FeatureParams())
>>> fx.labels, st.continue_watching()
([('t1', 1.0)], ['t1'])
>>> apply_event(st, ev, lambda t: ["Horror"], FeatureParams()).duplicate
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict

from features.artwork_reward import is_quality_play
from features.feedback import (
    AFFINITY_WEIGHT,
    ENGAGED_CLICK,
    ENGAGED_NONE,
    ENGAGED_WATCH,
    LABEL_TARGET,
    derive_play_level,
    explicit_label,
    is_finished,
)
from features.rows import RowKind, row_kind_of
from features.state_format import (
    LEGACY_FORMAT,
    STATE_FORMAT,
    PendingArtwork,
    Playhead,
    ShownRow,
    as_arrays,
    check_format,
    entries_of,
    legacy_pending,
)
from topics.models import (
    MATERIALIZED_POLICY,
    Click,
    Event,
    Feedback,
    Impression,
    Play,
    Scroll,
    Search,
    SessionStart,
)

GenresOf = Callable[[str], Sequence[str]]


class ProfileMeta(BaseModel):
    """A profile's account settings (from the profiles topic): kids profile, own rating
    limit, home country."""

    model_config = ConfigDict(frozen=True)

    kids: bool = False
    max_rating: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class FeatureParams:
    """Settings of the feature transitions (taken from :class:`settings.Settings`)."""

    dedupe_window: int = 512
    recent_titles: int = 50
    affinity_half_life_s: float = 14 * 24 * 3600.0
    #: A play this long (event time) after an artwork impression can reward it.
    reward_window_s: float = 3600.0
    #: Share of the title a play must reach to count as a quality play.
    quality_fraction: float = 0.3
    #: A first play this long (event time) after a title's impression credits its row kind.
    row_attribution_window_s: float = 86400.0
    #: Settle a decision with a quality play when its reward window closes (with the zeros)
    #: instead of at the play, so both outcomes reach the policy with the same delay.
    delayed_positives: bool = False
    #: Most titles each per-title history map of a member keeps (playheads, finished,
    #: engagement, impressions, explicit feedback, re-watches); the oldest go first.
    member_titles_max: int = 500


class Effects:
    """What applying one event asks the rest of the pipeline to do (one is made for every
    event: a plain class with slots, no dataclass machinery)."""

    __slots__ = ("art_rewards", "duplicate", "labels", "page_changed", "plays",
                 "row_exposures", "row_takes", "watched")

    def __init__(self) -> None:
        self.duplicate = False
        self.page_changed = False
        #: ``(title_id, target)`` training labels for the profile-title model.
        self.labels: list[tuple[str, float]] = []
        #: ``(country, title_id, event_ts_ms)`` play starts for trending counts.
        self.plays: list[tuple[str, str, int]] = []
        #: Titles that became watches (for item-to-item co-watch learning).
        self.watched: list[str] = []
        #: Settled artwork decisions: ``ArtworkReward`` records (reward 1 = a quality play
        #: in the window after the impression, 0 = none).
        self.art_rewards: list[ArtworkReward] = []
        #: Row kinds of the impressions applied (one entry per impression).
        self.row_exposures: list[str] = []
        #: Row kinds credited with a first play of a title shown in them (one per play).
        self.row_takes: list[str] = []


class ArtworkReward(NamedTuple):
    """The outcome of one artwork decision, for the bandit to learn from (a named tuple:
    one is made for every settled decision, about one in three events)."""

    title_id: str
    artwork_id: str
    reward: float
    propensity: float
    policy: str
    policy_version: int
    context_json: str
    impression_ts_ms: int


@dataclass
class ProfileState:
    """Everything the pipeline remembers about one profile."""

    profile_id: str
    n_events: int = 0
    last_event_ts_ms: int = 0
    country: str = "ZZ"
    device: str = "unknown"
    #: ``[title_id, ts_ms]``, most recent first, unique titles.
    recent: list[list[Any]] = field(default_factory=list)
    #: title_id -> the newest playhead.
    progress: dict[str, Playhead] = field(default_factory=dict)
    #: title_id -> ts_ms when the title was finished.
    finished: dict[str, int] = field(default_factory=dict)
    #: title_id -> engagement level (see :mod:`features.feedback`).
    engaged: dict[str, int] = field(default_factory=dict)
    #: genre -> ``[score, ts_ms]``, exponentially decayed in event time.
    affinity: dict[str, list[float]] = field(default_factory=dict)
    #: title_id -> times shown to this profile.
    impressions: dict[str, int] = field(default_factory=dict)
    #: title_id -> explicit feedback target in [0, 1].
    explicit: dict[str, float] = field(default_factory=dict)
    max_scroll_row: int = 0
    #: The last ``dedupe_window`` applied event ids, oldest first.
    seen_ids: list[str] = field(default_factory=list)
    #: cast member -> ``[score, ts_ms]``, decayed like genre affinity (top entries only).
    cast_affinity: dict[str, list[float]] = field(default_factory=dict)
    #: ``[count, mean, m2]`` of this profile's star ratings (Welford), for calibration.
    star_stats: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: The current session: ``{"start_ms", "last_ms", "events", "genres": {g: n},
    #: "max_row"}`` (event counts per genre; deepest row scrolled to). A session ends after
    #: ``SESSION_GAP_MS`` of event time without events.
    session: dict[str, Any] = field(default_factory=dict)
    #: device -> events seen from it (player events naming a device; not impressions).
    devices: dict[str, int] = field(default_factory=dict)
    #: UTC hour of day -> plays started then.
    play_hours: dict[str, int] = field(default_factory=dict)
    #: title_id -> times re-watched after finishing.
    rewatches: dict[str, int] = field(default_factory=dict)
    #: titles whose repeated impressions without a play already produced a weak negative.
    ignored: list[str] = field(default_factory=list)
    #: title_id -> the artwork decision waiting for its reward window to close (``won``: a
    #: quality play already seen, ``delayed_positives`` pays it at the close).
    pending_art: dict[str, PendingArtwork] = field(default_factory=dict)
    #: title_id -> ``[row_kind, ts_ms]`` of its latest impression not yet played.
    shown_rows: dict[str, ShownRow] = field(default_factory=dict)
    #: row kind -> ``[impressions, first plays credited]``: the member's own evidence of
    #: which kinds of rows they play from (:mod:`online_models.row_affinity`).
    row_counts: dict[str, list[int]] = field(default_factory=dict)
    #: At most the event time of the oldest decision in :attr:`pending_art` (``None``: not
    #: known): kept between events so a member's every event need not look for it among up
    #: to ``MAX_PENDING_ART``; derived, so not stored (a loaded state finds it again).
    _art_floor_ms: int | None = field(default=None, repr=False, compare=False)
    #: :attr:`seen_ids` as a set, for the duplicate check of every event (derived, so not
    #: stored; built again when its size no longer matches the list's).
    _seen_set: set[str] | None = field(default=None, repr=False, compare=False)

    # -- serialization --------------------------------------------------------------------
    def to_json(self) -> bytes:
        """The stored JSON (format :data:`~features.state_format.STATE_FORMAT`)."""
        data = dict(self.__dict__)
        del data["_art_floor_ms"], data["_seen_set"]  # derived, not stored
        data["format"] = STATE_FORMAT
        return orjson.dumps(data, default=as_arrays)

    @classmethod
    def from_json(cls, data: bytes | str) -> ProfileState:
        """A state from its stored JSON, in the current format or any older one."""
        raw = orjson.loads(data)
        version = check_format(raw.pop("format", LEGACY_FORMAT))
        raw["progress"] = entries_of(raw.get("progress", {}), Playhead)
        raw["shown_rows"] = entries_of(raw.get("shown_rows", {}), ShownRow)
        pending = raw.get("pending_art", {})
        raw["pending_art"] = (entries_of(pending, PendingArtwork) if version == STATE_FORMAT
                              else {t: legacy_pending(p) for t, p in pending.items()})
        return cls(**raw)

    # -- derived features -----------------------------------------------------------------
    def _seen(self) -> set[str]:
        """:attr:`seen_ids` as a set, in step with the list."""
        seen = self._seen_set
        if seen is None or len(seen) != len(self.seen_ids):
            seen = self._seen_set = set(self.seen_ids)
        return seen

    def has_seen(self, event_id: str) -> bool:
        """Whether ``event_id`` is among the last applied events' ids (:attr:`seen_ids`)."""
        return event_id in self._seen()

    def note_seen(self, event_id: str, window: int) -> None:
        """Remember ``event_id`` as applied, forgetting the oldest beyond ``window`` ids."""
        seen = self._seen()
        self.seen_ids.append(event_id)
        seen.add(event_id)
        if len(self.seen_ids) > window:
            cut = len(self.seen_ids) - window
            seen.difference_update(self.seen_ids[:cut])
            del self.seen_ids[:cut]

    def continue_watching(self) -> list[str]:
        """Titles started and not finished, most recently played first."""
        items = [(p.ts_ms, t) for t, p in self.progress.items() if t not in self.finished]
        return [t for _, t in sorted(items, reverse=True)]

    def resume_position(self, title_id: str) -> float | None:
        """Where to resume ``title_id``, in seconds, if it is in progress."""
        p = self.progress.get(title_id)
        return None if p is None or title_id in self.finished else p.position_s

    def genre_affinity(self, now_ms: int, half_life_s: float) -> dict[str, float]:
        """Genre scores decayed to ``now_ms``."""
        hl_ms = half_life_s * 1000.0
        return {
            g: s * 2.0 ** (-max(0.0, now_ms - ts) / hl_ms) for g, (s, ts) in self.affinity.items()
        }

    def recent_title_ids(self) -> list[str]:
        return [t for t, _ in self.recent]

    def watched_recently(self, limit: int = 20) -> list[str]:
        """Titles watched (past 50%), most recent first: the "Because You Watched" seeds."""
        return [t for t, _ in self.recent if self.engaged.get(t, 0) >= ENGAGED_WATCH][:limit]

    def impressions_without_play(self) -> dict[str, int]:
        """Times each title was shown and never played."""
        return {t: n for t, n in self.impressions.items() if t not in self.engaged}

    def cast_scores(self, now_ms: int, half_life_s: float) -> dict[str, float]:
        """Cast affinity decayed to ``now_ms``."""
        hl_ms = half_life_s * 1000.0
        return {c: v * 2.0 ** (-max(0.0, now_ms - ts) / hl_ms)
                for c, (v, ts) in self.cast_affinity.items()}

    def artwork_context(self, now_ms: int, half_life_s: float, top: int = 5) -> dict[str, float]:
        """Member features for the artwork bandit: the ``top`` genre affinities scaled by the
        strongest (so in [-1, 1]); the server adds country, device and hour."""
        aff = self.genre_affinity(now_ms, half_life_s)
        best = max((abs(v) for v in aff.values()), default=0.0) or 1.0
        ranked = sorted(aff.items(), key=lambda kv: -abs(kv[1]))[:top]
        return {f"genre:{g}": round(v / best, 4) for g, v in ranked}

    def oldest_pending_art_ms(self) -> int | None:
        """Event time of the oldest artwork decision still waiting for its reward, if any
        (its window closes ``reward_window_s`` later: the member's settling deadline)."""
        if not self.pending_art:
            return None
        return int(min(map(_TS_OF, self.pending_art.values())))

    def session_features(self, now_ms: int | None = None) -> dict[str, Any]:
        """The current session: events, duration (event time), genre counts, scroll depth.

        Parameters
        ----------
        now_ms
            Event time to judge the session at: a session idle for more than
            ``SESSION_GAP_MS`` by then is over and reported empty. ``None``: the newest.

        >>> st = ProfileState("p", session={"start_ms": 0, "last_ms": 90_000, "events": 3,
        ...                                 "genres": {"Drama": 2}, "max_row": 4})
        >>> st.session_features()
        {'events': 3, 'duration_s': 90.0, 'genres': {'Drama': 2}, 'max_row': 4}
        >>> st.session_features(now_ms=90_000 + SESSION_GAP_MS + 1)["events"]
        0
        """
        s = self.session
        if not s or (now_ms is not None and now_ms - s["last_ms"] > SESSION_GAP_MS):
            return {"events": 0, "duration_s": 0.0, "genres": {}, "max_row": 0}
        return {"events": s["events"], "duration_s": (s["last_ms"] - s["start_ms"]) / 1000.0,
                "genres": dict(s["genres"]), "max_row": s.get("max_row", 0)}

    def context(self, now_ms: int | None = None) -> dict[str, Any]:
        """Time-of-day, device, country and session context for models and bandits.

        ``device`` and ``country`` are those of the newest play, ``usual_device`` the device
        with most events, ``hour_utc`` the UTC hour of the newest event (of ``now_ms`` when
        given), ``usual_hour_utc`` the hour with most play starts (ties: the earliest hour),
        ``session_*`` :meth:`session_features` and ``max_scroll_row`` the lifetime depth.

        >>> ProfileState("p").context()["usual_device"] is None
        True
        """
        top_device = max(self.devices.items(), key=lambda kv: kv[1])[0] if self.devices else None
        top_hour = (min(self.play_hours.items(), key=lambda kv: (-kv[1], int(kv[0])))[0]
                    if self.play_hours else None)
        at = self.last_event_ts_ms if now_ms is None else now_ms
        sess = self.session_features(now_ms)
        return {
            "country": self.country, "device": self.device, "usual_device": top_device,
            "hour_utc": (at // 3_600_000) % 24,
            "usual_hour_utc": None if top_hour is None else int(top_hour),
            "session_events": sess["events"], "session_duration_s": sess["duration_s"],
            "session_genres": sess["genres"], "session_max_row": sess["max_row"],
            "max_scroll_row": self.max_scroll_row,
        }


def _bump_affinity(state: ProfileState, genres: Sequence[str], w: float, ts: int,
                   half_life_s: float) -> None:
    hl_ms = half_life_s * 1000.0
    for g in genres:
        score, at = state.affinity.get(g, (0.0, ts))
        if ts >= at:
            state.affinity[g] = [score * 2.0 ** (-(ts - at) / hl_ms) + w, ts]
        else:  # late event: add its weight decayed to the stored reference time
            state.affinity[g] = [score + w * 2.0 ** (-(at - ts) / hl_ms), at]


MAX_CAST = 100
SESSION_GAP_MS = 30 * 60 * 1000


def _bump_cast(state: ProfileState, cast: Sequence[str], w: float, ts: int,
               half_life_s: float) -> None:
    hl_ms = half_life_s * 1000.0
    for c in cast[:5]:  # leading cast only
        score, at = state.cast_affinity.get(c, (0.0, ts))
        if ts >= at:
            state.cast_affinity[c] = [score * 2.0 ** (-(ts - at) / hl_ms) + w, ts]
        else:
            state.cast_affinity[c] = [score + w * 2.0 ** (-(at - ts) / hl_ms), at]
    if len(state.cast_affinity) > MAX_CAST:
        # keep the strongest scores as of this event (stored scores have their own times)
        def strength(kv: tuple[str, list[float]]) -> float:
            v, at = kv[1]
            return abs(v) * 2.0 ** (-abs(ts - at) / hl_ms)

        keep = sorted(state.cast_affinity.items(), key=strength, reverse=True)[:MAX_CAST]
        state.cast_affinity = dict(keep)


def calibrated_stars(state: ProfileState, stars: int, prior_mean: float = 3.0,
                     prior_sd: float = 1.0, prior_n: float = 3.0) -> float:
    """A star rating as a target in [0, 1] relative to this member's own scale.

    The member's mean and spread are shrunk towards a prior (3 stars, sd 1) by ``prior_n``
    pseudo-ratings, so a first rating means what it says and a member who rates
    everything 5 ends up with their 5s near neutral.

    >>> s = ProfileState("p")
    >>> calibrated_stars(s, 5)
    1.0
    >>> for _ in range(20):
    ...     update_star_stats(s, 5)
    >>> round(calibrated_stars(s, 5), 2), calibrated_stars(s, 4)
    (0.68, 0.0)
    """
    n, mean, m2 = state.star_stats
    m = (n * mean + prior_n * prior_mean) / (n + prior_n)
    var = (m2 + prior_n * prior_sd**2) / (n + prior_n)
    z = (stars - m) / max(var**0.5, 0.25)
    return min(1.0, max(0.0, 0.5 + 0.25 * z))


def update_star_stats(state: ProfileState, stars: int) -> None:
    """Add one rating to the member's running mean and variance (Welford)."""
    n, mean, m2 = state.star_stats
    n += 1
    delta = stars - mean
    mean += delta / n
    m2 += delta * (stars - mean)
    state.star_stats = [n, mean, m2]


def _touch_session(state: ProfileState, ts: int, genres: Sequence[str]) -> bool:
    """Count an event at ``ts`` in the current session; returns whether it belongs to it.

    An event more than ``SESSION_GAP_MS`` after the session's last one starts a new session;
    a late one more than that before its start belonged to an earlier, finished session and
    leaves the current one alone.
    """
    sess = state.session
    if sess and ts < sess["start_ms"] - SESSION_GAP_MS:
        return False
    if not sess or ts - sess["last_ms"] > SESSION_GAP_MS:
        sess = state.session = {"start_ms": ts, "last_ms": ts, "events": 0, "genres": {},
                                "max_row": 0}
    sess["events"] += 1
    sess["last_ms"] = max(sess["last_ms"], ts)
    sess["start_ms"] = min(sess["start_ms"], ts)
    for g in genres:
        sess["genres"][g] = sess["genres"].get(g, 0) + 1
    return True


def _touch_recent(state: ProfileState, title_id: str, ts: int, limit: int) -> None:
    for i, (t, at) in enumerate(state.recent):
        if t == title_id:
            if ts <= at:
                return
            del state.recent[i]
            break
    state.recent.append([title_id, ts])
    state.recent.sort(key=lambda r: -r[1])
    del state.recent[limit:]


def apply_event(state: ProfileState, event: Event, genres_of: GenresOf,
                params: FeatureParams, cast_of: GenresOf | None = None) -> Effects:
    """Apply one event to ``state`` in place and return its :class:`Effects`.

    An event whose id was already applied changes nothing and returns ``duplicate=True``.
    ``genres_of`` and ``cast_of`` look titles up in the catalog.
    """
    fx = Effects()
    if state.has_seen(event.event_id):
        fx.duplicate = True
        return fx
    state.note_seen(event.event_id, params.dedupe_window)
    state.n_events += 1
    ts = event.event_ts_ms
    newest = ts >= state.last_event_ts_ms
    state.last_event_ts_ms = max(state.last_event_ts_ms, ts)
    fields = event.__dict__  # a pydantic model's values: no __getattr__ for a missing one
    device = fields.get("device")
    if device and device != "unknown" and not isinstance(event, Impression):
        state.devices[device] = state.devices.pop(device, 0) + 1  # newest last
        _bound(state.devices, MAX_DEVICES)
    title_id = fields.get("title_id")
    genres = genres_of(title_id) if title_id and not isinstance(event, Impression) else []
    if state.pending_art:
        _settle_expired(state, ts, params, fx)
    in_session = _touch_session(state, ts, genres)
    cast_of = cast_of or _no_cast
    hl = params.affinity_half_life_s

    if isinstance(event, Play):
        _apply_play(state, event, genres_of, cast_of, params, fx, newest)
    elif isinstance(event, Feedback):
        if event.kind == "stars" and event.stars is not None:
            y = calibrated_stars(state, event.stars)
            update_star_stats(state, event.stars)
        else:
            y = explicit_label(event.kind, event.stars)
        state.explicit[event.title_id] = y
        _bound(state.explicit, params.member_titles_max)
        fx.labels.append((event.title_id, y))
        _bump_affinity(state, genres, 2.0 * y - 1.0, ts, hl)
        _bump_cast(state, cast_of(event.title_id), 2.0 * y - 1.0, ts, hl)
        fx.page_changed = True
    elif isinstance(event, Impression):
        if event.policy != MATERIALIZED_POLICY:
            _pend_artwork(state, event, fx)
        _note_shown_row(state, event, fx)
        # re-inserted: the least recently shown title is the first to go beyond the bound
        n = state.impressions[event.title_id] = state.impressions.pop(event.title_id, 0) + 1
        _bound(state.impressions, params.member_titles_max)
        if (n >= IGNORED_AFTER_IMPRESSIONS and event.title_id not in state.engaged
                and event.title_id not in state.explicit and event.title_id not in state.ignored):
            # shown again and again, never played (nor rated): weak negative evidence, once
            state.ignored.append(event.title_id)
            del state.ignored[:-200]
            fx.labels.append((event.title_id, LABEL_TARGET["negative"]))
    elif isinstance(event, Click):
        _touch_recent(state, event.title_id, ts, params.recent_titles)
    elif isinstance(event, Scroll):
        state.max_scroll_row = max(state.max_scroll_row, event.row)
        if in_session:
            state.session["max_row"] = max(state.session.get("max_row", 0), event.row)
    elif isinstance(event, Search):
        pass  # counted in n_events and the session; query features come with search
    elif isinstance(event, SessionStart):
        fx.page_changed = True  # the member opened the app: their page is rendered now
    return fx


#: Most titles per profile remembered with the row they were last shown in.
MAX_SHOWN_ROWS = 300


def _note_shown_row(state: ProfileState, ev: Impression, fx: Effects) -> None:
    """Count the impression for its row kind and remember where the title was shown."""
    kind = row_kind_of(ev.row_id)
    fx.row_exposures.append(kind)
    state.row_counts.setdefault(kind, [0, 0])[0] += 1
    if ev.title_id in state.engaged and kind != RowKind.CONTINUE_WATCHING:
        return  # a first play can no longer follow (a resume from Continue Watching can)
    prev = state.shown_rows.get(ev.title_id)
    if prev is None or ev.event_ts_ms >= prev.ts_ms:
        state.shown_rows[ev.title_id] = ShownRow(kind, ev.event_ts_ms)
    if len(state.shown_rows) > MAX_SHOWN_ROWS:
        # the first title with the oldest time (what min with a key gives), the oldest time
        # found in one C-level pass
        first = min(map(_TS_OF, state.shown_rows.values()))
        del state.shown_rows[next(t for t, r in state.shown_rows.items() if r.ts_ms == first)]


def _credit_row(state: ProfileState, title_id: str, ts: int, params: FeatureParams,
                fx: Effects) -> None:
    """A first play of a title shown within the attribution window credits that row kind
    (and a resumed play, the Continue Watching row it was shown in)."""
    shown = state.shown_rows.pop(title_id, None)
    if shown is not None and 0 <= ts - shown.ts_ms <= params.row_attribution_window_s * 1000.0:
        fx.row_takes.append(shown.kind)
        state.row_counts.setdefault(shown.kind, [0, 0])[1] += 1


#: Impressions without a play after which a title counts as ignored (a weak negative).
IGNORED_AFTER_IMPRESSIONS = 3
#: A stop before this share of the title is an early abandon (weak negative).
ABANDON_FRACTION = 0.1


#: Most artwork decisions waiting for a reward per profile.
MAX_PENDING_ART = 300


def _no_cast(_: str) -> list[str]:
    return []


def _settle(state: ProfileState, title_id: str, fx: Effects) -> None:
    """Pay a pending decision: 1 if a quality play was recorded for it, else 0."""
    p = state.pending_art.pop(title_id)
    fx.art_rewards.append(ArtworkReward(title_id, p.artwork_id, 1.0 if p.won else 0.0,
                                        p.propensity, p.policy, p.policy_version,
                                        p.context_json, p.ts_ms))


#: A pending decision's ``ts_ms``.
_TS_OF = attrgetter("ts_ms")


def _settle_expired(state: ProfileState, now_ts: int, params: FeatureParams,
                    fx: Effects) -> None:
    """Decisions whose reward window closed (in event time) are paid: 0 without a quality
    play, 1 with one held back (``delayed_positives``)."""
    window_ms = params.reward_window_s * 1000.0
    # this runs for every event of a member with pending decisions: the state's lower bound
    # of the oldest decision's time (settling only raises the true one, _pend_artwork lowers
    # the bound) answers until its window closed; then one C-level pass finds the oldest
    floor = state._art_floor_ms
    if floor is not None and now_ts - floor <= window_ms:
        return
    oldest = state.oldest_pending_art_ms()
    if oldest is not None and now_ts - oldest > window_ms:
        for tid in [t for t, p in state.pending_art.items() if now_ts - p.ts_ms > window_ms]:
            _settle(state, tid, fx)
        oldest = state.oldest_pending_art_ms()
    state._art_floor_ms = oldest


def record_quality_play(pending: PendingArtwork, ts_ms: int, fraction: float,
                        params: FeatureParams) -> tuple[PendingArtwork, bool]:
    """Record a play at ``ts_ms`` reaching ``fraction`` of the title for the ``pending``
    decision; returns the decision as it now stands and whether to pay it now.

    A quality play (:func:`features.artwork_reward.is_quality_play`: far enough, inside the
    reward window) marks the decision as won (idempotent). It is paid at once, unless
    ``params.delayed_positives`` holds the reward back until the window closes, when zeros
    are paid too. Any other play changes nothing.

    >>> params = FeatureParams(reward_window_s=60.0, delayed_positives=True)
    >>> p = PendingArtwork(1_000, "t1-a", 0.5, "uniform", 0, "")
    >>> p, pay = record_quality_play(p, 2_000, 0.5, params); pay, p.won
    (False, True)
    >>> p, pay = record_quality_play(p, 3_000, 0.5, params); pay, p.won
    (False, True)
    >>> p = PendingArtwork(1_000, "t1-a", 0.5, "uniform", 0, "")
    >>> p, pay = record_quality_play(p, 2_000, 0.5, FeatureParams()); pay, p.won
    (True, True)
    >>> p = PendingArtwork(1_000, "t1-a", 0.5, "uniform", 0, "")
    >>> p, pay = record_quality_play(p, 999, 0.5, params); pay, p.won
    (False, False)
    >>> p, pay = record_quality_play(p, 2_000, 0.1, params); pay, p.won
    (False, False)
    """
    if not is_quality_play(pending.ts_ms, ts_ms, fraction,
                           reward_window_s=params.reward_window_s,
                           quality_fraction=params.quality_fraction):
        return pending, False
    return pending._replace(won=True), not params.delayed_positives


def settle_expired_art(state: ProfileState, watermark_ms: int,
                       params: FeatureParams) -> list[ArtworkReward]:
    """Settle every decision of ``state`` whose reward window closed before ``watermark_ms``
    (event time: the worker's watermark, not the wall clock): reward 0, or 1 for a decision
    whose quality play was held back (``params.delayed_positives``).

    Pure: removes the decisions from ``state.pending_art`` (so a later play cannot reward
    them) and returns their rewards; the caller stores the state and teaches the policy.

    >>> from topics.models import Impression
    >>> st = ProfileState("p1")
    >>> imp = Impression(event_id="i1", profile_id="p1", event_ts_ms=1_700_000_000_000,
    ...                  request_id="r", title_id="t1", row_id="r0", row=0, column=0,
    ...                  artwork_id="t1-a", propensity=0.5, policy="uniform")
    >>> _ = apply_event(st, imp, lambda t: [], FeatureParams(reward_window_s=60.0))
    >>> settle_expired_art(st, 1_700_000_060_000, FeatureParams(reward_window_s=60.0))
    []
    >>> [(r.title_id, r.reward) for r in settle_expired_art(
    ...     st, 1_700_000_060_001, FeatureParams(reward_window_s=60.0))]
    [('t1', 0.0)]
    >>> st.pending_art
    {}
    """
    if not state.pending_art:
        return []
    fx = Effects()
    _settle_expired(state, watermark_ms, params, fx)
    return fx.art_rewards


def _pend_artwork(state: ProfileState, ev: Impression, fx: Effects) -> None:
    """Remember an artwork decision until a quality play or the end of its window. Repeated
    impressions of the same decision (sticky artwork) keep the first; a different image
    settles the previous decision (no reward unless a quality play was held back for it)."""
    prev = state.pending_art.get(ev.title_id)
    if prev is not None:
        if prev.artwork_id == ev.artwork_id:
            return
        _settle(state, ev.title_id, fx)
    state.pending_art[ev.title_id] = PendingArtwork(ev.event_ts_ms, ev.artwork_id,
                                                    ev.propensity, ev.policy,
                                                    ev.policy_version, ev.context_json)
    if state._art_floor_ms is not None and ev.event_ts_ms < state._art_floor_ms:
        state._art_floor_ms = ev.event_ts_ms
    if len(state.pending_art) > MAX_PENDING_ART:
        # the first title with the oldest time (what min with a key gives), the oldest time
        # found in one C-level pass
        first = min(map(_TS_OF, state.pending_art.values()))
        _settle(state, next(t for t, p in state.pending_art.items() if p.ts_ms == first), fx)


#: Most devices counted per profile (device names come from the player apps).
MAX_DEVICES = 16


def _bound(entries: dict[str, Any], limit: int) -> None:
    """Drop the oldest entries of ``entries`` (insertion order) beyond ``limit``."""
    while len(entries) > limit:
        del entries[next(iter(entries))]


def _bound_history(state: ProfileState, limit: int) -> None:
    """Keep the per-title maps a play writes to at most ``limit`` titles each."""
    for entries in (state.progress, state.finished, state.engaged, state.rewatches):
        if len(entries) > limit:
            _bound(entries, limit)


def _apply_play(state: ProfileState, ev: Play, genres_of: GenresOf, cast_of: GenresOf,
                params: FeatureParams, fx: Effects, newest: bool) -> None:
    ts = ev.event_ts_ms
    hl = params.affinity_half_life_s
    tid = ev.title_id
    if newest:
        state.country, state.device = ev.country, ev.device
    if ev.action == "start":
        hour = str((ts // 3_600_000) % 24)
        state.play_hours[hour] = state.play_hours.get(hour, 0) + 1
    prev = state.progress.get(tid)
    if prev is None or ts >= prev.ts_ms:
        state.progress.pop(tid, None)  # re-inserted: the least recently played go first
        state.progress[tid] = Playhead(ev.position_s, ev.duration_s, ts)
    fraction = ev.fraction
    pending = state.pending_art.get(tid)
    if pending is not None:
        pending, pay_now = record_quality_play(pending, ts, fraction, params)
        state.pending_art[tid] = pending
        if pay_now:
            # a quality play after the impression: the art worked (paid now; with delayed
            # positives it stays marked and is paid when the window closes, like a zero)
            _settle(state, tid, fx)
    if is_finished(fraction):
        state.finished[tid] = max(ts, state.finished.get(tid, 0))
    elif ev.action == "start" and ts > state.finished.get(tid, ts):
        # a re-watch: the top target again, and back into Continue Watching
        del state.finished[tid]
        state.rewatches[tid] = state.rewatches.get(tid, 0) + 1
        fx.labels.append((tid, LABEL_TARGET["rewatch"]))
    before = state.engaged.get(tid, ENGAGED_NONE)
    if before != ENGAGED_NONE and ev.action == "start" and (
            (shown := state.shown_rows.get(tid)) and shown.kind == RowKind.CONTINUE_WATCHING):
        _credit_row(state, tid, ts, params, fx)  # resumed from Continue Watching
    level, label = derive_play_level(before, fraction)
    if label is not None:
        if before == ENGAGED_NONE:
            fx.plays.append((ev.country, tid, ts))
            _credit_row(state, tid, ts, params, fx)
        state.engaged[tid] = level
        fx.labels.append((tid, LABEL_TARGET[label]))
        if label == "watch":
            fx.watched.append(tid)
        # a click that becomes a watch tops its affinity up to the watch weight
        already = AFFINITY_WEIGHT["click"] if before == ENGAGED_CLICK else 0.0
        _bump_affinity(state, genres_of(tid), AFFINITY_WEIGHT[label] - already, ts, hl)
        _bump_cast(state, cast_of(tid), AFFINITY_WEIGHT[label] - already, ts, hl)
    elif (ev.action == "stop" and fraction < ABANDON_FRACTION and before == ENGAGED_CLICK
          and tid not in state.finished):
        # stopped early: weak negative (the click label stays; this pulls it down)
        fx.labels.append((tid, LABEL_TARGET["abandon"]))
        _bump_affinity(state, genres_of(tid), -AFFINITY_WEIGHT["click"], ts, hl)
        _bump_cast(state, cast_of(tid), -AFFINITY_WEIGHT["click"], ts, hl)
    _touch_recent(state, tid, ts, params.recent_titles)
    _bound_history(state, params.member_titles_max)
    fx.page_changed = True
