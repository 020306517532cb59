"""The BERT encoder as small pure functions over NumPy arrays (float32).

Tokens of a batch are *packed*: every dense layer works on one `[n_tok, H]` matrix of real tokens and never on
padding. Only attention pads, per group of sequences of similar length, and padded keys get exactly zero weight.
Element-wise work (GELU, LayerNorm) runs in place, in cache-sized chunks, on buffers reused across batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.weights import BertParams, LayerParams

__all__ = ["erf", "gelu", "gelu_", "layer_norm", "layer_norm_", "Workspace", "AttnGroup", "Packed", "pack", "embed",
           "attention", "encoder_layer", "bert_forward"]

_CHUNK = 32768  # elements per in-place pass: 128 KB of float32; a chain of ufuncs over 4 such buffers stays in L2

# Abramowitz & Stegun 7.1.26 for erfc(z), z >= 0: t = 1 / (1 + p z), erfc(z) ~ t P(t) exp(-z^2), |error| <= 1.5e-7.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # a1..a5


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, float32 (NumPy has none): A&S 7.1.26, max abs error below 1e-6 (tested against math.erf)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)  # [n]
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(_P) * a)  # [n]
    poly = np.float32(_A[4]) * t
    for c in _A[3::-1]:
        poly += np.float32(c)
        poly *= t  # a1 t + a2 t^2 + ... + a5 t^5
    y = np.float32(1.0) - poly * np.exp(-a * a)  # erf(|x|)
    return np.copysign(y, x).astype(np.float32, copy=False)


# GELU(x) = x Phi(x) with Phi(-|x|) = erfc(|x|/sqrt2)/2: the same A&S polynomial in |x|, its 1/sqrt2 and 1/2 folded in.
_PG = np.float32(_P / math.sqrt(2.0))
_AG = tuple(np.float32(0.5 * a) for a in _A)
_ONE = np.float32(1.0)
_MINUS_HALF = np.float32(-0.5)
_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))


def _gelu_chunk(x: np.ndarray, a: np.ndarray, t: np.ndarray, q: np.ndarray, zero: np.ndarray) -> None:
    """x <- GELU(x) in place; a, t, q are scratch of x's size and `zero` all zeros. 20 passes, each a SIMD loop:
    `np.divide(1, t)` and `np.maximum(x, zero_array)` are used because `np.reciprocal` and `np.maximum(x, 0.0)` are
    2-4x slower per element (measured, NumPy 2.4)."""
    np.abs(x, out=a)  # |x|
    np.multiply(a, _PG, out=t)
    t += _ONE
    np.divide(_ONE, t, out=t)  # t = 1 / (1 + p |x| / sqrt2)
    np.multiply(t, _AG[4], out=q)
    for c in _AG[3::-1]:
        q += c
        q *= t  # q = P(t) / 2
    np.multiply(a, _MINUS_HALF, out=t)
    t *= a
    np.exp(t, out=t)  # exp(-x^2 / 2)
    q *= t  # q = Phi(-|x|)
    q *= a  # |x| q
    np.maximum(x, zero, out=x)
    x -= q  # x >= 0: x - x q = x Phi(x);  x < 0: -|x| q = x Phi(-|x|) = x Phi(x)


def _row_piece(n: int, width: int) -> int:
    """Rows per in-place piece of an `[n, width]` array: the whole array when small (one short sentence: per-call
    overhead matters more there), else about _CHUNK elements."""
    return n if n * width <= 2 * _CHUNK else max(1, _CHUNK // width)


def gelu_(x: np.ndarray, scratch: np.ndarray, bias: "np.ndarray | None" = None) -> np.ndarray:
    """x <- GELU(x + bias), exact (erf) form, in place on a C-contiguous float32 `[n, I]`, in row pieces that stay in
    cache (the bias is added there too: one memory pass less); `scratch` holds >= 4 * 2 * _CHUNK floats."""
    n, width = x.shape
    rows = _row_piece(n, width)
    k = rows * width
    if scratch.size < 4 * k:
        scratch = np.empty(4 * k, np.float32)
    a, t, q, zero = scratch[:k], scratch[k:2 * k], scratch[2 * k:3 * k], scratch[3 * k:4 * k]
    zero.fill(0.0)
    with np.errstate(over="ignore"):  # -x^2/2 -> -inf for |x| > 2.6e19 is harmless: exp gives 0
        for i in range(0, n, rows):
            c = x[i:i + rows]  # [r, I]
            if bias is not None:
                c += bias
            m = c.size
            _gelu_chunk(c.reshape(-1), a[:m], t[:m], q[:m], zero[:m])
    return x


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as BERT's `hidden_act: gelu` (never the tanh form)."""
    out = np.array(x, dtype=np.float32, order="C")
    gelu_(out.reshape(-1, 1), np.empty(8 * _CHUNK, np.float32))
    return out


def gelu_tanh_(x: np.ndarray, scratch: np.ndarray, bias: "np.ndarray | None" = None) -> np.ndarray:
    """The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`) in place; only for configs that ask for it."""
    if bias is not None:
        x += bias
    x[...] = 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)))
    return x


def relu_(x: np.ndarray, scratch: np.ndarray, bias: "np.ndarray | None" = None) -> np.ndarray:
    if bias is not None:
        x += bias
    return np.maximum(x, np.float32(0.0), out=x)


ACTIVATIONS = {"gelu": gelu_, "gelu_new": gelu_tanh_, "gelu_pytorch_tanh": gelu_tanh_, "relu": relu_}


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch), returning a new array."""
    out = np.array(x, dtype=np.float32, order="C")
    return layer_norm_(out, g, b, eps, np.empty(out.shape[0], np.float32))


_NEG_MEAN: Dict[int, np.ndarray] = {}


def _neg_mean_vector(h: int) -> np.ndarray:
    """A shared read-only `[h]` vector of -1/h: minus the row means as one matrix-vector product."""
    v = _NEG_MEAN.get(h)
    if v is None:
        v = np.full(h, -1.0 / h, np.float32)
        v.flags.writeable = False
        _NEG_MEAN[h] = v
    return v


_VECDOT = getattr(np, "vecdot", None)


def _row_sumsq(c: np.ndarray, out: np.ndarray) -> None:
    """out[i] <- sum_j c[i, j]^2 (np.vecdot, a ufunc since NumPy 2.0, costs half of einsum's call overhead)."""
    if _VECDOT is not None:
        _VECDOT(c, c, out=out)
    else:
        np.einsum("ij,ij->i", c, c, out=out)


_MINUS_HALF_POWER = np.float32(-0.5)


def layer_norm_(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float, stat: np.ndarray,
                *adds: np.ndarray) -> np.ndarray:
    """x <- LayerNorm(x + adds...) in place on `[n, H]` (each add an `[H]` bias or an `[n, H]` residual), in row
    pieces kept in cache, so the adds cost no extra memory pass; `stat` is `[n]` scratch. Two-pass variance, as torch."""
    n, h = x.shape
    rows = _row_piece(n, h)
    neg_mean, inv_h = _neg_mean_vector(h), np.float32(1.0 / h)
    for i in range(0, n, rows):
        c, s = x[i:i + rows], stat[i:i + rows, None]  # [r, H], [r, 1]
        for y in adds:
            c += y if y.ndim == 1 else y[i:i + rows]
        np.matmul(c, neg_mean, out=s[:, 0])  # [r, H] @ [H] -> [r]: -mean
        c += s  # centre
        _row_sumsq(c, s[:, 0])  # [r]
        s *= inv_h
        s += np.float32(eps)
        np.power(s, _MINUS_HALF_POWER, out=s)  # 1 / std
        c *= s
        c *= g
        c += b
    return x


class Workspace:
    """Named scratch buffers, grown on demand and reused across batches (one Workspace per thread)."""

    def __init__(self) -> None:
        self._bufs: Dict[str, np.ndarray] = {}

    def get(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        size = 1
        for n in shape:
            size *= n
        buf = self._bufs.get(name)
        if buf is None or buf.size < size:
            buf = self._bufs[name] = np.empty(max(size, 1024), dtype=np.float32)
        return buf[:size].reshape(shape)


@dataclass(frozen=True)
class AttnGroup:
    """Sequences of similar length attended together on a padded `[b, L]` grid."""

    b: int  # sequences
    L: int  # longest sequence
    rows: object  # [b, L] qkv row of each grid cell, padding -> the all-zero row n_tok; None: no padding at all
    valid: object  # [n_g] flat grid index of each real token, in packed order (None: no padding)
    dest: slice  # the packed rows of the group's tokens (sequences are contiguous in packed order)
    keep: np.ndarray  # [b, L, 1] float32, 1 for a real key and 0 for padding: softmax denominators by one product
    key_mask: object  # [b, 1, 1, L] additive mask (0 or -1e30) for the exact per-row path, or None: no padding


@dataclass(frozen=True)
class Packed:
    """Where each sequence's tokens sit in the packed `[n_tok, H]` matrix, and the attention groups."""

    lengths: np.ndarray  # [B] tokens per sequence
    offsets: np.ndarray  # [B] first packed row of each sequence
    positions: np.ndarray  # [n_tok] position of each token inside its sequence
    groups: Tuple[AttnGroup, ...]


def _group(lengths: np.ndarray, offsets: np.ndarray, start: int, stop: int, n_tok: int) -> AttnGroup:
    lens = lengths[start:stop]  # [b]
    b, L = stop - start, int(lens.max())
    first, last = int(offsets[start]), int(offsets[stop - 1] + lengths[stop - 1])
    if last - first == L * b:  # equal lengths: the packed rows already form the [b, L] grid
        return AttnGroup(b, L, None, None, slice(first, last), np.ones((b, L, 1), np.float32), None)
    pos = np.arange(L)  # [L]
    inside = pos[None, :] < lens[:, None]  # [b, L]
    rows = np.where(inside, offsets[start:stop, None] + pos[None, :], n_tok)  # [b, L]
    mask = np.where(inside, np.float32(0.0), np.float32(-1e30)).astype(np.float32)[:, None, None, :]
    return AttnGroup(b, L, rows, np.flatnonzero(inside), slice(first, last),
                     inside[:, :, None].astype(np.float32), mask)


def pack(lengths: Sequence[int], max_waste: float = 0.25) -> Packed:
    """Index arrays for one batch. Consecutive sequences share an attention group while padding stays under
    `max_waste` of the group's cells (callers sort batches by length, so groups are large)."""
    lengths = np.asarray(lengths, dtype=np.int64)  # [B]
    if len(lengths) == 1:  # serving fast path: one sequence, one group, no padding
        n = int(lengths[0])
        offsets = np.zeros(1, np.int64)
        return Packed(lengths, offsets, np.arange(n), (_group(lengths, offsets, 0, 1, n),))
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    n_tok = int(lengths.sum())
    positions = np.arange(n_tok) - np.repeat(offsets, lengths)  # [n_tok]
    groups: List[AttnGroup] = []
    start, longest, total = 0, 0, 0
    for i, n in enumerate(lengths.tolist()):
        new_longest, new_total = max(longest, n), total + n
        if i > start and new_longest * (i + 1 - start) * (1.0 - max_waste) > new_total:
            groups.append(_group(lengths, offsets, start, i, n_tok))
            start, new_longest, new_total = i, n, n
        longest, total = new_longest, new_total
    groups.append(_group(lengths, offsets, start, len(lengths), n_tok))
    return Packed(lengths, offsets, positions, tuple(groups))


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


# exp(s - max) never leaves float32's normal range while the scores of a whole group span less than this.
_SHARED_SHIFT_SPAN = 80.0


# Scores per attention block, in floats: 256K floats = 1 MB, about one core's L2 on the machines measured.
_SCORE_BLOCK = 1 << 18


def _softmax_ctx(q: np.ndarray, kt: np.ndarray, v: np.ndarray, keep: np.ndarray, key_mask, out: np.ndarray,
                 ws: "Workspace") -> None:
    """softmax(q k^T) v for `q, v [b, h, L, d]` and `kt [b, h, d, L]` (K already transposed: NumPy's stacked matmul
    with a transposed view is ~4x slower), padded keys with zero K/V, `keep [b, L, 1]` -> `out [b, h, L, d]`."""
    b, h, L, _ = q.shape
    s = np.matmul(q, kt, out=ws.get("att_s", (b, h, L, L)))  # [b, h, L, d] @ [b, h, d, L] -> [b, h, L, L]
    hi = s.max()
    if hi - s.min() < _SHARED_SHIFT_SPAN:
        s -= hi
        np.exp(s, out=s)  # [b, h, L, L], all in (exp(-80), 1]
        denom = np.matmul(s.reshape(b, h * L, L), keep,
                          out=ws.get("att_den", (b, h * L, 1)))  # [b, hL, L] @ [b, L, 1]: real keys only
    else:  # rare: scores far apart; exact per-row shift, padded keys masked to exactly 0
        if key_mask is not None:
            s += key_mask
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        denom = s.sum(axis=-1, keepdims=True)  # [b, h, L, 1]
    np.matmul(s, v, out=out)  # [b, h, L, L] @ [b, h, L, d] -> [b, h, L, d] (padded V rows are zero)
    out /= denom.reshape(b, h, L, 1)  # softmax normalisation


def _attend_group(qkv: np.ndarray, g: AttnGroup, n_heads: int, out: np.ndarray, ws: "Workspace") -> None:
    """Attention of one group: `qkv [n_tok + 1, 3H]` (last row zero) -> `out [n_tok, H]` rows of the group.

    Softmax: the scores are shifted by one constant per group (their maximum) when they span less than 80, which is
    exact softmax (any per-row constant cancels) and keeps every exp(.) normal; padded keys have zero K and V rows,
    and the `keep` product leaves them out of the denominators. Otherwise: the per-row maximum with an additive mask.
    Every intermediate lives in `ws` (fresh multi-MB arrays per call cost more in page faults than the arithmetic).
    """
    H = out.shape[1]
    d = H // n_heads
    b, L = g.b, g.L
    if g.rows is None:  # no padding: a view of the group's packed rows
        grid = qkv[g.dest].reshape(b, L, 3 * H)  # [b * L, 3H] -> [b, L, 3H]
    else:
        grid = np.take(qkv, g.rows, axis=0, out=ws.get("att_grid", (b, L, 3 * H)), mode="clip")  # padding: zero row
    heads = grid.reshape(b, L, 3, n_heads, d)  # [b, L, 3H] -> [b, L, 3, h, d] view
    q = heads[:, :, 0].transpose(0, 2, 1, 3)  # [b, h, L, d] view: rows 3H apart, still one BLAS call per head
    v = heads[:, :, 2].transpose(0, 2, 1, 3)  # [b, h, L, d] view
    kt = ws.get("att_kt", (b, n_heads, d, L))
    np.copyto(kt, heads[:, :, 1].transpose(0, 2, 3, 1))  # K -> [b, h, d, L]: the one copy (see _softmax_ctx)
    if g.valid is None:  # no padding: the context goes straight into the group's packed rows
        ctx_grid = out[g.dest].reshape(b, L, n_heads, d)  # [b * L, H] -> [b, L, h, d] view
    else:
        ctx_grid = ws.get("att_out", (b, L, n_heads, d))
    ctx = ctx_grid.transpose(0, 2, 1, 3)  # [b, h, L, d] view
    # Blocks of sb sequences x hb heads keep the scores under _SCORE_BLOCK floats (in cache): all heads of several
    # sequences, or one sequence and a few heads when a single sequence's scores are larger.
    hb = n_heads if n_heads * L * L <= _SCORE_BLOCK else max(1, _SCORE_BLOCK // (L * L))
    sb = max(1, _SCORE_BLOCK // (hb * L * L)) if hb == n_heads else 1
    for i in range(0, b, sb):
        j = min(b, i + sb)
        mask = None if g.key_mask is None else g.key_mask[i:j]
        for h0 in range(0, n_heads, hb):
            h1 = min(n_heads, h0 + hb)
            _softmax_ctx(q[i:j, h0:h1], kt[i:j, h0:h1], v[i:j, h0:h1], g.keep[i:j], mask, ctx[i:j, h0:h1], ws)
    if g.valid is not None:
        np.take(ctx_grid.reshape(b * L, H), g.valid, axis=0, out=out[g.dest], mode="clip")  # real tokens -> [n_g, H]


def attention(qkv: np.ndarray, packed: Packed, n_heads: int, out: np.ndarray, ws: "Workspace | None" = None
              ) -> np.ndarray:
    """Multi-head self-attention of packed tokens, `qkv [n_tok + 1, 3H]` (Q pre-scaled, last row all zero)
    -> `out [n_tok, H]`."""
    ws = Workspace() if ws is None else ws
    for g in packed.groups:
        _attend_group(qkv, g, n_heads, out, ws)
    return out


def encoder_layer(x: np.ndarray, lp: LayerParams, packed: Packed, cfg: BertConfig, ws: Workspace) -> np.ndarray:
    """One post-LN BERT layer, in place on x: x = LN(x + attn(x)); x = LN(x + FFN(x))."""
    n, H = x.shape
    eps, act = cfg.layer_norm_eps, ACTIVATIONS[cfg.hidden_act]
    stat, scratch = ws.get("stat", (n,)), ws.get("scratch", (8 * _CHUNK,))
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
