"""Packing and attention: where each sequence's tokens sit in the packed `[n_tok, H]` matrix, the groups of sequences
of similar length that attend on one padded grid, and blocked multi-head self-attention over those groups."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from tinyhpd.kernels import Workspace

__all__ = ["AttnGroup", "Packed", "pack", "attention"]


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


# exp(s - max) never leaves float32's normal range while the scores of a whole group span less than this.
_SHARED_SHIFT_SPAN = 80.0


# Scores per attention block, in floats: 256K floats = 1 MB, about one core's L2 on the machines measured.
_SCORE_BLOCK = 1 << 18


def _softmax_ctx(q: np.ndarray, kt: np.ndarray, v: np.ndarray, keep: np.ndarray, key_mask, out: np.ndarray,
                 ws: "Workspace", bias=None) -> None:
    """softmax(q k^T + bias) v for `q, v [b, h, L, d]` and `kt [b, h, d, L]` (K already transposed: NumPy's stacked
    matmul with a transposed view is ~4x slower), padded keys with zero K/V, `keep [b, L, 1]`, an optional additive
    `bias [h, L, L]` shared by the b sequences -> `out [b, h, L, d]`."""
    b, h, L, _ = q.shape
    s = np.matmul(q, kt, out=ws.get("att_s", (b, h, L, L)))  # [b, h, L, d] @ [b, h, d, L] -> [b, h, L, L]
    if bias is not None:
        s += bias  # [b, h, L, L] + [h, L, L]
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


def _attend_group(qkv: np.ndarray, g: AttnGroup, n_heads: int, out: np.ndarray, ws: "Workspace", bias=None) -> None:
    """Attention of one group: `qkv [n_tok + 1, 3H]` (last row zero) -> `out [n_tok, H]` rows of the group.

    Softmax: the scores are shifted by one constant per group (their maximum) when they span less than 80, which is
    exact softmax (any per-row constant cancels) and keeps every exp(.) normal; padded keys have zero K and V rows,
    and the `keep` product leaves them out of the denominators. Otherwise: the per-row maximum with an additive mask.
    Every intermediate lives in `ws` (fresh multi-MB arrays per call cost more in page faults than the arithmetic).
    `bias [h, L', L']` (L' >= the group's L): an additive score bias by query and key position (MPNet).
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
            blk = None if bias is None else (bias if bias.shape[0] == 1 else bias[h0:h1])[:, :L, :L]  # [hb|1, L, L]
            _softmax_ctx(q[i:j, h0:h1], kt[i:j, h0:h1], v[i:j, h0:h1], g.keep[i:j], mask, ctx[i:j, h0:h1], ws, blk)
    if g.valid is not None:
        np.take(ctx_grid.reshape(b * L, H), g.valid, axis=0, out=out[g.dest], mode="clip")  # real tokens -> [n_g, H]


def attention(qkv: np.ndarray, packed: Packed, n_heads: int, out: np.ndarray, ws: "Workspace | None" = None,
              bias: "np.ndarray | None" = None) -> np.ndarray:
    """Multi-head self-attention of packed tokens, `qkv [n_tok + 1, 3H]` (Q pre-scaled, last row all zero)
    -> `out [n_tok, H]`; `bias [h, L, L]` or `[1, L, L]` (L: the longest sequence) is added to every sequence's
    scores."""
    ws = Workspace() if ws is None else ws
    for g in packed.groups:
        _attend_group(qkv, g, n_heads, out, ws, bias)
    return out


