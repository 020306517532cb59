"""Top-k selection: a running top-c over score chunks, ranking, Hamming distances (popcount)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from tinyhpd.index.checks import POPCOUNT_LUT


def _popcount(words: np.ndarray) -> np.ndarray:
    """Bits set per element (uint8 result), via np.bitwise_count when NumPy has it, else a lookup table."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _popcount_lut(words)


def _popcount_lut(words: np.ndarray) -> np.ndarray:
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return POPCOUNT_LUT[as_bytes].sum(axis=-1, dtype=np.uint8)


def word_view(codes: np.ndarray) -> np.ndarray:
    """View packed bit rows as the widest unsigned words dividing the row width (fewer popcounts)."""
    width = codes.shape[1]
    for size, dt in ((8, np.uint64), (4, np.uint32), (2, np.uint16)):
        if width % size == 0:
            return np.ascontiguousarray(codes).view(dt)
    return np.ascontiguousarray(codes)


def hamming_distances(query_words: np.ndarray, corpus_words: np.ndarray) -> np.ndarray:
    """(nq, m) Hamming distances between (nq, W) and (m, W) word rows; the loop runs over the W words only."""
    columns = np.ascontiguousarray(corpus_words.T)  # (W, m)
    bits = columns.shape[0] * columns.dtype.itemsize * 8
    dist = np.zeros((query_words.shape[0], corpus_words.shape[0]), dtype=np.uint16 if bits < 65536 else np.uint32)
    for w in range(columns.shape[0]):
        dist += _popcount(np.bitwise_xor(query_words[:, w : w + 1], columns[w][None, :]))
    return dist


class TopC:
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

    def merge(self, other: "TopC") -> None:
        """Take in another running top-c over other rows (a thread's share of the corpus)."""
        nq, have = other.scores.shape
        if have:
            self._merge(np.repeat(np.arange(nq), have), other.scores.reshape(-1), other.rows.reshape(-1))

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


def rank_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Sort each row best first (higher score, then lower row) and keep k."""
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
