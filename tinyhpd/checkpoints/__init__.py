"""Weights files read without torch: which file of a folder holds the weights, and one reader per format.

| file | reader |
|---|---|
| `model.safetensors` | `safetensors.read_safetensors` (memory-mapped) |
| `pytorch_model.bin`, torch >= 1.6 zip format | `torch_pickle.read_torch_zip` (restricted unpickler) |
| `pytorch_model.bin`, torch's legacy format | `torch_pickle.read_torch_legacy` (same unpickler) |
| `*.index.json` (sharded, either kind of shard) | `read_checkpoint` reads each shard |

The strict mapping of the tensors onto tinyhpd's layout is `tinyhpd.params`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from tinyhpd.checkpoints.safetensors import read_safetensors
from tinyhpd.checkpoints.torch_pickle import read_torch, read_torch_legacy, read_torch_zip

__all__ = ["CHECKPOINT_NAMES", "find_checkpoint", "read_checkpoint", "read_safetensors", "read_torch",
           "read_torch_zip", "read_torch_legacy"]

CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin")


def find_checkpoint(folder: Path) -> Path:
    """`model.safetensors` first, else `pytorch_model.bin` (sharded `*.index.json` variants too)."""
    for name in CHECKPOINT_NAMES:
        for candidate in (folder / name, folder / f"{name}.index.json"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{folder}: no weights found (expected {' or '.join(CHECKPOINT_NAMES)})")


def read_checkpoint(path: Path) -> Dict[str, np.ndarray]:
    """Read one checkpoint file, or every shard a `*.index.json` names, into NumPy arrays."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        from tinyhpd.config import read_json

        index = read_json(path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{path}: 'weight_map' must map tensor names to shard file names")
        out: Dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = path.parent / shard
            if "/" in shard or "\\" in shard or shard.endswith(".index.json") or not shard_path.is_file():
                raise ValueError(f"{path}: shard {shard!r} must be a weights file in the same folder")
            tensors = read_checkpoint(shard_path)
            twice = sorted(set(tensors) & set(out))
            if twice:
                raise ValueError(f"{path}: tensor {twice[0]!r} is in more than one shard ({shard} and another)")
            out.update(tensors)
        listed, found = set(weight_map), set(out)
        if listed != found:
            name = sorted(listed - found or found - listed)[0]
            where = "is listed in weight_map but in no shard" if name in listed else "is in a shard but not listed"
            raise ValueError(f"{path}: tensor {name!r} {where}")
        return out
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch(path)
