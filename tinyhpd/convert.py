"""`convert`: a model folder copied with every `pytorch_model.bin` rewritten as `model.safetensors` (read without torch),
so later loads are pickle-free and memory-mapped."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from tinyhpd.hub import resolve
from tinyhpd.checkpoints import read_checkpoint

__all__ = ["convert"]


def convert(src: str, dst: Optional[str] = None, *, revision: Optional[str] = None, dtype: str = "float32",
            force: bool = False) -> Path:
    """Copy a model folder with every `pytorch_model.bin` rewritten as `model.safetensors` (read without torch)."""
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
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_dir() or rel.parts[0].startswith(".") or rel.parts[0] in ("onnx", "openvino"):
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.name in ("pytorch_model.bin", "model.safetensors"):
                if path.name == "pytorch_model.bin" and (path.parent / "model.safetensors").exists():
                    continue
                tensors = {k: np.ascontiguousarray(v) for k, v in read_checkpoint(path).items()}
                if dtype == "float16":
                    tensors = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in tensors.items()}
                save_file(tensors, str(out.with_name("model.safetensors")), metadata={"format": "pt"})
            else:
                shutil.copy2(path, out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
