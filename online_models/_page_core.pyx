# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""The page's row selection, filling and items, compiled, over catalog positions.

:func:`select_fill` gives what :func:`online_models.page.select_rows` (with a row length),
:func:`online_models.page_view.fill_rows` and :func:`online_models.page._row_items` give
together, the same floats in the same order of operations: those Python functions are its
reference, and tests/unit/test_page_core.py compares the two on every page it assembles.
Sets of title ids become byte masks over catalog positions; the rows' leading-title genre
mixes are integer counts, so their dot products are exact in any order, as in
:class:`online_models.page_arrays.RowSimilarities`.
"""

from cpython.dict cimport PyDict_Copy
from libc.math cimport INFINITY, copysign, fabs, floor, isfinite, sqrt
from libc.stdint cimport int64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, free, malloc, qsort, strtod
from libc.string cimport memset

import numpy as np

cdef enum:
    UTILITY_DEPTH = 5      # online_models.page.UTILITY_DEPTH
    HEAD_DEPTH = 10        # CandidateRow.head(): 2 x UTILITY_DEPTH
    SHORT_ROWS_KEPT = 3    # online_models.page.SHORT_ROWS_KEPT


cdef struct Row:
    int start           # the row's slice of the flat positions / scores / relevances
    int n
    int has_rels
    double weight
    double utility
    double max_sim
    double adjusted
    int kind            # an index of the page's kinds
    int required
    int functional
    int alive           # still a candidate
    int hstart          # its leading titles' slice of the flat heads (no repeats)
    int nhead
    int sim             # its row of the genre dot products
    int nlast           # the titles its utility was last recomputed from (-1: never)
    int last[UTILITY_DEPTH]


cdef class _Buffers:
    """The C arrays of one call, freed with it."""

    cdef Row* rows
    cdef int* pos
    cdef double* score
    cdef double* rel
    cdef int* heads
    cdef double* mixes
    cdef double* dots
    cdef char* used
    cdef char* mark
    cdef int* picked
    cdef double* picked_score
    cdef int* npicked
    cdef int n_sim

    def __dealloc__(self):
        free(self.rows); free(self.pos); free(self.score); free(self.rel); free(self.heads)
        free(self.mixes); free(self.dots); free(self.used); free(self.mark)
        free(self.picked); free(self.picked_score); free(self.npicked)


cdef double _round6(double x) noexcept:
    """``round(x, 6)``: the correctly rounded 6-decimal number, as a double.

    Below 2**31 millionths ``x * 1e6`` is within 2.4e-7 of the exact product, so unless
    its fraction is that close to a half, rounding it rounds the exact product, and
    ``n / 1e6`` (both exact doubles) is the double nearest ``n`` millionths: what Python's
    ``round`` (the 6-decimal string read back) gives. Otherwise that string, through C's
    correctly rounded ``printf`` and ``strtod``; from 1e15 on (and not finite) ``x``
    itself, as Python's (no double that large has a fraction finer than 1/8)."""
    cdef char buf[64]
    cdef double y = x * 1e6, whole, frac
    if not fabs(x) < 1e15:
        return x
    if fabs(y) < 2147483648.0:
        whole = floor(y)
        frac = y - whole
        if fabs(frac - 0.5) > 1e-6:
            whole += frac > 0.5
            return whole / 1e6 if whole != 0.0 else copysign(0.0, x)
    snprintf(buf, 64, "%.6f", x)
    return strtod(buf, NULL)


def select_fill(list cands, dict where, const double[:, ::1] gcounts, list base_by_pos,
                list ids, double penalty, int max_rows, int row_length, int min_items,
                required, int visible, str functional_kind):
    """Select rows from ``cands`` and fill them: ``(chosen, items)``, the chosen
    :class:`~online_models.page.CandidateRow` objects (their ``utility`` and
    ``adjusted_utility`` set as :func:`~online_models.page.select_rows` sets them) and each
    one's page items; ``None`` when a row holds a title ``where`` (catalog positions by id)
    does not know (the caller then takes the Python path)."""
    cdef _Buffers b = _Buffers()
    cdef int n_rows = len(cands), n_titles = len(ids), total = 0
    for c in cands:
        total += len(c.positions) if c.positions is not None else len(c.ranked)
    b.rows = <Row*>calloc(n_rows + 1, sizeof(Row))
    b.pos = <int*>malloc((total + 1) * sizeof(int))
    b.score = <double*>malloc((total + 1) * sizeof(double))
    b.rel = <double*>malloc((total + 1) * sizeof(double))
    b.heads = <int*>malloc((n_rows * HEAD_DEPTH + 1) * sizeof(int))
    b.used = <char*>calloc(n_titles + 1, 1)
    b.mark = <char*>calloc(n_titles + 1, 1)
    if not (b.rows and b.pos and b.score and b.rel and b.heads and b.used and b.mark):
        raise MemoryError()
    if not _load_rows(b, cands, where, required, functional_kind):
        return None
    _genre_dots(b, n_rows, gcounts)
    cdef list chosen = _select(b, n_rows, penalty, max_rows,
                               visible if visible else row_length, min_items)
    for i in range(n_rows):
        if b.rows[i].n:
            cands[i].utility = b.rows[i].utility
    for i in chosen:
        cands[i].adjusted_utility = b.rows[i].adjusted
    cdef int width = max(row_length, visible)
    _fill(b, chosen, width, row_length, visible, n_titles)
    return ([cands[i] for i in chosen], _items(b, chosen, cands, width, base_by_pos, ids))


cdef bint _load_rows(_Buffers b, list cands, dict where, required, str functional_kind
                     ) except -1:
    """The rows' titles as positions, their scores, relevances and leading titles (a row
    built over positions, :mod:`online_models.page_positions`, holds them as arrays)."""
    cdef int i = 0, at = 0, k, p, n_heads = 0
    cdef dict kinds = {}
    cdef Row* r
    cdef const int64_t[:] pv
    cdef const double[:] sv
    cdef const double[:] rv
    for c in cands:
        r = &b.rows[i]
        rels, arrays = c.rels, c.positions is not None
        r.start, r.has_rels = at, rels is not None
        r.n = len(c.positions) if arrays else len(c.ranked)
        r.weight, r.utility = c.weight, c.utility
        r.kind = kinds.setdefault(c.kind, len(kinds))
        r.required, r.functional = c.kind in required, c.kind == functional_kind
        r.alive, r.nlast, r.hstart = r.n > 0, -1, n_heads
        if arrays:
            pv, sv = c.positions, c.scores
            if r.has_rels:
                rv = rels
        for k in range(r.n):
            if arrays:
                p = pv[k]
                b.pos[at + k], b.score[at + k] = p, sv[k]
                if r.has_rels:
                    b.rel[at + k] = rv[k]
            else:
                t, s = c.ranked[k]
                found = where.get(t)
                if found is None:
                    return False
                p = found
                b.pos[at + k], b.score[at + k] = p, s
                if r.has_rels:
                    b.rel[at + k] = rels[k]
            if k < HEAD_DEPTH and not b.mark[p]:
                b.mark[p] = 1
                b.heads[n_heads] = p
                n_heads += 1
        r.nhead = n_heads - r.hstart
        for k in range(r.hstart, n_heads):
            b.mark[b.heads[k]] = 0
        at += r.n
        i += 1
    return True


cdef int _genre_dots(_Buffers b, int n_rows, const double[:, ::1] gcounts) except -1:
    """Each pair of rows' genre-mix dot product (the counts of their leading titles)."""
    cdef int n_genres = gcounts.shape[1], i, j, g, k, n_sim = 0
    cdef double acc
    for i in range(n_rows):
        if b.rows[i].n:
            b.rows[i].sim = n_sim
            n_sim += 1
    b.mixes = <double*>calloc(n_sim * n_genres + 1, sizeof(double))
    b.dots = <double*>malloc((n_sim * n_sim + 1) * sizeof(double))
    if not (b.mixes and b.dots):
        raise MemoryError()
    for i in range(n_rows):
        if b.rows[i].n:
            for k in range(b.rows[i].hstart, b.rows[i].hstart + b.rows[i].nhead):
                for g in range(n_genres):
                    b.mixes[b.rows[i].sim * n_genres + g] += gcounts[b.heads[k], g]
    for i in range(n_sim):
        for j in range(n_sim):
            acc = 0.0
            for g in range(n_genres):
                acc += b.mixes[i * n_genres + g] * b.mixes[j * n_genres + g]
            b.dots[i * n_sim + j] = acc
    b.n_sim = n_sim
    return 0


cdef double _similarity(_Buffers b, Row* a, Row* best) noexcept:
    """:class:`RowSimilarities`: half the leading titles' Jaccard, half the genre cosine
    (``best``'s leading titles are marked in ``b.mark``)."""
    cdef int inter = 0, union, k, n_sim = b.n_sim
    cdef double jac, norm, dij
    for k in range(a.hstart, a.hstart + a.nhead):
        inter += b.mark[b.heads[k]]
    union = a.nhead + best.nhead - inter
    jac = (<double>inter) / union if union else 0.0
    norm = sqrt(b.dots[a.sim * n_sim + a.sim] * b.dots[best.sim * n_sim + best.sim])
    dij = b.dots[a.sim * n_sim + best.sim]
    return 0.5 * jac + 0.5 * (dij / norm if norm else 0.0)


cdef int _pick(_Buffers b, int n_rows, int max_rows, int n_chosen, double penalty,
               char* taken) except -2:
    """The row :func:`select_rows` takes next (-1: none left): the best utility less the
    penalty, ties to the earlier row; only rows of required kinds still missing once the
    free places are no more than those kinds."""
    cdef int i, best = -1, n_missing = 0
    cdef double key, best_key = 0.0
    cdef char* missing = <char*>calloc(n_rows + 1, 1)
    if not missing:
        raise MemoryError()
    for i in range(n_rows):
        r = &b.rows[i]
        if r.alive and r.required and not taken[r.kind] and not missing[r.kind]:
            missing[r.kind] = 1
            n_missing += 1
    only_missing = n_missing > 0 and max_rows - n_chosen <= n_missing
    for i in range(n_rows):
        r = &b.rows[i]
        if not r.alive or (only_missing and not missing[r.kind]):
            continue
        key = r.utility - penalty * r.max_sim
        if best < 0 or key > best_key:
            best, best_key = i, key
    free(missing)
    return best


cdef bint _too_short(_Buffers b, Row* r, int min_items) noexcept:
    """Fewer than ``min_items`` titles not shown yet (a functional row: none at all)."""
    cdef int k, left = 0
    if r.functional:
        return r.n == 0
    for k in range(r.start, r.start + r.n):
        if not b.used[b.pos[k]]:
            left += 1
            if left >= min_items:
                return False
    return True


cdef void _rescore(_Buffers b, Row* r) noexcept:
    """``_rescore``: the utility falls to the weight x the mean relevance of the first
    titles not shown; those titles are remembered."""
    cdef int k, m = 0
    cdef double total = 0.0, u
    for k in range(r.start, r.start + r.n):
        if m >= UTILITY_DEPTH:
            break
        if not b.used[b.pos[k]]:
            total += b.rel[k]
            r.last[m] = b.pos[k]
            m += 1
    r.nlast = m
    u = _round6(r.weight * total / m) if m else 0.0
    if u < r.utility:
        r.utility = u


cdef list _select(_Buffers b, int n_rows, double penalty, int max_rows, int depth,
                  int min_items):
    """:func:`select_rows` with a row length: the chosen rows' indices in order."""
    cdef list chosen = []
    cdef int i, k, p, n_used = 0, n_shown
    cdef Row* best
    cdef Row* r
    cdef char* taken = <char*>calloc(n_rows + 1, 1)
    cdef int* shown = <int*>malloc((depth + 1) * sizeof(int))
    if not (taken and shown):
        free(taken); free(shown)
        raise MemoryError()
    try:
        while len(chosen) < max_rows:
            i = _pick(b, n_rows, max_rows, len(chosen), penalty, taken)
            if i < 0:
                break
            best = &b.rows[i]
            best.adjusted = best.utility - penalty * best.max_sim
            best.alive = 0
            taken[best.kind] = 1
            chosen.append(i)
            n_shown = 0
            for k in range(best.start, best.start + best.n):
                if n_shown >= depth:
                    break
                if not b.used[b.pos[k]]:
                    shown[n_shown] = b.pos[k]
                    n_shown += 1
            for k in range(n_shown):
                if not b.used[shown[k]]:
                    b.used[shown[k]] = 1
                    n_used += 1
            if len(chosen) >= SHORT_ROWS_KEPT and n_used >= 2 * depth:
                for k in range(n_rows):
                    if b.rows[k].alive and _too_short(b, &b.rows[k], min_items):
                        b.rows[k].alive = 0
            _rescore_touched(b, n_rows, shown, n_shown)
            if best.functional or len(chosen) >= max_rows:
                continue
            _raise_similarity(b, n_rows, best)
    finally:
        free(taken)
        free(shown)
    return chosen


cdef void _rescore_touched(_Buffers b, int n_rows, int* shown, int n_shown) noexcept:
    """Recompute the utility of each row whose last utility titles were just shown."""
    cdef int k, m
    cdef Row* r
    for k in range(n_shown):
        b.mark[shown[k]] = 1
    for k in range(n_rows):
        r = &b.rows[k]
        if not (r.alive and r.has_rels):
            continue
        hit = r.nlast < 0
        m = 0
        while not hit and m < r.nlast:
            hit = b.mark[r.last[m]]
            m += 1
        if hit:
            _rescore(b, r)
    for k in range(n_shown):
        b.mark[shown[k]] = 0


cdef void _raise_similarity(_Buffers b, int n_rows, Row* best) noexcept:
    """Each row left: its largest similarity to a row taken, with ``best``."""
    cdef int k
    cdef double s
    for k in range(best.hstart, best.hstart + best.nhead):
        b.mark[b.heads[k]] = 1
    for k in range(n_rows):
        if b.rows[k].alive:
            s = _similarity(b, &b.rows[k], best)
            if s > b.rows[k].max_sim:
                b.rows[k].max_sim = s
    for k in range(best.hstart, best.hstart + best.nhead):
        b.mark[b.heads[k]] = 0


cdef int _fill(_Buffers b, list chosen, int width, int row_length, int visible,
               int n_titles) except -1:
    """:func:`fill_rows`: each row's first ``visible`` titles not on the page, top row
    first, then the rest up to ``row_length``."""
    cdef int n = len(chosen), i, j, p, depth, pass_
    cdef int* cursor = <int*>calloc(n + 1, sizeof(int))
    b.picked = <int*>malloc((n * width + 1) * sizeof(int))
    b.picked_score = <double*>malloc((n * width + 1) * sizeof(double))
    b.npicked = <int*>calloc(n + 1, sizeof(int))
    if not (cursor and b.picked and b.picked_score and b.npicked):
        free(cursor)
        raise MemoryError()
    memset(b.used, 0, n_titles)
    for pass_ in range(2):
        depth = visible if pass_ == 0 else row_length
        for i in range(n):
            r = &b.rows[<int>chosen[i]]
            j = cursor[i]
            while b.npicked[i] < depth and j < r.n:
                p = b.pos[r.start + j]
                if not b.used[p]:
                    b.picked[i * width + b.npicked[i]] = p
                    b.picked_score[i * width + b.npicked[i]] = b.score[r.start + j]
                    b.npicked[i] += 1
                    b.used[p] = 1
                j += 1
            cursor[i] = j
    free(cursor)
    return 0


cdef list _items(_Buffers b, list chosen, list cands, int width, list base_by_pos, list ids):
    """:func:`_row_items`: copies of the titles' base items, their scores to 6 decimals
    (and a row's ``extra`` fields, Continue Watching's resume position)."""
    cdef list out = [], items
    cdef dict item
    cdef int i, k, p
    for i in range(len(chosen)):
        extra = cands[<int>chosen[i]].extra
        items = []
        for k in range(b.npicked[i]):
            p = b.picked[i * width + k]
            item = PyDict_Copy(base_by_pos[p])
            item["score"] = _round6(b.picked_score[i * width + k])
            if extra is not None:
                item.update(extra(ids[p]))
            items.append(item)
        out.append(items)
    return out


cdef struct _Keyed:
    double score
    int64_t rank
    int64_t pos


cdef int _by_score_then_id(const void* a, const void* b) noexcept nogil:
    cdef const _Keyed* x = <const _Keyed*>a
    cdef const _Keyed* y = <const _Keyed*>b
    if x.score > y.score:
        return -1
    if x.score < y.score:
        return 1
    return (x.rank > y.rank) - (x.rank < y.rank)


def near_ranked(list near, dict where, const double[:] rel, const int64_t[:] id_rank,
                double a):
    """:meth:`online_models.page._Rows.by_rel_near` over positions: a seed's neighbours
    ``(title_id, similarity)`` scored relevance x (1 - a + a x min(1, similarity)), best
    first, ties by id (``id_rank``: each position's rank in id order); ``(positions,
    scores)`` arrays, or ``None`` when a neighbour is not in the catalog."""
    cdef Py_ssize_t n = len(near), k
    cdef double s
    cdef int64_t p
    cdef _Keyed* keyed = <_Keyed*>malloc((n + 1) * sizeof(_Keyed))
    if not keyed:
        raise MemoryError()
    try:
        for k in range(n):
            t, similarity = near[k]
            found = where.get(t)
            if found is None:
                return None
            p, s = found, similarity
            keyed[k].pos, keyed[k].rank = p, id_rank[p]
            keyed[k].score = rel[p] * (1.0 - a + a * (s if s < 1.0 else 1.0))
        qsort(keyed, n, sizeof(_Keyed), _by_score_then_id)
        positions, scores = np.empty(n, dtype=np.int64), np.empty(n)
        out_pos: int64_t[::1] = positions
        out_score: double[::1] = scores
        for k in range(n):
            out_pos[k], out_score[k] = keyed[k].pos, keyed[k].score
        return positions, scores
    finally:
        free(keyed)


def round6(double x) -> float:
    """``round(x, 6)`` as the compiled core rounds (for tests)."""
    return _round6(x)


def content_at(const int64_t[:] idx, const unsigned char[:, ::1] genres, const double[:] aff,
               double top_g, const double[:] cast, const double[:] new, double baseline,
               double w_genre, double w_cast, double w_new):
    """:func:`online_models.content.content_scores_indexed` once its inputs are arrays:
    per title at ``idx``, the best affinity among its genres (``genres``: the catalog's
    title x genre flags; 0 without a genre) over ``top_g``, floored at -1, blended with
    the cast and new-release terms in numpy's order of operations, clipped to [0, 1]."""
    cdef Py_ssize_t n = idx.shape[0], n_genres = genres.shape[1], j, g
    cdef int64_t p
    cdef double best, x
    out = np.empty(n)
    cdef double[::1] o = out
    for j in range(n):
        p = idx[j]
        best = -INFINITY
        for g in range(n_genres):
            if genres[p, g] and aff[g] > best:
                best = aff[g]
        best = (best if isfinite(best) else 0.0) / top_g
        if not (best >= -1.0 or best != best):
            best = -1.0
        x = baseline + w_genre * best + w_cast * cast[p] + w_new * new[p]
        o[j] = 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)
    return out


def blend(list signals):
    """The end of :func:`online_models.page.relevance_indexed`: the weighted mean of the
    ``(weight, scores)`` signals that are not equal for every title (all of them if none
    varies), clipped to [0, 1]; sums in Python's order, ``None`` when the weights total
    nothing."""
    cdef list kept = []
    cdef const double[:] x
    cdef double total = 0.0, lo, hi
    cdef Py_ssize_t n = 0, j
    cdef bint nan
    for weight, scores in signals:
        x = scores
        n = x.shape[0]
        lo = hi = x[0] if n else 0.0
        nan = False
        for j in range(n):
            if x[j] < lo:
                lo = x[j]
            if x[j] > hi:
                hi = x[j]
            nan |= x[j] != x[j]
        if hi - lo > 1e-12 and not nan:  # numpy's max and min are NaN with a NaN
            kept.append((weight, scores))
    kept = kept or signals
    for weight, _ in kept:
        total += <double>weight
    if total <= 0:
        return None
    out = np.zeros(n)
    cdef double[::1] o = out
    cdef double w
    for weight, scores in kept:
        x, w = scores, weight
        for j in range(n):
            o[j] += w * x[j]
    for j in range(n):
        o[j] /= total
        o[j] = 0.0 if o[j] < 0.0 else (1.0 if o[j] > 1.0 else o[j])
    return out
