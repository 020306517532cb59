"""The BERT encoder as small pure functions over NumPy arrays (float32), in the style of picoGPT's gpt2.py.

Tokens of a batch are *packed*: every dense layer works on one `[n_tok, H]` matrix of real tokens and never on
padding (attention.py pads per group of similar lengths). The kernels (GELU, LayerNorm, buffers) live in kernels.py;
reference.py holds the plain float64 forward this one is tested against.
"""
from __future__ import annotations

import numpy as np

from tinyhpd.attention import Packed, attention
from tinyhpd.config import BertConfig
from tinyhpd.kernels import ACTIVATIONS, CHUNK, Workspace, layer_norm_
from tinyhpd.params import BertParams, LayerParams

__all__ = ["embed", "encoder_layer", "bert_forward"]


def _check_rows(what: str, idx: np.ndarray, table: str, rows: int, why: str) -> None:
    """ValueError unless every index selects one of the table's `rows` rows (the gathers run with mode="clip")."""
    if len(idx):
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{what} {hi if hi >= rows else lo} is outside the {table} ({rows} rows): {why}")


def embed(p: BertParams, ids: np.ndarray, positions: np.ndarray, eps: float, ws: "Workspace | None" = None
          ) -> np.ndarray:
    """Word + position + token-type (type 0: single sentences) embeddings, then LayerNorm: `[n_tok]` -> `[n_tok, H]`
    (in the workspace's "x" buffer when given: the layers then update it in place)."""
    ws = Workspace() if ws is None else ws
    n, H = len(ids), p.word_emb.shape[1]
    _check_rows("token id", ids, "embedding matrix", p.word_emb.shape[0],
                "the tokenizer and the model's vocab_size disagree")
    _check_rows("position", positions, "position embeddings", p.pos_emb.shape[0],
                "the sequence is longer than max_position_embeddings")
    # mode="clip": indices are checked above; with the default mode="raise" NumPy buffers `out` and the gather takes
    # ~3x longer
    x = np.take(p.word_emb, ids, axis=0, out=ws.get("x", (n, H)), mode="clip")  # [vocab, H] -> [n_tok, H]
    pos = np.take(p.pos_emb, positions, axis=0, out=ws.get("pos", (n, H)), mode="clip")  # [n_tok, H]
    return layer_norm_(x, p.emb_ln_g, p.emb_ln_b, 0.0 + eps, ws.get("stat", (n,)), pos, p.type_emb[0])  # LN(x+pos+type)


def encoder_layer(x: np.ndarray, lp: LayerParams, packed: Packed, cfg: BertConfig, ws: Workspace) -> np.ndarray:
    """One post-LN BERT layer, in place on x: x = LN(x + attn(x)); x = LN(x + FFN(x))."""
    n, H = x.shape
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    stat, scratch = ws.get("stat", (n,)), ws.get("scratch", (8 * CHUNK,))
    qkv = ws.get("qkv", (n + 1, 3 * H))  # one extra all-zero row: what padded attention cells read
    np.matmul(x, lp.qkv_w, out=qkv[:n])  # [n, H] -> [n, 3H]
    qkv[:n] += lp.qkv_b
    qkv[n] = 0.0
    ctx = attention(qkv, packed, cfg.num_attention_heads, ws.get("ctx", (n, H)), ws)  # [n, 3H] -> [n, H]
    a = np.matmul(ctx, lp.out_w, out=ws.get("a", (n, H)))  # [n, H] -> [n, H]
    layer_norm_(a, lp.ln1_g, lp.ln1_b, eps, stat, lp.out_b, x)  # a <- LN(a + bias + x): residual
    h = np.matmul(a, lp.ffn_in_w, out=ws.get("h", (n, cfg.intermediate_size)))  # [n, H] -> [n, I]
    act(h, scratch, lp.ffn_in_b)  # h <- act(h + bias)
    np.matmul(h, lp.ffn_out_w, out=x)  # [n, I] -> [n, H]  (x is no longer needed: reuse it)
    return layer_norm_(x, lp.ln2_g, lp.ln2_b, eps, stat, lp.ffn_out_b, a)  # x <- LN(x + bias + a): residual


def bert_forward(p: BertParams, cfg: BertConfig, ids: np.ndarray, packed: Packed, ws: Workspace) -> np.ndarray:
    """Token embeddings of the last layer for packed token ids: `[n_tok]` -> `[n_tok, H]`."""
    x = embed(p, ids, packed.positions, cfg.layer_norm_eps, ws)  # [n_tok] -> [n_tok, H]
    for lp in p.layers:
        x = encoder_layer(x, lp, packed, cfg, ws)  # [n_tok, H] -> [n_tok, H]
    return x
