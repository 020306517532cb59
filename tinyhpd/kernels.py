"""Element-wise kernels of the encoder, in place on float32 buffers: exact GELU (erf), LayerNorm, and the per-thread
Workspace of scratch buffers. Kept out of bert.py so that the forward pass there reads like the math."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

__all__ = ["erf", "gelu", "gelu_", "gelu_tanh_", "relu_", "ACTIVATIONS", "layer_norm", "layer_norm_", "Workspace",
           "CHUNK"]

CHUNK = 32768  # elements per in-place pass: 128 KB of float32; a chain of ufuncs over 4 such buffers stays in L2

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
    overhead matters more there), else about CHUNK elements."""
    return n if n * width <= 2 * CHUNK else max(1, CHUNK // width)


def gelu_(x: np.ndarray, scratch: np.ndarray, bias: "np.ndarray | None" = None) -> np.ndarray:
    """x <- GELU(x + bias), exact (erf) form, in place on a C-contiguous float32 `[n, I]`, in row pieces that stay in
    cache (the bias is added there too: one memory pass less); `scratch` holds >= 4 * 2 * CHUNK floats."""
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
    gelu_(out.reshape(-1, 1), np.empty(8 * CHUNK, np.float32))
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


