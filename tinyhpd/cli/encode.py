"""`tinyhpd encode`: sentences from arguments or a file (one a line) -> JSON lines on stdout or a .npy file."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinyhpd.cli.common import add_model_args, count, items_from_args, load_from_args


def add_cli(sub) -> None:
    p = sub.add_parser("encode", help="embed sentences: JSON arrays on stdout, or a .npy file",
                       description="Embed sentences given as arguments or in a file (one sentence a line).")
    p.add_argument("sentences", nargs="*", help="sentences to embed")
    add_model_args(p)
    p.add_argument("--input", "-i", help="text file with one sentence a line ('-' for stdin)")
    p.add_argument("--out", "-o", help="write a float32 .npy array [n, d] here instead of JSON lines on stdout")
    p.add_argument("--batch-size", type=count, default=32)
    p.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on for long inputs on a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd._io import save_npy_atomic

    texts = items_from_args(args.sentences, args.input, "sentences", "encode")
    if args.out is not None:
        out = Path(args.out)
        if out.suffix != ".npy":
            raise ValueError(f"--out {out}: expected a .npy file name")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    progress = args.progress if args.progress is not None else (len(texts) >= 1000 and sys.stderr.isatty())
    model = load_from_args(args)
    vecs = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize,
                        show_progress_bar=progress)
    if args.out is not None:
        save_npy_atomic(Path(args.out), vecs)
        print(f"wrote {vecs.shape[0]} x {vecs.shape[1]} float32 to {args.out}", file=sys.stderr)
    else:
        write = sys.stdout.write
        for v in vecs:
            write(json.dumps([float(x) for x in v], allow_nan=False) + "\n")  # never non-JSON NaN
        sys.stdout.flush()
    return 0
