"""The fast forward (packing, grouped attention, in-place kernels, worker pieces) against the plain float64 reference
forward of tinyhpd/reference.py, on NumPy-built models: no torch anywhere."""
from __future__ import annotations

import numpy as np
import pytest

import tiny_models
import tinyhpd
from tinyhpd import attention, reference
from tinyhpd.checkpoints import read_safetensors

SENTS = ["A man is playing a guitar.", "two dogs run in the park", "", "a", "the cat sat on the mat " * 30,
         "Crème brûlée 🍕 日本語", "[CLS] literal [SEP] markers", "word " * 600]


def _reference_vectors(model, sents) -> np.ndarray:
    """Reference BERT + the model's own head settings, all in float64."""
    ids = model.tokenize(sents)
    tokens = reference.bert_forward(model._bert, model.config, ids)  # [B, L, H]
    x = reference.mean_pool(tokens, ids)
    for head in model._heads[1:]:
        x = np.tanh(x @ head.params.w.astype(np.float64) + head.params.b)
    return x


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return tinyhpd.load(tiny_models.build_new(tmp_path_factory.mktemp("fwd") / "m", arch=tiny_models.SMALL_ARCH,
                                              dense_out=24))


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    """Query/key weights scaled up so that one group's scores span far more than 80: the per-row softmax path."""
    from safetensors.numpy import save_file

    folder = tiny_models.build_new(tmp_path_factory.mktemp("fwd") / "sharp", arch=tiny_models.SMALL_ARCH,
                                   dense_out=24)
    t = {k: np.array(v) for k, v in read_safetensors(folder / "model.safetensors").items()}
    for k in t:
        if ".attention.self.query." in k or ".attention.self.key." in k:
            t[k] *= 12.0
    save_file(t, str(folder / "model.safetensors"))
    return tinyhpd.load(folder)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_fast_forward_matches_the_reference(small, batch_size):
    ours = small.encode(SENTS, batch_size=batch_size)
    assert np.abs(ours - _reference_vectors(small, SENTS)).max() < 1e-5


def test_hpd_architecture_matches_the_reference(hpd_new_path):
    model = tinyhpd.load(hpd_new_path)
    assert np.abs(model.encode(SENTS) - _reference_vectors(model, SENTS)).max() < 1e-5


def test_wide_score_spans_take_the_per_row_softmax_and_match(sharp):
    ids = sharp.tokenize(SENTS[:1])[0]
    p, lp = sharp._bert, sharp._bert.layers[0]
    x = reference.layer_norm((p.word_emb[ids] + p.pos_emb[:len(ids)] + p.type_emb[0]).astype(np.float64),
                             p.emb_ln_g, p.emb_ln_b, sharp.config.layer_norm_eps)  # the first layer's input
    q = x @ lp.qkv_w[:, :sharp.config.hidden_size].astype(np.float64)
    k = x @ lp.qkv_w[:, sharp.config.hidden_size:2 * sharp.config.hidden_size].astype(np.float64)
    assert np.ptp(q @ k.T) > attention._SHARED_SHIFT_SPAN  # the shared-shift path is not allowed here
    assert np.abs(sharp.encode(SENTS, batch_size=8) - _reference_vectors(sharp, SENTS)).max() < 1e-5


def test_padding_never_changes_a_sentence(small):
    alone = np.stack([small.encode(s) for s in SENTS])  # each sentence in a batch of its own: no padding at all
    together = small.encode(SENTS, batch_size=len(SENTS))  # one batch, padded attention groups
    assert np.abs(alone - together).max() < 1e-5


def test_two_worker_pieces_match_one_thread(hpd_new_path):
    texts = [f"a man is playing a guitar {i} " * (1 + i % 7) for i in range(120)]
    one = tinyhpd.load(hpd_new_path, num_threads=1).encode(texts, batch_size=64)
    two = tinyhpd.load(hpd_new_path, num_threads=2).encode(texts, batch_size=64)
    assert np.abs(one - two).max() < 1e-5
