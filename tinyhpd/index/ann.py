"""Approximate nearest neighbours for `Index`: an HNSW graph (faiss) that proposes candidates, which the index then
rescores exactly from its stored codes, so scores stay those of the exact path.

faiss-cpu is an optional dependency (``pip install 'tinyhpd[ann]'``); it is imported when an ANN index is made or
loaded. Queries on a float32 or int8 graph are searched in compiled code when numba (the same extra) is installed
(graph_search.py, through :meth:`HNSW.search`: a single query in one call, a batch split between threads); faiss's
search serves everything else. Graph ids are the index's row numbers; a large addition's rows are stored grouped by
k-means cluster (``LOCALITY_MIN_ROWS``).

The graph's storage *is* the index's codes: faiss keeps the vectors of an HNSW graph in a flat code array, and each
storage type has a faiss storage with the same bytes (``STORAGES``): float32 rows (``IndexHNSWFlat``), IEEE float16
rows (8-bit scalar quantizer ``QT_fp16``), the int8 codec's unsigned bytes (``QT_8bit`` with the codec's range, see
``Int8Codec.faiss_range``) and packed sign bits under the Hamming distance (``IndexBinaryHNSW``). So an ANN index
holds one copy of the codes (which the index reads through :meth:`HNSW.codes`) plus the links; at connectivity 16 the
links cost about 145 bytes per vector (32 neighbours at the bottom level, a few above, an offset and a level). An int8
graph is linked with that range but searched (and saved) with a cheaper quantizer over the same bytes and a scaled
query (``SEARCH_QUANTIZER``).

Removing rows drops them from the graph in place: their codes and link lists go, the later rows' ids move down, and
every other node's lists lose the removed neighbours (kept in order, without holes). After removals of more than
``REBUILD_AFTER_REMOVED`` of the rows the graph is rebuilt from the codes.

Parameters come from a recall target instead of the user: `tune` makes sample queries, asks the exact path for their
top-k neighbours, and raises the search expansion (and, for real queries given by the caller, if the largest
expansion is not enough, rebuilds with twice the connectivity) until the measured recall@k of graph + rescoring
reaches the target. What was chosen and measured is recorded in the manifest. The default sample queries are
midpoints of two random stored vectors. Real queries are usually far from the corpus: STS-B test sentences against
8,000 distillation sentences (bundled model) have a median top-1 cosine of 0.39, stored rows have 0.73 to their
nearest other row. So stored rows as queries are easy, even held out of the graph (unlinked, then searched for):
faiss int8 graph, recall@10 at expansion 16 / 32 / 64 / 128, held-out rows 0.933 / 0.967 / 0.993 / 0.999, midpoints
0.866 / 0.904 / 0.950 / 0.980, real queries 0.758 / 0.847 / 0.925 / 0.968. Midpoints come closest but still above,
so they must reach a stricter target, half the misses of ``target_recall`` (0.975 for 0.95); queries the caller gives
(`Index.tune(queries)`) must reach ``target_recall`` itself. Only measured real queries raise the connectivity (twice
the link memory and a rebuild): on structureless data midpoints can stay below their target at any setting (1M rows,
87% drawn from a Gaussian fit: 0.81 at connectivity 16 and expansion 1024, where real queries reach 0.99; 0.93 at
connectivity 32 with the earlier usearch graph). Out of reach, the cheapest setting within ``KNEE`` of the best
recall is taken. The pairs must be independent: pairing rows in corpus order (neighbours in a file are often about
one topic) made the midpoints easy again.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from tinyhpd.index.kernels import run_parts
from tinyhpd.index.pages import advise_huge_pages

ANN_KINDS = ("hnsw",)
BINARY_SEARCH_PARAMETERS_SINCE = (1, 14)  # faiss version whose IndexBinaryHNSW takes per-call search parameters
_GRAPH_EXPANSION_LOCK = threading.Lock()  # before it: one binary graph search at a time sets the graph's efSearch
GRAPH = "graph.faiss"
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_CONNECTIVITY = 16
MAX_CONNECTIVITY = 32  # each raise rebuilds the graph (1M x 128: minutes); past 32 the expansion is cheaper
EXPANSION_ADD = 128  # fixed, not tuned: 64 -> 128 +0.01 recall at equal search cost, 128 -> 256 +0.004 for twice
# the build (bench/ablate_build_expansion.py); at 128 10M rows took 45 minutes
EXPANSIONS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
TUNE_K = 10
TUNE_SAMPLE = 500
TUNE_QUERIES_KEPT = 2000  # queries given for tuning beyond this: a seeded random sample of them is measured and kept
RETUNE_GROWTH = 2.0  # tune again when the graph has grown this much since the last tuning
KNEE = 0.01  # a target out of reach: the cheapest setting this close to the best recall measured
REBUILD_AFTER_REMOVED = 0.25  # rebuild when this share of the rows present at the last build has been removed
# Each addition reaches faiss in one add: faiss links the rows of one add highest level first and in random order.
# Adding in parts made worse graphs: in the corpus order in 65536-row parts (1M rows: 15% more distance computations
# and lower recall at the same expansion), and in 1M-row parts at 4M rows (131k real + drawn, int8: 9-23% more
# distance computations per expansion than one add, 1.04-1.14x the time at equal recall up to 0.98 and up to 1.8x
# above; one add costs the distance computations of faiss's own graph over the same rows). The float32 input of an
# addition is kept in memory up to GRAPH_INPUT_IN_MEMORY (512 MB: 1M rows of 128-d); a larger one is decoded, in
# parts of GRAPH_INPUT_PART, into a temporary file (tempfile's directory: TMPDIR) that faiss reads memory-mapped
GRAPH_INPUT_IN_MEMORY = 1 << 29
GRAPH_INPUT_PART = 1 << 24
# The rows of an addition of at least LOCALITY_MIN_ROWS are stored grouped by k-means cluster (about
# LOCALITY_ROWS_PER_CLUSTER rows each, at most LOCALITY_MAX_CLUSTERS clusters, trained on LOCALITY_TRAIN_PER_CLUSTER
# rows per cluster), not in the order given: a graph search walks from row to similar row, and similar rows stored
# side by side share cache lines and pages. 1M int8 rows (real embeddings + drawn), two graphs in one run: single
# queries 4-11% and batches up to 7% faster at the same expansion (16-256) with the benchmark's order (real rows
# first), 15-24% and 14-20% with the rows in random order; recall within one graph's chance (faiss links each level in
# random order whatever the storage order); 3 s of k-means in a 180-220 s build (RESULTS.md)
LOCALITY_MIN_ROWS = 1 << 16
LOCALITY_ROWS_PER_CLUSTER = 1000
LOCALITY_MAX_CLUSTERS = 4096
LOCALITY_TRAIN_PER_CLUSTER = 128
LOCALITY_ITERATIONS = 10

# candidates per requested result that tune tries, by the graph's metric: an inner-product graph ranks rows by the
# score rescoring computes (in float32 instead of float64), so more candidates would change nothing; Hamming distance
# only approximates the score, so more candidates are rescored
CANDIDATE_CHOICES = {"inner_product": (1,), "hamming": (2, 4)}

# int8 graphs are linked with the codec's per-dimension range (QT_8bit above: true inner products, which the linking
# heuristic compares between rows), then searched and saved with faiss's uniform 8-bit quantizer over the same bytes
# (vmin 0, vdiff 255: code c decodes to c + 0.5) and the query times the codec's scale. For one query the order is the
# same: q . (vmin + (c + 0.5) scale) = (q * scale) . (c + 0.5) + q . vmin, whose last term is the query's own
# constant. The per-dimension decoding reads two more arrays per code: at 1M x 128 (real-embedding corpus, 1,000
# queries) the uniform form found the same rows at every expansion 16-512 in 5-9% less time a single query and 5-14%
# less batched (RESULTS.md)
SEARCH_QUANTIZER = {"int8": ("QT_8bit_uniform", (0.0, 255.0))}

# storage types whose queries run in compiled code when numba is installed (graph_search.py): the
# inner-product ones (float16 rows would need a half-precision decoder, binary a popcount walk: faiss searches those)
COMPILED_STORAGES = ("float32", "int8")
# False: every search goes through faiss's, as without numba (the tests and benchmarks compare the two)
USE_COMPILED_SEARCH = True
VISITED_MARKS = 255  # searches one visited table serves before it is cleared (uint8 marks 1..255)
COMPILED_QUERIES_PER_THREAD = 16  # a batch's queries per thread of the compiled search (one takes 15-100 us)

# storage type -> (faiss index class, scalar quantizer type or None, metric): the graph storage holding its codes
STORAGES = {
    "float32": ("IndexHNSWFlat", None, "inner_product"),
    "float16": ("IndexHNSWSQ", "QT_fp16", "inner_product"),
    "int8": ("IndexHNSWSQ", "QT_8bit", "inner_product"),
    "binary": ("IndexBinaryHNSW", None, "hamming"),
}


def require_faiss() -> Any:
    """The faiss module, or an ImportError that says how to get it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("ann='hnsw' needs faiss-cpu: pip install 'tinyhpd[ann]'") from exc
    return faiss


def binary_search_takes_parameters(faiss: Any) -> bool:
    """Whether faiss's IndexBinaryHNSW.search accepts per-call search parameters (faiss 1.14 and later; 1.13 raises
    "search params not supported for this index")."""
    return _version_takes_parameters(getattr(faiss, "__version__", None))


@functools.lru_cache(maxsize=None)
def _version_takes_parameters(version: Optional[str]) -> bool:
    """The version string parsed once, not on every binary search."""
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= BINARY_SEARCH_PARAMETERS_SINCE
    except (AttributeError, ValueError):  # an unversioned build: assume a recent one
        return True


@functools.lru_cache(maxsize=None)
def compiled_search() -> Any:
    """The graph_search module (the whole search of a query, compiled), or None when numba is not installed or cannot
    be imported with this NumPy (faiss's search then serves every query)."""
    try:
        from tinyhpd.index import graph_search
    except ImportError:
        return None
    return graph_search


def proxy_target(target: float) -> float:
    """What midpoint queries must reach for ``target`` on real ones: half the misses."""
    return target + (1.0 - target) / 2.0


def check_kind(ann: Any) -> Optional[str]:
    if ann is None:
        return None
    if ann not in ANN_KINDS:
        raise ValueError(f"ann must be None or one of {', '.join(ANN_KINDS)}; got {ann!r}")
    return ann


def check_target_recall(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"target_recall must be a number in (0, 1]; got {value!r}")
    return float(value)


def _view(vector: Any, count: int, dtype: Any) -> np.ndarray:
    """A NumPy view of the first ``count`` items (of type ``dtype``, the vector's own) of a faiss vector: valid until
    the vector changes."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    out = require_faiss().rev_swig_ptr(vector.data(), count)
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"a faiss vector of {out.dtype} read as {np.dtype(dtype)}")
    return out


class HNSW:
    """The graph of one index and the home of its codes (see the module docs). ``codec``: the index's codec (int8:
    calibrated before the first :meth:`add`)."""

    def __init__(self, codec: Any, *, target_recall: float = DEFAULT_TARGET_RECALL,
                 connectivity: int = DEFAULT_CONNECTIVITY) -> None:
        require_faiss()  # a missing [ann] extra is reported when the index is made, not at its first add
        self.codec = codec
        self.dim = codec.dim
        self.storage = codec.name
        self.target_recall = check_target_recall(target_recall)
        self.connectivity = int(connectivity)
        self.expansion_search = 64
        self.candidates_per_result = CANDIDATE_CHOICES[STORAGES[self.storage][2]][0]  # rows rescored per result
        self.tuned: Optional[Dict[str, Any]] = None  # what tune measured
        self.built_size = 0  # rows present at the last (re)build, for REBUILD_AFTER_REMOVED
        self.removed = 0  # rows removed since then
        self._index: Any = None  # made at the first add (int8 needs its calibration)
        self._mapped = False  # loaded memory-mapped: read-only until copied into memory
        self._cache: Dict[Any, Any] = {}  # the codes view and search parameters; emptied by every change

    # ------------------------------------------------------------------------------------------------ the graph

    def _new_index(self) -> Any:
        faiss = require_faiss()
        kind, qtype, _ = STORAGES[self.storage]
        if kind == "IndexBinaryHNSW":
            index = faiss.IndexBinaryHNSW(8 * self.codec.width, self.connectivity)
        elif kind == "IndexHNSWFlat":
            index = faiss.IndexHNSWFlat(self.dim, self.connectivity, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(self.dim, getattr(faiss.ScalarQuantizer, qtype), self.connectivity,
                                      faiss.METRIC_INNER_PRODUCT)
            if qtype == "QT_8bit":
                storage = faiss.downcast_index(index.storage)
                faiss.copy_array_to_vector(self.codec.faiss_range(), storage.sq.trained)
                storage.is_trained = True
            index.is_trained = True
        index.hnsw.efConstruction = EXPANSION_ADD
        return index

    def _quantizer(self, linking: bool) -> None:
        """int8: the graph's quantizer for linking rows (the codec's range) or for searching (``SEARCH_QUANTIZER``);
        other storage types have one. Linking happens in :meth:`add` only, which no search may run beside (as for
        faiss's own add)."""
        if self.storage not in SEARCH_QUANTIZER or self._index is None:
            return
        faiss = require_faiss()
        sq = self._storage().sq
        if linking:
            qtype, trained = STORAGES[self.storage][1], self.codec.faiss_range()
        else:
            qtype, bounds = SEARCH_QUANTIZER[self.storage]
            trained = np.array(bounds, dtype=np.float32)
        sq.qtype = getattr(faiss.ScalarQuantizer, qtype)
        sq.set_derived_sizes()
        faiss.copy_array_to_vector(trained, sq.trained)

    def _storage(self) -> Any:
        faiss = require_faiss()
        if self.storage == "binary":
            return faiss.downcast_IndexBinary(self._index.storage)
        return faiss.downcast_index(self._index.storage)

    def _code_vector(self) -> Any:
        storage = self._storage()
        return storage.xb if self.storage == "binary" else storage.codes

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def mapped(self) -> bool:
        """Whether the graph (its codes included) is memory-mapped from its file."""
        return bool(self._mapped)

    def _huge_pages(self) -> None:
        """An in-memory graph on huge pages (a memory-mapped graph's pages belong to the file). Called after every
        change: a grown array may have moved."""
        if self._index is not None and not self._mapped:
            advise_graph_pages(self._index)

    def codes(self) -> np.ndarray:
        """The codes (n, codec.width) of the codec's storage type: a view of the graph's storage, valid until the
        next change of the graph (the index asks again each time)."""
        view = self._cache.get("codes")
        if view is None:
            n = len(self)
            flat = _view(self._code_vector(), n * self.codec.bytes_per_vector, np.uint8) if n else \
                np.empty(0, np.uint8)
            view = self._cache["codes"] = flat.view(self.codec.storage).reshape(n, self.codec.width)
        return view

    @property
    def nbytes(self) -> int:
        """Bytes of the links (neighbour lists, offsets, levels): what the graph adds to the codes."""
        if self._index is None:
            return 0
        h = self._index.hnsw
        return 4 * int(h.neighbors.size()) + 8 * int(h.offsets.size()) + 4 * int(h.levels.size())

    def _input_part_rows(self) -> int:
        """Rows of float32 input decoded at a time (GRAPH_INPUT_PART bytes)."""
        return max(1, GRAPH_INPUT_PART // (4 * self.dim))

    @contextlib.contextmanager
    def _graph_input(self, codes: np.ndarray) -> Iterator[np.ndarray]:
        """What faiss adds for codes: the packed bits, or the decoded vectors (float32), which faiss's storage encodes
        back to the same codes; past ``GRAPH_INPUT_IN_MEMORY`` the vectors are the memory map of a temporary file
        that has no name (its space is freed when the last view of the map goes)."""
        if self.storage == "binary":
            yield np.ascontiguousarray(codes)
            return
        n, size = len(codes), 4 * self.dim * len(codes)
        if size <= GRAPH_INPUT_IN_MEMORY:
            yield np.ascontiguousarray(self.codec.decode(codes, np.float32))
            return
        step = self._input_part_rows()
        with tempfile.TemporaryFile(prefix="tinyhpd-graph-input-") as f:  # no name: nothing left behind on a crash
            if hasattr(os, "posix_fallocate"):  # a full disk is an error here, not SIGBUS when a mapped page is written
                try:
                    os.posix_fallocate(f.fileno(), 0, size)
                except OSError as e:
                    raise OSError(e.errno, f"the graph's float32 input of {n:,} rows needs {size / 1e9:.1f} GB in a "
                                  f"temporary file in {tempfile.gettempdir()!r} ({e.strerror}); set TMPDIR to a "
                                  "directory with room, or add fewer rows at a time (the index is unchanged)") from e
            x = np.memmap(f, dtype=np.float32, mode="w+", shape=(n, self.dim))  # unmapped when the last view goes
            for start in range(0, n, step):
                self.codec.decode(codes[start:start + step], np.float32, out=x[start:start + step])
            yield x

    def locality_order(self, codes: np.ndarray) -> Optional[np.ndarray]:
        """The order to store the rows of an addition in (a permutation of its rows, grouped by k-means cluster),
        or None to keep the given order (fewer than ``LOCALITY_MIN_ROWS`` rows; see there). Seeded: the same codes
        give the same order."""
        n = len(codes)
        if n < LOCALITY_MIN_ROWS:
            return None
        faiss = require_faiss()
        k = max(2, min(LOCALITY_MAX_CLUSTERS, n // LOCALITY_ROWS_PER_CLUSTER))
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, LOCALITY_TRAIN_PER_CLUSTER * k), replace=False))
        kmeans = faiss.Kmeans(self.dim, k, niter=LOCALITY_ITERATIONS, seed=1, spherical=True,
                              max_points_per_centroid=LOCALITY_TRAIN_PER_CLUSTER)
        kmeans.train(np.ascontiguousarray(self.codec.decode(codes[sample], np.float32)))
        labels = np.empty(n, dtype=np.int64)
        step = self._input_part_rows()
        for start in range(0, n, step):
            part = np.ascontiguousarray(self.codec.decode(codes[start:start + step], np.float32))
            labels[start:start + step] = kmeans.index.search(part, 1)[1][:, 0]
        return np.argsort(labels, kind="stable")

    def add(self, codes: np.ndarray) -> None:
        """Append rows (codes of the codec's storage type); their ids are the next row numbers. Give all the rows of
        one addition at once: they reach faiss in one add (see ``GRAPH_INPUT_IN_MEMORY``)."""
        self._writable()
        if self._index is None:
            self._index = self._new_index()
        self._quantizer(linking=True)
        try:
            first = len(self)
            self._cache.clear()
            with self._graph_input(codes) as x:
                _faiss_add(self._index, x)
            # the graph was linked on faiss's encoding of the decoded vectors; the stored codes are the codec's own
            self.codes()[first:] = codes
        finally:
            self._quantizer(linking=False)
        if self.removed == 0:
            self.built_size = len(self)
        self._huge_pages()

    def rebuild(self) -> None:
        """A new graph over the same codes (at the current connectivity)."""
        self._build(np.array(self.codes()))  # a copy: the view dies with the old graph

    def _build(self, codes: np.ndarray) -> None:
        """A new graph holding exactly ``codes`` (an array of its own, not a view of this graph)."""
        self._index, self._mapped = None, False
        self._cache.clear()
        self.removed = 0
        self.add(codes)
        self.built_size = len(codes)

    def remove_rows(self, keep: np.ndarray) -> None:
        """The rows where ``keep`` is False leave the graph and its storage; later rows move down."""
        self._writable()
        n = len(self)
        if not keep.any():
            self._cache.clear()
            self._index = None
            self.built_size = self.removed = 0
            return
        faiss = require_faiss()
        kept_codes = np.ascontiguousarray(self.codes()[keep])
        removed = self.removed + int(n - len(kept_codes))
        if removed > REBUILD_AFTER_REMOVED * max(1, self.built_size):
            self._build(kept_codes)  # no use renumbering links that are about to be replaced
            return
        h = self._index.hnsw
        levels, offsets, neighbors, cum = self._tables()
        new_neighbors, new_offsets, new_levels = remap_links(levels, offsets, neighbors, cum, keep)
        entry = int(h.entry_point)
        entry = int(np.count_nonzero(keep[:entry])) if keep[entry] else int(np.argmax(new_levels))
        faiss.copy_array_to_vector(new_levels.astype(np.int32), h.levels)
        faiss.copy_array_to_vector(new_offsets.astype(np.uint64), h.offsets)
        faiss.copy_array_to_vector(new_neighbors, h.neighbors)
        h.entry_point = entry
        h.max_level = int(new_levels[entry]) - 1  # the old entry was on the top level; else the new one is
        self._cache.clear()
        faiss.copy_array_to_vector(kept_codes.view(np.uint8).reshape(-1), self._code_vector())
        self._storage().ntotal = len(kept_codes)
        self._index.ntotal = len(kept_codes)
        self.removed = removed
        self._huge_pages()

    def _writable(self) -> None:
        """A memory-mapped graph is copied into memory once, before its first change."""
        if self._mapped:
            self._cache.clear()
            self._index = _deserialize(self.storage, _serialize(self.storage, self._index))
            self._mapped = False
            self._huge_pages()

    def _tables(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(levels, offsets, neighbors, cum) of the links: views, valid until the graph changes."""
        h, n = self._index.hnsw, len(self)
        offsets = _view(h.offsets, n + 1, np.uint64)
        cum = _view(h.cum_nneighbor_per_level, int(h.cum_nneighbor_per_level.size()), np.int32)
        return _view(h.levels, n, np.int32), offsets, _view(h.neighbors, int(offsets[-1]), np.int32), cum

    def search(self, queries: np.ndarray, top_k: int, expansion: Optional[int] = None,
               threads: int = 1) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Queries (nq, d) float64, C order, not normalised, in compiled code (graph_search.py): (rows (nq, k) int64,
        float64 scores (nq, k), counts (nq,)), each query's rows ranked as :meth:`Index.search_rows` ranks them. A
        count below top_k (the places after it unset) is a query that is not a finite non-zero vector or one the
        graph gave fewer rows: the caller's general path reports or handles it. ``threads``: threads the queries are
        split between (at least COMPILED_QUERIES_PER_THREAD each). None when the compiled search is not available for
        this graph (faiss's search through :meth:`candidates` serves it)."""
        state = self._cache.get("compiled")
        if state is None:
            state = self._cache["compiled"] = self._compiled_state()
        if not state or not USE_COMPILED_SEARCH:
            return None
        search, constants, tables = state
        ef = max(top_k * self.candidates_per_result, self.expansion_search if expansion is None else expansion)
        nq = len(queries)
        rows = np.empty((nq, top_k), dtype=np.int64)
        scores = np.empty((nq, top_k), dtype=np.float64)
        counts = np.empty(nq, dtype=np.int64)

        def part(first: int, last: int) -> None:
            try:  # a visited table of its own for each search running at once (the compiled search releases the GIL)
                table = tables.pop()
            except IndexError:
                table = [np.zeros(len(self), dtype=np.uint8), 0]
            try:
                table[1] = search(queries, first, last, *constants, ef, top_k, table[0], table[1], VISITED_MARKS,
                                  rows, scores, counts)
            except BaseException:
                table[1] = VISITED_MARKS  # its marks are unknown now: cleared before its next use
                raise
            finally:
                tables.append(table)

        parts = max(1, min(threads, nq // COMPILED_QUERIES_PER_THREAD))
        if parts == 1:
            part(0, nq)
        else:
            bounds = [nq * i // parts for i in range(parts + 1)]
            run_parts(part, list(zip(bounds[:-1], bounds[1:])))
        return rows, scores, counts

    def _compiled_state(self) -> Any:
        """(search function, its graph arguments, the pool of visited tables), or False: not for this graph."""
        module = compiled_search() if self.storage in COMPILED_STORAGES else None
        if module is None or not len(self):
            return False
        _, offsets, neighbors, cum = self._tables()
        h = self._index.hnsw
        if self.storage == "int8":  # the walk's query times the scale (SEARCH_QUANTIZER); rows decode to c*scale+offset
            query_scale = np.ascontiguousarray(self.codec.scale, dtype=np.float32)
            scale = self.codec.scale.astype(np.float64)
            offset = self.codec.offset.astype(np.float64)
        else:  # float32 rows: the query as it is, rows as they are
            query_scale = np.ones(self.dim, dtype=np.float32)
            scale, offset = np.ones(self.dim), np.zeros(self.dim)
        constants = (query_scale, scale, offset, self.codes(), offsets.view(np.int64), neighbors, cum,
                     int(h.entry_point), int(h.max_level))
        return module.search_many, constants, []

    def candidates(self, queries: np.ndarray, top_k: int, n: int,
                   expansion: Optional[int] = None, per_result: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(rows (nq, c) int64, counts (nq,) or None) proposed by the graph for unit queries (float64); c <= n. A
        query with fewer than c proposals has its row padded with its first proposal (counts says how many are real;
        None: every query got c)."""
        c = min(n, top_k * (self.candidates_per_result if per_result is None else per_result))
        ef = max(c, self.expansion_search if expansion is None else expansion)
        nq = len(queries)
        faiss = require_faiss()
        # faiss's C++ search on arrays of our own: its Python wrapper checks and allocates what is known here, and a
        # single query pays for every microsecond of that
        if self.storage == "binary":
            x = np.packbits(queries > 0, axis=1)
            scores = np.empty((nq, c), dtype=np.int32)  # Hamming distances
        elif self.storage in SEARCH_QUANTIZER:  # the search quantizer's query (see SEARCH_QUANTIZER)
            x = queries.astype(np.float32, order="C")
            x *= self.codec.scale  # float32 both (0.4 us a query less than a float64 product cast on output)
            scores = np.empty((nq, c), dtype=np.float32)
        else:
            x = np.ascontiguousarray(queries, dtype=np.float32)
            scores = np.empty((nq, c), dtype=np.float32)
        keys = np.empty((nq, c), dtype=np.int64)  # named: a pointer does not keep its array alive
        ptr = faiss.swig_ptr
        if self.storage == "binary" and not binary_search_takes_parameters(faiss):
            with _GRAPH_EXPANSION_LOCK:  # faiss < 1.14 (the newest for Python 3.9): the graph's own efSearch, set and
                self._index.hnsw.efSearch = ef  # searched with in one step, so threads do not mix theirs
                self._index.search_c(nq, ptr(x), c, ptr(scores), ptr(keys))
        else:
            params = self._cache.get(ef)
            if params is None:  # per call, not the graph's own efSearch: threads searching one index at different
                params = self._cache[ef] = faiss.SearchParametersHNSW()  # expansions must not set it for each other
                params.efSearch = ef
            self._index.search_c(nq, ptr(x), c, ptr(scores), ptr(keys), params)
        if keys[-1, -1] >= 0 and (nq == 1 or keys[:, -1].min() >= 0):  # the common case: every query got c rows
            return keys, None
        counts = (keys >= 0).sum(axis=1)  # faiss fills the missing places with -1 (after the found ones)
        first = np.where(counts > 0, keys[:, 0], 0)
        return np.where(keys >= 0, keys, first[:, None]), counts

    # ------------------------------------------------------------------------------------------------ tuning

    def tune(self, queries: np.ndarray, truth: np.ndarray, ann_search: Any, source: str,
             proxy: bool) -> Dict[str, Any]:
        """Choose the expansion (and connectivity) reaching ``target_recall`` for recall@k against the exact path.

        ``queries``: unit sample queries; ``truth``: their exact top-k rows (nq, k); ``ann_search(q, k, expansion,
        per_result)`` returns (nq, k) rows; ``proxy``: the queries are midpoints standing in for real ones (they must
        reach :func:`proxy_target`). Raising the connectivity rebuilds the graph. Returns and records what was
        measured."""
        k = truth.shape[1]
        target = proxy_target(self.target_recall) if proxy else self.target_recall
        while True:
            tried = []  # at this connectivity
            for per_result in CANDIDATE_CHOICES[STORAGES[self.storage][2]]:
                for ef in EXPANSIONS:
                    found = ann_search(queries, k, ef, per_result)
                    tried.append({"recall": _recall(found, truth), "expansion_search": ef,
                                  "candidates_per_result": per_result})
                    if tried[-1]["recall"] >= target:
                        return self._tuned(tried[-1], len(queries), k, source, target)
            if proxy or self.connectivity * 2 > MAX_CONNECTIVITY:
                break  # a stand-in for real queries does not justify twice the link memory and a rebuild
            self.connectivity *= 2
            self.rebuild()
        # out of reach: the cheapest setting within KNEE of the best recall (not twice the time for +0.001)
        top = max(t["recall"] for t in tried)
        best = min((t for t in tried if t["recall"] >= top - KNEE),
                   key=lambda t: (t["expansion_search"] * t["candidates_per_result"], -t["recall"]))
        advice = ("index.tune(real query vectors) measures on your queries (and may raise the connectivity)"
                  if proxy else "search with exact=True for exact results")
        warnings.warn(f"ANN index: recall@{k} {best['recall']:.3f} on {len(queries)} sample queries ({source}) is "
                      f"below the target {target:g} even at connectivity {self.connectivity} and expansion "
                      f"{EXPANSIONS[-1]} ({top:.3f}); using expansion {best['expansion_search']} x "
                      f"{best['candidates_per_result']} candidates per result ({advice})", RuntimeWarning, stacklevel=4)
        return self._tuned(best, len(queries), k, source, target)

    def _tuned(self, chosen: Dict[str, Any], sample: int, k: int, source: str, target: float) -> Dict[str, Any]:
        self.expansion_search = int(chosen["expansion_search"])
        self.candidates_per_result = int(chosen["candidates_per_result"])
        self.tuned = {"sample": sample, "k": k, "recall": round(float(chosen["recall"]), 4), "size": len(self),
                      "connectivity": self.connectivity, "expansion_search": self.expansion_search,
                      "queries": source, "required": round(target, 4)}
        return self.tuned

    # ------------------------------------------------------------------------------------------------ persistence

    def manifest_part(self) -> Dict[str, Any]:
        faiss = require_faiss()
        kind, qtype, metric = STORAGES[self.storage]
        part = {"kind": "hnsw", "library": "faiss", "library_version": faiss.__version__, "faiss_index": kind,
                "scalar_quantizer": qtype, "metric": metric, "storage": "the index's codes (one copy)",
                "connectivity": self.connectivity, "expansion_add": EXPANSION_ADD,
                "expansion_search": self.expansion_search, "candidates_per_result": self.candidates_per_result,
                "target_recall": self.target_recall, "measured": self.tuned,
                "rescoring": "exact, from the index's stored codes"}
        if self.storage in SEARCH_QUANTIZER:
            searched, bounds = SEARCH_QUANTIZER[self.storage]
            part["scalar_quantizer"] = searched
            part["quantizer_note"] = (f"linked with {qtype} over the codec's range; saved and searched with {searched} "
                                      f"{list(bounds)} (code c decodes to c + 0.5) and the query times the scale")
        return part

    def save(self, path: str) -> None:
        if self._index is None:
            self._index = self._new_index()
            self._quantizer(linking=False)
        _faiss_io(self.storage, "write_index")(self._index, path)

    @staticmethod
    def check_part(part: Any, where: str) -> None:
        """The manifest's ``ann`` part, before the graph is opened: an HNSW description of faiss with positive integer
        parameters; errors name ``where`` (the manifest) and the key."""
        if not isinstance(part, dict) or part.get("kind") != "hnsw":
            raise ValueError(f"{where}: the 'ann' part is not an HNSW description")
        if part.get("library") != "faiss":
            raise ValueError(f"{where}: 'ann.library' is {part.get('library')!r} (a graph of an unreleased development "
                             "format); build the index again")
        for key in ("connectivity", "expansion_search", "candidates_per_result"):
            value = part.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: 'ann.{key}' must be a positive integer; got {value!r}")

    @classmethod
    def open(cls, path: str, part: Any, codec: Any, count: int, view: bool, where: str) -> "HNSW":
        """The graph saved at ``path`` (a file name), checked against the manifest's ``ann`` part (checked first by
        :meth:`check_part`) and the index (storage type, dimension, count, quantizer range, the links' structure);
        errors name ``where``. With ``view`` the file is memory-mapped. The caller compares :meth:`codes` with the
        index's saved codes."""
        faiss = require_faiss()
        self = cls(codec, target_recall=part.get("target_recall", DEFAULT_TARGET_RECALL),
                   connectivity=part["connectivity"])
        flags = faiss.IO_FLAG_MMAP_IFC if view else 0
        try:
            index = _faiss_io(self.storage, "read_index")(path, flags)
        except Exception as exc:  # faiss raises RuntimeError with its own words
            raise ValueError(f"{where}: the graph cannot be read ({str(exc).strip().splitlines()[-1]})") from None
        kind, qtype, _ = STORAGES[self.storage]
        if type(index).__name__ != kind:
            raise ValueError(f"{where}: a faiss {type(index).__name__}, an index of {self.storage} storage needs "
                             f"{kind} (the graph of another index?)")
        self._index, self._mapped = index, bool(view)
        storage = self._storage()
        if kind != "IndexBinaryHNSW":
            if index.metric_type != faiss.METRIC_INNER_PRODUCT or index.d != self.dim:
                raise ValueError(f"{where}: graph of dimension {index.d} / metric {index.metric_type}, the index "
                                 f"needs {self.dim} / inner product")
            if qtype is not None:
                searched, bounds = SEARCH_QUANTIZER.get(self.storage, (None, None))
                trained = np.array(_view(storage.sq.trained, int(storage.sq.trained.size()), np.float32))
                if searched is not None and storage.sq.qtype == getattr(faiss.ScalarQuantizer, searched):
                    if not np.array_equal(trained, np.array(bounds, dtype=np.float32)):
                        raise ValueError(f"{where}: graph quantizer {searched} has range {trained.tolist()}, "
                                         f"saved graphs have {list(bounds)} (damaged)")
                elif storage.sq.qtype != getattr(faiss.ScalarQuantizer, qtype):
                    raise ValueError(f"{where}: graph storage is not faiss {qtype}"
                                     + (f" or {searched}" if searched else ""))
                elif qtype == "QT_8bit" and not np.array_equal(trained, self.codec.faiss_range()):
                    raise ValueError(f"{where}: graph quantizer range differs from the index's int8 calibration "
                                     "(the graph of another index, or damaged)")
        elif index.d != 8 * self.codec.width:
            raise ValueError(f"{where}: graph of {index.d} bits, the index needs {8 * self.codec.width}")
        if index.ntotal != count or storage.ntotal != count:
            raise ValueError(f"{where}: the graph holds {index.ntotal} vectors, the index {count} (damaged, or the "
                             "graph of another index)")
        check_links(index.hnsw, count, where)
        self._quantizer(linking=False)  # a graph saved before the search quantizer: converted here
        self._huge_pages()
        self.built_size = count
        self.expansion_search = part["expansion_search"]
        self.candidates_per_result = part["candidates_per_result"]
        self.tuned = part.get("measured") if isinstance(part.get("measured"), dict) else None
        return self

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_index", "_mapped", "codec", "_cache")}
        state["graph_bytes"] = None if self._index is None else _serialize(self.storage, self._index).tobytes()
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle; the owning index's __setstate__ gives the codec back (it is pickled with the index)."""
        if "graph_bytes" not in state or "built_size" not in state:
            raise ValueError("this ANN index was pickled by an unreleased development version (usearch graph); "
                             "build it again")
        graph = state.pop("graph_bytes")
        self.__dict__.update(state)
        self.codec = None
        self._index = None if graph is None else _deserialize(self.storage, np.frombuffer(graph, np.uint8))
        self._mapped = False
        self._cache = {}
        self._quantizer(linking=False)  # pickled in that form already (the codec, needed only to link, comes later)
        self._huge_pages()


def advise_graph_pages(index: Any) -> None:
    """Huge pages (pages.py) for the arrays a search of the faiss HNSW ``index`` reads at random: its codes, its
    neighbour table and the offsets into it."""
    faiss = require_faiss()
    if isinstance(index, faiss.IndexBinaryHNSW):
        codes = faiss.downcast_IndexBinary(index.storage).xb
    else:
        codes = faiss.downcast_index(index.storage).codes
    h = index.hnsw
    for vector, itemsize in ((codes, 1), (h.neighbors, 4), (h.offsets, 8)):
        advise_huge_pages(int(vector.data()), int(vector.size()) * itemsize)


def _faiss_add(index: Any, x: np.ndarray) -> None:
    """One faiss add (a function of its own: tests count them)."""
    index.add(x)


def _faiss_io(storage: str, name: str) -> Any:
    """faiss's ``name`` (write_index, read_index, serialize_index, deserialize_index) for the storage type's index
    class: binary indexes have their own functions (``..._binary``)."""
    return getattr(require_faiss(), name + ("_binary" if STORAGES[storage][0] == "IndexBinaryHNSW" else ""))


def _serialize(storage: str, index: Any) -> np.ndarray:
    return _faiss_io(storage, "serialize_index")(index)


def _deserialize(storage: str, data: np.ndarray) -> Any:
    return _faiss_io(storage, "deserialize_index")(np.asarray(data))


def remap_links(levels: np.ndarray, offsets: np.ndarray, neighbors: np.ndarray, cum: np.ndarray,
                keep: np.ndarray, block: int = 65536) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss HNSW link tables without the nodes where ``keep`` is False.

    Node i (``levels[i]`` levels, counting from 1) owns slots offsets[i]..offsets[i+1] = cum[levels[i]] slots; level
    l's neighbours sit at offsets[i] + cum[l] .. offsets[i] + cum[l + 1], -1 after the last one. Returns (neighbors,
    offsets, levels) of the kept nodes with ids renumbered, dropped neighbours taken out and each level's list packed
    to the front (-1 after it). Works through ``block`` nodes at a time (bounded scratch memory)."""
    n = len(levels)
    new_id = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
    offsets = offsets.astype(np.int64)
    cum = cum.astype(np.int64)
    sizes = offsets[1:] - offsets[:-1]
    new_offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    np.cumsum(sizes[keep], out=new_offsets[1:])
    node_start = np.zeros(n, dtype=np.int64)  # each kept node's first slot in the new table
    node_start[keep] = new_offsets[:-1]
    out = np.full(int(new_offsets[-1]), -1, dtype=np.int32)
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = int(offsets[a]), int(offsets[b])
        nb = np.asarray(neighbors[lo:hi]).astype(np.int64)
        node = np.repeat(np.arange(a, b), sizes[a:b])  # slot -> its node
        pos = np.arange(lo, hi, dtype=np.int64) - offsets[node]  # slot -> place in its node
        level = np.searchsorted(cum, pos, side="right") - 1  # slot -> its level
        seg_first = offsets[node] + cum[level] - lo  # slot -> first slot of its level's list (in this block)
        target = np.where(nb >= 0, new_id[np.maximum(nb, 0)], -1)
        valid = (target >= 0) & keep[node]
        before = np.cumsum(valid) - valid  # valid slots before each slot
        rank = before - before[seg_first]  # place among the valid slots of its list
        dest = node_start[node[valid]] + cum[level[valid]] + rank[valid]
        out[dest] = target[valid]
    return out, new_offsets, levels[keep]


def check_links(h: Any, count: int, where: str) -> None:
    """A damaged link table would send the search outside the graph (a crash, not an error): levels, offsets,
    neighbour ids and the entry point are checked against each other."""
    if count == 0:
        return
    levels = _view(h.levels, min(count, int(h.levels.size())), np.int32)
    if int(h.levels.size()) != count or int(h.offsets.size()) != count + 1:
        raise ValueError(f"{where}: the graph's link tables do not hold {count} nodes (damaged)")
    cum = np.array(_view(h.cum_nneighbor_per_level, int(h.cum_nneighbor_per_level.size()), np.int32))
    offsets = _view(h.offsets, count + 1, np.uint64)
    if (levels < 1).any() or (levels >= len(cum)).any() or offsets[0] != 0 or \
            not np.array_equal(np.diff(offsets.astype(np.int64)), cum[levels]):
        raise ValueError(f"{where}: the graph's levels and offsets disagree (damaged)")
    if int(h.neighbors.size()) != int(offsets[-1]):
        raise ValueError(f"{where}: the graph's neighbour table has {h.neighbors.size()} slots, its offsets "
                         f"{int(offsets[-1])} (damaged)")
    neighbors = _view(h.neighbors, int(offsets[-1]), np.int32)
    for start in range(0, len(neighbors), 1 << 24):
        block = neighbors[start:start + (1 << 24)]
        if block.size and (int(block.min()) < -1 or int(block.max()) >= count):
            raise ValueError(f"{where}: the graph links to nodes outside 0..{count - 1} (damaged)")
    if not 0 <= int(h.entry_point) < count or int(h.max_level) != int(levels.max()) - 1 \
            or levels[int(h.entry_point)] - 1 != int(h.max_level):
        raise ValueError(f"{where}: the graph's entry point or top level is wrong (damaged)")


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true k nearest among the k it was given."""
    return float(np.mean([len(set(f).intersection(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))
