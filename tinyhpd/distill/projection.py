"""The homomorphic projection: top-PCA directions of the teacher, applied without centring."""
from __future__ import annotations

from typing import Tuple

import numpy as np


# ----------------------------------------------------------------------------------------------------------------------
# Homomorphic projection
# ----------------------------------------------------------------------------------------------------------------------
def fit_projection(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The top-``dim`` principal directions of ``embeddings`` as a ``(dim, d)`` float32 matrix (rows orthonormal).

    Directions come from the covariance of the *centred* embeddings (as PCA computes them), ordered by decreasing
    variance; each row's sign is fixed so that its largest-magnitude entry is positive (deterministic output).
    Apply it with :func:`project`, which does *not* subtract the mean.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= dim <= d:
        raise ValueError(f"dim must be between 1 and {d}, got {dim}")
    if n < 2:
        raise ValueError("need at least 2 embeddings to fit a projection")
    xc = x - x.mean(axis=0, keepdims=True)
    cov = xc.T @ xc / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, np.argsort(evals)[::-1][:dim]].T
    signs = np.sign(comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    return (comps * signs[:, None]).astype(np.float32)


def project(embeddings: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Apply the bias-free homomorphic projection: ``embeddings @ components.T`` (no mean subtraction)."""
    return (np.asarray(embeddings, dtype=np.float32) @ np.asarray(components, dtype=np.float32).T).astype(np.float32)


def auto_target_scale(targets: np.ndarray, limit: float = 0.9) -> float:
    """1.0 when every ``|target| <= limit`` (e.g. a normalised teacher), else ``limit / max|target|``.

    Cosine similarity ignores a global scale, so shrinking the targets keeps the Tanh head out of saturation without
    changing what the student learns to rank.
    """
    peak = float(np.abs(targets).max()) if np.size(targets) else 0.0
    return 1.0 if peak <= limit else limit / peak


def init_dense_least_squares(
    features: np.ndarray, targets: np.ndarray, *, clip: float = 0.995, ridge: float = 1e-3
) -> Tuple[np.ndarray, np.ndarray]:
    """Weights ``(out, in)`` and bias ``(out,)`` such that ``tanh(features @ W.T + b)`` fits ``targets``.

    Solves ridge-regularised least squares from the student's pooled features to ``atanh(clip(targets))``; a good
    starting point for the Dense + Tanh head before fine-tuning the whole student.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.arctanh(np.clip(np.asarray(targets, dtype=np.float64), -clip, clip))
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and targets {y.shape} must be 2-d with the same number of rows")
    xa = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    gram = xa.T @ xa
    reg = ridge * np.trace(gram) / gram.shape[0] * np.eye(gram.shape[0])
    reg[-1, -1] = 0.0  # do not shrink the bias
    sol = np.linalg.solve(gram + reg, xa.T @ y)
    return sol[:-1].T.astype(np.float32), sol[-1].astype(np.float32)
