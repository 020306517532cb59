"""safetensors files, memory-mapped and zero-copy: the header is checked first (`_io.safetensors_header`: offsets,
sizes and dtypes must agree exactly), then every tensor is a read-only view of one `np.memmap` (bfloat16 widened to
float32)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from tinyhpd import dtypes
from tinyhpd._io import safetensors_header

__all__ = ["read_safetensors"]


def read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    """All tensors of a .safetensors file as read-only arrays (views of one memory map; bfloat16 widened to float32)."""
    path = Path(path)
    _, header, start = safetensors_header(path)
    data = (np.memmap(path, dtype=np.uint8, mode="r", offset=start) if path.stat().st_size > start
            else np.zeros(0, np.uint8))
    out: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        dtype = dtypes.by_safetensors(info["dtype"])  # known: the header check refuses other codes
        begin, end = info["data_offsets"]
        out[name] = dtypes.from_bytes(data[begin:end], dtype, f"{path}: tensor {name!r}").reshape(tuple(info["shape"]))
    return out
