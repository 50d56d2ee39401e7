"""Logged artwork rounds from the pipeline's own topics, and offline evaluation on them.

The module is longer than ~500 lines (a checkout tool, not product code) because the join's
rules and the evaluations on its rounds are read and checked together.

The server logs every served item as an :class:`~topics.models.Impression` carrying the
artwork it chose, the propensity of that choice, the policy (name and version) and the context
the policy saw (``context_json``). Players' plays go to the player-events topic. This module
reads both back from Kafka (:func:`read_events`, :func:`read_catalog`), joins them into one
*round* per artwork decision (:func:`build_rounds`) and evaluates candidate policies on the
rounds with :mod:`evaluation.offline` (:func:`replay_learning` for uniformly random logs,
:func:`progressive_estimates` for IPS / SNIPS / DR on any logs).

The join (per member and title, in event-time order):

- **Decision.** An impression opens a new decision unless it repeats the member's current
  assignment of that title: same artwork, propensity, policy and policy version, less than
  ``sticky_s`` after the assignment's first impression (the server re-logs a sticky image with
  the propensity of the original draw; :mod:`online_models.bandits.sticky`). A repeat adds
  nothing. With ``sticky_s = 0`` every impression is its own decision.
- **Reward** (the worker's rule, :func:`features.profile._apply_play` /
  ``_settle_expired``): 1 when a play of the title reaches ``quality_fraction`` of it at an
  event time in ``[t, t + reward_window_s]`` after the decision's first impression ``t``;
  0 when the window closes without one or when a new decision of the same title comes first.
  A decision whose window is still open at the end of the logs is *censored* and left out
  (the worker has not learned it either).

Where this differs from the worker (``features.profile._pend_artwork``): the worker keys its
pending decision by title and artwork only, so (a) it merges a *new* decision that re-draws
the same image while the previous window is still open into the previous one, and (b) after
a window closed it treats a further sticky repeat of the same assignment as a new round.
Neither happens when member visits are spaced more than the window apart and ``sticky_s`` is
0 or at least the window plus the visit spacing, which is how :mod:`evaluation.artwork.
simulate` runs; ``tests/unit/test_artwork_eval.py`` checks that the two joins agree on such
event sequences (:func:`worker_join` replays :func:`features.profile.apply_event`).

>>> from topics.models import Impression, Play
>>> imp = Impression(event_id="i1", profile_id="p1", event_ts_ms=1_700_000_000_000,
...                  request_id="r1", title_id="t1", row_id="top", row=0, column=0,
...                  artwork_id="t1-a", propensity=0.5, policy="uniform",
...                  context_json='{"genre:Comedy": 1.0}')
>>> play = Play(event_id="p1", profile_id="p1", event_ts_ms=1_700_000_001_000, title_id="t1",
...             action="progress", position_s=400.0, duration_s=1000.0)
>>> arms = {"t1": [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",))]}
>>> rounds, stats = build_rounds([imp], [play], arms, reward_window_s=60, quality_fraction=0.3)
>>> [(r.action, r.reward, r.propensity, r.context) for r in rounds]
[('t1-a', 1.0, 0.5, {'genre:Comedy': 1.0})]
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.offline import BanditLogs, Estimate, doubly_robust, ips, replay, snips
from features.artwork_reward import is_quality_play, window_closed
from features.profile import ArtworkReward, FeatureParams, ProfileState, apply_event
from online_models.bandits import Arm, ArtworkPolicy, Featurizer, HybridRidge
from topics.models import MATERIALIZED_POLICY, Impression, Play, Title

__all__ = [
    "ArtworkRound",
    "JoinStats",
    "OfflineResult",
    "arms_from_catalog",
    "build_rounds",
    "progressive_estimates",
    "read_catalog",
    "read_events",
    "replay_learning",
    "to_bandit_logs",
    "worker_join",
]


@dataclass(frozen=True)
class ArtworkRound:
    """One artwork decision: what the policy saw and chose, and what came of it."""

    profile_id: str
    title_id: str
    ts_ms: int
    context: dict[str, Any]
    arms: tuple[Arm, ...]
    action: str
    propensity: float
    reward: float
    policy: str
    policy_version: int
    request_id: str = ""
    row: int = 0
    column: int = 0
    #: Event time at which the worker settles the decision: the quality play's (unless
    #: positives are delayed), else when its watermark passes the window (see
    #: ``build_rounds``) or the member's first event after the window closed (or the new
    #: decision that replaced it), whichever is first.
    settled_ts_ms: int = 0

    @property
    def arm(self) -> Arm:
        """The logged arm (with its tags)."""
        return next(a for a in self.arms if a.artwork_id == self.action)


@dataclass
class JoinStats:
    """Counts of what :func:`build_rounds` kept and dropped."""

    impressions: int = 0
    materialized: int = 0
    outside_viewport: int = 0
    duplicates: int = 0
    sticky_repeats: int = 0
    unknown_arm: int = 0
    censored: int = 0
    rounds: int = 0
    rewarded: int = 0
    plays: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def arms_from_catalog(titles: Iterable[Title]) -> dict[str, list[Arm]]:
    """Title id -> its artwork candidates as :class:`Arm` (with tags), in catalog order."""
    return {t.title_id: [Arm(a.artwork_id, tuple(a.tags)) for a in t.artwork] for t in titles}


def _parse_context(raw: str) -> dict[str, Any]:
    try:
        ctx = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return ctx if isinstance(ctx, dict) else {}


@dataclass
class _Decision:
    imp: Impression
    index: int                 # position in the output list, or -1 when not kept
    pending: bool = True
    won: bool = False          # a quality play held back until the window closes


def _first_after(times: list[int], t: float) -> int | None:
    i = bisect.bisect_right(times, t)
    return times[i] if i < len(times) else None


def build_rounds(impressions: Iterable[Impression], plays: Iterable[Play],
                 arms_of: Mapping[str, Sequence[Arm]] | Callable[[str], Sequence[Arm]], *,
                 reward_window_s: float, quality_fraction: float, sticky_s: float = 0.0,
                 viewport: tuple[int, int] | None = None,
                 end_ts_ms: int | None = None, settle_lateness_s: float | None = None,
                 settle_interval_s: float = 0.0,
                 delayed_positives: bool = False) -> tuple[list[ArtworkRound], JoinStats]:
    """Join impressions and plays into rounds (see the module docstring for the rules).

    Parameters
    ----------
    impressions, plays
        Events as read from the topics, in any order; duplicates (same ``event_id``, as
        at-least-once delivery can produce) count once.
    arms_of
        Title id -> its artwork candidates (``arms_from_catalog``), or a function.
        Impressions of an artwork that is not among its title's arms are dropped.
    reward_window_s, quality_fraction
        The worker's ``HOMESTREAM_ARTWORK_REWARD_WINDOW_S`` and ``..._QUALITY_FRACTION``.
    sticky_s
        The server's ``HOMESTREAM_ARTWORK_STICKY_S``.
    viewport
        ``(rows, columns)``: keep only impressions at ``row < rows`` and ``column <
        columns`` (what the member actually saw); ``None`` keeps all.
    end_ts_ms
        Event time at which the logs end (default: the newest event): decisions whose
        window is open then are censored.
    settle_lateness_s, settle_interval_s
        The worker's ``HOMESTREAM_ARTWORK_SETTLE_LATENESS_S`` and ``..._INTERVAL_S``, for
        ``settled_ts_ms`` of a zero: the first event time (of any member) past the window
        plus the lateness (when the worker's watermark passes the window), plus half a
        timer interval, unless the member's own next event after the window comes first.
        ``None``: only the member's own events settle (a worker without the timer).
    delayed_positives
        The worker's ``HOMESTREAM_ARTWORK_DELAYED_POSITIVES``: a rewarded decision is
        settled (``settled_ts_ms``) like a zero, when its window is closed, instead of at
        the quality play. Rewards are the same either way.

    Returns
    -------
    (rounds, stats)
        Rounds sorted by (first impression time, request, row, column).
    """
    lookup = arms_of if callable(arms_of) else (lambda t: arms_of.get(t, ()))  # type: ignore[union-attr]
    stats = JoinStats()
    logs = _collect(impressions, plays, viewport, stats)
    rule = _JoinRule(reward_window_s, quality_fraction, sticky_s * 1000.0, delayed_positives,
                     settle_lateness_s, settle_interval_s,
                     logs.newest if end_ts_ms is None else end_ts_ms, logs.times, logs.every)
    drafts: list[_Draft] = []
    for events in logs.streams.values():
        _join_stream(events, rule, lookup, drafts, stats)
    rounds = []
    for d in drafts:
        if math.isnan(d.reward):
            stats.censored += 1
            continue
        imp = d.imp
        rounds.append(ArtworkRound(
            profile_id=imp.profile_id, title_id=imp.title_id, ts_ms=imp.event_ts_ms,
            context=_parse_context(imp.context_json), arms=d.arms, action=imp.artwork_id,
            propensity=imp.propensity, reward=d.reward, policy=imp.policy,
            policy_version=imp.policy_version, request_id=imp.request_id, row=imp.row,
            column=imp.column, settled_ts_ms=d.settled_ts_ms))
    rounds.sort(key=lambda r: (r.ts_ms, r.request_id, r.row, r.column))
    stats.rounds = len(rounds)
    stats.rewarded = sum(r.reward > 0 for r in rounds)
    return rounds, stats


@dataclass
class _Logs:
    """Deduplicated events: each (profile, title)'s impressions and plays, and the clocks."""

    #: (profile, title) -> events as (time, kind, event); kind 0 = impression, 1 = play
    streams: dict[tuple[str, str], list[tuple[int, int, Any]]] = field(default_factory=dict)
    #: every event time of each member (the worker's clock for that member), sorted
    times: dict[str, list[int]] = field(default_factory=dict)
    #: every event time of every member (the watermark's clock), sorted
    every: list[int] = field(default_factory=list)
    newest: int = 0

    def note(self, profile_id: str, ts_ms: int) -> None:
        self.newest = max(self.newest, ts_ms)
        self.times.setdefault(profile_id, []).append(ts_ms)
        self.every.append(ts_ms)


def _collect(impressions: Iterable[Impression], plays: Iterable[Play],
             viewport: tuple[int, int] | None, stats: JoinStats) -> _Logs:
    """Drop duplicates, materialized and out-of-viewport impressions (counted in ``stats``);
    group the rest with the plays of the same member and title."""
    logs = _Logs()
    seen: set[str] = set()
    for imp in impressions:
        if imp.event_id in seen:
            stats.duplicates += 1
            continue
        seen.add(imp.event_id)
        stats.impressions += 1
        logs.note(imp.profile_id, imp.event_ts_ms)
        if imp.policy == MATERIALIZED_POLICY:
            stats.materialized += 1
            continue
        if viewport is not None and (imp.row >= viewport[0] or imp.column >= viewport[1]):
            stats.outside_viewport += 1
            continue
        logs.streams.setdefault((imp.profile_id, imp.title_id), []).append(
            (imp.event_ts_ms, 0, imp))
    for play in plays:
        if play.event_id in seen:
            stats.duplicates += 1
            continue
        seen.add(play.event_id)
        stats.plays += 1
        logs.note(play.profile_id, play.event_ts_ms)
        key = (play.profile_id, play.title_id)
        if key in logs.streams:
            logs.streams[key].append((play.event_ts_ms, 1, play))
    for ts_list in logs.times.values():
        ts_list.sort()
    logs.every.sort()
    return logs


@dataclass
class _Draft:
    """A kept decision; ``reward`` stays nan until it is settled (censored otherwise)."""

    imp: Impression
    arms: tuple[Arm, ...]
    reward: float = math.nan
    settled_ts_ms: int = 0


@dataclass(frozen=True)
class _JoinRule:
    """The worker's settings and the logs' clocks that decide when a decision settles."""

    reward_window_s: float
    quality_fraction: float
    sticky_ms: float
    delayed_positives: bool
    settle_lateness_s: float | None
    settle_interval_s: float
    end: int
    times: dict[str, list[int]]
    every: list[int]

    def expired_at(self, imp: Impression) -> int:
        """When the worker settles a decision whose window closed without a paid play."""
        closes = imp.event_ts_ms + self.reward_window_s * 1000.0
        t = _first_after(self.times[imp.profile_id], closes)
        if self.settle_lateness_s is not None:
            w = _first_after(self.every, closes + self.settle_lateness_s * 1000.0)
            if w is not None:
                w += int(self.settle_interval_s * 500.0)  # half a timer interval, on average
                t = w if t is None else min(t, w)
        return self.end if t is None else t


def _join_stream(events: list[tuple[int, int, Any]], rule: _JoinRule,
                 lookup: Callable[[str], Sequence[Arm]], drafts: list[_Draft],
                 stats: JoinStats) -> None:
    """Settle the decisions of one (member, title) in event order, as the worker does."""

    def settle(decision: _Decision, reward: float, at_ms: int) -> None:
        decision.pending = False
        if decision.index >= 0:
            drafts[decision.index].reward = reward
            drafts[decision.index].settled_ts_ms = at_ms

    events.sort(key=lambda e: (e[0], e[1]))
    current: _Decision | None = None
    for ts, kind, ev in events:
        if (current is not None and current.pending
                and window_closed(current.imp.event_ts_ms, ts, rule.reward_window_s)):
            # closed without a quality play (or with one held back)
            settle(current, float(current.won), rule.expired_at(current.imp))
        if kind == 0:
            if current is not None and _same_assignment(current.imp, ev, rule.sticky_ms):
                stats.sticky_repeats += 1
                continue
            if current is not None and current.pending:
                settle(current, float(current.won), ts)  # a new decision replaces it
            arms = tuple(lookup(ev.title_id))
            if ev.artwork_id not in {a.artwork_id for a in arms}:
                stats.unknown_arm += 1
                current = _Decision(ev, -1)
                continue
            drafts.append(_Draft(ev, arms))
            current = _Decision(ev, len(drafts) - 1)
        elif (current is not None and current.pending
              and is_quality_play(current.imp.event_ts_ms, ts, ev.fraction,
                                  reward_window_s=rule.reward_window_s,
                                  quality_fraction=rule.quality_fraction)):
            if rule.delayed_positives:
                current.won = True  # paid when the window closes
            else:
                settle(current, 1.0, ts)
    if (current is not None and current.pending
            and window_closed(current.imp.event_ts_ms, rule.end, rule.reward_window_s)):
        settle(current, float(current.won), rule.expired_at(current.imp))


def _same_assignment(first: Impression, imp: Impression, sticky_ms: float) -> bool:
    return (imp.artwork_id == first.artwork_id and imp.policy == first.policy
            and imp.policy_version == first.policy_version
            and math.isclose(imp.propensity, first.propensity, rel_tol=1e-9)
            and imp.event_ts_ms - first.event_ts_ms < sticky_ms)


def worker_join(events: Iterable[Impression | Play], genres_of: Callable[[str], Sequence[str]],
                params: FeatureParams) -> list[tuple[str, ArtworkReward]]:
    """The worker's own join: :func:`features.profile.apply_event` over each member's
    events in event-time order (as the worker applies a batch), collecting ``(profile_id,
    ArtworkReward)`` for every settled decision. For cross-checks; decisions still pending
    after a member's last event are not settled (as in the worker)."""
    by_profile: dict[str, list[Impression | Play]] = {}
    for ev in events:
        by_profile.setdefault(ev.profile_id, []).append(ev)
    out: list[tuple[str, ArtworkReward]] = []
    for pid, evs in by_profile.items():
        evs.sort(key=lambda e: e.event_ts_ms)
        state = ProfileState(pid)
        for ev in evs:
            out.extend((pid, r) for r in apply_event(state, ev, genres_of, params).art_rewards)
    return out


# -- reading the topics -------------------------------------------------------------------------
def read_events(bootstrap_servers: str, topics: Sequence[str], *, timeout_s: float = 60.0
                ) -> tuple[list[Impression], list[Play], int]:
    """Every event of ``topics`` from offset 0 to their end
    (:func:`topics.reader.read_topics`): ``(impressions, plays, undecodable)``. Other event
    types are skipped."""
    from topics.codec import DecodeError, default_codec
    from topics.reader import read_topics

    codec = default_codec()
    impressions: list[Impression] = []
    plays: list[Play] = []
    bad = 0
    for msg in read_topics(bootstrap_servers, topics, timeout_s=timeout_s,
                           group_prefix="artwork-eval"):
        try:
            for ev in codec.decode_events(msg.value()):
                if isinstance(ev, Impression):
                    impressions.append(ev)
                elif isinstance(ev, Play):
                    plays.append(ev)
        except DecodeError:
            bad += 1
    return impressions, plays, bad


def read_catalog(bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0
                 ) -> list[Title]:
    """The latest record of every title on the (compacted) catalog topic, read to its end;
    a tombstone withdraws its title."""
    from topics.codec import DecodeError, default_codec
    from topics.reader import read_topics

    codec = default_codec()
    titles: dict[str, Title | None] = {}
    for msg in read_topics(bootstrap_servers, [topic], timeout_s=timeout_s,
                           group_prefix="artwork-eval"):
        key = (msg.key() or b"").decode("utf-8", "replace")
        if msg.value() is None:
            titles[key] = None  # a tombstone: the title was withdrawn
            continue
        try:
            t = codec.decode_title(msg.value())
        except DecodeError:
            continue
        titles[t.title_id] = t
    return [t for t in titles.values() if t is not None]


# -- offline evaluation --------------------------------------------------------------------------
@dataclass
class OfflineResult:
    """Estimates of one candidate policy on one set of logged rounds."""

    target: str
    logging_policy: str
    estimates: dict[str, Estimate]
    seconds: float
    #: Replay only: indices of the matched rounds (the rounds the policy "played").
    matched: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "logging_policy": self.logging_policy,
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
                "seconds": self.seconds}


def to_bandit_logs(rounds: Sequence[ArtworkRound]) -> BanditLogs:
    """Rounds as :class:`~evaluation.offline.BanditLogs` with integer actions: the logged
    arm's index among the title's candidates (for array-form target distributions)."""
    actions = np.array([[a.artwork_id for a in r.arms].index(r.action) for r in rounds])
    return BanditLogs(actions=actions, rewards=[r.reward for r in rounds],
                      propensities=[r.propensity for r in rounds],
                      contexts=[r.context for r in rounds])


def replay_learning(rounds: Sequence[ArtworkRound], policy: ArtworkPolicy, *,
                    pipeline_timing: bool = False, refresh_s: float = 2.0,
                    seed: int = 0, stretch: int | None = None) -> OfflineResult:
    """Li et al. (2011) replay of a *learning* policy on uniformly random logs.

    In log order: the policy draws an artwork for the round's context and candidates; when
    the draw equals the logged artwork the round is revealed to it (it learns the reward) and
    counts, otherwise it is skipped as if it never happened. With ``m`` matched rounds this
    estimates the mean reward of the policy's first ``m`` decisions had it run online.
    ``evaluation.offline.replay`` checks that the logging was uniform.

    By default feedback is immediate. With ``pipeline_timing`` the replay follows the
    pipeline's clock instead: a matched round is learned when the worker would settle it
    (``settled_ts_ms``: a quality play at once, a zero when the worker's watermark passes
    the window, or at the member's first event after it; a quality play too with delayed
    positives, as ``build_rounds`` was told), and the policy that chooses is a
    snapshot refreshed every ``refresh_s`` (the worker's checkpoint and the server's
    reload). Since the replayed policy acts on only one logged round in ``K`` (uniform
    logging over ``K`` candidates), both delays are by default (``stretch=None``) stretched
    by ``K`` in log time, so that counted in the policy's own decisions they are as long as
    they would be online at the logging run's decision rate; ``stretch=1`` keeps them as
    they were in log time, which is right when the online run to compare with decided at
    the matched rounds' rate (a bucket of ``1 / K`` of the members over the same time).
    Draws then come from a separate ``seed``-ed RNG.
    """
    started = time.perf_counter()
    chosen: list[str] = []
    name = policy.name
    if not pipeline_timing:
        for r in rounds:
            choice = policy.select(r.context, r.arms)
            chosen.append(choice.artwork_id)
            if choice.artwork_id == r.action:
                policy.learn_one(r.context, r.arm, r.reward)
    else:
        rng = random.Random(seed)
        due: list[tuple[float, int, ArtworkRound]] = []
        snapshot = ArtworkPolicy.from_bytes(policy.to_bytes())
        # the replayed policy decides on one logged round in K: stretch delays by K so that,
        # counted in its own decisions, they are as long as online
        if stretch is None:
            stretch = len(rounds[0].arms) if rounds else 1
        refresh_ms = refresh_s * 1000.0 * stretch
        next_refresh = (rounds[0].ts_ms if rounds else 0) + refresh_ms
        for i, r in enumerate(rounds):
            while due and due[0][0] <= r.ts_ms:
                _, _, done = heapq.heappop(due)
                policy.learn_one(done.context, done.arm, done.reward)
            if r.ts_ms >= next_refresh:
                snapshot = ArtworkPolicy.from_bytes(policy.to_bytes())
                next_refresh = r.ts_ms + refresh_ms
            props = snapshot.propensities(r.context, r.arms)
            u, acc, pick = rng.random(), 0.0, r.arms[-1].artwork_id
            for artwork_id, p in props.items():
                acc += p
                if u < acc:
                    pick = artwork_id
                    break
            chosen.append(pick)
            if pick == r.action:
                delay = max(0, r.settled_ts_ms - r.ts_ms) * stretch
                heapq.heappush(due, (r.ts_ms + delay, i, r))
    logs = BanditLogs(actions=np.array([r.action for r in rounds], dtype=object),
                      rewards=[r.reward for r in rounds],
                      propensities=[r.propensity for r in rounds])
    est = replay(logs, np.array(chosen, dtype=object))
    if pipeline_timing:
        est = dataclasses.replace(est, method="replay (pipeline timing)")
    matched = np.flatnonzero(np.array(chosen, dtype=object) == logs.actions)
    key = "replay (pipeline timing)" if pipeline_timing else "replay"
    return OfflineResult(name, _logging_name(rounds), {key: est},
                         time.perf_counter() - started, matched)


def progressive_estimates(rounds: Sequence[ArtworkRound], policy: ArtworkPolicy, *,
                          reward_l2: float = 1.0) -> OfflineResult:
    """IPS, SNIPS and DR of a policy that learns from the logs as it goes.

    In log order, for each round: the policy's distribution over the candidates is taken
    *before* it learns the round (predict), then it learns the logged (context, artwork,
    reward) (then learn) - from every logged round, not just those it would have chosen, so
    this is the value of a policy trained off-policy on the logs so far. The DR reward model
    is a :class:`~online_models.bandits.HybridRidge` on the same hashed context x tag
    crosses, likewise predicted before it learns each round (progressive validation keeps it
    independent of the round it scores). Each estimator averages the per-round values of
    the sequence of policies, which is an unbiased target for IPS when the logged
    propensities are right.
    """
    started = time.perf_counter()
    n = len(rounds)
    k = max(len(r.arms) for r in rounds)
    dist = np.zeros((n, k))
    q = np.zeros((n, k))
    featurizer = Featurizer(arm_id_feature=False)
    model = HybridRidge(l2=reward_l2)
    for i, r in enumerate(rounds):
        props = policy.propensities(r.context, r.arms)
        dist[i, :len(r.arms)] = [props[a.artwork_id] for a in r.arms]
        zs = featurizer.many(r.context, r.arms)
        mean, _ = model.posterior(zs, [a.artwork_id for a in r.arms])
        q[i, :len(r.arms)] = np.clip(mean, 0.0, 1.0)
        policy.learn_one(r.context, r.arm, r.reward)
        j = [a.artwork_id for a in r.arms].index(r.action)
        model.learn_one(zs[j], r.action, r.reward)
    dist /= dist.sum(axis=1, keepdims=True)
    logs = to_bandit_logs(rounds)
    est = {"ips": ips(logs, dist), "snips": snips(logs, dist),
           "dr": doubly_robust(logs, dist, q)}
    return OfflineResult(policy.name, _logging_name(rounds), est,
                         time.perf_counter() - started)


def _logging_name(rounds: Sequence[ArtworkRound]) -> str:
    names = sorted({r.policy for r in rounds})
    return "+".join(names)


def is_uniform_logging(rounds: Sequence[ArtworkRound]) -> bool:
    """Whether every round was logged with probability ``1 / K`` (uniform random logging)."""
    return all(math.isclose(r.propensity, 1.0 / len(r.arms), rel_tol=1e-9) for r in rounds)


def evaluate_logs(rounds: Sequence[ArtworkRound], candidates: Sequence[str], *, seed: int = 42,
                  max_rounds: int | None = None, timing_stretch: int | None = None,
                  progress: Callable[[str], None] | None = None) -> list[OfflineResult]:
    """Every candidate (a registry name, default settings, ``seed``) on one run's rounds.

    Uniformly random logs: :func:`replay_learning` on all rounds, and the IPS / SNIPS / DR of
    :func:`progressive_estimates`; other logs: only the latter. The progressive estimators use
    the first ``max_rounds`` rounds (all when ``None``). ``timing_stretch``: see
    :func:`replay_learning`'s ``stretch``.
    """
    from online_models.bandits import make_policy

    say = progress or (lambda msg: None)
    out = []
    uniform = is_uniform_logging(rounds)
    head = list(rounds[:max_rounds]) if max_rounds else list(rounds)
    for name in candidates:
        if uniform:
            for timing in (False, True):
                res = replay_learning(rounds, make_policy(name, seed=seed),
                                      pipeline_timing=timing, seed=seed,
                                      stretch=timing_stretch)
                (key, est), = res.estimates.items()
                say(f"  {key} of {name} on {res.logging_policy} logs: {est} "
                    f"({res.seconds:.0f}s)")
                out.append(res)
        res = progressive_estimates(head, make_policy(name, seed=seed))
        say(f"  IPS/SNIPS/DR of {name} on {res.logging_policy} logs: {res.estimates['ips']} "
            f"({res.seconds:.0f}s)")
        out.append(res)
    return out


@dataclass(frozen=True)
class DrawRepeats:
    """How often the first request served after each policy version drew the same arms."""

    versions: int
    most_common: tuple[int, ...]
    share: float
    expected_share: float


def draw_repeats(rounds: Sequence[ArtworkRound], first: int = 5) -> DrawRepeats | None:
    """For each ``policy_version``, the arm indices (positions among the title's candidates)
    drawn for the first ``first`` items of the first request served with that version; the
    share of versions with the most common sequence. Under independent draws from uniform
    logging that share is about ``(1 / K) ** first``; a share near 1 means the server's
    random draws restart from the same state whenever it loads a new checkpoint.
    """
    by_version: dict[int, list[ArtworkRound]] = {}
    for r in rounds:
        by_version.setdefault(r.policy_version, []).append(r)
    seqs: dict[tuple[int, ...], int] = {}
    k = 0.0
    for rs in by_version.values():
        t0 = min(r.ts_ms for r in rs)
        head = sorted((r for r in rs if r.ts_ms == t0), key=lambda r: (r.row, r.column))
        if len({r.request_id for r in head}) != 1 or len(head) < first:
            continue
        seq = tuple([a.artwork_id for a in r.arms].index(r.action) for r in head[:first])
        seqs[seq] = seqs.get(seq, 0) + 1
        k = max(k, float(len(head[0].arms)))
    if not seqs:
        return None
    best = max(seqs, key=seqs.__getitem__)
    n = sum(seqs.values())
    return DrawRepeats(n, best, seqs[best] / n, (1.0 / k) ** first)
