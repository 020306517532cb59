"""Which layers of a 6-layer student to keep for a 4-layer one: a small ablation scored on STS-B dev only.

    python bench/ablate_layers.py --student weights/tinyhpd-minilm-l6-h128 --keep 4 \
        --teacher TEACHER [TEACHER ...] --cache-dir CACHE [--init-size 4000]

For every choice of --keep layers (in order) the student body is cut to those layers, then scored on STS-B dev
(Spearman x100 of cosine) two ways, before any training:
  as is    the student's own pooling and Dense head, unchanged (how much the cut alone costs);
  refit    a new Dense initialised by least squares on the run's projected teacher targets, exactly as
           `tinyhpd distill` starts (the targets come from the teacher cache: run the teacher first).
The distillation run then starts from the best `refit` choice. Needs the [distill] extra.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="sentence-transformers folder of the student to cut")
    ap.add_argument("--keep", type=int, default=4, help="layers to keep")
    ap.add_argument("--teacher", nargs="+", required=True)
    ap.add_argument("--sentences", default=str(SHARED / "data/distill/sentences.txt"))
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--init-size", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from tinyhpd.distill import DistillConfig, init_student_dense, keep_layers, prepare_targets
    from tinyhpd.distill.train import _build_student
    from tinyhpd.eval.sts import DEV_TASK, load_task, score_task

    torch.set_num_threads(args.threads)
    task = load_task(DEV_TASK, SHARED / "data/senteval")
    cfg = DistillConfig(num_threads=args.threads, progress=False)
    data = prepare_targets(args.teacher, args.sentences, args.cache_dir, cfg)
    rows_init = data.train_pos[: args.init_size]
    init_sents = [data.sentences[i] for i in rows_init]

    full = SentenceTransformer(args.student, device="cpu")
    n_layers = len((getattr(full[0], "auto_model", None) or full[0].model).encoder.layer)

    def st_encode(model):
        return lambda s: model.encode(s, batch_size=128, convert_to_numpy=True, show_progress_bar=False)

    results = [{"layers": list(range(n_layers)), "as_is": score_task(st_encode(full), task), "refit": None}]
    print(f"all {n_layers} layers: STS-B dev {results[0]['as_is']:.2f}", flush=True)
    for layers in itertools.combinations(range(n_layers), args.keep):
        t0 = time.perf_counter()
        cut = copy.deepcopy(full)
        keep_layers(cut[0], layers)
        as_is = score_task(st_encode(cut), task)
        student, _ = _build_student(args.student, cfg.dim, cfg.max_seq_length, layers)
        init_student_dense(student, init_sents, data.targets[rows_init], "lstsq")
        refit = score_task(st_encode(student), task)
        results.append({"layers": list(layers), "as_is": as_is, "refit": refit})
        print(f"layers {layers}: as is {as_is:.2f}, refit {refit:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    ranked = sorted(results[1:], key=lambda r: -r["refit"])
    print(f"\nSTS-B dev (Spearman x100), {args.student} cut to {args.keep} of {n_layers} layers; "
          f"refit on {len(init_sents)} training sentences; command: python {' '.join(sys.argv)}")
    print("| layers kept | as is | refit Dense |")
    print("|---|---|---|")
    print(f"| all ({','.join(map(str, results[0]['layers']))}) | {results[0]['as_is']:.2f} | - |")
    for r in ranked:
        print(f"| {','.join(map(str, r['layers']))} | {r['as_is']:.2f} | {r['refit']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"best: --student-layers {','.join(map(str, ranked[0]['layers']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
