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
  those of a float64 brute-force search (ties broken by row order, earlier first: the insertion order, but see ANN
  below). For float16 and int8 they are exact for the dequantised vectors (see :meth:`Index.vectors`); int8 scores
  are dot products with the dequantised vector, which is unit length only up to quantisation error (about 1e-2).
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

Approximate search (``ann="hnsw"``, see ann.py): a faiss HNSW graph, whose storage holds the index's codes (one copy),
proposes candidates that are rescored exactly from those codes; its parameters are chosen from ``target_recall``
measured against the exact path. The rows of one addition of 65,536 vectors or more are stored grouped by k-means
cluster instead of in the order given (faster graph searches; :attr:`Index.ids` lists the ids in row order).
Storage codecs live in codecs.py, the float16/int8 score kernels and the search threads in kernels.py, the id table in
ids.py.

Threads: searches may run from many threads at once (each thread keeps its own buffers, and a graph's expansion travels
with each call). ``add``, ``remove`` and ``tune`` change the index and need it to themselves, as faiss's own add does
(an int8 graph also switches its quantizer while rows are linked: see ann.SEARCH_QUANTIZER); ``save`` and pickling
only read it.

Edge cases: an empty corpus or an empty batch of vectors, an empty list of queries, a blank query string, NaN or
infinite components and all-zero vectors raise ``ValueError``; ``top_k`` must be a positive int, and a ``top_k`` larger
than the index is clamped to the number of vectors (every result then holds ``len(index)`` hits). Ids are ints or
strs; a duplicate id (in one batch or against the index) raises ``ValueError``.

Persistence (:meth:`Index.save`): a directory holding ``vectors.safetensors`` (tensor ``vectors``; for int8 also
``scale`` and ``offset``; for an ANN index tuned on given queries, ``tuning_queries``), ``ids.json`` and
``manifest.json`` (format version, dim, dtype, count, normalisation, the model's name, revision and weight
fingerprint, file sizes). It is written into a temporary sibling directory, fsynced
and renamed into place, so a crash never leaves a partial index under the target name. :meth:`Index.load` checks the
manifest against the files and can memory-map the vectors (``mmap=True``) so an index larger than RAM is searched
straight from the page cache. ``add``/``remove`` on a memory-mapped index first copy its vectors into RAM.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd.index import ann as ann_mod
from tinyhpd.index import kernels
from tinyhpd.arguments import positive_int
from tinyhpd.index.checks import (ADD_BLOCK_ROWS, as_matrix, check_dtype,
                                  DEFAULT_CHUNK_BYTES, MAX_QUERY_GROUP, normalise_id, unit_rows,
                                  FORMAT_NAME, FORMAT_VERSION, Hits, Id, IDS, MANIFEST, VECTORS)
from tinyhpd.index.ann import GRAPH
from tinyhpd.index.codecs import Codec, CODECS
from tinyhpd.index.ids import IdTable
from tinyhpd._io import exchange_paths, remove_stale_siblings
from tinyhpd._io import fsync_dir as _fsync_dir
from tinyhpd.index.store import (FolderChanged, FolderFiles, sha256_of, check_manifest, encode_texts, load_model,
                                 model_identity, open_tensor, read_safetensors_header, write_bytes)
from tinyhpd.index.topk import hamming_distances, rank_rows, TopC, word_view


# ----------------------------------------------------------------------------------------------------------------


_LOAD_ATTEMPTS = 8  # a load that meets a concurrent save opens the folder again (the new version)
TUNING_QUERIES = "tuning_queries"  # the tensor of an ANN index's kept tuning queries (older readers skip it)
_SMALL_RESCORE = 4096  # candidates of one query rescored without the grouped, memmap-ordered gather
RESCORE_BLOCK_BYTES = 256 << 10  # decoded float64 rows rescored at a time (1M x 128 int8, 1,000 queries x 10 rows:
# 2.9 us a query with one block of up to chunk_bytes, 2.1 with 128 KB-1 MB blocks, 3.7 with 32 KB)
RESCORED_CODES, RESCORED_ROWS = "rescored codes", "rescored rows"  # the rescoring's buffers in a thread's Scratch


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)


class Index:
    """An exact cosine top-k index over L2-normalised vectors with float32/float16/int8/binary storage.

    Args:
        dim: vector dimension.
        dtype: storage type, one of ``float32`` (default), ``float16``, ``int8``, ``binary`` (see the module docs).
        model: the model whose embeddings the index holds (its name, revision, weight fingerprint and dim are recorded
            and checked on every text search; it also encodes text queries). Optional for vector-only use.
        calibration: int8 only: sample vectors to calibrate the per-dimension range on (default: the first ``add``).
        chunk_bytes: bound on the temporary memory a search allocates per chunk of corpus rows.
        threads: threads an exact search splits a large corpus between (default: the cores this process may use,
            at most 8; each thread takes at least 65,536 rows).
        ann: None (exact search, the default) or ``"hnsw"``: an HNSW graph (faiss, ``pip install 'tinyhpd[ann]'``)
            proposes candidates that are rescored exactly from the stored codes. Its parameters are chosen from
            ``target_recall`` (recall@10 against the exact path, measured on sample rows when the index is built and
            each time it has doubled since); ``search(..., exact=True)`` still searches exactly.
        target_recall: the recall@10 the ANN parameters must reach (default 0.95).
    """

    def __init__(
        self,
        dim: int,
        dtype: str = "float32",
        *,
        model: Any = None,
        calibration: Optional[np.ndarray] = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        threads: Optional[int] = None,
        ann: Optional[str] = None,
        target_recall: float = ann_mod.DEFAULT_TARGET_RECALL,
    ) -> None:
        self._dim = positive_int(dim, "dim")
        self._codec: Codec = CODECS[check_dtype(dtype)](self._dim)
        self._store = np.empty((0, self._codec.width), dtype=self._codec.storage)  # the codes, unless a graph has them
        self._n = 0
        self._next_id = 0  # default ids start here: past every int id ever added, so a removed id is never reused
        self._ids = IdTable()
        self._model: Any = None
        self._model_info: Optional[dict] = None
        self.chunk_bytes = int(chunk_bytes)
        threads = positive_int(threads, "threads", or_none=True)
        self.threads = kernels.default_threads() if threads is None else threads
        self._ann: Optional[ann_mod.HNSW] = None
        self._tuned_size = 0
        self._tuning_queries: Optional[np.ndarray] = None  # real queries given for tuning (float32 unit rows), kept
        if ann_mod.check_kind(ann) is not None:
            self._ann = ann_mod.HNSW(self._codec, target_recall=target_recall)
        if model is not None:
            info = model_identity(model)
            if info["embedding_dim"] is not None and info["embedding_dim"] != self._dim:
                raise ValueError(f"model {info['name_or_path']!r} has dimension {info['embedding_dim']}, "
                                 f"the index has dimension {self._dim}")
            self._model, self._model_info = model, info
        if calibration is not None:
            if not self._codec.calibrated:
                raise ValueError("calibration applies to dtype='int8' only")
            self._codec.calibrate(as_matrix(calibration, self._dim, "calibration vectors"))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._ann is not None:
            state["_store"] = None  # the graph pickles the codes
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickle; an Index pickled before storage codecs (tinyhpd 0.2: ``_dtype``, ``_scale``, ``_offset``) gets
        its codec rebuilt from those fields, and signed int8 codes (before format 2) become unsigned ones."""
        if "_codes" in state:
            state["_store"] = state.pop("_codes")
        if isinstance(state.get("_ids"), list):  # before IdTable: a list and a dict
            state.pop("_rows", None)
            state["_ids"] = IdTable(state["_ids"])
        if "_codec" not in state:
            codec = CODECS[state.pop("_dtype")](state["_dim"])
            scale, offset = state.pop("_scale", None), state.pop("_offset", None)
            count = state.pop("_calibration_count", 0)
            state.pop("_width", None)
            if scale is not None:
                codec.restore({"scale": scale, "offset": offset}, {"int8": {"calibration_count": count}},
                              "a pickled 0.2 index")
            state["_codec"] = codec
        state.setdefault("threads", kernels.default_threads())
        state.setdefault("_ann", None)
        state.setdefault("_tuned_size", 0)
        state.setdefault("_tuning_queries", None)
        store = state.get("_store")
        if store is not None and store.dtype == np.int8 and state["_codec"].name == "int8":
            state["_store"] = state["_codec"].from_signed(store)
        self.__dict__.update(state)
        if self._ann is not None:
            self._ann.codec = self._codec

    @property
    def _codes(self) -> np.ndarray:
        """The stored codes (n or more rows): the index's own array, or a view of its graph's storage."""
        return self._store if self._ann is None else self._ann.codes()

    @property
    def _codes_mapped(self) -> bool:
        """Whether the codes are read from their file as they are used (memory-mapped) rather than held in memory."""
        return isinstance(self._store, np.memmap) if self._ann is None else self._ann.mapped

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self) -> str:
        return self._codec.name

    @property
    def ann(self) -> Optional[str]:
        """``"hnsw"`` for an index with a graph, else None (exact search)."""
        return None if self._ann is None else "hnsw"

    @property
    def ann_info(self) -> Optional[dict]:
        """The graph's parameters and the recall measured when they were chosen (the manifest's ``ann`` part)."""
        return None if self._ann is None else self._ann.manifest_part()

    @property
    def codec(self) -> Codec:
        """The storage codec (encode, decode, score bound, calibration); see :mod:`tinyhpd.index.codecs`."""
        return self._codec

    @property
    def ids(self) -> List[Id]:
        """The ids in the order of their rows (a copy): insertion order, except that an ANN index stores the rows of
        one large addition grouped by similarity (see ann.LOCALITY_MIN_ROWS)."""
        return self._ids.tolist()

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
            self._model_info = model_identity(model)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of stored code per vector (the per-dimension int8 scale/offset are in :attr:`nbytes`)."""
        return self._codec.bytes_per_vector

    @property
    def nbytes(self) -> int:
        """Bytes of vector storage: codes of the ``len(self)`` vectors plus int8 calibration, plus the links of the
        ANN graph if there is one (its storage is the codes; ids not counted: 8 bytes per row for int ids, 12 when
        they are not ascending, see ids.py)."""
        graph = 0 if self._ann is None else self._ann.nbytes  # links only: the graph's storage is the codes
        return self._n * self.bytes_per_vector + self._codec.extra_nbytes + graph

    def __len__(self) -> int:
        return self._n

    def __contains__(self, item: Any) -> bool:
        try:
            return normalise_id(item) in self._ids
        except TypeError:
            return False

    def __repr__(self) -> str:
        name = None if self._model_info is None else self._model_info.get("name_or_path")
        return f"Index(dim={self._dim}, dtype={self.dtype!r}, count={self._n}, model={name!r})"

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
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        ann: Optional[str] = None,
        target_recall: float = ann_mod.DEFAULT_TARGET_RECALL,
        tune_queries: Any = None,
    ) -> "Index":
        """Encode ``texts`` with ``model`` (a loaded model, a name/path for :func:`tinyhpd.load`, or None for the
        default model) and index them; ids default to 0..n-1. int8 is calibrated on the whole corpus. ``ann`` and
        ``target_recall``: as for :class:`Index`. ``tune_queries`` (with ``ann``): real example queries (texts or
        vectors) the graph's parameters are measured on instead of midpoints, kept as :meth:`tune` keeps them."""
        check_dtype(dtype)
        if ann_mod.check_kind(ann) is not None:  # before the corpus is encoded, not after
            ann_mod.check_target_recall(target_recall)
            ann_mod.require_faiss()
        elif tune_queries is not None:
            raise ValueError("tune_queries tune an approximate index's graph: pass ann='hnsw' too")
        tuning = None if tune_queries is None else query_input(tune_queries)  # a blank one fails before the encoding
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a single str")
        texts = list(texts)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if model is None or isinstance(model, (str, os.PathLike)):
            model = load_model(None if model is None else str(model))
        if isinstance(tuning, list):  # small: encoded first, so a model that cannot encode them fails early too
            tune_queries = encode_texts(model, tuning, batch_size=batch_size)
        elif tuning is not None:  # vectors: checked now when the model states its dim
            tune_queries = tuning
            dim = model_identity(model)["embedding_dim"]
            if dim is not None:
                unit_rows(as_matrix(tune_queries, dim, "tuning queries"), 0, "tuning queries")
        embeddings = encode_texts(model, texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        index = cls(embeddings.shape[1], dtype, model=model, chunk_bytes=chunk_bytes, ann=ann,
                    target_recall=target_recall)
        if tune_queries is not None:  # the first tuning (in add) measures on them
            index._tuning_queries = index._given_tuning_queries(tune_queries, None, batch_size)
        index.add(embeddings, ids)
        return index

    @classmethod
    def from_codes(
        cls,
        codec: Codec,
        codes: np.ndarray,
        ids: Sequence[Id],
        *,
        next_id: int = 0,
        model_info: Optional[dict] = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        threads: Optional[int] = None,
    ) -> "Index":
        """An index over codes already encoded by ``codec`` (a ready codec; ``codes`` (n, codec.width) of its
        storage type, kept as given: a memory map stays one) under unique ``ids``. :meth:`load` opens a folder
        through this; ``next_id`` is raised past the largest int id."""
        if not isinstance(codec, Codec) or not codec.ready:
            raise ValueError("codec must be a calibrated tinyhpd.index.codecs.Codec")
        if codes.ndim != 2 or codes.shape[1] != codec.width or codes.dtype != codec.storage:
            raise ValueError(f"codes must be {codec.storage} of shape (n, {codec.width}); got {codes.dtype} "
                             f"{list(codes.shape)}")
        ids = [normalise_id(i) for i in ids]
        if len(ids) != codes.shape[0]:
            raise ValueError(f"{len(ids)} ids for {codes.shape[0]} vectors")
        table = IdTable(ids)  # a ValueError names a repeated id
        if model_info is not None and not isinstance(model_info, dict):
            raise ValueError("model_info must be a dict or None")
        index = cls(codec.dim, codec.name, chunk_bytes=chunk_bytes, threads=threads)
        index._codec, index._store, index._n, index._ids = codec, codes, len(ids), table
        index._next_id = max(int(next_id), 1 + max((i for i in ids if isinstance(i, int)), default=-1))
        index._model_info = None if model_info is None else dict(model_info)
        return index

    def reserve(self, capacity: int) -> None:
        """Pre-allocate room for ``capacity`` vectors (avoids regrowth copies when adding in many batches; an ANN
        index's graph grows its storage itself)."""
        if self._ann is not None or (capacity <= self._store.shape[0] and not isinstance(self._store, np.memmap)):
            return
        grown = np.empty((max(int(capacity), self._n), self._codec.width), dtype=self._store.dtype)
        grown[: self._n] = self._store[: self._n]
        self._store = grown

    def add(self, embeddings: Any, ids: Optional[Sequence[Id]] = None) -> None:
        """Add vectors (n, dim) under ``ids`` (default: consecutive ints after the largest int id ever added, removed
        ones included: a default id is never reused).

        Vectors are L2-normalised in float64 and encoded to the storage type. Nothing changes if any check fails.
        An ANN index stores the rows of an addition of 65,536 vectors or more grouped by similarity (see
        ann.LOCALITY_MIN_ROWS): :attr:`ids` and the rows of :meth:`search_rows` follow the stored order.
        """
        x = as_matrix(embeddings, self._dim, "embeddings")
        n = x.shape[0]
        new_ids = self._new_ids(ids, n)
        if not self._codec.ready:
            self._codec.calibrate(x)
        needed = self._n + n
        if needed > self._store.shape[0] or isinstance(self._store, np.memmap):
            self.reserve(max(needed, self._n * 3 // 2) if self._n else needed)
        clipped = 0
        # rows past _n: not yet part of the index; the graph gets all new rows at once (see ann.GRAPH_INPUT_IN_MEMORY)
        target = self._store[self._n:needed] if self._ann is None else \
            np.empty((n, self._codec.width), dtype=self._codec.storage)
        for start in range(0, n, ADD_BLOCK_ROWS):
            stop = min(n, start + ADD_BLOCK_ROWS)
            unit = unit_rows(x[start:stop], start, "embeddings")
            target[start:stop], c = self._codec.encode(unit)
            clipped += c
        # commit only now: a failure above leaves the index as it was
        if self._ann is not None:
            order = self._ann.locality_order(target)
            if order is not None:  # a large addition's rows stored grouped by similarity (ann.LOCALITY_MIN_ROWS)
                target = target[order]
                new_ids = new_ids[order] if isinstance(new_ids, np.ndarray) else [new_ids[i] for i in order.tolist()]
            self._ann.add(target)
        self._n = needed
        self._ids.extend(new_ids)
        if isinstance(new_ids, np.ndarray):
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        else:
            self._next_id = max([self._next_id] + [i + 1 for i in new_ids if isinstance(i, int)])
        if self._ann is not None and self._n >= ann_mod.RETUNE_GROWTH * self._tuned_size:
            self.tune()
        if clipped:
            warnings.warn(
                f"int8 index: {clipped} of {n * self._dim} components of the added vectors lie outside the range "
                f"calibrated on {getattr(self._codec, 'calibration_count', 0)} vectors and were clipped to it",
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
        self.add(encode_texts(self._model, texts, batch_size=batch_size), ids)

    def remove(self, ids: Iterable[Id]) -> None:
        """Remove vectors by id; unknown or repeated ids raise ValueError and nothing is removed."""
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        rows = self._ids.rows([normalise_id(i) for i in ids], "ids", distinct=True)
        if not len(rows):
            return
        keep = np.ones(self._n, dtype=bool)
        keep[rows] = False
        if self._ann is not None:
            self._ann.remove_rows(keep)
        else:
            self._store = np.ascontiguousarray(self._store[: self._n][keep])
        self._ids.keep(keep)
        self._n = len(self._ids)

    def _new_ids(self, ids: Optional[Sequence[Id]], n: int) -> Union[List[Id], np.ndarray]:
        """The ids of ``n`` new rows: an int64 array for default ids and for an integer array given, else a list of
        normalised ids; a repeated one (among them or already here) is a ValueError naming it."""
        if ids is None:  # _next_id is past every int id ever added (add and load keep it so)
            if self._next_id + n <= 2 ** 63:
                return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            return list(range(self._next_id, self._next_id + n))  # past int64 (after an id of 2**63 - 1 or more)
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a sequence of ids, not a single str")
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu" and ids.ndim == 1 and \
                (ids.dtype != np.uint64 or not len(ids) or int(ids.max()) < 2 ** 63):
            new_ids: Union[List[Id], np.ndarray] = ids.astype(np.int64)  # the ints themselves, without a list
        else:
            new_ids = [normalise_id(i) for i in ids]
        if len(new_ids) != n:
            raise ValueError(f"got {len(new_ids)} ids for {n} vectors")
        self._ids.check_new(new_ids)
        return new_ids

    # ------------------------------------------------------------------------------------------------ codes

    def vectors(self, ids: Optional[Sequence[Id]] = None, dtype: Any = np.float32) -> np.ndarray:
        """The stored (dequantised) unit vectors, all in row order (:attr:`ids`) or for ``ids``; binary gives
        sign/sqrt(d)."""
        if ids is None:
            codes = self._codes[: self._n]
        else:
            codes = self._codes[self._ids.rows([normalise_id(i) for i in ids], "ids", distinct=False)]
        return self._codec.decode(np.asarray(codes), np.dtype(dtype).type).astype(dtype, copy=False)

    def vectors_range(self, start: int, stop: int, dtype: Any = np.float32) -> np.ndarray:
        """The stored (dequantised) vectors of rows ``start``..``stop`` in row order (the ids of
        ``ids[start:stop]``): a block of a large index without an id lookup."""
        if not 0 <= start <= stop <= self._n:
            raise ValueError(f"rows {start}..{stop} are outside 0..{self._n}")
        return self._codec.decode(np.asarray(self._codes[start:stop]), np.dtype(dtype).type).astype(dtype, copy=False)

    # ------------------------------------------------------------------------------------------------ search

    def search(
        self,
        queries: Any,
        top_k: int = 10,
        *,
        model: Any = None,
        rescore_multiplier: int = 10,
        batch_size: int = 32,
        exact: bool = False,
        within: Optional[Sequence[Id]] = None,
    ) -> Union[Hits, List[Hits]]:
        """Top-k ids and cosine scores, best first.

        ``queries``: a str or a 1-D vector (returns one :class:`Hits`), or a list of str or a 2-D array (returns a
        list of :class:`Hits`). Text needs a model (``model=`` here, or the one the index was built/loaded with);
        its fingerprint and dim must match the index's. ``top_k`` larger than the index is clamped to ``len(index)``.
        ``rescore_multiplier`` (binary only): Hamming candidates per result rescored against the float query.
        ``exact``: an ANN index searches exactly (as without a graph) instead of through its graph.
        ``within``: only these ids are ranked (scored exactly, float64); ``top_k`` is clamped to how many they are.
        An unknown or repeated id is a ValueError naming it.
        """
        k = positive_int(top_k, "top_k")
        rescore_multiplier = positive_int(rescore_multiplier, "rescore_multiplier")
        single, q = self._query_matrix(queries, model, batch_size)
        if self._n == 0:
            raise ValueError("the index is empty: add vectors before searching")
        if within is not None:
            rows, scores = self._search_within(q, self._rows_of(within, "within"), k)
        else:
            rows, scores = self.search_rows(q, min(k, self._n), rescore_multiplier=rescore_multiplier,
                                            exact=exact)
        hits = [Hits(self._ids.ids(row), s) for row, s in zip(rows, scores)]
        return hits[0] if single else hits

    def search_rows(self, queries: np.ndarray, top_k: int, *, rescore_multiplier: int = 10,
                    exact: bool = False, expansion: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Vector queries (nq, dim) -> (rows (nq, k) int64, scores (nq, k) float64); rows index :attr:`ids`.

        ``top_k`` must be in 1..len(index). This is the batched core of :meth:`search` (no id lookup).
        ``expansion`` (ANN index): the graph's search expansion for this call instead of the tuned one (to measure
        recall against speed; the tuned one is :attr:`ann_info` ``expansion_search``).
        """
        k = positive_int(top_k, "top_k")
        if not 1 <= k <= self._n:
            raise ValueError(f"top_k must be between 1 and len(index) = {self._n}; got {k}")
        expansion = positive_int(expansion, "expansion", or_none=True)
        q = as_matrix(queries, self._dim, "query vectors")
        if self._ann is not None and not exact:  # in compiled code if it can be (graph_search.py)
            found = self._ann.search(np.ascontiguousarray(q, dtype=np.float64), k, expansion, self.threads)
            if found is not None:
                return self._complete(q, k, expansion, *found)
        q = unit_rows(q, 0, "query vectors")
        if q.shape[0] <= MAX_QUERY_GROUP:  # one group (a single query, say): its arrays are the answer
            return self._search_group(q, k, rescore_multiplier, exact, expansion)
        rows = np.empty((q.shape[0], k), dtype=np.int64)
        scores = np.empty((q.shape[0], k), dtype=np.float64)
        for start in range(0, q.shape[0], MAX_QUERY_GROUP):
            stop = min(q.shape[0], start + MAX_QUERY_GROUP)
            rows[start:stop], scores[start:stop] = self._search_group(q[start:stop], k, rescore_multiplier, exact,
                                                                      expansion)
        return rows, scores

    def _complete(self, q: np.ndarray, k: int, expansion: Optional[int], rows: np.ndarray, scores: np.ndarray,
                  counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The compiled search's answer, its short queries (no direction: reported here; fewer than k rows from the
        graph) done by the general path."""
        for i in np.flatnonzero(counts < k).tolist():
            one = unit_rows(q[i:i + 1], i, "query vectors")  # a query with no direction: the error names its row
            rows[i], scores[i] = self._search_ann(one, k, expansion)
        return rows, scores

    def _search_group(self, q: np.ndarray, k: int, rescore_multiplier: int, exact: bool,
                      expansion: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        if self._ann is not None and not exact:
            return self._search_ann(q, k, expansion)
        if self._codec.exact:
            return self._search_exact(q, k)
        return self._search_binary(q, k, rescore_multiplier)

    def _query_matrix(self, queries: Any, model: Any, batch_size: int,
                      what: str = "query vectors") -> Tuple[bool, np.ndarray]:
        """(single?, float matrix) for str / list of str / 1-D or 2-D vectors (``what`` names them in errors)."""
        given = query_input(queries)
        if isinstance(given, np.ndarray):
            return given.ndim == 1, as_matrix(given, self._dim, what)
        single = isinstance(queries, str)
        use = self._model if model is None else model
        if use is None:
            raise ValueError("text queries need a model: pass model=..., or build/load the index with a model")
        self._check_model(use)
        return single, encode_texts(use, given, batch_size=batch_size)

    def _check_model(self, model: Any) -> None:
        """Refuse a model whose dim or weight fingerprint differs from the one the index was built with."""
        info = model_identity(model)
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

    def _chunks(self, step: int, c: int, lo: int = 0, hi: Optional[int] = None) -> Iterable[Tuple[int, int]]:
        """Row ranges covering rows lo..hi (default: the corpus), doubling from a small first range up to ``step``
        rows: each query's threshold is known early, so few rows per chunk pass it (about c per doubling)."""
        hi = self._n if hi is None else hi
        start, size = lo, min(step, max(1024, 8 * c, step // 16))
        while start < hi:
            stop = min(hi, start + size)
            yield start, stop
            start, size = stop, min(step, 2 * size)

    def _search_exact(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Exact top-k: float32 candidates (the corpus split between threads), float64 rescoring, error-bound proof,
        brute-force fallback."""
        nq, n = q.shape[0], self._n
        c = min(n, 2 * k + 16)
        prepared = self._codec.prepare(q)
        step = self._chunk_rows(nq, 4 * self._dim if self._codec.converts else 0)  # + the float32 copy of a chunk

        def part(lo: int, hi: int) -> "TopC":
            scratch = kernels.thread_scratch()
            top = TopC(nq, c, np.float32)
            for start, stop in self._chunks(step, c, lo, hi):
                top.push(self._codec.scores(prepared, self._codes[start:stop], scratch), start)
            return top

        threads = self.threads if self._codec.converts and nq <= kernels.SMALL_BATCH else 1
        tops = kernels.run_ranges(part, n, threads)
        top = tops[0]
        for other in tops[1:]:
            top.merge(other)
        rows, scores = self._rescore(q, top.rows, k)
        if c < n:  # every excluded row scored <= the smallest candidate score in float32
            proven = top.scores[:, -1].astype(np.float64) + self._codec.error_bound() < scores[:, -1]
            for i in np.flatnonzero(~proven).tolist():  # rare near-tie at the candidate boundary: brute force
                rows[i], scores[i] = self._exact_one(q[i], k)
        return rows, scores

    def _rows_of(self, ids: Sequence[Id], what: str) -> np.ndarray:
        """Rows of distinct known ids (a ValueError names the first unknown or repeated one)."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"{what} must be a sequence of ids, not a single str")
        rows = self._ids.rows([normalise_id(value) for value in ids], what, distinct=True)
        if not len(rows):
            raise ValueError(f"{what} is empty: no id to rank")
        return rows

    def _search_within(self, q: np.ndarray, rows: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Exact float64 ranking of the given rows (ties to the earlier row)."""
        q = unit_rows(q, 0, "query vectors")
        return self._rescore(q, np.broadcast_to(rows, (q.shape[0], len(rows))), min(k, len(rows)))

    def _search_ann(self, q: np.ndarray, k: int, expansion: Optional[int] = None,
                    per_result: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Graph candidates rescored exactly from the stored codes; a query the graph gives fewer than k rows (a
        graph with many removals) is searched exactly."""
        cand, counts = self._ann.candidates(q, k, self._n, expansion, per_result)
        if counts is None:  # every query got its candidates
            return self._rescore(q, cand, k)
        full = counts >= cand.shape[1]
        rows = np.empty((q.shape[0], k), dtype=np.int64)
        scores = np.empty((q.shape[0], k), dtype=np.float64)
        if full.any():
            rows[full], scores[full] = self._rescore(q[full], cand[full], k)
        for i in np.flatnonzero(~full).tolist():
            if counts[i] >= k:
                rows[i], scores[i] = self._rescore(q[i:i + 1], cand[i:i + 1, :counts[i]], k)
            else:
                rows[i], scores[i] = self._exact_one(q[i], k)
        return rows, scores

    def tune(self, queries: Any = None, *, model: Any = None, batch_size: int = 32) -> Optional[dict]:
        """(ANN index) Choose the graph's parameters from ``target_recall`` again, measured on the current contents
        (done by ``add`` when the index was built and whenever it has doubled since). Returns what was measured.

        ``queries``: real sample queries (texts, encoded with ``model`` or the index's model, or vectors), e.g. from a
        log. They are measured on and *kept* (saved with the index: ``tuning_queries`` in the vectors file), so the
        tunings as the index grows use them too; more than ``ann.TUNE_QUERIES_KEPT`` are sampled down to that many.
        Default: the queries kept from an earlier call (or ``Index.build(tune_queries=...)``), else midpoints of
        random stored vectors, a conservative stand-in (see ann.py)."""
        if self._ann is None:
            return None
        if queries is not None:
            self._tuning_queries = self._given_tuning_queries(queries, model, batch_size)
        k = ann_mod.TUNE_K
        if self._n <= k + 1:  # a search then rescores every row: exact
            self._tuned_size = self._n
            return None
        proxy = self._tuning_queries is None  # midpoints stand in for real queries: a stricter target (see ann.py)
        if not proxy:
            queries = unit_rows(self._tuning_queries, 0, "tuning queries")
            source = f"{len(queries)} query vectors given by the caller"
        else:
            pairs = np.random.default_rng(0).choice(self._n, size=(ann_mod.TUNE_SAMPLE, 2))
            queries = sum(self._codec.decode(np.asarray(self._codes[pairs[:, j]]), np.float64) for j in (0, 1))
            norms = np.linalg.norm(queries, axis=1)
            queries = queries[norms > 1e-6] / norms[norms > 1e-6, None]  # opposite vectors have no midpoint
            source = "midpoints of two random stored vectors"
        truth = self.search_rows(queries, k, exact=True)[0]

        def approximate(q: np.ndarray, k: int, expansion: int, per_result: int) -> np.ndarray:
            return self._search_ann(q, k, expansion, per_result)[0]

        measured = self._ann.tune(queries, truth, approximate, source, proxy)
        self._tuned_size = self._n
        return dict(measured)

    def _given_tuning_queries(self, queries: Any, model: Any, batch_size: int) -> np.ndarray:
        """Tuning queries (texts or vectors) as the float32 unit rows the index keeps, sampled down to
        ``ann.TUNE_QUERIES_KEPT``; a blank text, a wrong dim, NaN or a zero vector is an error naming it."""
        q = unit_rows(self._query_matrix(queries, model, batch_size, "tuning queries")[1], 0, "tuning queries")
        if len(q) > ann_mod.TUNE_QUERIES_KEPT:
            keep = np.sort(np.random.default_rng(0).choice(len(q), ann_mod.TUNE_QUERIES_KEPT, replace=False))
            q = q[keep]
        return q.astype(np.float32)

    def _rescore(self, q: np.ndarray, cand_r: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """float64 scores of candidate rows against the queries, ranked; decoded in blocks of RESCORE_BLOCK_BYTES.

        Scores are einsum dot products: a row's score does not depend on how many candidates it came with or where
        among them (a matrix product's does, in the last bit), so the exact and the ANN path give equal scores."""
        nq, c = cand_r.shape
        if nq == 1 and c <= _SMALL_RESCORE:  # one query, few candidates (the ANN path): the same, with less NumPy
            r = cand_r[0]
            x = self._codec.decode(self._codes[r], np.float64)
            s = np.einsum("jk,k->j", x, q[0])
            order = np.lexsort((r, -s))[:k]
            return r[order][None, :], s[order][None, :]
        per_block = max(1, RESCORE_BLOCK_BYTES // (self._dim * 8))  # decoded rows that stay in cache
        group, cols = max(1, per_block // c), min(c, per_block)  # a block: queries x candidates (1 x part of them
        span = max(group, self.chunk_bytes // (8 * c) // group * group)  # when one query has more than a block)
        codes, mapped, width = self._codes, self._codes_mapped, self._codec.width
        scratch = kernels.thread_scratch()
        out_r = np.empty((nq, k), dtype=np.int64)
        out_s = np.empty((nq, k), dtype=np.float64)
        for first in range(0, nq, span):  # queries ranked together: their scores stay within chunk_bytes
            last = min(nq, first + span)
            s = np.empty((last - first, c), dtype=np.float64)
            for start in range(first, last, group):
                stop = min(last, start + group)
                for c0 in range(0, c, cols):
                    c1 = min(c, c0 + cols)
                    flat = cand_r[start:stop, c0:c1].reshape(-1)
                    gathered = scratch.get(RESCORED_CODES, codes.dtype, flat.size, width, least_rows=group * cols)
                    if mapped:  # gather in row order: sequential reads of the file
                        order = np.argsort(flat, kind="stable")
                        gathered[order] = codes[flat[order]]
                    else:
                        np.take(codes, flat, axis=0, out=gathered)
                    decoded = scratch.get(RESCORED_ROWS, np.float64, flat.size, self._dim, least_rows=group * cols)
                    x = self._codec.decode(gathered, np.float64, out=decoded)
                    x = x.reshape(stop - start, c1 - c0, self._dim)
                    s[start - first:stop - first, c0:c1] = np.einsum("ijk,ik->ij", x, q[start:stop])
            out_r[first:last], out_s[first:last] = rank_rows(s, cand_r[first:last], k)
        return out_r, out_s

    def _exact_one(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """float64 brute force for one query (the fallback of the exact search), ties to the earlier row."""
        s = np.empty(self._n, dtype=np.float64)
        step = self._chunk_rows(1, 8 * self._dim)
        for start in range(0, self._n, step):
            stop = min(self._n, start + step)
            s[start:stop] = np.einsum("jk,k->j", self._codec.decode(self._codes[start:stop], np.float64), q)
        threshold = np.partition(s, self._n - k)[self._n - k]
        cand = np.flatnonzero(s >= threshold)
        order = cand[np.lexsort((cand, -s[cand]))][:k]
        return order, s[order]

    def _search_binary(self, q: np.ndarray, k: int, multiplier: int) -> Tuple[np.ndarray, np.ndarray]:
        """Hamming candidates over packed sign bits, rescored with the float query against the sign vectors."""
        nq, n = q.shape[0], self._n
        c = min(n, k * multiplier)
        q_words = word_view(np.packbits(q > 0, axis=1))
        step = self._chunk_rows(nq, 2 * nq * q_words.shape[1] * q_words.dtype.itemsize + 16 * nq)
        top = TopC(nq, c, np.int64)
        for start, stop in self._chunks(step, c):
            rows = np.arange(start, stop, dtype=np.int64)
            dist = hamming_distances(q_words, word_view(np.asarray(self._codes[start:stop]))).astype(np.int64)
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
            "dtype": self.dtype,
            "count": self._n,
            "metric": "cosine",
            "normalization": "l2 (float64, on add)",
            "bytes_per_vector": self.bytes_per_vector,
            "model": None if self._model_info is None else dict(self._model_info),
            "next_id": self._next_id,
        }
        part = self._codec.manifest_part()
        if part is not None:
            info[self.dtype] = part
        if self._ann is not None:
            info["ann"] = self._ann.manifest_part()
        return info

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the index to directory ``path`` crash-safely: into a temporary sibling (fsync'd), then swapped with
        the old index in one atomic exchange, so that at every instant ``path`` holds the complete old or the complete
        new index. What killed saves left beside it is removed first."""
        target = Path(path)
        if target.exists() and not (target.is_dir() and (target / MANIFEST).is_file()):
            raise ValueError(f"{target} exists and is not a tinyhpd index; refusing to overwrite it")
        parent = target.parent if str(target.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(target, "tmp")
        remove_stale_siblings(target, "old")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
        old = None
        try:
            self._write_files(tmp)
            _fsync_dir(tmp)
            if target.exists() and exchange_paths(tmp, target):
                old = tmp  # the previous index now sits in the temporary name
            else:
                if target.exists():  # no atomic exchange here: a short window with the old index set aside
                    old = parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                    os.rename(target, old)
                os.rename(tmp, target)
            _fsync_dir(parent)
        except BaseException:
            if old is None or old != tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def _write_files(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"vectors": np.ascontiguousarray(self._codes[: self._n])}
        tensors.update(self._codec.tensors())
        if self._ann is not None and self._tuning_queries is not None:
            tensors[TUNING_QUERIES] = self._tuning_queries
        save_file(tensors, str(folder / VECTORS), metadata={"format": FORMAT_NAME, "dtype": self.dtype})
        names = [VECTORS, IDS]
        if self._ann is not None:
            self._ann.save(str(folder / GRAPH))
            names.append(GRAPH)
        for name in (n for n in names if n != IDS):  # written by safetensors / faiss: fsync them here
            with open(folder / name, "rb+") as f:
                os.fsync(f.fileno())
        write_bytes(folder / IDS, json.dumps(self._ids.tolist(), ensure_ascii=False).encode("utf-8"))
        manifest = self.manifest()
        manifest["files"] = {name: (folder / name).stat().st_size for name in names}
        manifest["sha256"] = {name: _sha256(folder / name) for name in names}
        write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(
        cls,
        path: Union[str, os.PathLike],
        mmap: bool = True,
        *,
        model: Any = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        verify: bool = False,
    ) -> "Index":
        """Open an index saved by :meth:`save`; ``mmap=True`` maps the vectors instead of reading them into RAM.

        ``model`` (optional) is checked against the manifest (dim and fingerprint) and used for text queries.
        Sizes, header, counts and ids are always checked against the manifest; ``verify=True`` also checks the files'
        sha256 (reads them whole once).
        """
        folder = Path(path)
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{folder}: no {MANIFEST}; not a tinyhpd index (or an incomplete one)")
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                with FolderFiles(folder, (MANIFEST, VECTORS, IDS), optional=(GRAPH,)) as files:
                    return cls._load_files(folder, files, mmap, model, chunk_bytes, verify)
            except FolderChanged:
                if attempt == _LOAD_ATTEMPTS - 1:
                    raise FileNotFoundError(f"{folder}: replaced {_LOAD_ATTEMPTS} times while it was being opened "
                                            "(another process saves it in a loop?)") from None
        raise AssertionError("unreachable")

    @classmethod
    def _load_files(cls, folder: Path, files: "FolderFiles", mmap: bool, model: Any, chunk_bytes: int,
                    verify: bool) -> "Index":
        """Index.load on files opened together through one handle on the folder: one version of it, whatever a
        writer renames meanwhile."""
        manifest_path = folder / MANIFEST
        try:
            manifest = json.loads(files.read(MANIFEST).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{manifest_path}: invalid JSON ({exc})") from None
        check_manifest(manifest, manifest_path)
        if manifest.get("ann") is not None:
            ann_mod.HNSW.check_part(manifest["ann"], str(manifest_path))
        for name, size in manifest["files"].items():
            file = folder / name
            if not files.has(name):
                raise ValueError(f"{file}: missing (the manifest lists it)")
            if files.size(name) != size:
                raise ValueError(f"{file}: size {files.size(name)} bytes, the manifest says {size}")
            if verify:
                want = (manifest.get("sha256") or {}).get(name)
                if want is None:
                    raise ValueError(f"{manifest_path}: records no sha256 for {name} (saved by an older tinyhpd)")
                if files.sha256(name) != want:
                    raise ValueError(f"{file}: content differs from the sha256 in the manifest (corrupted)")
        dim, count = manifest["dim"], manifest["count"]
        codec = CODECS[manifest["dtype"]](dim)
        vec = files.file(VECTORS)
        header, start = read_safetensors_header(folder / VECTORS, vec)
        # an ANN index serves the codes from its graph file: its own copy is only compared with them (mapped)
        codes = open_tensor(folder / VECTORS, header, start, "vectors", mmap or manifest.get("ann") is not None, vec)
        signed = codec.name == "int8" and manifest["format_version"] < 2 and codes.dtype == np.int8
        if codes.shape != (count, codec.width) or (codes.dtype != codec.storage and not signed):
            raise ValueError(f"{folder / VECTORS}: vectors are {codes.dtype} {list(codes.shape)}, the manifest says "
                             f"{manifest['dtype']} with count {count} and dim {dim}")
        codec.check_finite(codes, str(folder / VECTORS))
        extra = {name: open_tensor(folder / VECTORS, header, start, name, False, vec)
                 for name in codec.tensor_names if name in header}
        codec.restore(extra, manifest, str(folder / VECTORS))
        if signed:  # format 1 stored int8 codes signed: converted into memory (save again to memory-map them)
            codes = codec.from_signed(codes)
        try:
            ids = json.loads(files.read(IDS).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{folder / IDS}: invalid JSON ({exc})") from None
        if not isinstance(ids, list) or len(ids) != count:
            raise ValueError(f"{folder / IDS}: expected a list of {count} ids")
        next_id = manifest.get("next_id", 0)
        if isinstance(next_id, bool) or not isinstance(next_id, int):
            raise ValueError(f"{manifest_path}: next_id must be an integer, got {next_id!r}")
        try:
            index = cls.from_codes(codec, codes, ids, next_id=next_id, model_info=manifest.get("model"),
                                   chunk_bytes=chunk_bytes)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{folder / IDS}: {exc}") from None
        if manifest.get("ann") is not None:
            graph = ann_mod.HNSW.open(files.path(GRAPH), manifest["ann"], codec, count, mmap, str(folder / GRAPH))
            for begin in range(0, count, ADD_BLOCK_ROWS):  # the graph's codes serve: they must be the saved ones
                end = min(count, begin + ADD_BLOCK_ROWS)
                if not np.array_equal(graph.codes()[begin:end], codes[begin:end]):
                    raise ValueError(f"{folder / GRAPH}: the graph's vectors differ from {VECTORS} from row "
                                     f"{begin} on (the graph of another index, or damaged)")
            index._ann, index._tuned_size = graph, count
            if TUNING_QUERIES in header:
                index._tuning_queries = _tuning_queries_of(
                    open_tensor(folder / VECTORS, header, start, TUNING_QUERIES, False, vec), dim, folder / VECTORS)
            index._store = np.empty((0, codec.width), dtype=codec.storage)
        if model is not None:
            index.model = model
        return index


def _tuning_queries_of(q: np.ndarray, dim: int, where: Path) -> np.ndarray:
    """The kept tuning queries read from a folder: finite float32 (m, dim), m >= 1 (an error names the file)."""
    if q.dtype != np.float32 or q.ndim != 2 or q.shape[0] < 1 or q.shape[1] != dim:
        raise ValueError(f"{where}: tensor {TUNING_QUERIES!r} must be float32 (m, {dim}) with m >= 1; got {q.dtype} "
                         f"{list(q.shape)}")
    if not np.isfinite(q).all():
        raise ValueError(f"{where}: tensor {TUNING_QUERIES!r} contains NaN or infinity")
    return q


def query_input(queries: Any) -> Union[List[str], np.ndarray]:
    """The texts of str / list-of-str queries (a blank one is a ValueError naming it), or the array of vector queries
    (an empty or non-numeric one is an error), converted once: a list of a thousand float lists costs milliseconds."""
    if isinstance(queries, str):
        texts = [queries]
    elif isinstance(queries, (list, tuple)) and queries and all(isinstance(t, str) for t in queries):
        texts = list(queries)
    else:
        if isinstance(queries, (list, tuple)) and not queries:
            raise ValueError("no queries given (empty list)")
        arr = np.asarray(queries)
        if arr.dtype == object or arr.dtype.kind in "USb":
            raise TypeError("queries must be a str, a list of str, or a numeric array of vectors")
        if arr.size == 0:
            raise ValueError("no queries given (empty array)")
        return arr
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"query {i} is empty or blank")
    return texts
