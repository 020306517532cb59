"""`convert`: a model folder copied with its weights rewritten as `model.safetensors` (read without torch), so later
loads are pickle-free and memory-mapped."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Set

import numpy as np

from tinyhpd.config import read_json
from tinyhpd.hub import resolve
from tinyhpd.checkpoints import CHECKPOINT_NAMES, find_checkpoint, read_checkpoint

__all__ = ["convert"]


def _weights_files(folder: Path) -> Set[Path]:
    """Every weights file of a model folder (the encoder's and each module's): the checkpoint names, sharded indexes
    and the shards they list. Each folder holding any of them gets one `model.safetensors` in their place."""
    found: Set[Path] = set()
    for name in CHECKPOINT_NAMES:
        for path in [*folder.rglob(name), *folder.rglob(f"{name}.index.json")]:
            rel = path.relative_to(folder)
            if rel.parts[0].startswith(".") or rel.parts[0] in ("onnx", "openvino") or not path.is_file():
                continue
            found.add(path)
            if path.name.endswith(".index.json"):
                weight_map = read_json(path).get("weight_map")
                if isinstance(weight_map, dict):
                    found.update(path.parent / str(shard) for shard in set(weight_map.values()))
    return found


def convert(src: str, dst: Optional[str] = None, *, revision: Optional[str] = None, dtype: str = "float32",
            force: bool = False) -> Path:
    """Copy a model folder with its weights (`pytorch_model.bin` in either torch format, sharded checkpoints of either
    kind) rewritten as one `model.safetensors` per module folder (read without torch)."""
    from safetensors.numpy import save_file

    folder, model_id, rev = resolve(src, revision)
    target = Path(dst) if dst else Path.cwd() / Path(model_id).name  # never into the installed package
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    if target.exists() and not (target.is_dir() and ((target / "modules.json").is_file()
                                                      or (target / "config.json").is_file())):
        raise FileExistsError(f"{target} exists and is not a model folder (no modules.json or config.json): "
                              "--force replaces only a model folder; nothing was changed")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        weights = _weights_files(folder)
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_dir() or rel.parts[0].startswith(".") or rel.parts[0] in ("onnx", "openvino") or path in weights:
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
        for sub in sorted({p.parent for p in weights}):
            tensors = {k: np.ascontiguousarray(v) for k, v in read_checkpoint(find_checkpoint(sub)).items()}
            if dtype == "float16":
                tensors = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in tensors.items()}
            out = tmp / sub.relative_to(folder) / "model.safetensors"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(out), metadata={"format": "pt"})
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
