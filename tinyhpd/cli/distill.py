"""`tinyhpd distill`: HPD distillation (needs the [distill] extra, imported only when the command runs)."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tinyhpd.cli.common import count, count_or_zero


# DistillConfig fields set by options of the same name; an option left out keeps DistillConfig's default (shown in
# `tinyhpd.distill.DistillConfig`; not read here, so that the parser builds without the [distill] extra).
_CONFIG_ARGS = ("dim", "epochs", "batch_size", "lr", "warmup_ratio", "max_seq_length", "max_sentences", "val_size",
                "eval_every", "target_scale", "init_method", "init_size", "projection_fit_size", "teacher_batch_size",
                "seed", "sim_weight", "teacher_engine")


def run(args: argparse.Namespace) -> int:
    from tinyhpd.distill import DistillConfig, distill  # ImportError naming the [distill] extra when it is missing

    given = {key: getattr(args, key) for key in _CONFIG_ARGS if getattr(args, key) is not None}  # else the defaults
    if args.student_layers is not None:
        given["student_layers"] = args.student_layers
    cfg = DistillConfig(init_dense=not args.no_init_dense, num_threads=args.threads, progress=not args.quiet, **given)
    cache = args.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "tinyhpd", "distill")
    teacher = args.teacher[0] if len(args.teacher) == 1 else args.teacher
    res = distill(teacher, args.student, args.sentences, args.out, cache_dir=cache, config=cfg)
    print(json.dumps({"out": str(res.out_dir), "initial_val_mse": res.initial_val_mse,
                      "best_val_mse": res.best_val_mse, "seconds": res.seconds}, indent=2))
    return 0


def _layer_list(text: str) -> tuple:
    """``"0,2,4"`` -> ``(0, 2, 4)`` (argparse type: a bad list is a usage error naming it)."""
    try:
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer indices") from None
    if any(i < 0 for i in layers):
        raise argparse.ArgumentTypeError(f"{text!r}: layer indices are >= 0")
    return layers


def add_cli(subparsers: Any) -> None:
    """Register ``tinyhpd distill``."""
    p = subparsers.add_parser("distill", help="HPD distillation: teacher -> projected 128-d -> small student",
                              description="Distil a teacher's top-DIM PCA projection (bias-free) into a student "
                                          "(mean pooling + Dense + Tanh). Needs `pip install -e .[distill]`.")
    p.add_argument("--teacher", required=True, nargs="+",
                   help="teacher sentence-transformers folder or hub id; several form an ensemble (unit-normalised, "
                        "concatenated) target space")
    p.add_argument("--student", required=True, help="student sentence-transformers folder or hub id")
    p.add_argument("--sentences", required=True, help="text file, one training sentence per line")
    p.add_argument("--out", required=True, help="output folder (sentence-transformers layout, safetensors)")
    p.add_argument("--cache-dir", default=None, help="teacher-embedding cache (default ~/.cache/tinyhpd/distill)")
    p.add_argument("--dim", type=count, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--batch-size", type=count, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup-ratio", type=float, default=None)
    p.add_argument("--max-seq-length", type=count, default=None)
    p.add_argument("--max-sentences", type=count, default=None, help="random subsample size (seeded)")
    p.add_argument("--val-size", type=count, default=None)
    p.add_argument("--eval-every", type=count, default=None, help="validate every N steps")
    p.add_argument("--target-scale", type=float, default=None,
                   help="multiply the projected targets (default: 1, or shrink to max |t| = 0.9 if they exceed it)")
    p.add_argument("--no-init-dense", action="store_true",
                   help="skip the Dense initialisation: a student that already ends in a Dense(hidden -> --dim, Tanh) "
                        "head (a tinyhpd model) keeps it and trains on; any other student starts from a random one")
    p.add_argument("--init-method", choices=["lstsq", "procrustes"], default=None,
                   help="Dense initialisation: least squares to atanh(targets), or a rotation of the student's own "
                        "PCA projection (keeps its geometry)")
    p.add_argument("--init-size", type=count, default=None,
                   help="training sentences used for the least-squares Dense initialisation")
    p.add_argument("--projection-fit-size", type=count_or_zero, default=None,
                   help="training sentences whose teacher embeddings fit the PCA directions (0: all)")
    p.add_argument("--teacher-batch-size", type=count, default=None)
    p.add_argument("--threads", type=count, default=None, help="torch threads")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sim-weight", type=float, default=None,
                   help="weight of an extra in-batch cosine-matrix MSE to the unprojected teacher (0: plain HPD)")
    p.add_argument("--teacher-engine", choices=["torch", "onnx"], default=None,
                   help="run the teacher's transformer on PyTorch (default) or ONNX Runtime (1.2x faster for "
                        "all-mpnet-base-v2 on a 2-core VM; checked against torch on the first batch; needs onnx and "
                        "onnxruntime)")
    p.add_argument("--student-layers", type=_layer_list, default=None, metavar="I,J,...",
                   help="keep only these encoder layers of the student (0-based, in order), e.g. 0,2,4,5")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
