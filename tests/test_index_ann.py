"""ANN indexes (tinyhpd/index/ann.py through Index(..., ann="hnsw")): recall on real embeddings, parameters chosen
from the target, add/remove, save/load (memory-mapped or not), verify, pickling, a damaged or foreign graph."""
import json
import pickle
import shutil
import warnings

import numpy as np
import pytest

from helpers import need
from tinyhpd.index import Index
from tinyhpd.index import ann
from tinyhpd.index.ann import GRAPH

need("faiss")


def _recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_recall_target_met_on_real_queries(real_embeddings, dtype, monkeypatch):
    corpus, queries = real_embeddings
    exact = Index(corpus.shape[1], "float32")
    exact.add(corpus)
    truth, _ = exact.search_rows(queries, 10)
    index = Index(corpus.shape[1], dtype, ann="hnsw", target_recall=0.95)
    index.add(corpus)
    measured = index.ann_info["measured"]
    assert measured["recall"] >= 0.975 and measured["sample"] == 500 and measured["required"] == 0.975
    rows, scores = index.search_rows(queries, 10)
    assert _recall(rows, truth) >= 0.95, (measured, _recall(rows, truth))
    # scores are the exact path's scores of the same rows (rescored from the stored codes): to ~1e-16 in compiled code
    # (graph_search.py: the order of one sum), to the last bit through faiss's search
    ex_rows, ex_scores = index.search_rows(queries, 10, exact=True)
    same = rows == ex_rows
    np.testing.assert_allclose(scores[same], ex_scores[same], rtol=0, atol=1e-15)
    monkeypatch.setattr(ann, "USE_COMPILED_SEARCH", False)
    rows, scores = index.search_rows(queries, 10)
    same = rows == ex_rows
    assert same.mean() > 0.5  # (places where ANN and exact agree: not a vacuous comparison)
    np.testing.assert_array_equal(scores[same], ex_scores[same])


def test_a_higher_target_gets_a_larger_expansion(real_embeddings):
    corpus, _ = real_embeddings
    low = Index(corpus.shape[1], "int8", ann="hnsw", target_recall=0.5)
    low.add(corpus)
    high = Index(corpus.shape[1], "int8", ann="hnsw", target_recall=0.999)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0.999 may be out of reach: the best setting is kept
        high.add(corpus)
    lo, hi = low.ann_info, high.ann_info
    assert (hi["connectivity"], hi["expansion_search"] * hi["candidates_per_result"]) > \
        (lo["connectivity"], lo["expansion_search"] * lo["candidates_per_result"])
    assert hi["measured"]["recall"] > lo["measured"]["recall"]


def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    return centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, d))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "binary"])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_verify_and_pickle_give_the_same_answers(tmp_path, dtype, mmap):
    x = _clustered(3000, 24, 1)
    q = _clustered(20, 24, 2)
    index = Index(24, dtype, ann="hnsw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 24 sign bits cannot reach recall 0.95: best kept
        index.add(x, ids=[f"doc{i}" for i in range(3000)])
    hits = index.search(q, top_k=5)
    index.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["ann"]["kind"] == "hnsw" and GRAPH in manifest["files"] and GRAPH in manifest["sha256"]
    loaded = Index.load(tmp_path / "ix", mmap=mmap, verify=True)
    assert loaded.ann == "hnsw" and loaded.ann_info["expansion_search"] == index.ann_info["expansion_search"]
    again = pickle.loads(pickle.dumps(loaded))
    for other in (loaded, again):
        for a, b in zip(hits, other.search(q, top_k=5)):
            assert a.ids == b.ids
            np.testing.assert_array_equal(a.scores, b.scores)
    # a loaded (memory-mapped) index still takes adds and removals
    loaded.add(x[:3] * 1.0001, ids=["new0", "new1", "new2"])
    assert loaded._ann._mapped is False  # copied into memory once, not again on every change
    loaded.remove(["doc0", "new1"])
    assert loaded.search(x[1], top_k=1).ids == ["doc1"]
    assert loaded.search(x[2] * 1.0001, top_k=2).ids[0] in ("doc2", "new2")


def test_remove_renumbers_the_graph_and_results_stay_exact_rescored():
    x = _clustered(2000, 16, 3)
    index = Index(16, "float32", ann="hnsw")
    index.add(x)
    gone = list(range(0, 2000, 3))
    index.remove(gone)
    assert len(index) == 2000 - len(gone)
    ann.check_links(index._ann._index.hnsw, len(index), "after remove")  # ids in range, lists consistent
    rows, scores = index.search_rows(x[1::3], 1)  # each query is a kept vector: it should find itself
    found_self = np.array([index.ids[r] for r in rows[:, 0].tolist()]) == np.arange(1, 2000, 3)
    assert found_self.mean() >= 0.99  # keys renamed wrongly would send nearly every query elsewhere
    np.testing.assert_allclose(scores[found_self, 0], 1.0, atol=1e-6)
    q = _clustered(30, 16, 4)
    got, _ = index.search_rows(q, 10)
    want, _ = index.search_rows(q, 10, exact=True)
    assert _recall(got, want) >= 0.9
    index.add(x[:5])  # default ids continue past every id ever used
    assert index.ids[-5:] == list(range(2000, 2005))


@pytest.mark.parametrize("dtype", ["int8", "float16", "binary"])
def test_each_addition_reaches_faiss_in_one_add_a_large_one_through_a_temporary_file(monkeypatch, tmp_path, dtype):
    # faiss links the rows of one add highest level first: parts make a worse graph, so an addition is one add; float
    # input past GRAPH_INPUT_IN_MEMORY (here 100 rows of 16-d) is decoded into a temporary file, in 30-row parts
    import tempfile

    import faiss

    monkeypatch.setattr(ann, "GRAPH_INPUT_IN_MEMORY", 4 * 16 * 100)
    monkeypatch.setattr(ann, "GRAPH_INPUT_PART", 4 * 16 * 30)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    adds = []
    real_add = ann._faiss_add

    def spy(index, x):
        adds.append((x.shape, isinstance(x, np.memmap), sorted(p.name for p in tmp_path.iterdir())))
        real_add(index, x)

    monkeypatch.setattr(ann, "_faiss_add", spy)
    x = _clustered(1050, 16, 7)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one thread links in a fixed order: the two graphs below can be compared link by link
    try:
        index = Index(16, dtype, ann="hnsw", calibration=x if dtype == "int8" else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 16 sign bits cannot reach the target: best kept
            index.add(x[:1000])
            index.add(x[1000:])
            monkeypatch.setattr(ann, "GRAPH_INPUT_IN_MEMORY", 1 << 29)
            in_memory = Index(16, dtype, ann="hnsw", calibration=x if dtype == "int8" else None)
            in_memory.add(x[:1000])
            in_memory.add(x[1000:])
    finally:
        faiss.omp_set_num_threads(threads)
    wide = 2 if dtype == "binary" else 16  # faiss's input: packed sign bits (never a file) or float32 rows
    assert [shape for shape, _, _ in adds] == [(1000, wide), (50, wide)] * 2
    assert [mapped for _, mapped, _ in adds] == [dtype != "binary", False, False, False]
    assert all(files == [] for _, _, files in adds) and list(tmp_path.iterdir()) == []  # an unnamed file, now gone
    assert len(index._ann) == 1050
    ann.check_links(index._ann._index.hnsw, len(index), "after large adds")
    for got, want in zip(index._ann._tables(), in_memory._ann._tables()):  # the file held exactly the decoded rows
        np.testing.assert_array_equal(got, want)
    whole = Index(16, dtype, calibration=x if dtype == "int8" else None)
    whole.add(x)
    np.testing.assert_array_equal(index.vectors(), whole.vectors())  # every row's codes in place, in order
    if dtype != "binary":
        rows, scores = index.search_rows(x, 1)
        assert (rows[:, 0] == np.arange(1050)).mean() >= 0.99  # each row finds itself


@pytest.mark.parametrize("dtype", ["float32", "int8", "binary"])
def test_a_large_addition_is_stored_grouped_by_cluster_and_each_id_keeps_its_vector(monkeypatch, tmp_path, dtype):
    # the rows of an addition of LOCALITY_MIN_ROWS or more (here 1,000) are stored in k-means cluster order (here about
    # 100 rows a cluster), similar rows side by side for the graph search; each id follows its row
    monkeypatch.setattr(ann, "LOCALITY_MIN_ROWS", 1000)
    monkeypatch.setattr(ann, "LOCALITY_ROWS_PER_CLUSTER", 100)
    x = _clustered(3000, 24, 9)
    given = [f"doc{i}" for i in range(3000)]

    def built():
        index = Index(24, dtype, ann="hnsw")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 24 sign bits cannot reach the target: best kept
            index.add(x, ids=given)
        return index

    index = built()
    assert sorted(index.ids) == sorted(given) and index.ids != given
    assert built().ids == index.ids  # seeded: the same rows give the same order
    plain = Index(24, dtype)
    plain.add(x, ids=given)
    np.testing.assert_array_equal(index.vectors(given), plain.vectors())  # every id keeps its own codes
    # side by side: consecutive rows come from one of _clustered's 50 centres far more often than in the order given
    rng = np.random.default_rng(9)
    rng.standard_normal((50, 24))  # _clustered's draws: the centres, then each row's centre
    centre_of = dict(zip(given, rng.integers(0, 50, 3000).tolist()))

    def runs(ids):
        centres = np.array([centre_of[i] for i in ids])
        return np.mean(centres[1:] == centres[:-1])

    # (30 k-means clusters over 50 centres: some clusters hold two)
    assert runs(index.ids) > 0.5 and runs(given) < 0.1, (runs(index.ids), runs(given))
    if dtype != "binary":  # the exact path over the stored rows: the ids and scores of the index in the given order
        q = _clustered(20, 24, 10)
        for a, b in zip(index.search(q, top_k=5, exact=True), plain.search(q, top_k=5)):
            assert a.ids == b.ids
            np.testing.assert_array_equal(a.scores, b.scores)
        found = [h.ids[0] for h in index.search(x[:200], top_k=1)]
        assert np.mean([f == g for f, g in zip(found, given)]) >= 0.99  # the graph finds each row by its own vector
    # a smaller addition keeps the order given, after the stored rows; save and load keep the stored order
    index.add(x[:10] * 1.001, ids=[f"new{i}" for i in range(10)])
    assert index.ids[-10:] == [f"new{i}" for i in range(10)]
    index.save(tmp_path / "ix")
    assert Index.load(tmp_path / "ix").ids == index.ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        default = Index(24, dtype, ann="hnsw")
        default.add(x)  # default ids 0..n-1 out of order stay in int arrays (ids.py), not a list and dict
    assert default._ids.compact and sorted(default.ids) == list(range(3000)) != default.ids


def test_no_room_for_the_graph_input_file_is_an_error_naming_the_directory_and_the_index_is_unchanged(
        monkeypatch, tmp_path):
    import errno
    import os
    import tempfile

    monkeypatch.setattr(ann, "GRAPH_INPUT_IN_MEMORY", 4 * 16 * 100)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x = _clustered(400, 16, 8)
    index = Index(16, "int8", ann="hnsw", calibration=x)
    index.add(x[:50])  # in memory
    before = index.search_rows(x[:5], 3)

    room = os.posix_fallocate

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"350 rows needs 0\.0 GB in a temporary file in .*" + tmp_path.name +
                       r".*No space left on device.*TMPDIR"):
        index.add(x[50:])
    assert len(index) == 50 and len(index._ann) == 50 and list(tmp_path.iterdir()) == []
    for got, want in zip(index.search_rows(x[:5], 3), before):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(os, "posix_fallocate", room)
    index.add(x[50:])  # room again: the same addition goes through the file
    assert len(index) == 400 and list(tmp_path.iterdir()) == []
    rows, _ = index.search_rows(x, 1)
    assert (rows[:, 0] == np.arange(400)).mean() >= 0.99


def test_expansion_for_one_call_overrides_the_tuned_one(real_embeddings):
    corpus, queries = real_embeddings
    index = Index(corpus.shape[1], "int8", ann="hnsw")
    index.add(corpus)
    truth, _ = index.search_rows(queries, 10, exact=True)
    tuned = index.ann_info["expansion_search"]
    low = _recall(index.search_rows(queries, 10, expansion=10)[0], truth)
    high = _recall(index.search_rows(queries, 10, expansion=1024)[0], truth)
    assert low < high and high >= 0.99 and index.ann_info["expansion_search"] == tuned  # the tuned one is kept
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(ValueError, match="expansion must be None or a positive int"):
            index.search_rows(queries[:1], 10, expansion=bad)


@pytest.mark.parametrize("dtype", ["int8", "binary", "binary, faiss < 1.14"])
def test_threads_searching_one_index_at_different_expansions_do_not_mix_them(dtype, monkeypatch):
    # the expansion travels with each call (faiss search parameters), not through the graph's own setting, which one
    # thread's call could change under another's: each thread's answers must be those of its expansion searched alone.
    # faiss before 1.14 (the newest for Python 3.9) refuses parameters for binary graphs: the graph's own setting is
    # then set and searched with under a lock, with the same answers
    from concurrent.futures import ThreadPoolExecutor

    if dtype.endswith("< 1.14"):
        dtype = "binary"
        monkeypatch.setattr(ann, "binary_search_takes_parameters", lambda faiss: False)

    x = _clustered(6000, 64, 11)
    q = _clustered(200, 64, 12)
    index = Index(64, dtype, ann="hnsw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 64 sign bits may not reach the target: best kept
        index.add(x)
    expansions = (10, 400)
    alone = {ef: index.search_rows(q, 10, expansion=ef)[0] for ef in expansions}
    assert not np.array_equal(alone[10], alone[400])  # the two settings are told apart by their answers

    def one(ef):
        return ef, [index.search_rows(v[None], 10, expansion=ef)[0][0] for v in q]

    with ThreadPoolExecutor(4) as pool:
        for ef, rows in pool.map(one, [expansions[i % 2] for i in range(16)]):
            np.testing.assert_array_equal(np.array(rows), alone[ef], err_msg=f"expansion {ef}")


def test_searches_beside_saves_and_pickles_keep_their_answers(tmp_path):
    """save and pickling only read the index (an int8 graph is saved in its search form, not switched back to its
    linking form for the file), so threads searching meanwhile get the same answers, and the copies search alike."""
    import threading

    x = _clustered(4000, 32, 21)
    q = _clustered(100, 32, 22)
    index = Index(32, "int8", ann="hnsw")
    index.add(x)
    want = index.search_rows(q, 10, expansion=32)
    stop, seen = threading.Event(), []

    def searching():
        while not stop.is_set():
            seen.append(index.search_rows(q, 10, expansion=32))

    workers = [threading.Thread(target=searching) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for i in range(6):
            index.save(tmp_path / f"copy{i % 2}")
            copy = pickle.loads(pickle.dumps(index))
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert len(seen) >= 2
    for rows, scores in seen:
        np.testing.assert_array_equal(rows, want[0])
        np.testing.assert_array_equal(scores, want[1])
    for other in (Index.load(tmp_path / "copy0"), copy):
        got = other.search_rows(q, 10, expansion=32)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_binary_graphs_search_the_same_with_and_without_faiss_search_parameters(monkeypatch):
    """faiss 1.13 raises "search params not supported" for IndexBinaryHNSW (Python 3.9 gets no newer faiss): its
    version is read, and the graph's own efSearch is used instead, with the same rows at every expansion."""
    import faiss

    x = _clustered(3000, 64, 13)
    q = _clustered(50, 64, 14)
    index = Index(64, "binary", ann="hnsw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        index.add(x)
    with_parameters = {ef: index.search_rows(q, 10, expansion=ef) for ef in (10, 40, 400)}
    assert ann.binary_search_takes_parameters(faiss) == (tuple(map(int, faiss.__version__.split(".")[:2])) >= (1, 14))
    monkeypatch.setattr(faiss, "__version__", "1.13.0")
    assert not ann.binary_search_takes_parameters(faiss)
    for ef, (rows, scores) in with_parameters.items():
        got_rows, got_scores = index.search_rows(q, 10, expansion=ef)
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_array_equal(got_scores, scores)
    monkeypatch.setattr(faiss, "__version__", "1.14.0")
    assert ann.binary_search_takes_parameters(faiss)


def test_small_index_and_top_k_larger_than_the_graph_answer():
    index = Index(8, "float16", ann="hnsw")
    x = _clustered(7, 8, 5)
    index.add(x)
    hits = index.search(x[0], top_k=50)
    assert sorted(hits.ids) == list(range(7)) and hits.ids[0] == 0


@pytest.fixture()
def saved(tmp_path):
    index = Index(16, "int8", ann="hnsw")
    index.add(_clustered(1500, 16, 6))
    index.save(tmp_path / "ix")
    return tmp_path / "ix"


def test_damaged_graph_is_an_error_naming_it(saved):
    graph = saved / GRAPH
    data = bytearray(graph.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # same size: only the checksum sees it
    graph.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{GRAPH}: content differs from the sha256"):
        Index.load(saved, verify=True)
    graph.write_bytes(bytes(data[:1000]))
    with pytest.raises(ValueError, match=f"{GRAPH}: size 1000 bytes, the manifest says"):
        Index.load(saved)


def test_damaged_links_are_an_error_not_a_crash(saved):
    """Without verify=True a damaged neighbour table is still caught (a walk outside the graph would crash)."""
    index = Index.load(saved, mmap=False)
    neighbors = index._ann._tables()[2]
    data = bytearray((saved / GRAPH).read_bytes())
    where = bytes(data).find(neighbors[:64].tobytes())
    assert where > 0
    data[where + 40:where + 44] = (10 ** 6).to_bytes(4, "little")  # a neighbour id past the 1500 nodes
    (saved / GRAPH).write_bytes(bytes(data))
    for mmap in (True, False):
        # faiss 1.15 checks the ids itself while reading; ann.check_links does for any version
        with pytest.raises(ValueError, match=f"{GRAPH}: (the graph cannot be read .*out of range|the graph links "
                                             "to nodes outside 0..1499)"):
            Index.load(saved, mmap=mmap)


def _swap_graph(saved, other):
    manifest = json.loads((saved / "manifest.json").read_text())
    shutil.copy(other / GRAPH, saved / GRAPH)  # another index's graph, sizes patched to match
    manifest["files"][GRAPH] = (saved / GRAPH).stat().st_size
    (saved / "manifest.json").write_text(json.dumps(manifest))


def _as_linked(path, codec_range):
    """Rewrite an int8 graph file as tinyhpd wrote it before the search quantizer: faiss QT_8bit over ``codec_range``
    (vmin per dimension, then vdiff: Int8Codec.faiss_range)."""
    faiss = ann.require_faiss()
    graph = faiss.read_index(str(path))
    sq = faiss.downcast_index(graph.storage).sq
    sq.qtype = faiss.ScalarQuantizer.QT_8bit
    sq.set_derived_sizes()
    faiss.copy_array_to_vector(np.asarray(codec_range, dtype=np.float32), sq.trained)
    faiss.write_index(graph, str(path))


def _patch_sizes(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"][GRAPH] = (saved / GRAPH).stat().st_size
    (saved / "manifest.json").write_text(json.dumps(manifest))


def test_int8_graph_is_searched_with_the_uniform_quantizer_over_the_same_codes(tmp_path):
    """int8 graphs are linked with the codec's range (true inner products) and searched with faiss's uniform 8-bit
    quantizer and a scaled query (ann.SEARCH_QUANTIZER): the same candidates, less decoding. Graphs saved in the
    linking form (as before) load, are converted and find the same rows; one linked over another calibration is an
    error naming the graph file."""
    faiss = ann.require_faiss()
    x = _clustered(3000, 24, 3)
    index = Index(24, "int8", ann="hnsw")
    index.add(x)
    sq = faiss.downcast_index(index._ann._index.storage).sq
    assert sq.qtype == faiss.ScalarQuantizer.QT_8bit_uniform
    q = _clustered(200, 24, 9)
    rows, scores = index.search_rows(q, 10, expansion=64)
    # the linking form, searched with the unscaled query, proposes the same rows
    linked = faiss.deserialize_index(faiss.serialize_index(index._ann._index))
    lsq = faiss.downcast_index(linked.storage).sq
    lsq.qtype = faiss.ScalarQuantizer.QT_8bit
    lsq.set_derived_sizes()
    faiss.copy_array_to_vector(index._codec.faiss_range(), lsq.trained)
    params = faiss.SearchParametersHNSW()
    params.efSearch = 64
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    proposed = linked.search(unit.astype(np.float32), 10, params=params)[1]
    assert np.mean(np.sort(proposed, axis=1) == np.sort(rows, axis=1)) > 0.99  # float32 rounding of near-ties only
    exact_rows, exact_scores = index.search_rows(q, 10, exact=True)
    same = (rows == exact_rows).all(axis=1)
    assert same.sum() >= 100  # and where the rows are the exact ones, so are the float64 scores (to ~1e-16: the
    np.testing.assert_allclose(scores[same], exact_scores[same], rtol=0, atol=1e-15)  # compiled search's sum order)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a few components outside the calibration, clipped
        index.add(_clustered(500, 24, 4))  # linking again after a search: back to the search form afterwards
    assert faiss.downcast_index(index._ann._index.storage).sq.qtype == faiss.ScalarQuantizer.QT_8bit_uniform
    index.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["ann"]["scalar_quantizer"] == "QT_8bit_uniform"
    want = index.search_rows(q, 10, expansion=64)
    _as_linked(tmp_path / "ix" / GRAPH, index._codec.faiss_range())  # a graph saved by the earlier code
    _patch_sizes(tmp_path / "ix")
    for mmap in (False, True):
        old = Index.load(tmp_path / "ix", mmap=mmap)
        got = old.search_rows(q, 10, expansion=64)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    wrong = index._codec.faiss_range().copy()
    wrong[0] += 0.01
    _as_linked(tmp_path / "ix" / GRAPH, wrong)
    _patch_sizes(tmp_path / "ix")
    with pytest.raises(ValueError, match=f"{GRAPH}: graph quantizer range differs"):
        Index.load(tmp_path / "ix")


@pytest.mark.parametrize("change, message", [
    (lambda part: part.update(connectivity=0), "'ann.connectivity' must be a positive integer; got 0"),
    (lambda part: part.update(expansion_search="64"), "'ann.expansion_search' must be a positive integer; got '64'"),
    (lambda part: part.pop("candidates_per_result"), "'ann.candidates_per_result' must be a positive integer; got None"),
    (lambda part: part.update(kind="ivf"), "the 'ann' part is not an HNSW description"),
    (lambda part: part.update(library="usearch"), "'ann.library' is 'usearch'"),
])
def test_a_damaged_ann_part_of_the_manifest_is_an_error_naming_the_manifest_and_key(tmp_path, change, message):
    index = Index(16, "float16", ann="hnsw")
    index.add(_clustered(300, 16, 5))
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["ann"])
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"manifest.json: {message}"):
        Index.load(tmp_path / "ix")


def test_int8_search_quantizer_with_another_range_is_damage(tmp_path):
    faiss = ann.require_faiss()
    index = Index(16, "int8", ann="hnsw")
    index.add(_clustered(1500, 16, 6))
    index.save(tmp_path / "ix")
    graph = faiss.read_index(str(tmp_path / "ix" / GRAPH))
    faiss.copy_array_to_vector(np.array([0.0, 254.0], np.float32), faiss.downcast_index(graph.storage).sq.trained)
    faiss.write_index(graph, str(tmp_path / "ix" / GRAPH))
    _patch_sizes(tmp_path / "ix")
    with pytest.raises(ValueError, match=rf"{GRAPH}: graph quantizer QT_8bit_uniform has range \[0.0, 254.0\]"):
        Index.load(tmp_path / "ix")


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_missing_or_foreign_graph_is_an_error_naming_it(tmp_path, dtype):
    index = Index(16, dtype, ann="hnsw")
    index.add(_clustered(1500, 16, 6))
    index.save(tmp_path / "ix")
    saved = tmp_path / "ix"
    fewer = Index(16, dtype, ann="hnsw")
    fewer.add(_clustered(1500, 16, 6)[:1400])  # int8: calibrated on other rows
    fewer.save(tmp_path / "fewer")
    _swap_graph(saved, tmp_path / "fewer")
    with pytest.raises(ValueError, match=f"{GRAPH}: the graph holds 1400 vectors, the index 1500"):
        Index.load(saved)
    calibration = {"calibration": _clustered(1500, 16, 6)} if dtype == "int8" else {}
    other = Index(16, dtype, ann="hnsw", **calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # int8: a few components outside the calibration, clipped
        other.add(_clustered(1500, 16, 7))  # as many rows, the same int8 calibration, other vectors
    other.save(tmp_path / "other")
    _swap_graph(saved, tmp_path / "other")
    with pytest.raises(ValueError, match=f"{GRAPH}: the graph's vectors differ from vectors.safetensors from row 0"):
        Index.load(saved)
    (saved / GRAPH).unlink()
    with pytest.raises(ValueError, match=f"{GRAPH}: missing"):
        Index.load(saved)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="ann must be None or one of hnsw"):
        Index(8, ann="ivf")
    with pytest.raises(ValueError, match="target_recall must be a number in"):
        Index(8, ann="hnsw", target_recall=1.5)


def test_cli_builds_an_ann_index_and_searches_it(tmp_path, capsys, shared_dir):
    from tinyhpd.cli import main

    lines = []
    with open(shared_dir / "data" / "distill" / "sentences.txt", encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if len(lines) == 400:
                break
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(lines), encoding="utf-8")
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "ix"), "--ann", "hnsw", "--quiet"]) == 0
    assert "HNSW graph: connectivity" in capsys.readouterr().out
    assert Index.load(tmp_path / "ix").ann == "hnsw"
    query = lines[17].strip()
    for extra in ([], ["--exact"]):
        assert main(["search", str(tmp_path / "ix"), query, "--top-k", "3", "--json"] + extra) == 0
        rows = json.loads(capsys.readouterr().out)
        assert rows[0]["id"] == 18 and rows[0]["score"] > 0.999
    # tuning on real example queries: at build, and later on the saved folder (kept with the index)
    asks = tmp_path / "asks.txt"
    asks.write_text("".join(lines[200:260]) + "\n\n", encoding="utf-8")  # blank lines are skipped
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "ix2"), "--ann", "hnsw", "--quiet",
                 "--tune-queries", str(asks)]) == 0
    assert "on 60 query vectors given by the caller" in capsys.readouterr().out
    assert main(["index", "tune", str(tmp_path / "ix"), "--queries", str(asks)]) == 0
    assert "60 query vectors given by the caller" in capsys.readouterr().out
    tuned = Index.load(tmp_path / "ix", verify=True)
    assert tuned.ann_info["measured"]["queries"] == "60 query vectors given by the caller"
    assert tuned.tune()["queries"] == "60 query vectors given by the caller"
    # errors name the problem
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "ix3"), "--tune-queries", str(asks)]) == 2
    assert "pass --ann hnsw too" in capsys.readouterr().err
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    assert main(["index", "tune", str(tmp_path / "ix"), "--queries", str(tmp_path / "blank.txt")]) == 2
    assert "blank.txt: the queries file holds no non-blank line" in capsys.readouterr().err
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "flat")]) == 0
    capsys.readouterr()
    assert main(["index", "tune", str(tmp_path / "flat"), "--queries", str(asks)]) == 2
    assert "has no graph (built without --ann hnsw): nothing to tune" in capsys.readouterr().err


def test_tuning_on_given_queries(real_embeddings):
    """tune(queries): parameters measured on real queries given by the caller (a query log), recorded as such; the
    target holds on other queries of the same kind."""
    corpus, queries = real_embeddings
    exact = Index(corpus.shape[1], "float32")
    exact.add(corpus)
    index = Index(corpus.shape[1], "int8", ann="hnsw")
    index.add(corpus)
    measured = index.tune(queries[:300])
    assert measured["queries"] == "300 query vectors given by the caller" and measured["recall"] >= 0.95
    assert index.ann_info["measured"] == measured
    held_out = queries[300:]
    rows, _ = index.search_rows(held_out, 10)
    assert _recall(rows, exact.search_rows(held_out, 10)[0]) >= 0.93  # 300 other queries: sampling noise
    with pytest.raises(ValueError, match="tuning queries have dimension 3"):
        index.tune(np.ones((2, 3)))


def test_tuning_queries_are_kept_for_the_later_tunings_saved_and_pickled(real_embeddings, tmp_path, monkeypatch):
    """Queries given to tune() stay with the index: the tuning when it has doubled measures on them again (not on
    midpoints), and they survive save/load and pickling; beyond TUNE_QUERIES_KEPT a sample of them is kept."""
    corpus, queries = real_embeddings
    index = Index(corpus.shape[1], "int8", ann="hnsw", calibration=corpus)
    index.add(corpus[:4000])
    assert index.ann_info["measured"]["queries"] == "midpoints of two random stored vectors"
    index.tune(queries[:300])
    index.add(corpus[4000:])  # doubled: tuned again, on the same 300 queries
    measured = index.ann_info["measured"]
    assert measured["size"] == 8000 and measured["queries"] == "300 query vectors given by the caller"
    assert measured["required"] == 0.95  # the target itself, not the midpoints' stricter one
    index.save(tmp_path / "ix")
    for other in (Index.load(tmp_path / "ix", mmap=True, verify=True), pickle.loads(pickle.dumps(index))):
        assert other.tune() == index.tune()  # the same kept queries (float32) measured on the same graph
    with pytest.raises(ValueError, match="tuning queries have dimension 3"):
        index.tune(np.ones((2, 3)))
    assert index.tune()["queries"] == "300 query vectors given by the caller"  # a refused call keeps the old ones
    monkeypatch.setattr(ann, "TUNE_QUERIES_KEPT", 100)
    assert index.tune(queries)["sample"] == 100


def test_damaged_tuning_queries_are_an_error_naming_them(real_embeddings, tmp_path):
    from safetensors.numpy import load_file, save_file

    corpus, queries = real_embeddings
    index = Index(corpus.shape[1], "int8", ann="hnsw", calibration=corpus)
    index.add(corpus[:2000])
    index.tune(queries[:50])
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / "vectors.safetensors"
    for bad, message in ((np.full((50, corpus.shape[1]), np.nan, np.float32), "contains NaN or infinity"),
                         (np.zeros((50, 7), np.float32), r"must be float32 \(m, 128\) with m >= 1; got float32 \[50, 7\]")):
        tensors = load_file(str(path))
        tensors["tuning_queries"] = bad
        save_file(tensors, str(path), metadata={"format": "tinyhpd-index", "dtype": "int8"})
        manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
        manifest["files"]["vectors.safetensors"] = path.stat().st_size
        (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=f"vectors.safetensors: tensor 'tuning_queries' {message}"):
            Index.load(tmp_path / "ix")


def test_build_measures_on_tune_queries_and_checks_them_before_encoding(monkeypatch):
    import tinyhpd
    from tinyhpd.index import index as index_mod

    model = tinyhpd.load(None)
    texts = [f"document number {i} is about topic {i % 7}" for i in range(300)]
    asks = ["which document is about topic 3?", "topic five", "a document", "number twelve"]
    built = Index.build(texts, model, dtype="int8", ann="hnsw", tune_queries=asks)
    assert built.ann_info["measured"]["queries"] == "4 query vectors given by the caller"
    vectors = model.encode(asks)
    again = Index.build(texts, model, dtype="int8", ann="hnsw", tune_queries=vectors)
    assert again.ann_info["measured"]["queries"] == "4 query vectors given by the caller"
    np.testing.assert_allclose(again._tuning_queries, built._tuning_queries, atol=1e-6)  # texts or their vectors
    encoded = []
    monkeypatch.setattr(index_mod, "encode_texts", lambda m, t, **kw: encoded.append(t) or model.encode(t))
    with pytest.raises(ValueError, match="query 1 is empty or blank"):
        Index.build(texts, model, ann="hnsw", tune_queries=["fine", "  "])
    with pytest.raises(ValueError, match="pass ann='hnsw' too"):
        Index.build(texts, model, tune_queries=asks)
    with pytest.raises(ValueError, match="tuning queries have dimension 5"):
        Index.build(texts, model, ann="hnsw", tune_queries=np.ones((2, 5)))
    assert encoded == []  # each refused before the corpus was encoded


def test_only_real_queries_raise_the_connectivity_and_the_rebuild_keeps_every_row(monkeypatch):
    """Midpoints below the target keep connectivity 16 (a warning says how to measure real queries); queries given
    to tune() below it raise the connectivity: the graph is rebuilt from the stored codes, every row exactly once."""
    from tinyhpd.index import ann

    monkeypatch.setattr(ann, "EXPANSIONS", (16,))  # the target is out of reach at 16
    x = _clustered(3000, 16, 8)
    index = Index(16, "float16", ann="hnsw", target_recall=1.0)
    index.reserve(10_000)
    with pytest.warns(RuntimeWarning, match=r"index.tune\(real query vectors\)"):
        index.add(x[:700])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for start in range(700, 3000, 700):
            index.add(x[start:start + 700])
        assert index.ann_info["connectivity"] == 16
        index.tune(_clustered(200, 16, 9))
    assert index.ann_info["connectivity"] == 32
    assert len(index._ann) == 3000
    rows, scores = index.search_rows(x[:50], 1)
    assert (rows[:, 0] == np.arange(50)).mean() >= 0.98
    assert np.isfinite(scores).all()


def test_faiss_then_onnxruntime_and_torch_in_one_process():
    """faiss brings its own OpenMP runtime; an ANN search followed by a distillation run (onnxruntime) and a reference
    check (torch) in one process must not crash (usearch 2.26, used before faiss, did: a segfault on `import
    onnxruntime`). Checked in a child process."""
    import subprocess
    import sys

    need("onnxruntime")
    need("torch")
    code = ("import numpy as np; from tinyhpd.index import Index\n"
            "i = Index(8, 'int8', ann='hnsw'); i.add(np.random.default_rng(0).standard_normal((300, 8)))\n"
            "i.search(np.ones(8), top_k=3)\n"
            "import onnxruntime, torch; print(onnxruntime.__version__, torch.ones(3).sum().item())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"


def test_build_refuses_a_bad_ann_setting_before_encoding():
    class Counting:
        embedding_dim, fingerprint, name_or_path, revision = 4, "0" * 64, "counting", None
        calls = 0

        def encode(self, texts, **kw):
            Counting.calls += 1
            return np.eye(4)[: len(texts)]

    with pytest.raises(ValueError, match="target_recall must be a number"):
        Index.build(["a", "b"], model=Counting(), ann="hnsw", target_recall=2.0)
    with pytest.raises(ValueError, match="ann must be None or one of hnsw"):
        Index.build(["a", "b"], model=Counting(), ann="ivf")
    assert Counting.calls == 0


def test_removals_survive_save_load_and_a_quarter_removed_rebuilds_the_graph(tmp_path):
    x = _clustered(2400, 16, 10)
    index = Index(16, "int8", ann="hnsw")
    index.add(x)
    index.remove(list(range(0, 2400, 10)))  # 10%: links renumbered in place
    assert index._ann.removed == 240 and index._ann.built_size == 2400
    index.save(tmp_path / "ix")
    for mmap in (True, False):
        loaded = Index.load(tmp_path / "ix", mmap=mmap, verify=True)
        q = _clustered(40, 16, 11)
        for a, b in zip(loaded.search(q, top_k=5), index.search(q, top_k=5)):
            assert a.ids == b.ids
    index.remove(list(range(1, 2400, 5)))  # past 25% of the rows at the last build: rebuilt from the codes
    assert index._ann.removed == 0 and index._ann.built_size == len(index) == 2400 - 240 - 480
    ann.check_links(index._ann._index.hnsw, len(index), "after the rebuild")
    rows, _ = index.search_rows(index.vectors(), 1)
    assert (rows[:, 0] == np.arange(len(index))).mean() >= 0.99


def test_a_missing_faiss_is_reported_when_the_index_is_made(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r"ann='hnsw' needs faiss-cpu: pip install 'tinyhpd\[ann\]'"):
        Index(4, ann="hnsw")
    with pytest.raises(ImportError, match="needs faiss-cpu"):
        Index.build(["a"], model=object(), ann="hnsw")
