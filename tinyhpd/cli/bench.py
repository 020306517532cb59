"""`tinyhpd bench`: speed and memory of tinyhpd alone (the measuring is tinyhpd.eval.speed; bench/bench_engines.py in
the repository puts PyTorch and ONNX Runtime beside it)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Tuple

from tinyhpd._io import write_text_atomic
from tinyhpd.cli.common import count, count_or_zero


def batch_sizes(text: str) -> Tuple[int, ...]:
    """argparse ``type`` of --batch-sizes: comma-separated positive integers."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def run(args: Any) -> int:
    from tinyhpd.eval.speed import log_stderr, format_report, openblas_env_warning, run_bench

    warning = openblas_env_warning()
    if warning:
        log_stderr(warning)
    command = shlex.join([sys.executable, "-m", "tinyhpd"] + sys.argv[1:])
    result = run_bench(args.model, n_sentences=args.sentences, threads=args.threads, repeats=args.repeats,
                       latency_n=args.latency_sentences, n_docs=args.docs, doc_batch=args.doc_batch,
                       gemm_size=args.gemm_size, cold_repeats=args.cold_repeats, data=args.data,
                       batch_sizes=args.batch_sizes, command=command)
    result["threads"]["description"] = (f"{result['threads']['n']} (tinyhpd num_threads; NumPy BLAS threads set with "
                                        f"{result['threads']['blas_control']})")
    if warning:
        result.setdefault("notes", []).append(warning)
    print(format_report(result))
    if args.json_out is not None:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=2) + "\n")
        log_stderr(f"wrote {path}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `tinyhpd bench`."""
    p = subparsers.add_parser(
        "bench", help="speed and memory benchmark of tinyhpd alone",
        description="Throughput (batch 1/32/128), batch-1 latency, long documents, cold start and peak RSS, achieved "
                    "GFLOP/s vs NumPy's matmul rate. Run with OPENBLAS_CORETYPE unset for comparable numbers; "
                    "bench/bench_engines.py in the repository adds PyTorch and ONNX Runtime.")
    p.add_argument("--model", default=None, help="model folder or Hub id (default: tinyhpd's default model)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write the full result as JSON here")
    p.add_argument("--sentences", type=count, default=2000, help="number of unique sentences (default 2000)")
    p.add_argument("--threads", type=count, default=None,
                   help="tinyhpd num_threads and BLAS threads (default: tinyhpd's)")
    p.add_argument("--data", type=Path, default=None,
                   help="sentence file: STS-B style .csv or one sentence per line (default: STS-B test from "
                        "../shared if found, else synthetic sentences)")
    p.add_argument("--repeats", type=count, default=3, help="timed runs per measurement; the median is kept")
    p.add_argument("--batch-sizes", type=batch_sizes, default=(1, 32, 128), help="comma-separated batch sizes (default 1,32,128)")
    p.add_argument("--latency-sentences", type=count, default=300, help="single-sentence calls for p50/p95 latency")
    p.add_argument("--docs", type=count_or_zero, default=32, help="number of max_seq_length-token documents (0: skip)")
    p.add_argument("--doc-batch", type=count, default=8, help="batch size for the documents")
    p.add_argument("--gemm-size", type=count, default=2048, help="n of the n x n float32 matmul rate reference")
    p.add_argument("--cold-repeats", type=count, default=3, help="fresh processes timed for the cold start")
    p.set_defaults(func=run)
