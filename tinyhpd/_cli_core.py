"""`tinyhpd encode` and `tinyhpd convert`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

__all__ = ["add_cli", "convert", "save_npy_atomic"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model / --revision, shared by every sub-command that loads a model."""
    p.add_argument("--model", default=None, help="local sentence-transformers folder or Hub id "
                   "(default: $TINYHPD_MODEL, else the bundled model, else the pinned Xuandong/HPD-TinyBERT-F128)")
    p.add_argument("--revision", default=None, help="Hub revision (commit, branch or tag)")


def add_cli(sub) -> None:
    p = sub.add_parser("encode", help="embed sentences: JSON arrays on stdout, or a .npy file",
                       description="Embed sentences given as arguments or in a file (one sentence a line).")
    p.add_argument("sentences", nargs="*", help="sentences to embed")
    add_model_args(p)
    p.add_argument("--input", "-i", help="text file with one sentence a line ('-' for stdin)")
    p.add_argument("--out", "-o", help="write a float32 .npy array [n, d] here instead of JSON lines on stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on for long inputs on a terminal)")
    p.set_defaults(func=_run_encode)

    c = sub.add_parser("convert", help="rewrite a model's pickled weights as safetensors (pickle-free, mmap loads)",
                       description="Copy a sentence-transformers folder (or Hub model) with every pytorch_model.bin "
                                   "rewritten as model.safetensors, read without torch.")
    c.add_argument("src", help="model folder or Hub id")
    c.add_argument("dst", nargs="?", help="output folder (default: ./<name> in the current folder)")
    c.add_argument("--revision", default=None)
    c.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type of float tensors")
    c.add_argument("--force", action="store_true", help="replace dst if it exists")
    c.set_defaults(func=_run_convert)


def _read_lines(path: str) -> List[str]:
    if path == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save through a temporary file in the same folder, fsync'd, then renamed: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _run_encode(args) -> int:
    import tinyhpd

    if args.input is not None and args.sentences:
        raise ValueError("give sentences as arguments or with --input, not both")
    if args.input is None and not args.sentences:
        raise ValueError("nothing to encode: give sentences as arguments or --input FILE")
    texts = _read_lines(args.input) if args.input is not None else list(args.sentences)
    if args.out is not None:
        out = Path(args.out)
        if out.suffix != ".npy":
            raise ValueError(f"--out {out}: expected a .npy file name")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    progress = args.progress if args.progress is not None else (len(texts) >= 1000 and sys.stderr.isatty())
    model = tinyhpd.load(args.model, revision=args.revision)
    vecs = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize,
                        show_progress_bar=progress)
    if args.out is not None:
        save_npy_atomic(Path(args.out), vecs)
        print(f"wrote {vecs.shape[0]} x {vecs.shape[1]} float32 to {args.out}", file=sys.stderr)
    else:
        write = sys.stdout.write
        for v in vecs:
            write(json.dumps([float(x) for x in v]) + "\n")
    return 0


def convert(src: str, dst: Optional[str] = None, *, revision: Optional[str] = None, dtype: str = "float32",
            force: bool = False) -> Path:
    """Copy a model folder with every `pytorch_model.bin` rewritten as `model.safetensors` (read without torch)."""
    from safetensors.numpy import save_file

    from tinyhpd.hub import resolve
    from tinyhpd.weights import read_checkpoint

    folder, model_id, rev = resolve(src, revision)
    target = Path(dst) if dst else Path.cwd() / Path(model_id).name  # never into the installed package
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
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


def _run_convert(args) -> int:
    target = convert(args.src, args.dst, revision=args.revision, dtype=args.dtype, force=args.force)
    print(f"wrote {target}", file=sys.stderr)
    return 0
