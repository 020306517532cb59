"""Score kernels of the exact search: float32 chunk scores of stored codes against queries, and a small thread pool
that splits the corpus between cores.

float16 codes are not cast by NumPy (a scalar loop, ~90% of a float16 search): their bits are moved into float32
bits instead. A float16 number with sign s, exponent e and mantissa m, shifted left by 13 bits inside a 32-bit word
(sign moved back to bit 31), is the float32 with exponent field e and mantissa m << 13, whose value is exactly
2^-112 times the float16 value: for normal numbers 2^(e-127) (1 + m/1024) against 2^(e-15) (1 + m/1024), for
subnormals 2^-126 (m/1024) against 2^-14 (m/1024). The query is multiplied by 2^112 instead (exact: a power of
two), so the product is the float32 dot product of the float16 values, without a conversion pass of its own. Three
integer passes over an L2-sized block (widen with sign extension, shift, clear the three copied sign bits) replace
the cast.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

F16_SHIFT_SCALE = 2.0 ** 112  # float16 value = 2^112 * (float16 bits << 13, read as float32)
_CLEAR_COPIED_SIGN = np.int32(-1879048193)  # 0x8FFFFFFF: keeps the sign bit, clears bits 28-30
BLOCK_ROWS = 1024  # rows converted at a time: an int32 block of 1024 x d stays in L2 (measured best of 512..16384)
SMALL_BATCH = 8  # up to this many queries the conversion dominates (block-wise, threads); above it the product
# does (one conversion of the whole chunk, one product that BLAS threads itself)


class Scratch:
    """Reusable buffers of one thread (a search allocates nothing per block)."""

    def __init__(self) -> None:
        self._buffers: dict = {}

    def get(self, purpose: str, dtype: Any, rows: int, cols: int, least_rows: int = BLOCK_ROWS) -> np.ndarray:
        """A (rows, cols) C-contiguous buffer of ``dtype`` for ``purpose`` (buffers of different purposes never share
        memory), reused while large enough (a new one holds at least ``least_rows`` rows)."""
        key = (purpose, np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols:
            buf = np.empty((max(rows, least_rows), cols), dtype=dtype)
            self._buffers[key] = buf
        return buf[:rows]


def block_rows(nq: int, m: int) -> int:
    """Rows converted at a time for ``nq`` queries over a chunk of ``m`` rows (see SMALL_BATCH)."""
    return BLOCK_ROWS if nq <= SMALL_BATCH else max(m, 1)


def f32_scores(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(nq, d) float32 queries . (m, d) float32 codes -> (nq, m) float32."""
    return q @ np.asarray(codes).T


def f16_query(q: np.ndarray) -> np.ndarray:
    """Unit queries (float64) as float32, times 2^112 (see the module docs)."""
    return (q.astype(np.float32) * np.float32(F16_SHIFT_SCALE)).astype(np.float32)


def f16_scores(q_shifted: np.ndarray, codes: np.ndarray, scratch: Scratch) -> np.ndarray:
    """(nq, d) queries from :func:`f16_query` . (m, d) float16 codes -> (nq, m) float32 scores of the float16
    values (the products are those of a float32 dot product: an exact conversion, then float32 arithmetic)."""
    m, d = codes.shape
    out = np.empty((q_shifted.shape[0], m), dtype=np.float32)
    bits = np.asarray(codes).view(np.int16)
    block = block_rows(q_shifted.shape[0], m)
    for start in range(0, m, block):
        stop = min(m, start + block)
        w = scratch.get("f16 widened", np.int32, stop - start, d)
        np.copyto(w, bits[start:stop])  # sign-extending widening: bits 15..31 all hold the sign
        np.left_shift(w, 13, out=w)  # sign now in bits 28..31, exponent in 23..27, mantissa in 13..22
        np.bitwise_and(w, _CLEAR_COPIED_SIGN, out=w)
        np.matmul(q_shifted, w.view(np.float32).T, out=out[:, start:stop])  # 2^112 q . 2^-112 x = q . x
    return out


def i8_scores(q: np.ndarray, codes: np.ndarray, scratch: Scratch) -> np.ndarray:
    """(nq, d) float32 . (m, d) 8-bit codes (the int8 storage type's bytes) -> (nq, m) float32 (the codes cast exactly,
    block by block)."""
    m, d = codes.shape
    block = block_rows(q.shape[0], m)
    if block >= m:  # one conversion, one product (NumPy's own output: faster than matmul's out= here)
        x = scratch.get("i8 as float32", np.float32, m, d)
        np.copyto(x, codes, casting="unsafe")
        return q @ x.T
    out = np.empty((q.shape[0], m), dtype=np.float32)
    for start in range(0, m, block):
        stop = min(m, start + block)
        x = scratch.get("i8 as float32", np.float32, stop - start, d)
        np.copyto(x, codes[start:stop], casting="unsafe")
        np.matmul(q, x.T, out=out[:, start:stop])
    return out


# ----------------------------------------------------------------------------------------------------------------
# threads: contiguous row ranges, one per thread (NumPy's integer passes and BLAS release the GIL)


_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()
MIN_ROWS_PER_THREAD = 65536  # below this a second thread costs more than it saves


def default_threads() -> int:
    """Threads a search uses: the cores this process may run on (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < threads:  # grown, never shrunk (the old pool finishes its work)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tinyhpd-search"), threads
        return _POOL


def thread_scratch() -> Scratch:
    """The calling thread's buffers."""
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = Scratch()
    return scratch


def split_rows(n: int, threads: int) -> List[Tuple[int, int]]:
    """Contiguous ranges covering 0..n, one per thread that gets at least MIN_ROWS_PER_THREAD rows."""
    parts = max(1, min(int(threads), n // MIN_ROWS_PER_THREAD))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def run_ranges(fn: Callable[[int, int], Any], n: int, threads: int) -> List[Any]:
    """``fn(start, stop)`` over :func:`split_rows` ranges, the first in the calling thread, the others in the pool."""
    return run_parts(fn, split_rows(n, threads))


def run_parts(fn: Callable[[int, int], Any], ranges: List[Tuple[int, int]]) -> List[Any]:
    """``fn(start, stop)`` for each range, the first in the calling thread, the others in the pool."""
    if len(ranges) == 1:
        return [fn(*ranges[0])]
    futures = [_pool(len(ranges) - 1).submit(fn, *r) for r in ranges[1:]]
    first = fn(*ranges[0])
    return [first] + [f.result() for f in futures]
