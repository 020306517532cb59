"""`tinyhpd export SRC --to postgresql://... --table T`: an index or embed folder into PostgreSQL + pgvector."""
from __future__ import annotations

import json

from tinyhpd.cli.common import count


def add_cli(sub) -> None:
    p = sub.add_parser("export", help="export an index or embed folder into PostgreSQL + pgvector",
                       description="Copy the ids and vectors of SRC (an index folder, or a complete `tinyhpd embed` "
                                   "folder) into table T (id primary key, halfvec or vector column) with binary COPY in "
                                   "batches, then create an HNSW index. Killed, the same command continues after the "
                                   "last committed batch. Needs: pip install 'tinyhpd[postgres]'.")
    p.add_argument("source", help="index folder (Index.save / index build) or embed output folder")
    p.add_argument("--to", required=True, help="postgresql://user:password@host:port/db (host=/socket/dir works too)")
    p.add_argument("--table", required=True, help="table to create and fill (schema.table allowed)")
    p.add_argument("--column-type", choices=("halfvec", "vector"), default="halfvec",
                   help="halfvec (2 bytes a component, default) or vector (4)")
    p.add_argument("--batch-size", type=count, default=10_000, help="rows per COPY and transaction (default 10000)")
    p.add_argument("--no-index", action="store_true", help="do not create the HNSW index after the load")
    p.add_argument("--m", type=count, default=16, help="HNSW m (pgvector's default 16)")
    p.add_argument("--ef-construction", type=count, default=64, help="HNSW ef_construction (pgvector's default 64)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd.pgvector import export

    summary = export(args.source, args.to, args.table, column_type=args.column_type, batch_size=args.batch_size,
                     create_index=not args.no_index, m=args.m, ef_construction=args.ef_construction)
    print(json.dumps(summary))
    return 0
