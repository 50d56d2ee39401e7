"""The home page's one read: the member's page (or a default page), settings, resume
positions and artwork assignments in one Redis round trip, and the parsing of what it returns.

A Lua script returns the member's page or else the first default page that exists, the
settings, the resume positions of the titles in progress (only when asked: the Continue
Watching check needs them; the worker writes them beside the state,
:func:`~features.keys.progress_key`) and the artwork assignments (not when nothing is kept);
settings are parsed once per distinct stored value, the positions only when used.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from features import keys
from features.keys import ALL_COUNTRIES
from features.profile import ProfileMeta, ProfileState
from features.state_format import playhead_of
from features.store import PipelineStore, RedisStore, parse_similar
from serving.redis_mux import RedisMux
from serving.validation import COUNTRY_RE
from topics.models import MATURITY_LEVELS

log = logging.getLogger("serving.app")

#: Used when a profile's stored settings do not parse: the strictest guardrails.
FAIL_CLOSED_META = ProfileMeta(kids=True, max_rating="G")

#: One round trip: KEYS = page, settings, resume positions, assignments, state, default pages
#: by preference; ARGV[1] = '1' to read the resume positions too (the whole state when a
#: worker of an earlier version wrote none), ARGV[2] = '0' to leave the assignments out
#: (nothing is kept when the sticky period is 0). Returns ``{page or false, 0 (personal) or
#: 1-based default index, settings, positions or state (or false), assignments as a flat
#: field/value list}``.
READ_HOME_LUA = """
local page = redis.call('GET', KEYS[1])
local source = 0
if not page then
  for i = 6, #KEYS do
    page = redis.call('GET', KEYS[i])
    if page then source = i - 5 break end
  end
end
local state = false
if ARGV[1] == '1' then
  state = redis.call('GET', KEYS[3]) or redis.call('GET', KEYS[5]) or false
end
local assignments = {}
if ARGV[2] ~= '0' then assignments = redis.call('HGETALL', KEYS[4]) end
return {page or false, source, redis.call('GET', KEYS[2]) or false, state, assignments}
"""


#: The multiplexed read's script: KEYS = page, settings, resume positions, state, default
#: pages by preference; ARGV[1] as in :data:`READ_HOME_LUA`. The member's page and the
#: assignments travel as plain ``GET`` / ``HGETALL`` beside it (a value through Lua is copied
#: into a Lua string and back: ~35 KB a request); the script returns ``{default page or
#: false (only when the member has no page), 1-based default index or 0, settings,
#: positions or state (or false)}``.
READ_REST_LUA = """
local page = false
local source = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 5, #KEYS do
    page = redis.call('GET', KEYS[i])
    if page then source = i - 4 break end
  end
end
local state = false
if ARGV[1] == '1' then
  state = redis.call('GET', KEYS[3]) or redis.call('GET', KEYS[4]) or false
end
return {page or false, source, redis.call('GET', KEYS[2]) or false, state}
"""


@functools.lru_cache(maxsize=8192)
def parse_meta(raw: bytes | None) -> ProfileMeta:
    """A profile's settings from their stored JSON (parsed once per distinct value);
    defaults when absent; the strictest guardrails when they do not parse."""
    if raw is None:
        return ProfileMeta()
    try:
        meta = ProfileMeta.model_validate(orjson.loads(raw))
        if meta.max_rating is not None and meta.max_rating not in MATURITY_LEVELS:
            raise ValueError(f"unknown max_rating {meta.max_rating!r}")
        return meta
    except (ValidationError, ValueError) as exc:
        log.warning("a profile has invalid settings, serving kids guardrails: %s", exc)
        return FAIL_CLOSED_META


class InProgress(Protocol):
    """What the Continue Watching check needs of a member's state."""

    def resume_position(self, title_id: str) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ServeView:
    """What the server knows of a member's titles in progress: their resume positions, read
    from :func:`~features.keys.progress_key` (``{"resume": {title: seconds}}``, a few hundred
    bytes) or, for a state an earlier worker wrote without it, from the whole state (playheads
    named on read, :func:`~features.state_format.playhead_of`)."""

    resume: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes) -> ServeView:
        data = orjson.loads(raw)
        if "resume" in data:
            return cls(data["resume"] or {})
        finished = data.get("finished") or {}
        return cls({t: playhead_of(p).position_s for t, p in (data.get("progress") or {}).items()
                    if t not in finished})

    def resume_position(self, title_id: str) -> float | None:
        """Where to resume ``title_id``, in seconds, if it is in progress."""
        return self.resume.get(title_id)


def home_country(meta: ProfileMeta) -> str | None:
    """The profile's stored home country, if it is a well-formed code."""
    c = meta.country
    return c if isinstance(c, str) and COUNTRY_RE.fullmatch(c) else None


# -- the one read ---------------------------------------------------------------------------
@dataclass(slots=True)
class HomeReads:
    """What one home-page request read from the store."""

    page: bytes | None
    source: str | None                 # "personal", "default-<country>", None: no page
    meta: ProfileMeta
    parsed_state: InProgress | None    # the in-memory store's; Redis's is parsed on use
    stored_assignments: dict[str, Any] | None  # the in-memory store's; Redis's: ``flat``
    meta_raw: bytes | None = None
    #: The stored resume positions (or, from an earlier worker, the state), when read.
    state_raw: bytes | None = None
    state_read: bool = True
    #: The assignments as Redis returned them: title id, JSON, title id, JSON, ...
    flat: list[bytes] | None = None

    @property
    def assignments(self) -> dict[str, Any]:
        """Title id -> stored assignment (JSON bytes or dict)."""
        if self.stored_assignments is None:
            flat = self.flat or []
            self.stored_assignments = dict(zip([t.decode() for t in flat[::2]], flat[1::2],
                                               strict=True))
        return self.stored_assignments

    @property
    def state(self) -> InProgress | None:
        """The member's state as read (parsed on first use), ``None`` when absent or not
        read."""
        if self.parsed_state is None and self.state_raw:
            self.parsed_state = ServeView.from_json(self.state_raw)
        return self.parsed_state


_SCRIPTS: dict[int, tuple[RedisStore, Any]] = {}


def _script(store: RedisStore) -> Any:
    """The registered read script of ``store`` (EVALSHA, loaded again when Redis lost it)."""
    entry = _SCRIPTS.get(id(store))
    if entry is None or entry[0] is not store:
        entry = _SCRIPTS[id(store)] = (store, store.client.register_script(READ_HOME_LUA))
    return entry[1]


async def read_home(store: PipelineStore, profile_id: str, country: str | None,
                    with_state: bool = True, with_assignments: bool = True,
                    mux: RedisMux | None = None) -> HomeReads:
    """The page (or the first default page that exists: ``country``'s, then all
    countries'), settings, state (unless ``with_state`` is false) and assignments (unless
    ``with_assignments`` is false) of ``profile_id``: one round trip to Redis; a second one
    only when no country was asked for, no personal page exists and the profile's home
    country has a default page of its own. The state is parsed by :func:`state_view` when
    needed. With ``mux`` the script goes over that shared connection."""
    defaults = [c for c in dict.fromkeys((country, ALL_COUNTRIES)) if c is not None]
    meta_raw: bytes | None = None
    state_raw: bytes | None = None
    if isinstance(store, RedisStore):
        p = store.prefix
        script_keys = [keys.page_key(p, profile_id), keys.profile_meta_key(p, profile_id),
                       keys.progress_key(p, profile_id), keys.artwork_key(p, profile_id),
                       keys.profile_key(p, profile_id),
                       *(keys.default_page_key(p, c) for c in defaults)]
        script_args = ["1" if with_state else "0", "1" if with_assignments else "0"]
        if mux is not None:
            page, idx, meta_raw, state_raw, flat = await _read_mux(
                mux, script_keys, script_args[0], with_assignments)
        else:
            page, idx, meta_raw, state_raw, flat = await _script(store)(keys=script_keys,
                                                                         args=script_args)
        meta = parse_meta(meta_raw or None)
        meta_raw, state_raw = meta_raw or None, state_raw or None
        state: InProgress | None = None
        assignments: dict[str, Any] | None = None
    else:  # the in-memory store of tests and tools: the same answers, several calls
        page, metas, states, assignments = await asyncio.gather(
            store.get_page(profile_id), store.load_profile_meta([profile_id]),
            store.load_profiles([profile_id]), store.load_artwork(profile_id))
        raw_meta = metas.get(profile_id)
        meta = parse_meta(None if raw_meta is None else orjson.dumps(raw_meta))
        state = states.get(profile_id)
        idx = 0
        for i, c in enumerate(defaults if page is None else ()):
            page = await store.get_default_page(c)
            if page is not None:
                idx = i + 1
                break
    source = None if page is None else (
        "personal" if idx == 0 else f"default-{defaults[idx - 1]}")
    home = home_country(meta) if country is None else None
    if home is not None and source != "personal" and home != ALL_COUNTRIES:
        own = await store.get_default_page(home)
        if own is not None:
            page, source = own, f"default-{home}"
    if not isinstance(store, RedisStore):
        return HomeReads(page, source, meta, state, assignments)
    return HomeReads(page, source, meta, state, None, meta_raw, state_raw, with_state, flat)


async def _read_mux(mux: RedisMux, script_keys: list[str], with_state: str,
                    with_assignments: bool) -> tuple[Any, int, Any, Any, list[bytes]]:
    """:data:`READ_HOME_LUA`'s answer over ``mux``: the page and the assignments as plain
    commands beside :data:`READ_REST_LUA`, in one write."""
    page_key, meta_key, progress_key, artwork_key, state_key, *defaults = script_keys
    replies = await mux.with_script(
        READ_REST_LUA, [page_key, meta_key, progress_key, state_key, *defaults], [with_state],
        before=[(b"GET", page_key)],
        after=[(b"HGETALL", artwork_key)] if with_assignments else ())
    personal, (default, idx, meta_raw, state_raw) = replies[0], replies[1]
    flat = replies[2] if with_assignments else []
    if personal is not None:
        return personal, 0, meta_raw, state_raw, flat
    # no page of theirs (or it was written between the two commands: a default this once)
    return default, idx if default else 0, meta_raw, state_raw, flat


async def read_values(store: RedisStore, mux: RedisMux | None,
                      names: Sequence[str]) -> list[bytes | None]:
    """The values of the keys ``names`` (``None`` where absent) in one ``MGET``, over
    ``mux`` when given."""
    if mux is not None:
        return list(await mux.execute(b"MGET", *names))
    return list(await store.client.mget(list(names)))


async def member_reads(store: PipelineStore, mux: RedisMux | None, profile_id: str | None,
                       with_state: bool = False, similar_of: str | None = None
                       ) -> tuple[ProfileMeta, ProfileState | None, list[tuple] | None]:
    """A member's settings, their state (with ``with_state``) and the stored similar titles
    of ``similar_of``: one round trip to Redis (other stores: their own calls)."""
    if not isinstance(store, RedisStore):
        metas = await store.load_profile_meta([profile_id]) if profile_id is not None else {}
        states = await store.load_profiles([profile_id]) if (
            with_state and profile_id is not None) else {}
        similar = await store.get_similar(similar_of) if similar_of is not None else None
        meta_dict = metas.get(profile_id) if profile_id is not None else None
        return (parse_meta(None if meta_dict is None else orjson.dumps(meta_dict)),
                states.get(profile_id) if profile_id is not None else None, similar)
    names = [] if profile_id is None else [keys.profile_meta_key(store.prefix, profile_id)]
    if with_state and profile_id is not None:
        names.append(keys.profile_key(store.prefix, profile_id))
    if similar_of is not None:
        names.append(keys.similar_key(store.prefix, similar_of))
    values = await read_values(store, mux, names) if names else []
    meta = parse_meta(values[0]) if profile_id is not None else ProfileMeta()
    state_raw = values[1] if with_state and profile_id is not None else None
    similar_raw = values[-1] if similar_of is not None else None
    return (meta, ProfileState.from_json(state_raw) if state_raw else None,
            None if similar_raw is None else parse_similar(similar_raw))


async def state_view(store: PipelineStore, profile_id: str, reads: HomeReads) -> InProgress | None:
    """The member's state as the Continue Watching check reads it (read now if the first
    round trip left it out)."""
    if not reads.state_read and isinstance(store, RedisStore):
        reads.state_raw = (await store.client.get(keys.progress_key(store.prefix, profile_id))
                           or await store.client.get(keys.profile_key(store.prefix, profile_id)))
        reads.state_read = True
    return reads.state
