"""Packaging a distilled model: float16 copy and SHA256SUMS."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------------------------------------------------
# Packaging
# ----------------------------------------------------------------------------------------------------------------------
def convert_float16(src: os.PathLike | str, dst: os.PathLike | str) -> Path:
    """Copy a sentence-transformers folder to ``dst`` with every floating-point safetensors tensor stored as float16.

    Non-weight files are copied unchanged; ``config.json`` keeps (or gets) ``"torch_dtype": "float32"`` and
    ``"dtype": "float32"`` so that transformers upcasts the half-precision weights at load, like tinyhpd does.
    """
    import shutil

    from safetensors.numpy import load_file, save_file

    src, dst = Path(src), Path(dst)
    if not (src / "modules.json").is_file():
        raise FileNotFoundError(f"{src}: not a sentence-transformers folder (no modules.json)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".safetensors":
            tensors = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in load_file(str(f)).items()}
            save_file(tensors, str(out), metadata={"format": "pt"})
            os.chmod(out, 0o644)
        elif rel.as_posix() == "config.json":
            cfg = json.loads(f.read_text(encoding="utf-8"))
            cfg["torch_dtype"] = cfg["dtype"] = "float32"
            out.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        else:
            shutil.copy2(f, out)
    return dst


def write_sha256sums(folder: os.PathLike | str, pattern: str = "*.safetensors") -> Path:
    """Write ``<folder>/SHA256SUMS`` (``sha256sum`` format, paths relative to the folder) for files matching ``pattern``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no file matches {pattern!r}")
    lines = []
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        lines.append(f"{h.hexdigest()}  {p.relative_to(folder).as_posix()}\n")
    out = folder / "SHA256SUMS"
    out.write_text("".join(lines), encoding="utf-8")
    return out
