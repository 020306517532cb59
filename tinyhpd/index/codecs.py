"""Storage codecs: how an index turns unit vectors into stored codes and back, one small class per storage type.

Each codec owns its encoding (``encode``), decoding (``decode``), the float32 chunk scores the exact search ranks
candidates with (``prepare`` / ``scores``), the bound on their rounding error (``error_bound``), its part of the
manifest and the extra tensors it saves (int8's per-dimension scale and offset). ``Index`` holds one codec and never
branches on the storage type.

* ``Float32Codec``: 4 d bytes; codes are the unit vectors.
* ``Float16Codec``: 2 d bytes; codes are the unit vectors rounded to float16. Chunk scores read the float16 bits
  as float32 bits shifted into place (an exact conversion, see ``kernels.f16_scores``), not through NumPy's cast.
* ``Int8Codec``: d bytes plus a float32 scale and offset per dimension, calibrated on the first vectors it sees:
  decode = code * scale + offset, codes unsigned bytes in [0, 255]. The range leaves out the most extreme
  ``CALIBRATION_TAIL`` of each dimension's values (clipped: finer steps for all the others; none below 100,000
  vectors); components added later beyond anything the calibration saw (its ``extent``) are clipped and counted. The
  bytes are faiss's 8-bit scalar quantizer's (``QT_8bit`` with vmin = offset - scale / 2 and vdiff = 255 scale
  decodes them to the same values), so an ANN graph can use the index's codes as its storage.
  Indexes written before format 2 stored signed codes (code + 128 now): :meth:`Int8Codec.from_signed` converts them.
* ``BinaryCodec``: ceil(d / 8) bytes, sign bits (``x > 0``) packed big-endian with ``np.packbits``; it decodes to the
  sign vector / sqrt(d). It is not exact: ``Index`` finds Hamming candidates and rescores them.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Type

import numpy as np

from tinyhpd.index import kernels
from tinyhpd.index.checks import unit_rows

U32 = 2.0 ** -24  # unit roundoff of float32
CALIBRATION_BLOCK_ROWS = 65536
# int8: the share of each dimension's calibration values left below code 0 (and as many above 255), clipped: a range
# of the bulk instead of the two most extreme values, finer steps for all the others. Measured on 1M vectors (131k real
# embeddings + Gaussian-drawn; 1,000 STS-B queries), exact int8 recall@10: 0.9896 minimum to maximum, 0.9906 at 1e-5,
# 0.9876 at 1e-4; the HNSW graph over the codes at expansion 128 / 256: 0.9871 / 0.9880 -> 0.9887 / 0.9894
CALIBRATION_TAIL = 1e-5


class Codec:
    """The interface every storage type implements (see the module docs)."""

    name = ""
    storage = np.dtype("<f4")
    exact = True  # the index can prove its top-k over these codes (binary cannot)
    calibrated = False  # fitted to sample vectors before its first encode (int8)
    tensor_names: Tuple[str, ...] = ()  # tensors saved beside "vectors"
    converts = False  # scoring converts codes to float32 (worth threads for a few queries; float32 is memory-bound)

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    @property
    def width(self) -> int:
        """Columns of the code matrix."""
        return self.dim

    @property
    def bytes_per_vector(self) -> int:
        return self.width * self.storage.itemsize

    @property
    def extra_nbytes(self) -> int:
        """Bytes kept besides the codes (int8's calibration)."""
        return 0

    @property
    def ready(self) -> bool:
        """False while the codec still needs calibration data (int8 before its first add)."""
        return True

    def calibrate(self, x: np.ndarray) -> None:
        """Fit the codec to sample vectors (only int8 needs it)."""

    def encode(self, unit: np.ndarray) -> Tuple[np.ndarray, int]:
        """Codes for unit rows (float64 (m, d)) and how many components were clipped."""
        return unit.astype(self.storage), 0

    def decode(self, codes: np.ndarray, dtype: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The stored vectors of a block of codes, in ``dtype`` (float32 or float64); into ``out`` (a C-contiguous
        array of that dtype and the block's shape) when given, so a caller's buffer can be reused."""
        return _cast(codes, dtype, out)

    def prepare(self, q: np.ndarray) -> Any:
        """What :meth:`scores` needs of unit queries (float64 (nq, d)), computed once per search."""
        return q.astype(np.float32)

    def scores(self, prepared: Any, codes: np.ndarray, scratch: "kernels.Scratch") -> np.ndarray:
        """float32 scores (nq, m) of a block of codes; their error is within :meth:`error_bound`."""
        return kernels.f32_scores(prepared, codes)

    def error_bound(self) -> float:
        """Bound on |float32 chunk score - float64 score of the decoded vector| for a unit query.

        Higham's bound for a dot product in any summation order, gamma_d * sum |q_i x_i|, plus the rounding of the
        query, doubled for safety.
        """
        return 2.0 * U32 * (2 * self.dim + 16) * (1.0 + 1e-3) + 1e-12

    def check_finite(self, codes: np.ndarray, where: str) -> None:
        """Float codes: a NaN or infinite row is corruption (it would break every later search far from its cause)."""
        for begin in range(0, codes.shape[0], CALIBRATION_BLOCK_ROWS):
            finite = np.isfinite(codes[begin:begin + CALIBRATION_BLOCK_ROWS]).all(axis=1)
            if not finite.all():
                row = begin + int(np.argmin(finite))
                raise ValueError(f"{where}: row {row} holds NaN or infinite values (corrupted)")

    def manifest_part(self) -> Optional[dict]:
        """What the manifest records under the codec's name (None: nothing)."""
        return None

    def tensors(self) -> Dict[str, np.ndarray]:
        """Tensors saved beside ``vectors`` (int8: scale and offset)."""
        return {}

    def restore(self, tensors: Dict[str, np.ndarray], manifest: dict, where: str) -> None:
        """Take back what :meth:`tensors` and :meth:`manifest_part` saved, checked; errors name ``where``."""


class Float32Codec(Codec):
    name = "float32"
    storage = np.dtype("<f4")


class Float16Codec(Codec):
    name = "float16"
    storage = np.dtype("<f2")
    converts = True

    def prepare(self, q: np.ndarray) -> Any:
        return kernels.f16_query(q)

    def scores(self, prepared: Any, codes: np.ndarray, scratch: "kernels.Scratch") -> np.ndarray:
        return kernels.f16_scores(prepared, codes, scratch)


class Int8Codec(Codec):
    name = "int8"
    storage = np.dtype("u1")
    calibrated = True
    tensor_names = ("scale", "offset", "calibration_min", "calibration_max")
    converts = True
    # what a calibration saved (or pickled) without these fields had: minimum to maximum, no extent kept
    calibration_tail = 0.0
    _extent: Optional[Tuple[np.ndarray, np.ndarray]] = None
    _wide: Optional[Tuple[np.ndarray, ...]] = None  # (scale, offset, their float64 copies): see _parameters

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.scale: Optional[np.ndarray] = None  # float32 (d,)
        self.offset: Optional[np.ndarray] = None  # float32 (d,)
        self.calibration_count = 0
        self.calibration_tail = CALIBRATION_TAIL
        self._extent = None

    @property
    def extent(self) -> Tuple[np.ndarray, np.ndarray]:
        """(minimum, maximum) per dimension of the calibration's unit rows (float32): :meth:`encode` counts the
        components beyond them. A calibration saved without them (before tinyhpd kept them: its range was the
        extent) gives the code range widened by half a step."""
        if self._extent is not None:
            return self._extent
        scale, offset = self.scale.astype(np.float64), self.offset.astype(np.float64)
        return offset - 0.5 * scale, offset + 255.5 * scale

    @property
    def ready(self) -> bool:
        return self.scale is not None

    @property
    def extra_nbytes(self) -> int:
        held = 0 if self._extent is None else self._extent[0].nbytes + self._extent[1].nbytes
        return 0 if self.scale is None else self.scale.nbytes + self.offset.nbytes + held

    def calibrate(self, x: np.ndarray) -> None:
        """Per dimension, the components of the unit rows of ``x`` map to the codes 0..255 from the (k + 1)-th smallest
        to the (k + 1)-th largest, k = floor(CALIBRATION_TAIL * len(x)): the k most extreme on each side are clipped
        (none below 100,000 rows: minimum to maximum). The rows' minimum and maximum are kept as :attr:`extent`. A
        dimension constant in ``x`` gets [-1, 1] (the range of any component of a unit vector)."""
        n = int(x.shape[0])
        k = int(CALIBRATION_TAIL * n)
        low, high = _tails(x, k + 1)  # (d, k + 1): ascending, descending
        lo, hi = low[:, k].copy(), high[:, k].copy()
        whole = ~(hi > lo)  # the tails hold the whole spread of a dimension: its extent instead
        lo[whole], hi[whole] = low[whole, 0], high[whole, 0]
        flat = ~(hi > lo)
        lo[flat], hi[flat] = -1.0, 1.0
        self.scale = ((hi - lo) / 255.0).astype(np.float32)
        self.offset = lo.astype(np.float32)
        self._extent = (_float32_outward(low[:, 0], -np.inf), _float32_outward(high[:, 0], np.inf))
        self.calibration_count = n
        self.calibration_tail = CALIBRATION_TAIL

    def encode(self, unit: np.ndarray) -> Tuple[np.ndarray, int]:
        """Codes of unit rows, and how many components lie outside :attr:`extent` (clipped beyond anything the
        calibration saw; its own tails are clipped by design and not counted)."""
        q = np.rint((unit - self.offset.astype(np.float64)) / self.scale.astype(np.float64))
        lo, hi = self.extent
        clipped = int(np.count_nonzero((unit < lo) | (unit > hi)))
        return np.clip(q, 0, 255).astype(np.uint8), clipped

    def decode(self, codes: np.ndarray, dtype: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        scale, offset = self._parameters(dtype)
        x = _cast(codes, dtype, out)
        x *= scale
        x += offset
        return x

    def _parameters(self, dtype: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(scale, offset) in ``dtype``: float32 ones widen exactly, so the values are the same; the float64 copies
        are made once per calibration (an operation on float32 and float64 operands casts its float32 one on each
        call: ~0.5 us of a single query's rescoring)."""
        if dtype is not np.float64 and np.dtype(dtype) != np.float64:
            return self.scale, self.offset
        wide = self._wide
        if wide is None or wide[0] is not self.scale or wide[1] is not self.offset:  # new or changed calibration
            wide = self._wide = (self.scale, self.offset, self.scale.astype(np.float64),
                                 self.offset.astype(np.float64))
        return wide[2], wide[3]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_wide", None)  # derived: made again on the first decode
        return state

    def from_signed(self, codes: np.ndarray) -> np.ndarray:
        """Codes and calibration of format 1 (signed codes c, decode c * scale + offset) in this layout (unsigned
        c + 128, the offset lowered by 128 scale): an in-memory copy of the codes. Call after :meth:`restore`."""
        self.offset = (self.offset.astype(np.float64) - 128.0 * self.scale.astype(np.float64)).astype(np.float32)
        return np.bitwise_xor(np.asarray(codes).view(np.uint8), np.uint8(0x80))

    def faiss_range(self) -> np.ndarray:
        """faiss ScalarQuantizer QT_8bit parameters (vmin per dimension, then vdiff) decoding these codes to the
        same values (faiss decodes vmin + (code + 0.5) / 255 vdiff)."""
        vmin = self.offset.astype(np.float64) - 0.5 * self.scale.astype(np.float64)
        return np.concatenate([vmin, 255.0 * self.scale.astype(np.float64)]).astype(np.float32)

    def prepare(self, q: np.ndarray) -> Any:
        # q . (code * scale + offset) = (q * scale) . code + q . offset
        q_eff = (q * self.scale.astype(np.float64)).astype(np.float32)
        q_off = (q @ self.offset.astype(np.float64)).astype(np.float32)[:, None]
        return q_eff, q_off

    def scores(self, prepared: Any, codes: np.ndarray, scratch: "kernels.Scratch") -> np.ndarray:
        q_eff, q_off = prepared
        s = kernels.i8_scores(q_eff, codes, scratch)
        s += q_off
        return s

    def error_bound(self) -> float:
        """As for float codes, with |scale * code| <= 255 |scale| and the rounding of q * scale, q . offset and the
        final addition."""
        scaled = 255.0 * float(np.linalg.norm(self.scale.astype(np.float64)))
        return 2.0 * U32 * (2 * self.dim + 16) * (scaled + float(np.linalg.norm(self.offset.astype(np.float64)))) \
            + 1e-12

    def check_finite(self, codes: np.ndarray, where: str) -> None:
        """Every int8 code is a valid value."""

    def manifest_part(self) -> Optional[dict]:
        return {"decode": "code * scale + offset, per dimension", "codes": [0, 255],
                "calibration_count": self.calibration_count, "calibration_tail": self.calibration_tail,
                "out_of_range": "clip"}

    def tensors(self) -> Dict[str, np.ndarray]:
        out = {"scale": self.scale, "offset": self.offset}
        if self._extent is not None:  # a calibration restored without it saves without it (and keeps its meaning)
            out["calibration_min"], out["calibration_max"] = self._extent
        return out

    def restore(self, tensors: Dict[str, np.ndarray], manifest: dict, where: str) -> None:
        for key in ("scale", "offset"):
            if key not in tensors:
                raise ValueError(f"{where}: tensor {key!r} is missing (an int8 index needs its scale and offset)")
        scale = np.array(tensors["scale"], dtype=np.float32)
        offset = np.array(tensors["offset"], dtype=np.float32)
        if scale.shape != (self.dim,) or offset.shape != (self.dim,):
            raise ValueError(f"{where}: int8 scale/offset must have shape [{self.dim}]")
        if not (np.isfinite(scale).all() and np.isfinite(offset).all() and (scale > 0).all()):
            raise ValueError(f"{where}: int8 scale/offset must be finite (and the scales positive)")
        extent = None
        if "calibration_min" in tensors or "calibration_max" in tensors:
            extent = tuple(np.array(tensors.get(key, np.empty(0)), dtype=np.float32)
                           for key in ("calibration_min", "calibration_max"))
            if any(e.shape != (self.dim,) or not np.isfinite(e).all() for e in extent):
                raise ValueError(f"{where}: int8 calibration_min/calibration_max must both be finite, of shape "
                                 f"[{self.dim}]")
        part = manifest.get("int8")
        count = part.get("calibration_count", 0) if isinstance(part, dict) else 0
        tail = part.get("calibration_tail", 0.0) if isinstance(part, dict) else 0.0
        self.scale, self.offset, self._extent = scale, offset, extent
        self.calibration_count = int(count) if isinstance(count, int) and not isinstance(count, bool) else 0
        self.calibration_tail = float(tail) if isinstance(tail, (int, float)) and not isinstance(tail, bool) else 0.0


def _tails(x: np.ndarray, m: int) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high), each (d, m): per dimension the m smallest components of the unit rows of ``x`` in ascending order
    and the m largest in descending order. One pass over row blocks (see :func:`_merge_smallest`)."""
    low = high = None
    for start in range(0, x.shape[0], CALIBRATION_BLOCK_ROWS):
        unit = unit_rows(x[start:start + CALIBRATION_BLOCK_ROWS], start, "calibration vectors")
        low = _merge_smallest(low, unit, m)
        high = _merge_smallest(high, -unit, m)
    return low, -high


def _merge_smallest(kept: Optional[np.ndarray], block: np.ndarray, m: int) -> np.ndarray:
    """(d, m) ascending: the m smallest per dimension (column of ``block``) of ``kept`` and ``block`` together. Once
    ``kept`` is full only the block's components below its m-th are looked at: a comparison per component."""
    if kept is None or kept.shape[1] < m:
        both = block.T if kept is None else np.concatenate([kept, block.T], axis=1)
        take = min(m, both.shape[1])
        return np.sort(np.partition(both, take - 1, axis=1)[:, :take], axis=1)
    rows, cols = np.nonzero(block < kept[:, -1])
    if not len(cols):
        return kept
    vals = block[rows, cols]
    order = np.lexsort((vals, cols))
    cols, vals = cols[order], vals[order]
    rank = np.arange(len(cols)) - np.searchsorted(cols, cols)  # place within its dimension
    fit = rank < m
    grown = np.concatenate([kept, np.full_like(kept, np.inf)], axis=1)
    grown[cols[fit], m + rank[fit]] = vals[fit]
    return np.sort(grown, axis=1)[:, :m]


def _cast(codes: np.ndarray, dtype: Any, out: Optional[np.ndarray]) -> np.ndarray:
    """``codes`` as a new array of ``dtype``, or copied into ``out``."""
    if out is None:
        return np.asarray(codes).astype(dtype)
    np.copyto(out, codes, casting="unsafe")
    return out


def _float32_outward(values: np.ndarray, toward: float) -> np.ndarray:
    """float32 of float64 ``values``, rounded toward ``toward`` (-inf or inf) where float32 cannot hold them: a bound
    that still holds every value it was taken from."""
    out = values.astype(np.float32)
    inside = out > values if toward < 0 else out < values
    return np.where(inside, np.nextafter(out, np.float32(toward)), out).astype(np.float32)


class BinaryCodec(Codec):
    name = "binary"
    storage = np.dtype("u1")
    exact = False

    @property
    def width(self) -> int:
        return (self.dim + 7) // 8

    def encode(self, unit: np.ndarray) -> Tuple[np.ndarray, int]:
        return np.packbits(unit > 0, axis=1), 0

    def decode(self, codes: np.ndarray, dtype: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
        x = _cast(np.unpackbits(np.asarray(codes), axis=-1, count=self.dim), dtype, out)
        x *= dtype(2.0 / math.sqrt(self.dim))
        x -= dtype(1.0 / math.sqrt(self.dim))
        return x

    def check_finite(self, codes: np.ndarray, where: str) -> None:
        """Every bit pattern is a valid value."""

    def manifest_part(self) -> Optional[dict]:
        return {"bit": "x > 0", "packbits_bitorder": "big", "rescoring": "float query . sign vector"}


CODECS: Dict[str, Type[Codec]] = {c.name: c for c in (Float32Codec, Float16Codec, Int8Codec, BinaryCodec)}
# storage types an index file may hold: today's codecs', and format 1's signed int8 codes (see Int8Codec.from_signed)
READABLE_STORAGE = frozenset({c.storage for c in CODECS.values()} | {np.dtype("i1")})
