"""HPD distillation: train a small sentence encoder to reproduce a teacher's 128-d homomorphic projection.

The method of the HPD paper and its released code:

1. the teacher (e.g. all-mpnet-base-v2) encodes a sentence corpus; the embeddings are cached on disk in chunks, so an
   interrupted run resumes where it stopped;
2. the top-``dim`` PCA directions of those embeddings form a bias-free linear map (the "homomorphic projection"): the
   directions come from the centred covariance, but the map is applied to the raw embeddings, *without* subtracting
   the mean, exactly as the released code does;
3. the student (a small BERT + mean pooling + Dense(hidden -> dim) + Tanh) is trained with MSE to the projected teacher
   vectors (AdamW, linear warm-up), keeping the checkpoint with the lowest validation MSE.

The result is a sentence-transformers folder (safetensors) that both tinyhpd and sentence-transformers load.

Requires the optional ``distill`` extra (``pip install tinyhpd[distill]``: torch, sentence-transformers): importing
this package checks that both are installed (without importing them; the functions import them when they need them).
Modules: data.py (sentences, sample, split), teacher.py (cached teacher embeddings), projection.py (PCA projection,
Dense initialisation), train.py (the student and the training loop), package.py (float16 copy, SHA256SUMS).
"""
from __future__ import annotations

import importlib.util

_missing = [m for m in ("torch", "sentence_transformers") if importlib.util.find_spec(m) is None]
if _missing:
    raise ImportError(f"tinyhpd.distill needs the [distill] extra (missing: {', '.join(_missing)}): "
                      "pip install torch==2.13.0 && pip install 'tinyhpd[distill]'")

from tinyhpd.distill.data import read_sentences, sample_indices, split_train_val  # noqa: E402
from tinyhpd.distill.package import convert_float16, write_sha256sums  # noqa: E402
from tinyhpd.distill.projection import (auto_target_scale, fit_projection,  # noqa: E402
                                        init_dense_least_squares, project)
from tinyhpd.distill.teacher import teacher_embeddings  # noqa: E402
from tinyhpd.distill.train import (DistillConfig, DistillResult, Targets, distill, init_dense_procrustes,  # noqa: E402
                                   init_student_dense, keep_layers, length_bucketed_batches, prepare_targets,
                                   teacher_ensemble)

__all__ = ["DistillConfig", "DistillResult", "read_sentences", "sample_indices", "split_train_val",
           "teacher_embeddings", "fit_projection", "project", "auto_target_scale", "init_dense_least_squares",
           "init_dense_procrustes", "length_bucketed_batches", "teacher_ensemble", "distill", "convert_float16",
           "write_sha256sums", "Targets", "prepare_targets", "keep_layers",
           "init_student_dense"]
