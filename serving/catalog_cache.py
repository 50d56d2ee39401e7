"""What the serving process keeps in memory: the catalog (with its search and cast indexes),
the Top Picks model and recent popularity, refreshed from the store without blocking the
event loop.

A background task (:meth:`ServingModels.start`) refreshes every ``refresh_interval_s``;
the first request that needs them loads them lazily (:meth:`ServingModels.ensure`), so
the app serves pages before the catalog is loaded. Rebuilding the catalog indexes and
decoding a checkpoint run in the default thread executor; the result is swapped in as one
immutable :class:`CatalogSnapshot`, so a request sees one consistent catalog throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from features.catalog import Catalog
from features.keys import ALL_COUNTRIES, popular_list
from features.store import PipelineStore
from features.trending import epoch_of
from online_models.bandits import ArtworkPolicy, make_policy
from online_models.search import SearchIndex
from online_models.top_picks import TopPicksModel
from topics.models import Title

log = logging.getLogger(__name__)

#: Least seconds between two refreshes a request for an unknown title asks for
#: (:meth:`ServingModels.refreshed_for_miss`).
MISS_REFRESH_S = 0.25

CHECKPOINT = "top-picks"
ARTWORK_CHECKPOINT = "artwork-policy"
#: Titles kept per country in the popularity cache.
POPULARITY_LIMIT = 500
#: Titles whose content-neighbour ranking is kept per catalog snapshot.
NEIGHBOUR_CACHE = 4096


@dataclass(frozen=True)
class CatalogSnapshot:
    """One catalog version and the indexes derived from it (never replaced once built; only
    the content-neighbour cache fills up, on the event loop)."""

    version: int
    catalog: Catalog
    search: SearchIndex
    #: cast member -> title ids
    by_cast: dict[str, list[str]] = field(default_factory=dict)
    #: title id -> ``(genres, cast)`` as sets
    facets: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    _neighbours: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)

    @classmethod
    def build(cls, version: int, titles: Sequence[Title]) -> CatalogSnapshot:
        """Index ``titles`` (CPU work: call it in a thread)."""
        catalog = Catalog(titles)
        catalog.genres()  # build the lazy genre index now, not on the event loop
        by_cast: dict[str, list[str]] = {}
        for t in titles:
            for c in t.cast:
                by_cast.setdefault(c, []).append(t.title_id)
        facets = {t.title_id: (frozenset(t.genres), frozenset(t.cast)) for t in titles}
        return cls(version, catalog, SearchIndex(titles), by_cast, facets)

    def related_ids(self, title_id: str) -> set[str]:
        """Titles sharing a genre or a cast member with ``title_id`` (itself excluded): the
        only ones with a positive content similarity to it."""
        genres, cast = self.facets.get(title_id, (frozenset(), frozenset()))
        ids: set[str] = set()
        for g in genres:
            ids.update(self.catalog.by_genre(g))
        for c in cast:
            ids.update(self.by_cast.get(c, ()))
        ids.discard(title_id)
        return ids

    def content_neighbours(self, title_id: str) -> list[str]:
        """Related titles ordered as ``similar_titles`` orders content neighbours (content
        similarity descending, then title id), computed once per title and cached (LRU)."""
        hit = self._neighbours.get(title_id)
        if hit is not None:
            self._neighbours.move_to_end(title_id)
            return hit
        ga, ca = self.facets.get(title_id, (frozenset(), frozenset()))
        scored = []
        for tid in self.related_ids(title_id):
            gb, cb = self.facets[tid]
            union = len(ga | gb)
            # the formula of online_models.similarity.content_similarity, on prebuilt sets
            genre = len(ga & gb) / union if union else 0.0
            score = round(0.8 * genre + 0.2 * (1.0 if ca & cb else 0.0), 6)
            if score > 0:
                scored.append((-score, tid))
        scored.sort()
        ranked = [tid for _, tid in scored]
        self._neighbours[title_id] = ranked
        if len(self._neighbours) > NEIGHBOUR_CACHE:
            self._neighbours.popitem(last=False)
        return ranked


EMPTY = CatalogSnapshot.build(-1, [])


class ServingModels:
    """The catalog snapshot, the Top Picks model and a short-lived popularity cache.

    Parameters
    ----------
    store
        Where the catalog, checkpoints and trending counts live.
    refresh_interval_s
        Period of the background refresh.
    popularity_half_life_s
        Half-life of the long-horizon popularity lists (``Settings.popularity_half_life_s``),
        for the epoch.
    popularity_ttl_s
        How long one country's popularity is reused.
    """

    def __init__(self, store: PipelineStore, *, refresh_interval_s: float = 2.0,
                 popularity_half_life_s: float = 30 * 86400.0,
                 popularity_ttl_s: float = 2.0, artwork_policy: str = "lin_ucb",
                 seed: int = 42) -> None:
        self.store = store
        self.refresh_interval_s = refresh_interval_s
        self.popularity_half_life_s = popularity_half_life_s
        self.popularity_ttl_s = popularity_ttl_s
        self.snapshot: CatalogSnapshot = EMPTY
        self.model: TopPicksModel | None = None
        #: The artwork bandit (the worker's latest checkpoint, else a fresh one): the server
        #: only chooses with it; the worker learns.
        self.artwork_policy: ArtworkPolicy = make_policy(artwork_policy, seed)
        self._reseed = random.Random(seed)
        self.loaded = False
        self.refreshes = 0
        self.model_errors = 0
        #: The snapshot version the models were loaded from (-1: none yet).
        self._model_version = -1
        self._popularity: dict[str, tuple[float, dict[str, float]]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        #: When the last refresh finished (monotonic seconds; :meth:`refreshed_for_miss`).
        self._refreshed_at = float("-inf")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the periodic refresh on the running loop (idempotent)."""
        if self._task is None:
            self._stop.clear()  # started again after aclose
            self._task = asyncio.create_task(self._refresh_loop(), name="serving-models")

    async def aclose(self) -> None:
        """Stop the refresh: it ends at once, or after the refresh under way.

        The stop is flagged, not only cancelled: on Python 3.11 a cancel that lands as the
        Redis client finishes a write with a socket timeout is lost (its
        ``asyncio.wait_for`` returns the result instead, CPython gh-86296), and a loop
        stopped by cancel alone then ran on forever and hung the server's shutdown.
        """
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def ensure(self) -> CatalogSnapshot:
        """The current snapshot, loading it first if nothing was loaded yet (store errors
        propagate, so a request answers 503 rather than an empty result)."""
        if not self.loaded:
            await self.refresh(only_if_unloaded=True)
        return self.snapshot

    async def refreshed_for_miss(self) -> CatalogSnapshot:
        """The snapshot after one more refresh, unless one finished within the last
        :data:`MISS_REFRESH_S`: for a request the snapshot cannot answer because a page was
        made from a newer catalog than the last refresh saw (a process that started before
        the catalog was stored, or a title added since): the home page of a member with a
        page while no catalog is loaded, the placeholder art of a title it lacks. Bounded,
        so requests for titles that do not exist cost Redis at most two small reads that
        often."""
        if time.monotonic() - self._refreshed_at >= MISS_REFRESH_S:
            await self.refresh()
        return self.snapshot

    async def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # keep serving what is loaded; retry next period
                log.warning("serving models refresh failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_interval_s):
                    await self._stop.wait()

    # -- refresh ------------------------------------------------------------------------------
    async def refresh(self, only_if_unloaded: bool = False) -> None:
        """Reload the catalog when its version changed and the models when the snapshot
        version changed (two small reads when nothing did); one refresh at a time."""
        async with self._lock:
            if only_if_unloaded and self.loaded:
                return
            loop = asyncio.get_running_loop()
            version, model_version = await asyncio.gather(
                self.store.catalog_version(), self.store.snapshot_version())
            if model_version != self._model_version:
                blobs = await self.store.load_checkpoints([CHECKPOINT, ARTWORK_CHECKPOINT])
                self._model_version = model_version
                await self._load_artwork(loop, blobs[ARTWORK_CHECKPOINT])
                await self._load_model(loop, blobs[CHECKPOINT])
            if version != self.snapshot.version:
                version, titles = await self.store.load_catalog()
                self.snapshot = await loop.run_in_executor(
                    None, CatalogSnapshot.build, version, titles)
                log.info("catalog version %d loaded: %d titles", version, len(titles))
            self.loaded = True
            self.refreshes += 1
            self._refreshed_at = time.monotonic()

    async def _load_artwork(self, loop: asyncio.AbstractEventLoop, art: bytes | None) -> None:
        if art is None:
            return
        try:
            policy = await loop.run_in_executor(None, ArtworkPolicy.from_bytes, art)
        except Exception as exc:  # keep choosing with the previous policy
            self.model_errors += 1
            log.error("artwork checkpoint not loaded: %s: %s", type(exc).__name__, exc)
            return
        if policy.name == self.artwork_policy.name:
            # the checkpoint carries the worker's RNG state, which never moves (the worker
            # only learns): without a fresh seed every reload would replay the same draws
            # (measured in docs/artwork.md)
            policy._rng.seed(self._reseed.getrandbits(64))
            self.artwork_policy = policy

    async def _load_model(self, loop: asyncio.AbstractEventLoop, data: bytes | None) -> None:
        if data is None:
            return
        try:
            self.model = await loop.run_in_executor(None, TopPicksModel.from_bytes, data)
        except Exception as exc:  # keep the previous model until a newer version
            self.model_errors += 1
            log.error("top-picks checkpoint not loaded: %s: %s", type(exc).__name__, exc)

    # -- popularity ---------------------------------------------------------------------------
    async def popularity(self, country: str | None, now_ms: int) -> dict[str, float]:
        """Trending scores scaled to [0, 1] (top title = 1) in ``country``, or in all
        countries when ``country`` is ``None`` or has no plays yet; cached briefly."""
        key = country or ALL_COUNTRIES
        hit = self._popularity.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.popularity_ttl_s:
            return hit[1]
        epoch = epoch_of(now_ms, self.popularity_half_life_s)
        lists = [popular_list(c) for c in dict.fromkeys((key, ALL_COUNTRIES))]
        top = await self.store.top_trending(lists, epoch, POPULARITY_LIMIT)
        ranked = top.get(lists[0]) or top.get(popular_list(ALL_COUNTRIES)) or []
        best = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
        pop = {t: s / best for t, s in ranked}
        self._popularity[key] = (now, pop)
        if len(self._popularity) > 512:  # countries are few; bound it anyway
            oldest = min(self._popularity, key=lambda k: self._popularity[k][0])
            del self._popularity[oldest]
        return pop
