"""What a page shows in view: which rows keep a place, which titles they show first.

Pure helpers of :func:`online_models.page.assemble_page`: the required kinds a member's page
still reserves (:func:`required_kinds`), the relevance discount of titles shown and never
played (:func:`discount_ignored`), and the in-view-first filling of the selected rows
(:func:`fill_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from features.catalog import Catalog, CatalogArrays
from features.profile import ProfileState
from online_models.rules import Rules
from topics.models import Title

if TYPE_CHECKING:
    from online_models.page import CandidateRow


def required_kinds(rules: Rules, state: ProfileState | None) -> list[str]:
    """The rules' required kinds, less those the member was shown
    ``required_rows_patience`` times or more without playing from them once."""
    n = rules.required_rows_patience
    if state is None or n <= 0 or not state.row_counts:
        return list(rules.required_rows)
    counts = state.row_counts
    return [k for k in rules.required_rows
            if not (k in counts and counts[k][0] >= n and counts[k][1] == 0)]


def discount_ignored(rel: np.ndarray, idx: np.ndarray, arr: CatalogArrays, state: ProfileState,
                     discount: float) -> None:
    """Multiply in place the relevance of each title shown ``n`` times and never played by
    ``discount ** n`` (``rel[j]`` is the title at ``arr`` position ``idx[j]``, sorted)."""
    shown = state.impressions_without_play()
    if not shown:
        return
    pos = np.fromiter((arr.pos.get(t, -1) for t in shown), int, len(shown))
    times = np.fromiter(shown.values(), float, len(shown))
    at = np.searchsorted(idx, pos)
    hit = (pos >= 0) & (at < len(idx))
    hit[hit] &= idx[at[hit]] == pos[hit]
    rel[at[hit]] *= discount ** times[hit]


def fill_rows(chosen: Sequence[CandidateRow], catalog: Catalog, row_length: int,
              visible: int) -> list[list[tuple[Title, float]]]:
    """The titles of each selected row, in page order, no title twice on the page.

    In view first: every row takes its first ``visible`` titles not taken above, top row
    first, before any row takes more (up to ``row_length``, from the rest of its ranking);
    so a row's leading titles are never spent on a row above's columns out of view, and
    what a member sees without scrolling holds each row's best titles not shown above.

    >>> import datetime as dt
    >>> from online_models.page import CandidateRow
    >>> from topics.models import Artwork
    >>> cat = Catalog([Title(title_id=t, name=t, genres=["Drama"], maturity_rating="PG",
    ...     release_date=dt.date(2024, 1, 1), duration_s=60.0,
    ...     artwork=[Artwork(artwork_id=t + "a", url="u")]) for t in "abcdef"])
    >>> rows = [CandidateRow("r1", "top_picks", "", "", [(t, 1.0) for t in "abcde"]),
    ...         CandidateRow("r2", "genre", "", "", [(t, 1.0) for t in "bcf"])]
    >>> [[t.title_id for t, _ in r] for r in fill_rows(rows, cat, row_length=4, visible=2)]
    [['a', 'b', 'd', 'e'], ['c', 'f']]
    """
    used: set[str] = set()
    picked: list[list[tuple[Title, float]]] = [[] for _ in chosen]
    cursor = [0] * len(chosen)
    # the catalog's titles by id as a dict (per catalog version): a C-level lookup per title
    get = catalog.derived(("titles-by-id",), lambda: {t.title_id: t for t in catalog.titles()}
                          ).get
    for depth in (visible, row_length):
        for i, c in enumerate(chosen):
            row, j = picked[i], cursor[i]
            while len(row) < depth and j < len(c.ranked):
                tid, score = c.ranked[j]
                j += 1
                title = None if tid in used else get(tid)
                if title is not None:
                    row.append((title, score))
                    used.add(tid)
            cursor[i] = j
    return picked
