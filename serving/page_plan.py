"""A served page compiled once per process, then spliced for each request.

Between two renders by the worker, every request for a member's page differs only in the
request id, the time, the device and the artwork drawn for the titles of the first screen.
A :class:`PagePlan` holds the rest, built once: the page after the guardrails, its JSON
response cut where the first-screen artwork fields go, and its impressions as Avro bytes cut
where the per-request fields go. :class:`Decisions` holds what the artwork policy says about
those titles for one context (device, hour) and one policy version: each title's
propensities (computed in one :meth:`~online_models.bandits.base.ArtworkPolicy.propensities_many`
step, exactly today's numbers) and the pieces to write for each candidate. A request then
draws one artwork per title, joins the pieces and logs one prebuilt ``EventBatch``: no JSON
parsing, no per-item encoding. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from online_models.bandits.base import ArtworkPolicy, Choice, Context
from online_models.bandits.sticky import StickyAssignment
from online_models.page import PageRow
from serving.artwork import TitleArt, previous_assignment, request_context
from serving.resp import bulk_string
from topics.avro_bytes import array_block_header, double_bytes, long_bytes, string_bytes
from topics.codec import BATCH_SCHEMA, AvroCodec
from topics.models import MATERIALIZED_POLICY, Artwork, Impression

#: The item fields the server writes for a title whose artwork it decides.
ART_KEYS = ("artwork_id", "artwork_url", "propensity", "policy", "policy_version")
_MARK = "__homestream_artwork_slot__"
_MARK_BYTES = b',"' + _MARK.encode() + b'":0'
#: Impressions of an item without a server decision carry this propensity.
MATERIALIZED_PROPENSITY = 1.0
REQUEST_ID_LEN = 32


@dataclass(frozen=True, slots=True)
class ArmPieces:
    """What is written when one candidate is shown: its JSON item fields, its Avro
    impression fields, and the stored assignment around the decision time."""

    artwork_id: str
    json: bytes
    avro: bytes
    assignment_head: bytes
    assignment_tail: bytes
    #: The stored assignment as a bulk string of Redis's protocol, around a decision time
    #: of :data:`AT_DIGITS` digits.
    resp_head: bytes = b""
    resp_tail: bytes = b""

    def assignment(self, at: bytes) -> bytes:
        """The stored assignment chosen at ``at`` (ms, ASCII digits)."""
        return self.assignment_head + at + self.assignment_tail

    @classmethod
    def of(cls, image: Artwork, choice: Choice) -> ArmPieces:
        """The pieces of showing ``image`` by ``choice`` (made once per distinct pair: a
        policy's propensities take few values)."""
        return cls.drawn(image, choice.artwork_id, choice.propensity, choice.policy,
                         choice.policy_version)

    @classmethod
    def drawn(cls, image: Artwork, artwork_id: str, propensity: float, policy: str,
              policy_version: int) -> ArmPieces:
        """:meth:`of` a choice given by its fields (no :class:`Choice` built on a hit)."""
        key = (image.artwork_id, image.url, artwork_id, propensity, policy, policy_version)
        found = _PIECES.get(key)
        if found is None:
            if len(_PIECES) >= _PIECES_MAX:
                _PIECES.clear()
            found = _PIECES[key] = cls._make(image, Choice(artwork_id, propensity, policy,
                                                           policy_version))
        return found

    @classmethod
    def _make(cls, image: Artwork, choice: Choice) -> ArmPieces:
        fields = {"artwork_id": image.artwork_id, "artwork_url": image.url,
                  "propensity": choice.propensity, "policy": choice.policy,
                  "policy_version": choice.policy_version}
        avro = (string_bytes(choice.artwork_id) + double_bytes(choice.propensity)
                + string_bytes(choice.policy) + long_bytes(choice.policy_version))
        tail = orjson.dumps({"propensity": choice.propensity, "policy": choice.policy,
                             "policy_version": choice.policy_version})
        head = b'{"artwork_id":' + orjson.dumps(choice.artwork_id) + b',"chosen_at_ms":'
        tail = b"," + tail[1:]
        return cls(choice.artwork_id, b"," + orjson.dumps(fields)[1:-1], avro, head, tail,
                   b"$%d\r\n%s" % (len(head) + AT_DIGITS + len(tail), head), tail + b"\r\n")


#: Digits of a decision time in ms (every time from 2001 to 2286): the prepared protocol
#: pieces of an assignment (:attr:`ArmPieces.resp_head`) count on it.
AT_DIGITS = 13


@dataclass(frozen=True, slots=True)
class NewAssignments:
    """A request's new artwork assignments, kept as the pieces they are made of: the
    assignment writer turns them into ``HSET`` arguments (:meth:`args`) or into the
    command's bytes (:meth:`resp`) after the response has gone out."""

    #: The titles, as fields of the member's assignments hash and as bulk strings.
    keys: Sequence[bytes]
    keys_resp: Sequence[bytes]
    pieces: Sequence[ArmPieces]
    #: The decision time (ms, ASCII digits).
    at: bytes

    def __len__(self) -> int:
        return len(self.pieces)

    def args(self) -> list[bytes]:
        """Title id, stored JSON, title id, ...: the ``HSET`` arguments after the key."""
        out: list[bytes] = [b""] * (2 * len(self.pieces))
        out[::2] = self.keys
        out[1::2] = [p.assignment(self.at) for p in self.pieces]
        return out

    def resp(self) -> bytes:
        """:meth:`args` as bulk strings of Redis's protocol, joined from prepared pieces."""
        n = len(self.pieces)
        if len(self.at) != AT_DIGITS:
            return b"".join(map(bulk_string, self.args()))
        parts: list[bytes] = [self.at] * (4 * n)
        parts[::4] = self.keys_resp
        parts[1::4] = map(_RESP_HEAD, self.pieces)
        parts[3::4] = map(_RESP_TAIL, self.pieces)
        return b"".join(parts)


_RESP_HEAD = operator.attrgetter("resp_head")
_RESP_TAIL = operator.attrgetter("resp_tail")
NO_ASSIGNMENTS = NewAssignments((), (), (), b"")

_PIECES: dict[tuple[str, str, str, float, str, int], ArmPieces] = {}
#: The policy name and version whose pieces :data:`_PIECES` holds.
_PIECES_OF: list[tuple[str, int] | None] = [None]
_PIECES_MAX = 20_000
#: A title's cumulative propensities and arm pieces by its propensities (most members get
#: one of a few per title and policy version), with the artwork they were made for.
_SLOT_PIECES: dict[tuple[tuple[str, float], ...],
                   tuple[TitleArt, list[float], list[ArmPieces]]] = {}


#: Per context (its items, sorted): each title's artwork, cumulative propensities and arm
#: pieces, from the policy object (and version) :data:`_BY_CONTEXT_OF` refers to. Contexts
#: recur across members (country, device, hour and the member features the worker stores:
#: members with few plays share them), so a page whose context was seen is decided by
#: lookups. Only for policies that decide a title alone (``titles_independent``).
_BY_CONTEXT: dict[tuple[tuple[str, Any], ...],
                  dict[str, tuple[TitleArt, list[float], list[ArmPieces]]]] = {}
_BY_CONTEXT_OF: list[tuple[Callable[[], ArtworkPolicy | None], int] | None] = [None]
#: Titles kept in :data:`_BY_CONTEXT` over all contexts, and the bound.
_BY_CONTEXT_SIZE = [0]
_BY_CONTEXT_MAX = 100_000


def _decided(policy: ArtworkPolicy, context: Context, slots: Sequence[Slot]
             ) -> tuple[list[list[float]], list[list[ArmPieces]]]:
    """Each slot's cumulative propensities and arm pieces in ``context``: the titles this
    context has not decided yet (with this policy) in one
    :meth:`~online_models.bandits.base.ArtworkPolicy.propensities_many` step, the others
    from :data:`_BY_CONTEXT`."""
    name, version = policy.name, policy.version
    if _PIECES_OF[0] != (name, version):  # pieces carry the version: the old ones are dead
        _PIECES.clear()
        _SLOT_PIECES.clear()
        _PIECES_OF[0] = (name, version)
    if not policy.titles_independent:
        probs = policy.propensities_many(context, [s.art.arms for s in slots])
        made = [_slot_pieces(s.art, p, name, version) for s, p in zip(slots, probs, strict=True)]
        return [m[0] for m in made], [m[1] for m in made]
    owner = _BY_CONTEXT_OF[0]
    if owner is None or owner[0]() is not policy or owner[1] != version:
        _BY_CONTEXT.clear()
        _BY_CONTEXT_SIZE[0] = 0
        _BY_CONTEXT_OF[0] = (weakref.ref(policy), version)
    known = _BY_CONTEXT.setdefault(tuple(sorted(context.items())), {})
    found = [known.get(s.title_id) for s in slots]
    todo = [i for i, (s, f) in enumerate(zip(slots, found, strict=True))
            if f is None or f[0] is not s.art]
    if todo:
        if _BY_CONTEXT_SIZE[0] + len(todo) > _BY_CONTEXT_MAX:
            _BY_CONTEXT.clear()
            _BY_CONTEXT_SIZE[0] = 0
            known = _BY_CONTEXT[tuple(sorted(context.items()))] = {}
        probs = policy.propensities_many(context, [slots[i].art.arms for i in todo])
        for i, p in zip(todo, probs, strict=True):
            art = slots[i].art
            found[i] = known[slots[i].title_id] = (art, *_slot_pieces(art, p, name, version))
        _BY_CONTEXT_SIZE[0] += len(todo)
    return [f[1] for f in found], [f[2] for f in found]  # type: ignore[index]


def _slot_pieces(art: TitleArt, probs: Mapping[str, float], name: str, version: int
                 ) -> tuple[list[float], list[ArmPieces]]:
    """The cumulative propensities (for inverse-CDF draws; shared, not to be changed) and
    each arm's pieces of one title (:data:`_SLOT_PIECES`)."""
    key = tuple(probs.items())
    found = _SLOT_PIECES.get(key)
    if found is not None and found[0] is art:
        return found[1], found[2]
    cum = list(itertools.accumulate(probs.values()))
    cum[-1] = math.inf  # what draw() does when rounding leaves the sum below 1
    images = art.images
    arm_pieces = [ArmPieces.drawn(images[a], a, q, name, version) for a, q in probs.items()]
    if len(_SLOT_PIECES) >= _PIECES_MAX:
        _SLOT_PIECES.clear()
    _SLOT_PIECES[key] = (art, cum, arm_pieces)
    return cum, arm_pieces


@dataclass(slots=True)
class Slot:
    """A first-screen title whose artwork is decided per request."""

    title_id: str
    art: TitleArt
    #: Row and column on the page.
    position: tuple[int, int]
    #: The title id as the field of the member's assignments hash.
    key: bytes = b""
    #: Index of the item among the logged impressions (its place in the Avro template);
    #: -1 when the item cannot be logged.
    impression: int = -1


@dataclass(slots=True)
class Decisions:
    """The policy's view of a plan's first screen in one context and policy version."""

    #: The policy object they were computed with, weakly: decisions kept by a compiled page
    #: nobody asks for again must not keep every old policy version alive.
    policy_ref: Callable[[], ArtworkPolicy | None]
    policy_version: int
    context: Context
    #: The whole impressions message as fixed parts with a hole between each two (the odd
    #: indexes, empty here), and what fills the holes from a request's values
    #: ``[request id, time + request id, artwork fields of each logged slot...]``
    #: (:meth:`PagePlan._avro_template`).
    avro_parts: list[bytes]
    avro_holes: Callable[[Sequence[bytes]], Sequence[bytes]]
    #: When they were made (ms).
    made_at_ms: int = 0
    #: Per slot: cumulative propensities (inverse-CDF draws) and the pieces of each arm;
    #: computed when a title is first drawn (:meth:`drawable`): a returning member whose
    #: titles all keep their artwork needs none.
    cumulative: list[list[float]] | None = None
    pieces: list[list[ArmPieces]] | None = None

    def drawable(self, policy: ArtworkPolicy, slots: Sequence[Slot]
                 ) -> tuple[list[list[float]], list[list[ArmPieces]]]:
        """:attr:`cumulative` and :attr:`pieces` of ``slots``, computed with ``policy`` (the
        request's) the first time; what is drawn from them is logged with that policy's
        version and propensities."""
        if self.cumulative is None or self.pieces is None:
            self.cumulative, self.pieces = _decided(policy, self.context, slots)
        return self.cumulative, self.pieces


@dataclass(slots=True)
class Served:
    """One request's output: the response body, the impressions message (``None`` when
    nothing is logged) and the new artwork assignments (empty when none)."""

    body: bytes
    impressions: bytes | None
    impression_count: int
    assignments: NewAssignments
    #: Titles whose artwork was drawn for this request (not kept).
    decided: int = 0


class StoredAssignments(Protocol):
    """A member's stored artwork assignments as the request read them."""

    #: Redis's reply as is (title id, JSON, ...), compared as bytes; ``None`` elsewhere.
    flat: list[bytes] | None

    @property
    def assignments(self) -> Mapping[str, Any]: ...


def interleave(outer: Sequence[bytes], inner: Sequence[bytes]) -> bytes:
    """``outer[0] + inner[0] + outer[1] + ... + outer[-1]`` (``len(outer) == len(inner) + 1``).

    >>> interleave([b"<", b"|", b">"], [b"a", b"b"])
    b'<a|b>'
    """
    parts: list[bytes] = [b""] * (2 * len(outer) - 1)
    parts[::2] = outer
    parts[1::2] = inner
    return b"".join(parts)


def _no_holes(values: Sequence[bytes]) -> Sequence[bytes]:
    return ()


@functools.lru_cache(maxsize=1 << 14)
def _position_pieces(branch: int, r: int, c: int) -> tuple[bytes, str, bytes, bytes]:
    """The fixed Avro pieces of the impression at row ``r``, column ``c``: union branch and
    event-id length, the event-id suffix (as text and bytes) and the row and column."""
    suffix = f"-{r}-{c}"
    return (long_bytes(branch) + long_bytes(REQUEST_ID_LEN + len(suffix)), suffix,
            suffix.encode(), long_bytes(r) + long_bytes(c))


def _stored_art(artwork_id: Any, propensity: Any, policy: Any, version: Any) -> bytes:
    """The artwork fields of an impression whose artwork the worker chose (kept per value:
    the same titles recur on every page)."""
    try:
        return _stored_art_cached(artwork_id, propensity, policy, version)
    except TypeError:  # an unhashable value in a malformed item: encode it as it is
        return _stored_art_bytes(artwork_id, propensity, policy, version)


def _stored_art_bytes(artwork_id: Any, propensity: Any, policy: Any, version: Any) -> bytes:
    return (string_bytes(str(artwork_id or "")) + double_bytes(float(propensity or
                                                                     MATERIALIZED_PROPENSITY))
            + string_bytes(str(policy or MATERIALIZED_POLICY)) + long_bytes(int(version or 0)))


_stored_art_cached = functools.lru_cache(maxsize=1 << 14)(_stored_art_bytes)


@dataclass(slots=True)
class PagePlan:
    """A page as served to one profile, compiled for splicing (see the module doc).

    Build it with :meth:`compile`; :meth:`decisions` gives the policy's view for a context,
    :meth:`serve` one request's bytes.
    """

    profile_id: str
    source: str
    #: Everything the plan was compiled from, compared on each request (bytes compare).
    key: tuple[Any, ...]
    slots: list[Slot]
    page_context: dict[str, Any]
    country: str | None
    impression_country: str
    variant: str
    json_segments: list[bytes]
    tail_source: bytes
    #: The impressions message as fixed segments, one before each hole of a request's
    #: values (:meth:`_avro_template`); the segments that end an impression are empty here.
    avro_fixed: list[bytes]
    #: Per impression: the index of the segment that ends it, what comes before and after
    #: its tail (variant, device, country, context) and whether the tail has the context.
    avro_tails: list[tuple[int, bytes, bytes, bool]]
    #: What fills the holes from a request's values ``[request id, time + request id,
    #: artwork fields of each logged slot...]``.
    avro_holes: Callable[[Sequence[bytes]], Sequence[bytes]]
    impression_ids: list[str]
    #: Items that cannot be logged (no title or row id): event-id suffix and reason.
    invalid: list[tuple[str, str]]
    #: Whether every slot is logged (else the artwork of the unlogged ones is left out).
    all_slots_logged: bool
    has_continue_watching: bool
    #: The slots' title ids as the assignment hash's fields.
    slot_keys: list[bytes] = field(default_factory=list)
    #: The same as bulk strings of Redis's protocol.
    slot_resp: list[bytes] = field(default_factory=list)
    _decisions: dict[tuple[Any, ...], Decisions] = field(default_factory=dict)
    _kept: dict[bytes, tuple[float, ArmPieces]] = field(default_factory=dict)
    #: The last fully kept answer: decisions, stored bytes, expiry, JSON prefix, Avro arts.
    _memo: tuple[Decisions, list[bytes], float, bytes, list[bytes]] | None = None

    @classmethod
    def compile(cls, *, profile_id: str, source: str, key: tuple[Any, ...], page: dict[str, Any],
                first_rows: int, title_art: Callable[[Any], TitleArt | None],
                country: str | None, impression_country: str, variant: str,
                codec: AvroCodec, has_continue_watching: bool = False) -> PagePlan:
        """Compile ``page`` (guardrails applied, serve-time fields set, ``context`` popped:
        it is given as ``page_context``). Items of the first ``first_rows`` rows with
        artwork candidates become slots; ``page`` is changed in place."""
        page_context = page.pop("context", None)
        slots: list[Slot] = []
        for r, row in enumerate(page["rows"][:first_rows]):
            for c, item in enumerate(row.get("items") or ()):
                art = title_art(item.get("title_id"))
                if art is not None:
                    slots.append(Slot(item["title_id"], art, (r, c), item["title_id"].encode()))
                    for k in ART_KEYS:
                        item.pop(k, None)
                    item[_MARK] = 0
        head = orjson.dumps(page)
        segments = head[:-1].split(_MARK_BYTES)
        if len(segments) != len(slots) + 1:
            raise ValueError("a page field contains the artwork slot marker")
        plan = cls(profile_id, source, key, slots,
                   page_context if isinstance(page_context, dict) else {}, country,
                   impression_country, variant, segments,
                   b',"source":' + orjson.dumps(source) + b"}", [], [], _no_holes, [], [],
                   True, has_continue_watching)
        plan.slot_keys = [s.key for s in slots]
        plan.slot_resp = list(map(bulk_string, plan.slot_keys))
        plan._avro_template(page["rows"], codec)
        return plan

    def _avro_template(self, rows: Sequence[PageRow], codec: AvroCodec) -> None:
        """The impressions message as fixed segments with holes for a request's fields: per
        impression, the branch and event-id length, [request id], the rest of the event id
        and the profile, [time and request id], title/row/position and the stored artwork
        fields, [the artwork fields drawn, for a slot], then its tail, filled per
        :class:`Decisions` (:meth:`decisions`). Pieces that recur on every page (a
        position's event-id suffix, a row's id, an item's stored artwork fields) come from
        caches shared by every plan."""
        branch = codec.batch_branch(Impression.schema_name)
        profile = string_bytes(self.profile_id)
        slots_of: dict[int, dict[int, Slot]] = {}
        for s in self.slots:
            slots_of.setdefault(s.position[0], {})[s.position[1]] = s
        fixed: list[bytes] = [b""]
        heads: list[bytes] = []     # per impression: its first piece (branch, id length)
        ends: list[int] = []        # the index of the segment its tail is appended to
        befores: list[bytes] = []   # what that segment holds before the tail
        contexts: list[bool] = []   # whether its tail carries the policy's context
        kinds: list[int] = []
        ids, logged = self.impression_ids, 0
        for r, row in enumerate(rows):
            row_id = row.get("row_id")
            row_ok = isinstance(row_id, str) and bool(row_id)
            row_piece = string_bytes(row_id) if row_ok else b""
            row_slots = slots_of.get(r)
            for c, item in enumerate(row.get("items") or ()):
                title_id = item.get("title_id")
                head, suffix, suffix_bytes, position = _position_pieces(branch, r, c)
                if not (row_ok and isinstance(title_id, str) and title_id):
                    self.invalid.append((suffix, f"invalid impression at row {r} column {c}: "
                                         f"title_id={title_id!r} row_id={row_id!r}"))
                    continue
                heads.append(head)
                fixed.append(suffix_bytes + profile)
                slot = row_slots.get(c) if row_slots else None
                if slot is None:
                    befores.append(string_bytes(title_id) + row_piece + position + _stored_art(
                        item.get("artwork_id"), item.get("propensity"), item.get("policy"),
                        item.get("policy_version")))
                    kinds += (0, 1)
                    contexts.append("policy" in item)
                else:
                    fixed.append(string_bytes(title_id) + row_piece + position)
                    slot.impression = len(ids)
                    befores.append(b"")
                    kinds += (0, 1, 2 + logged)
                    logged += 1
                    contexts.append(True)
                fixed.append(b"")
                ends.append(len(fixed) - 1)
                ids.append(suffix)
        fixed[0] = (codec.header(BATCH_SCHEMA) + profile + array_block_header(len(ids))
                    + (heads[0] if heads else b"\x00"))
        # a tail is followed by the next impression's head, the last one by the array's end
        self.avro_fixed = fixed
        self.avro_tails = list(zip(ends, befores, [*heads[1:], b"\x00"][:len(ends)], contexts,
                                   strict=True))
        self.avro_holes = (operator.itemgetter(*kinds) if len(kinds) > 1
                           else lambda values: [values[k] for k in kinds])
        self.all_slots_logged = all(s.impression >= 0 for s in self.slots)

    # -- per context ---------------------------------------------------------------------------
    def decisions(self, policy: ArtworkPolicy, device: str, now_ms: int,
                  max_age_ms: float = 0.0) -> Decisions:
        """The policy's propensities and pieces for this plan's slots, in the context of a
        request from ``device`` at ``now_ms``: cached per device and hour, and reused while
        the policy is the same version, or for ``max_age_ms`` after they were made with an
        older one (what is drawn from them is logged with that version and its
        propensities, so the log stays exact)."""
        key = (device, int(now_ms // 3_600_000) % 24)
        found = self._decisions.get(key)
        if found is not None and (
                (found.policy_ref() is policy and found.policy_version == policy.version)
                or now_ms - found.made_at_ms < max_age_ms):
            return found
        context = request_context(self.page_context, self.country, device, now_ms)
        tail = (string_bytes(self.variant) + string_bytes(device)
                + string_bytes(self.impression_country))
        plain, with_context = tail + b"\x00", tail + string_bytes(orjson.dumps(context).decode())
        fixed = self.avro_fixed.copy()
        for k, before, after, ctx in self.avro_tails:
            fixed[k] = before + (with_context if ctx else plain) + after
        avro_parts = [b""] * (2 * len(fixed) - 1)
        avro_parts[::2] = fixed
        for old in [k for k, d in self._decisions.items()  # another version's, past their age
                    if d.policy_ref() is not policy and now_ms - d.made_at_ms >= max_age_ms]:
            del self._decisions[old]
        if len(self._decisions) > 64:
            self._decisions.clear()
        found = self._decisions[key] = Decisions(weakref.ref(policy), policy.version, context,
                                                 avro_parts, self.avro_holes, now_ms)
        return found

    def kept_pieces(self, slot: Slot, raw: Any, sticky: StickyAssignment,
                    now_ms: int) -> tuple[float, ArmPieces] | None:
        """The pieces of a stored assignment still within its period (parsed once per
        stored value) and when the period ends; ``None`` when the title must be decided
        again."""
        if raw is None:
            return None
        memo_key = raw if isinstance(raw, bytes) else orjson.dumps(raw)
        memo = self._kept.get(memo_key)
        if memo is None:
            prev = previous_assignment(raw)
            if not sticky.keep(prev, now_ms, slot.art.images.keys()):
                return None
            assert prev is not None
            memo = (prev.chosen_at_ms + sticky.period_s * 1000.0,
                    ArmPieces.of(slot.art.images[prev.artwork_id], prev.to_choice()))
            if len(self._kept) > 4 * len(self.slots) + 16:
                self._kept.clear()
            self._kept[memo_key] = memo
        return memo if now_ms < memo[0] else None

    # -- per request ---------------------------------------------------------------------------
    def choose(self, decisions: Decisions, policy: ArtworkPolicy, previous: Mapping[str, Any],
               sticky: StickyAssignment, served_at_ms: int
               ) -> tuple[list[ArmPieces], NewAssignments, int, float]:
        """Every slot's artwork: the member's while its period lasts, else a draw (one
        uniform from the policy's RNG per drawn title, in page order, as
        :meth:`~online_models.bandits.base.ArtworkPolicy.draw` uses them). Returns the
        pieces, the new assignments (:class:`Served`) and when the first kept one expires."""
        at = str(served_at_ms).encode()
        if not (sticky.period_s > 0 and previous):  # a first visit: every title is drawn
            cumulative, pieces = decisions.drawable(policy, self.slots)
            ks = list(map(bisect.bisect_right, cumulative, policy.uniforms(len(self.slots))))
            chosen = list(map(operator.getitem, pieces, ks))
            return (chosen, NewAssignments(self.slot_keys, self.slot_resp, chosen, at),
                    len(chosen), math.inf)
        kept = [self.kept_pieces(slot, previous.get(slot.title_id), sticky, served_at_ms)
                for slot in self.slots]
        todo = [i for i, k in enumerate(kept) if k is None]
        pieces: list[list[ArmPieces]] = []
        drawn: dict[int, int] = {}
        if todo:  # the propensities are needed only for titles drawn again
            cumulative, pieces = decisions.drawable(policy, self.slots)
            drawn = dict(zip(todo, map(bisect.bisect_right, [cumulative[i] for i in todo],
                                       policy.uniforms(len(todo))), strict=True))
        chosen, expiry = [], math.inf
        for i, k in enumerate(kept):
            if k is None:
                chosen.append(pieces[i][drawn[i]])
            else:
                expiry = min(expiry, k[0])
                chosen.append(k[1])
        new = NewAssignments([self.slot_keys[i] for i in todo],
                             [self.slot_resp[i] for i in todo], [chosen[i] for i in todo],
                             at) if todo else NO_ASSIGNMENTS
        return chosen, new, len(todo), expiry

    def serve(self, decisions: Decisions, policy: ArtworkPolicy, reads: StoredAssignments,
              sticky: StickyAssignment, request_id: str, served_at_ms: int) -> Served:
        """Draw the artwork of every slot (or keep the member's), join the response and the
        impressions; the new assignments to store. A member whose stored assignments are
        the same bytes as last time, all still within their period, gets the same pieces
        without looking at them again."""
        memo = self._memo
        flat = reads.flat
        if (memo is not None and flat is not None and memo[0] is decisions
                and served_at_ms < memo[2] and memo[1] == flat):
            prefix, arts, new, decided = memo[3], memo[4], NO_ASSIGNMENTS, 0
        else:
            chosen, new, decided, expiry = self.choose(decisions, policy, reads.assignments,
                                                       sticky, served_at_ms)
            prefix = interleave(self.json_segments, [p.json for p in chosen])
            arts = [p.avro for p in chosen]
            self._memo = None if new or flat is None else (decisions, flat, expiry, prefix,
                                                           arts)
        rid = request_id.encode()
        body = b"".join((prefix, b',"request_id":"', rid, b'","served_at_ms":',
                         str(served_at_ms).encode(), self.tail_source))
        n = len(self.impression_ids)
        if not n:
            return Served(body, None, 0, new, decided)
        if len(rid) != REQUEST_ID_LEN:  # the template's event-id lengths count on it
            raise ValueError(f"request id of {len(rid)} bytes, not {REQUEST_ID_LEN}")
        logged = arts if self.all_slots_logged else [
            a for slot, a in zip(self.slots, arts, strict=True) if slot.impression >= 0]
        parts = decisions.avro_parts.copy()
        parts[1::2] = decisions.avro_holes([rid, long_bytes(served_at_ms) + b"\x40" + rid,
                                            *logged])
        return Served(body, b"".join(parts), n, new, decided)
