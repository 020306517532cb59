"""Teacher embeddings, computed chunk by chunk and cached on disk (an interrupted run resumes)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from tinyhpd._io import save_npy_atomic, write_text_atomic


_CACHE_VERSION = 1
TEACHER_ENGINES = ("torch", "onnx")  # how a teacher's transformer body runs (the CLI's --teacher-engine choices)


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


def progress_bar(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


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
    write_text_atomic(path, json.dumps({"teachers": teachers}, indent=2))


def teacher_embeddings(
    teacher: str,
    sentences: Sequence[str],
    cache_dir: os.PathLike | str,
    *,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: bool = True,
    encoder: Optional[Callable[[List[str]], np.ndarray]] = None,
    engine: str = "torch",
    threads: Optional[int] = None,
) -> np.ndarray:
    """Teacher embeddings of ``sentences`` as float32 ``(n, d)``, computed chunk by chunk and cached on disk.

    Each chunk of ``chunk_size`` sentences is stored as ``<cache_dir>/chunk_<key>.npy`` where the key hashes the teacher's
    identity and the chunk's sentences, so an interrupted run recomputes only the missing chunks, and a different
    sentence order, sample or teacher never reuses stale vectors. ``encoder`` overrides how a chunk is encoded (tests);
    by default the teacher is loaded with sentence-transformers on the CPU, on first need only. ``engine="onnx"`` runs
    the teacher's transformer body on ONNX Runtime instead (:class:`~tinyhpd.distill.onnx_teacher.OnnxTeacher`, checked
    against torch on its first batch); the cache is shared, whichever engine filled a chunk.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError("chunk_size and batch_size must be >= 1")
    if engine not in TEACHER_ENGINES:
        raise ValueError(f"teacher engine must be one of {', '.join(TEACHER_ENGINES)}, got {engine!r}")
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
        if engine == "onnx":
            if "onnx" not in model_holder:
                from tinyhpd.distill.onnx_teacher import OnnxTeacher

                model_holder["onnx"] = OnnxTeacher(teacher, teacher_id, cache, threads=threads, batch_size=batch_size)
            return model_holder["onnx"].encode(batch)
        if "model" not in model_holder:
            from sentence_transformers import SentenceTransformer

            model_holder["model"] = SentenceTransformer(teacher, device="cpu")
        out = model_holder["model"].encode(batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    n_missing = sum(len(chunks[i]) for i in missing)
    with progress_bar(n_missing, "teacher", "sent", progress and n_missing > 0) as bar:
        for i in missing:
            emb = encode(chunks[i])
            if emb.shape[0] != len(chunks[i]):
                raise RuntimeError(f"teacher returned {emb.shape[0]} vectors for {len(chunks[i])} sentences")
            save_npy_atomic(paths[i], emb)
            bar.update(len(chunks[i]))
    _record_teacher(cache / "teacher.json", teacher, teacher_id, len(sentences))
    if not paths:
        raise ValueError("no sentences to encode")
    return np.concatenate([np.load(p) for p in paths], axis=0).astype(np.float32, copy=False)
