"""The encode API: shapes, types, edge cases, batch/order invariance, thread safety."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tinyhpd
from helpers import EDGE_CASES


@pytest.fixture(scope="module")
def model(hpd_new_path):
    return tinyhpd.load(hpd_new_path)




@pytest.fixture(scope="module")
def texts(stsb_test_sentences):
    return stsb_test_sentences[:150] + EDGE_CASES


def test_str_gives_a_vector(model):
    v = model.encode("one sentence")
    assert v.shape == (128,) and v.dtype == np.float32


@pytest.mark.parametrize("kind", [list, tuple, np.array, iter])
def test_iterables_give_a_matrix(model, kind):
    items = ["a", "b c", "d e f"]
    out = model.encode(kind(items))
    assert out.shape == (3, 128) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model.encode(items))


def test_empty_list_gives_zero_rows(model):
    out = model.encode([])
    assert out.shape == (0, 128) and out.dtype == np.float32


def test_non_string_item_is_a_type_error_naming_index_and_type(model):
    with pytest.raises(TypeError, match=r"sentences\[2\] is int"):
        model.encode(["a", "b", 3])


def test_none_is_a_type_error(model):
    with pytest.raises(TypeError, match="iterable of str"):
        model.encode(None)


def test_bad_batch_size_is_a_value_error(model):
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["a"], batch_size=0)


def test_empty_and_whitespace_strings_are_valid(model):
    out = model.encode(["", " ", "\t\n"])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # all three are just [CLS] [SEP]


# Batch and order invariance at 1e-6 are checked on the real model. (float32 BLAS results depend on the matrix
# shapes: on the random HPD-shaped model, whose outputs are O(1), PyTorch itself varies by ~1.2e-6 with batch size.)









def test_normalize_embeddings_gives_unit_vectors(model, texts):
    out = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    raw = model.encode(texts)
    np.testing.assert_allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_convert_to_numpy_false_gives_a_list_of_vectors(model):
    out = model.encode(["a", "b"], convert_to_numpy=False)
    assert isinstance(out, list) and len(out) == 2 and out[0].shape == (128,)


def test_concurrent_calls_match_serial_calls(model, texts):
    serial = [model.encode(texts[i::4], batch_size=8) for i in range(4)]  # same batches: only threads differ
    results: dict = {}

    def work(i):
        results[i] = model.encode(texts[i::4], batch_size=8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert np.abs(results[i] - serial[i]).max() <= 1e-6


def test_long_inputs_are_truncated_not_rejected(model):
    ids = model.tokenize(["word " * 5000])
    assert len(ids[0]) == model.max_seq_length == 256
    assert np.isfinite(model.encode("word " * 5000)).all()


def test_model_exposes_sizes_and_a_readable_repr(model, hpd_new_path):
    assert model.embedding_dim == 128 and model.max_seq_length == 256
    r = repr(model)
    assert str(hpd_new_path) in r and "BERT(L4 H312 A12 I1200)" in r and "Dense(312->128 Tanh)" in r




def test_top_level_encode_uses_and_caches_a_model(hpd_new_path, model):
    a = tinyhpd.encode(["a b c"], model=str(hpd_new_path))
    b = tinyhpd.encode(["a b c"], model=str(hpd_new_path))
    np.testing.assert_array_equal(a, model.encode(["a b c"]))
    np.testing.assert_array_equal(a, b)


def test_progress_bar_goes_to_stderr(model, capsys):
    model.encode(["a"] * 50, show_progress_bar=True, batch_size=10)
    assert "50/50" in capsys.readouterr().err


def test_public_surface():
    assert set(tinyhpd.__all__) >= {"Model", "load", "encode"}
    for name in tinyhpd.__all__:
        assert hasattr(tinyhpd, name)
