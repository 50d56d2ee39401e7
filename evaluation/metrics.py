"""Offline metrics for home pages and ranked rows: pure functions, no I/O.

Page-level Recall@M-by-N, per-row recall@K and NDCG@K, catalog coverage, intra-page
diversity, novelty, and a mean with a normal-approximation confidence interval for reporting.
Used by the evaluations (the MovieLens replay scores pages with them); the product does not
compute offline metrics.

Conventions shared by every function here:

* A *page* is either a flat sequence of title ids or a *grid*: a sequence of rows, each a
  sequence of title ids in column order (see :func:`page_title_grid`).
* A metric whose value is undefined for the input (an empty relevant set, a mean of nothing)
  raises :class:`ValueError`; callers skip that member / page rather than count a made-up 0.
* Relevant sets are sets: duplicates count once. A bare ``str`` is rejected where a collection
  of title ids is expected (it would silently be read as a set of characters).

>>> grid = [["a", "b", "c"], ["d", "e", "f"]]
>>> recall_at_m_by_n(grid, {"b", "e", "z"}, m=2, n=2)  # b and e shown; z is not
0.6666666666666666
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.stats import z_value

if TYPE_CHECKING:
    from online_models.page import Page

PageTitles = Sequence[str] | Sequence[Sequence[str]]
"""A page's title ids: flat, or a grid of rows (each row a sequence of title ids)."""

__all__ = [
    "PageTitles",
    "catalog_coverage",
    "intra_page_diversity",
    "mean_and_ci",
    "ndcg_at_k",
    "novelty",
    "page_title_grid",
    "recall_at_k",
    "recall_at_m_by_n",
]


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _relevant_set(relevant: Collection[str]) -> set[str]:
    if isinstance(relevant, str):
        raise TypeError("relevant must be a collection of title ids, not a str")
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant set is empty: the metric is undefined (skip this member)")
    return rel


def _iter_titles(titles: PageTitles) -> Iterator[str]:
    """Title ids of a flat list or a grid (rows in order, columns in order)."""
    if isinstance(titles, str):
        raise TypeError("expected a sequence of title ids or a grid of rows, not a str")
    for entry in titles:
        if isinstance(entry, str):
            yield entry
        else:
            for tid in entry:
                if not isinstance(tid, str):
                    raise TypeError(f"title ids must be str, got {type(tid).__name__}")
                yield tid


def _distinct(titles: PageTitles) -> list[str]:
    """Distinct title ids in first-seen order."""
    return list(dict.fromkeys(_iter_titles(titles)))


def recall_at_m_by_n(page_rows: Sequence[Sequence[str]], relevant: Collection[str],
                     m: int, n: int) -> float:
    """Page-level Recall@M-by-N.

    The fraction of the member's relevant titles (e.g. the titles they went on to watch) that
    appear in the top-left ``m`` x ``n`` block of the page they were shown: the first ``m``
    rows, and the first ``n`` columns of each of those rows.

    Parameters
    ----------
    page_rows : sequence of sequence of str
        The page as rows top to bottom, each a sequence of title ids in column order
        (:func:`page_title_grid` builds this from a page dict). Rows may have different
        lengths; a row shorter than ``n`` contributes all of its titles, a page with fewer
        than ``m`` rows contributes all of its rows.
    relevant : collection of str
        The member's relevant titles. Duplicates count once.
    m, n : int
        Number of rows and columns considered, each at least 1.

    Returns
    -------
    float
        ``|relevant ∩ shown| / |relevant|``, in ``[0, 1]``. Non-decreasing in ``m`` and ``n``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty (recall is undefined; callers skip the member) or if
        ``m`` or ``n`` is less than 1.
    TypeError
        If ``relevant`` is a bare ``str``.

    Examples
    --------
    >>> page = [["a", "b", "c"], ["d"], ["e", "f"]]
    >>> recall_at_m_by_n(page, ["b", "d", "f", "f"], m=2, n=2)  # b, d of {b, d, f}
    0.6666666666666666
    >>> recall_at_m_by_n(page, {"c"}, m=3, n=2)  # c is in column 3
    0.0
    """
    _check_positive("m", m)
    _check_positive("n", n)
    rel = _relevant_set(relevant)
    shown: set[str] = set()
    for row in page_rows[:m]:
        if isinstance(row, str):
            raise TypeError("page_rows must be a sequence of rows, not a flat list of ids")
        shown.update(row[:n])
    return len(rel & shown) / len(rel)


def page_title_grid(page: Page | Mapping[str, Any]) -> list[list[str]]:
    """Extract the title-id grid from a page dict.

    Parameters
    ----------
    page : mapping
        A page as built by :func:`online_models.page.assemble_page`:
        ``{"rows": [{"items": [{"title_id": ...}, ...], ...}, ...], ...}``.

    Returns
    -------
    list of list of str
        One list per row, top to bottom, holding the row's title ids in column order.
        Rows without items give empty lists (they keep their place, so row indexes match
        the page's).

    Raises
    ------
    KeyError
        If the page has no ``"rows"`` or an item has no ``"title_id"``.

    Examples
    --------
    >>> page_title_grid({"rows": [
    ...     {"row_id": "top-picks", "items": [{"title_id": "t1", "score": 0.9},
    ...                                       {"title_id": "t2", "score": 0.4}]},
    ...     {"row_id": "new-releases", "items": [{"title_id": "t3", "score": 1.0}]}]})
    [['t1', 't2'], ['t3']]
    """
    return [[str(item["title_id"]) for item in row.get("items", ())] for row in page["rows"]]


def _discounts(count: int) -> np.ndarray:
    # 1 / log2(i + 1) for ranks i = 1..count
    return 1.0 / np.log2(np.arange(2, count + 2, dtype=float))


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, float] | Collection[str],
              k: int) -> float:
    """Normalized discounted cumulative gain at ``k``, binary or graded.

    ``DCG@k = sum_{i=1..k} rel_i / log2(i + 1)`` where ``rel_i`` is the gain of the title at
    rank ``i`` (linear gain, not ``2**rel - 1``). The ideal DCG puts the ``k`` largest gains
    of the relevant set at ranks 1..k. ``NDCG@k = DCG@k / IDCG@k``.

    Parameters
    ----------
    ranked : sequence of str
        Title ids, best first. Only the first ``k`` count. A title repeated in ``ranked``
        earns its gain only at its first position (so NDCG stays within ``[0, 1]``).
    relevant : mapping of str to float, or collection of str
        Graded gains per title (a mapping), or a collection of relevant titles, each with
        gain 1. Titles absent from it have gain 0.
    k : int
        Cutoff, at least 1.

    Returns
    -------
    float
        NDCG in ``[0, 1]``; 1.0 for an ideal ranking.

    Raises
    ------
    ValueError
        If ``k < 1``, if a gain is negative or not finite, or if the ideal DCG is 0 (no
        relevant title with a positive gain: NDCG is undefined; callers skip).
    TypeError
        If ``relevant`` is a bare ``str``.

    Examples
    --------
    Relevant titles at ranks 2 and 3 of k=3:
    ``(1/log2(3) + 1/log2(4)) / (1 + 1/log2(3)) = 1.1309 / 1.6309``

    >>> round(ndcg_at_k(["x", "a", "b"], {"a", "b"}, k=3), 4)
    0.6934
    >>> ndcg_at_k(["a", "b"], {"a": 3.0, "b": 1.0}, k=2)
    1.0
    """
    _check_positive("k", k)
    if isinstance(relevant, str):
        raise TypeError("relevant must be a collection of title ids, not a str")
    if isinstance(relevant, Mapping):
        gains = {str(t): float(g) for t, g in relevant.items()}
    else:
        gains = dict.fromkeys(relevant, 1.0)
    for t, g in gains.items():
        if not math.isfinite(g) or g < 0:
            raise ValueError(f"gain of {t!r} must be finite and >= 0, got {g}")
    ideal = np.sort(np.fromiter(gains.values(), dtype=float, count=len(gains)))[::-1][:k]
    idcg = float(ideal @ _discounts(len(ideal)))
    if idcg <= 0.0:
        raise ValueError("ideal DCG is 0 (no relevant title with positive gain): NDCG undefined")
    seen: set[str] = set()
    got = np.zeros(min(k, len(ranked)))
    for i, t in enumerate(ranked[:k]):
        if t not in seen:
            seen.add(t)
            got[i] = gains.get(t, 0.0)
    dcg = float(got @ _discounts(len(got)))
    return min(1.0, dcg / idcg)


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Recall at ``k`` of one ranked list.

    The fraction of the distinct relevant titles found among the first ``k`` of ``ranked``.
    The denominator is ``|relevant|`` (not ``min(k, |relevant|)``), so recall below 1 is
    unavoidable when there are more relevant titles than ``k``.

    Parameters
    ----------
    ranked : sequence of str
        Title ids, best first; a list shorter than ``k`` is fine.
    relevant : collection of str
        Relevant titles. Duplicates count once.
    k : int
        Cutoff, at least 1.

    Returns
    -------
    float
        ``|relevant ∩ ranked[:k]| / |relevant|``, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty (undefined; callers skip) or ``k < 1``.
    TypeError
        If ``relevant`` is a bare ``str``.

    Examples
    --------
    >>> recall_at_k(["a", "x", "b", "c"], {"b", "c", "d"}, k=3)  # only b in the top 3
    0.3333333333333333
    """
    _check_positive("k", k)
    rel = _relevant_set(relevant)
    return len(rel.intersection(ranked[:k])) / len(rel)


def catalog_coverage(pages: Iterable[PageTitles], catalog_size: int) -> float:
    """Catalog coverage: distinct titles shown across all pages over the catalog size.

    Parameters
    ----------
    pages : iterable of pages
        Each page a flat sequence of title ids or a grid of rows (both may be mixed).
    catalog_size : int
        Number of titles in the catalog, at least 1.

    Returns
    -------
    float
        ``|distinct titles shown| / catalog_size``, in ``[0, 1]``; 0.0 for no pages.

    Raises
    ------
    ValueError
        If ``catalog_size < 1``, or if more distinct titles were shown than ``catalog_size``
        (the size is of the wrong catalog, e.g. one from which shown titles were removed;
        pass the size of the catalog the pages were drawn from).

    Examples
    --------
    >>> catalog_coverage([["a", "b"], [["b", "c"], ["a"]]], catalog_size=10)  # {a, b, c}
    0.3
    """
    _check_positive("catalog_size", catalog_size)
    shown: set[str] = set()
    for page in pages:
        shown.update(_iter_titles(page))
    if len(shown) > catalog_size:
        raise ValueError(f"{len(shown)} distinct titles shown but catalog_size={catalog_size}")
    return len(shown) / catalog_size


def intra_page_diversity(titles: PageTitles,
                         genres_of: Callable[[str], Collection[str]]) -> float:
    """Intra-page diversity: mean pairwise genre (Jaccard) distance of the titles shown.

    For every unordered pair of distinct titles on the page, the distance is
    ``1 - len(G_a & G_b) / len(G_a | G_b)`` over their genre sets; the mean over all
    pairs. Two titles that both have no genres count as identical (distance 0); a title with
    no genres paired with one that has some is at distance 1.

    Parameters
    ----------
    titles : flat sequence of str, or grid of rows
        The page's title ids. Repeats are counted once.
    genres_of : callable
        Title id to its genres, e.g. :meth:`features.catalog.Catalog.genres_of`.

    Returns
    -------
    float
        Mean pairwise distance in ``[0, 1]``; 0.0 when fewer than two distinct titles are
        shown (no pairs: nothing to be diverse about).

    Examples
    --------
    Pairs: (a, b) 1 - 1/3, (a, c) 1 - 0/2, (b, c) 1 - 0/4; mean = (2/3 + 1 + 1) / 3

    >>> genres = {"a": ["Drama"], "b": ["Drama", "Comedy", "Romance"], "c": ["Horror"]}
    >>> round(intra_page_diversity([["a", "b"], ["c"]], genres.__getitem__), 4)
    0.8889
    """
    ids = _distinct(titles)
    if len(ids) < 2:
        return 0.0
    sets = [frozenset(genres_of(t)) for t in ids]
    vocab = {g: j for j, g in enumerate(sorted(set().union(*sets)))}
    member = np.zeros((len(ids), max(1, len(vocab))))
    for i, gs in enumerate(sets):
        member[i, [vocab[g] for g in gs]] = 1.0
    inter = member @ member.T
    size = member.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    sim = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    upper = np.triu_indices(len(ids), k=1)
    return float(np.mean(1.0 - sim[upper]))


def novelty(titles: PageTitles, popularity: Mapping[str, float], total: float) -> float:
    """Novelty: mean self-information ``-log2 p(t)`` of the distinct titles shown.

    ``p(t) = popularity[t] / total`` is the title's share of past interactions (or of members
    who interacted with it). A title with no recorded popularity (absent, or 0) is treated as
    seen once more than never: ``p = 1 / (total + 1)``, so it is the most novel and finite.

    Parameters
    ----------
    titles : flat sequence of str, or grid of rows
        The titles shown. Repeats are counted once.
    popularity : mapping of str to float
        Interaction count (or weight) per title, each within ``[0, total]``.
    total : float
        The total the counts are shares of, > 0.

    Returns
    -------
    float
        Mean self-information in bits, >= 0. Higher means less popular titles.

    Raises
    ------
    ValueError
        If no titles are given (the mean is undefined), if ``total`` is not a positive finite
        number, or if a shown title's popularity is negative or above ``total``.

    Examples
    --------
    a: p = 50/100 -> 1 bit; b: p = 25/100 -> 2 bits; c unseen: p = 1/101 -> log2(101) bits

    >>> round(novelty(["a", "b"], {"a": 50, "b": 25}, total=100), 4)
    1.5
    >>> round(novelty([["c"]], {"a": 50}, total=100), 4)
    6.6582
    """
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"total must be a positive finite number, got {total}")
    ids = _distinct(titles)
    if not ids:
        raise ValueError("no titles shown: novelty is undefined")
    probs = np.empty(len(ids))
    for i, t in enumerate(ids):
        count = float(popularity.get(t, 0.0))
        if not (0.0 <= count <= total):
            raise ValueError(f"popularity of {t!r} must be within [0, total], got {count}")
        probs[i] = count / total if count > 0 else 1.0 / (total + 1.0)
    return float(np.mean(-np.log2(probs)))


def mean_and_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and normal-approximation confidence interval, for reporting.

    ``mean ± z * s / sqrt(n)`` with ``s`` the sample standard deviation (``n - 1``
    denominator) and ``z`` the two-sided normal quantile,
    :func:`evaluation.stats.z_value` (1.96 at 95%). Reasonable for the many
    per-member values metrics are averaged over; optimistic for small ``n``.

    Parameters
    ----------
    values : sequence of float
        Per-unit metric values (e.g. Recall@M-by-N per member); at least two, all finite.
    confidence : float, default 0.95
        Coverage of the interval, strictly between 0 and 1.

    Returns
    -------
    tuple of float
        ``(mean, low, high)``.

    Raises
    ------
    ValueError
        If fewer than two values are given (no spread to estimate), a value is not finite,
        or ``confidence`` is not in ``(0, 1)``.

    Examples
    --------
    mean 2.5, s = sqrt(5/3) = 1.2910, s / sqrt(4) = 0.6455, z = 1.96 -> 2.5 ± 1.2652

    >>> [round(x, 4) for x in mean_and_ci([1.0, 2.0, 3.0, 4.0])]
    [2.5, 1.2348, 3.7652]
    """
    z = z_value(confidence)
    xs = [float(v) for v in values]
    if len(xs) < 2:
        raise ValueError(f"need at least two values for an interval, got {len(xs)}")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError("values must be finite")
    mean = statistics.fmean(xs)
    half = z * statistics.stdev(xs, xbar=mean) / math.sqrt(len(xs))
    return mean, mean - half, mean + half
