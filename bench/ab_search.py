"""A/B of the exact search of two revisions, in one run: each revision's own checkout (git worktrees in a temporary
folder) builds the same index of N unit vectors (clustered Gaussian, fixed seed) per storage type and times single
queries (p50) and one batch; rounds alternate A, B, A, B, ... so machine drift hits both alike; medians and B / A.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/venv/bin/python bench/ab_search.py 2de6d1e HEAD --rounds 2

With `--ann 16,48,128` the approximate path instead: revision A's checkout builds one int8 HNSW index of those vectors
and saves it; each round loads that folder with its own code and times the queries at each expansion (the same graph
for both: only the search code differs).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/venv/bin/python bench/ab_search.py b11093d~1 b11093d \
        --ann 16,48,128 --queries 300 --batch 1000 --rounds 3

Prints the machine, BLAS kernel and threads of the run, then a table; `--json` writes every round.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]

# what each round runs inside a revision's checkout (its own `import tinyhpd`)
DATA = r"""
import json, sys, time
import numpy as np
from tinyhpd.index import Index
n, d, nq, batch = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
centres = rng.standard_normal((1000, d))
x = (centres[rng.integers(0, 1000, n)] + 0.7 * rng.standard_normal((n, d))).astype(np.float32)
q = (centres[rng.integers(0, 1000, nq + batch)] + 0.7 * rng.standard_normal((nq + batch, d))).astype(np.float32)
out = {}
"""
ROUND = DATA + r"""
dtypes = sys.argv[5].split(",")
for dtype in dtypes:
    index = Index(d, dtype)
    index.add(x)
    index.search_rows(q[:1], 10)
    times = []
    for v in q[:nq]:
        t0 = time.perf_counter()
        index.search_rows(v[None], 10)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.search_rows(q[nq:], 10)
    out[dtype] = {"p50_ms": 1e3 * float(np.median(times)), "batch_ms": 1e3 * (time.perf_counter() - t0)}
    del index
print(json.dumps(out))
"""
BUILD_ANN = DATA + r"""
index = Index(d, "int8", ann="hnsw")
index.add(x)
index.save(sys.argv[5])
"""
ROUND_ANN = DATA + r"""
index = Index.load(sys.argv[5], mmap=False)
for ef in (int(e) for e in sys.argv[6].split(",")):
    index.search_rows(q[:1], 10, expansion=ef)
    times = []
    for v in q[:nq]:
        t0 = time.perf_counter()
        index.search_rows(v[None], 10, expansion=ef)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    index.search_rows(q[nq:], 10, expansion=ef)
    out[f"int8+hnsw expansion {ef}"] = {"p50_ms": 1e3 * float(np.median(times)),
                                        "batch_ms": 1e3 * (time.perf_counter() - t0)}
print(json.dumps(out))
"""


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
                         f"threads={p.get('num_threads')}" for p in threadpool_info())
    except ImportError:
        return "threadpoolctl not installed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=30, help="single queries timed per round")
    parser.add_argument("--batch", type=int, default=50, help="queries of the one batched call")
    parser.add_argument("--dtypes", default="float16,int8,float32")
    parser.add_argument("--ann", default=None, help="expansions: time the HNSW path on one saved int8 graph instead")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np  # loaded here: its BLAS is what threadpoolctl reports

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}; "
          f"BLAS: {_blas()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    print("command:", " ".join([Path(sys.executable).name] + sys.argv))
    rounds: Dict[str, List[dict]] = {args.a: [], args.b: []}
    with tempfile.TemporaryDirectory(prefix="tinyhpd-ab-") as tmp:
        trees = {}
        for rev in (args.a, args.b):
            tree = Path(tmp) / rev.replace("/", "_")
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), rev],
                           check=True, capture_output=True)
            trees[rev] = tree
        data = [str(args.n), str(args.dim), str(args.queries), str(args.batch)]
        script, extra = ROUND, [args.dtypes]
        try:
            if args.ann:
                saved = str(Path(tmp) / "ann_index")
                subprocess.run([sys.executable, "-c", BUILD_ANN, *data, saved], cwd=trees[args.a], check=True,
                               env=dict(os.environ, PYTHONPATH=str(trees[args.a])))
                script, extra = ROUND_ANN, [saved, args.ann]
            for r in range(args.rounds):
                for rev in (args.a, args.b):
                    res = subprocess.run([sys.executable, "-c", script, *data, *extra], cwd=trees[rev],
                                         capture_output=True, text=True,
                                         env=dict(os.environ, PYTHONPATH=str(trees[rev])))
                    if res.returncode:
                        print(res.stderr, file=sys.stderr)
                        return 1
                    rounds[rev].append(json.loads(res.stdout.strip().splitlines()[-1]))
                    print(f"round {r + 1} {rev}: {rounds[rev][-1]}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    print(f"\n| search | {args.a} p50 ms | {args.b} p50 ms | B/A | {args.a} batch of {args.batch} ms | "
          f"{args.b} batch ms | B/A |\n|---|---|---|---|---|---|---|")
    for dtype in rounds[args.a][0]:
        med = {rev: {k: statistics.median(x[dtype][k] for x in rounds[rev]) for k in ("p50_ms", "batch_ms")}
               for rev in rounds}
        a, b = med[args.a], med[args.b]
        print(f"| {dtype} | {a['p50_ms']:.3f} | {b['p50_ms']:.3f} | {b['p50_ms'] / a['p50_ms']:.2f} | "
              f"{a['batch_ms']:.0f} | {b['batch_ms']:.0f} | {b['batch_ms'] / a['batch_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
