"""Semantic retrieval: an exact cosine top-k index over sentence embeddings, with compact storage.

```python
index = tinyhpd.Index.build(texts, model=model, dtype="float16")     # or Index(dim).add(embeddings, ids)
hits = index.search("how do I reset my password", top_k=10)          # Hits(ids=[...], scores=array([...]))
index.save("my_index"); index = tinyhpd.Index.load("my_index", mmap=True)
```

Vectors are L2-normalised (in float64) when they are added, so the score is the cosine similarity.

Storage types (``dtype``) and what a search returns for each:

* ``float32`` (4 d bytes per vector), ``float16`` (2 d bytes) and ``int8`` (d bytes, plus one float32 scale and one
  float32 offset per *dimension* shared by the whole index): the search is exact over the stored vectors. A float32
  matrix product over chunks of corpus rows plus ``argpartition`` selects candidates; the candidates are rescored in
  float64 and a rounding-error bound proves that no excluded row could have ranked in the top k (queries for which
  the proof fails are rescored exactly over the whole corpus). For float32 storage the ids and scores are therefore
  those of a float64 brute-force search (ties broken by insertion order, earlier first). For float16 and int8 they are
  exact for the dequantised vectors (see :meth:`Index.vectors`); int8 scores are dot products with the dequantised
  vector, which is unit length only up to quantisation error (about 1e-2).
* ``int8`` calibration: per dimension, the minimum and maximum over the vectors of the *first* ``add`` (the whole corpus
  for :meth:`Index.build`, or the ``calibration`` sample given to the constructor) are mapped to the codes -128 and 127.
  Components of vectors added later that fall outside the calibrated range are **clipped** to it, and ``add`` emits a
  :class:`RuntimeWarning` with the number of clipped components. A dimension that is constant in the calibration data
  gets the range [-1, 1] (the range of any component of a unit vector).
* ``binary`` (ceil(d / 8) bytes per vector, nothing else is kept): sign bits (``x > 0``) packed with ``np.packbits``.
  Candidates are the ``top_k * rescore_multiplier`` rows nearest in Hamming distance to the query's sign bits (popcount
  via ``np.bitwise_count`` on NumPy >= 2, a 256-entry lookup table otherwise); they are rescored against the *float*
  query with the stored bits only: score = cos(query, sign vector) = q . s / sqrt(d), s in {-1, +1}^d. No float copy of
  the corpus is stored, so the reported bytes per vector are the whole cost. Binary search is approximate.

Edge cases: an empty corpus or an empty batch of vectors, an empty list of queries, a blank query string, NaN or
infinite components and all-zero vectors raise ``ValueError``; ``top_k`` must be a positive int, and a ``top_k`` larger
than the index is clamped to the number of vectors (every result then holds ``len(index)`` hits). Ids are ints or
strs; a duplicate id (in one batch or against the index) raises ``ValueError``.

Persistence (:meth:`Index.save`): a directory holding ``vectors.safetensors`` (tensor ``vectors``; for int8 also
``scale`` and ``offset``), ``ids.json`` and ``manifest.json`` (format version, dim, dtype, count, normalisation, the
model's name, revision and weight fingerprint, file sizes). It is written into a temporary sibling directory, fsynced
and renamed into place, so a crash never leaves a partial index under the target name. :meth:`Index.load` checks the
manifest against the files and can memory-map the vectors (``mmap=True``) so an index larger than RAM is searched
straight from the page cache. ``add``/``remove`` on a memory-mapped index first copy its vectors into RAM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Index", "Hits", "DTYPES", "FORMAT_VERSION", "add_cli"]

DTYPES = ("float32", "float16", "int8", "binary")
FORMAT_NAME = "tinyhpd-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.safetensors"
IDS = "ids.json"

_STORAGE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1"), "binary": np.dtype("u1")}
_SAFETENSORS_DTYPE = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"), "U8": np.dtype("u1")}
_U32 = 2.0 ** -24  # unit roundoff of float32
_DEFAULT_CHUNK_BYTES = 16 << 20  # score-matrix chunks stay cache-friendly (measured: 16 MB beat 1, 4 and 64 MB)
_MAX_QUERY_GROUP = 256
_ADD_BLOCK_ROWS = 65536
_POPCOUNT_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

Id = Union[int, str]


class Hits(NamedTuple):
    """The result for one query: ``ids`` best first and their ``scores`` (float64 cosine similarities)."""

    ids: List[Id]
    scores: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# small pure helpers


def _check_dtype(dtype: str) -> str:
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return dtype


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
        raise ValueError(f"dim must be a positive int; got {dim!r}")
    return int(dim)


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an int; got {type(top_k).__name__}")
    if top_k <= 0:
        raise ValueError(f"top_k must be >= 1; got {top_k}")
    return int(top_k)


def _normalise_id(value: Any) -> Id:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"ids must be int or str; got bool {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"ids must be int or str; got {type(value).__name__} {value!r}")


def _as_matrix(values: Any, dim: int, what: str) -> np.ndarray:
    """A 2-D numeric array of ``dim`` columns (a 1-D vector becomes one row); not yet validated for finiteness."""
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
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


def _unit_rows(block: np.ndarray, first_row: int, what: str) -> np.ndarray:
    """L2-normalise rows in float64; NaN/inf and all-zero rows are errors naming the row."""
    x = np.asarray(block, dtype=np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{what} row {first_row + bad} contains NaN or infinity")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if not (norms > 0).all():
        bad = int(np.flatnonzero(~(norms > 0))[0])
        raise ValueError(f"{what} row {first_row + bad} is the zero vector; it has no direction to compare")
    return x / norms[:, None]


def _popcount(words: np.ndarray) -> np.ndarray:
    """Bits set per element (uint8 result), via np.bitwise_count when NumPy has it, else a lookup table."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _popcount_lut(words)


def _popcount_lut(words: np.ndarray) -> np.ndarray:
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return _POPCOUNT_LUT[as_bytes].sum(axis=-1, dtype=np.uint8)


def _word_view(codes: np.ndarray) -> np.ndarray:
    """View packed bit rows as the widest unsigned words dividing the row width (fewer popcounts)."""
    width = codes.shape[1]
    for size, dt in ((8, np.uint64), (4, np.uint32), (2, np.uint16)):
        if width % size == 0:
            return np.ascontiguousarray(codes).view(dt)
    return np.ascontiguousarray(codes)


def _hamming(query_words: np.ndarray, corpus_words: np.ndarray) -> np.ndarray:
    """(nq, m) Hamming distances between (nq, W) and (m, W) word rows; the loop runs over the W words only."""
    columns = np.ascontiguousarray(corpus_words.T)  # (W, m)
    bits = columns.shape[0] * columns.dtype.itemsize * 8
    dist = np.zeros((query_words.shape[0], corpus_words.shape[0]), dtype=np.uint16 if bits < 65536 else np.uint32)
    for w in range(columns.shape[0]):
        dist += _popcount(np.bitwise_xor(query_words[:, w : w + 1], columns[w][None, :]))
    return dist


class _TopC:
    """Running top-``c`` (largest scores) per query over chunks of corpus rows, without a Python loop per vector.

    The first chunk is reduced with ``argpartition``. Afterwards each query has a threshold (its c-th best score so far)
    and a chunk only costs a comparison: the few rows above the threshold are merged with one ``lexsort`` over
    (query, -score, row). A chunk with many rows above the threshold (e.g. a corpus sorted by score) falls back to
    ``argpartition``. Every row not kept scores <= the smallest kept score of its query.
    """

    def __init__(self, nq: int, c: int, dtype: Any) -> None:
        self.c = c
        self.scores = np.empty((nq, 0), dtype=dtype)
        self.rows = np.empty((nq, 0), dtype=np.int64)
        self._threshold: Optional[np.ndarray] = None

    def push(self, scores: np.ndarray, start: int) -> None:
        nq, m = scores.shape
        if self._threshold is not None:
            flat = np.flatnonzero(scores > self._threshold)
            if flat.size == 0:
                return
            if flat.size <= max(4 * nq * self.c, scores.size // 32):
                self._merge(flat // m, scores.reshape(-1)[flat], start + flat % m)
                return
        rows = np.broadcast_to(np.arange(start, start + m, dtype=np.int64), scores.shape)
        if m > self.c:
            keep = np.argpartition(scores, m - self.c, axis=1)[:, m - self.c :]
            scores, rows = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)
        queries = np.repeat(np.arange(nq), scores.shape[1])
        self._merge(queries, scores.reshape(-1), rows.reshape(-1))

    def _merge(self, queries: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> None:
        nq, have = self.scores.shape
        all_q = np.concatenate([np.repeat(np.arange(nq), have), queries])
        all_s = np.concatenate([self.scores.reshape(-1), scores])
        all_r = np.concatenate([self.rows.reshape(-1), rows])
        order = np.lexsort((all_r, -all_s, all_q))
        counts = np.bincount(all_q, minlength=nq)
        width = int(min(self.c, counts.min()))  # every query sees the same rows, so counts only differ on merges
        starts = np.cumsum(counts) - counts
        rank = np.arange(order.size) - np.repeat(starts, counts)
        keep = order[rank < width]
        self.scores = all_s[keep].reshape(nq, width)
        self.rows = all_r[keep].reshape(nq, width)
        self._threshold = self.scores[:, -1:].copy() if width == self.c else None


def _rank(scores: np.ndarray, rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sort each row best first (higher score, then lower row) and keep k."""
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _model_identity(model: Any) -> dict:
    """name_or_path, revision, fingerprint and embedding dim of a tinyhpd.Model (or a look-alike)."""
    dim = getattr(model, "embedding_dim", None)
    if dim is None:
        for getter in ("get_sentence_embedding_dimension", "get_embedding_dimension"):
            if callable(getattr(model, getter, None)):
                dim = getattr(model, getter)()
                break
    fingerprint = getattr(model, "fingerprint", None)
    return {
        "name_or_path": None if getattr(model, "name_or_path", None) is None else str(model.name_or_path),
        "revision": getattr(model, "revision", None),
        "fingerprint": None if fingerprint is None else str(fingerprint),
        "embedding_dim": None if dim is None else int(dim),
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_safetensors_header(path: Path) -> Tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise ValueError(f"{path}: corrupt safetensors header (length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise ValueError(f"{path}: corrupt safetensors header ({exc})") from None
    return header, 8 + n


def _open_tensor(path: Path, header: dict, start: int, name: str, mmap: bool) -> np.ndarray:
    size = path.stat().st_size
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: tensor {name!r} is missing")
    dtype = _SAFETENSORS_DTYPE.get(entry.get("dtype"))
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
    shape = tuple(int(s) for s in entry["shape"])
    begin, end = (int(o) for o in entry["data_offsets"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - begin != expected or start + end > size:
        raise ValueError(f"{path}: tensor {name!r} is truncated or inconsistent with its shape {list(shape)}")
    if expected == 0:
        return np.empty(shape, dtype=dtype)
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
    with open(path, "rb") as f:
        f.seek(start + begin)
        return np.fromfile(f, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


# ----------------------------------------------------------------------------------------------------------------


class Index:
    """An exact cosine top-k index over L2-normalised vectors with float32/float16/int8/binary storage.

    Args:
        dim: vector dimension.
        dtype: storage type, one of ``float32`` (default), ``float16``, ``int8``, ``binary`` (see the module docs).
        model: the model whose embeddings the index holds (its name, revision, weight fingerprint and dim are recorded
            and checked on every text search; it also encodes text queries). Optional for vector-only use.
        calibration: int8 only: sample vectors to calibrate the per-dimension range on (default: the first ``add``).
        chunk_bytes: bound on the temporary memory a search allocates per chunk of corpus rows.
    """

    def __init__(
        self,
        dim: int,
        dtype: str = "float32",
        *,
        model: Any = None,
        calibration: Optional[np.ndarray] = None,
        chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._dim = _check_dim(dim)
        self._dtype = _check_dtype(dtype)
        self._width = (self._dim + 7) // 8 if self._dtype == "binary" else self._dim
        self._codes = np.empty((0, self._width), dtype=_STORAGE[self._dtype])
        self._n = 0
        self._ids: List[Id] = []
        self._rows: dict = {}
        self._scale: Optional[np.ndarray] = None
        self._offset: Optional[np.ndarray] = None
        self._calibration_count = 0
        self._model: Any = None
        self._model_info: Optional[dict] = None
        self.chunk_bytes = int(chunk_bytes)
        if model is not None:
            info = _model_identity(model)
            if info["embedding_dim"] is not None and info["embedding_dim"] != self._dim:
                raise ValueError(f"model {info['name_or_path']!r} has dimension {info['embedding_dim']}, "
                                 f"the index has dimension {self._dim}")
            self._model, self._model_info = model, info
        if calibration is not None:
            if self._dtype != "int8":
                raise ValueError("calibration applies to dtype='int8' only")
            self._calibrate(_as_matrix(calibration, self._dim, "calibration vectors"))

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def ids(self) -> List[Id]:
        """The ids in insertion order (a copy)."""
        return list(self._ids)

    @property
    def model_info(self) -> Optional[dict]:
        """The recorded model identity (name_or_path, revision, fingerprint, embedding_dim), or None."""
        return None if self._model_info is None else dict(self._model_info)

    @property
    def model(self) -> Any:
        """The model used to encode text queries (None when only vectors are searched)."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self._check_model(model)
        self._model = model
        if self._model_info is None:
            self._model_info = _model_identity(model)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of stored code per vector (the per-dimension int8 scale/offset are in :attr:`nbytes`)."""
        return self._width * _STORAGE[self._dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of vector storage: codes of the ``len(self)`` vectors plus int8 calibration (ids not counted)."""
        extra = 0 if self._scale is None else self._scale.nbytes + self._offset.nbytes
        return self._n * self.bytes_per_vector + extra

    def __len__(self) -> int:
        return self._n

    def __contains__(self, item: Any) -> bool:
        try:
            return _normalise_id(item) in self._rows
        except TypeError:
            return False

    def __repr__(self) -> str:
        name = None if self._model_info is None else self._model_info.get("name_or_path")
        return f"Index(dim={self._dim}, dtype={self._dtype!r}, count={self._n}, model={name!r})"

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        model: Any = None,
        ids: Optional[Sequence[Id]] = None,
        dtype: str = "float16",
        *,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    ) -> "Index":
        """Encode ``texts`` with ``model`` (a loaded model, a name/path for :func:`tinyhpd.load`, or None for the
        default model) and index them; ids default to 0..n-1. int8 is calibrated on the whole corpus."""
        _check_dtype(dtype)
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a single str")
        texts = list(texts)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if model is None or isinstance(model, (str, os.PathLike)):
            model = _load_model(None if model is None else str(model))
        embeddings = _encode(model, texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        index = cls(embeddings.shape[1], dtype, model=model, chunk_bytes=chunk_bytes)
        index.add(embeddings, ids)
        return index

    def reserve(self, capacity: int) -> None:
        """Pre-allocate room for ``capacity`` vectors (avoids regrowth copies when adding in many batches)."""
        if capacity <= self._codes.shape[0] and not isinstance(self._codes, np.memmap):
            return
        grown = np.empty((max(int(capacity), self._n), self._width), dtype=self._codes.dtype)
        grown[: self._n] = self._codes[: self._n]
        self._codes = grown

    def add(self, embeddings: Any, ids: Optional[Sequence[Id]] = None) -> None:
        """Add vectors (n, dim) under ``ids`` (default: consecutive ints after the largest int id).

        Vectors are L2-normalised in float64 and encoded to the storage type. Nothing changes if any check fails.
        """
        x = _as_matrix(embeddings, self._dim, "embeddings")
        n = x.shape[0]
        new_ids = self._new_ids(ids, n)
        if self._dtype == "int8" and self._scale is None:
            self._calibrate(x)
        needed = self._n + n
        if needed > self._codes.shape[0] or isinstance(self._codes, np.memmap):
            self.reserve(max(needed, self._n * 3 // 2) if self._n else needed)
        clipped = 0
        for start in range(0, n, _ADD_BLOCK_ROWS):
            stop = min(n, start + _ADD_BLOCK_ROWS)
            unit = _unit_rows(x[start:stop], start, "embeddings")
            codes, c = self._encode_block(unit)
            self._codes[self._n + start : self._n + stop] = codes
            clipped += c
        # commit only now: a failure above leaves the index as it was
        self._n = needed
        for i, id_ in enumerate(new_ids):
            self._rows[id_] = len(self._ids) + i
        self._ids.extend(new_ids)
        if clipped:
            warnings.warn(
                f"int8 index: {clipped} of {n * self._dim} components of the added vectors lie outside the range "
                f"calibrated on {self._calibration_count} vectors and were clipped to it",
                RuntimeWarning,
                stacklevel=2,
            )

    def add_texts(self, texts: Sequence[str], ids: Optional[Sequence[Id]] = None, *, batch_size: int = 32) -> None:
        """Encode ``texts`` with the index's model and add them."""
        if self._model is None:
            raise ValueError("this index has no model attached; pass model= to Index/Index.load or set index.model")
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to add")
        self.add(_encode(self._model, texts, batch_size=batch_size), ids)

    def remove(self, ids: Iterable[Id]) -> None:
        """Remove vectors by id; unknown or repeated ids raise ValueError and nothing is removed."""
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        targets = [_normalise_id(i) for i in ids]
        seen = set()
        for id_ in targets:
            if id_ not in self._rows:
                raise ValueError(f"id {id_!r} is not in the index")
            if id_ in seen:
                raise ValueError(f"id {id_!r} is listed twice")
            seen.add(id_)
        if not targets:
            return
        keep = np.ones(self._n, dtype=bool)
        keep[[self._rows[i] for i in targets]] = False
        self._codes = np.ascontiguousarray(self._codes[: self._n][keep])
        self._ids = [i for i, k in zip(self._ids, keep.tolist()) if k]
        self._rows = {id_: row for row, id_ in enumerate(self._ids)}
        self._n = len(self._ids)

    def _new_ids(self, ids: Optional[Sequence[Id]], n: int) -> List[Id]:
        if ids is None:
            start = 1 + max((i for i in self._ids if isinstance(i, int)), default=-1)
            return list(range(start, start + n))
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a sequence of ids, not a single str")
        new_ids = [_normalise_id(i) for i in ids]
        if len(new_ids) != n:
            raise ValueError(f"got {len(new_ids)} ids for {n} vectors")
        seen = set()
        for id_ in new_ids:
            if id_ in self._rows:
                raise ValueError(f"duplicate id {id_!r}: already in the index")
            if id_ in seen:
                raise ValueError(f"duplicate id {id_!r} in the ids being added")
            seen.add(id_)
        return new_ids

    # ------------------------------------------------------------------------------------------------ codecs

    def _calibrate(self, x: np.ndarray) -> None:
        lo = np.full(self._dim, np.inf)
        hi = np.full(self._dim, -np.inf)
        for start in range(0, x.shape[0], _ADD_BLOCK_ROWS):
            unit = _unit_rows(x[start : start + _ADD_BLOCK_ROWS], start, "calibration vectors")
            lo = np.minimum(lo, unit.min(axis=0))
            hi = np.maximum(hi, unit.max(axis=0))
        flat = ~(hi > lo)
        lo[flat], hi[flat] = -1.0, 1.0
        scale = (hi - lo) / 255.0
        self._scale = scale.astype(np.float32)
        self._offset = (lo + 128.0 * scale).astype(np.float32)
        self._calibration_count = int(x.shape[0])

    def _encode_block(self, unit: np.ndarray) -> Tuple[np.ndarray, int]:
        """Storage codes for unit rows (float64) and the number of clipped components (int8)."""
        if self._dtype in ("float32", "float16"):
            return unit.astype(_STORAGE[self._dtype]), 0
        if self._dtype == "binary":
            return np.packbits(unit > 0, axis=1), 0
        q = np.rint((unit - self._offset.astype(np.float64)) / self._scale.astype(np.float64))
        clipped = int(np.count_nonzero((q < -128) | (q > 127)))
        return np.clip(q, -128, 127).astype(np.int8), clipped

    def _decode(self, codes: np.ndarray, dtype: Any) -> np.ndarray:
        """Dequantised vectors of a block of codes, in ``dtype`` (float32 or float64)."""
        if self._dtype in ("float32", "float16"):
            return codes.astype(dtype)
        if self._dtype == "binary":
            bits = np.unpackbits(codes, axis=-1, count=self._dim).astype(dtype)
            return bits * dtype(2.0 / math.sqrt(self._dim)) - dtype(1.0 / math.sqrt(self._dim))
        return codes.astype(dtype) * self._scale.astype(dtype) + self._offset.astype(dtype)

    def vectors(self, ids: Optional[Sequence[Id]] = None, dtype: Any = np.float32) -> np.ndarray:
        """The stored (dequantised) unit vectors, all in insertion order or for ``ids``; binary gives sign/sqrt(d)."""
        if ids is None:
            codes = self._codes[: self._n]
        else:
            rows = []
            for i in ids:
                id_ = _normalise_id(i)
                if id_ not in self._rows:
                    raise ValueError(f"id {id_!r} is not in the index")
                rows.append(self._rows[id_])
            codes = self._codes[np.asarray(rows, dtype=np.int64)]
        return self._decode(np.asarray(codes), np.dtype(dtype).type).astype(dtype, copy=False)

    def _score_error_bound(self) -> float:
        """Bound on |float32 chunk score - float64 score of the dequantised vector| for a unit query.

        Higham's bound for a dot product in any summation order, gamma_d * sum |q_i x_i|, plus the rounding of the
        query (and for int8 of q * scale, q . offset and the final addition), doubled for safety.
        """
        d, u = self._dim, _U32
        if self._dtype != "int8":
            return 2.0 * u * (2 * d + 16) * (1.0 + 1e-3) + 1e-12
        scaled = 128.0 * float(np.linalg.norm(self._scale.astype(np.float64)))  # >= |scale * code|
        return 2.0 * u * (2 * d + 16) * (scaled + float(np.linalg.norm(self._offset.astype(np.float64)))) + 1e-12

    # ------------------------------------------------------------------------------------------------ search

    def search(
        self,
        queries: Any,
        top_k: int = 10,
        *,
        model: Any = None,
        rescore_multiplier: int = 10,
        batch_size: int = 32,
    ) -> Union[Hits, List[Hits]]:
        """Top-k ids and cosine scores, best first.

        ``queries``: a str or a 1-D vector (returns one :class:`Hits`), or a list of str or a 2-D array (returns a
        list of :class:`Hits`). Text needs a model (``model=`` here, or the one the index was built/loaded with);
        its fingerprint and dim must match the index's. ``top_k`` larger than the index is clamped to ``len(index)``.
        ``rescore_multiplier`` (binary only): Hamming candidates per result rescored against the float query.
        """
        k = _check_top_k(top_k)
        if isinstance(rescore_multiplier, bool) or not isinstance(rescore_multiplier, (int, np.integer)) \
                or rescore_multiplier < 1:
            raise ValueError(f"rescore_multiplier must be a positive int; got {rescore_multiplier!r}")
        single, q = self._query_matrix(queries, model, batch_size)
        if self._n == 0:
            raise ValueError("the index is empty: add vectors before searching")
        rows, scores = self.search_rows(q, min(k, self._n), rescore_multiplier=int(rescore_multiplier))
        hits = [Hits([self._ids[r] for r in row.tolist()], s) for row, s in zip(rows, scores)]
        return hits[0] if single else hits

    def search_rows(self, queries: np.ndarray, top_k: int, *, rescore_multiplier: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """Vector queries (nq, dim) -> (rows (nq, k) int64, scores (nq, k) float64); rows index :attr:`ids`.

        ``top_k`` must be in 1..len(index). This is the batched core of :meth:`search` (no id lookup).
        """
        k = _check_top_k(top_k)
        if not 1 <= k <= self._n:
            raise ValueError(f"top_k must be between 1 and len(index) = {self._n}; got {k}")
        q = _unit_rows(_as_matrix(queries, self._dim, "query vectors"), 0, "query vectors")
        rows = np.empty((q.shape[0], k), dtype=np.int64)
        scores = np.empty((q.shape[0], k), dtype=np.float64)
        for start in range(0, q.shape[0], _MAX_QUERY_GROUP):
            stop = min(q.shape[0], start + _MAX_QUERY_GROUP)
            if self._dtype == "binary":
                rows[start:stop], scores[start:stop] = self._search_binary(q[start:stop], k, rescore_multiplier)
            else:
                rows[start:stop], scores[start:stop] = self._search_exact(q[start:stop], k)
        return rows, scores

    def _query_matrix(self, queries: Any, model: Any, batch_size: int) -> Tuple[bool, np.ndarray]:
        """(single?, float matrix) for str / list of str / 1-D or 2-D vectors."""
        if isinstance(queries, str):
            single, texts = True, [queries]
        elif isinstance(queries, (list, tuple)) and queries and all(isinstance(t, str) for t in queries):
            single, texts = False, list(queries)
        else:
            if isinstance(queries, (list, tuple)) and not queries:
                raise ValueError("no queries given (empty list)")
            arr = np.asarray(queries)
            if arr.dtype == object or arr.dtype.kind in "USb":
                raise TypeError("queries must be a str, a list of str, or a numeric array of vectors")
            if arr.size == 0:
                raise ValueError("no queries given (empty array)")
            return arr.ndim == 1, _as_matrix(arr, self._dim, "query vectors")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"query {i} is empty or blank")
        use = self._model if model is None else model
        if use is None:
            raise ValueError("text queries need a model: pass model=..., or build/load the index with a model")
        self._check_model(use)
        return single, _encode(use, texts, batch_size=batch_size)

    def _check_model(self, model: Any) -> None:
        """Refuse a model whose dim or weight fingerprint differs from the one the index was built with."""
        info = _model_identity(model)
        if info["embedding_dim"] is not None and info["embedding_dim"] != self._dim:
            raise ValueError(f"model {info['name_or_path']!r} produces {info['embedding_dim']}-d embeddings but the "
                             f"index holds {self._dim}-d vectors: embeddings of different models cannot be mixed")
        mine = None if self._model_info is None else self._model_info.get("fingerprint")
        if mine is None:
            return
        if info["fingerprint"] is None:
            raise ValueError(f"the index was built with model fingerprint {mine[:12]}... but model "
                             f"{info['name_or_path']!r} exposes no fingerprint, so they cannot be checked to match")
        if info["fingerprint"] != mine:
            raise ValueError(
                f"model {info['name_or_path']!r} (fingerprint {info['fingerprint'][:12]}...) is not the model the "
                f"index was built with ({self._model_info.get('name_or_path')!r}, fingerprint {mine[:12]}...): "
                "embeddings of different models cannot be mixed")

    def _chunk_rows(self, nq: int, per_row_extra: int) -> int:
        per_row = 8 * nq + per_row_extra  # float32 scores + comparison mask / partition scratch, + decode buffer
        return int(max(1024, min(1 << 22, self.chunk_bytes // per_row)))

    def _chunks(self, step: int, c: int) -> Iterable[Tuple[int, int]]:
        """Row ranges covering the corpus, doubling from a small first range up to ``step`` rows: each query's
        threshold is known early, so few rows per chunk pass it (about c per doubling)."""
        start, size = 0, min(step, max(1024, 8 * c, step // 16))
        while start < self._n:
            stop = min(self._n, start + size)
            yield start, stop
            start, size = stop, min(step, 2 * size)

    def _search_exact(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Exact top-k for float storage: float32 candidates, float64 rescoring, error-bound proof, fallback."""
        nq, n = q.shape[0], self._n
        c = min(n, 2 * k + 16)
        if self._dtype == "int8":  # q . (code * scale + offset) = (q * scale) . code + q . offset
            q_eff = (q * self._scale.astype(np.float64)).astype(np.float32)
            q_off = (q @ self._offset.astype(np.float64)).astype(np.float32)[:, None]
        else:
            q_eff, q_off = q.astype(np.float32), None
        step = self._chunk_rows(nq, 0 if self._dtype == "float32" else 4 * self._dim)
        buf = None if self._dtype == "float32" else np.empty((step, self._dim), dtype=np.float32)
        top = _TopC(nq, c, np.float32)
        for start, stop in self._chunks(step, c):
            block = self._codes[start:stop]
            if buf is None:
                x = block
            else:
                x = buf[: stop - start]
                np.copyto(x, block, casting="unsafe")  # float16 -> float32 is exact, int8 -> float32 too
            s = q_eff @ x.T  # (nq, m): one matrix product per chunk of corpus rows
            if q_off is not None:
                s += q_off
            top.push(s, start)
        rows, scores = self._rescore(q, top.rows, k)
        if c < n:  # every excluded row scored <= the smallest candidate score in float32
            proven = top.scores[:, -1].astype(np.float64) + self._score_error_bound() < scores[:, -1]
            for i in np.flatnonzero(~proven).tolist():  # rare near-tie at the candidate boundary: brute force
                rows[i], scores[i] = self._exact_one(q[i], k)
        return rows, scores

    def _rescore(self, q: np.ndarray, cand_r: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """float64 scores of candidate rows against the queries (query groups bounded by chunk_bytes), ranked."""
        nq, c = cand_r.shape
        per_query = max(1, c * self._dim * 8)
        group = max(1, self.chunk_bytes // per_query)
        out_r = np.empty((nq, k), dtype=np.int64)
        out_s = np.empty((nq, k), dtype=np.float64)
        for start in range(0, nq, group):
            stop = min(nq, start + group)
            r = cand_r[start:stop]
            flat = r.reshape(-1)
            order = np.argsort(flat, kind="stable")  # gather in row order: sequential reads on a memmap
            gathered = np.empty((flat.size, self._width), dtype=self._codes.dtype)
            gathered[order] = self._codes[flat[order]]
            x = self._decode(gathered, np.float64).reshape(r.shape + (self._dim,))
            s = np.matmul(x, q[start:stop, :, None])[..., 0]
            out_r[start:stop], out_s[start:stop] = _rank(s, r, k)
        return out_r, out_s

    def _exact_one(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """float64 brute force for one query (the fallback of the exact search), ties to the earlier row."""
        s = np.empty(self._n, dtype=np.float64)
        step = self._chunk_rows(1, 8 * self._dim)
        for start in range(0, self._n, step):
            stop = min(self._n, start + step)
            s[start:stop] = self._decode(self._codes[start:stop], np.float64) @ q
        threshold = np.partition(s, self._n - k)[self._n - k]
        cand = np.flatnonzero(s >= threshold)
        order = cand[np.lexsort((cand, -s[cand]))][:k]
        return order, s[order]

    def _search_binary(self, q: np.ndarray, k: int, multiplier: int) -> Tuple[np.ndarray, np.ndarray]:
        """Hamming candidates over packed sign bits, rescored with the float query against the sign vectors."""
        nq, n = q.shape[0], self._n
        c = min(n, k * multiplier)
        q_words = _word_view(np.packbits(q > 0, axis=1))
        step = self._chunk_rows(nq, 2 * nq * q_words.shape[1] * q_words.dtype.itemsize + 16 * nq)
        top = _TopC(nq, c, np.int64)
        for start, stop in self._chunks(step, c):
            rows = np.arange(start, stop, dtype=np.int64)
            dist = _hamming(q_words, _word_view(np.asarray(self._codes[start:stop]))).astype(np.int64)
            # largest -(distance, row): Hamming ties go to the earlier row, so results do not depend on chunking
            top.push(-((dist << 40) + rows), start)
        return self._rescore(q, top.rows, k)

    # ------------------------------------------------------------------------------------------------ persistence

    def manifest(self) -> dict:
        """The manifest :meth:`save` writes (without the file sizes)."""
        info: dict = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dim": self._dim,
            "dtype": self._dtype,
            "count": self._n,
            "metric": "cosine",
            "normalization": "l2 (float64, on add)",
            "bytes_per_vector": self.bytes_per_vector,
            "model": None if self._model_info is None else dict(self._model_info),
        }
        if self._dtype == "int8":
            info["int8"] = {"decode": "code * scale + offset, per dimension", "codes": [-128, 127],
                            "calibration_count": self._calibration_count, "out_of_range": "clip"}
        if self._dtype == "binary":
            info["binary"] = {"bit": "x > 0", "packbits_bitorder": "big", "rescoring": "float query . sign vector"}
        return info

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the index to directory ``path`` atomically (temp dir, fsync, rename); replaces an existing index."""
        target = Path(path)
        if target.exists() and not (target.is_dir() and (target / MANIFEST).is_file()):
            raise ValueError(f"{target} exists and is not a tinyhpd index; refusing to overwrite it")
        parent = target.parent if str(target.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        try:
            self._write_files(tmp)
            _fsync_dir(tmp)
            old = None
            if target.exists():
                old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
            os.rename(tmp, target)
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def _write_files(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"vectors": np.ascontiguousarray(self._codes[: self._n])}
        if self._dtype == "int8":
            tensors["scale"] = self._scale
            tensors["offset"] = self._offset
        save_file(tensors, str(folder / VECTORS), metadata={"format": FORMAT_NAME, "dtype": self._dtype})
        with open(folder / VECTORS, "rb+") as f:
            os.fsync(f.fileno())
        _write_bytes(folder / IDS, json.dumps(self._ids, ensure_ascii=False).encode("utf-8"))
        manifest = self.manifest()
        manifest["files"] = {name: (folder / name).stat().st_size for name in (VECTORS, IDS)}
        _write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(
        cls,
        path: Union[str, os.PathLike],
        mmap: bool = True,
        *,
        model: Any = None,
        chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
    ) -> "Index":
        """Open an index saved by :meth:`save`; ``mmap=True`` maps the vectors instead of reading them into RAM.

        ``model`` (optional) is checked against the manifest (dim and fingerprint) and used for text queries.
        """
        folder = Path(path)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder}: no {MANIFEST}; not a tinyhpd index (or an incomplete one)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{manifest_path}: invalid JSON ({exc})") from None
        _check_manifest(manifest, manifest_path)
        for name, size in manifest["files"].items():
            file = folder / name
            if not file.is_file():
                raise FileNotFoundError(f"{folder}: {name} listed in the manifest is missing")
            if file.stat().st_size != size:
                raise ValueError(f"{file}: size {file.stat().st_size} bytes, the manifest says {size}")
        index = cls(manifest["dim"], manifest["dtype"], chunk_bytes=chunk_bytes)
        header, start = _read_safetensors_header(folder / VECTORS)
        codes = _open_tensor(folder / VECTORS, header, start, "vectors", mmap)
        count, dim = manifest["count"], manifest["dim"]
        if codes.shape != (count, index._width) or codes.dtype != _STORAGE[index._dtype]:
            raise ValueError(f"{folder / VECTORS}: vectors are {codes.dtype} {list(codes.shape)}, the manifest says "
                             f"{manifest['dtype']} with count {count} and dim {dim}")
        if index._dtype == "int8":
            index._scale = np.array(_open_tensor(folder / VECTORS, header, start, "scale", False), dtype=np.float32)
            index._offset = np.array(_open_tensor(folder / VECTORS, header, start, "offset", False), dtype=np.float32)
            if index._scale.shape != (dim,) or index._offset.shape != (dim,):
                raise ValueError(f"{folder / VECTORS}: int8 scale/offset must have shape [{dim}]")
            index._calibration_count = int(manifest.get("int8", {}).get("calibration_count", 0))
        try:
            ids = json.loads((folder / IDS).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{folder / IDS}: invalid JSON ({exc})") from None
        if not isinstance(ids, list) or len(ids) != count:
            raise ValueError(f"{folder / IDS}: expected a list of {count} ids")
        index._ids = [_normalise_id(i) for i in ids]
        index._rows = {id_: row for row, id_ in enumerate(index._ids)}
        if len(index._rows) != count:
            raise ValueError(f"{folder / IDS}: ids are not unique")
        index._codes, index._n = codes, count
        index._model_info = manifest.get("model")
        if model is not None:
            index.model = model
        return index


def _check_manifest(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {version!r} is not supported (this tinyhpd reads <= {FORMAT_VERSION})")
    for key, kind in (("dim", int), ("count", int), ("dtype", str), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{where}: key {key!r} is missing or not a {kind.__name__}")
    _check_dtype(manifest["dtype"])
    _check_dim(manifest["dim"])
    if manifest["count"] < 0:
        raise ValueError(f"{where}: negative count")
    if set(manifest["files"]) != {VECTORS, IDS}:
        raise ValueError(f"{where}: 'files' must list {VECTORS} and {IDS}")
    if manifest.get("model") is not None and not isinstance(manifest["model"], dict):
        raise ValueError(f"{where}: key 'model' must be an object or null")


# ----------------------------------------------------------------------------------------------------------------
# model access (lazy imports keep `import tinyhpd.index` light)


def _load_model(name: Optional[str], revision: Optional[str] = None) -> Any:
    import tinyhpd

    if not hasattr(tinyhpd, "load"):
        raise RuntimeError("tinyhpd.load is not available in this build; pass a loaded model")
    kwargs = {} if revision is None else {"revision": revision}
    return tinyhpd.load(name, **kwargs)


def _encode(model: Any, texts: List[str], *, batch_size: int = 32, show_progress_bar: Optional[bool] = None) -> np.ndarray:
    kwargs: dict = {"batch_size": batch_size}
    if show_progress_bar is not None:
        kwargs["show_progress_bar"] = show_progress_bar
    emb = np.asarray(model.encode(texts, **kwargs))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"model.encode returned shape {emb.shape} for {len(texts)} texts")
    return emb


# ----------------------------------------------------------------------------------------------------------------
# command line


def _read_corpus(path: Path) -> Tuple[List[str], List[int]]:
    """Non-blank lines of a UTF-8 text file and their 1-based line numbers (the ids)."""
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    texts, ids = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                texts.append(line)
                ids.append(number)
    if not texts:
        raise ValueError(f"{path}: the corpus holds no non-blank line")
    return texts, ids


def _cmd_index_build(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    texts, ids = _read_corpus(corpus)
    model = _load_model(args.model)
    index = Index.build(texts, model=model, ids=ids, dtype=args.dtype, batch_size=args.batch_size,
                        show_progress_bar=not args.quiet and sys.stderr.isatty())
    index.save(args.out)
    print(f"indexed {len(index)} lines of {corpus} ({index.dim}-d, {index.dtype}, {index.bytes_per_vector} bytes per "
          f"vector, {index.nbytes} bytes of vectors) into {args.out}; ids are line numbers")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    index = Index.load(args.index, mmap=True)
    info = index.model_info or {}
    name = args.model or info.get("name_or_path")
    if not name:
        raise ValueError(f"{args.index}: the index records no model; pass --model")
    model = _load_model(name, None if args.model else info.get("revision"))
    index.model = model
    hits = index.search(args.query, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in
                          enumerate(zip(hits.ids, hits.scores))], ensure_ascii=False))
    else:
        for r, (i, s) in enumerate(zip(hits.ids, hits.scores), start=1):
            print(f"{r}\t{s:.4f}\t{i}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``index build`` and ``search``."""
    p_index = subparsers.add_parser("index", help="build a semantic search index")
    index_sub = p_index.add_subparsers(dest="index_command", metavar="ACTION")
    index_sub.required = True
    p_build = index_sub.add_parser("build", help="encode a text file (one document per line) into an index folder")
    p_build.add_argument("corpus", help="UTF-8 text file, one document per line; ids are 1-based line numbers")
    p_build.add_argument("--out", required=True, help="index folder to write (replaced atomically if it is an index)")
    p_build.add_argument("--model", default=None, help="model name or folder (default: tinyhpd's default model)")
    p_build.add_argument("--dtype", default="float16", choices=DTYPES, help="vector storage (default: float16)")
    p_build.add_argument("--batch-size", type=int, default=32)
    p_build.add_argument("--quiet", action="store_true", help="no progress bar")
    p_build.set_defaults(func=_cmd_index_build)

    p_search = subparsers.add_parser("search", help="search an index folder with a text query")
    p_search.add_argument("index", help="index folder written by `index build` or Index.save")
    p_search.add_argument("query", help="query text")
    p_search.add_argument("--top-k", type=int, default=10, help="results to show (clamped to the index size)")
    p_search.add_argument("--model", default=None, help="model to encode the query (default: the index's model)")
    p_search.add_argument("--json", action="store_true", help="print a JSON list of {rank, id, score}")
    p_search.set_defaults(func=_cmd_search)
