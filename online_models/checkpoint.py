"""Model checkpoints as data: a JSON header and raw numeric arrays, never code.

A checkpoint is what a model's ``to_state()`` returns (a flat dict of JSON values and numpy
arrays), written in the *homestream checkpoint* format, version 1:

=========  ====================================================================================
bytes      content
=========  ====================================================================================
0-7        the magic ``HSCKPT\\r\\n`` (a text-mode copy that rewrote the line end is refused)
8-15       ``N``, the header's length, unsigned 64-bit little endian
16..16+N   the header, a UTF-8 JSON object: ``format`` (``"homestream.checkpoint"``),
           ``format_version`` (1), ``model`` (the model's class name), ``model_version`` (the
           version of that model's state layout), ``state`` (the JSON part of the state) and
           ``arrays``: for each array its ``dtype`` (one of :data:`DTYPES`, little endian),
           ``shape``, ``offset`` (from the end of the header) and ``nbytes``
16+N..     the arrays' bytes, C order, each at its offset (8-byte aligned)
=========  ====================================================================================

Reading one builds nothing but JSON values and numpy arrays (``numpy.frombuffer`` of an
allowed numeric dtype); a model's ``from_state`` then checks the shapes against each other
before it uses them. Anything else, a pickle of the format before this one included, raises
:class:`CheckpointError` naming what was wrong; the caller logs it and starts fresh.

>>> data = dumps("Example", 1, {"ids": ["a", "b"], "weights": np.arange(2.0)})
>>> data[:8]
b'HSCKPT\\r\\n'
>>> ck = loads(data, "Example", {1})
>>> ck.state["ids"], ck.state["weights"].tolist()
(['a', 'b'], [0.0, 1.0])
>>> loads(b"\\x80\\x04\\x95", "Example", {1})
Traceback (most recent call last):
...
online_models.checkpoint.CheckpointError: Example checkpoint is a pickle (the format before homestream.checkpoint 1): refused, never unpickled
"""  # noqa: E501

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

__all__ = [
    "DTYPES",
    "FORMAT",
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "CheckpointError",
    "dumps",
    "loads",
    "restore",
    "restore_any",
]

T = TypeVar("T")

FORMAT = "homestream.checkpoint"
FORMAT_VERSION = 1
MAGIC = b"HSCKPT\r\n"
_PREFIX = len(MAGIC) + 8
#: The array dtypes a checkpoint may hold (numbers only: no object arrays, no strings).
DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "<u4", "|u1", "|b1"})
#: A header larger than this is refused before it is parsed.
MAX_HEADER_BYTES = 1 << 30


class CheckpointError(ValueError):
    """A checkpoint that is not one this build can read; the text says what was wrong."""


@dataclass(frozen=True)
class Checkpoint:
    """A decoded checkpoint: the model's class name, its state layout version and its state
    (JSON values and numpy arrays in one flat dict)."""

    model: str
    model_version: int
    state: dict[str, Any]


def dumps(model: str, model_version: int, state: Mapping[str, Any]) -> bytes:
    """Write ``state`` (top-level numpy arrays become arrays, everything else must be JSON)
    as a checkpoint of ``model`` at state layout ``model_version``."""
    json_part: dict[str, Any] = {}
    arrays: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            json_part[key] = value
            continue
        arr = np.ascontiguousarray(value)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(dtype, copy=False)
        if arr.dtype.str not in DTYPES:
            raise TypeError(f"array {key!r} has dtype {arr.dtype.str}; allowed: "
                            f"{sorted(DTYPES)}")
        raw = arr.tobytes()
        pad = -len(raw) % 8
        arrays[key] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                       "nbytes": len(raw)}
        chunks.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    header = orjson.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                           "model": model, "model_version": model_version,
                           "state": json_part, "arrays": arrays})
    header += b" " * (-len(header) % 8)
    return b"".join([MAGIC, len(header).to_bytes(8, "little"), header, *chunks])


def loads(data: bytes, models: str | Collection[str], versions: Collection[int]) -> Checkpoint:
    """Read a checkpoint of a model named in ``models`` (the allow-list of class names) at
    one of the state layout ``versions``; raise :class:`CheckpointError` for anything else
    (another format, a pickle, another model, another version, a truncated or inconsistent
    file)."""
    allowed = {models} if isinstance(models, str) else set(models)
    model = " or ".join(sorted(allowed))
    data = bytes(data)
    if not data.startswith(MAGIC):
        if data[:1] == b"\x80" and data[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
            raise CheckpointError(f"{model} checkpoint is a pickle (the format before "
                                  f"{FORMAT} {FORMAT_VERSION}): refused, never unpickled")
        raise CheckpointError(f"{model} checkpoint is not in the {FORMAT} format "
                              f"(starts with {data[:8]!r})")
    if len(data) < _PREFIX:
        raise CheckpointError(f"{model} checkpoint is truncated ({len(data)} bytes)")
    n = int.from_bytes(data[len(MAGIC):_PREFIX], "little")
    if n > min(MAX_HEADER_BYTES, len(data) - _PREFIX):
        raise CheckpointError(f"{model} checkpoint header length {n} exceeds the "
                              f"{len(data) - _PREFIX} bytes after the prefix")
    try:
        header = orjson.loads(data[_PREFIX:_PREFIX + n])
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{model} checkpoint header is not JSON: {exc}") from exc
    _check_header(header, allowed, versions)
    model = header["model"]
    state: dict[str, Any] = dict(header["state"])
    body = memoryview(data)[_PREFIX + n:]
    for key, spec in header["arrays"].items():
        if key in state:
            raise CheckpointError(f"{model} checkpoint names {key!r} twice")
        state[key] = _array(model, key, spec, body)
    return Checkpoint(model, header["model_version"], state)


def _check_header(header: Any, allowed: Collection[str], versions: Collection[int]) -> None:
    model = " or ".join(sorted(allowed))
    if not isinstance(header, dict):
        raise CheckpointError(f"{model} checkpoint header is {type(header).__name__}, "
                              "not an object")
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{model} checkpoint is format {header.get('format')!r} "
                              f"version {header.get('format_version')!r}; this build reads "
                              f"{FORMAT!r} version {FORMAT_VERSION}")
    if header.get("model") not in allowed:
        raise CheckpointError(f"checkpoint holds a {header.get('model')!r}, expected {model}")
    if header.get("model_version") not in versions:
        raise CheckpointError(f"{model} state layout version {header.get('model_version')!r} "
                              f"is not supported (this build reads {sorted(versions)})")
    if not isinstance(header.get("state"), dict) or not isinstance(header.get("arrays"), dict):
        raise CheckpointError(f"{model} checkpoint header lacks its state or arrays object")


def _array(model: str, key: str, spec: Any, body: memoryview) -> np.ndarray:
    """One array of the body, checked against its header entry (dtype, shape, bounds)."""
    if not isinstance(spec, dict):
        raise CheckpointError(f"{model} checkpoint array {key!r}: entry is not an object")
    dtype, shape = spec.get("dtype"), spec.get("shape")
    offset, nbytes = spec.get("offset"), spec.get("nbytes")
    if dtype not in DTYPES:
        raise CheckpointError(f"{model} checkpoint array {key!r}: dtype {dtype!r} is not "
                              f"allowed ({sorted(DTYPES)})")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not all(isinstance(v, int) and v >= 0 for v in (offset, nbytes))):
        raise CheckpointError(f"{model} checkpoint array {key!r}: bad shape, offset or size")
    if math.prod(shape) * np.dtype(dtype).itemsize != nbytes:
        raise CheckpointError(f"{model} checkpoint array {key!r}: shape {shape} of {dtype} "
                              f"is not {nbytes} bytes")
    if offset + nbytes > len(body):
        raise CheckpointError(f"{model} checkpoint array {key!r} runs past the end of the "
                              f"data ({offset + nbytes} > {len(body)} bytes)")
    return np.frombuffer(body[offset:offset + nbytes], dtype=dtype).reshape(shape).copy()


# -- helpers for models' to_state / from_state ------------------------------------------------
def require(state: Mapping[str, Any], model: str, key: str, kind: type | tuple[type, ...]
            ) -> Any:
    """``state[key]``, which must be of ``kind``; :class:`CheckpointError` otherwise."""
    if key not in state:
        raise CheckpointError(f"{model} checkpoint has no {key!r}")
    value = state[key]
    if kind in (float, (float,)) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise CheckpointError(f"{model} checkpoint {key!r} is {type(value).__name__}")
    return value


def require_array(state: Mapping[str, Any], model: str, key: str, shape: Sequence[int | None],
                  kind: str = "f") -> np.ndarray:
    """``state[key]`` as an array of ``shape`` (``None``: any length) whose dtype is of
    ``kind`` (numpy's kind letter: ``f`` float, ``i`` signed, ``u`` unsigned); float arrays
    must be finite."""
    arr = require(state, model, key, np.ndarray)
    if arr.dtype.kind != kind or arr.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)):
        raise CheckpointError(f"{model} checkpoint {key!r} is {arr.dtype.str} {list(arr.shape)}"
                              f", expected kind {kind!r} shape {list(shape)}")
    if kind == "f" and not np.isfinite(arr).all():
        raise CheckpointError(f"{model} checkpoint {key!r} holds NaN or infinity")
    return arr


def require_strings(state: Mapping[str, Any], model: str, key: str,
                    length: int | None = None) -> list[str]:
    """``state[key]`` as a list of strings (of ``length`` when given)."""
    values = require(state, model, key, list)
    if not all(isinstance(v, str) for v in values):
        raise CheckpointError(f"{model} checkpoint {key!r} holds a non-string")
    if length is not None and len(values) != length:
        raise CheckpointError(f"{model} checkpoint {key!r} has {len(values)} entries, "
                              f"expected {length}")
    return values


def random_state(rng: random.Random) -> dict[str, Any]:
    """A ``random.Random``'s state as JSON values (for ``to_state``)."""
    version, internal, gauss = rng.getstate()
    return {"version": version, "mt": list(internal), "gauss": gauss}


def set_random_state(rng: random.Random, value: Any, model: str) -> None:
    """Restore what :func:`random_state` wrote into ``rng``, checking its shape."""
    if not isinstance(value, dict):
        raise CheckpointError(f"{model} checkpoint RNG state is not an object")
    mt, gauss = value.get("mt"), value.get("gauss")
    if (value.get("version") != 3 or not isinstance(mt, list) or len(mt) != 625
            or not all(isinstance(x, int) and 0 <= x < 2**32 for x in mt)
            or not (gauss is None or isinstance(gauss, float))):
        raise CheckpointError(f"{model} checkpoint RNG state is not a Mersenne Twister state")
    try:
        rng.setstate((3, tuple(mt), gauss))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{model} checkpoint RNG state refused: {exc}") from exc


def restore(data: bytes, model: str, versions: Collection[int],
            from_state: Callable[[dict[str, Any]], T]) -> T:
    """``from_state`` of the state a checkpoint of ``model`` holds; any error of reading or
    of ``from_state`` (a value of the wrong type or shape) becomes :class:`CheckpointError`.
    """
    return restore_any(data, [model], versions, lambda ck: from_state(ck.state))


def restore_any(data: bytes, models: Collection[str], versions: Collection[int],
                build: Callable[[Checkpoint], T]) -> T:
    """``build`` of a checkpoint of one of ``models`` (it gets the class name with the
    state); errors as in :func:`restore`."""
    model = " or ".join(sorted(models))
    try:
        return build(loads(data, models, versions))
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{model} checkpoint refused: {type(exc).__name__}: {exc}"
                              ) from exc
