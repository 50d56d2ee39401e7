"""Checkpoints in a real Redis are data: a malicious pickle written into the checkpoint keys
is refused by every load path (the worker's, the learner's, the server's) without running,
and a valid snapshot written after it is loaded when its version moves."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from features.store import RedisStore
from homestream.settings import Settings
from online_models.bandits import ArtworkPolicy, make_policy
from online_models.bandits.base import Arm
from serving.catalog_cache import ServingModels
from streams.decode import MemoryDeadLetters
from streams.learner import Learner
from streams.models import (
    ARTWORK_CHECKPOINT,
    COWATCH_CHECKPOINT,
    MODEL_CHECKPOINT,
    ROW_UTILITY_CHECKPOINT,
    ModelSet,
)
from streams.processor import EventProcessor

BLOBS = (MODEL_CHECKPOINT, COWATCH_CHECKPOINT, ARTWORK_CHECKPOINT, ROW_UTILITY_CHECKPOINT)


class FileCreatingPickle:
    """Loading this pickle creates ``path``: what an attacker with Redis access would store."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


@pytest.fixture
async def store(settings: Settings):  # type: ignore[no-untyped-def]
    s = RedisStore.from_url(settings.redis_url, settings.key_prefix)
    yield s
    await s.client.aclose()


async def test_a_malicious_pickle_in_redis_is_refused_by_every_load_path(
        settings: Settings, store: RedisStore, tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    payload = pickle.dumps({"format": 1, "model": FileCreatingPickle(marker)})
    assert pickle.loads(payload) is not None and marker.exists()  # the payload does work
    marker.unlink()
    await store.save_checkpoints(dict.fromkeys(BLOBS, payload), 5)

    worker = EventProcessor(settings, store, MemoryDeadLetters())
    await worker.start()  # the worker's start-up restore (ModelSet.restore)
    learner = Learner(settings, store)
    await learner.restore()
    server = ServingModels(store, artwork_policy=settings.artwork_policy)
    await server.refresh()

    assert not marker.exists()
    for models in (worker.models, learner.models):
        assert models.model.n_learned == 0 and models.cowatch.n_learned == 0
        assert models.artwork_policy.version == 0 and models.row_utility.version == 0
    assert server.model is None and server.artwork_policy.version == 0
    assert server.model_errors == 2  # top-picks and artwork-policy, both refused


async def test_the_server_loads_the_next_valid_snapshot_by_its_version(
        settings: Settings, store: RedisStore, tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    payload = pickle.dumps(FileCreatingPickle(marker))
    await store.save_checkpoints({MODEL_CHECKPOINT: payload, ARTWORK_CHECKPOINT: payload}, 1)
    server = ServingModels(store, artwork_policy="lin_ucb")
    await server.refresh()
    assert server.model is None and server.model_errors == 2

    trained = ModelSet(settings.model_copy(update={"artwork_policy": "lin_ucb"}))
    trained.model.learn_one("p1", "t1", 1.0)
    policy = make_policy("lin_ucb", seed=1)
    policy.learn_one({"genre:Comedy": 1.0}, Arm("t1-a", ("comedy",)), 1.0)
    trained.artwork_policy = policy
    blobs = trained.to_blobs()
    await store.save_checkpoints(blobs, 2)
    await server.refresh()
    assert server.model is not None and server.model.n_learned == 1
    assert server.artwork_policy.version == 1
    assert ArtworkPolicy.from_bytes(blobs[ARTWORK_CHECKPOINT]).version == 1
    assert server.model_errors == 2 and not marker.exists()
