"""A plain reference forward: padded batch, float64, no packing, no buffers, no threads (picoGPT style).

The torch-free oracle the fast path (bert.py, modernbert.py, attention.py, kernels.py, the runner) is tested against,
for every family. Slow on purpose:
every step is the textbook formula, on a `[B, L]` grid padded with a key mask.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.params import BertParams, LayerParams

__all__ = ["gelu", "layer_norm", "bert_forward", "modernbert_forward", "mean_pool"]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # exact GELU with the libm erf


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


ACTS = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": lambda x: np.maximum(x, 0.0)}


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1] biased, as torch
    return (x - mean) / np.sqrt(var + eps) * g + b  # [..., H]


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w.astype(np.float64) + b  # [..., in] @ [in, out] -> [..., out]


def attention(x: np.ndarray, lp: LayerParams, mask: np.ndarray, n_heads: int, bias=None, rope=None) -> np.ndarray:
    """`bias [h or 1, L, L]`: added to the scores (MPNet's relative positions, ModernBERT's window); `rope (cos, sin)
    [L, d/2]`: rotate Q and K (ModernBERT)."""
    B, L, H = x.shape
    d = H // n_heads
    qkv = linear(x, lp.qkv_w, lp.qkv_b)  # [B, L, 3H] (Q already carries 1/sqrt(d), folded in at load)
    q, k, v = (qkv[..., i * H:(i + 1) * H].reshape(B, L, n_heads, d).transpose(0, 2, 1, 3) for i in range(3))
    if rope is not None:
        q, k = rotate(q, *rope), rotate(k, *rope)
    s = q @ k.transpose(0, 1, 3, 2) + mask[:, None, None, :]  # [B, h, L, L], padded keys -> -inf
    if bias is not None:
        s = s + bias[None, :, :L, :L]
    s = np.exp(s - s.max(axis=-1, keepdims=True))  # [B, h, L, L]
    p = s / s.sum(axis=-1, keepdims=True)  # softmax over keys
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(B, L, H)  # [B, L, H]
    return linear(ctx, lp.out_w, lp.out_b)  # [B, L, H]


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """RoPE, rotate-half form: `x [B, h, L, d]`, `cos, sin [L, d/2]`."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def layer(x: np.ndarray, lp: LayerParams, mask: np.ndarray, cfg: BertConfig, bias=None) -> np.ndarray:
    eps = cfg.layer_norm_eps
    x = layer_norm(x + attention(x, lp, mask, cfg.num_attention_heads, bias), lp.ln1_g, lp.ln1_b, eps)  # [B, L, H]
    h = ACTS[cfg.hidden_act](linear(x, lp.ffn_in_w, lp.ffn_in_b))  # [B, L, I]
    return layer_norm(x + linear(h, lp.ffn_out_w, lp.ffn_out_b), lp.ln2_g, lp.ln2_b, eps)  # [B, L, H]


def positions(grid: np.ndarray, real: np.ndarray, cfg: BertConfig) -> np.ndarray:
    """`[B, L]` positions: 0, 1, ... or, where padding_idx >= 0, RoBERTa's cumsum over non-pad tokens + padding_idx."""
    if cfg.padding_idx < 0:
        return np.broadcast_to(np.arange(grid.shape[1]), grid.shape)
    m = (grid != cfg.padding_idx) & real
    return np.cumsum(m, axis=1) * m + cfg.padding_idx


def bucket(rel: np.ndarray, num_buckets: int, max_distance: int = 128) -> np.ndarray:
    """T5 / MPNet relative position bucket. The log is taken in float32, as torch does: the buckets are defined by that
    arithmetic (n = 16 lands on 10.0 in float64 and just below it in float32)."""
    n, half = -rel, num_buckets // 2
    ret = (n < 0) * half
    n = np.abs(n)
    exact = half // 2
    f32 = np.float32
    ratio = np.log(np.maximum(n, 1).astype(f32) / f32(exact)) / f32(math.log(max_distance / exact))
    large = exact + (ratio * f32(half - exact)).astype(int)
    return ret + np.where(n < exact, n, np.minimum(large, half - 1))


def padded(ids: Sequence[np.ndarray]):
    """The `[B, L]` grid of token ids padded to the longest (padding: token 0), which cells are real, and the additive
    key mask (-inf on padding)."""
    B, L = len(ids), max(len(x) for x in ids)
    grid = np.zeros((B, L), np.int64)
    real = np.zeros((B, L), bool)
    for i, x in enumerate(ids):
        grid[i, :len(x)], real[i, :len(x)] = x, True
    return grid, real, np.where(real, 0.0, -np.inf)


def bert_forward(p: BertParams, cfg: BertConfig, ids: Sequence[np.ndarray]) -> np.ndarray:
    """Token embeddings `[B, L, H]` (float64) for a list of token-id arrays, padded to the longest; any family but
    ModernBERT (`modernbert_forward`)."""
    grid, real, mask = padded(ids)
    L = grid.shape[1]
    x = p.word_emb[grid] + p.pos_emb[positions(grid, real, cfg)] + p.type_emb[0]  # [B, L, E]
    x = layer_norm(x.astype(np.float64), p.emb_ln_g, p.emb_ln_b, cfg.layer_norm_eps)
    if p.emb_proj_w is not None:
        x = linear(x, p.emb_proj_w, p.emb_proj_b)  # [B, L, E] -> [B, L, H]
    bias = None
    if p.rel_bias is not None:
        pos = np.arange(L)
        bias = p.rel_bias.astype(np.float64)[bucket(pos[None, :] - pos[:, None], p.rel_bias.shape[0])]  # [L, L, h]
        bias = bias.transpose(2, 0, 1)  # [h, L, L]
    for lp in p.layers:
        x = layer(x, lp, mask, cfg, bias)  # [B, L, H]
    return np.where(real[..., None], x, 0.0)  # padding rows zeroed


def modernbert_forward(p: BertParams, cfg: BertConfig, ids: Sequence[np.ndarray]) -> np.ndarray:
    """ModernBERT's token embeddings `[B, L, H]` (float64): pre-LN layers, RoPE, gated MLP, sliding windows."""
    grid, real, mask = padded(ids)
    L = grid.shape[1]
    eps, d = cfg.layer_norm_eps, cfg.head_dim
    x = layer_norm(p.word_emb[grid].astype(np.float64), p.emb_ln_g, p.emb_ln_b, eps)  # [B, L, H]
    pos = np.arange(L)
    # [1, L, L]; -1e30, not -inf: a padded query row whose window holds only padded keys stays finite
    far = np.where(np.abs(pos[:, None] - pos[None, :]) > cfg.sliding_window, -1e30, 0.0)[None]
    for lp, kind in zip(p.layers, cfg.layer_types):
        theta = cfg.rope_theta if kind == "full" else cfg.local_rope_theta
        angles = pos[:, None] * (1.0 / theta ** (np.arange(0, d, 2) / d))[None, :]  # [L, d/2]
        y = x if lp.ln1_g.size == 0 else layer_norm(x, lp.ln1_g, lp.ln1_b, eps)
        x = x + attention(y, lp, mask, cfg.num_attention_heads, far if kind == "sliding" else None,
                          (np.cos(angles), np.sin(angles)))
        h = linear(layer_norm(x, lp.ln2_g, lp.ln2_b, eps), lp.ffn_in_w, lp.ffn_in_b)  # [B, L, 2I]
        inner = h.shape[-1] // 2
        x = x + linear(ACTS[cfg.hidden_act](h[..., :inner]) * h[..., inner:], lp.ffn_out_w, lp.ffn_out_b)
    x = layer_norm(x, p.final_ln_g, p.final_ln_b, eps)
    return np.where(real[..., None], x, 0.0)


def mean_pool(tokens: np.ndarray, ids: Sequence[np.ndarray]) -> np.ndarray:
    lengths = np.array([len(x) for x in ids], dtype=np.float64)  # [B]
    return tokens.sum(axis=1) / lengths[:, None]  # padding rows are zero: [B, L, H] -> [B, H]
