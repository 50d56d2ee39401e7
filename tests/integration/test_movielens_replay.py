"""A slice of MovieLens-100K through the real pipeline under the prequential page protocol.

The data set is fetched at run time (the recbole wheel from PyPI, cached in
``~/.cache/homestream/ml-100k``) and never stored in the repository.
"""

from __future__ import annotations

import time

import pytest

from evaluation.movielens.baselines import MostPopular
from evaluation.movielens.data import fetch_ml100k, load_ml100k, to_catalog
from evaluation.movielens.pipeline import PipelineRecommender
from evaluation.movielens.protocol import chunks_of, evaluate
from homestream.settings import Settings

SLICE = 3000
CHUNK = 100


@pytest.fixture(scope="module")
def movielens():
    ratings, items = load_ml100k(fetch_ml100k())
    return ratings[:SLICE], items


def test_replay_scores_the_pipeline_above_random_pages(settings: Settings, movielens) -> None:
    ratings, items = movielens
    titles = to_catalog(items)
    genres = {it.item: it.genres for it in items}
    chunks = chunks_of(ratings, CHUNK)
    t0 = time.monotonic()
    with PipelineRecommender(settings, titles, timeout_s=60) as rec:
        res = evaluate(rec, chunks, catalog_size=len(titles), genres_of=genres.__getitem__)
        counters = rec.counters()
        sent = rec.sent
        impressions = rec.impressions_sent
        starts = rec.session_starts_sent
    elapsed = time.monotonic() - t0

    # every rating is 3 events; every page view started with a session start and was logged
    # as impressions (10 x 5 at most)
    assert 0 < impressions <= 50 * res.page_views
    assert starts == res.page_views
    assert sent == 3 * len(ratings) + impressions + starts
    assert counters.get("events_applied", 0) + counters.get("duplicates", 0) == sent
    assert counters.get("dead_letters", 0) == 0
    assert res.page_views >= 30 and res.members >= 10
    assert res.chunks == len(chunks)
    # the pipeline's pages find what members play next more often than random pages would
    assert res.recall[5][0] > 2 * res.random_recall_5x5
    assert 0.0 < res.coverage <= 1.0 and 0.0 < res.diversity[0] <= 1.0
    assert "top_picks" in res.kind_rows
    assert elapsed < 120, f"replay of {len(ratings)} ratings took {elapsed:.0f}s"

    # the same protocol gives a baseline the same page views
    pop = evaluate(MostPopular([t.title_id for t in titles]), chunks,
                   catalog_size=len(titles), genres_of=genres.__getitem__)
    assert pop.page_views == res.page_views
