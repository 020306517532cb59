"""Index constants, the Hits result type, and argument checks."""
from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Union

import numpy as np


DTYPES = ("float32", "float16", "int8", "binary")
FORMAT_NAME = "tinyhpd-index"
FORMAT_VERSION = 2  # 2: int8 codes unsigned (faiss SQ8 bytes), ANN graphs of faiss
MANIFEST = "manifest.json"
VECTORS = "vectors.safetensors"
IDS = "ids.json"

DEFAULT_CHUNK_BYTES = 16 << 20  # score-matrix chunks stay cache-friendly (measured: 16 MB beat 1, 4 and 64 MB)
MAX_QUERY_GROUP = 256
ADD_BLOCK_ROWS = 65536
POPCOUNT_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

Id = Union[int, str]


class Hits(NamedTuple):
    """The result for one query: ``ids`` best first and their ``scores`` (float64 cosine similarities)."""

    ids: List[Id]
    scores: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# small pure helpers


def check_dtype(dtype: str) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return dtype


def normalise_id(value: Any) -> Id:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"ids must be int or str; got bool {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as bad:  # it could not be saved in ids.json
            raise ValueError(f"id {value!r} is not valid Unicode text (a lone surrogate at character {bad.start})") \
                from None
        return value
    raise TypeError(f"ids must be int or str; got {type(value).__name__} {value!r}")


def as_matrix(values: Any, dim: int, what: str) -> np.ndarray:
    """A 2-D numeric array of ``dim`` columns (a 1-D vector becomes one row); not yet validated for finiteness."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":  # float or (un)signed integer; not bool, complex, object, text
        raise TypeError(f"{what} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, dim); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 vectors)")
    if arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, the index has dimension {dim}")
    return arr


def unit_rows(block: np.ndarray, first_row: int, what: str) -> np.ndarray:
    """L2-normalise rows in float64; NaN/inf and all-zero rows are errors naming the row."""
    x = np.asarray(block, dtype=np.float64)
    squares = np.einsum("ij,ij->i", x, x)  # einsum: a row's result does not depend on the rows around it
    if x.shape[0] == 1:  # one query: the same checks on a Python float, a few microseconds less
        square = float(squares[0])
        if math.isfinite(square) and square > 1e-200:
            return x / math.sqrt(square)
    elif x.size and np.isfinite(squares).all() and squares.min() > 1e-200:  # the common case: one pass, no scaling
        return x / np.sqrt(squares)[:, None]
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{what} row {first_row + bad} contains NaN or infinity")
    scale = np.abs(x).max(axis=1) if x.size else np.zeros(len(x))  # rows scaled first: 1e154**2 would overflow
    scale = np.where(scale > 0, scale, 1.0)
    x = x / scale[:, None]
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if not (norms > 0).all():
        bad = int(np.flatnonzero(~(norms > 0))[0])
        raise ValueError(f"{what} row {first_row + bad} is the zero vector; it has no direction to compare")
    return x / norms[:, None]
