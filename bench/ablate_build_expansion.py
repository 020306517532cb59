"""The HNSW build expansion (faiss efConstruction) against search cost: why tinyhpd builds with a fixed 128.

    python bench/ablate_build_expansion.py [--expansions 40 64 128 256] [--searches 16 32 64 128]

Corpus: the bundled model's embeddings of all of ../shared/data/distill/sentences.txt (131k real sentences, cached
as bench_retrieval.py caches them); queries: the first 1,000 unique STS-B test sentences; truth: exact float32 top-10.
For each build expansion an int8 ANN index is built (``tinyhpd.index.ann.EXPANSION_ADD`` set for the run; connectivity
16; its own tuning included in the build seconds), then searched at each given search expansion
(``search_rows(..., expansion=e)``): recall@10 and the p50 of 300 single queries. Run it alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_retrieval import DEFAULT_CACHE, SHARED, cached_encode, environment  # noqa: E402
from retrieval_scale import distill_sentences, latencies, positions, recall_at, stsb_sentences  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expansions", type=int, nargs="+", default=[40, 64, 128, 256], help="build expansions")
    ap.add_argument("--searches", type=int, nargs="+", default=[16, 32, 64, 128], help="search expansions")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args(argv)

    import tinyhpd
    from tinyhpd.index import Index, ann

    print(environment(), flush=True)
    model = tinyhpd.load(None)
    corpus = cached_encode(model, distill_sentences(SHARED), args.cache)
    queries = cached_encode(model, stsb_sentences(SHARED), args.cache)[:1000].astype(np.float64)
    exact = Index(corpus.shape[1], "float32")
    exact.add(corpus)
    truth = exact.search_rows(queries, 10)[0]
    print("| build expansion | build + tuning s | " + " | ".join(str(e) for e in args.searches) + " |")
    print("|---|---|" + "---|" * len(args.searches))
    for build in args.expansions:
        ann.EXPANSION_ADD = build  # read when the graph is made
        t0 = time.perf_counter()
        index = Index(corpus.shape[1], "int8", ann="hnsw", calibration=corpus)
        index.add(corpus)
        seconds = time.perf_counter() - t0
        cells = []
        place = positions(index)
        for e in args.searches:
            r = recall_at(place[index.search_rows(queries, 10, expansion=e)[0]], truth)
            p50 = latencies(lambda q: index.search_rows(q[None], 10, expansion=e), queries[:300])["p50_ms"]
            cells.append(f"{r:.4f} / {p50:.3f}")
        print(f"| {build} | {seconds:.1f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
