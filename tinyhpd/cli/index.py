"""`tinyhpd index build CORPUS --out DIR`, `tinyhpd index tune DIR --queries FILE` and `tinyhpd search DIR QUERY`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Tuple

from tinyhpd._io import iter_lines
from tinyhpd.cli import common
from tinyhpd.cli.common import add_model_args, count

DTYPES = ("float32", "float16", "int8", "binary")  # tinyhpd.index.DTYPES, without importing the index here


def _read_lines(path: Path, what: str) -> Tuple[List[str], List[int]]:
    """Non-blank lines of a UTF-8 text file (``what``: the corpus, the queries) and their 1-based line numbers."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    texts, ids = [], []
    for number, line in enumerate(iter_lines(path), start=1):
        if line.strip():
            texts.append(line)
            ids.append(number)
    if not texts:
        raise ValueError(f"{path}: the {what} file holds no non-blank line")
    return texts, ids


def _graph_summary(index: Any) -> str:
    info = index.ann_info
    measured = info["measured"] or {}
    return (f"HNSW graph: connectivity {info['connectivity']}, expansion {info['expansion_search']}, measured "
            f"recall@10 {measured.get('recall', 'n/a')} on {measured.get('queries', 'no sample')}")


def run_build(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    if args.tune_queries is not None and args.ann is None:
        raise ValueError("--tune-queries tunes an approximate index's graph: pass --ann hnsw too")
    texts, ids = _read_lines(corpus, "corpus")
    queries = None if args.tune_queries is None else _read_lines(Path(args.tune_queries), "queries")[0]
    from tinyhpd.index import Index

    model = common.load_from_args(args)
    index = Index.build(texts, model=model, ids=ids, dtype=args.dtype, batch_size=args.batch_size,
                        show_progress_bar=not args.quiet and sys.stderr.isatty(), ann=args.ann,
                        target_recall=args.target_recall, tune_queries=queries)
    index.save(args.out)
    graph = "" if index.ann_info is None else "; " + _graph_summary(index)
    print(f"indexed {len(index)} lines of {corpus} ({index.dim}-d, {index.dtype}, {index.bytes_per_vector} bytes per "
          f"vector, {index.nbytes} bytes of vectors and graph) into {args.out}; ids are line numbers{graph}")
    return 0


def run_tune(args: argparse.Namespace) -> int:
    queries = _read_lines(Path(args.queries), "queries")[0]
    from tinyhpd.index import Index

    index = Index.load(args.index, mmap=True)
    if index.ann is None:
        raise ValueError(f"{args.index}: the index has no graph (built without --ann hnsw): nothing to tune")
    before = index.ann_info["expansion_search"]
    index.model = _query_model(args, index)
    index.tune(queries, batch_size=args.batch_size)
    index.save(args.index)
    print(f"tuned {args.index} on the {len(queries)} queries of {args.queries} (kept with the index for its later "
          f"tunings): {_graph_summary(index)} (the expansion was {before})")
    return 0


def _query_model(args: argparse.Namespace, index: Any) -> Any:
    """The model for text queries: --model, else the one the index records."""
    info = index.model_info or {}
    name = args.model or info.get("name_or_path")
    if not name:
        raise ValueError(f"{args.index}: the index records no model; pass --model")
    return common.load_model(name, args.revision if args.model else info.get("revision"), args.threads)


def run_search(args: argparse.Namespace) -> int:
    from tinyhpd.index import Index

    index = Index.load(args.index, mmap=True)
    index.model = _query_model(args, index)
    hits = index.search(args.query, top_k=args.top_k, exact=args.exact)
    if args.json:
        print(json.dumps([{"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in
                          enumerate(zip(hits.ids, hits.scores))], ensure_ascii=False))
    else:
        for r, (i, s) in enumerate(zip(hits.ids, hits.scores), start=1):
            print(f"{r}\t{s:.4f}\t{i}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``index build`` and ``search``."""
    p_index = subparsers.add_parser("index", help="build a semantic search index")
    index_sub = p_index.add_subparsers(dest="index_command", metavar="ACTION")
    index_sub.required = True
    p_build = index_sub.add_parser("build", help="encode a text file (one document per line) into an index folder")
    p_build.add_argument("corpus", help="UTF-8 text file, one document per line; ids are 1-based line numbers")
    p_build.add_argument("--out", required=True, help="index folder to write (replaced atomically if it is an index)")
    add_model_args(p_build)
    p_build.add_argument("--dtype", default="float16", choices=DTYPES, help="vector storage (default: float16)")
    p_build.add_argument("--ann", choices=("hnsw",), default=None,
                         help="add an HNSW graph for approximate search (needs: pip install 'tinyhpd[ann]')")
    p_build.add_argument("--target-recall", type=float, default=0.95,
                         help="recall@10 the graph's parameters are chosen to reach (default 0.95)")
    p_build.add_argument("--tune-queries", default=None, metavar="FILE",
                         help="with --ann: real example queries, one per line, that the graph's parameters are "
                              "measured on instead of midpoints of stored vectors (kept with the index)")
    p_build.add_argument("--batch-size", type=count, default=32)
    p_build.add_argument("--quiet", action="store_true", help="no progress bar")
    p_build.set_defaults(func=run_build)

    p_tune = index_sub.add_parser("tune", help="choose an approximate index's graph parameters again, measured on "
                                               "real example queries; the folder is replaced atomically")
    p_tune.add_argument("index", help="index folder with an HNSW graph (index build --ann hnsw)")
    p_tune.add_argument("--queries", required=True, metavar="FILE",
                        help="UTF-8 text file, one example query per line (e.g. from a search log)")
    add_model_args(p_tune, model_help="model to encode the queries (default: the index's model)")
    p_tune.add_argument("--batch-size", type=count, default=32)
    p_tune.set_defaults(func=run_tune)

    p_search = subparsers.add_parser("search", help="search an index folder with a text query")
    p_search.add_argument("index", help="index folder written by `index build` or Index.save")
    p_search.add_argument("query", help="query text")
    p_search.add_argument("--top-k", type=count, default=10, help="results to show (clamped to the index size)")
    add_model_args(p_search, model_help="model to encode the query (default: the index's model)")
    p_search.add_argument("--json", action="store_true", help="print a JSON list of {rank, id, score}")
    p_search.add_argument("--exact", action="store_true", help="search exactly even if the index has a graph")
    p_search.set_defaults(func=run_search)
