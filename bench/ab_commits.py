"""A/B of two revisions of tinyhpd on one machine, in one run: `tinyhpd bench` from each revision's own checkout
(git worktrees in a temporary folder), alternating A, B, A, B, ... so that drift of the machine hits both alike; the
median of the rounds per measurement and the ratio B / A.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/venv/bin/python bench/ab_commits.py 92bd2fd HEAD \\
        --rounds 4 -- --model weights/tinyhpd-minilm-l4-h128 --sentences 1000 --repeats 3

Arguments after `--` go to `tinyhpd bench` (a relative --model is taken from this checkout). Each round runs in a fresh
process whose working directory is the revision's checkout, so `import tinyhpd` is that revision's code. Prints the
machine line and BLAS kernel `tinyhpd bench` reports, then a table; `--json` writes every round.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
ROWS = (("throughput batch 1 (sent/s)", ("throughput", "1", "per_s")),
        ("throughput batch 32 (sent/s)", ("throughput", "32", "per_s")),
        ("throughput batch 128 (sent/s)", ("throughput", "128", "per_s")),
        ("latency batch 1 p50 (ms)", ("latency", "p50_ms")))


def _get(d: dict, path) -> float:
    for key in path:
        d = d[key]
    return float(d)


def _absolute_model(args: List[str]) -> List[str]:
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--model" and not os.path.isabs(out[i + 1]) and (REPO / out[i + 1]).exists():
            out[i + 1] = str(REPO / out[i + 1])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="revision A (the baseline)")
    parser.add_argument("b", help="revision B")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per revision, alternating")
    parser.add_argument("--json", default=None, help="write every round here")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    bench_args = _absolute_model(argv[split + 1:])
    results: Dict[str, List[dict]] = {args.a: [], args.b: []}
    with tempfile.TemporaryDirectory(prefix="tinyhpd-ab-") as tmp:
        trees = {}
        for rev in (args.a, args.b):
            tree = Path(tmp) / rev.replace("/", "_")
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
            trees[rev] = tree
            if not (tree / "weights").exists():
                os.symlink(REPO / "weights", tree / "weights")
        try:
            for r in range(args.rounds):
                for rev in (args.a, args.b):
                    out = Path(tmp) / f"{rev.replace('/', '_')}-{r}.json"
                    cmd = [sys.executable, "-m", "tinyhpd", "bench", *bench_args, "--json", str(out)]
                    proc = subprocess.run(cmd, cwd=trees[rev], capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(proc.stderr, file=sys.stderr)
                        return proc.returncode
                    data = json.loads(out.read_text())
                    results[rev].append(data)
                    print(f"round {r + 1} {rev}: batch 32 {_get(data['engines']['tinyhpd'], ROWS[1][1]):.0f} sent/s",
                          file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    first = results[args.a][0]
    print(f"machine: {json.dumps(first.get('machine'))[:300]}")
    print(f"threads: {first.get('threads')}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"{'':32} {args.a:>12} {args.b:>12} {'B / A':>8}   (median of {args.rounds} alternating rounds)")
    for label, path in ROWS:
        a = statistics.median(_get(d["engines"]["tinyhpd"], path) for d in results[args.a])
        b = statistics.median(_get(d["engines"]["tinyhpd"], path) for d in results[args.b])
        print(f"{label:32} {a:12.1f} {b:12.1f} {b / a:8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
