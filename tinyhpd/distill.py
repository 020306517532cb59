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

Requires the optional ``distill`` extra (``pip install -e .[distill]``: torch, sentence-transformers). Importing this
module is cheap: torch and sentence-transformers are imported only inside the functions that need them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd.heads import normalize

__all__ = [
    "DistillConfig",
    "DistillResult",
    "read_sentences",
    "sample_indices",
    "split_train_val",
    "teacher_embeddings",
    "fit_projection",
    "project",
    "auto_target_scale",
    "init_dense_least_squares",
    "init_dense_procrustes",
    "length_bucketed_batches",
    "distill",
    "convert_float16",
    "write_sha256sums",
    "add_cli",
]

_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def read_sentences(path: os.PathLike | str) -> List[str]:
    """Read one sentence per line (UTF-8), dropping blank lines and exact duplicates, keeping file order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sentences file not found: {p}")
    seen: dict[str, None] = {}
    with open(p, encoding="utf-8") as f:
        for line in f:
            s = " ".join(line.split())
            if s:
                seen.setdefault(s, None)
    if not seen:
        raise ValueError(f"sentences file {p} holds no non-blank line")
    return list(seen)


def sample_indices(n: int, max_n: Optional[int], seed: int) -> np.ndarray:
    """A seeded random order of ``range(n)``, cut to ``max_n`` items: any prefix is a uniform random subsample."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_n is not None and max_n < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_n}")
    order = np.random.default_rng(seed).permutation(n)
    return order if max_n is None else order[:max_n]


def split_train_val(n: int, val_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positions ``[0, n)`` split into (train, validation); the validation slice is the last ``val_size`` items."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be between 1 and {n - 1} for {n} sentences, got {val_size}")
    return np.arange(n - val_size), np.arange(n - val_size, n)


# ----------------------------------------------------------------------------------------------------------------------
# Teacher embeddings, cached in resumable chunks
# ----------------------------------------------------------------------------------------------------------------------
def _chunk_key(teacher_id: str, sentences: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION}\0{teacher_id}\0".encode("utf-8"))
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:24]


def _teacher_identity(teacher: str) -> str:
    """A string that changes when the teacher's weights change: the folder's weight files (name, size, mtime)."""
    p = Path(teacher)
    if not p.is_dir():
        return teacher
    parts = [p.resolve().as_posix()]
    for f in sorted(p.rglob("*")):
        if f.suffix in (".safetensors", ".bin") and f.is_file():
            st = f.stat()
            parts.append(f"{f.relative_to(p).as_posix()}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """`write(f)` into a temporary file beside `path`, then rename it over `path`: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.save(f, array))


def _record_teacher(path: Path, teacher: str, identity: str, n_sentences: int) -> None:
    """Add (or update) this teacher in the cache's teacher.json, keeping the other teachers that share the cache."""
    teachers: List[dict] = []
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("teachers"), list):
            teachers = [t for t in data["teachers"] if isinstance(t, dict)]
        elif isinstance(data, dict) and "identity" in data:  # the single-teacher file of earlier versions
            teachers = [{"teacher": data.get("teacher"), "identity": data["identity"]}]
    except (OSError, ValueError):
        pass  # missing or unreadable: start a new one (the chunk files, not this record, hold the vectors)
    teachers = [t for t in teachers if t.get("identity") != identity]
    teachers.append({"teacher": teacher, "identity": identity, "sentences": n_sentences})
    _write_atomic(path, lambda f: f.write(json.dumps({"teachers": teachers}, indent=2).encode()))


def teacher_embeddings(
    teacher: str,
    sentences: Sequence[str],
    cache_dir: os.PathLike | str,
    *,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: bool = True,
    encoder: Optional[Callable[[List[str]], np.ndarray]] = None,
) -> np.ndarray:
    """Teacher embeddings of ``sentences`` as float32 ``(n, d)``, computed chunk by chunk and cached on disk.

    Each chunk of ``chunk_size`` sentences is stored as ``<cache_dir>/chunk_<key>.npy`` where the key hashes the teacher's
    identity and the chunk's sentences, so an interrupted run recomputes only the missing chunks, and a different
    sentence order, sample or teacher never reuses stale vectors. ``encoder`` overrides how a chunk is encoded (tests);
    by default the teacher is loaded with sentence-transformers on the CPU, on first need only.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError("chunk_size and batch_size must be >= 1")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    teacher_id = _teacher_identity(teacher)
    chunks = [list(sentences[i:i + chunk_size]) for i in range(0, len(sentences), chunk_size)]
    keys = [_chunk_key(teacher_id, c) for c in chunks]
    paths = [cache / f"chunk_{k}.npy" for k in keys]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    model_holder: dict[str, Any] = {}

    def encode(batch: List[str]) -> np.ndarray:
        if encoder is not None:
            return np.asarray(encoder(batch), dtype=np.float32)
        if "model" not in model_holder:
            from sentence_transformers import SentenceTransformer

            model_holder["model"] = SentenceTransformer(teacher, device="cpu")
        out = model_holder["model"].encode(batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    n_missing = sum(len(chunks[i]) for i in missing)
    with _progress(n_missing, "teacher", "sent", progress and n_missing > 0) as bar:
        for i in missing:
            emb = encode(chunks[i])
            if emb.shape[0] != len(chunks[i]):
                raise RuntimeError(f"teacher returned {emb.shape[0]} vectors for {len(chunks[i])} sentences")
            _save_npy_atomic(paths[i], emb)
            bar.update(len(chunks[i]))
    _record_teacher(cache / "teacher.json", teacher, teacher_id, len(sentences))
    if not paths:
        raise ValueError("no sentences to encode")
    return np.concatenate([np.load(p) for p in paths], axis=0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------------
# Homomorphic projection
# ----------------------------------------------------------------------------------------------------------------------
def fit_projection(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """The top-``dim`` principal directions of ``embeddings`` as a ``(dim, d)`` float32 matrix (rows orthonormal).

    Directions come from the covariance of the *centred* embeddings (as PCA computes them), ordered by decreasing
    variance; each row's sign is fixed so that its largest-magnitude entry is positive (deterministic output).
    Apply it with :func:`project`, which does *not* subtract the mean.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= dim <= d:
        raise ValueError(f"dim must be between 1 and {d}, got {dim}")
    if n < 2:
        raise ValueError("need at least 2 embeddings to fit a projection")
    xc = x - x.mean(axis=0, keepdims=True)
    cov = xc.T @ xc / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, np.argsort(evals)[::-1][:dim]].T
    signs = np.sign(comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    return (comps * signs[:, None]).astype(np.float32)


def project(embeddings: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Apply the bias-free homomorphic projection: ``embeddings @ components.T`` (no mean subtraction)."""
    return (np.asarray(embeddings, dtype=np.float32) @ np.asarray(components, dtype=np.float32).T).astype(np.float32)


def auto_target_scale(targets: np.ndarray, limit: float = 0.9) -> float:
    """1.0 when every ``|target| <= limit`` (e.g. a normalised teacher), else ``limit / max|target|``.

    Cosine similarity ignores a global scale, so shrinking the targets keeps the Tanh head out of saturation without
    changing what the student learns to rank.
    """
    peak = float(np.abs(targets).max()) if np.size(targets) else 0.0
    return 1.0 if peak <= limit else limit / peak


def init_dense_least_squares(
    features: np.ndarray, targets: np.ndarray, *, clip: float = 0.995, ridge: float = 1e-3
) -> Tuple[np.ndarray, np.ndarray]:
    """Weights ``(out, in)`` and bias ``(out,)`` such that ``tanh(features @ W.T + b)`` fits ``targets``.

    Solves ridge-regularised least squares from the student's pooled features to ``atanh(clip(targets))``; a good
    starting point for the Dense + Tanh head before fine-tuning the whole student.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.arctanh(np.clip(np.asarray(targets, dtype=np.float64), -clip, clip))
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and targets {y.shape} must be 2-d with the same number of rows")
    xa = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    gram = xa.T @ xa
    reg = ridge * np.trace(gram) / gram.shape[0] * np.eye(gram.shape[0])
    reg[-1, -1] = 0.0  # do not shrink the bias
    sol = np.linalg.solve(gram + reg, xa.T @ y)
    return sol[:-1].T.astype(np.float32), sol[-1].astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------
def init_dense_procrustes(features: np.ndarray, targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Weights ``(out, in)`` and a zero bias that keep the student's own geometry while aligning it with the targets.

    ``W = s * R @ P``: ``P`` holds the top-``out`` PCA directions of the student's L2-normalised features (the same-size
    projection baseline), ``R`` is the orthogonal rotation that best maps those projections onto the targets
    (orthogonal Procrustes) and ``s`` the least-squares scale. Cosine similarities of ``W x`` equal those of the
    student's own uncentred PCA projection, so fine-tuning starts from the baseline instead of a lossy linear fit.
    """
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or t.ndim != 2 or x.shape[0] != t.shape[0]:
        raise ValueError(f"features {x.shape} and targets {t.shape} must be 2-d with the same number of rows")
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    p = fit_projection(xn, t.shape[1]).astype(np.float64)
    u, _, vt = np.linalg.svd(t.T @ (xn @ p.T))
    w = (u @ vt) @ p
    z = x @ w.T
    scale = float(np.sum(z * t) / max(np.sum(z * z), 1e-30))
    return (scale * w).astype(np.float32), np.zeros(t.shape[1], dtype=np.float32)


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> List[np.ndarray]:
    """Shuffled batches of positions in which sentences of similar length sit together (less padding, faster steps).

    Positions are shuffled, cut into pools of ``50 * batch_size``, sorted by length inside each pool and split into
    batches; the batch order is then shuffled. Every position appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    pool = 50 * batch_size
    batches: List[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class DistillConfig:
    """Settings of one distillation run (defaults: the released HPD recipe, max length 128 for CPU speed)."""

    dim: int = 128
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 128
    max_sentences: Optional[int] = None
    val_size: int = 2000
    eval_every: int = 500
    projection_fit_size: int = 20000
    target_scale: Optional[float] = None  # None: 1.0, or shrink so max |target| = 0.9 when the targets exceed it
    init_dense: bool = True
    init_method: str = "lstsq"  # "lstsq": fit atanh(targets); "procrustes": rotate the student's own PCA projection
    init_size: int = 10000
    teacher_batch_size: int = 64
    chunk_size: int = 4096
    seed: int = 0
    num_threads: Optional[int] = None
    progress: bool = True
    save_best_during_training: bool = True  # write each new best checkpoint to out_dir (survives an interruption)
    sim_weight: float = 0.0  # > 0: add sim_weight * MSE between in-batch cosine matrices of student and full teacher


@dataclass
class DistillResult:
    """What :func:`distill` produced: the output folder and the validation MSE history."""

    out_dir: Path
    best_val_mse: float
    initial_val_mse: float
    history: List[Tuple[int, float]] = field(default_factory=list)
    target_stats: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def _log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(f"[distill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _build_student(student: str, dim: int, max_seq_length: int):
    """Student = the student's Transformer + mean pooling + Dense(hidden -> dim, Tanh) as a SentenceTransformer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    base = SentenceTransformer(student, device="cpu")
    transformer = base[0]
    if not isinstance(transformer, Transformer):
        raise ValueError(f"student {student!r}: first module must be a Transformer, got {type(transformer).__name__}")
    transformer.max_seq_length = max_seq_length
    dim_fn = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    hidden = dim_fn()
    pooling = Pooling(hidden, pooling_mode="mean")
    dense = Dense(hidden, dim, activation_function=torch.nn.Tanh())
    return SentenceTransformer(modules=[transformer, pooling, dense], device="cpu")


def _embedding_dim(module) -> int:
    """A Pooling module's output size (sentence-transformers renamed the method in 6.x)."""
    fn = getattr(module, "get_embedding_dimension", None) or module.get_sentence_embedding_dimension
    return int(fn())


def _preprocess(model, texts: List[str]):
    """Model inputs for `texts` (`preprocess` in sentence-transformers 6.x, `tokenize` before)."""
    fn = getattr(model, "preprocess", None) or model.tokenize
    return fn(texts)


def _pooled_features(model, sentences: Sequence[str], batch_size: int, progress: bool) -> np.ndarray:
    """Mean-pooled student features (the input of the Dense head) for ``sentences``."""
    import torch

    body = torch.nn.Sequential(model[0], model[1])
    order = np.argsort([len(s) for s in sentences], kind="stable")  # similar lengths share a batch: less padding
    out = np.empty((len(sentences), _embedding_dim(model[1])), dtype=np.float32)
    body.eval()
    with torch.no_grad(), _progress(len(sentences), "student features", "sent", progress) as bar:
        for i in range(0, len(sentences), batch_size):
            idx = order[i:i + batch_size]
            feats = _preprocess(model, [sentences[j] for j in idx])
            out[idx] = body(feats)["sentence_embedding"].float().numpy()
            bar.update(len(idx))
    return out


def _cosine_matrix_mse(pred, teacher_unit: np.ndarray):
    """MSE between the in-batch cosine matrices of ``pred [b, dim]`` (a tensor) and unit rows ``teacher_unit [b, d]``."""
    import torch

    t_unit = torch.from_numpy(teacher_unit)  # [b, d_teacher]
    p_unit = torch.nn.functional.normalize(pred, dim=1)  # [b, dim]
    return torch.nn.functional.mse_loss(p_unit @ p_unit.T, t_unit @ t_unit.T)  # [b, b] vs [b, b]


def _val_mse(model, sentences: Sequence[str], targets: np.ndarray, batch_size: int,
             teacher_unit: Optional[np.ndarray] = None, sim_weight: float = 0.0) -> float:
    """Validation objective: MSE to the targets, plus ``sim_weight`` times the in-batch cosine-matrix MSE to
    ``teacher_unit`` when that term is on (batches of similar length, as in training)."""
    import torch

    model.eval()
    total, count, rel, rel_count = 0.0, 0, 0.0, 0
    order = np.argsort([len(s) for s in sentences], kind="stable")
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            idx = order[i:i + batch_size]
            pred = model(_preprocess(model, [sentences[j] for j in idx]))["sentence_embedding"]
            tgt = torch.from_numpy(targets[idx])
            total += float(((pred - tgt) ** 2).sum())
            count += tgt.numel()
            if sim_weight > 0 and teacher_unit is not None:
                rel += float(_cosine_matrix_mse(pred, teacher_unit[idx])) * len(idx) ** 2
                rel_count += len(idx) ** 2
    value = total / count
    if rel_count:
        value += sim_weight * rel / rel_count
    return value


def teacher_ensemble(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Several teachers' embeddings of the same sentences as one target space: each row L2-normalised, the teachers
    concatenated and scaled by 1/sqrt(k), so every row has unit length and each teacher weighs the same in cosine."""
    if not parts:
        raise ValueError("no teacher embeddings")
    n = parts[0].shape[0]
    for i, e in enumerate(parts):
        if e.ndim != 2 or e.shape[0] != n:
            raise ValueError(f"teacher {i}: embeddings of shape {e.shape}, expected ({n}, d)")
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float32)
    return (np.concatenate([normalize(e) for e in parts], axis=1) / np.sqrt(len(parts))).astype(np.float32)


def distill(
    teacher: Union[str, Sequence[str]],
    student: str,
    sentences: os.PathLike | str | Sequence[str],
    out_dir: os.PathLike | str,
    *,
    cache_dir: os.PathLike | str,
    config: Optional[DistillConfig] = None,
    teacher_encoder: Union[None, Callable[[List[str]], np.ndarray], Sequence[Callable[[List[str]], np.ndarray]]] = None,
) -> DistillResult:
    """Distil ``teacher`` into ``student`` with HPD and save the student to ``out_dir`` (a sentence-transformers folder).

    ``sentences`` is a file (one per line) or a list. ``cache_dir`` holds the teacher embeddings (keep it outside the
    repository). See :class:`DistillConfig` for the recipe; ``teacher_encoder`` replaces the teacher (tests).
    Several teachers (a list) form one ensemble target space (:func:`teacher_ensemble`) before the projection.
    """
    import torch

    cfg = config or DistillConfig()
    if cfg.sim_weight < 0:  # checked before any teacher work
        raise ValueError(f"sim_weight must be >= 0, got {cfg.sim_weight}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    times: dict = {}
    out = Path(out_dir)
    all_sents = read_sentences(sentences) if isinstance(sentences, (str, os.PathLike)) else list(sentences)
    idx = sample_indices(len(all_sents), cfg.max_sentences, cfg.seed)
    sents = [all_sents[i] for i in idx]
    train_pos, val_pos = split_train_val(len(sents), cfg.val_size)
    _log(f"{len(sents)} sentences ({len(train_pos)} train, {len(val_pos)} validation) of {len(all_sents)}", cfg.progress)

    t0 = time.perf_counter()
    teachers = [teacher] if isinstance(teacher, (str, os.PathLike)) else [str(t) for t in teacher]
    if not teachers:
        raise ValueError("at least one teacher is needed")
    encoders = (list(teacher_encoder) if isinstance(teacher_encoder, (list, tuple))
                else [teacher_encoder] * len(teachers))
    if len(encoders) != len(teachers):
        raise ValueError(f"{len(encoders)} teacher encoders for {len(teachers)} teachers")
    emb = teacher_ensemble([
        teacher_embeddings(str(t), sents, cache_dir, batch_size=cfg.teacher_batch_size, chunk_size=cfg.chunk_size,
                           progress=cfg.progress, encoder=enc) for t, enc in zip(teachers, encoders)])
    times["teacher"] = time.perf_counter() - t0
    teacher_unit = normalize(emb) if cfg.sim_weight > 0 else None
    fit_rows = train_pos[: cfg.projection_fit_size] if cfg.projection_fit_size else train_pos
    components = fit_projection(emb[fit_rows], cfg.dim)
    targets = project(emb, components)
    scale = auto_target_scale(targets) if cfg.target_scale is None else float(cfg.target_scale)
    targets = targets * np.float32(scale)
    stats = {"scale": scale, "abs_max": float(np.abs(targets).max()), "abs_p99": float(np.quantile(np.abs(targets), 0.99)),
             "std": float(targets.std()), "mean_norm": float(np.linalg.norm(targets, axis=1).mean())}
    if stats["abs_max"] >= 1.0:
        raise ValueError(f"projected targets reach {stats['abs_max']:.3f}, outside Tanh's range; lower target_scale")
    _log(f"targets: {json.dumps({k: round(v, 4) for k, v in stats.items()})}", cfg.progress)
    np.save(Path(cache_dir) / f"projection_{cfg.dim}.npy", components)

    model = _build_student(student, cfg.dim, cfg.max_seq_length)
    dense = model[2]
    val_sents = [sents[i] for i in val_pos]
    val_tgt = targets[val_pos]
    if cfg.init_dense:
        t0 = time.perf_counter()
        init_rows = train_pos[: cfg.init_size]
        feats = _pooled_features(model, [sents[i] for i in init_rows], 128, cfg.progress)
        if cfg.init_method == "procrustes":
            w, b = init_dense_procrustes(feats, targets[init_rows])
        elif cfg.init_method == "lstsq":
            w, b = init_dense_least_squares(feats, targets[init_rows])
        else:
            raise ValueError(f"init_method must be 'lstsq' or 'procrustes', got {cfg.init_method!r}")
        with torch.no_grad():
            dense.linear.weight.copy_(torch.from_numpy(w))
            dense.linear.bias.copy_(torch.from_numpy(b))
        times["init_dense"] = time.perf_counter() - t0
    val_unit = teacher_unit[val_pos] if teacher_unit is not None else None
    initial = _val_mse(model, val_sents, val_tgt, 128, val_unit, cfg.sim_weight)
    _log(f"validation MSE before training: {initial:.6g}", cfg.progress)

    lengths = [len(s) for s in sents]
    rng = np.random.default_rng(cfg.seed + 1)
    steps_per_epoch = math.ceil(len(train_pos) / cfg.batch_size)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    warmup = int(cfg.warmup_ratio * total_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    best = initial
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = [(0, initial)]
    t0 = time.perf_counter()
    step = 0
    train_lengths = [lengths[i] for i in train_pos]
    with _progress(total_steps, "train", "step", cfg.progress) as bar:
        while step < total_steps:
            for batch_pos in length_bucketed_batches(train_lengths, cfg.batch_size, rng):
                if step >= total_steps:
                    break
                rows = train_pos[batch_pos]
                model.train()
                feats = _preprocess(model, [sents[i] for i in rows])
                pred = model(feats)["sentence_embedding"]
                loss = torch.nn.functional.mse_loss(pred, torch.from_numpy(targets[rows]))
                if cfg.sim_weight > 0:  # relational term: the student's cosines match the unprojected teacher's
                    loss = loss + cfg.sim_weight * _cosine_matrix_mse(pred, teacher_unit[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3g}", best=f"{best:.3g}", refresh=False)
                if step % cfg.eval_every == 0 or step == total_steps:
                    v = _val_mse(model, val_sents, val_tgt, 128, val_unit, cfg.sim_weight)
                    history.append((step, v))
                    _log(f"step {step}/{total_steps}: validation MSE {v:.6g} (best {min(best, v):.6g})", cfg.progress)
                    if v < best:
                        best = v
                        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                        if cfg.save_best_during_training:
                            out.mkdir(parents=True, exist_ok=True)
                            model.save(str(out), safe_serialization=True)
    times["train"] = time.perf_counter() - t0
    model.load_state_dict(best_state)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out), safe_serialization=True)
    result = DistillResult(out, best, initial, history, stats, times)
    meta = {"teacher": teacher, "student": student, "n_sentences": len(sents), "n_train": int(len(train_pos)),
            "n_val": int(len(val_pos)), "config": asdict(cfg), "initial_val_mse": initial, "best_val_mse": best,
            "history": history, "target_stats": stats, "seconds": times}
    text = json.dumps(meta, indent=2)
    (out / "distill_run.json").write_text(text)  # the recipe travels with the model
    (Path(cache_dir) / "last_run.json").write_text(text)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Packaging
# ----------------------------------------------------------------------------------------------------------------------
def convert_float16(src: os.PathLike | str, dst: os.PathLike | str) -> Path:
    """Copy a sentence-transformers folder to ``dst`` with every floating-point safetensors tensor stored as float16.

    Non-weight files are copied unchanged; ``config.json`` keeps (or gets) ``"torch_dtype": "float32"`` and
    ``"dtype": "float32"`` so that transformers upcasts the half-precision weights at load, like tinyhpd does.
    """
    import shutil

    from safetensors.numpy import load_file, save_file

    src, dst = Path(src), Path(dst)
    if not (src / "modules.json").is_file():
        raise FileNotFoundError(f"{src}: not a sentence-transformers folder (no modules.json)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".safetensors":
            tensors = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in load_file(str(f)).items()}
            save_file(tensors, str(out), metadata={"format": "pt"})
            os.chmod(out, 0o644)
        elif rel.as_posix() == "config.json":
            cfg = json.loads(f.read_text(encoding="utf-8"))
            cfg["torch_dtype"] = cfg["dtype"] = "float32"
            out.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        else:
            shutil.copy2(f, out)
    return dst


def write_sha256sums(folder: os.PathLike | str, pattern: str = "*.safetensors") -> Path:
    """Write ``<folder>/SHA256SUMS`` (``sha256sum`` format, paths relative to the folder) for files matching ``pattern``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no file matches {pattern!r}")
    lines = []
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        lines.append(f"{h.hexdigest()}  {p.relative_to(folder).as_posix()}\n")
    out = folder / "SHA256SUMS"
    out.write_text("".join(lines), encoding="utf-8")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------
def _run_cli(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"distillation needs the [distill] extra ({exc}); run `pip install -e .[distill]`") from exc
    cfg = DistillConfig(dim=args.dim, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        warmup_ratio=args.warmup_ratio, max_seq_length=args.max_seq_length,
                        max_sentences=args.max_sentences, val_size=args.val_size, eval_every=args.eval_every,
                        target_scale=args.target_scale, init_dense=not args.no_init_dense, init_size=args.init_size,
                        projection_fit_size=args.projection_fit_size, init_method=args.init_method, seed=args.seed,
                        num_threads=args.threads, teacher_batch_size=args.teacher_batch_size, sim_weight=args.sim_weight,
                        progress=not args.quiet)
    cache = args.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "tinyhpd", "distill")
    teacher = args.teacher[0] if len(args.teacher) == 1 else args.teacher
    res = distill(teacher, args.student, args.sentences, args.out, cache_dir=cache, config=cfg)
    print(json.dumps({"out": str(res.out_dir), "initial_val_mse": res.initial_val_mse,
                      "best_val_mse": res.best_val_mse, "seconds": res.seconds}, indent=2))
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``tinyhpd distill``."""
    d = DistillConfig()
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
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length)
    p.add_argument("--max-sentences", type=int, default=None, help="random subsample size (seeded)")
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validate every N steps")
    p.add_argument("--target-scale", type=float, default=d.target_scale,
                   help="multiply the projected targets (default: 1, or shrink to max |t| = 0.9 if they exceed it)")
    p.add_argument("--no-init-dense", action="store_true", help="skip the least-squares Dense initialisation")
    p.add_argument("--init-method", choices=["lstsq", "procrustes"], default=d.init_method,
                   help="Dense initialisation: least squares to atanh(targets), or a rotation of the student's own "
                        "PCA projection (keeps its geometry)")
    p.add_argument("--init-size", type=int, default=d.init_size,
                   help="training sentences used for the least-squares Dense initialisation")
    p.add_argument("--projection-fit-size", type=int, default=d.projection_fit_size,
                   help="training sentences whose teacher embeddings fit the PCA directions (0: all)")
    p.add_argument("--teacher-batch-size", type=int, default=d.teacher_batch_size)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--sim-weight", type=float, default=d.sim_weight,
                   help="weight of an extra in-batch cosine-matrix MSE to the unprojected teacher (0: plain HPD)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run_cli)
