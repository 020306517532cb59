"""Storage codecs (tinyhpd/index/codecs.py) and score kernels (tinyhpd/index/kernels.py)."""
import pickle
from functools import partial

import numpy as np
import pytest

from tinyhpd.index import Index, kernels
from tinyhpd.index.codecs import CODECS, BinaryCodec, Float16Codec, Int8Codec


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_every_float16_bit_pattern_scores_as_its_value():
    """All 63,488 finite float16 values (subnormals, both zeros, the largest) go through the bit-shift conversion:
    each 1-hot query reads back exactly the float16 value."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    finite = values[np.isfinite(values)]
    d = 8
    codes = np.zeros((len(finite) // d * d,), np.float16)
    codes[:] = finite[: codes.size]
    codes = codes.reshape(-1, d)
    scratch = kernels.Scratch()
    for j in range(d):
        q = np.zeros((1, d))
        q[0, j] = 1.0
        got = kernels.f16_scores(kernels.f16_query(q), codes, scratch)[0]
        np.testing.assert_array_equal(got, codes[:, j].astype(np.float32))


def test_scratch_buffers_of_different_purposes_never_share_memory():
    scratch = kernels.Scratch()
    a = scratch.get("one", np.float64, 4, 8, least_rows=16)
    b = scratch.get("two", np.float64, 4, 8, least_rows=16)  # same dtype and shape, another purpose
    assert not np.shares_memory(a, b)
    again = scratch.get("one", np.float64, 10, 8)  # large enough: reused
    assert np.shares_memory(a, again) and again.shape == (10, 8)
    wider = scratch.get("one", np.float64, 2, 9)  # another column count: a new buffer
    assert wider.shape == (2, 9) and not np.shares_memory(a, wider)


@pytest.mark.parametrize("nq", [1, 3, 40])
def test_float16_and_int8_chunk_scores_within_their_bound(nq):
    d = 96
    x = _unit(3000, d, 1)
    q = _unit(nq, d, 2)
    for name in ("float16", "int8", "float32"):
        codec = CODECS[name](d)
        codec.calibrate(x)
        codes, _ = codec.encode(x)
        got = codec.scores(codec.prepare(q), codes, kernels.Scratch()).astype(np.float64)
        want = q @ codec.decode(codes, np.float64).T
        assert got.shape == (nq, len(x))
        assert np.abs(got - want).max() <= codec.error_bound(), name


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_into_a_buffer_gives_the_same_values(name, dtype):
    """decode(..., out=buffer) (the rescoring's reused buffers) writes the values decode returns, into the buffer."""
    codec = CODECS[name](13)
    x = _unit(40, 13, 7)
    codec.calibrate(x)
    codes, _ = codec.encode(x)
    want = codec.decode(codes, dtype)
    out = np.full((40, 13), np.nan, dtype=dtype)
    got = codec.decode(codes, dtype, out=out)
    assert got is out and want.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_int8_float64_decode_follows_a_new_calibration():
    """The float64 copies of scale and offset are made once, and again when the calibration changes."""
    codec = Int8Codec(16)
    codec.calibrate(_unit(300, 16, 8))
    codes, _ = codec.encode(_unit(5, 16, 9))
    first = codec.decode(codes, np.float64)
    np.testing.assert_array_equal(first, codes * codec.scale.astype(np.float64) + codec.offset.astype(np.float64))
    codec.calibrate(3 * _unit(300, 16, 10))  # other rows: other parameters
    again = codec.decode(codes, np.float64)
    assert not np.array_equal(again, first)
    np.testing.assert_array_equal(again, codes * codec.scale.astype(np.float64) + codec.offset.astype(np.float64))
    signed = Int8Codec(16)
    signed.restore(codec.tensors(), {"int8": codec.manifest_part()}, "here")
    signed.decode(codes, np.float64)
    unsigned = signed.from_signed(codes.view(np.int8))  # format 1 layout: the offset changes in place of the codes
    np.testing.assert_array_equal(signed.decode(unsigned, np.float64),
                                  unsigned * signed.scale.astype(np.float64) + signed.offset.astype(np.float64))
    assert "_wide" not in pickle.loads(pickle.dumps(signed)).__dict__  # derived, not pickled


def test_int8_codec_saves_and_restores_its_calibration():
    x = _unit(500, 16, 3)
    codec = Int8Codec(16)
    codec.calibrate(x)
    again = Int8Codec(16)
    again.restore(codec.tensors(), {"int8": codec.manifest_part()}, "here")
    np.testing.assert_array_equal(again.scale, codec.scale)
    assert again.calibration_count == 500
    with pytest.raises(ValueError, match="here: tensor 'offset' is missing"):
        Int8Codec(16).restore({"scale": codec.scale}, {}, "here")
    with pytest.raises(ValueError, match="scales positive"):
        Int8Codec(16).restore({"scale": -codec.scale, "offset": codec.offset}, {}, "here")


def test_int8_calibration_clips_the_most_extreme_share_and_keeps_the_extent(monkeypatch):
    """k = floor(CALIBRATION_TAIL n) components per side and dimension fall outside the code range (here 1% of 1,000
    rows, found over 64-row blocks); the extent is the minimum and maximum; the calibration rows themselves are not
    counted as clipped, a vector beyond the extent is."""
    from tinyhpd.index import codecs
    from tinyhpd.index.checks import unit_rows

    monkeypatch.setattr(codecs, "CALIBRATION_TAIL", 0.01)
    monkeypatch.setattr(codecs, "CALIBRATION_BLOCK_ROWS", 64)
    x = np.random.default_rng(4).standard_normal((1000, 6)) * np.array([1, 2, 3, 1, 1, 5])
    unit = np.concatenate([unit_rows(x[s:s + 64], s, "x") for s in range(0, 1000, 64)])
    codec = Int8Codec(6)
    codec.calibrate(x)
    ordered = np.sort(unit, axis=0)
    np.testing.assert_array_equal(codec.offset, ordered[10].astype(np.float32))
    np.testing.assert_allclose(codec.offset + 255.0 * codec.scale.astype(np.float64), ordered[-11], rtol=1e-6)
    lo, hi = codec.extent
    assert (lo <= ordered[0]).all() and (hi >= ordered[-1]).all()  # float32, rounded outward
    np.testing.assert_allclose(lo, ordered[0], rtol=1e-6)
    codes, clipped = codec.encode(unit)
    assert clipped == 0
    assert (codes == 0).sum(axis=0).min() >= 10  # the tails sit on the end codes
    beyond = unit[:1].copy()
    beyond[0, 5] = hi[5] + 1e-3
    assert codec.encode(beyond)[1] == 1
    assert codec.manifest_part()["calibration_tail"] == 0.01


def test_int8_extent_survives_save_and_load_and_old_calibrations_use_their_range(tmp_path, monkeypatch):
    import warnings
    from pathlib import Path

    from tinyhpd.index import codecs

    monkeypatch.setattr(codecs, "CALIBRATION_TAIL", 0.01)
    x = _unit(2000, 8, 5)
    index = Index(8, "int8")
    index.add(x)
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", verify=True)
    for a, b in zip(loaded.codec.extent, index.codec.extent):
        np.testing.assert_array_equal(a, b)
    assert loaded.manifest()["int8"]["calibration_tail"] == 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.add(x[:50], ids=[f"again{i}" for i in range(50)])  # tails: clipped by design, no warning
    # a folder written before the extent was kept (format 1, by the Index of commit 7dd828a): its range is its extent
    old = Index.load(Path(__file__).parent / "data" / "index_format1" / "int8")
    assert old.manifest()["int8"]["calibration_tail"] == 0.0
    lo, hi = old.codec.extent
    np.testing.assert_allclose(lo, old.codec.offset - 0.5 * old.codec.scale.astype(np.float64))
    outside = np.zeros((1, 12))
    outside[0, int(np.argmax(hi))] = 1.0
    with pytest.warns(RuntimeWarning, match="clipped"):
        old.add(outside, ids=["outside"])


def test_binary_codec_decodes_to_sign_vectors():
    x = _unit(10, 13, 4)
    codec = BinaryCodec(13)
    codes, _ = codec.encode(x)
    assert codes.shape == (10, 2)
    np.testing.assert_allclose(codec.decode(codes, np.float64), np.where(x > 0, 1, -1) / np.sqrt(13))
    assert not codec.exact and Float16Codec(4).exact


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_threads_give_the_single_thread_answer(monkeypatch, dtype):
    """The corpus split between threads (forced on a small corpus) returns the same rows and scores."""
    x = _unit(5000, 32, 5)
    x[4000] = x[10]  # an exact tie across the split: the earlier row wins in both
    q = _unit(3, 32, 6)
    q[0] = x[10]
    one = Index(32, dtype, threads=1)
    one.add(x)
    many = Index(32, dtype, threads=3)
    many.add(x)
    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 1000)
    assert len(kernels.split_rows(5000, 3)) == 3
    r1, s1 = one.search_rows(q, 7)
    r3, s3 = many.search_rows(q, 7)
    np.testing.assert_array_equal(r1, r3)
    np.testing.assert_array_equal(s1, s3)
    assert r3[0, 0] == 10
    brute = q @ many.vectors(dtype=np.float64).T
    np.testing.assert_allclose(s3, -np.sort(-brute, axis=1)[:, :7], atol=1e-12)


def test_threads_argument_is_checked():
    with pytest.raises(ValueError, match="threads must be None or a positive integer"):
        Index(4, threads=0)


def test_from_codes_is_the_public_way_in():
    x = _unit(20, 8, 7)
    codec = Int8Codec(8)
    codec.calibrate(x)
    codes, _ = codec.encode(x)
    index = Index.from_codes(codec, codes, [f"d{i}" for i in range(20)], next_id=5)
    assert index.search(x[3], top_k=1).ids == ["d3"]
    with pytest.raises(ValueError, match="calibrated"):
        Index.from_codes(Int8Codec(8), codes, list(range(20)))
    with pytest.raises(ValueError, match="id .* is not unique"):
        Index.from_codes(codec, codes, [1] * 20)
    with pytest.raises(ValueError, match="19 ids for 20 vectors"):
        Index.from_codes(codec, codes, list(range(19)))
    with pytest.raises(ValueError, match=r"codes must be uint8 of shape \(n, 8\)"):
        Index.from_codes(codec, codes.astype(np.float32), list(range(20)))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "binary"])
def test_indexes_pickled_by_0_2_unpickle_and_search(dtype):
    """tests/data/index_pickles: pickles written by the Index of commit 2de6d1e (make_files.py there)."""
    import pickle
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "index_pickles"
    old = pickle.loads((folder / f"{dtype}.pickle").read_bytes())
    x = np.load(folder / "vectors.npy")
    fresh = Index(12, dtype)
    fresh.add(x, ids=[f"d{i}" for i in range(40)])
    assert old.dtype == dtype and old.codec.name == dtype and len(old) == 40
    # int8 codes were signed then: converted (code + 128, offset - 128 scale), equal up to float32 rounding
    check = np.testing.assert_array_equal if dtype != "int8" else partial(np.testing.assert_allclose, atol=1e-6)
    check(old.vectors(), fresh.vectors())
    assert old._codes.dtype == fresh.codec.storage
    for a, b in zip(old.search(x[:5], top_k=3), fresh.search(x[:5], top_k=3)):
        assert a.ids == b.ids
        check(a.scores, b.scores)
    old.add(x[:2], ids=["n0", "n1"])  # and it keeps working
    assert old.search(x[0], top_k=2).ids[0] in ("d0", "n0")


@pytest.mark.parametrize("mmap", [True, False])
def test_format_1_folders_load_and_search(mmap, tmp_path):
    """tests/data/index_format1: folders saved by the Index of commit 7dd828a (format 1: signed int8 codes; make_files.py
    there). They load (int8 converted into memory), search like a fresh index and save again in format 2."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    x = np.load(data / "index_pickles" / "vectors.npy")
    for dtype in ("int8", "float16"):
        old = Index.load(data / "index_format1" / dtype, mmap=mmap, verify=True)
        fresh = Index(12, dtype)
        fresh.add(x, ids=[f"d{i}" for i in range(40)])
        np.testing.assert_allclose(old.vectors(), fresh.vectors(), atol=1e-6)
        for a, b in zip(old.search(x[:5], top_k=3), fresh.search(x[:5], top_k=3)):
            assert a.ids == b.ids
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        old.save(tmp_path / dtype)
        again = Index.load(tmp_path / dtype)
        assert again.manifest()["format_version"] == 2 and again._codes.dtype == fresh.codec.storage
        np.testing.assert_array_equal(again.vectors(), old.vectors())
