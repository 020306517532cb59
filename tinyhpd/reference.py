"""A plain reference forward: padded batch, float64, no packing, no buffers, no threads (picoGPT style).

The torch-free oracle the fast path (bert.py, attention.py, kernels.py, the runner) is tested against. Slow on purpose:
every step is the textbook formula, on a `[B, L]` grid padded with a key mask.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.params import BertParams, LayerParams

__all__ = ["gelu", "layer_norm", "bert_forward", "mean_pool"]

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


def attention(x: np.ndarray, lp: LayerParams, mask: np.ndarray, n_heads: int) -> np.ndarray:
    B, L, H = x.shape
    d = H // n_heads
    qkv = linear(x, lp.qkv_w, lp.qkv_b)  # [B, L, 3H] (Q already carries 1/sqrt(d), folded in at load)
    q, k, v = (qkv[..., i * H:(i + 1) * H].reshape(B, L, n_heads, d).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) + mask[:, None, None, :]  # [B, h, L, L], padded keys -> -inf
    s = np.exp(s - s.max(axis=-1, keepdims=True))  # [B, h, L, L]
    p = s / s.sum(axis=-1, keepdims=True)  # softmax over keys
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(B, L, H)  # [B, L, H]
    return linear(ctx, lp.out_w, lp.out_b)  # [B, L, H]


def layer(x: np.ndarray, lp: LayerParams, mask: np.ndarray, cfg: BertConfig) -> np.ndarray:
    eps = cfg.layer_norm_eps
    x = layer_norm(x + attention(x, lp, mask, cfg.num_attention_heads), lp.ln1_g, lp.ln1_b, eps)  # [B, L, H]
    h = ACTS[cfg.hidden_act](linear(x, lp.ffn_in_w, lp.ffn_in_b))  # [B, L, I]
    return layer_norm(x + linear(h, lp.ffn_out_w, lp.ffn_out_b), lp.ln2_g, lp.ln2_b, eps)  # [B, L, H]


def bert_forward(p: BertParams, cfg: BertConfig, ids: Sequence[np.ndarray]) -> np.ndarray:
    """Token embeddings `[B, L, H]` (float64) for a list of token-id arrays, padded to the longest."""
    B, L = len(ids), max(len(x) for x in ids)
    grid = np.zeros((B, L), np.int64)  # [B, L] padding uses token 0: masked out below
    real = np.zeros((B, L), bool)
    for i, x in enumerate(ids):
        grid[i, :len(x)], real[i, :len(x)] = x, True
    mask = np.where(real, 0.0, -np.inf)  # [B, L]
    x = p.word_emb[grid] + p.pos_emb[np.arange(L)][None] + p.type_emb[0]  # [B, L, H]
    x = layer_norm(x.astype(np.float64), p.emb_ln_g, p.emb_ln_b, cfg.layer_norm_eps)
    for lp in p.layers:
        x = layer(x, lp, mask, cfg)  # [B, L, H]
    return np.where(real[..., None], x, 0.0)  # padding rows zeroed


def mean_pool(tokens: np.ndarray, ids: Sequence[np.ndarray]) -> np.ndarray:
    lengths = np.array([len(x) for x in ids], dtype=np.float64)  # [B]
    return tokens.sum(axis=1) / lengths[:, None]  # padding rows are zero: [B, L, H] -> [B, H]
