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


# ------------------------------------------------------------------------------------------------ every family
def _family_model(small, family: str, seed: int = 0):
    """The small model's tokenizer and Pooling over a random encoder of `family` (built from arrays: no folder)."""
    import dataclasses

    from tinyhpd.params import BertParams, LayerParams

    rng = np.random.default_rng(seed)
    cfg, p = small.config, small._bert
    H, I, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads

    def w(*shape):
        return rng.normal(0.0, 0.08, size=shape).astype(np.float32)

    if family == "roberta":
        cfg = dataclasses.replace(cfg, model_type="roberta", padding_idx=1)
    elif family == "mpnet":
        cfg = dataclasses.replace(cfg, model_type="mpnet", padding_idx=1, relative_attention_num_buckets=32)
        p = dataclasses.replace(p, rel_bias=w(32, h) * 20)
    elif family == "electra":
        E = 16
        cfg = dataclasses.replace(cfg, model_type="electra", embedding_size=E)
        p = dataclasses.replace(p, word_emb=w(cfg.vocab_size, E), pos_emb=w(cfg.max_position_embeddings, E),
                                type_emb=w(2, E), emb_ln_g=1 + w(E), emb_ln_b=w(E), emb_proj_w=w(E, H), emb_proj_b=w(H))
    elif family == "modernbert":
        cfg = dataclasses.replace(cfg, model_type="modernbert", type_vocab_size=0, num_hidden_layers=3,
                                  layer_types=("full", "sliding", "full"), rope_theta=160000.0,
                                  local_rope_theta=10000.0, sliding_window=4)
        zeros = np.zeros(H, np.float32)
        layers = tuple(LayerParams(qkv_w=w(H, 3 * H), qkv_b=np.zeros(3 * H, np.float32), out_w=w(H, H), out_b=zeros,
                                   ln1_g=np.zeros(0, np.float32) if i == 0 else 1 + w(H), ln1_b=zeros,
                                   ffn_in_w=w(H, 2 * I), ffn_in_b=np.zeros(2 * I, np.float32), ffn_out_w=w(I, H),
                                   ffn_out_b=zeros, ln2_g=1 + w(H), ln2_b=zeros) for i in range(3))
        p = BertParams(word_emb=w(cfg.vocab_size, H), pos_emb=np.zeros((0, H), np.float32),
                       type_emb=np.zeros((1, H), np.float32), emb_ln_g=1 + w(H), emb_ln_b=zeros, layers=layers,
                       final_ln_g=1 + w(H), final_ln_b=zeros)
    return tinyhpd.Model(cfg, p, small._tokenizer, small._heads[:1], max_seq_length=small.max_seq_length)


@pytest.mark.parametrize("family", ["roberta", "mpnet", "electra", "modernbert"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_every_family_matches_the_reference(small, family, batch_size):
    model = _family_model(small, family)
    ids = model.tokenize(SENTS)
    forward = reference.modernbert_forward if family == "modernbert" else reference.bert_forward
    ref = reference.mean_pool(forward(model._bert, model.config, ids), ids)
    assert np.abs(model.encode(SENTS, batch_size=batch_size) - ref).max() < 1e-5
