"""Approximate nearest neighbours for `Index`: an HNSW graph (usearch) that proposes candidates, which the index then
rescores exactly from its own stored codes, so scores stay those of the exact path.

usearch is an optional dependency (``pip install 'tinyhpd[ann]'``); it is imported when an ANN index is made or
loaded. Graph keys are the index's row numbers: removing rows removes their keys and renames the later ones.

The graph stores its own copy of the vectors in a compact type: float16 for float32/float16 indexes, int8 for int8
indexes (usearch's symmetric scale, not the index's per-dimension calibration: it only steers the walk), packed sign
bits under the Hamming metric for binary indexes.

Parameters come from a recall target instead of the user: `tune` makes sample queries, asks the exact path for their
top-k neighbours, and raises the search expansion (and, if the largest expansion is not enough, rebuilds with twice
the connectivity) until the measured recall@k of graph + rescoring reaches the target. What was chosen and measured is
recorded in the manifest. The default sample queries are midpoints of two random stored vectors: a stored vector
itself is an easy query (the walk ends on it and its neighbours are linked to it: 0.95 claimed where real queries
got 0.77), while real queries lie between documents. Measured on real sentence embeddings (the bundled model; STS-B
test sentences as queries), midpoints came close but not always below: on 8,000 distillation sentences 0.848 / 0.889
/ 0.940 / 0.972 against real 0.751 / 0.843 / 0.924 / 0.972 at expansion 16 / 32 / 64 / 128; on 131k, 0.786 against
0.985 at 32. So midpoints must reach a stricter target, half the misses of ``target_recall`` (0.975 for 0.95); queries
the caller gives (`Index.tune(queries)`) must reach ``target_recall`` itself. The pairs must be independent: pairing
rows in corpus order (neighbours in a file are often about one topic) made the midpoints easy again.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

ANN_KINDS = ("hnsw",)
GRAPH = "graph.usearch"
GRAPH_DTYPE = {"float32": "f16", "float16": "f16", "int8": "i8", "binary": "b1"}
DEFAULT_TARGET_RECALL = 0.95
DEFAULT_CONNECTIVITY = 16
MAX_CONNECTIVITY = 32  # each raise rebuilds the graph (1M x 128: minutes); past 32 the expansion is cheaper
EXPANSION_ADD = 128
EXPANSIONS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
TUNE_K = 10
TUNE_SAMPLE = 500
RETUNE_GROWTH = 2.0  # tune again when the graph has grown this much since the last tuning


def require_usearch() -> Any:
    """The usearch module, or an ImportError that says how to get it."""
    try:
        import usearch.index
    except ImportError as exc:
        raise ImportError("ann='hnsw' needs usearch: pip install 'tinyhpd[ann]'") from exc
    return usearch.index


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


class HNSW:
    """The graph of one index (see the module docs). ``storage``: the index's storage type; ``dim``: its dimension."""

    def __init__(self, dim: int, storage: str, *, target_recall: float = DEFAULT_TARGET_RECALL,
                 connectivity: int = DEFAULT_CONNECTIVITY, threads: int = 1) -> None:
        self.dim = int(dim)
        self.storage = storage
        self.graph_dtype = GRAPH_DTYPE[storage]
        self.target_recall = check_target_recall(target_recall)
        self.connectivity = int(connectivity)
        self.expansion_search = 64
        self.candidates_per_result = 2  # rows rescored per requested result
        self.tuned: Optional[Dict[str, Any]] = None  # what tune measured
        self.threads = int(threads)
        self._graph = self._new_graph()
        self._view = False  # a memory-mapped saved graph: read-only until copied into memory

    # ------------------------------------------------------------------------------------------------ the graph

    def _new_graph(self) -> Any:
        usearch = require_usearch()
        metric = "hamming" if self.graph_dtype == "b1" else "cos"
        return usearch.Index(ndim=self.dim, metric=metric, dtype=self.graph_dtype, connectivity=self.connectivity,
                             expansion_add=EXPANSION_ADD, expansion_search=self.expansion_search)

    def __len__(self) -> int:
        return len(self._graph)

    @property
    def nbytes(self) -> int:
        """Bytes of the serialised graph (vectors + links), what a memory map of it holds."""
        return int(self._graph.serialized_length)

    def graph_input(self, unit: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """What the graph stores for a block: float32 unit rows, or the packed sign bits for a binary graph."""
        return np.ascontiguousarray(codes) if self.graph_dtype == "b1" else unit.astype(np.float32)

    def add(self, first_row: int, vectors: np.ndarray) -> None:
        self._writable()
        keys = np.arange(first_row, first_row + len(vectors), dtype=np.uint64)
        self._graph.add(keys, vectors, threads=self.threads)

    def remove_rows(self, keep: np.ndarray) -> None:
        """The rows where ``keep`` is False left the index; later rows moved down: rename their keys."""
        self._writable()
        self._graph.remove(np.flatnonzero(~keep).astype(np.uint64))
        old = np.flatnonzero(keep)
        new = np.arange(len(old))
        moved = old != new  # ascending: each target key is free (removed, or renamed away just before)
        if moved.any():
            self._graph.rename(old[moved].astype(np.uint64).tolist(), new[moved].astype(np.uint64).tolist())

    def _writable(self) -> None:
        """A memory-mapped graph is copied into memory once, before its first change."""
        if self._view:
            self._graph = self._graph.copy()
            self._view = False

    def candidates(self, queries: np.ndarray, top_k: int, n: int,
                   expansion: Optional[int] = None, per_result: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(rows (nq, c) int64, counts (nq,)) proposed by the graph for unit queries (float64); c <= n. A query
        with fewer than c proposals has its row padded with its first proposal (counts says how many are real)."""
        c = min(n, top_k * (self.candidates_per_result if per_result is None else per_result))
        self._graph.expansion_search = max(c, self.expansion_search if expansion is None else expansion)
        if self.graph_dtype == "b1":
            vectors = np.packbits(queries > 0, axis=1)
        else:
            vectors = queries.astype(np.float32)
        found = self._graph.search(vectors, c, threads=self.threads)
        keys = np.asarray(found.keys).reshape(len(queries), -1)[:, :c].astype(np.int64)
        if hasattr(found, "counts"):
            counts = np.asarray(found.counts).reshape(-1).astype(np.int64)
        else:  # one query: usearch answers with a single Matches
            counts = np.array([len(found.keys)], dtype=np.int64)
        if keys.shape[1] < c:  # fewer proposals than asked for in every query
            keys = np.concatenate([keys, np.zeros((len(queries), c - keys.shape[1]), np.int64)], axis=1)
        if (counts < c).any():
            for i in np.flatnonzero(counts < c).tolist():
                keys[i, counts[i]:] = keys[i, 0] if counts[i] else 0
        return keys, counts

    # ------------------------------------------------------------------------------------------------ tuning

    def tune(self, queries: np.ndarray, exact_search: Any, ann_search: Any, rebuild: Any,
             source: str = "midpoints of two random stored vectors", proxy: bool = True) -> Dict[str, Any]:
        """Choose the expansion (and connectivity) reaching ``target_recall`` for recall@10 against the exact path.

        ``queries``: unit sample queries (see the module docs); ``exact_search(q, k)`` and
        ``ann_search(q, k, expansion, per_result)`` return (nq, k) rows; ``rebuild()`` refills a fresh graph (called
        when the connectivity is raised). Returns and records what was measured."""
        k = TUNE_K
        target = proxy_target(self.target_recall) if proxy else self.target_recall
        truth, _ = exact_search(queries, k)
        while True:
            best: Dict[str, Any] = {}  # at this connectivity
            for per_result in (2, 4):
                for ef in EXPANSIONS:
                    found = ann_search(queries, k, ef, per_result)
                    recall = _recall(found, truth)
                    if not best or recall > best["recall"]:
                        best = {"recall": recall, "expansion_search": ef, "candidates_per_result": per_result,
                                "connectivity": self.connectivity}
                    if recall >= target:
                        return self._tuned({"recall": recall, "expansion_search": ef,
                                            "candidates_per_result": per_result}, len(queries), k, source, target)
            if self.connectivity * 2 > MAX_CONNECTIVITY:
                break
            self.connectivity *= 2
            self._graph = self._new_graph()
            self._view = False
            rebuild()
        warnings.warn(f"ANN index: recall@{k} {best['recall']:.3f} on {len(queries)} sample queries ({source}) is "
                      f"below the target {target:g} even at connectivity {self.connectivity} and expansion {EXPANSIONS[-1]}; "
                      "using the best setting found (search with exact=True for exact results)", RuntimeWarning,
                      stacklevel=4)
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
        import usearch

        return {"kind": "hnsw", "library": "usearch", "library_version": usearch.__version__,
                "graph_dtype": self.graph_dtype, "metric": "hamming" if self.graph_dtype == "b1" else "cos",
                "connectivity": self.connectivity, "expansion_add": EXPANSION_ADD,
                "expansion_search": self.expansion_search, "candidates_per_result": self.candidates_per_result,
                "target_recall": self.target_recall, "measured": self.tuned,
                "rescoring": "exact, from the index's stored codes"}

    def save(self, path: str) -> None:
        self._graph.save(path)

    @classmethod
    def open(cls, path: str, part: Any, dim: int, storage: str, count: int, view: bool, where: str,
             threads: int = 1) -> "HNSW":
        """The graph saved at ``path`` (a file name or /proc/self/fd/N), checked against the manifest's ``ann``
        part and the index (dimension, type, metric, count, keys 0..count-1); errors name ``where``."""
        usearch = require_usearch()
        if not isinstance(part, dict) or part.get("kind") != "hnsw":
            raise ValueError(f"{where}: the manifest's 'ann' part is not an HNSW description")
        for key in ("connectivity", "expansion_search", "candidates_per_result"):
            value = part.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: manifest 'ann.{key}' must be a positive integer; got {value!r}")
        meta = usearch.Index.metadata(path)
        if not meta:
            raise ValueError(f"{where}: not a usearch graph file (damaged?)")
        graph_dtype = GRAPH_DTYPE[storage]
        expected = {"dimensions": dim, "count_present": count}
        for key, want in expected.items():
            if meta.get(key) != want:
                raise ValueError(f"{where}: graph {key} is {meta.get(key)!r}, the index needs {want} (damaged, or "
                                 "the graph of another index)")
        if str(meta.get("kind_scalar")).split(".")[-1].lower() != graph_dtype:
            raise ValueError(f"{where}: graph stores {meta.get('kind_scalar')}, expected {graph_dtype}")
        self = cls(dim, storage, target_recall=part.get("target_recall", DEFAULT_TARGET_RECALL),
                   connectivity=part["connectivity"], threads=threads)
        try:
            self._graph = usearch.Index.restore(path, view=view)
        except Exception as exc:  # usearch raises RuntimeError/ValueError with its own words
            raise ValueError(f"{where}: the graph cannot be read ({exc})") from None
        if self._graph is None or len(self._graph) != count:
            raise ValueError(f"{where}: the graph holds {None if self._graph is None else len(self._graph)} "
                             f"vectors, the index {count}")
        if count and not np.asarray(self._graph.contains(np.arange(count, dtype=np.uint64))).all():
            raise ValueError(f"{where}: the graph's keys are not the rows 0..{count - 1} of the index")
        self._view = bool(view)
        self.expansion_search = part["expansion_search"]
        self.candidates_per_result = part["candidates_per_result"]
        self.tuned = part.get("measured") if isinstance(part.get("measured"), dict) else None
        return self

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_graph", "_view")}
        state["graph_bytes"] = bytes(self._graph.save())
        return state

    def __setstate__(self, state: dict) -> None:
        usearch = require_usearch()
        graph = state.pop("graph_bytes")
        self.__dict__.update(state)
        self._graph = usearch.Index.restore(bytearray(graph))
        self._view = False


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true k nearest among the k it was given."""
    return float(np.mean([len(set(f).intersection(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))
