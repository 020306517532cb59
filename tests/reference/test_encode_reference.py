"""encode against PyTorch sentence-transformers and the real all-MiniLM-L6-v2."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return tinyhpd.load(minilm_path)


@pytest.mark.parametrize("batch_size", [1, 128])
def test_hpd_shaped_model_keeps_parity_at_any_batch_size(model, hpd_new_path, texts, st_reference, batch_size):
    ref = st_reference(hpd_new_path).encode(texts, batch_size=32, convert_to_numpy=True)
    assert np.abs(model.encode(texts, batch_size=batch_size) - ref).max() <= 1e-5


def test_fingerprint_is_stable_and_distinguishes_models(model, hpd_old_path, minilm_path):
    assert len(model.fingerprint) == 64
    assert tinyhpd.load(hpd_old_path).fingerprint == model.fingerprint  # same weights, other file format
    assert tinyhpd.load(minilm_path).fingerprint != model.fingerprint


def test_results_do_not_depend_on_batch_size(minilm, texts):
    ref = minilm.encode(texts, batch_size=len(texts))
    for bs in (1, 7, 32):
        assert np.abs(minilm.encode(texts, batch_size=bs) - ref).max() <= 1e-6


def test_results_do_not_depend_on_input_order(minilm, texts):
    perm = np.random.default_rng(0).permutation(len(texts))
    a = minilm.encode(texts)
    b = minilm.encode([texts[i] for i in perm])
    assert np.abs(a[perm] - b).max() <= 1e-6


def test_single_string_equals_its_row_in_a_batch(minilm, texts):
    assert np.abs(minilm.encode(texts[3]) - minilm.encode(texts)[3]).max() <= 1e-6
