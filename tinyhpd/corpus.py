"""A resumable corpus job: embed a large input into shards, in bounded memory, and continue after a crash.

```
DIR/manifest.json        model fingerprint and name, dim, input path/size/mtime/kind/field, shard size; "complete"
DIR/part-00000.ids.npy   int64 row ids of shard 0 (1-based line numbers for text and JSONL, row numbers for Parquet)
DIR/part-00000.npy       float32 [rows, dim] (or part-00000.parquet with an `id` and an `embedding` column)
```

Concatenated in name order the shards are the input's embeddings, in input order. Every file is written atomically
(`_io.atomic_write`) and a shard's vectors last, so a shard whose vectors file exists is complete. Run again after a
kill, the same call skips the complete shards and continues from the first missing one; the result equals a one-shot
run. Another input (size or mtime changed), another model or other settings are refused with an error naming the key.
Memory holds one shard at a time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from tinyhpd.arguments import positive_int
from tinyhpd._io import atomic_write, iter_lines, save_npy_atomic, write_text_atomic

__all__ = ["embed_corpus", "read_items", "MANIFEST"]

MANIFEST = "manifest.json"
LOCK = ".lock"  # held by the one writer of an output folder
FORMAT = "tinyhpd-embeddings"
FORMAT_VERSION = 1


def _kind(path: Path, field: Optional[str]) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")) or field is not None:
        return "jsonl"
    return "text"


def read_items(path: Path, kind: str, field: Optional[str]) -> Iterator[Tuple[int, str]]:
    """(id, text) for every item, streamed: lines of a text file, `field` of each JSONL object, a Parquet column."""
    if kind == "text":
        for number, line in enumerate(iter_lines(path), start=1):
            yield number, line
    elif kind == "jsonl":
        field = field or "text"
        for number, line in enumerate(iter_lines(path), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}: line {number} is not JSON ({exc})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise ValueError(f"{path}: line {number} has no string field {field!r}")
            yield number, obj[field]
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from None
        field = field or "text"
        f = pq.ParquetFile(path)
        if field not in f.schema_arrow.names:
            raise ValueError(f"{path}: no column {field!r} (columns: {', '.join(f.schema_arrow.names)})")
        row = 0
        for batch in f.iter_batches(columns=[field], batch_size=8192):
            for value in batch.column(0).to_pylist():
                if not isinstance(value, str):
                    raise ValueError(f"{path}: row {row} of column {field!r} is {type(value).__name__}, not a string")
                yield row, value
                row += 1


def _shard_name(i: int, fmt: str) -> str:
    return f"part-{i:05d}.{'parquet' if fmt == 'parquet' else 'npy'}"


def _write_shard(out: Path, i: int, ids: List[int], vecs: np.ndarray, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": pa.array(ids, pa.int64()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])})
        atomic_write(out / _shard_name(i, fmt), lambda f: pq.write_table(table, f))
        return
    save_npy_atomic(out / f"part-{i:05d}.ids.npy", np.asarray(ids, dtype=np.int64))
    save_npy_atomic(out / _shard_name(i, fmt), vecs)  # last: its presence marks the shard complete


def embed_corpus(input_path: Any, out_dir: Any, model: Any, *, field: Optional[str] = None,
                 shard_size: int = 100_000, fmt: str = "npy", batch_size: int = 256,
                 progress: Optional[bool] = None) -> Dict[str, Any]:
    """Embed every item of `input_path` into shards under `out_dir` (see the module docstring); resumable.
    Returns the manifest."""
    src, out = Path(input_path), Path(out_dir)
    shard_size = positive_int(shard_size, "shard_size")
    if fmt not in ("npy", "parquet"):
        raise ValueError(f"format must be 'npy' or 'parquet', got {fmt!r}")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    kind = _kind(src, field)
    st = src.stat()
    want = {"format": FORMAT, "format_version": FORMAT_VERSION, "input": str(src.resolve()), "input_size": st.st_size,
            "input_mtime_ns": st.st_mtime_ns, "input_kind": kind, "field": field, "shard_size": shard_size,
            "shard_format": fmt, "model": str(model.name_or_path), "fingerprint": model.fingerprint,
            "dim": int(model.embedding_dim)}
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        return _embed_locked(src, out, st, kind, field, shard_size, fmt, batch_size, progress, model, want)
    finally:
        os.close(lock)  # releases the lock


def _lock(out: Path) -> int:
    """An exclusive lock on `out/.lock` for this writer (released when its fd closes, also on a crash); a second
    writer is refused with the first one's pid instead of racing it (and deleting its temporary files)."""
    import fcntl

    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"{out} is being written by another embed run (pid {holder}); wait for it to finish or use "
                         "another --out folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    return fd


def _embed_locked(src: Path, out: Path, st: os.stat_result, kind: str, field: Optional[str], shard_size: int,
                  fmt: str, batch_size: int, progress: Optional[bool], model: Any, want: Dict[str, Any]
                  ) -> Dict[str, Any]:
    mpath = out / MANIFEST
    if mpath.exists():
        try:
            have = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{mpath}: not valid JSON ({exc})") from None
        if not isinstance(have, dict) or have.get("format") != FORMAT:
            raise ValueError(f"{mpath}: not a {FORMAT} manifest; use another --out folder")
        for key, value in want.items():
            if have.get(key) != value:
                raise ValueError(f"{out}: holds a job with another {key} ({have.get(key)!r}, now {value!r}); "
                                 "refusing to mix: use another --out folder or delete this one")
        if have.get("complete"):
            return have
    elif any(p.name != LOCK for p in out.iterdir()):
        raise ValueError(f"{out}: not empty and holds no {MANIFEST}; refusing to write shards into it")
    for stale in out.glob(".*.tmp"):  # what a killed run's atomic writes left behind
        stale.unlink()
    write_text_atomic(mpath, json.dumps({**want, "complete": False}, indent=2))
    first_missing = 0
    while (out / _shard_name(first_missing, fmt)).exists():
        first_missing += 1
    bar = None
    if progress or (progress is None and os.isatty(2)):
        from tqdm.auto import tqdm

        bar = tqdm(desc="embed", unit="sent", initial=first_missing * shard_size, dynamic_ncols=True)
    items = read_items(src, kind, field)
    rows = 0
    shard = 0
    try:
        while True:
            ids: List[int] = []
            texts: List[str] = []
            for ident, text in items:
                ids.append(ident)
                texts.append(text)
                if len(ids) == shard_size:
                    break
            if not ids:
                break
            if shard >= first_missing:
                vecs = model.encode(texts, batch_size=batch_size)
                _write_shard(out, shard, ids, vecs, fmt)
                if bar is not None:
                    bar.update(len(ids))
            rows += len(ids)
            shard += 1
            if len(ids) < shard_size:
                break
    finally:
        if bar is not None:
            bar.close()
    if src.stat().st_mtime_ns != st.st_mtime_ns or src.stat().st_size != st.st_size:
        raise ValueError(f"{src} changed while it was being embedded; run again into a new folder")
    done = {**want, "complete": True, "rows": rows, "shards": shard}
    write_text_atomic(mpath, json.dumps(done, indent=2))
    return done
