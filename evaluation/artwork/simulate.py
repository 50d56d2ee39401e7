"""Artwork personalization on the real pipeline with a simulated population.

The module is longer than ~500 lines (a checkout tool, not product code) because the
simulated population, the stack it drives and the run's bookkeeping are one experiment.

The members' taste in images depends on their taste in genres: a member whose favourite genre
is Comedy starts a title (and watches it past the quality threshold) more often after a
comedic image, a Romance fan after a romantic one (:class:`PreferenceModel`; by default
``P(quality play | shown) = 0.30`` when the image's tag is the member's favourite genre and
``0.10`` otherwise). Nothing in the pipeline knows this rule; the bandit has to find it.

:func:`run_policy` runs one policy end to end on a fresh local stack (Tansu + Redis), exactly
as deployed: topics, a catalog of Comedy and Romance titles each with a comedic, a romantic
and a cast image (tags ``comedy``, ``romance``, ``cast``), one worker process and one server
process (``python -m streams.worker``, ``python -m serving``) configured with
``HOMESTREAM_ARTWORK_POLICY=<policy>``. Members first watch a few titles of their favourite
genre (so the page context the worker stores carries their genre affinity), then visit their
home page in a loop over HTTP (``GET /v1/homepage/{id}?country=US&device=tv``), look at the
first ``rows x columns`` items, draw a quality play for each from the preference model given
the tags of the image the server chose, and send the plays with :class:`~player.producer.
PlayerProducer` (event time = now). The take fraction (quality plays / items seen) is
tracked as impressions accumulate; the impression and play topics are read back afterwards
(:mod:`evaluation.artwork.logs`) for the offline evaluation.

Timing: a member's plays follow the page by ``think_s`` (shorter than the reward window) and
their next visit comes ``visit_interval_s`` after the page (longer than the window), so each
page view's decisions are settled, by the worker as by the log join, before the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.artwork.logs import (
    ArtworkRound,
    JoinStats,
    arms_from_catalog,
    build_rounds,
    read_catalog,
    read_events,
)
from evaluation.stats import Interval
from homestream.settings import Settings
from homestream.stack.process import Child
from online_models.bandits import Arm, ArtworkPolicy
from topics.models import Artwork, Title

__all__ = [
    "IMAGE_TAGS",
    "PolicyRun",
    "PreferenceModel",
    "SimConfig",
    "SimMember",
    "TakeFraction",
    "build_catalog",
    "make_members",
    "run_policy",
    "take_fraction",
]

#: Tags of each title's three images (a comedic, a romantic and a cast image).
IMAGE_TAGS = ("comedy", "romance", "cast")


def slug(genre: str) -> str:
    """The artwork tag of a genre.

    >>> slug("Comedy"), slug("Science Fiction")
    ('comedy', 'science-fiction')
    """
    return genre.strip().lower().replace(" ", "-")


@dataclass(frozen=True)
class PreferenceModel:
    """``P(quality play | an item shown with an image tagged tags)`` for a member whose
    favourite genre is ``favourite``: ``p_match`` when a tag is the genre's slug, else
    ``p_other``; times ``other_genre_factor`` when the title is not of the favourite genre.

    The default factor 1 makes the take depend on the image and the member's taste only, not
    on which titles the page shows: the population is then stationary for the artwork
    decision, as replay evaluation assumes. A factor below 1 makes the page mix matter, and
    the page mix follows what members played, which the artwork they were shown changed (a
    closed loop replay on uniform logs cannot reproduce; ``--other-genre-factor 0.5``).

    >>> m = PreferenceModel()
    >>> m.probability("Comedy", ("comedy",)), m.probability("Romance", ("comedy",))
    (0.3, 0.1)
    >>> m.probability("Comedy", ("comedy",), ["Romance"])   # a comedy fan, a romance title
    0.3
    >>> PreferenceModel(other_genre_factor=0.5).probability("Comedy", ("comedy",), ["Romance"])
    0.15
    >>> round(m.random_value("Comedy", ["comedy", "romance", "cast"], ["Comedy"]), 4)
    0.1667
    """

    p_match: float = 0.30
    p_other: float = 0.10
    other_genre_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p_match", "p_other", "other_genre_factor"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    def probability(self, favourite: str, tags: Sequence[str],
                    title_genres: Sequence[str] = ()) -> float:
        p = self.p_match if slug(favourite) in {t.lower() for t in tags} else self.p_other
        if title_genres and favourite not in title_genres:
            p *= self.other_genre_factor
        return p

    def draw(self, rng: random.Random, favourite: str, tags: Sequence[str],
             title_genres: Sequence[str] = ()) -> bool:
        """One member's reaction to one item: a quality play or not."""
        return rng.random() < self.probability(favourite, tags, title_genres)

    def random_value(self, favourite: str, image_tags: Sequence[str],
                     title_genres: Sequence[str] = ()) -> float:
        """Expected take of an item whose image is one of ``image_tags`` (one tag per image)
        chosen uniformly at random."""
        return sum(self.probability(favourite, (t,), title_genres)
                   for t in image_tags) / len(image_tags)

    def best_value(self, favourite: str, image_tags: Sequence[str],
                   title_genres: Sequence[str] = ()) -> float:
        """Expected take of the item with the best image for this member (the oracle)."""
        return max(self.probability(favourite, (t,), title_genres) for t in image_tags)


@dataclass(frozen=True)
class SimConfig:
    """One simulated run of a policy (all durations in seconds)."""

    policy: str = "uniform"
    seconds: float = 150.0
    members: int = 2000
    genres: tuple[str, ...] = ("Comedy", "Romance")
    titles_per_genre: int = 300
    rows: int = 2
    columns: int = 5
    reward_window_s: float = 3.0
    quality_fraction: float = 0.3
    #: The worker's watermark lateness and settling timer: a decision without a quality play
    #: earns its 0 about ``reward_window_s + settle_lateness_s`` after the impression.
    settle_lateness_s: float = 2.0
    settle_interval_s: float = 0.5
    #: The worker's ``HOMESTREAM_ARTWORK_DELAYED_POSITIVES``: quality plays are paid when
    #: their window closes (with the zeros) instead of at once. Default: the setting's.
    delayed_positives: bool = bool(
        Settings.model_fields["artwork_delayed_positives"].default)
    #: The server's sticky period. 0 (or less than the visit spacing) makes every visit a new
    #: decision; a longer one makes the log join count one decision per assignment while the
    #: worker learns a round per visit (see :mod:`evaluation.artwork.logs`).
    sticky_s: float = 0.0
    think_s: tuple[float, float] = (0.2, 0.7)
    visit_interval_s: tuple[float, float] = (16.0, 24.0)
    warmup_plays: int = 3
    #: How far a quality play goes (1.0: the member finishes the title, which then leaves the
    #: page; a partial play would keep it in Continue Watching).
    play_fraction: float = 1.0
    concurrency: int = 32
    checkpoint_interval_s: float = 1.0
    seed: int = 7
    preference: PreferenceModel = field(default_factory=PreferenceModel)
    partitions: int = 6
    #: Run with every ``bucket``-th member of the population only (members keep their ids,
    #: favourite genres, warm-up titles and visit schedules). A policy replayed on uniform
    #: logs over K images learns from one logged round in K over the whole run; an online
    #: bucket of 1 / K of the members makes as many decisions over the same span of time,
    #: so the two see the same population over the same time at the same learning pace.
    bucket: int = 1
    #: With ``bucket`` > 1: the other members still visit and play, served ``uniform`` images
    #: by a second server, so that pages, popularity and co-watch come from the whole
    #: population as in the uniform run; the worker's policy learns from the bucket's
    #: decisions only (``HOMESTREAM_ARTWORK_LEARN_FROM``) and only the bucket is measured.
    fill_uniform: bool = True

    def __post_init__(self) -> None:
        if self.bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {self.bucket}")
        if self.think_s[1] >= self.reward_window_s:
            raise ValueError("plays must come within the reward window (think_s < window)")
        if self.visit_interval_s[0] <= self.reward_window_s:
            raise ValueError("visits must be spaced more than the reward window apart")
        if self.play_fraction < self.quality_fraction:
            raise ValueError("play_fraction must reach the quality fraction")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimMember:
    profile_id: str
    favourite: str


def make_members(cfg: SimConfig) -> list[SimMember]:
    """``cfg.members`` members, favourite genres in turn (equal shares); with
    ``cfg.bucket`` > 1 every ``bucket``-th of them (same ids and genres).

    >>> [m.favourite for m in make_members(SimConfig(members=3))]
    ['Comedy', 'Romance', 'Comedy']
    >>> [(m.profile_id, m.favourite) for m in make_members(SimConfig(members=8, bucket=3))]
    [('m0000', 'Comedy'), ('m0003', 'Romance'), ('m0006', 'Comedy')]
    """
    return [SimMember(f"m{i:04d}", cfg.genres[i % len(cfg.genres)])
            for i in range(0, cfg.members, cfg.bucket)]


def build_catalog(cfg: SimConfig, today: dt.date | None = None,
                  base_url: str = "https://img.example.com/art/") -> list[Title]:
    """``titles_per_genre`` titles of each genre, each with a comedic, a romantic and a cast
    image in a shuffled (seeded) order, all rated PG-13, available everywhere.

    >>> cat = build_catalog(SimConfig(titles_per_genre=2))
    >>> len(cat), cat[0].genres, sorted(tuple(a.tags) for a in cat[0].artwork)
    (4, ['Comedy'], [('cast',), ('comedy',), ('romance',)])
    """
    rng = random.Random(cfg.seed)
    today = today or dt.date.today()
    titles = []
    for genre in cfg.genres:
        for i in range(cfg.titles_per_genre):
            tid = f"{slug(genre)[:3]}{i:04d}"
            tags = list(IMAGE_TAGS)
            rng.shuffle(tags)
            titles.append(Title(
                title_id=tid, name=f"{genre} {i}", genres=[genre], maturity_rating="PG-13",
                release_date=today - dt.timedelta(days=rng.randrange(120, 3000)),
                duration_s=float(rng.choice((1800, 2700, 5400, 6600))),
                artwork=[Artwork(artwork_id=f"{tid}-{t}", url=f"{base_url}{tid}/{t}.jpg",
                                 tags=[t]) for t in tags],
                cast=[f"Actor {rng.randrange(60)}", f"Actor {rng.randrange(60)}"]))
    return titles


# -- take fraction --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TakeFraction:
    """Quality plays / impressions with a 95% interval clustered by member."""

    value: float
    ci_low: float
    ci_high: float
    std_error: float
    impressions: int
    quality_plays: int
    members: int

    @property
    def interval(self) -> Interval:
        """The 95% interval as the evaluations' one interval type."""
        return Interval(self.value, self.ci_low, self.ci_high, self.std_error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def take_fraction(outcomes: np.ndarray, members: np.ndarray,
                  confidence: float = 0.95) -> TakeFraction:
    """Ratio estimate ``sum(y) / n`` with a cluster-robust (by member) standard error:
    ``sqrt(G / (G - 1) * sum_g (y_g - R n_g)^2) / n`` over the ``G`` members (impressions of
    one member are not independent: same taste, same pages).

    >>> tf = take_fraction(np.array([1, 0, 0, 1, 0, 0]), np.array([0, 0, 0, 1, 1, 1]))
    >>> round(tf.value, 4), tf.impressions, tf.quality_plays, tf.members, tf.std_error
    (0.3333, 6, 2, 2, 0.0)
    """
    outcomes = np.asarray(outcomes, dtype=float)
    members = np.asarray(members)
    n = len(outcomes)
    if n == 0:
        return TakeFraction(math.nan, math.nan, math.nan, math.nan, 0, 0, 0)
    _, idx = np.unique(members, return_inverse=True)
    y = np.bincount(idx, weights=outcomes)
    m = np.bincount(idx).astype(float)
    g = len(y)
    r = float(y.sum() / n)
    se = math.sqrt(g / (g - 1) * float(((y - r * m) ** 2).sum())) / n if g > 1 else math.nan
    ci = Interval.normal(r, se, confidence)
    return TakeFraction(r, ci.low, ci.high, se, n, int(outcomes.sum()), g)


# -- one run ------------------------------------------------------------------------------------
@dataclass
class PolicyRun:
    """Everything one simulated run of a policy produced."""

    policy: str
    config: dict[str, Any]
    take: TakeFraction
    #: Per item seen, in the order pages were served: 1 = quality play.
    outcomes: np.ndarray
    #: Per item seen: index of the member.
    member_index: np.ndarray
    #: Per item seen: served_at_ms.
    served_ms: np.ndarray
    #: Per item seen: the preference model's probability of a quality play given the image
    #: shown (the noise-free value of the choice).
    p_shown: np.ndarray
    #: Per item seen: 1 when the image shown was tagged with the member's favourite genre
    #: (their best image).
    matched: np.ndarray
    #: Mean over the items seen of that probability for the image shown, for a uniformly
    #: random image and for the member's best image (the oracle); ``genre_image`` is the
    #: share of items shown with the member's favourite-genre image.
    expected: dict[str, float]
    pages: int
    empty_pages: int
    http_errors: int
    #: Quality plays the simulator sent later than the reward window after the page (it fell
    #: behind): they cannot earn a reward.
    late_plays: int
    page_latency_ms: dict[str, float]
    timings: dict[str, float]
    worker_counters: dict[str, int]
    rounds: list[ArtworkRound]
    join: JoinStats
    undecodable: int
    #: Final policy (from the worker's checkpoint): version and what it shows a Comedy / a
    #: Romance fan on a title it never saw.
    final_version: int | None
    learned: dict[str, dict[str, float]]
    by_favourite: dict[str, TakeFraction]
    by_tag_shown: dict[str, float]
    log_dir: str
    #: :func:`audience_purity` of the logged decisions.
    audience_purity: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "config": self.config, "take": self.take.to_dict(),
            "expected": self.expected,
            "pages": self.pages, "empty_pages": self.empty_pages,
            "http_errors": self.http_errors, "late_plays": self.late_plays,
            "page_latency_ms": self.page_latency_ms,
            "timings": self.timings, "worker_counters": self.worker_counters,
            "rounds": len(self.rounds), "join": self.join.to_dict(),
            "undecodable": self.undecodable, "final_version": self.final_version,
            "learned": self.learned,
            "by_favourite": {k: v.to_dict() for k, v in self.by_favourite.items()},
            "by_tag_shown": self.by_tag_shown, "log_dir": self.log_dir,
            "audience_purity": self.audience_purity,
        }


class SimulationError(RuntimeError):
    """The pipeline did not run (a process died, nothing was served, ...)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _play_events(member: SimMember, title: Title, ts_ms: int, fraction: float) -> list[Any]:
    from topics.models import Play

    common = {"profile_id": member.profile_id, "title_id": title.title_id,
              "duration_s": title.duration_s, "country": "US", "device": "tv"}
    return [Play(event_id=uuid.uuid4().hex, event_ts_ms=ts_ms, action="start",
                 position_s=0.0, **common),
            Play(event_id=uuid.uuid4().hex, event_ts_ms=ts_ms + 1, action="stop",
                 position_s=round(fraction * title.duration_s, 3), **common)]


@dataclass
class _Running:
    """One policy's pipeline while it runs: settings, processes, Redis, who is served where."""

    settings: Settings
    worker: Child
    servers: list[Child]
    r: Any
    bases: list[str]
    in_bucket: list[bool]
    fill: bool

    def check_alive(self, doing: str) -> None:
        for child in (self.worker, *self.servers):
            child.check_alive(doing)

    def stop_servers(self) -> None:
        """Stop the servers (they flush their impressions); twice is harmless."""
        for child in self.servers:
            child.stop()


def _settings(cfg: SimConfig, stack: Any, log_dir: Path, fill: bool) -> Settings:
    """The pipeline's settings for ``cfg`` on ``stack``."""
    from homestream.stack.process import free_port

    rules = log_dir / "rules.json"
    rules.write_text(json.dumps({"max_rows": cfg.rows}))
    return Settings(
        bootstrap_servers=stack.bootstrap_servers, redis_url=stack.redis_url,
        partitions=cfg.partitions, artwork_policy=cfg.policy,
        artwork_sticky_s=cfg.sticky_s, artwork_reward_window_s=cfg.reward_window_s,
        artwork_quality_fraction=cfg.quality_fraction,
        artwork_settle_lateness_s=cfg.settle_lateness_s,
        artwork_settle_interval_s=cfg.settle_interval_s,
        artwork_delayed_positives=cfg.delayed_positives,
        model_checkpoint_interval_s=cfg.checkpoint_interval_s, row_length=cfg.columns,
        artwork_rows=cfg.rows,
        rules_file=str(rules), http_port=free_port(),
        worker_data_dir=str(log_dir / "worker-data"), publish_page_updates=False,
        artwork_learn_from=cfg.policy if fill else "")


def _start(cfg: SimConfig, exits: contextlib.ExitStack, log_dir: Path, titles: list[Title],
           n_members: int) -> _Running:
    """Start the stack, the worker and the server(s) (stops registered on ``exits``) and wait
    until the worker has loaded the catalog."""
    import redis as redis_sync

    from features import keys
    from homestream.player.simulator import publish_catalog
    from homestream.stack.local import local_stack
    from homestream.stack.process import free_port, wait_for, wait_for_port
    from topics.registry import ensure_topics

    fill = cfg.bucket > 1 and cfg.fill_uniform
    #: who the measured policy serves (the others, if any, get uniform images)
    in_bucket = [not fill or i % cfg.bucket == 0 for i in range(n_members)]
    stack = exits.enter_context(local_stack())
    settings = _settings(cfg, stack, log_dir, fill)
    ensure_topics(settings)
    publish_catalog(settings, titles)
    worker = exits.enter_context(Child.module("streams.worker", settings.to_env(),
                                              log_path=log_dir / "worker.log", name="worker"))
    server = Child.module("serving", settings.to_env(), log_path=log_dir / "server.log",
                          name="server")
    run = _Running(settings, worker, [server], None, [], in_bucket, fill)
    exits.callback(run.stop_servers)
    run.bases = [f"http://127.0.0.1:{settings.http_port}"] * n_members
    if fill:  # the rest of the population, served uniform images
        fill_settings = settings.model_copy(update={"artwork_policy": "uniform",
                                                    "http_port": free_port()})
        run.servers.append(Child.module("serving", fill_settings.to_env(), name="uniform server",
                                        log_path=log_dir / "server-uniform.log"))
        fill_base = f"http://127.0.0.1:{fill_settings.http_port}"
        run.bases = [b if mine else fill_base for b, mine in zip(run.bases, in_bucket,
                                                                   strict=True)]
    run.r = redis_sync.Redis.from_url(settings.redis_url)
    exits.callback(run.r.close)
    wait_for_port(settings.http_port, 60, server)
    if fill:
        wait_for_port(fill_settings.http_port, 60, run.servers[-1])
    wait_for(lambda: run.r.hlen(keys.catalog_key(settings.key_prefix)) >= len(titles), 90,
             "the worker to load the catalog", watch=(worker, *run.servers), interval_s=0.1)
    return run


def _warm_up(cfg: SimConfig, run: _Running, members: Sequence[SimMember],
             titles: Sequence[Title]) -> None:
    """Every member watches a few titles of their favourite genre; wait until every member's
    page carries their genre affinity."""
    from features import keys
    from homestream.player.producer import PlayerProducer
    from homestream.stack.process import wait_for

    by_genre = {g: [t for t in titles if g in t.genres] for g in cfg.genres}
    with PlayerProducer(run.settings) as producer:
        now = _now_ms()
        for m in members:  # per-member draws: the same titles in a bucket run
            rng = random.Random(f"{cfg.seed}-warmup-{m.profile_id}")
            for k, t in enumerate(rng.sample(by_genre[m.favourite], cfg.warmup_plays)):
                producer.send_many(_play_events(m, t, now + 10 * k, 1.0))
    page_keys = [keys.page_key(run.settings.key_prefix, m.profile_id) for m in members]

    def warmed_up() -> bool:
        for m, raw in zip(members, run.r.mget(page_keys), strict=True):
            if raw is None:
                return False
            ctx = json.loads(raw).get("context") or {}
            if ctx.get(f"genre:{m.favourite}") != 1.0:
                return False
        return True

    wait_for(warmed_up, 120, "every member's page to carry their genre affinity",
             watch=(run.worker, *run.servers), interval_s=0.1)


def _read_back(cfg: SimConfig, run: _Running, loop_end_ms: int
               ) -> tuple[list[ArtworkRound], JoinStats, int, dict[str, int],
                          ArtworkPolicy | None]:
    """Read the logged impressions and plays back and join them into rounds; the worker's
    counters and its last artwork-policy checkpoint."""
    from features import keys
    from topics.registry import topic_specs

    settings = run.settings
    specs = topic_specs(settings)
    impressions, plays, undecodable = read_events(
        settings.bootstrap_servers,
        [specs["impressions"].name, specs["player_events"].name], timeout_s=120)
    catalog = read_catalog(settings.bootstrap_servers, specs["catalog"].name)
    rounds, join = build_rounds(
        impressions, plays, arms_from_catalog(catalog),
        reward_window_s=cfg.reward_window_s, quality_fraction=cfg.quality_fraction,
        sticky_s=cfg.sticky_s, viewport=(cfg.rows, cfg.columns),
        end_ts_ms=max(loop_end_ms + int(cfg.reward_window_s * 1000) + 1, _now_ms()),
        settle_lateness_s=cfg.settle_lateness_s,
        settle_interval_s=cfg.settle_interval_s,
        delayed_positives=cfg.delayed_positives)
    if run.fill:  # the measured bucket's decisions (the others were uniform fill)
        rounds = [rd for rd in rounds if rd.policy == cfg.policy]
        join = dataclasses.replace(join, rounds=len(rounds),
                                   rewarded=sum(rd.reward > 0 for rd in rounds))
    counters = {k.decode(): int(v) for k, v in
                run.r.hgetall(keys.stats_key(settings.key_prefix)).items()}
    raw_policy = run.r.get(keys.checkpoint_key(settings.key_prefix, "artwork-policy"))
    final = ArtworkPolicy.from_bytes(raw_policy) if raw_policy else None
    return rounds, join, undecodable, counters, final


def _simulate(cfg: SimConfig, run: _Running, members: Sequence[SimMember],
              titles: Sequence[Title], say: Any) -> _SimState:
    """The measured loop: members visit, are served, play; fails when nothing was served."""
    from homestream.player.producer import PlayerProducer

    by_id = {t.title_id: t for t in titles}
    tags_of = {a.artwork_id: tuple(a.tags) for t in titles for a in t.artwork}
    producer = PlayerProducer(run.settings)
    try:
        sim = asyncio.run(_loop(cfg, run.bases, run.in_bucket, members, by_id, tags_of,
                                producer, say))
        producer.flush(30)
    finally:
        with contextlib.suppress(Exception):
            producer.close(10)
    if sim.pages == 0 or len(sim.outcomes) == 0:
        raise SimulationError(f"{cfg.policy}: no page with items was served "
                              f"({sim.http_errors} HTTP errors); server log:\n"
                              f"{run.servers[0].tail()}")
    return sim


def run_policy(cfg: SimConfig, log_dir: Path | None = None, *,
               progress: Any = None) -> PolicyRun:
    """Run ``cfg.policy`` on a fresh local stack; see the module docstring.

    Raises :class:`SimulationError` when nothing was served, and
    :class:`~homestream.stack.process.ChildExited` /
    :class:`~homestream.stack.process.WaitTimeout` when a process dies or does not get ready.
    """
    say = progress or (lambda msg: None)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"artwork-{cfg.policy}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    fill = cfg.bucket > 1 and cfg.fill_uniform
    members = make_members(dataclasses.replace(cfg, bucket=1) if fill else cfg)
    titles = build_catalog(cfg)
    with contextlib.ExitStack() as exits:
        run = _start(cfg, exits, log_dir, titles, len(members))
        timings["startup_s"] = time.perf_counter() - t0
        say(f"{cfg.policy}: stack, worker and server up in {timings['startup_s']:.1f}s "
            f"(logs {log_dir})")
        t1 = time.perf_counter()
        _warm_up(cfg, run, members, titles)
        timings["warmup_s"] = time.perf_counter() - t1
        say(f"{cfg.policy}: {len(members)} members warmed up in {timings['warmup_s']:.1f}s")
        t2 = time.perf_counter()
        sim = _simulate(cfg, run, members, titles, say)
        loop_end_ms = _now_ms()
        timings["loop_s"] = time.perf_counter() - t2
        # let the last windows close and the worker learn, then stop the server (it flushes
        # its impressions) and read everything back
        t3 = time.perf_counter()
        time.sleep(cfg.reward_window_s + cfg.settle_lateness_s + 1.0)
        run.check_alive("the run")
        run.stop_servers()
        rounds, join, undecodable, counters, final = _read_back(cfg, run, loop_end_ms)
        timings["drain_read_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    result = _policy_run(cfg, sim, members, rounds, join, undecodable, counters, final,
                         timings, log_dir)
    say(f"{cfg.policy}: take fraction {result.take.value:.4f} "
        f"[{result.take.ci_low:.4f}, {result.take.ci_high:.4f}] over "
        f"{result.take.impressions} items, {result.pages} pages, {len(rounds)} logged rounds; "
        f"{timings['total_s']:.0f}s")
    return result


def _policy_run(cfg: SimConfig, sim: _SimState, members: Sequence[SimMember],
                rounds: list[ArtworkRound], join: JoinStats, undecodable: int,
                counters: dict[str, int], final: ArtworkPolicy | None,
                timings: dict[str, float], log_dir: Path) -> PolicyRun:
    """A run's result from the loop's records and what was read back."""
    outcomes = np.array(sim.outcomes, dtype=np.int8)
    member_index = np.array(sim.member_index, dtype=np.int32)
    favourite = np.array([members[i].favourite for i in member_index])
    by_fav = {g: take_fraction(outcomes[favourite == g], member_index[favourite == g])
              for g in cfg.genres}
    shown = {}
    for g in cfg.genres:
        mask = favourite == g
        tags = np.array([sim.tags[i] for i in np.flatnonzero(mask)])
        shown[g] = {t: float(np.mean(tags == t)) if len(tags) else math.nan for t in IMAGE_TAGS}
    lat = np.array(sim.latency_ms) if sim.latency_ms else np.array([math.nan])
    return PolicyRun(
        policy=cfg.policy, config=cfg.to_dict(),
        take=take_fraction(outcomes, member_index), outcomes=outcomes,
        member_index=member_index, served_ms=np.array(sim.served_ms, dtype=np.int64),
        p_shown=np.array(sim.p_shown), matched=np.array(sim.matched, dtype=np.int8),
        expected={"shown": float(np.mean(sim.p_shown)), "random": float(np.mean(sim.p_random)),
                  "oracle": float(np.mean(sim.p_best)),
                  "genre_image": float(np.mean(sim.matched))},
        pages=sim.pages, empty_pages=sim.empty_pages, http_errors=sim.http_errors,
        late_plays=sim.late_plays,
        page_latency_ms={"p50": float(np.percentile(lat, 50)),
                         "p95": float(np.percentile(lat, 95))},
        timings=timings, worker_counters=counters, rounds=rounds, join=join,
        undecodable=undecodable, final_version=final.version if final else None,
        learned=_learned(final, cfg) if final else {},
        by_favourite=by_fav,
        by_tag_shown={f"{g} fan sees {t}": v for g, d in shown.items() for t, v in d.items()},
        log_dir=str(log_dir),
        audience_purity=audience_purity(rounds, {m.profile_id: m.favourite for m in members}))


def audience_purity(rounds: Sequence[ArtworkRound], favourite_of: Mapping[str, str]) -> float:
    """Decision-weighted share of each title's decisions made for its largest fan group.

    A policy that learns per image (not per member) can at best show each title the image its
    audience prefers on the whole: the purer the audiences, the more it can earn (with the
    default preference, ``0.1 + 0.2 * purity`` for two equal fan groups).

    >>> from online_models.bandits import Arm
    >>> arms = (Arm("a", ("comedy",)),)
    >>> r = lambda who, title: ArtworkRound(who, title, 0, {}, arms, "a", 1.0, 0.0, "u", 0)
    >>> fav = {"c1": "Comedy", "c2": "Comedy", "r1": "Romance"}
    >>> audience_purity([r("c1", "t1"), r("c2", "t1"), r("r1", "t1"), r("r1", "t2")], fav)
    0.75
    """
    counts: dict[str, Counter[str]] = {}
    for r in rounds:
        counts.setdefault(r.title_id, Counter())[favourite_of.get(r.profile_id, "")] += 1
    total = sum(sum(c.values()) for c in counts.values())
    return sum(max(c.values()) for c in counts.values()) / total if total else math.nan


def _learned(policy: ArtworkPolicy, cfg: SimConfig) -> dict[str, dict[str, float]]:
    """What the final policy shows a fan of each genre on a title it never saw."""
    hour = int(_now_ms() // 3_600_000) % 24
    arms = [Arm(f"new-{t}", (t,)) for t in IMAGE_TAGS]
    out = {}
    for g in cfg.genres:
        ctx: dict[str, Any] = {f"genre:{o}": (1.0 if o == g else 0.3) for o in cfg.genres}
        ctx.update(country="US", device="tv", hour=hour)
        props = policy.propensities(ctx, arms)
        out[f"{g} fan"] = {a.tags[0]: round(props[a.artwork_id], 4) for a in arms}
    return out


@dataclass
class _SimState:
    outcomes: list[int] = field(default_factory=list)
    member_index: list[int] = field(default_factory=list)
    served_ms: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    p_shown: list[float] = field(default_factory=list)
    p_random: list[float] = field(default_factory=list)
    p_best: list[float] = field(default_factory=list)
    matched: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    pages: int = 0
    empty_pages: int = 0
    http_errors: int = 0
    late_plays: int = 0


def _view(state: _SimState, cfg: SimConfig, i: int, m: SimMember, seen: list[dict],
          page: dict, rng: random.Random, titles: Mapping[str, Title],
          tags_of: Mapping[str, tuple[str, ...]], record: bool) -> list[Title]:
    """Member ``m`` looks at the items ``seen``: draws which they take (returned) and, when
    ``record``, records each item's outcome and the preference model's values."""
    taken = []
    pref = cfg.preference
    for item in seen:
        tags = tags_of.get(item.get("artwork_id"), ())
        title = titles[item["title_id"]]
        took = pref.draw(rng, m.favourite, tags, title.genres)
        if took:
            taken.append(title)
        if not record:
            continue
        options = [a.tags[0] for a in title.artwork if a.tags]
        state.p_shown.append(pref.probability(m.favourite, tags, title.genres))
        state.p_random.append(pref.random_value(m.favourite, options, title.genres))
        state.p_best.append(pref.best_value(m.favourite, options, title.genres))
        state.matched.append(int(slug(m.favourite) in tags))
        state.outcomes.append(int(took))
        state.member_index.append(i)
        state.served_ms.append(int(page.get("served_at_ms") or 0))
        state.tags.append(tags[0] if tags else "")
    return taken


def _send_plays(state: _SimState, cfg: SimConfig, m: SimMember, taken: list[Title],
                page: dict, producer: Any, record: bool) -> None:
    """Send the plays of the titles ``m`` took (counting those sent after the window)."""
    now = _now_ms()
    served = int(page.get("served_at_ms") or 0)
    if record and now - served > cfg.reward_window_s * 1000.0:
        state.late_plays += len(taken)  # the simulator fell behind
    for t in taken:
        producer.send_many(_play_events(m, t, now, cfg.play_fraction))
    producer.flush_batches()
    producer.poll(0)


async def _loop(cfg: SimConfig, bases: Sequence[str], measured: Sequence[bool],
                members: Sequence[SimMember], titles: Mapping[str, Title],
                tags_of: Mapping[str, tuple[str, ...]], producer: Any, say: Any) -> _SimState:
    """Every member's visits; ``bases[i]`` is member ``i``'s server, and only the members
    with ``measured[i]`` are recorded (the others play, as members do, all the same)."""
    import aiohttp

    state = _SimState()
    deadline = time.monotonic() + cfg.seconds
    sem = asyncio.Semaphore(cfg.concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=cfg.concurrency)

    async def member_loop(i: int, m: SimMember, session: aiohttp.ClientSession) -> None:
        rng = random.Random(f"{cfg.seed}-{m.profile_id}")
        await asyncio.sleep(rng.uniform(0, cfg.visit_interval_s[0]))
        url = f"{bases[i]}/v1/homepage/{m.profile_id}?country=US&device=tv"
        record = measured[i]
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                async with sem, session.get(url) as resp:
                    if resp.status != 200:
                        state.http_errors += 1
                        await asyncio.sleep(1.0)
                        continue
                    page = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                state.http_errors += 1
                await asyncio.sleep(1.0)
                continue
            seen = [item for row in page.get("rows", [])[: cfg.rows]
                    for item in row.get("items", [])[: cfg.columns]]
            if record:
                state.latency_ms.append((time.monotonic() - started) * 1000.0)
                state.pages += 1
                state.empty_pages += not seen
            taken = _view(state, cfg, i, m, seen, page, rng, titles, tags_of, record)
            await asyncio.sleep(rng.uniform(*cfg.think_s))
            if taken:
                _send_plays(state, cfg, m, taken, page, producer, record)
            wait = min(started + rng.uniform(*cfg.visit_interval_s), deadline) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def report() -> None:
        start = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(15.0)
            n = len(state.outcomes)
            tf = sum(state.outcomes) / n if n else math.nan
            say(f"{cfg.policy}: {time.monotonic() - start:5.0f}s {state.pages} pages, "
                f"{n} items seen, take fraction so far {tf:.4f}")

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        reporter = asyncio.create_task(report())
        await asyncio.gather(*(member_loop(i, m, session) for i, m in enumerate(members)))
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    # served order (pages of one request keep their row/column order: stable sort)
    order = np.argsort(np.array(state.served_ms), kind="stable")
    for name in ("outcomes", "member_index", "served_ms", "tags", "p_shown", "p_random",
                 "p_best", "matched"):
        values = getattr(state, name)
        setattr(state, name, [values[j] for j in order])
    return state
