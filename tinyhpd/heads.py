"""What sentence-transformers puts after the encoder: Pooling, Dense and Normalize, on packed token embeddings."""
from __future__ import annotations

import numpy as np

from tinyhpd.config import PoolingConfig
from tinyhpd.weights import DenseParams

__all__ = ["pool", "dense", "normalize", "DENSE_ACTIVATIONS"]


def pool(tokens: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, cfg: PoolingConfig) -> np.ndarray:
    """Pool each sequence's packed token rows `[n_tok, H]` -> `[B, H * n_modes]`, modes in sentence-transformers' order."""
    parts = []
    for mode in cfg.modes:
        if mode == "cls":
            parts.append(tokens[offsets])  # [B, H]
        elif mode == "max":
            parts.append(np.maximum.reduceat(tokens, offsets, axis=0))  # [B, H]
        elif mode == "mean":
            parts.append(np.add.reduceat(tokens, offsets, axis=0) / lengths[:, None].astype(np.float32))  # [B, H]
        elif mode == "mean_sqrt_len_tokens":
            parts.append(np.add.reduceat(tokens, offsets, axis=0) / np.sqrt(lengths[:, None].astype(np.float32)))
        elif mode == "weightedmean":  # token i of a sequence weighs i + 1
            w = (np.arange(tokens.shape[0]) - np.repeat(offsets, lengths) + 1).astype(np.float32)  # [n_tok]
            total = (lengths * (lengths + 1) / 2).astype(np.float32)  # [B]
            parts.append(np.add.reduceat(tokens * w[:, None], offsets, axis=0) / total[:, None])  # [B, H]
        else:  # lasttoken
            parts.append(tokens[offsets + lengths - 1])  # [B, H]
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return out.astype(np.float32, copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    from tinyhpd.bert import gelu

    return gelu(x)


DENSE_ACTIVATIONS = {
    "Tanh": np.tanh,
    "Identity": lambda x: x,
    "ReLU": lambda x: np.maximum(x, 0),
    "Sigmoid": _sigmoid,
    "GELU": _gelu,
}


def dense(x: np.ndarray, p: DenseParams, activation: str) -> np.ndarray:
    """y = activation(x W + b): `[B, in]` -> `[B, out]`."""
    return DENSE_ACTIVATIONS[activation](x @ p.w + p.b).astype(np.float32, copy=False)


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as torch's F.normalize (norm clamped at 1e-12)."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]  # [B, 1]
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)
