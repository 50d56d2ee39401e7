"""Model checkpoints are data: round trips that continue exactly, and refusals of anything
else (pickles, other models and versions, truncated or inconsistent files) without running
it."""

from __future__ import annotations

import ast
import contextlib
import logging
import pickle
import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.store import InMemoryStore
from homestream.settings import Settings
from online_models import checkpoint
from online_models.bandits import POLICIES, ArtworkPolicy, make_policy
from online_models.bandits.base import Arm
from online_models.checkpoint import CheckpointError, dumps, loads
from online_models.row_utility import RowKindUtility
from online_models.similarity import CoWatchSimilarity
from online_models.top_picks import TopPicksModel
from streams.decode import MemoryDeadLetters
from streams.models import (
    ARTWORK_CHECKPOINT,
    COWATCH_CHECKPOINT,
    LEARNER_CHECKPOINT,
    MODEL_CHECKPOINT,
    ROW_UTILITY_CHECKPOINT,
    ModelSet,
)
from streams.processor import EventProcessor

ROOT = Path(__file__).resolve().parents[2]
CATALOG = [f"t{i}" for i in range(40)]


class FileCreatingPickle:
    """A pickle payload whose loading creates ``path`` (what an attacker who can write to
    Redis would store)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def malicious_pickle(path: Path) -> bytes:
    return pickle.dumps({"format": 1, "model": FileCreatingPickle(path)})


def trained_top_picks(seed: int = 3) -> TopPicksModel:
    m = TopPicksModel(n_factors=4, seed=seed)
    for i in range(300):
        m.learn_positive(f"p{i % 20}", CATALOG[i % 40], float(i % 3 != 0), CATALOG)
    m.version = 7
    return m


def feed_policy(policy: ArtworkPolicy, n: int, rng: random.Random) -> None:
    for i in range(n):
        arms = [Arm(f"t{i % 7}-a", ("comedy",)), Arm(f"t{i % 7}-b", ("romance",))]
        ctx = {"genre:Comedy": rng.random(), "country": "US", "hour": 21}
        choice = policy.select(ctx, arms)
        arm = next(a for a in arms if a.artwork_id == choice.artwork_id)
        policy.learn_one(ctx, arm, float(rng.random() < 0.4))


# -- round trips ----------------------------------------------------------------------------
def test_top_picks_continues_exactly_after_a_round_trip() -> None:
    m = trained_top_picks()
    r = TopPicksModel.from_bytes(m.to_bytes())
    assert (r.version, r.n_learned) == (7, m.n_learned)
    for i in range(300):  # new profiles and titles: factor initialization and sampling agree
        for model in (m, r):
            model.learn_positive(f"p{i % 31}", CATALOG[(i * 7) % 40], 1.0, CATALOG)
    for p in ("p3", "p30", "unknown"):
        assert np.array_equal(m.score_many(p, CATALOG), r.score_many(p, CATALOG))


def test_co_watch_round_trip_keeps_counts_and_their_order() -> None:
    cw = CoWatchSimilarity(window=3, max_neighbors=2)
    rng = random.Random(1)
    for _ in range(400):
        cw.learn_one([f"t{rng.randrange(12)}" for _ in range(3)], f"t{rng.randrange(12)}")
    r = CoWatchSimilarity.from_bytes(cw.to_bytes())
    assert (r.window, r.max_neighbors, r.n_learned) == (3, 2, 400)
    assert r._count == cw._count and r._co == cw._co
    assert [list(n) for n in r._co.values()] == [list(n) for n in cw._co.values()]  # order
    for _ in range(200):  # pruning breaks ties by insertion order: both prune alike
        h, t = [f"t{rng.randrange(12)}" for _ in range(3)], f"t{rng.randrange(12)}"
        assert cw.learn_one(h, t) == r.learn_one(h, t)
    assert r._co == cw._co


def test_row_utility_round_trip() -> None:
    u = RowKindUtility(prior_strength=50.0)
    u.learn({"top_picks": 100, "trending": 40}, {"top_picks": 9})
    r = RowKindUtility.from_bytes(u.to_bytes())
    prior = {"top_picks": 0.9, "trending": 0.7}
    assert r.weights(prior) == u.weights(prior) and r.version == u.version == 1


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_artwork_policy_continues_exactly(name: str) -> None:
    kw = {"decay_rewards": None} if name == "epsilon_greedy" else {}
    policy = make_policy(name, seed=5, **kw)
    feed_policy(policy, 150, random.Random(1))
    restored = ArtworkPolicy.from_bytes(policy.to_bytes())
    assert type(restored) is type(policy) and restored.version == policy.version == 150
    assert getattr(restored, "decay_rewards", None) == getattr(policy, "decay_rewards", None)
    feed_policy(policy, 100, random.Random(2))
    feed_policy(restored, 100, random.Random(2))
    arms = [Arm("new-a", ("comedy",)), Arm("new-b", ("romance",)), Arm("t1-a", ("comedy",))]
    ctx = {"genre:Comedy": 0.6, "country": "US"}
    assert restored.propensities(ctx, arms) == policy.propensities(ctx, arms)
    assert [restored.select(ctx, arms) for _ in range(5)] == [
        policy.select(ctx, arms) for _ in range(5)]


def test_the_layout_is_the_documented_one() -> None:
    data = trained_top_picks().to_bytes()
    assert data[:8] == checkpoint.MAGIC
    n = int.from_bytes(data[8:16], "little")
    header = orjson.loads(data[16:16 + n])
    assert (header["format"], header["format_version"]) == ("homestream.checkpoint", 1)
    assert (header["model"], header["model_version"]) == ("TopPicksModel", 1)
    spec = header["arrays"]["u_latents"]
    assert spec["dtype"] == "<f8" and spec["shape"] == [20, 4]
    body = data[16 + n:]
    raw = np.frombuffer(body[spec["offset"]:spec["offset"] + spec["nbytes"]], "<f8")
    assert np.array_equal(raw.reshape(20, 4), loads(data, "TopPicksModel", {1}
                                                    ).state["u_latents"])
    assert len(header["state"]["u_latent_ids"]) == 20


# -- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize("reader", [TopPicksModel.from_bytes, CoWatchSimilarity.from_bytes,
                                    RowKindUtility.from_bytes, ArtworkPolicy.from_bytes])
def test_a_malicious_pickle_is_refused_without_running_it(reader, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=r"is a pickle .* refused, never unpickled"):
        reader(malicious_pickle(marker))
    assert not marker.exists()


def _header_and_body(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[8:16], "little")
    return orjson.loads(data[16:16 + n]), data[16 + n:]


def _rebuild(header: dict, body: bytes) -> bytes:
    raw = orjson.dumps(header)
    return checkpoint.MAGIC + len(raw).to_bytes(8, "little") + raw + body


def _object_dtype(h: dict) -> None:
    h["arrays"]["u_latents"]["dtype"] = "|O"


def _size_mismatch(h: dict) -> None:
    h["arrays"]["u_latents"]["shape"] = [21, 4]


def _past_the_end(h: dict) -> None:
    h["arrays"]["u_latents"]["offset"] = 10**9


def _rows_do_not_fit_ids(h: dict) -> None:
    h["state"]["u_latent_ids"] = h["state"]["u_latent_ids"][:-1]


def _other_version(h: dict) -> None:
    h["model_version"] = 2


def _other_format(h: dict) -> None:
    h["format"] = "something.else"


def _bad_rng(h: dict) -> None:
    h["state"]["rng"]["mt"] = [1, 2, 3]


@pytest.mark.parametrize(("edit", "says"), [
    (_object_dtype, "dtype '|O' is not allowed"),
    (_size_mismatch, "is not 640 bytes"),
    (_past_the_end, "runs past the end"),
    (_rows_do_not_fit_ids, "u_latents"),
    (_other_version, "state layout version 2 is not supported"),
    (_other_format, "format 'something.else'"),
    (_bad_rng, "RNG state"),
])
def test_an_inconsistent_checkpoint_is_refused_naming_what_is_wrong(edit, says: str) -> None:
    header, body = _header_and_body(trained_top_picks().to_bytes())
    edit(header)
    with pytest.raises(CheckpointError, match=says):
        TopPicksModel.from_bytes(_rebuild(header, body))


def test_another_models_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError, match="holds a 'TopPicksModel', expected "
                                              "CoWatchSimilarity"):
        CoWatchSimilarity.from_bytes(trained_top_picks().to_bytes())
    with pytest.raises(CheckpointError, match="holds a 'LinUCB', expected LinearThompson"):
        POLICIES["thompson"].from_bytes(make_policy("lin_ucb", seed=1).to_bytes())


def test_a_hybrid_model_with_inconsistent_arrays_is_refused() -> None:
    policy = make_policy("lin_ucb", seed=1)
    feed_policy(policy, 30, random.Random(3))
    header, body = _header_and_body(policy.to_bytes())
    header["state"]["model.arm_ids"].append("extra")  # one more artwork than rows
    with pytest.raises(CheckpointError, match="arm_precision"):
        ArtworkPolicy.from_bytes(_rebuild(header, body))
    state = loads(policy.to_bytes(), "LinUCB", {1}).state
    state["model.cov"] = state["model.cov"].copy()
    state["model.cov"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN"):
        ArtworkPolicy.from_bytes(dumps("LinUCB", 1, state))


def test_writing_refuses_arrays_of_objects() -> None:
    with pytest.raises(TypeError, match="dtype"):
        dumps("X", 1, {"a": np.array([object()])})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_damaged_checkpoints_load_or_are_refused_never_anything_else(data) -> None:
    original = bytearray(make_checkpoint_for_fuzzing())
    n_flips = data.draw(st.integers(1, 8))
    for _ in range(n_flips):
        i = data.draw(st.integers(0, len(original) - 1))
        original[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    with contextlib.suppress(CheckpointError):  # anything else fails the test
        TopPicksModel.from_bytes(bytes(original[:cut]))


_FUZZ: list[bytes] = []


def make_checkpoint_for_fuzzing() -> bytes:
    if not _FUZZ:
        m = TopPicksModel(n_factors=2, seed=1)
        for i in range(20):
            m.learn_positive(f"p{i % 3}", CATALOG[i % 5], 1.0, CATALOG[:5])
        _FUZZ.append(m.to_bytes())
    return _FUZZ[0]


# -- the model set and the worker ---------------------------------------------------------
def test_model_set_starts_fresh_for_each_refused_blob(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    trained = ModelSet(Settings())
    trained.model = trained_top_picks()
    blobs = trained.to_blobs()
    marker = tmp_path / "pwned"
    blobs[COWATCH_CHECKPOINT] = malicious_pickle(marker)
    blobs[ARTWORK_CHECKPOINT] = b"\x00junk"
    blobs[LEARNER_CHECKPOINT] = b"[1, 2"
    ms = ModelSet(Settings())
    with caplog.at_level(logging.WARNING, logger="streams.models"):
        ms.restore(blobs)
    assert not marker.exists()
    assert ms.model.n_learned == trained.model.n_learned  # the good blobs are restored
    assert ms.cowatch.n_learned == 0 and ms.meta.version == 0
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 3, refused
    assert any("'co-watch'" in m and "pickle" in m for m in refused)


async def make_processor() -> EventProcessor:
    return EventProcessor(Settings(model_checkpoint_interval_s=3600.0), InMemoryStore(),
                          MemoryDeadLetters(), clock=lambda: 1_700_000_000.0)


async def test_co_watch_neighbours_survive_a_new_processor() -> None:
    proc = await make_processor()
    await proc.start()
    for i in range(4):
        proc.cowatch.learn_one(["t1", "t4"], f"t{5 + i}")
        proc.cowatch.learn_one(["t1"], "t4")
    proc.models.unsaved = 1
    assert await proc.checkpoint()
    data = proc.store.checkpoints[COWATCH_CHECKPOINT]  # type: ignore[attr-defined]
    assert loads(data, "CoWatchSimilarity", {1}).model == "CoWatchSimilarity"
    fresh = EventProcessor(proc.settings, proc.store, MemoryDeadLetters())
    await fresh.start()
    assert fresh.cowatch.n_learned == proc.cowatch.n_learned == 8
    assert fresh.cowatch.most_similar("t1", 10) == proc.cowatch.most_similar("t1", 10)


@pytest.mark.parametrize(("data", "says"), [
    (dumps("CoWatchSimilarity", 99, {}), "version 99 is not supported"),
    (dumps("TopPicksModel", 1, {}), "holds a 'TopPicksModel'"),
    (b"\x00not a checkpoint", "not in the homestream.checkpoint format"),
    (pickle.dumps(CoWatchSimilarity()), "is a pickle"),
], ids=["unknown-version", "other-model", "not-a-checkpoint", "old-pickle"])
async def test_a_co_watch_checkpoint_it_cannot_read_is_ignored_with_a_warning(
        data: bytes, says: str, caplog: pytest.LogCaptureFixture) -> None:
    proc = await make_processor()
    proc.store.checkpoints[COWATCH_CHECKPOINT] = data  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="streams.models"):
        await proc.start()
    assert proc.cowatch.n_learned == 0
    assert any("'co-watch' refused" in r.getMessage() and says in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_old_pickle_checkpoints_are_refused_and_the_next_checkpoint_replaces_them(
        tmp_path: Path) -> None:
    proc = await make_processor()
    marker = tmp_path / "pwned"
    for name in (MODEL_CHECKPOINT, COWATCH_CHECKPOINT, ARTWORK_CHECKPOINT,
                 ROW_UTILITY_CHECKPOINT):
        proc.store.checkpoints[name] = malicious_pickle(marker)  # type: ignore[attr-defined]
    await proc.start()
    assert not marker.exists() and proc.model.n_learned == 0
    proc.model.learn_one("p1", "t1", 1.0)
    proc.models.unsaved = 1
    assert await proc.checkpoint()
    stored = proc.store.checkpoints  # type: ignore[attr-defined]
    assert all(stored[n].startswith(checkpoint.MAGIC) for n in (
        MODEL_CHECKPOINT, COWATCH_CHECKPOINT, ARTWORK_CHECKPOINT, ROW_UTILITY_CHECKPOINT))


# -- acceptance: no pickle where Redis or Kafka is read -------------------------------------
#: Modules that turn bytes into objects by running code from them.
CODE_LOADERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
                "marshal", "jsonpickle"}
#: The installed packages: every path that reads from Redis or Kafka is in one of them.
PACKAGES = ("topics", "features", "online_models", "streams", "serving", "homestream")


def _code_loading(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                  if n.split(".")[0] in CODE_LOADERS]
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                isinstance(node.value, ast.Constant) and node.value.value is False):
            found.append(f"{path.relative_to(ROOT)}:{node.value.lineno} allow_pickle")
    return found


def test_no_installed_module_imports_pickle_or_another_code_loader() -> None:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50  # the packages were found
    offenders = [hit for f in files for hit in _code_loading(f)]
    assert offenders == []


def test_the_code_loader_check_finds_an_import(tmp_path: Path) -> None:
    sample = ROOT / "tests" / "unit" / "test_checkpoints.py"  # this file imports pickle
    assert any("imports pickle" in hit for hit in _code_loading(sample))


@pytest.mark.parametrize(("params", "says"), [
    ({"alpha": "wide"}, "'alpha' is 'wide', not a float"),
    ({"alpha": None}, "'alpha' is None"),
    ({"shell": "rm -rf /"}, "sets 'shell', which LinUCB does not take"),
])
def test_policy_settings_of_the_wrong_kind_are_refused(params: dict, says: str) -> None:
    state = loads(make_policy("lin_ucb", seed=1).to_bytes(), "LinUCB", {1}).state
    state["params"] = {**state["params"], **params}
    with pytest.raises(CheckpointError, match=says):
        ArtworkPolicy.from_bytes(dumps("LinUCB", 1, state))


def test_the_checkpoint_benchmark_prints_every_model_and_fails_a_missed_target(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.checkpoints import main

    small = ["--profiles", "50", "--titles", "20", "--watches", "200", "--rewards", "50"]
    assert main([*small, "--max-ratio", "1e9"]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["model"] for r in rows] == ["top-picks", "co-watch", "artwork-policy"]
    assert all(r["bytes"] > 0 and r["pickle_bytes"] > 0 for r in rows)
    assert main([*small, "--max-ratio", "0"]) == 1
    assert "slower than 0.0x pickle" in capsys.readouterr().err
