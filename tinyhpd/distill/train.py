"""The training loop: student built from a sentence-transformers body, Dense initialised by least squares,
MSE to the projected teacher (+ an optional cosine-matrix term), validation checkpointing."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd._io import write_text_atomic
from tinyhpd.distill.data import read_sentences, sample_indices, split_train_val
from tinyhpd.distill.projection import auto_target_scale, fit_projection, init_dense_least_squares, project
from tinyhpd.distill.teacher import TEACHER_ENGINES, progress_bar, teacher_embeddings
from tinyhpd.heads import normalize


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
    teacher_engine: str = "torch"  # "onnx": the teacher's transformer body on ONNX Runtime (checked against torch)
    student_layers: Optional[Tuple[int, ...]] = None  # keep only these encoder layers of the student's body, in order


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


def keep_layers(transformer, layers: Sequence[int], student: str = "student") -> None:
    """Cut a sentence-transformers Transformer's encoder down to ``layers`` (indices into its layers, in order)."""
    import torch

    model = getattr(transformer, "auto_model", None) or transformer.model
    encoder = getattr(model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise ValueError(f"{student}: its body has no encoder.layer list to cut ({type(model).__name__})")
    n = len(stack)
    picked = [int(i) for i in layers]
    if not picked or any(i < 0 or i >= n for i in picked) or len(set(picked)) != len(picked):
        raise ValueError(f"{student}: student_layers {list(layers)} must be distinct indices in 0..{n - 1}")
    encoder.layer = torch.nn.ModuleList([stack[i] for i in picked])
    model.config.num_hidden_layers = len(picked)


def _student_head(base, hidden: int, dim: int):
    """The student's own Dense(hidden -> dim, Tanh) head when it already is Transformer + mean Pooling + that Dense
    (a tinyhpd/HPD model being trained further), else None."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    modules = list(base)
    if len(modules) != 3 or not all(isinstance(m, c) for m, c in zip(modules, (Transformer, Pooling, Dense))):
        return None
    pool_cfg, dense = modules[1].get_config_dict(), modules[2]
    mean = pool_cfg.get("pooling_mode") == "mean" or pool_cfg.get("pooling_mode_mean_tokens") is True
    fits = (getattr(dense, "in_features", None), getattr(dense, "out_features", None)) == (hidden, dim)
    if not (mean and fits and isinstance(getattr(dense, "activation_function", None), torch.nn.Tanh)):
        return None
    return dense.float()


def _build_student(student: str, dim: int, max_seq_length: int, layers: Optional[Sequence[int]] = None):
    """Student = the student's Transformer (optionally only some of its layers) + mean pooling + Dense(hidden -> dim,
    Tanh) as a SentenceTransformer, and where that Dense comes from: ``"student"`` when the student already ends in
    such a head (kept, so ``init_dense=False`` continues its training), else ``"random"``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    base = SentenceTransformer(student, device="cpu")
    transformer = base[0]
    if not isinstance(transformer, Transformer):
        raise ValueError(f"student {student!r}: first module must be a Transformer, got {type(transformer).__name__}")
    if layers is not None:
        keep_layers(transformer, layers, f"student {student!r}")
    transformer.float()  # a float16-stored student (such as the bundled default) trains in float32
    transformer.max_seq_length = max_seq_length
    dim_fn = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    hidden = dim_fn()
    pooling = Pooling(hidden, pooling_mode="mean")
    dense = _student_head(base, hidden, dim)
    origin = "student" if dense is not None else "random"
    if dense is None:
        dense = Dense(hidden, dim, activation_function=torch.nn.Tanh())
    return SentenceTransformer(modules=[transformer, pooling, dense], device="cpu"), origin


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
    with torch.no_grad(), progress_bar(len(sentences), "student features", "sent", progress) as bar:
        for i in range(0, len(sentences), batch_size):
            idx = order[i:i + batch_size]
            feats = _preprocess(model, [sentences[j] for j in idx])
            out[idx] = body(feats)["sentence_embedding"].float().numpy()
            bar.update(len(idx))
    return out


def init_student_dense(model, sentences: Sequence[str], targets: np.ndarray, method: str = "lstsq",
                       progress: bool = False) -> None:
    """Set the student's Dense (``model[2]``) from its mean-pooled features of ``sentences`` and their ``targets``:
    ``"lstsq"`` fits atanh(targets), ``"procrustes"`` rotates the student's own PCA projection."""
    import torch

    if method not in ("lstsq", "procrustes"):
        raise ValueError(f"init_method must be 'lstsq' or 'procrustes', got {method!r}")
    feats = _pooled_features(model, sentences, 128, progress)
    fit = init_dense_procrustes if method == "procrustes" else init_dense_least_squares
    w, b = fit(feats, targets)
    with torch.no_grad():
        model[2].linear.weight.copy_(torch.from_numpy(w))
        model[2].linear.bias.copy_(torch.from_numpy(b))


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


@dataclass
class Targets:
    """The sentences of a run, its train/validation split, the (ensemble) teacher embeddings and the projected targets."""

    sentences: List[str]
    train_pos: np.ndarray
    val_pos: np.ndarray
    teacher: np.ndarray  # [n, d_teacher]
    targets: np.ndarray  # [n, dim]: top-dim PCA projection of the teacher, scaled into Tanh's range
    components: np.ndarray  # [dim, d_teacher]: that projection (also saved as projection_<dim>.npy in the cache)
    stats: dict
    teacher_seconds: float


def prepare_targets(
    teacher: Union[str, Sequence[str]],
    sentences: os.PathLike | str | Sequence[str],
    cache_dir: os.PathLike | str,
    cfg: DistillConfig,
    teacher_encoder: Union[None, Callable[[List[str]], np.ndarray], Sequence[Callable[[List[str]], np.ndarray]]] = None,
) -> Targets:
    """Everything :func:`distill` trains against, before the student exists (teacher runs come from the cache)."""
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
    # The teachers see the sample in file order, so the cache chunks do not depend on the seed: another --seed (a new
    # split and batch order) reuses every chunk; only another sample (--max-sentences) or file computes new ones.
    by_file = np.argsort(idx, kind="stable")  # sample positions in file order
    file_sents = [sents[i] for i in by_file]
    emb = teacher_ensemble([
        teacher_embeddings(str(t), file_sents, cache_dir, batch_size=cfg.teacher_batch_size, chunk_size=cfg.chunk_size,
                           progress=cfg.progress, encoder=enc, engine=cfg.teacher_engine, threads=cfg.num_threads)
        for t, enc in zip(teachers, encoders)])
    emb[by_file] = emb.copy()  # back to sample order: row k is sents[k]
    seconds = time.perf_counter() - t0
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
    return Targets(sents, train_pos, val_pos, emb, targets, components, stats, seconds)


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
    if cfg.teacher_engine not in TEACHER_ENGINES:
        raise ValueError(f"teacher_engine must be one of {', '.join(TEACHER_ENGINES)}, got {cfg.teacher_engine!r}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    times: dict = {}
    out = Path(out_dir)
    data = prepare_targets(teacher, sentences, cache_dir, cfg, teacher_encoder)
    sents, train_pos, val_pos, targets, stats = data.sentences, data.train_pos, data.val_pos, data.targets, data.stats
    times["teacher"] = data.teacher_seconds
    teacher_unit = normalize(data.teacher) if cfg.sim_weight > 0 else None

    model, dense_start = _build_student(student, cfg.dim, cfg.max_seq_length, cfg.student_layers)
    val_sents = [sents[i] for i in val_pos]
    val_tgt = targets[val_pos]
    if cfg.init_dense:
        t0 = time.perf_counter()
        init_rows = train_pos[: cfg.init_size]
        init_student_dense(model, [sents[i] for i in init_rows], targets[init_rows], cfg.init_method, cfg.progress)
        times["init_dense"] = time.perf_counter() - t0
        dense_start = cfg.init_method
    _log(f"Dense head starts from: {dense_start}", cfg.progress)
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
    with progress_bar(total_steps, "train", "step", cfg.progress) as bar:
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
            "n_val": int(len(val_pos)), "config": asdict(cfg), "dense_start": dense_start,
            "initial_val_mse": initial, "best_val_mse": best, "history": history, "target_stats": stats,
            "seconds": times}
    text = json.dumps(meta, indent=2)
    write_text_atomic(out / "distill_run.json", text)  # the recipe travels with the model
    write_text_atomic(Path(cache_dir) / "last_run.json", text)
    return result
