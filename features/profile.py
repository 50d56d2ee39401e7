"""Per-profile sequential features as pure state transitions: ``apply_event(state, event)``.

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
from typing import Any

import orjson

from features.feedback import (
    AFFINITY_WEIGHT,
    ENGAGED_CLICK,
    ENGAGED_NONE,
    LABEL_TARGET,
    derive_play_level,
    explicit_label,
    is_finished,
)
from topics.models import Click, Event, Feedback, Impression, Play, Scroll, Search

GenresOf = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class FeatureParams:
    """Settings of the feature transitions (taken from :class:`settings.Settings`)."""

    dedupe_window: int = 512
    recent_titles: int = 50
    affinity_half_life_s: float = 14 * 24 * 3600.0


@dataclass
class Effects:
    """What applying one event asks the rest of the pipeline to do."""

    duplicate: bool = False
    page_changed: bool = False
    #: ``(title_id, target)`` training labels for the profile-title model.
    labels: list[tuple[str, float]] = field(default_factory=list)
    #: ``(country, title_id, event_ts_ms)`` play starts for trending counts.
    plays: list[tuple[str, str, int]] = field(default_factory=list)


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
    #: title_id -> ``[position_s, duration_s, ts_ms]`` of the newest playhead.
    progress: dict[str, list[float]] = field(default_factory=dict)
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

    # -- serialization --------------------------------------------------------------------
    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes | str) -> ProfileState:
        return cls(**orjson.loads(data))

    # -- derived features -----------------------------------------------------------------
    def continue_watching(self) -> list[str]:
        """Titles started and not finished, most recently played first."""
        items = [(p[2], t) for t, p in self.progress.items() if t not in self.finished]
        return [t for _, t in sorted(items, reverse=True)]

    def resume_position(self, title_id: str) -> float | None:
        """Where to resume ``title_id``, in seconds, if it is in progress."""
        p = self.progress.get(title_id)
        return None if p is None or title_id in self.finished else p[0]

    def genre_affinity(self, now_ms: int, half_life_s: float) -> dict[str, float]:
        """Genre scores decayed to ``now_ms``."""
        hl_ms = half_life_s * 1000.0
        return {
            g: s * 2.0 ** (-max(0.0, now_ms - ts) / hl_ms) for g, (s, ts) in self.affinity.items()
        }

    def recent_title_ids(self) -> list[str]:
        return [t for t, _ in self.recent]


def _bump_affinity(state: ProfileState, genres: Sequence[str], w: float, ts: int,
                   half_life_s: float) -> None:
    hl_ms = half_life_s * 1000.0
    for g in genres:
        score, at = state.affinity.get(g, (0.0, ts))
        if ts >= at:
            state.affinity[g] = [score * 2.0 ** (-(ts - at) / hl_ms) + w, ts]
        else:  # late event: add its weight decayed to the stored reference time
            state.affinity[g] = [score + w * 2.0 ** (-(at - ts) / hl_ms), at]


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
                params: FeatureParams) -> Effects:
    """Apply one event to ``state`` in place and return its :class:`Effects`.

    An event whose id was already applied changes nothing and returns ``duplicate=True``.
    """
    fx = Effects()
    if event.event_id in state.seen_ids:
        fx.duplicate = True
        return fx
    state.seen_ids.append(event.event_id)
    if len(state.seen_ids) > params.dedupe_window:
        del state.seen_ids[: len(state.seen_ids) - params.dedupe_window]
    state.n_events += 1
    ts = event.event_ts_ms
    newest = ts >= state.last_event_ts_ms
    state.last_event_ts_ms = max(state.last_event_ts_ms, ts)

    if isinstance(event, Play):
        _apply_play(state, event, genres_of, params, fx, newest)
    elif isinstance(event, Feedback):
        y = explicit_label(event.kind, event.stars)
        state.explicit[event.title_id] = y
        fx.labels.append((event.title_id, y))
        _bump_affinity(state, genres_of(event.title_id), 2.0 * y - 1.0, ts,
                       params.affinity_half_life_s)
        fx.page_changed = True
    elif isinstance(event, Impression):
        state.impressions[event.title_id] = state.impressions.get(event.title_id, 0) + 1
    elif isinstance(event, Click):
        _touch_recent(state, event.title_id, ts, params.recent_titles)
    elif isinstance(event, Scroll):
        state.max_scroll_row = max(state.max_scroll_row, event.row)
    elif isinstance(event, Search):
        pass  # searches are counted in n_events; query features arrive with search serving
    return fx


def _apply_play(state: ProfileState, ev: Play, genres_of: GenresOf, params: FeatureParams,
                fx: Effects, newest: bool) -> None:
    ts = ev.event_ts_ms
    if newest:
        state.country, state.device = ev.country, ev.device
    prev = state.progress.get(ev.title_id)
    if prev is None or ts >= prev[2]:
        state.progress[ev.title_id] = [ev.position_s, ev.duration_s, ts]
    fraction = ev.fraction
    if is_finished(fraction):
        state.finished[ev.title_id] = max(ts, state.finished.get(ev.title_id, 0))
    elif ev.action == "start" and ts > state.finished.get(ev.title_id, ts):
        del state.finished[ev.title_id]  # a re-watch brings the title back to Continue Watching
    before = state.engaged.get(ev.title_id, ENGAGED_NONE)
    level, label = derive_play_level(before, fraction)
    if label is not None:
        if before == ENGAGED_NONE:
            fx.plays.append((ev.country, ev.title_id, ts))
        state.engaged[ev.title_id] = level
        fx.labels.append((ev.title_id, LABEL_TARGET[label]))
        # a click that becomes a watch tops its affinity up to the watch weight
        already = AFFINITY_WEIGHT["click"] if before == ENGAGED_CLICK else 0.0
        _bump_affinity(state, genres_of(ev.title_id), AFFINITY_WEIGHT[label] - already, ts,
                       params.affinity_half_life_s)
    _touch_recent(state, ev.title_id, ts, params.recent_titles)
    fx.page_changed = True
