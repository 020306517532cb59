"""`tinyhpd eval sts`: STS12-16, STS-B and SICK-R Spearman by the SentEval protocol."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

from tinyhpd.cli import common
from tinyhpd.cli.common import add_model_args, count
from tinyhpd.eval import sts
from tinyhpd.eval.sts import (ENV_DATA, LABELS, SENTEVAL_FILENAME, SENTEVAL_REPO, Encoder, rounded, StderrProgress,
                              average, format_table, load_tasks, resolve_data_dir, score_task)


def run_sts(args) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    root = resolve_data_dir(args.data)
    tasks = load_tasks(root)  # fail on a missing file before any model is loaded
    print(f"data: {root} ({', '.join(f'{LABELS[t.name]} {len(t)}' for t in tasks)} pairs)", file=sys.stderr)

    def run(encode: Encoder, engine: str) -> Dict[str, float]:
        progress = StderrProgress(engine)
        t0 = time.perf_counter()
        scores = {t.name: score_task(encode, t, progress=progress) for t in tasks}
        scores["Avg"] = average(scores)
        print(f"[{engine}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return scores

    encode, name_or_path, revision, desc = sts.tinyhpd_encoder(common.load_from_args(args), args.batch_size)
    print(f"model: {desc}", file=sys.stderr)
    ours = run(encode, "tinyhpd")
    rows: List[Tuple[str, Mapping[str, float]]] = [("tinyhpd", ours)]
    result: Dict[str, object] = dict(rounded(ours))
    if args.reference == "torch":
        ref = run(sts.torch_encoder(name_or_path, revision, args.batch_size), "torch")
        rows.append(("torch", ref))
        result["torch"] = rounded(ref)
    print(format_table(rows, diff=len(rows) > 1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _eval_subparsers(subparsers):
    """The ``eval`` command's sub-command registry, created once and shared by every ``eval`` module."""
    parser = subparsers.choices.get("eval")
    if parser is None:
        parser = subparsers.add_parser("eval", help="evaluate a model on a benchmark",
                                       description="Evaluate a model on a benchmark.")
    sub = getattr(parser, "_tinyhpd_eval_sub", None)
    if sub is None:
        sub = parser.add_subparsers(dest="eval_command", metavar="BENCHMARK")
        sub.required = True
        parser._tinyhpd_eval_sub = sub
    return sub


def add_cli(subparsers) -> None:
    """Register ``tinyhpd eval sts``."""
    p = _eval_subparsers(subparsers).add_parser(
        "sts", help="STS12-16, STS-B and SICK-R Spearman (SentEval protocol)",
        description="Spearman x100 of cosine similarity vs gold on STS12-16, STS-B test and SICK-R test, "
                    "the SentEval protocol of SimCSE and HPD. Progress goes to stderr, the table to stdout.")
    add_model_args(p)
    p.add_argument("--data", default=None,
                   help=f"SentEval data folder holding STS/ and SICK/ (default: ${ENV_DATA}, else download "
                        f"{SENTEVAL_FILENAME} from the Hub dataset {SENTEVAL_REPO})")
    p.add_argument("--batch-size", type=count, default=64, help="sentences per forward pass (default 64)")
    p.add_argument("--reference", choices=["torch"], default=None,
                   help="also run PyTorch sentence-transformers on the same model and print the difference")
    p.add_argument("--json", metavar="OUT", default=None, help="write the scores (x100, two decimals) as JSON")
    p.set_defaults(func=run_sts)
