"""`tinyhpd convert SRC [DST]`."""
from __future__ import annotations

import sys


def add_cli(sub) -> None:
    c = sub.add_parser("convert", help="rewrite a model's pickled weights as safetensors (pickle-free, mmap loads)",
                       description="Copy a sentence-transformers folder (or Hub model) with every pytorch_model.bin "
                                   "rewritten as model.safetensors, read without torch.")
    c.add_argument("src", help="model folder or Hub id")
    c.add_argument("dst", nargs="?", help="output folder (default: ./<name> in the current folder)")
    c.add_argument("--revision", default=None)
    c.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type of float tensors")
    c.add_argument("--force", action="store_true", help="replace dst if it is a model folder")
    c.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd.convert import convert

    target = convert(args.src, args.dst, revision=args.revision, dtype=args.dtype, force=args.force)
    print(f"wrote {target}", file=sys.stderr)
    return 0
