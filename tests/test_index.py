"""tinyhpd.index: exact cosine top-k, compact storage, persistence, model checks, bad input and the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinyhpd.cli import common as cli_common
from tinyhpd.index import index as index_mod
from tinyhpd.index import kernels, topk
from tinyhpd.index import DTYPES, Hits, Index

FLOAT_DTYPES = ("float32", "float16", "int8")


# ------------------------------------------------------------------------------------------------ helpers


class FakeModel:
    """A deterministic bag-of-words encoder with the identity attributes of tinyhpd.Model."""

    def __init__(self, dim: int = 24, seed: int = 0, name: str = "fake/model") -> None:
        self.embedding_dim = dim
        self.name_or_path = name
        self.revision = "r1"
        self.fingerprint = hashlib.sha256(f"{name}-{dim}-{seed}".encode()).hexdigest()
        self._seed = seed
        self.calls = 0

    def _word(self, word: str) -> np.ndarray:
        h = int.from_bytes(hashlib.sha256(f"{self._seed}:{word}".encode()).digest()[:8], "little")
        return np.random.default_rng(h).standard_normal(self.embedding_dim)

    def encode(self, sentences, batch_size: int = 32, **kwargs):
        self.calls += 1
        out = [sum((self._word(w) for w in s.lower().split()), np.zeros(self.embedding_dim)) + 1e-3
               for s in sentences]
        return np.asarray(out, dtype=np.float32)


def unit64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(index: Index, queries: np.ndarray, k: int):
    """float64 reference over the index's stored (dequantised) vectors; ties go to the earlier row."""
    scores = unit64(queries) @ index.vectors(dtype=np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = index.ids
    return [[ids[r] for r in row] for row in order], np.take_along_axis(scores, order, axis=1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def corpus(rng):
    return rng.standard_normal((3000, 48)).astype(np.float32)


@pytest.fixture
def queries(rng):
    return rng.standard_normal((9, 48)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 16, 1 << 26])
def test_float32_search_matches_float64_brute_force(corpus, queries, chunk_bytes):
    index = Index(48, "float32", chunk_bytes=chunk_bytes)
    index.add(corpus)
    hits = index.search(queries, top_k=25)
    ref_ids, ref_scores = brute_force(index, queries, 25)
    assert [h.ids for h in hits] == ref_ids
    np.testing.assert_allclose(np.array([h.scores for h in hits]), ref_scores, rtol=0, atol=1e-12)


def test_float32_storage_holds_the_float64_normalised_vectors_rounded(corpus):
    index = Index(48)
    index.add(corpus)
    np.testing.assert_array_equal(index.vectors(), unit64(corpus).astype(np.float32))


def test_float32_scores_are_cosines_of_the_raw_vectors(corpus, queries):
    index = Index(48)
    index.add(corpus)
    hits = index.search(queries[0], top_k=5)
    cos = unit64(corpus) @ unit64(queries[:1])[0]
    np.testing.assert_allclose(hits.scores, np.sort(cos)[::-1][:5], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_quantised_search_is_exact_over_the_dequantised_vectors(corpus, queries, dtype):
    index = Index(48, dtype, chunk_bytes=1 << 15)
    index.add(corpus)
    hits = index.search(queries, top_k=10)
    ref_ids, ref_scores = brute_force(index, queries, 10)
    assert [h.ids for h in hits] == ref_ids
    np.testing.assert_allclose(np.array([h.scores for h in hits]), ref_scores, rtol=0, atol=1e-12)


def test_ties_are_broken_by_insertion_order(rng):
    base = rng.standard_normal((50, 16))
    corpus = np.concatenate([base, base[[7] * 30]])  # 31 identical copies of row 7 at rows 7 and 50..79
    index = Index(16, chunk_bytes=1)
    index.add(corpus)
    hits = index.search(base[7], top_k=20)
    assert hits.ids == [7] + list(range(50, 69))


def test_near_ties_at_the_candidate_boundary_stay_exact(rng):
    # many vectors within float32 rounding of each other force the float64 fallback path
    centre = rng.standard_normal(32)
    corpus = centre + rng.standard_normal((4000, 32)) * 1e-7
    index = Index(32, chunk_bytes=1 << 14)
    index.add(corpus)
    fallbacks = []
    exact_one = index._exact_one
    index._exact_one = lambda q, k: (fallbacks.append(k), exact_one(q, k))[1]
    q = centre[None, :] + 0.01 * rng.standard_normal((3, 32))
    rows, scores = index.search_rows(q, 5)
    assert fallbacks  # the float32 candidates could not be proven, so the brute-force path ran
    ref = unit64(q) @ index.vectors(dtype=np.float64).T
    ref_rows = np.argsort(-ref, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(rows, ref_rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mmap", [False, True])
def test_search_results_do_not_depend_on_query_batching(tmp_path, rng, corpus, dtype, mmap):
    """Rows and float64 scores of 150 queries searched together (several rescoring groups) equal those of each query
    alone, in memory and memory-mapped (whose gather reads in row order)."""
    index = Index(48, dtype)
    index.add(corpus)
    index.save(tmp_path / "ix")
    index = Index.load(tmp_path / "ix", mmap=mmap)
    assert index._codes_mapped is mmap
    many = rng.standard_normal((150, 48))
    rows, scores = index.search_rows(many, 7)
    for i in range(0, 150, 7):
        one_rows, one_scores = index.search_rows(many[i], 7)
        np.testing.assert_array_equal(one_rows[0], rows[i])
        np.testing.assert_array_equal(one_scores[0], scores[i])
    if dtype != "binary":
        assert [h.ids for h in index.search(many[:20], top_k=7)] == brute_force(index, many[:20], 7)[0]
        everything = index.search(many[:3], top_k=7, within=index.ids)  # 3,000 rows a query: buffers of its own
        for got, want in zip(everything, index.search(many[:3], 7)):
            assert got.ids == want.ids
            np.testing.assert_array_equal(got.scores, want.scores)


@pytest.mark.parametrize("dim", [48, 512])
def test_rescoring_buffers_kept_by_a_thread_stay_small(rng, dim):
    """The rescoring decodes cache-sized blocks (queries, or part of one query's candidates) in buffers its thread
    keeps: they stay within RESCORE_BLOCK_BYTES (the kernels' block minimum of 1,024 rows would keep 4 MB at dim 512;
    a query ranked within 2,000 ids decoded them all at once), and a thread with buffers left by other searches gives
    the same results."""
    index = Index(dim, "int8")
    index.add(rng.standard_normal((2000, dim)))
    q = rng.standard_normal((60, dim))
    kept = {}

    def fresh_thread() -> None:  # a new thread: its own, empty scratch
        kept["result"] = index.search_rows(q, 10)
        kept["within"] = index.search(q[:4], 10, within=index.ids)  # 2,000 candidates a query: several blocks each
        kept["bytes"] = {key: buf.nbytes for key, buf in kernels.thread_scratch()._buffers.items()}

    worker = threading.Thread(target=fresh_thread)
    worker.start()
    worker.join()
    rows_key, codes_key = (index_mod.RESCORED_ROWS, "<f8"), (index_mod.RESCORED_CODES, "|u1")
    assert rows_key in kept["bytes"]  # the decoded rows were reused, not allocated per group
    assert kept["bytes"][rows_key] <= index_mod.RESCORE_BLOCK_BYTES
    assert kept["bytes"][codes_key] <= index_mod.RESCORE_BLOCK_BYTES
    index.search_rows(rng.standard_normal((5, dim)), 3)  # this thread: buffers of other sizes first
    rows, scores = index.search_rows(q, 10)
    np.testing.assert_array_equal(rows, kept["result"][0])
    np.testing.assert_array_equal(scores, kept["result"][1])
    for got, want in zip(kept["within"], index.search(q[:4], 10)):
        assert got.ids == want.ids
        np.testing.assert_array_equal(got.scores, want.scores)


def test_ranking_within_many_ids_decodes_them_block_by_block(rng):
    """A query ranked within 20,000 ids (dim 256: 41 MB decoded at once) peaks at a few MB: the candidates are decoded
    in blocks of RESCORE_BLOCK_BYTES; the answer is the brute-force one."""
    index = Index(256, "int8")
    index.add(rng.standard_normal((20000, 256)))
    q = rng.standard_normal((2, 256))
    index.search(q, 5, within=index.ids[:100])  # buffers and lazy imports before measuring
    tracemalloc.start()
    try:
        hits = index.search(q, 5, within=index.ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # was 88 MB
    assert [h.ids for h in hits] == brute_force(index, q, 5)[0]


# ------------------------------------------------------------------------------------------------ storage types


@pytest.mark.parametrize("dtype,per_vector", [("float32", 192), ("float16", 96), ("int8", 48), ("binary", 6)])
def test_bytes_per_vector(dtype, per_vector, corpus):
    index = Index(48, dtype)
    index.add(corpus)
    assert index.bytes_per_vector == per_vector
    extra = 4 * 4 * 48 if dtype == "int8" else 0  # scale, offset, calibration minimum and maximum
    assert index.nbytes == len(corpus) * per_vector + extra


def test_binary_bytes_round_up_for_odd_dims(rng):
    index = Index(13, "binary")
    index.add(rng.standard_normal((5, 13)))
    assert index.bytes_per_vector == 2


def test_int8_dequantisation_error_is_within_half_a_step(corpus):
    index = Index(48, "int8")
    index.add(corpus)
    err = np.abs(index.vectors(dtype=np.float64) - unit64(corpus))
    assert (err <= index.codec.scale.astype(np.float64) / 2 + 1e-6).all()


def test_int8_clips_later_vectors_outside_the_calibrated_range_and_warns(rng):
    index = Index(4, "int8")
    index.add(rng.uniform(-0.1, 0.1, (100, 4)) + np.array([1.0, 0, 0, 0]))
    with pytest.warns(RuntimeWarning, match="clipped"):
        index.add(np.array([[0.0, 1.0, 0.0, 0.0]]), ids=["outside"])
    v = index.vectors(["outside"], dtype=np.float64)[0]
    hi = index.codec.offset.astype(np.float64) + 255 * index.codec.scale.astype(np.float64)
    assert v[1] == pytest.approx(hi[1])


def test_int8_vectors_inside_the_range_do_not_warn(corpus):
    index = Index(48, "int8")
    index.add(corpus[:2000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.add(corpus[:10] * 0.5, ids=[f"in{i}" for i in range(10)])


def test_int8_explicit_calibration_sample(corpus):
    index = Index(48, "int8", calibration=corpus)
    index.add(corpus[:1])
    assert index.codec.calibration_count == len(corpus)


def test_binary_codes_are_packed_sign_bits(rng):
    x = rng.standard_normal((20, 24))
    index = Index(24, "binary")
    index.add(x)
    np.testing.assert_array_equal(np.asarray(index._codes[:20]), np.packbits(x > 0, axis=1))


def test_binary_full_rescoring_equals_brute_force_over_sign_vectors(corpus, queries):
    index = Index(48, "binary")
    index.add(corpus)
    hits = index.search(queries, top_k=5, rescore_multiplier=len(corpus))
    ref_ids, ref_scores = brute_force(index, queries, 5)
    assert [h.ids for h in hits] == ref_ids
    np.testing.assert_allclose(np.array([h.scores for h in hits]), ref_scores, atol=1e-12)


def test_binary_candidates_are_the_nearest_in_hamming_distance(corpus, queries):
    index = Index(48, "binary")
    index.add(corpus)
    rows, _ = index.search_rows(queries, 3, rescore_multiplier=1)  # 3 candidates: exactly the Hamming top 3
    qb = queries > 0
    cb = corpus > 0
    ham = (qb[:, None, :] != cb[None, :, :]).sum(-1)
    for i in range(len(queries)):
        assert sorted(ham[i, rows[i]]) == sorted(np.sort(ham[i])[:3])


def test_binary_results_do_not_depend_on_chunking(corpus, queries):
    a, b = Index(48, "binary", chunk_bytes=1), Index(48, "binary")
    a.add(corpus)
    b.add(corpus)
    assert [h.ids for h in a.search(queries, 10)] == [h.ids for h in b.search(queries, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_stored_vector_retrieves_itself_first(dtype, corpus):
    index = Index(48, dtype)
    index.add(corpus)
    hits = index.search(corpus[:20], top_k=1)
    assert [h.ids[0] for h in hits] == list(range(20))


def test_popcount_lookup_table_matches_bit_counting(rng):
    words = rng.integers(0, 2**63, size=(7, 5), dtype=np.uint64)
    expected = np.array([[bin(int(w)).count("1") for w in row] for row in words])
    np.testing.assert_array_equal(topk._popcount_lut(words), expected)
    np.testing.assert_array_equal(topk._popcount(words), expected)


# ------------------------------------------------------------------------------------------------ add / remove / ids


def test_adding_in_batches_equals_adding_at_once(corpus, queries):
    once, parts = Index(48), Index(48)
    once.add(corpus)
    for start in range(0, len(corpus), 700):
        parts.add(corpus[start : start + 700])
    assert once.ids == parts.ids
    assert [h.ids for h in once.search(queries, 10)] == [h.ids for h in parts.search(queries, 10)]


def test_default_ids_continue_after_the_largest_int_id(corpus):
    index = Index(48)
    index.add(corpus[:3], ids=[5, "a", 9])
    index.add(corpus[3:5])
    assert index.ids == [5, "a", 9, 10, 11]


def test_remove_keeps_the_index_consistent(corpus, queries):
    index = Index(48)
    index.add(corpus, ids=[f"d{i}" for i in range(len(corpus))])
    removed = [f"d{i}" for i in range(0, len(corpus), 3)]
    index.remove(removed)
    rebuilt = Index(48)
    kept = [i for i in range(len(corpus)) if i % 3]
    rebuilt.add(corpus[kept], ids=[f"d{i}" for i in kept])
    assert len(index) == len(kept) and "d0" not in index and "d1" in index
    assert [h.ids for h in index.search(queries, 10)] == [h.ids for h in rebuilt.search(queries, 10)]


def test_removed_id_can_be_added_again(corpus):
    index = Index(48)
    index.add(corpus[:3], ids=["a", "b", "c"])
    index.remove(["b"])
    index.add(corpus[3:4], ids=["b"])
    assert index.ids == ["a", "c", "b"]
    assert index.search(corpus[3], top_k=1).ids == ["b"]


def test_duplicate_id_in_a_batch_is_an_error(corpus):
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        Index(48).add(corpus[:2], ids=["x", "x"])


def test_duplicate_id_against_the_index_is_an_error_and_changes_nothing(corpus):
    index = Index(48)
    index.add(corpus[:2], ids=["x", "y"])
    with pytest.raises(ValueError, match="duplicate id 'y'"):
        index.add(corpus[2:4], ids=["z", "y"])
    assert index.ids == ["x", "y"] and len(index) == 2


def test_remove_unknown_id_is_an_error_and_removes_nothing(corpus):
    index = Index(48)
    index.add(corpus[:2], ids=["x", "y"])
    with pytest.raises(ValueError, match="'nope'"):
        index.remove(["x", "nope"])
    assert index.ids == ["x", "y"]


def test_ids_must_be_int_or_str(corpus):
    with pytest.raises(TypeError, match="int or str"):
        Index(48).add(corpus[:1], ids=[1.5])


def test_wrong_number_of_ids(corpus):
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        Index(48).add(corpus[:3], ids=["a", "b"])


# ------------------------------------------------------------------------------------------------ bad input


def test_empty_add_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        Index(8).add(np.zeros((0, 8)))


def test_empty_corpus_build_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        Index.build([], model=FakeModel())


def test_search_of_an_empty_index_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        Index(8).search(np.ones(8))


def test_nan_vector_is_an_error_naming_the_row(corpus):
    bad = corpus[:5].copy()
    bad[3, 7] = np.nan
    index = Index(48)
    with pytest.raises(ValueError, match="row 3 contains NaN"):
        index.add(bad)
    assert len(index) == 0


def test_zero_vector_is_an_error(corpus):
    bad = corpus[:3].copy()
    bad[1] = 0
    with pytest.raises(ValueError, match="row 1 is the zero vector"):
        Index(48).add(bad)


def test_nan_query_is_an_error(corpus):
    index = Index(48)
    index.add(corpus)
    q = corpus[:2].copy()
    q[1, 0] = np.inf
    with pytest.raises(ValueError, match="query vectors row 1"):
        index.search(q)


def test_wrong_dimension_is_an_error(corpus):
    index = Index(48)
    with pytest.raises(ValueError, match="dimension 47"):
        index.add(corpus[:, :47])
    index.add(corpus)
    with pytest.raises(ValueError, match="dimension 12"):
        index.search(np.ones(12))


@pytest.mark.parametrize("top_k", [0, -3, 2.0, True, "5", None])
def test_invalid_top_k(corpus, top_k):
    """The rule and message of every other top_k (CrossEncoder.rank, pgvector.search): a ValueError (2.0 and True were
    a TypeError here)."""
    index = Index(48)
    index.add(corpus[:10])
    for search in (index.search, index.search_rows):
        with pytest.raises(ValueError, match=f"^top_k must be a positive integer; got {re.escape(repr(top_k))}$"):
            search(corpus[0][None], top_k=top_k)


def test_top_k_larger_than_the_index_is_clamped(corpus):
    index = Index(48)
    index.add(corpus[:4])
    hits = index.search(corpus[:2], top_k=50)
    assert [len(h.ids) for h in hits] == [4, 4]
    assert sorted(hits[0].ids) == [0, 1, 2, 3]


def test_empty_query_list_is_an_error(corpus):
    index = Index(48)
    index.add(corpus[:4])
    with pytest.raises(ValueError, match="no queries"):
        index.search([])
    with pytest.raises(ValueError, match="no queries"):
        index.search(np.zeros((0, 48)))


class CountingQueries:
    """Vector queries that count how often they are turned into an array."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.conversions = values, 0

    def __array__(self, dtype=None, copy=None):
        self.conversions += 1
        return self.values if dtype is None else self.values.astype(dtype)


def test_vector_queries_are_converted_to_an_array_once(corpus):
    index = Index(48)
    index.add(corpus[:20])
    given = CountingQueries(corpus[:3])
    hits = index.search(given, top_k=2)
    assert given.conversions == 1  # a list of float lists given by a caller is converted once (milliseconds each)
    assert [h.ids[0] for h in hits] == [0, 1, 2]
    as_lists = index.search(corpus[:3].tolist(), top_k=2)
    assert [h.ids for h in as_lists] == [h.ids for h in hits]


def test_blank_text_query_is_an_error():
    index = Index.build(["a cat", "a dog"], model=FakeModel(), dtype="float32")
    with pytest.raises(ValueError, match="query 0 is empty"):
        index.search("   ")


def test_text_query_without_a_model_is_an_error(corpus):
    index = Index(48)
    index.add(corpus[:4])
    with pytest.raises(ValueError, match="need a model"):
        index.search("hello")


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="dtype must be one of"):
        Index(8, "bfloat16")


# ------------------------------------------------------------------------------------------------ text and models


def test_build_and_search_text_with_a_model():
    docs = ["the cat sat on the mat", "stock markets fell sharply", "a recipe for tomato soup", "the dog chased a cat"]
    model = FakeModel()
    index = Index.build(docs, model=model, ids=["cat", "stocks", "soup", "dog"], dtype="float32")
    hits = index.search(["stock markets fell sharply today", "tomato soup recipe"], top_k=2)
    assert [h.ids[0] for h in hits] == ["stocks", "soup"]
    assert isinstance(hits[0], Hits) and hits[0].scores[0] >= hits[0].scores[1]


def test_build_records_the_model_identity():
    model = FakeModel()
    index = Index.build(["a b", "c d"], model=model)
    assert index.model_info == {"name_or_path": "fake/model", "revision": "r1", "fingerprint": model.fingerprint,
                                "embedding_dim": 24}
    assert index.dtype == "float16"


def test_search_with_a_different_model_is_refused():
    index = Index.build(["a b", "c d"], model=FakeModel(seed=0))
    with pytest.raises(ValueError, match="not the model the index was built with"):
        index.search("a b", model=FakeModel(seed=1))


def test_search_with_a_model_of_another_dim_is_refused():
    index = Index.build(["a b", "c d"], model=FakeModel(dim=24))
    with pytest.raises(ValueError, match="24-d vectors"):
        index.search("a b", model=FakeModel(dim=16))


def test_loading_with_a_different_model_is_refused(tmp_path):
    Index.build(["a b", "c d"], model=FakeModel(seed=0)).save(tmp_path / "ix")
    with pytest.raises(ValueError, match="cannot be mixed"):
        Index.load(tmp_path / "ix", model=FakeModel(seed=1))


def test_add_texts_uses_the_index_model():
    model = FakeModel()
    index = Index.build(["a b", "c d"], model=model, dtype="float32")
    index.add_texts(["e f g"], ids=["new"])
    assert index.search("e f g", top_k=1).ids == ["new"]




# ------------------------------------------------------------------------------------------------ persistence


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, corpus, queries, dtype, mmap):
    index = Index(48, dtype)
    index.add(corpus, ids=[f"d{i}" for i in range(len(corpus))])
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", mmap=mmap)
    assert isinstance(loaded._codes, np.memmap) == mmap
    assert loaded.ids == index.ids and loaded.dtype == dtype and len(loaded) == len(index)
    np.testing.assert_array_equal(loaded.vectors(), index.vectors())
    a, b = index.search(queries, 10), loaded.search(queries, 10)
    assert [h.ids for h in a] == [h.ids for h in b]
    np.testing.assert_array_equal(np.array([h.scores for h in a]), np.array([h.scores for h in b]))


def test_saved_files_follow_the_documented_format(tmp_path, corpus):
    from safetensors.numpy import load_file

    index = Index.build(["x y", "y z", "z w"], model=FakeModel(), dtype="int8")
    index.save(tmp_path / "ix")
    files = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert files == ["ids.json", "manifest.json", "vectors.safetensors"]
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    for key, value in {"format": "tinyhpd-index", "format_version": 2, "dim": 24, "dtype": "int8", "count": 3,
                       "metric": "cosine"}.items():
        assert manifest[key] == value
    assert manifest["model"]["fingerprint"] == index.model_info["fingerprint"]
    assert "l2" in manifest["normalization"]
    tensors = load_file(str(tmp_path / "ix" / "vectors.safetensors"))  # readable by the reference library
    assert tensors["vectors"].dtype == np.uint8 and tensors["vectors"].shape == (3, 24)
    assert tensors["scale"].shape == (24,) and tensors["offset"].shape == (24,)
    assert json.loads((tmp_path / "ix" / "ids.json").read_text()) == [0, 1, 2]


def test_save_replaces_an_existing_index(tmp_path, corpus):
    first, second = Index(48), Index(48)
    first.add(corpus[:5])
    second.add(corpus[:7])
    first.save(tmp_path / "ix")
    second.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temp or old folder left behind


def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path, corpus):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    index = Index(48)
    index.add(corpus[:3])
    with pytest.raises(ValueError, match="not a tinyhpd index"):
        index.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_a_crash_while_saving_leaves_the_previous_index_loadable(tmp_path, corpus, monkeypatch):
    old = Index(48)
    old.add(corpus[:5])
    old.save(tmp_path / "ix")
    new = Index(48)
    new.add(corpus[:9])

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(index_mod, "write_bytes", crash)  # fails after the vectors file is written
    with pytest.raises(OSError, match="simulated"):
        new.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_a_crash_during_a_first_save_leaves_nothing_that_loads(tmp_path, corpus, monkeypatch):
    index = Index(48)
    index.add(corpus[:5])
    monkeypatch.setattr(index_mod, "write_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError):
        index.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_folder_without_manifest_is_file_not_found(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        Index.load(tmp_path / "half")


def test_load_detects_a_truncated_vectors_file(tmp_path, corpus):
    index = Index(48)
    index.add(corpus[:50])
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / "vectors.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="vectors.safetensors"):
        Index.load(tmp_path / "ix")


def test_load_detects_a_count_that_disagrees_with_the_vectors(tmp_path, corpus):
    index = Index(48)
    index.add(corpus[:50])
    index.save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] = 49
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="count 49"):
        Index.load(tmp_path / "ix")


def test_load_refuses_a_newer_format_version(tmp_path, corpus):
    index = Index(48)
    index.add(corpus[:5])
    index.save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format_version 99"):
        Index.load(tmp_path / "ix")


@pytest.mark.parametrize("key, value, message", [("dim", 0, "dim must be a positive integer; got 0"),
                                                  ("dim", True, "dim must be a positive integer; got True"),
                                                  ("dtype", "int4", "dtype must be one of")])
def test_load_names_the_manifest_of_a_bad_dim_or_dtype(tmp_path, corpus, key, value, message):
    index = Index(48)
    index.add(corpus[:5])
    index.save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[key] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"manifest.json: {message}"):
        Index.load(tmp_path / "ix")


def test_mutating_a_memory_mapped_index_does_not_touch_its_files(tmp_path, corpus):
    index = Index(48, "float16")
    index.add(corpus[:100])
    index.save(tmp_path / "ix")
    before = (tmp_path / "ix" / "vectors.safetensors").read_bytes()
    loaded = Index.load(tmp_path / "ix", mmap=True)
    loaded.add(corpus[100:110])
    loaded.remove([0, 1])
    assert len(loaded) == 108
    assert loaded.search(corpus[105], top_k=1).ids == [105]
    assert (tmp_path / "ix" / "vectors.safetensors").read_bytes() == before


def test_an_emptied_index_saves_and_loads(tmp_path, corpus):
    index = Index(48)
    index.add(corpus[:2], ids=["a", "b"])
    index.remove(["a", "b"])
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix")
    assert len(loaded) == 0
    with pytest.raises(ValueError, match="empty"):
        loaded.search(corpus[0])


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_build_and_search(tmp_path, monkeypatch, capsys):
    from tinyhpd.cli import main

    model = FakeModel()
    monkeypatch.setattr(cli_common, "load_model", lambda name, revision=None, threads=None: model)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n\nstock markets fell sharply\na recipe for tomato soup\n",
                      encoding="utf-8")
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "ix"), "--dtype", "int8", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "ix"), "tomato soup recipe", "--top-k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["id"] == 4  # 1-based line number; the blank line 2 is skipped


def test_cli_search_of_a_missing_index_exits_2(tmp_path, capsys):
    from tinyhpd.cli import main

    assert main(["search", str(tmp_path / "nothing"), "query"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_cli_build_of_an_empty_corpus_exits_2(tmp_path, capsys, monkeypatch):
    from tinyhpd.cli import main

    monkeypatch.setattr(cli_common, "load_model", lambda name, revision=None, threads=None: FakeModel())
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert main(["index", "build", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "ix")]) == 2
    assert "no non-blank line" in capsys.readouterr().err


def test_importing_the_module_stays_light():
    import subprocess
    import sys

    code = "import sys, tinyhpd.index; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(index_mod.__file__).parents[2])}).stdout
    assert out.split() == ["False", "False"]




_WRITER = """
import sys, time
import numpy as np
import tinyhpd
folder, stop_after = sys.argv[1], float(sys.argv[2])
versions = []
for k in range(2):  # version k: ids 'v<k>-i', every vector along axis k
    ix = tinyhpd.Index(4, "float16")
    ix.add(np.tile(np.eye(4, dtype=np.float32)[k], (64, 1)), ids=[f"v{k}-{i}" for i in range(64)])
    versions.append(ix)
end, k, saves = time.time() + stop_after, 0, 0
while time.time() < end:
    versions[k].save(folder)
    k, saves = 1 - k, saves + 1
print(saves)
"""


def test_loads_during_in_place_saves_read_one_version_and_never_fail(tmp_path):
    """Issue 24: Index.load opened manifest, vectors and ids by path one after another, so a save between the opens
    paired one version's vectors with the other's ids (13-76 in 1,500-5,000 loads), and verify=True raised false
    'corrupted' errors. Now the files are opened together through one handle on the folder."""
    import subprocess
    import sys

    folder = tmp_path / "ix"
    first = Index(4, "float16")
    first.add(np.tile(np.eye(4, dtype=np.float32)[0], (64, 1)), ids=[f"v0-{i}" for i in range(64)])
    first.save(folder)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), "4"], stdout=subprocess.PIPE, text=True)
    loads, seen = 0, set()
    try:
        while writer.poll() is None and loads < 4000:
            ix = Index.load(folder, verify=loads % 4 == 0)  # never an error, never a mix
            version = {id_.split("-")[0] for id_ in ix.ids}
            axis = {int(np.argmax(np.abs(row))) for row in ix.vectors(ix.ids[:8])}
            assert len(version) == 1 and axis == {int(version.pop()[1])}, (loads, version, axis)
            seen |= {ix.ids[0]}
            loads += 1
    finally:
        writer.wait(timeout=60)
    assert int(writer.stdout.read()) > 50 and loads > 50
    assert seen == {"v0-0", "v1-0"}  # both versions were read while the writer swapped them


def test_a_saved_row_turned_nan_is_refused_at_load_naming_the_row(tmp_path):
    """Issue 24: such an index loaded, then every search failed with a broadcast error."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16"):
        folder = tmp_path / dtype
        ix = Index(8, dtype)
        ix.add(rng.normal(size=(100, 8)).astype(np.float32))
        ix.save(folder)
        t = load_file(str(folder / "vectors.safetensors"))
        vecs = t["vectors"].copy()
        vecs[57, 3] = np.inf if dtype == "float16" else np.nan
        save_file({**t, "vectors": vecs}, str(folder / "vectors.safetensors"),
                  metadata={"format": "tinyhpd-index", "dtype": dtype})
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["vectors.safetensors"] = (folder / "vectors.safetensors").stat().st_size
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=r"vectors\.safetensors: row 57 holds NaN or infinite values"):
            Index.load(folder)


def test_default_ids_never_reuse_a_removed_id_even_after_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    ix = Index(8, "float32")
    ix.add(rng.normal(size=(3, 8)))  # ids 0, 1, 2
    ix.remove([2])
    ix.add(rng.normal(size=(1, 8)))
    assert ix.ids == [0, 1, 3]  # 0.2 gave 2 again: an old reference to id 2 would find another vector
    ix.remove([3])
    ix.save(tmp_path / "ix")
    again = Index.load(tmp_path / "ix")
    again.add(rng.normal(size=(1, 8)))
    assert again.ids == [0, 1, 4]


def test_an_id_with_a_lone_surrogate_is_refused_at_add_not_at_save():
    ix = Index(4, "float32")
    with pytest.raises(ValueError, match=r"is not valid Unicode text \(a lone surrogate at character 1\)"):
        ix.add(np.ones((1, 4)), ids=["a\ud800"])
    assert len(ix) == 0
