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

__all__ = ["check_rows", "positions", "embed", "relative_position_bucket", "relative_bias", "encoder_layer",
           "bert_forward"]


def check_rows(what: str, idx: np.ndarray, table: str, rows: int, why: str) -> None:
    """ValueError unless every index selects one of the table's `rows` rows (the gathers run with mode="clip")."""
    if len(idx):
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f"{what} {hi if hi >= rows else lo} is outside the {table} ({rows} rows): {why}")


def positions(ids: np.ndarray, packed: Packed, cfg: BertConfig) -> np.ndarray:
    """Position of each packed token: 0, 1, ... (BERT); RoBERTa, XLM-R and MPNet count from padding_idx + 1 and give
    pad tokens padding_idx itself, as their `create_position_ids_from_input_ids`: `[n_tok]` -> `[n_tok]`."""
    if cfg.padding_idx < 0:
        return packed.positions
    real = (ids != cfg.padding_idx).astype(np.int64)  # [n_tok]
    count = np.cumsum(real)  # [n_tok] running count over the whole packed batch
    before = np.repeat(count[packed.offsets] - real[packed.offsets], packed.lengths)  # [n_tok] count before each seq
    return (count - before) * real + cfg.padding_idx  # [n_tok]


def embed(p: BertParams, ids: np.ndarray, positions: np.ndarray, eps: float, ws: "Workspace | None" = None,
          types: "np.ndarray | None" = None) -> np.ndarray:
    """Word + position + token-type embeddings (type 0 for single sentences, `types [n_tok]` for pairs), then
    LayerNorm: `[n_tok]` -> `[n_tok, E]` (in the workspace's "x" buffer when given: the layers update it in place)."""
    ws = Workspace() if ws is None else ws
    n, E = len(ids), p.word_emb.shape[1]
    check_rows("token id", ids, "embedding matrix", p.word_emb.shape[0],
                "the tokenizer and the model's vocab_size disagree")
    check_rows("position", positions, "position embeddings", p.pos_emb.shape[0],
                "the sequence is longer than max_position_embeddings")
    # mode="clip": indices are checked above; with the default mode="raise" NumPy buffers `out` and the gather takes
    # ~3x longer
    x = np.take(p.word_emb, ids, axis=0, out=ws.get("x", (n, E)), mode="clip")  # [vocab, E] -> [n_tok, E]
    pos = np.take(p.pos_emb, positions, axis=0, out=ws.get("pos", (n, E)), mode="clip")  # [n_tok, E]
    if types is None or p.type_emb.shape[0] == 1:  # one token type: a bias
        return layer_norm_(x, p.emb_ln_g, p.emb_ln_b, 0.0 + eps, ws.get("stat", (n,)), pos, p.type_emb[0])
    check_rows("token type", types, "token type embeddings", p.type_emb.shape[0], "a pair needs type_vocab_size 2")
    typ = np.take(p.type_emb, types, axis=0, out=ws.get("typ", (n, E)), mode="clip")  # [n_tok, E]
    return layer_norm_(x, p.emb_ln_g, p.emb_ln_b, 0.0 + eps, ws.get("stat", (n,)), pos, typ)  # LN(x+pos+type)


def relative_position_bucket(rel: np.ndarray, num_buckets: int, max_distance: int = 128) -> np.ndarray:
    """MPNet's (T5's) bucket of each relative position `key - query`: exact below num_buckets // 4 in either
    direction, logarithmic up to max_distance, in float32 as torch computes it (the boundaries match bit for bit)."""
    n = -rel
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    large = max_exact + (np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact))
                         / np.float32(np.log(max_distance / max_exact)) * np.float32(half - max_exact)).astype(np.int64)
    return ret + np.where(n < max_exact, n, np.minimum(large, half - 1))


def relative_bias(table: np.ndarray, L: int) -> np.ndarray:
    """The additive attention bias of MPNet for sequences of up to L tokens: `[buckets, h]` -> `[h, L, L]`."""
    pos = np.arange(L)
    bucket = relative_position_bucket(pos[None, :] - pos[:, None], table.shape[0])  # [L, L] key - query
    return np.ascontiguousarray(table[bucket].transpose(2, 0, 1))  # [L, L, h] -> [h, L, L]


def encoder_layer(x: np.ndarray, lp: LayerParams, packed: Packed, cfg: BertConfig, ws: Workspace,
                  bias: "np.ndarray | None" = None) -> np.ndarray:
    """One post-LN BERT layer, in place on x: x = LN(x + attn(x)); x = LN(x + FFN(x)). `bias [h, L, L]`: an
    additive attention bias (MPNet's relative positions)."""
    n, H = x.shape
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    stat, scratch = ws.get("stat", (n,)), ws.get("scratch", (8 * CHUNK,))
    qkv = ws.get("qkv", (n + 1, 3 * H))  # one extra all-zero row: what padded attention cells read
    np.matmul(x, lp.qkv_w, out=qkv[:n])  # [n, H] -> [n, 3H]
    qkv[:n] += lp.qkv_b
    qkv[n] = 0.0
    ctx = attention(qkv, packed, cfg.num_attention_heads, ws.get("ctx", (n, H)), ws, bias)  # [n, 3H] -> [n, H]
    a = np.matmul(ctx, lp.out_w, out=ws.get("a", (n, H)))  # [n, H] -> [n, H]
    layer_norm_(a, lp.ln1_g, lp.ln1_b, eps, stat, lp.out_b, x)  # a <- LN(a + bias + x): residual
    h = np.matmul(a, lp.ffn_in_w, out=ws.get("h", (n, cfg.intermediate_size)))  # [n, H] -> [n, I]
    act(h, scratch, lp.ffn_in_b)  # h <- act(h + bias)
    np.matmul(h, lp.ffn_out_w, out=x)  # [n, I] -> [n, H]  (x is no longer needed: reuse it)
    return layer_norm_(x, lp.ln2_g, lp.ln2_b, eps, stat, lp.ffn_out_b, a)  # x <- LN(x + bias + a): residual


def bert_forward(p: BertParams, cfg: BertConfig, ids: np.ndarray, packed: Packed, ws: Workspace,
                 types: "np.ndarray | None" = None) -> np.ndarray:
    """Token embeddings of the last layer for packed token ids (and token types of pairs): `[n_tok]` -> `[n_tok, H]`."""
    x = embed(p, ids, positions(ids, packed, cfg), cfg.layer_norm_eps, ws, types)  # [n_tok] -> [n_tok, E]
    if p.emb_proj_w is not None:  # ELECTRA / ALBERT: embeddings at E, layers at H
        x = np.matmul(x, p.emb_proj_w, out=ws.get("x_h", (len(ids), cfg.hidden_size)))  # [n_tok, E] -> [n_tok, H]
        x += p.emb_proj_b
    bias = None if p.rel_bias is None else relative_bias(p.rel_bias, int(packed.lengths.max()))  # [h, L, L]
    for lp in p.layers:
        x = encoder_layer(x, lp, packed, cfg, ws, bias)  # [n_tok, H] -> [n_tok, H]
    return x
