"""`tinyhpd rerank`: documents scored against a query by a cross-encoder, best first, as JSON lines."""
from __future__ import annotations

import json
import sys

from tinyhpd.cli.common import count, items_from_args


def add_cli(sub) -> None:
    p = sub.add_parser("rerank", help="score documents against a query with a cross-encoder (reranker)",
                       description="Score documents (arguments, or a file of one document a line) against a query "
                                   "with a cross-encoder; print one JSON object a line, best first: "
                                   '{"index", "score", "text"}.')
    p.add_argument("query", help="the query")
    p.add_argument("documents", nargs="*", help="documents to score")
    p.add_argument("--model", required=True, help="cross-encoder folder or Hub id (a *ForSequenceClassification model)")
    p.add_argument("--revision", default=None, help="Hub revision (commit, branch or tag)")
    p.add_argument("--threads", type=count, default=None, help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--input", "-i", help="text file with one document a line ('-' for stdin)")
    p.add_argument("--top-k", type=count, default=None, help="print only the best K documents")
    p.add_argument("--raw-scores", action="store_true", help="logits, without the model's activation (Sigmoid)")
    p.add_argument("--batch-size", type=count, default=32)
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyhpd.cross_encoder import CrossEncoder

    docs = items_from_args(args.documents, args.input, "documents", "rerank")
    model = CrossEncoder(args.model, revision=args.revision, num_threads=args.threads)
    ranked = model.rank(args.query, docs, top_k=args.top_k, return_documents=True, batch_size=args.batch_size,
                        activation_fn="Identity" if args.raw_scores else None)
    for hit in ranked:
        sys.stdout.write(json.dumps({"index": hit["corpus_id"], "score": hit["score"], "text": hit["text"]},
                                    ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()
    return 0
