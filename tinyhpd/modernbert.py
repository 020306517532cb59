"""The ModernBERT encoder as small pure functions (bert.py's style): pre-LN layers, RoPE on queries and keys, a gated
MLP (GeGLU), sliding-window attention on every layer but each `global_attn_every_n_layers`-th, a final norm.

Same packed layout and the same attention kernel as BERT (attention.py): RoPE is applied to the packed Q and K rows
(each token at its position inside its sequence), the window is an additive bias on the scores. The weights use
`LayerParams`' arrays with ModernBERT's meaning (params.py): ln1 the attention norm (empty on layer 0, which has none),
ffn_in the input | gate columns of Wi, ln2 the MLP norm.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from tinyhpd.attention import Packed, attention
from tinyhpd.bert import check_rows
from tinyhpd.config import BertConfig
from tinyhpd.kernels import ACTIVATIONS, CHUNK, Workspace, layer_norm_
from tinyhpd.params import BertParams, LayerParams

__all__ = ["rope_tables", "apply_rope", "window_bias", "modernbert_layer", "modernbert_forward"]


def rope_tables(positions: np.ndarray, head_dim: int, theta: float) -> Tuple[np.ndarray, np.ndarray]:
    """cos and sin of each token's rotation angles, in float32 as torch computes them:
    `[n_tok]` -> 2 x `[n_tok, d/2]`."""
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    freqs = positions.astype(np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]  # [n_tok, d/2]
    return np.cos(freqs), np.sin(freqs)


def apply_rope(qk: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """Rotate Q or K rows in place, rotate-half style: `qk [n_tok, h, d]`, `cos, sin [n_tok, d/2]`."""
    half = qk.shape[-1] // 2
    x1, x2 = qk[..., :half].copy(), qk[..., half:].copy()  # [n, h, d/2]
    c, s = cos[:, None, :], sin[:, None, :]  # [n, 1, d/2]
    qk[..., :half] = x1 * c - x2 * s
    qk[..., half:] = x2 * c + x1 * s


def window_bias(L: int, half_window: int) -> "np.ndarray | None":
    """The additive score bias of a sliding-window layer for sequences of up to L tokens: 0 where |query - key| <=
    half_window, -1e30 elsewhere: `[1, L, L]` (None where the window covers every pair)."""
    if L <= half_window + 1:
        return None
    pos = np.arange(L)
    far = np.abs(pos[:, None] - pos[None, :]) > half_window  # [L, L]
    return np.where(far, np.float32(-1e30), np.float32(0.0))[None]  # [1, L, L]


def _norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float, out: np.ndarray, stat: np.ndarray) -> np.ndarray:
    np.copyto(out, x)
    return layer_norm_(out, g, b, eps, stat)  # out <- LN(x)


def modernbert_layer(x: np.ndarray, lp: LayerParams, packed: Packed, cfg: BertConfig, ws: Workspace,
                     rot: Tuple[np.ndarray, np.ndarray], bias: "np.ndarray | None") -> np.ndarray:
    """One pre-LN layer, in place on x: x += Wo(attn(rope(Wqkv(LN(x))))); x += Wo(act(a) * g), [a | g] = Wi(LN(x))."""
    n, H = x.shape
    h, d, I = cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    stat, scratch = ws.get("stat", (n,)), ws.get("scratch", (8 * CHUNK,))
    y = x if lp.ln1_g.size == 0 else _norm(x, lp.ln1_g, lp.ln1_b, eps, ws.get("y", (n, H)), stat)  # [n, H]
    qkv = ws.get("qkv", (n + 1, 3 * H))  # one extra all-zero row: what padded attention cells read
    np.matmul(y, lp.qkv_w, out=qkv[:n])  # [n, H] -> [n, 3H]  (Q pre-scaled by 1/sqrt(d))
    qkv[n] = 0.0
    heads = qkv[:n].reshape(n, 3, h, d)  # [n, 3, h, d] view
    apply_rope(heads[:, 0], *rot)  # Q
    apply_rope(heads[:, 1], *rot)  # K
    ctx = attention(qkv, packed, h, ws.get("ctx", (n, H)), ws, bias)  # [n, 3H] -> [n, H]
    x += np.matmul(ctx, lp.out_w, out=ws.get("a", (n, H)))  # residual
    y = _norm(x, lp.ln2_g, lp.ln2_b, eps, ws.get("y", (n, H)), stat)  # [n, H]
    wi = np.matmul(y, lp.ffn_in_w, out=ws.get("h", (n, 2 * I)))  # [n, H] -> [n, 2I]: input | gate
    gated = np.ascontiguousarray(wi[:, :I])  # [n, I]
    act(gated, scratch)  # act(input)
    gated *= wi[:, I:]  # * gate
    x += np.matmul(gated, lp.ffn_out_w, out=ws.get("a", (n, H)))  # [n, I] -> [n, H], residual
    return x


def modernbert_forward(p: BertParams, cfg: BertConfig, ids: np.ndarray, packed: Packed, ws: Workspace,
                       types: "np.ndarray | None" = None) -> np.ndarray:
    """Token embeddings of the final norm for packed token ids: `[n_tok]` -> `[n_tok, H]` (no token types)."""
    n, H = len(ids), cfg.hidden_size
    check_rows("token id", ids, "embedding matrix", p.word_emb.shape[0], "the tokenizer and the model's vocab_size "
               "disagree")
    x = np.take(p.word_emb, ids, axis=0, out=ws.get("x", (n, H)), mode="clip")  # [n_tok, H]
    layer_norm_(x, p.emb_ln_g, p.emb_ln_b, cfg.layer_norm_eps, ws.get("stat", (n,)))  # LN(tok_embeddings)
    L = int(packed.lengths.max())
    rot: Dict[str, Tuple[np.ndarray, np.ndarray]] = {
        "full": rope_tables(packed.positions, cfg.head_dim, cfg.rope_theta),
        "sliding": rope_tables(packed.positions, cfg.head_dim, cfg.local_rope_theta)}
    bias = {"full": None, "sliding": window_bias(L, cfg.sliding_window)}
    for lp, kind in zip(p.layers, cfg.layer_types):
        x = modernbert_layer(x, lp, packed, cfg, ws, rot[kind], bias[kind])  # [n_tok, H] -> [n_tok, H]
    return layer_norm_(x, p.final_ln_g, p.final_ln_b, cfg.layer_norm_eps, ws.get("stat", (n,)))  # final norm
