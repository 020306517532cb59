"""A query's whole ANN search in compiled code (numba): normalisation, the HNSW search over the graph's own tables
(faiss's arrays, read in place), and the exact float64 rescoring and ranking of the k rows found; `search_many` runs
a range of queries in one call (the caller gives each thread its range and its visited table).

Imported by `ann` only when numba is installed (the ``ann`` extra brings it); without it, or for storage types it
does not cover, faiss's own search runs, which is the reference this search is tested against (the same graph, the
same rows found: the algorithm below is the standard HNSW search, which faiss's is too). Why it exists: a single
query at a small expansion costs faiss 18-26 us (131k-1M rows), and tinyhpd's NumPy steps around faiss's call
(float64 unit query, rescoring of the k rows, ranking) added 12-15 us to that; in one compiled call the whole query
costs less than faiss's search alone (bench/RESULTS.md).

The similarity a search walks by is faiss's for the same storage: the float32 dot product of the float32 query with
the stored rows (float32 storage), or with the uint8 codes (int8 storage: the query times the codec's scale, see
``ann.SEARCH_QUANTIZER``; the constant terms of the decoding are the same for every row and are left out). The
scores returned are the index's float64 ones: the decoded row (``code * scale + offset``, exact in float64) times the
float64 unit query, summed in float64 without reassociation; they equal the NumPy path's to rounding (the order of
a 128-term sum, ~1e-16).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic



def _compiled(fast: bool, inline: str = "never"):
    """numba's decorator: cached on disk where numba can write (else compiled once per process), without the GIL;
    ``fast``: float32 reassociation allowed (the graph walk's sums; never the float64 scores)."""
    def decorate(fn):
        try:
            return numba.njit(cache=True, nogil=True, fastmath=fast, inline=inline)(fn)
        except RuntimeError:  # no writable cache location (a read-only install)
            return numba.njit(nogil=True, fastmath=fast, inline=inline)(fn)
    return decorate


@intrinsic
def _prefetch(typingctx, rows, row):
    """Ask the CPU to start loading the first bytes of rows[row] (2-D, C order) into its caches: the unvisited
    neighbours of a node are all requested before the first is scored, so their reads overlap (1M rows: 11-14% less
    time a query; faiss prefetches too)."""
    if not isinstance(rows, types.Array) or rows.ndim != 2 or not isinstance(row, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type, row_type = signature.args
        array = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, args[1], row_type, types.intp), context.get_constant(types.intp, 0)]
        pointer = cgutils.get_item_pointer(context, builder, array_type, array, index)
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch")
        # llvm.prefetch(address, read (0), keep in all cache levels (3), data cache (1))
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(rows, row), codegen


@_compiled(fast=True, inline="always")
def _similarity(rows, row, xs):
    """float32 dot product of query ``xs`` (d,) with stored row ``row`` of ``rows`` (n, d) uint8 or float32."""
    s = np.float32(0.0)
    for j in range(xs.shape[0]):
        s += xs[j] * np.float32(rows[row, j])
    return s


@_compiled(fast=False)
def _scores(found, rows, scale, offset, u):
    """float64 scores (m,) of rows ``found`` (m,): (row * scale + offset) . u, summed in order."""
    out = np.empty(found.shape[0], np.float64)
    for i in range(found.shape[0]):
        r = found[i]
        s = 0.0
        for j in range(u.shape[0]):
            s += (rows[r, j] * scale[j] + offset[j]) * u[j]
        out[i] = s
    return out


@_compiled(fast=False, inline="always")
def _push_min(keys, ids, size, key, id_):
    """Push onto a binary min-heap on ``keys`` of ``size`` items; returns the new size."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] <= key:
            break
        keys[i] = keys[parent]
        ids[i] = ids[parent]
        i = parent
    keys[i] = key
    ids[i] = id_
    return size + 1


@_compiled(fast=False, inline="always")
def _pop_min(keys, ids, size):
    """Remove the smallest key of a binary min-heap of ``size`` items; returns the new size."""
    size -= 1
    keys[0], ids[0] = keys[size], ids[size]
    _sift_down(keys, ids, size, 0)
    return size


@_compiled(fast=False, inline="always")
def _sift_down(keys, ids, size, i):
    """Restore a binary min-heap below position i."""
    key, id_ = keys[i], ids[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= key:
            break
        keys[i] = keys[child]
        ids[i] = ids[child]
        i = child
    keys[i] = key
    ids[i] = id_


@_compiled(fast=False)
def _unit(v):
    """The float64 unit vector of v; empty when v's squared norm is not finite and positive (no reassociation here: a
    fast-math build may assume away the NaN this checks for)."""
    square = 0.0
    for j in range(v.shape[0]):
        square += v[j] * v[j]
    if not (math.isfinite(square) and square > 1e-200):
        return np.empty(0, np.float64)
    return v / math.sqrt(square)


@_compiled(fast=True)
def search_one(v, query_scale, scale, offset, rows, offsets, neighbors, cum, entry, max_level, ef, k, visited,
               mark):
    """The top-k of one query over an HNSW graph; returns (rows found (m,) int64, float64 scores (m,)). m < k only
    when the graph reaches fewer than k rows; m = 0 when the query's squared norm is not a finite positive number (the
    caller reports the query).

    v (d,) float64: the query, not normalised. query_scale (d,) float32: the walk's query is float32(unit v) times it.
    scale, offset (d,) float64: a row decodes to ``row * scale + offset``. rows (n, d) uint8 or float32: the stored
    codes. offsets (n + 1,) int64, neighbors (int32, -1 ends a list), cum (levels + 1,) int32: faiss's link tables
    (node i's level-l neighbours: neighbors[offsets[i] + cum[l] : offsets[i] + cum[l + 1]]). entry, max_level: the
    graph's entry point and top level. ef: the expansion (>= k). visited (n,) uint8: a node counts as visited in this
    search when its entry equals ``mark`` (1..255; the caller clears the table before a mark repeats)."""
    u = _unit(v)  # the float64 unit query                                                               (d,)
    if u.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    xs = np.empty(u.shape[0], np.float32)  # the walk's query                                             (d,)
    for j in range(u.shape[0]):
        xs[j] = np.float32(u[j]) * query_scale[j]

    # upper levels: greedy, to the best neighbour until none is better
    node = entry
    best = _similarity(rows, node, xs)
    for level in range(max_level, 0, -1):
        moved = True
        while moved:
            moved = False
            start = offsets[node]
            for p in range(start + cum[level], start + cum[level + 1]):
                other = neighbors[p]
                if other < 0:
                    break
                s = _similarity(rows, other, xs)
                if s > best:
                    best, node, moved = s, other, True

    # level 0: the candidates to expand (min-heap on -similarity: best first) and the ef best seen (min-heap on
    # similarity: worst first). A candidate worse than the ef-th best seen is never expanded, so at most ef of them
    # are alive; when the candidate heap fills, the dead ones are dropped (its arrays are never replaced: numba
    # would count references on every step of the loop for an array variable that may change)
    capacity = 2 * (ef + cum[1] - cum[0])
    fresh = np.empty(cum[1] - cum[0], np.int64)  # a node's unvisited neighbours                                 (m,)
    cand_k = np.empty(capacity, np.float32)
    cand_i = np.empty(capacity, np.int64)
    top_k = np.empty(ef + 1, np.float32)
    top_i = np.empty(ef + 1, np.int64)
    visited[node] = mark
    n_cand = _push_min(cand_k, cand_i, 0, -best, node)
    n_top = _push_min(top_k, top_i, 0, best, node)
    while n_cand > 0:
        if n_top >= ef and -cand_k[0] < top_k[0]:  # the best candidate is worse than the ef-th best seen
            break
        node = cand_i[0]
        n_cand = _pop_min(cand_k, cand_i, n_cand)
        start = offsets[node]
        m = 0
        for p in range(start + cum[0], start + cum[1]):
            other = neighbors[p]
            if other < 0:
                break
            if visited[other] != mark:
                visited[other] = mark
                fresh[m] = other
                m += 1
                _prefetch(rows, other)
        for i in range(m):
            other = fresh[i]
            s = _similarity(rows, other, xs)
            if n_top < ef or s > top_k[0]:
                if n_cand == capacity:  # drop the dead candidates (the heap is full only when the top is: n_top = ef)
                    kept = 0
                    for c in range(n_cand):
                        if -cand_k[c] >= top_k[0]:
                            cand_k[kept] = cand_k[c]
                            cand_i[kept] = cand_i[c]
                            kept += 1
                    n_cand = kept
                    for c in range(n_cand // 2 - 1, -1, -1):
                        _sift_down(cand_k, cand_i, n_cand, c)
                if n_cand < capacity:
                    n_cand = _push_min(cand_k, cand_i, n_cand, -s, other)
                n_top = _push_min(top_k, top_i, n_top, s, other)
                if n_top > ef:
                    n_top = _pop_min(top_k, top_i, n_top)
    while n_top > k:  # keep the k best
        n_top = _pop_min(top_k, top_i, n_top)

    found = top_i[:n_top].copy()
    scores = _scores(found, rows, scale, offset, u)
    for i in range(1, n_top):  # rank: score descending, ties to the lower row (insertion: k is small)
        s64, r = scores[i], found[i]
        j = i - 1
        while j >= 0 and (scores[j] < s64 or (scores[j] == s64 and found[j] > r)):
            scores[j + 1] = scores[j]
            found[j + 1] = found[j]
            j -= 1
        scores[j + 1] = s64
        found[j + 1] = r
    return found, scores


@_compiled(fast=False)
def search_many(queries, first, last, query_scale, scale, offset, rows, offsets, neighbors, cum, entry, max_level,
                ef, k, visited, mark, marks, out_rows, out_scores, counts):
    """:func:`search_one` for queries[first:last] (q, d) float64, one after the other: out_rows (q, k) int64,
    out_scores (q, k) float64 and counts (q,) (how many of a query's k places were found: :func:`search_one`'s m)
    are filled at those positions. ``mark``: the visited table's last mark (0: fresh); marks 1..``marks`` are used in
    turn, the table cleared before the first comes round again. Returns the last mark used."""
    for i in range(first, last):
        if mark >= marks:
            visited[:] = 0
            mark = 0
        mark += 1
        found, scores = search_one(queries[i], query_scale, scale, offset, rows, offsets, neighbors, cum, entry,
                                   max_level, ef, k, visited, mark)
        counts[i] = found.shape[0]
        for j in range(found.shape[0]):
            out_rows[i, j] = found[j]
            out_scores[i, j] = scores[j]
    return mark
