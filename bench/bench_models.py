"""Several tinyhpd models side by side, in one run on one machine (issue 13: a new default against the old one).

For each model folder: parameters, size of its weights files, counted FLOPs per token (encoder matrix products +
Dense heads, on the benchmark sentences' real token counts), and encode speed: sentences/s at each batch size and
batch-1 latency. The speed is measured in ``--rounds`` rounds whose model order alternates (A B, B A, A B, ...) so
that a VM drifting during the run favours neither side; a cell is the median over the rounds. Ratios: every model
against the first one named.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_models.py NEW_FOLDER OLD_FOLDER --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tinyhpd  # noqa: E402
from tinyhpd._io import write_text_atomic  # noqa: E402
from tinyhpd.eval import speed  # noqa: E402


def static_facts(model: Any, sentences: Sequence[str]) -> Dict[str, Any]:
    """Parameters, weights bytes on disk and counted FLOPs of one loaded model on ``sentences``."""
    info = speed.model_info(model)
    lengths = [len(ids) for ids in model.tokenize(list(sentences))]
    flops = speed.flops_summary(info, lengths, [])
    folder = Path(model.folder)
    weights = [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()]
    return {"repr": info["repr"], "fingerprint": info["fingerprint"], "folder": str(folder),
            "params": int(sum(arr.size for _, arr in model._named_arrays())),
            "weights_mb": sum(p.stat().st_size for p in weights) / 1e6,
            "mflop_per_token": flops["sentences"]["mflop_per_token"],
            "mflop_per_sentence": flops["sentences"]["mflop_per_sentence"]}


def measure(model: Any, sentences: List[str], batch_sizes: Sequence[int], repeats: int, latency_n: int) -> Dict:
    """One round of one model: sentences/s per batch size and batch-1 latency percentiles."""
    def encode(texts: List[str], b: int) -> Any:
        return model.encode(texts, batch_size=b)

    res = speed.measure_engine(encode, model.encode, sentences, [], batch_sizes=batch_sizes, repeats=repeats,
                               latency_n=latency_n)
    out = {f"batch {b} (sentences/s)": res["throughput"][str(b)]["per_s"] for b in batch_sizes}
    out["latency batch 1 p50 (ms)"] = res["latency"]["p50_ms"]
    out["latency batch 1 p95 (ms)"] = res["latency"]["p95_ms"]
    return out


def round_orders(n_models: int, rounds: int) -> List[List[int]]:
    """Model order of each round: forwards, backwards, forwards, ..."""
    forward = list(range(n_models))
    return [forward if r % 2 == 0 else forward[::-1] for r in range(rounds)]


def table(names: List[str], facts: List[Dict], medians: List[Dict]) -> str:
    """Markdown table: one row per quantity, one column per model, then each model's ratio to the first."""
    cols = names + [f"{n} / {names[0]}" for n in names[1:]]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = [("parameters in the forward pass (M)", [f["params"] / 1e6 for f in facts]),
            ("weights on disk (MB)", [f["weights_mb"] for f in facts]),
            ("encoder+head MFLOP per token", [f["mflop_per_token"] for f in facts])]
    rows += [(key, [m[key] for m in medians]) for key in medians[0]]
    for label, vals in rows:
        ratios = [f"{v / vals[0]:.2f}x" if vals[0] else "-" for v in vals[1:]]
        lines.append(f"| {label} | " + " | ".join(speed._fmt(v) for v in vals) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="tinyhpd model folders (or hub ids); ratios are against the first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sentences", type=int, default=2000, help="first N unique STS-B test sentences")
    p.add_argument("--data", type=Path, default=None, help="another sentence file (one per line, or STS-B .csv)")
    p.add_argument("--batch-sizes", default="1,32,128")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per batch size inside a round (median)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds (median over rounds)")
    p.add_argument("--latency-sentences", type=int, default=300)
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("name at least two models to compare")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    blas_control = speed.set_blas_threads(args.threads)
    sentences, source = speed.bench_sentences(args.sentences, args.data)
    models = [tinyhpd.load(m, num_threads=args.threads) for m in args.models]
    names = [Path(m).name or m for m in args.models]
    facts = [static_facts(m, sentences) for m in models]
    machine = speed.machine_info()
    per_round: List[List[Dict]] = [[] for _ in models]
    for r, order in enumerate(round_orders(len(models), args.rounds)):
        for i in order:
            per_round[i].append(measure(models[i], sentences, batch_sizes, args.repeats, args.latency_sentences))
            speed.log_stderr(f"round {r + 1}/{args.rounds} {names[i]}: " + json.dumps(
                {k: round(v, 2) for k, v in per_round[i][-1].items()}))
    medians = [{k: float(np.median([rr[k] for rr in rounds])) for k in rounds[0]} for rounds in per_round]
    machine["loadavg_end"] = list(os.getloadavg())

    env = machine["env"]
    print(f"tinyhpd models side by side - {machine['time_utc']} UTC")
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, Python {machine['python']}, NumPy {machine['numpy']}")
    print(f"load average at start {machine['loadavg']}, at end {machine['loadavg_end']}")
    print(f"BLAS: {speed.blas_line(machine)}")
    print(f"env: OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE') or 'unset'} "
          f"OPENBLAS_L2_SIZE={env.get('OPENBLAS_L2_SIZE') or 'unset'}; {args.threads} threads ({blas_control})")
    print("command: " + shlex.join(["python"] + sys.argv))
    print(f"data: {len(sentences)} sentences from {source}; median of {args.rounds} alternating rounds, each the "
          f"median of {args.repeats} timed runs per batch size after a warm-up")
    for n, f in zip(names, facts):
        print(f"  {n}: {f['repr']}  fingerprint {f['fingerprint'][:16]}")
    print()
    print(table(names, facts, medians))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        result = {"machine": machine, "command": sys.argv, "names": names, "facts": facts, "rounds": per_round,
                  "medians": medians}
        write_text_atomic(args.json_out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
