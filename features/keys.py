"""Redis key builders: the only place key names are spelled.

Pure functions of a prefix and ids, so the worker, the server, tests and tools agree.

>>> page_key("hs:", "p1")
'hs:page:p1'
>>> default_page_key("hs:", "US")
'hs:page:__default__:US'
>>> trending_key("hs:", "US", 3)
'hs:trending:US:3'
"""

from __future__ import annotations

import hashlib

#: Country code used for the all-countries trending list and default page.
ALL_COUNTRIES = "ALL"


def page_key(prefix: str, profile_id: str) -> str:
    """The materialized home page (JSON) of one profile."""
    return f"{prefix}page:{profile_id}"


def default_page_key(prefix: str, country: str) -> str:
    """The non-personalized page for members without history, per country."""
    return f"{prefix}page:__default__:{country}"


def profile_key(prefix: str, profile_id: str) -> str:
    """The per-profile feature state (JSON)."""
    return f"{prefix}profile:{profile_id}"


def progress_key(prefix: str, profile_id: str) -> str:
    """The resume positions of a profile's titles in progress (JSON, written with the
    state): what the server's Continue Watching check reads instead of the whole state."""
    return f"{prefix}progress:{profile_id}"


def profile_meta_key(prefix: str, profile_id: str) -> str:
    """A profile's account settings (JSON): kids, rating limit, country."""
    return f"{prefix}profile-meta:{profile_id}"


def similar_key(prefix: str, title_id: str) -> str:
    """A title's "similar titles" list (JSON ``[[title_id, score], ...]``)."""
    return f"{prefix}similar:{title_id}"


def artwork_key(prefix: str, profile_id: str) -> str:
    """Hash of title id -> the member's current artwork assignment (JSON)."""
    return f"{prefix}artwork:{profile_id}"


#: Suffix of the long-horizon popularity list kept beside each country's trending list.
POPULAR_SUFFIX = "~popular"


def popular_list(country: str) -> str:
    """The list name (the ``country`` of :func:`trending_key`) of ``country``'s long-horizon
    popularity: the same forward-decayed counts with ``HOMESTREAM_POPULARITY_HALF_LIFE_S``.

    >>> trending_key("hs:", popular_list("US"), 0)
    'hs:trending:US~popular:0'
    """
    return f"{country}{POPULAR_SUFFIX}"


def trending_key(prefix: str, country: str, epoch: int) -> str:
    """Forward-decayed play counts (sorted set) of one country in one decay epoch."""
    return f"{prefix}trending:{country}:{epoch}"


def catalog_key(prefix: str) -> str:
    """Hash of title id -> catalog record (JSON)."""
    return f"{prefix}catalog"


def catalog_version_key(prefix: str) -> str:
    """Counter bumped on every catalog change, so workers know to reload."""
    return f"{prefix}catalog:version"


def checkpoint_key(prefix: str, name: str) -> str:
    """A model checkpoint (bytes)."""
    return f"{prefix}model:{name}"


def stats_key(prefix: str) -> str:
    """Hash of pipeline counters (events applied, duplicates, dead letters, ...)."""
    return f"{prefix}stats"


def artwork_due_key(prefix: str, partition: int) -> str:
    """Sorted set of profile id -> event time (ms) of its oldest artwork decision still
    waiting for a reward, for the profiles of one event-topic partition (``-1``: profiles
    whose partition is unknown). The worker that owns the partition settles them.

    >>> artwork_due_key("hs:", 3)
    'hs:artwork-due:3'
    """
    return f"{prefix}artwork-due:{partition}"


def model_version_key(prefix: str) -> str:
    """The version of the learner's latest model snapshot (an integer): workers and servers
    poll it and reload the checkpoints only when it moved."""
    return f"{prefix}model:version"


def model_covered_key(prefix: str) -> str:
    """The model-updates offset the latest snapshot covers (a learner that lost its
    partition cannot overwrite a newer snapshot with an older one)."""
    return f"{prefix}model:covered"


def member_keys(prefix: str, profile_id: str) -> list[str]:
    """Every key that belongs to one member alone (what erasing the member deletes; the
    member is also a value in the due sets, :func:`artwork_due_key`).

    >>> member_keys("hs:", "p1")
    ['hs:page:p1', 'hs:profile:p1', 'hs:progress:p1', 'hs:profile-meta:p1', 'hs:artwork:p1']
    """
    return [page_key(prefix, profile_id), profile_key(prefix, profile_id),
            progress_key(prefix, profile_id), profile_meta_key(prefix, profile_id),
            artwork_key(prefix, profile_id)]


def profile_digest(profile_id: str) -> str:
    """The SHA-256 hex digest of a profile id: how erasure records name a member without
    naming them."""
    return hashlib.sha256(profile_id.encode("utf-8")).hexdigest()


def erased_key(prefix: str, profile_id: str) -> str:
    """Marker (with a TTL) of an erased member, named by :func:`profile_digest`: the worker
    drops events of marked members still in flight.

    >>> erased_key("hs:", "p1")[:20]
    'hs:erased:f64551fcd6'
    """
    return f"{prefix}erased:{profile_digest(profile_id)}"


def erasures_key(prefix: str) -> str:
    """Sorted set of the digests of erased members by erasure time (ms), kept as long as the
    markers: the learner forgets the members whose digests appear."""
    return f"{prefix}erasures"
