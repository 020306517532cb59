"""`tinyhpd embed INPUT --out DIR`: a resumable corpus job (shards, manifest; see tinyhpd/corpus.py)."""
from __future__ import annotations

import json
import sys

from tinyhpd.cli.common import add_model_args, count, load_from_args


def add_cli(sub) -> None:
    p = sub.add_parser("embed", help="embed a large text/JSONL/Parquet file into resumable shards",
                       description="Stream INPUT (a text file with one item a line, JSONL with --field, or Parquet "
                                   "with --field as the column) into DIR/part-NNNNN.npy shards plus ids and a "
                                   "manifest. Killed, the same command continues from the first missing shard.")
    p.add_argument("input", help="text file (one item a line), .jsonl, or .parquet")
    p.add_argument("--out", required=True, help="output folder (created; a folder of another job is refused)")
    add_model_args(p)
    p.add_argument("--field", default=None, help="JSONL key or Parquet column holding the text (default: text)")
    p.add_argument("--shard-size", type=count, default=100_000, help="rows per shard (default 100000)")
    p.add_argument("--format", dest="fmt", choices=("npy", "parquet"), default="npy", help="shard format")
    p.add_argument("--batch-size", type=count, default=256)
    p.add_argument("--progress", action="store_true", default=None, help="progress bar (default: on a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd.corpus import embed_corpus

    model = load_from_args(args)
    manifest = embed_corpus(args.input, args.out, model, field=args.field, shard_size=args.shard_size, fmt=args.fmt,
                            batch_size=args.batch_size, progress=args.progress)
    print(json.dumps({"out": args.out, "rows": manifest["rows"], "shards": manifest["shards"],
                      "dim": manifest["dim"]}), file=sys.stderr)
    return 0
