"""The compiled single-query search (tinyhpd/index/graph_search.py through Index.search_rows): the same rows as
faiss's search over the same graph and the exact path's scores, bad queries reported as before, its visited tables
(reuse, wrap-around, threads), graphs after changes or memory-mapped, and the installs it is not for."""
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinyhpd.index
from helpers import need
from tinyhpd.index import Index
from tinyhpd.index import ann
from tinyhpd.index.kernels import run_parts

need("faiss")
need("numba")


def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    return centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, d))


def _compiled(index, q, k, expansion=None):
    """The compiled search of one query (float64 (d,)): (rows, scores) of the places it found."""
    found = index._ann.search(np.ascontiguousarray(q, dtype=np.float64)[None], k, expansion)
    if found is None:
        return None
    rows, scores, counts = found
    return rows[0, :counts[0]], scores[0, :counts[0]]


def _one_by_one(index, queries, k, expansion=None, compiled=True):
    """search_rows one query at a time, with the compiled search or faiss's."""
    saved = ann.USE_COMPILED_SEARCH
    ann.USE_COMPILED_SEARCH = compiled
    try:
        found = [index.search_rows(q[None], k, expansion=expansion) for q in queries]
    finally:
        ann.USE_COMPILED_SEARCH = saved
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_the_same_rows_as_faiss_and_the_exact_paths_scores(real_embeddings, dtype):
    corpus, queries = real_embeddings
    index = Index(corpus.shape[1], dtype, ann="hnsw")
    index.add(corpus)
    assert _compiled(index, queries[0], 10) is not None  # this graph has the compiled search
    for expansion in (10, 16, 64, 256):
        rows, scores = _one_by_one(index, queries, 10, expansion)
        faiss_rows, faiss_scores = _one_by_one(index, queries, 10, expansion, compiled=False)
        same = (rows == faiss_rows).all(axis=1)
        assert same.mean() >= 0.99, (expansion, same.mean())  # the same walk; a float32 near-tie may differ
        np.testing.assert_allclose(scores[same], faiss_scores[same], rtol=0, atol=1e-12)
        assert (np.diff(scores, axis=1) <= 0).all()  # best first
        # each row's score is the exact path's (float64 from the stored codes; ~1e-16: the order of one sum)
        unit = queries.astype(np.float64) / np.linalg.norm(queries.astype(np.float64), axis=1, keepdims=True)
        exact = index._rescore(unit, rows, 10)
        np.testing.assert_array_equal(np.sort(exact[0], axis=1), np.sort(rows, axis=1))
        np.testing.assert_allclose(scores, exact[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_are_split_between_threads_and_answer_as_single_queries(threads, monkeypatch):
    x = _clustered(5000, 16, 20)
    queries = _clustered(101, 16, 21)
    index = Index(16, "int8", ann="hnsw", threads=threads)
    index.add(x)
    want = _one_by_one(index, queries, 10, 32)
    calls = []

    def spy(fn, ranges):
        calls.append(len(ranges))
        return run_parts(fn, ranges)

    monkeypatch.setattr(ann, "run_parts", spy)
    rows, scores = index.search_rows(queries, 10, expansion=32)
    np.testing.assert_array_equal(rows, want[0])
    np.testing.assert_array_equal(scores, want[1])
    parts = min(threads, 101 // ann.COMPILED_QUERIES_PER_THREAD)
    assert calls == ([parts] if parts > 1 else [])  # the batch went to that many threads
    saved = ann.USE_COMPILED_SEARCH
    ann.USE_COMPILED_SEARCH = False
    try:
        faiss_rows, faiss_scores = index.search_rows(queries, 10, expansion=32)
    finally:
        ann.USE_COMPILED_SEARCH = saved
    same = (rows == faiss_rows).all(axis=1)
    assert same.mean() >= 0.99
    np.testing.assert_allclose(scores[same], faiss_scores[same], rtol=0, atol=1e-12)


def test_a_batch_with_a_query_of_no_direction_names_its_row():
    index = Index(16, "int8", ann="hnsw")
    index.add(_clustered(300, 16, 22))
    queries = _clustered(40, 16, 23)
    queries[17] = 0
    with pytest.raises(ValueError, match="query vectors row 17 is the zero vector"):
        index.search_rows(queries, 3)
    queries[17, 3], queries[9, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match="query vectors row 9 contains NaN or infinity"):
        index.search(queries, top_k=3)


def test_ties_rank_the_lower_row_first_as_the_exact_path_does():
    x = _clustered(500, 16, 1)
    x[300] = x[100]  # two rows with the same codes: the same score, bit for bit
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    rows, scores = index.search_rows(x[100], 5)
    first = list(rows[0]).index(100)
    assert rows[0, first + 1] == 300 and scores[0, first] == scores[0, first + 1]
    assert (rows == index.search_rows(x[100][None], 5, exact=True)[0]).all()


@pytest.mark.parametrize("query, message", [
    (np.zeros(16), "query vectors row 0 is the zero vector"),
    (np.full(16, np.nan), "query vectors row 0 contains NaN or infinity"),
    (np.r_[np.inf, np.ones(15)], "query vectors row 0 contains NaN or infinity"),
])
def test_a_query_with_no_direction_is_an_error_as_on_every_path(query, message):
    index = Index(16, "int8", ann="hnsw")
    index.add(_clustered(300, 16, 2))
    with pytest.raises(ValueError, match=message):
        index.search_rows(query, 3)
    with pytest.raises(ValueError, match=message):
        index.search(query, top_k=3)


def test_queries_of_any_numeric_type_and_scale_give_the_same_answer():
    x = _clustered(1000, 16, 3)
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    q = np.round(x[7] * 4)
    want = index.search_rows(q.astype(np.float64), 5)
    for given in (q.astype(np.float32), q.astype(np.int64), q * 1e6, q[None].astype(np.float32)):
        got = index.search_rows(given, 5)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)


def test_visited_tables_are_reused_and_cleared_before_a_mark_repeats():
    rng = np.random.default_rng(4)
    shift = 4 * np.eye(16)[0]
    x = np.concatenate([rng.standard_normal((1500, 16)) + shift, rng.standard_normal((1500, 16)) - shift])
    a, b = x[0].astype(np.float64), x[-1].astype(np.float64)  # one query in each half: their walks meet little
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    want_a, want_b = _compiled(index, a, 10, 32), _compiled(index, b, 10, 32)
    for i in range(3 * ann.VISITED_MARKS):  # one table, its marks round three times: a's search meets a mark left
        q, want = (a, want_a) if i % ann.VISITED_MARKS == ann.VISITED_MARKS - 2 else (b, want_b)  # by its own walk
        rows, scores = _compiled(index, q, 10, 32)
        np.testing.assert_array_equal(rows, want[0], err_msg=f"search {i}")
        np.testing.assert_array_equal(scores, want[1])
    tables = index._ann._cache["compiled"][2]
    assert len(tables) == 1 and 1 <= tables[0][1] <= ann.VISITED_MARKS
    for q, (rows, _) in ((a, want_a), (b, want_b)):
        assert len(rows) == 10
        np.testing.assert_array_equal(rows, _one_by_one(index, q[None], 10, 32, compiled=False)[0][0])


def test_threads_searching_at_once_each_get_their_own_answers():
    x = _clustered(20000, 32, 6)
    queries = _clustered(400, 32, 7)
    index = Index(32, "int8", ann="hnsw")
    index.add(x)
    want = _one_by_one(index, queries, 10, 48)[0]
    got = np.zeros_like(want)
    errors = []

    def run(part):
        try:
            for i in range(part, len(queries), 4):
                got[i] = index.search_rows(queries[i], 10, expansion=48)[0][0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(part,)) for part in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_array_equal(got, want)


def test_after_removals_and_additions_the_search_sees_the_graph_as_it_is():
    x = _clustered(4000, 16, 8)
    queries = _clustered(100, 16, 9)
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    _one_by_one(index, queries, 10)  # the compiled state of the first graph is made
    index.remove(list(range(0, 4000, 2)))
    rows = _one_by_one(index, queries, 10)[0]
    kept = set(range(1, 4000, 2))
    assert all(index.ids[r] in kept for r in rows.ravel().tolist())
    assert (rows == _one_by_one(index, queries, 10, compiled=False)[0]).all(axis=1).mean() >= 0.99
    index.add(queries[:3], ids=["q0", "q1", "q2"])
    for i in range(3):
        assert index.search(queries[i], top_k=1).ids == [f"q{i}"]


def test_a_graph_reaching_fewer_rows_than_asked_falls_back_to_the_exact_path():
    x = _clustered(60, 8, 10)
    index = Index(8, "int8", ann="hnsw")
    index.add(x)
    _, offsets, neighbors, cum = index._ann._tables()
    lone = 5 if index._ann._index.hnsw.entry_point != 5 else 6
    for node in range(len(index)):  # every link to one row cut (lists keep their order, -1 after the last)
        size = int(offsets[node + 1]) - int(offsets[node])  # the node's levels' lists, one after the other
        for level in range(len(cum) - 1):
            if int(cum[level + 1]) > size:
                break
            start, stop = int(offsets[node]) + int(cum[level]), int(offsets[node]) + int(cum[level + 1])
            kept = [v for v in neighbors[start:stop].tolist() if v >= 0 and v != lone]
            neighbors[start:stop] = kept + [-1] * (stop - start - len(kept))
    queries = _clustered(20, 8, 11)
    k = len(index)
    assert (index._ann.search(queries, k)[2] == k - 1).all()  # the row cut off is never reached
    want = index.search_rows(queries, k, exact=True)
    for got in (index.search_rows(queries, k), _one_by_one(index, queries, k)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("mmap", [True, False])
def test_a_loaded_index_memory_mapped_or_not_answers_the_same(tmp_path, mmap):
    x = _clustered(3000, 16, 12)
    queries = _clustered(50, 16, 13)
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    want = _one_by_one(index, queries, 5)
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", mmap=mmap)
    assert loaded._ann.mapped is mmap
    got = _one_by_one(loaded, queries, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("dtype", ["float16", "binary"])
def test_storage_types_it_does_not_cover_are_searched_by_faiss(dtype):
    index = Index(16, dtype, ann="hnsw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 16 sign bits cannot reach the target: best kept
        index.add(_clustered(500, 16, 14))
    assert _compiled(index, np.ones(16), 3) is None
    assert len(index.search(np.ones(16), top_k=3).ids) == 3


def test_without_numba_faiss_searches_every_query(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.delitem(sys.modules, "tinyhpd.index.graph_search", raising=False)
    monkeypatch.delattr(tinyhpd.index, "graph_search", raising=False)  # what `from tinyhpd.index import` finds
    ann.compiled_search.cache_clear()
    try:
        assert ann.compiled_search() is None
        x = _clustered(1000, 16, 15)
        index = Index(16, "int8", ann="hnsw")
        index.add(x)
        assert _compiled(index, x[0], 3) is None
        assert index.search(x[3], top_k=1).ids == [3]
    finally:
        ann.compiled_search.cache_clear()


def test_it_compiles_where_numba_can_write_no_cache(tmp_path):
    """A read-only install: numba finds no cache location and refuses cache=True when the functions are defined; the
    module then compiles them in the process instead (a root process can write anywhere, so the locations numba
    tries are made impossible: __pycache__ a file, the user cache dir under a file)."""
    source = Path(ann.compiled_search().__file__)
    (tmp_path / "pkg").mkdir()
    shutil.copy(source, tmp_path / "pkg" / "graph_search_copy.py")
    (tmp_path / "pkg" / "__pycache__").write_text("not a directory")
    (tmp_path / "file").write_text("")
    script = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, sys.argv[1])
        import graph_search_copy as copy
        from tinyhpd.index import Index
        rng = np.random.default_rng(0)
        index = Index(16, "int8", ann="hnsw")
        index.add(rng.standard_normal((500, 16)))
        search, constants, _ = index._ann._compiled_state()
        q = rng.standard_normal(16)
        rows, scores = copy.search_one(q, *constants, 16, 5, np.zeros(500, np.uint8), 1)
        want = index.search_rows(q, 5)
        assert (rows == want[0][0]).all(), (rows, want)
        assert type(copy.search_one._cache).__name__ == "NullCache"  # compiled without a disk cache
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "file" / "cache")  # under a file: numba's user cache dir cannot be made
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pkg")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
    assert not list((tmp_path / "pkg").glob("**/*.nbi"))  # nothing cached beside the source
