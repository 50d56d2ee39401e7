"""One storage interface for pipeline state, with an in-memory and a Redis implementation.

Both pass the same contract suite (``tests/contract/test_store_contract.py``). The worker
writes through :meth:`PipelineStore.commit_batch` (profile states, trending increments and
counters in one atomic transaction) and :meth:`PipelineStore.write_pages` (each page one
``SET``, so a reader never sees half a page); the server only reads pages.
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Mapping, Sequence

import orjson

from features import keys
from features.profile import ProfileState
from features.trending import merge_epochs
from topics.models import Title

#: ``(country, epoch, title_id, increment)``
TrendingIncrement = tuple[str, int, str, float]
#: ``(partition, profile_id, oldest pending artwork decision ms or None = nothing pending)``
ArtworkDue = tuple[int, str, int | None]


#: KEYS[1] covered offset; ARGV[1] the new one, then key/value pairs: all set, or none when
#: a stored snapshot already covers that offset (one script: atomic).
_SAVE_SNAPSHOT = """
local covered = tonumber(redis.call('GET', KEYS[1]) or '-1')
if covered >= tonumber(ARGV[1]) then return 0 end
redis.call('MSET', unpack(ARGV, 2))
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class PipelineStore(abc.ABC):
    """Where profile state, trending counts, pages, the catalog and checkpoints live."""

    # -- profiles -------------------------------------------------------------------------
    @abc.abstractmethod
    async def load_profiles(self, profile_ids: Sequence[str]) -> dict[str, ProfileState]:
        """States of the given profiles; profiles never seen are absent."""

    @abc.abstractmethod
    async def commit_batch(self, states: Sequence[ProfileState],
                           trending: Sequence[TrendingIncrement],
                           counters: Mapping[str, int],
                           art_due: Sequence[ArtworkDue] = ()) -> None:
        """Atomically store states, add trending increments, add to counters and index the
        profiles' pending artwork decisions by partition (``art_due``; ``None`` removes)."""

    @abc.abstractmethod
    async def due_artwork(self, partitions: Sequence[int], before_ms: int,
                          limit: int) -> list[tuple[int, str]]:
        """``(partition, profile_id)`` of profiles of ``partitions`` whose oldest pending
        artwork decision is older than ``before_ms`` (at most ``limit`` per partition)."""

    @abc.abstractmethod
    async def load_profile_meta(self, profile_ids: Sequence[str]) -> dict[str, dict]:
        """Account settings (JSON objects) of the given profiles; absent when unknown."""

    @abc.abstractmethod
    async def put_profile_meta(self, metas: Mapping[str, dict]) -> None:
        """Store account settings by profile id."""

    # -- artwork assignments --------------------------------------------------------------
    @abc.abstractmethod
    async def load_artwork(self, profile_id: str) -> dict[str, dict]:
        """The member's current artwork assignments: title id -> JSON object."""

    @abc.abstractmethod
    async def save_artwork(self, profile_id: str, assignments: Mapping[str, dict]) -> None:
        """Add or replace artwork assignments of the member."""

    # -- item-to-item ---------------------------------------------------------------------
    @abc.abstractmethod
    async def write_similar(self, lists: Mapping[str, list[tuple[str, float]]]) -> None:
        """Store "similar titles" lists by title id."""

    @abc.abstractmethod
    async def get_similar(self, title_id: str) -> list[tuple[str, float]] | None:
        """A title's stored similar-titles list, or ``None``."""

    # -- trending -------------------------------------------------------------------------
    @abc.abstractmethod
    async def _top_in_epoch(self, country: str, epoch: int, limit: int) -> list[tuple[str, float]]:
        ...

    async def top_trending(self, countries: Sequence[str], epoch: int,
                           limit: int) -> dict[str, list[tuple[str, float]]]:
        """Top titles per country, merging ``epoch`` with the one before it."""
        out = {}
        for c in countries:
            cur = await self._top_in_epoch(c, epoch, 2 * limit)
            prev = await self._top_in_epoch(c, epoch - 1, 2 * limit)
            out[c] = merge_epochs(cur, prev, limit)
        return out

    # -- pages ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def write_pages(self, personal: Mapping[str, bytes],
                          defaults: Mapping[str, bytes]) -> None:
        """Store pages by profile id and default pages by country."""

    @abc.abstractmethod
    async def get_page(self, profile_id: str) -> bytes | None:
        """A profile's materialized page (JSON bytes), or ``None``."""

    @abc.abstractmethod
    async def get_default_page(self, country: str) -> bytes | None:
        """The non-personalized page for ``country``, or ``None``."""

    # -- catalog --------------------------------------------------------------------------
    @abc.abstractmethod
    async def put_titles(self, titles: Sequence[Title], deleted: Sequence[str] = ()) -> int:
        """Upsert titles and delete ids; return the new catalog version."""

    @abc.abstractmethod
    async def catalog_version(self) -> int:
        ...

    @abc.abstractmethod
    async def load_catalog(self) -> tuple[int, list[Title]]:
        """``(version, titles)``."""

    # -- checkpoints and counters ---------------------------------------------------------
    @abc.abstractmethod
    async def save_checkpoints(self, blobs: Mapping[str, bytes], version: int) -> None:
        """Save several checkpoints at once with the version they make (what
        :meth:`snapshot_version` answers): a reader sees all of them and the version, or
        none. Readers poll the version and fetch the blobs only when it moved."""

    @abc.abstractmethod
    async def load_checkpoint(self, name: str) -> bytes | None:
        ...

    async def load_checkpoints(self, names: Sequence[str]) -> dict[str, bytes | None]:
        """Several checkpoints read together (one snapshot, never a mix of two)."""
        return {n: await self.load_checkpoint(n) for n in names}

    @abc.abstractmethod
    async def save_snapshot(self, blobs: Mapping[str, bytes], version: int,
                            covered_offset: int,
                            similar: Mapping[str, list[tuple[str, float]]]) -> bool:
        """Save a learner's snapshot in one atomic write: the checkpoints, the similar-titles
        lists of the titles that changed and the version; refused (``False``) when a stored
        snapshot covers ``covered_offset`` or later (written by a newer learner)."""

    @abc.abstractmethod
    async def snapshot_version(self) -> int:
        """The latest snapshot's version (0: none)."""

    @abc.abstractmethod
    async def counters(self) -> dict[str, int]:
        ...

    @abc.abstractmethod
    async def erase_profiles(self, profile_ids: Sequence[str], partitions: int,
                             ttl_s: float) -> int:
        """Remove the members from every per-member key and due set (partitions ``-1`` to
        ``partitions - 1``) and mark them erased for ``ttl_s`` (by a digest of the id), in one
        transaction; returns the keys deleted. Learned models are not in these keys."""

    @abc.abstractmethod
    async def erased(self, profile_ids: Sequence[str]) -> set[str]:
        """Which of the members are marked erased."""

    @abc.abstractmethod
    async def erasures_since(self, since_ms: int) -> list[tuple[str, int]]:
        """``(profile digest, erased at ms)`` of the erasures at or after ``since_ms``."""

    async def ping(self) -> bool:
        """True when the backing store answers (readiness probes); raises if unreachable."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def parse_similar(raw: bytes) -> list[tuple]:
    """A stored similar-titles list (:func:`~features.keys.similar_key`) as tuples.

    >>> parse_similar(b'[["t2", 0.5]]')
    [('t2', 0.5)]
    """
    return [tuple(x) for x in orjson.loads(raw)]


def progress_json(state: ProfileState) -> bytes:
    """What :func:`~features.keys.progress_key` holds: the resume position of each title the
    member has in progress (not finished), written with every state.

    >>> s = ProfileState("p1")
    >>> progress_json(s)
    b'{"resume":{}}'
    """
    finished = state.finished
    return orjson.dumps({"resume": {t: p.position_s for t, p in state.progress.items()
                                    if t not in finished}})


class InMemoryStore(PipelineStore):
    """Dict-backed store for unit tests and single-process tools."""

    def __init__(self) -> None:
        self.profiles: dict[str, bytes] = {}
        self.trending: dict[tuple[str, int], dict[str, float]] = {}
        self.pages: dict[str, bytes] = {}
        self.default_pages: dict[str, bytes] = {}
        self.catalog: dict[str, bytes] = {}
        self.version = 0
        self.checkpoints: dict[str, bytes] = {}
        self._counters: dict[str, int] = {}
        self.metas: dict[str, bytes] = {}
        self.artwork: dict[str, dict[str, bytes]] = {}
        self.similar: dict[str, bytes] = {}
        self.art_due: dict[int, dict[str, int]] = {}
        self.model_version = 0
        self.snapshot_covered = -1
        #: Members marked erased (no TTL in memory).
        self.erased_ids: set[str] = set()
        #: Digest of each erased member -> erasure time (ms).
        self.erasures: dict[str, int] = {}

    async def load_profile_meta(self, profile_ids):
        return {p: orjson.loads(self.metas[p]) for p in profile_ids if p in self.metas}

    async def load_artwork(self, profile_id):
        return {t: orjson.loads(v) for t, v in self.artwork.get(profile_id, {}).items()}

    async def save_artwork(self, profile_id, assignments) -> None:
        self.artwork.setdefault(profile_id, {}).update(
            {t: orjson.dumps(a) for t, a in assignments.items()})

    async def put_profile_meta(self, metas) -> None:
        self.metas.update({p: orjson.dumps(m) for p, m in metas.items()})

    async def write_similar(self, lists) -> None:
        self.similar.update({t: orjson.dumps(v) for t, v in lists.items()})

    async def get_similar(self, title_id):
        raw = self.similar.get(title_id)
        return None if raw is None else [tuple(x) for x in orjson.loads(raw)]

    async def load_profiles(self, profile_ids: Sequence[str]) -> dict[str, ProfileState]:
        return {p: ProfileState.from_json(self.profiles[p])
                for p in profile_ids if p in self.profiles}

    async def commit_batch(self, states, trending, counters, art_due=()) -> None:
        for s in states:
            self.profiles[s.profile_id] = s.to_json()
        for part, pid, oldest in art_due:
            if oldest is None:
                self.art_due.get(part, {}).pop(pid, None)
            else:
                self.art_due.setdefault(part, {})[pid] = oldest
        for country, epoch, tid, inc in trending:
            z = self.trending.setdefault((country, epoch), {})
            z[tid] = z.get(tid, 0.0) + inc
        for k, v in counters.items():
            self._counters[k] = self._counters.get(k, 0) + v

    async def due_artwork(self, partitions, before_ms, limit):
        out = []
        for part in partitions:
            due = sorted((ms, pid) for pid, ms in self.art_due.get(part, {}).items()
                         if ms < before_ms)
            out += [(part, pid) for _, pid in due[:limit]]
        return out

    async def _top_in_epoch(self, country, epoch, limit):
        z = self.trending.get((country, epoch), {})
        return sorted(z.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    async def write_pages(self, personal, defaults) -> None:
        self.pages.update(personal)
        self.default_pages.update(defaults)

    async def get_page(self, profile_id):
        return self.pages.get(profile_id)

    async def get_default_page(self, country):
        return self.default_pages.get(country)

    async def put_titles(self, titles, deleted=()) -> int:
        for t in titles:
            self.catalog[t.title_id] = t.model_dump_json().encode()
        for tid in deleted:
            self.catalog.pop(tid, None)
        self.version += 1
        return self.version

    async def catalog_version(self) -> int:
        return self.version

    async def load_catalog(self):
        return self.version, [Title.model_validate_json(v) for v in self.catalog.values()]

    async def save_checkpoints(self, blobs, version) -> None:
        self.checkpoints.update(blobs)
        self.model_version = version

    async def load_checkpoint(self, name):
        return self.checkpoints.get(name)

    async def save_snapshot(self, blobs, version, covered_offset, similar) -> bool:
        if covered_offset <= self.snapshot_covered:
            return False
        self.checkpoints.update(blobs)
        self.similar.update({t: orjson.dumps(v) for t, v in similar.items()})
        self.snapshot_covered, self.model_version = covered_offset, version
        return True

    async def snapshot_version(self) -> int:
        return self.model_version

    async def counters(self) -> dict[str, int]:
        return dict(self._counters)

    async def erase_profiles(self, profile_ids, partitions, ttl_s) -> int:
        n = 0
        for pid in profile_ids:
            for d in (self.pages, self.profiles, self.metas, self.artwork):
                n += d.pop(pid, None) is not None
            for due in self.art_due.values():
                due.pop(pid, None)
            self.erased_ids.add(pid)
            self.erasures[keys.profile_digest(pid)] = int(time.time() * 1000)
        return n

    async def erased(self, profile_ids) -> set[str]:
        return {p for p in profile_ids if p in self.erased_ids}

    async def erasures_since(self, since_ms):
        return [(d, ms) for d, ms in self.erasures.items() if ms >= since_ms]

    async def ping(self) -> bool:
        return True


class _PythonPacking:
    """Mixin for a redis-py connection class: commands are packed by redis-py's Python
    packer even where hiredis is installed (replies are still parsed by hiredis)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._command_packer = None  # pack_command falls back to the Python packer


@functools.cache
def python_packed(connection_class: type) -> type:
    """``connection_class`` (TCP, TLS or Unix socket) packing commands in Python. hiredis
    copies every argument into one buffer (measured here: ~1.4 ms a MB, 1 ms for an
    ``MSET`` of 50 pages of 15 KB), while the Python packer leaves each value over 6 KB as
    its own chunk (~0.02 ms for the same command)."""
    return type(f"PythonPacked{connection_class.__name__}", (_PythonPacking, connection_class),
                {})


class RedisStore(PipelineStore):
    """Redis-backed store; every multi-key write is one pipelined ``MULTI``/``EXEC``.

    Parameters
    ----------
    client
        A ``redis.asyncio.Redis`` (bytes responses, ``decode_responses=False``).
    prefix
        Key prefix (``Settings.key_prefix``).
    """

    def __init__(self, client, prefix: str) -> None:  # client: redis.asyncio.Redis
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str, *, max_connections: int = 64,
                 pool_timeout_s: float = 5.0, socket_timeout_s: float | None = None,
                 large_values: bool = False) -> RedisStore:
        """A store on a pool of at most ``max_connections``; a caller finding them all busy
        waits up to ``pool_timeout_s`` for one (a burst of requests queues rather than
        failing with "too many connections"); ``socket_timeout_s`` bounds each connect and
        reply (a hung Redis raises ``TimeoutError`` instead of holding the caller).
        ``large_values`` (the worker: states and pages of several KB, MBs a command) packs
        commands with redis-py's Python packer (:func:`python_packed`)."""
        import redis.asyncio as aioredis
        from redis.asyncio.connection import parse_url

        extra = {}
        if large_values:  # the connection class of the URL's scheme, packing in Python
            scheme_class = parse_url(url).get("connection_class", aioredis.Connection)
            extra["connection_class"] = python_packed(scheme_class)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections,
            timeout=pool_timeout_s if socket_timeout_s is None else min(pool_timeout_s,
                                                                        socket_timeout_s),
            socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s, **extra)
        return cls(aioredis.Redis(connection_pool=pool, decode_responses=False), prefix)

    async def load_profiles(self, profile_ids):
        if not profile_ids:
            return {}
        raw = await self.client.mget([keys.profile_key(self.prefix, p) for p in profile_ids])
        return {p: ProfileState.from_json(v) for p, v in zip(profile_ids, raw, strict=True)
                if v is not None}

    async def load_profile_meta(self, profile_ids):
        if not profile_ids:
            return {}
        raw = await self.client.mget([keys.profile_meta_key(self.prefix, p) for p in profile_ids])
        return {p: orjson.loads(v) for p, v in zip(profile_ids, raw, strict=True)
                if v is not None}

    async def put_profile_meta(self, metas) -> None:
        if metas:
            await self.client.mset({keys.profile_meta_key(self.prefix, p): orjson.dumps(m)
                                    for p, m in metas.items()})

    async def load_artwork(self, profile_id):
        raw = await self.client.hgetall(keys.artwork_key(self.prefix, profile_id))
        return {t.decode(): orjson.loads(v) for t, v in raw.items()}

    async def save_artwork(self, profile_id, assignments) -> None:
        if assignments:
            await self.client.hset(keys.artwork_key(self.prefix, profile_id),
                                   mapping={t: orjson.dumps(a) for t, a in assignments.items()})

    async def write_similar(self, lists) -> None:
        if lists:
            await self.client.mset({keys.similar_key(self.prefix, t): orjson.dumps(v)
                                    for t, v in lists.items()})

    async def get_similar(self, title_id):
        raw = await self.client.get(keys.similar_key(self.prefix, title_id))
        return None if raw is None else parse_similar(raw)

    async def commit_batch(self, states, trending, counters, art_due=()) -> None:
        if not states and not trending and not counters and not art_due:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            if states:
                pipe.mset({k: v for s in states for k, v in (
                    (keys.profile_key(self.prefix, s.profile_id), s.to_json()),
                    (keys.progress_key(self.prefix, s.profile_id), progress_json(s)))})
            for country, epoch, tid, inc in trending:
                pipe.zincrby(keys.trending_key(self.prefix, country, epoch), inc, tid)
            skey = keys.stats_key(self.prefix)
            for k, v in counters.items():
                if v:
                    pipe.hincrby(skey, k, v)
            adds: dict[int, dict[str, int]] = {}
            removes: dict[int, list[str]] = {}
            for part, pid, oldest in art_due:
                if oldest is None:
                    removes.setdefault(part, []).append(pid)
                else:
                    adds.setdefault(part, {})[pid] = oldest
            for part, mapping in adds.items():
                pipe.zadd(keys.artwork_due_key(self.prefix, part), mapping)
            for part, pids in removes.items():
                pipe.zrem(keys.artwork_due_key(self.prefix, part), *pids)
            await pipe.execute()

    async def due_artwork(self, partitions, before_ms, limit):
        if not partitions:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for part in partitions:
                pipe.zrangebyscore(keys.artwork_due_key(self.prefix, part), "-inf",
                                   f"({int(before_ms)}", start=0, num=limit)
            res = await pipe.execute()
        return [(part, pid.decode()) for part, pids in zip(partitions, res, strict=True)
                for pid in pids]

    async def _top_in_epoch(self, country, epoch, limit):
        rows = await self.client.zrevrange(keys.trending_key(self.prefix, country, epoch),
                                           0, limit - 1, withscores=True)
        return [(t.decode(), float(s)) for t, s in rows]

    async def top_trending(self, countries, epoch, limit):
        # one round trip for every country and both epochs
        async with self.client.pipeline(transaction=False) as pipe:
            for c in countries:
                for e in (epoch, epoch - 1):
                    pipe.zrevrange(keys.trending_key(self.prefix, c, e), 0, 2 * limit - 1,
                                   withscores=True)
            res = await pipe.execute()
        out = {}
        for i, c in enumerate(countries):
            cur, prev = res[2 * i], res[2 * i + 1]
            out[c] = merge_epochs([(t.decode(), float(s)) for t, s in cur],
                                  [(t.decode(), float(s)) for t, s in prev], limit)
        return out

    async def write_pages(self, personal, defaults) -> None:
        mapping = {keys.page_key(self.prefix, p): v for p, v in personal.items()}
        mapping.update({keys.default_page_key(self.prefix, c): v for c, v in defaults.items()})
        if mapping:
            await self.client.mset(mapping)

    async def get_page(self, profile_id):
        return await self.client.get(keys.page_key(self.prefix, profile_id))

    async def get_default_page(self, country):
        return await self.client.get(keys.default_page_key(self.prefix, country))

    async def put_titles(self, titles, deleted=()) -> int:
        ckey = keys.catalog_key(self.prefix)
        async with self.client.pipeline(transaction=True) as pipe:
            if titles:
                pipe.hset(ckey, mapping={t.title_id: t.model_dump_json() for t in titles})
            if deleted:
                pipe.hdel(ckey, *deleted)
            pipe.incr(keys.catalog_version_key(self.prefix))
            res = await pipe.execute()
        return int(res[-1])

    async def catalog_version(self) -> int:
        v = await self.client.get(keys.catalog_version_key(self.prefix))
        return int(v or 0)

    async def load_catalog(self):
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(keys.catalog_version_key(self.prefix))
            pipe.hgetall(keys.catalog_key(self.prefix))
            version, raw = await pipe.execute()
        return int(version or 0), [Title.model_validate_json(v) for v in raw.values()]

    async def save_checkpoints(self, blobs, version) -> None:
        # MSET is atomic: the blobs and their version together
        await self.client.mset({keys.model_version_key(self.prefix): str(version),
                                **{keys.checkpoint_key(self.prefix, n): d
                                   for n, d in blobs.items()}})

    async def load_checkpoint(self, name):
        return await self.client.get(keys.checkpoint_key(self.prefix, name))

    async def load_checkpoints(self, names):
        values = await self.client.mget([keys.checkpoint_key(self.prefix, n) for n in names])
        return dict(zip(names, values, strict=True))

    async def save_snapshot(self, blobs, version, covered_offset, similar) -> bool:
        kv: list = []
        for n, d in blobs.items():
            kv += [keys.checkpoint_key(self.prefix, n), d]
        for t, v in similar.items():
            kv += [keys.similar_key(self.prefix, t), orjson.dumps(v)]
        kv += [keys.model_version_key(self.prefix), str(version)]
        done = await self.client.eval(
            _SAVE_SNAPSHOT, 1, keys.model_covered_key(self.prefix), covered_offset, *kv)
        return bool(done)

    async def snapshot_version(self) -> int:
        return int(await self.client.get(keys.model_version_key(self.prefix)) or 0)

    async def counters(self) -> dict[str, int]:
        raw = await self.client.hgetall(keys.stats_key(self.prefix))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def erase_profiles(self, profile_ids, partitions, ttl_s) -> int:
        if not profile_ids:
            return 0
        now_ms = int(time.time() * 1000)
        log_key = keys.erasures_key(self.prefix)
        async with self.client.pipeline(transaction=True) as pipe:
            for pid in profile_ids:
                pipe.set(keys.erased_key(self.prefix, pid), b"1", px=int(ttl_s * 1000))
            pipe.delete(*(k for pid in profile_ids for k in keys.member_keys(self.prefix, pid)))
            for part in range(-1, partitions):
                pipe.zrem(keys.artwork_due_key(self.prefix, part), *profile_ids)
            pipe.zadd(log_key, {keys.profile_digest(p): now_ms for p in profile_ids})
            pipe.zremrangebyscore(log_key, "-inf", now_ms - int(ttl_s * 1000))
            replies = await pipe.execute()
        return int(replies[len(profile_ids)])

    async def erasures_since(self, since_ms):
        raw = await self.client.zrangebyscore(keys.erasures_key(self.prefix), since_ms, "+inf",
                                              withscores=True)
        return [(d.decode(), int(ms)) for d, ms in raw]

    async def erased(self, profile_ids) -> set[str]:
        if not profile_ids:
            return set()
        raw = await self.client.mget([keys.erased_key(self.prefix, p) for p in profile_ids])
        return {p for p, v in zip(profile_ids, raw, strict=True) if v is not None}

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
