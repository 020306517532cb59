"""The BERT encoder as small pure functions over NumPy arrays (float32).

Tokens of a batch are *packed*: every dense layer works on one `[n_tok, H]` matrix of real tokens and never on
padding. Only attention pads, per batch, to the longest sequence of that batch (batches are length-sorted by the
caller), and padded keys get exactly zero weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.weights import BertParams, LayerParams

__all__ = ["erf", "gelu", "layer_norm", "Packed", "pack", "embed", "attention", "encoder_layer", "bert_forward"]

# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 over the real line.
_P = np.float32(0.3275911)
_A = tuple(np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, float32, max abs error ~2e-7 (A&S 7.1.26; NumPy has no erf)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)  # [n]
    t = 1.0 / (1.0 + _P * a)  # [n]
    poly = _A[0] * t + _A[1]
    for c in _A[2:]:
        poly *= t
        poly += c
    poly *= t  # a1 t + a2 t^2 + ... + a5 t^5
    y = 1.0 - poly * np.exp(-a * a)  # erf(|x|)
    return np.copysign(y, x).astype(np.float32, copy=False)


_SQRT_HALF = np.float32(1.0 / math.sqrt(2.0))
_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as BERT's `hidden_act: gelu`."""
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`); only for configs that ask for it."""
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


ACTIVATIONS = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": relu}


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    mu = x.mean(axis=-1, keepdims=True)  # [n, 1]
    xc = x - mu  # [n, H]
    var = np.mean(xc * xc, axis=-1, keepdims=True)  # [n, 1]
    return xc * (1.0 / np.sqrt(var + np.float32(eps))) * g + b  # [n, H]


@dataclass(frozen=True)
class Packed:
    """Where each sequence's tokens sit in the packed `[n_tok, H]` matrix and in the padded `[B, L]` grid."""

    lengths: np.ndarray  # [B] tokens per sequence
    offsets: np.ndarray  # [B] first packed row of each sequence
    grid_rows: np.ndarray  # [B, L] packed row for each grid cell (padding cells point at row 0)
    valid: np.ndarray  # [n_tok] flat grid index of each packed token, in packed order
    key_mask: np.ndarray | None  # [B, 1, 1, L] additive mask (0 or -inf-like), None when no padding


def pack(lengths: Sequence[int]) -> Packed:
    """Index arrays for one batch of sequences with the given token counts."""
    lengths = np.asarray(lengths, dtype=np.int64)  # [B]
    B, L = len(lengths), int(lengths.max())
    offsets = np.zeros(B, dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    pos = np.arange(L)  # [L]
    inside = pos[None, :] < lengths[:, None]  # [B, L]
    grid_rows = np.where(inside, offsets[:, None] + pos[None, :], 0)  # [B, L]
    valid = np.flatnonzero(inside)  # [n_tok]
    key_mask = None
    if not inside.all():
        key_mask = np.where(inside, np.float32(0), np.float32(-1e30))[:, None, None, :].astype(np.float32)
    return Packed(lengths, offsets, grid_rows, valid, key_mask)


def embed(p: BertParams, ids: np.ndarray, positions: np.ndarray, eps: float) -> np.ndarray:
    """Word + position + token-type (all type 0 for single sentences) embeddings, then LayerNorm."""
    x = p.word_emb[ids] + p.pos_emb[positions]  # [n_tok, H]
    x += p.type_emb[0]  # [n_tok, H]
    return layer_norm(x, p.emb_ln_g, p.emb_ln_b, eps)  # [n_tok, H]


def attention(x: np.ndarray, lp: LayerParams, packed: Packed, n_heads: int) -> np.ndarray:
    """Multi-head self-attention on packed tokens; pads only inside the score computation."""
    n_tok, H = x.shape
    B, L = packed.grid_rows.shape
    d = H // n_heads
    qkv = x @ lp.qkv_w + lp.qkv_b  # [n_tok, H] -> [n_tok, 3H]  (Q columns pre-scaled by 1/sqrt(d))
    grid = qkv[packed.grid_rows]  # [n_tok, 3H] -> [B, L, 3H]
    grid = grid.reshape(B, L, 3, n_heads, d).transpose(2, 0, 3, 1, 4)  # -> [3, B, h, L, d]
    q, k, v = grid[0], grid[1], grid[2]  # [B, h, L, d] each
    scores = q @ k.transpose(0, 1, 3, 2)  # [B, h, L, d] @ [B, h, d, L] -> [B, h, L, L]
    if packed.key_mask is not None:
        scores += packed.key_mask  # padded keys -> -1e30
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)  # padded keys underflow to exactly 0
    scores /= scores.sum(axis=-1, keepdims=True)  # softmax over keys
    ctx = scores @ v  # [B, h, L, L] @ [B, h, L, d] -> [B, h, L, d]
    ctx = ctx.transpose(0, 2, 1, 3).reshape(B * L, H)[packed.valid]  # -> [B, L, H] -> [n_tok, H]
    return ctx @ lp.out_w + lp.out_b  # [n_tok, H] -> [n_tok, H]


def encoder_layer(x: np.ndarray, lp: LayerParams, packed: Packed, cfg: BertConfig, act) -> np.ndarray:
    """One post-LN BERT layer: x = LN(x + attn(x)); x = LN(x + FFN(x))."""
    eps = cfg.layer_norm_eps
    x = layer_norm(x + attention(x, lp, packed, cfg.num_attention_heads), lp.ln1_g, lp.ln1_b, eps)  # [n_tok, H]
    h = act(x @ lp.ffn_in_w + lp.ffn_in_b)  # [n_tok, H] -> [n_tok, I]
    return layer_norm(x + (h @ lp.ffn_out_w + lp.ffn_out_b), lp.ln2_g, lp.ln2_b, eps)  # [n_tok, I] -> [n_tok, H]


def bert_forward(p: BertParams, cfg: BertConfig, ids: np.ndarray, packed: Packed) -> np.ndarray:
    """Token embeddings of the last layer for packed token ids `[n_tok]` -> `[n_tok, H]`."""
    positions = np.arange(ids.size) - np.repeat(packed.offsets, packed.lengths)  # [n_tok] position in its sequence
    x = embed(p, ids, positions, cfg.layer_norm_eps)  # [n_tok] -> [n_tok, H]
    act = ACTIVATIONS[cfg.hidden_act]
    for lp in p.layers:
        x = encoder_layer(x, lp, packed, cfg, act)  # [n_tok, H] -> [n_tok, H]
    return x
