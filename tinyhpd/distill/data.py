"""Distillation data: the sentence file, a seeded sample, the train/validation split."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from tinyhpd._io import iter_lines


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def read_sentences(path: os.PathLike | str) -> List[str]:
    """Read one sentence per line (UTF-8), dropping blank lines and exact duplicates, keeping file order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sentences file not found: {p}")
    seen: dict[str, None] = {}
    for line in iter_lines(p):  # split on \n only, as every file of lines in tinyhpd
        s = " ".join(line.split())
        if s:
            seen.setdefault(s, None)
    if not seen:
        raise ValueError(f"sentences file {p} holds no non-blank line")
    return list(seen)


def sample_indices(n: int, max_n: Optional[int], seed: int) -> np.ndarray:
    """A seeded random order of ``range(n)``, cut to ``max_n`` items: any prefix is a uniform random subsample."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_n is not None and max_n < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_n}")
    order = np.random.default_rng(seed).permutation(n)
    return order if max_n is None else order[:max_n]


def split_train_val(n: int, val_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positions ``[0, n)`` split into (train, validation); the validation slice is the last ``val_size`` items."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} for {n} sentences, got {val_size}")
    return np.arange(n - val_size), np.arange(n - val_size, n)
