"""What `export` reads: an index folder (`Index.save`) or a complete `tinyhpd embed` output folder, as batches of
(ids, float32 unit vectors) in a fixed order, plus what identifies the source (so a resumed export can check it is
still reading the same thing)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import numpy as np


@dataclass
class Source:
    """``batches(start, size)`` yields (ids, vectors) from row ``start`` on."""

    path: Path
    kind: str  # "index" or "embeddings"
    count: int
    dim: int
    id_type: str  # "bigint" or "text"
    identity: dict  # compared on resume
    batches: Callable[[int, int], Iterator[Tuple[List[Any], np.ndarray]]]


def open_source(path: Any) -> Source:
    folder = Path(path)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder}: no manifest.json; export reads an index folder or a `tinyhpd embed` "
                                "output folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{manifest_path}: invalid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: not a tinyhpd manifest")
    from tinyhpd.corpus import FORMAT as EMBED_FORMAT
    from tinyhpd.index.checks import FORMAT_NAME as INDEX_FORMAT

    if manifest.get("format") == INDEX_FORMAT:
        return _index_source(folder, manifest)
    if manifest.get("format") == EMBED_FORMAT:
        return _embeddings_source(folder, manifest)
    raise ValueError(f"{manifest_path}: format {manifest.get('format')!r} is neither an index nor embed output")


def _index_source(folder: Path, manifest: dict) -> Source:
    from tinyhpd.index import Index

    index = Index.load(folder, mmap=True)
    if not index.codec.exact:
        raise ValueError(f"{folder}: a binary index keeps only sign bits; export an index with float32, float16 or "
                         "int8 storage (or the embed output)")
    ids = index.ids
    id_type = "bigint" if all(isinstance(i, int) for i in ids) else "text"
    if id_type == "text":
        ids = [str(i) for i in ids]

    def batches(start: int, size: int) -> Iterator[Tuple[List[Any], np.ndarray]]:
        for begin in range(start, len(ids), size):
            part = ids[begin:begin + size]
            yield part, index.vectors_range(begin, begin + len(part), np.float32)

    identity = {"kind": "index", "count": len(index), "dim": index.dim, "dtype": index.dtype,
                "sha256": manifest.get("sha256"), "model": manifest.get("model")}
    return Source(folder, "index", len(index), index.dim, id_type, identity, batches)


def _embeddings_source(folder: Path, manifest: dict) -> Source:
    if not manifest.get("complete"):
        raise ValueError(f"{folder}: the embed job is not complete; run `tinyhpd embed` again to finish it first")
    dim, rows, shards = manifest.get("dim"), manifest.get("rows"), manifest.get("shards")
    shard_size = manifest.get("shard_size")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (dim, rows, shards, shard_size)) \
            or shard_size < 1:
        raise ValueError(f"{folder / 'manifest.json'}: dim, rows, shards and shard_size must be integers "
                         f"(shard_size at least 1); got {dim!r}, {rows!r}, {shards!r}, {shard_size!r}")
    fmt = manifest.get("shard_format", "npy")
    files = [folder / f"part-{i:05d}.{'parquet' if fmt == 'parquet' else 'npy'}" for i in range(shards)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (the manifest lists {shards} shards)")

    def shard(i: int) -> Tuple[np.ndarray, np.ndarray]:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(files[i])
            ids = table.column("id").to_numpy()
            vecs = np.asarray(table.column("embedding").combine_chunks().flatten().to_numpy(), np.float32)
            vecs = vecs.reshape(len(ids), dim)
        else:
            ids = np.load(folder / f"part-{i:05d}.ids.npy")
            vecs = np.load(files[i], mmap_mode="r")
        if vecs.ndim != 2 or vecs.shape != (len(ids), dim):
            raise ValueError(f"{files[i]}: shape {list(vecs.shape)}, expected [{len(ids)}, {dim}]")
        return ids, vecs

    def batches(start: int, size: int) -> Iterator[Tuple[List[Any], np.ndarray]]:
        first = start // shard_size  # every shard but the last holds shard_size rows: a resume reads none before
        for i in range(first, shards):
            ids, vecs = shard(i)
            if i < shards - 1 and len(ids) != shard_size:
                raise ValueError(f"{files[i]}: {len(ids)} rows, the manifest's shard_size is {shard_size}")
            lo = start - i * shard_size if i == first else 0
            for begin in range(lo, len(ids), size):
                stop = min(len(ids), begin + size)
                block = np.asarray(vecs[begin:stop], dtype=np.float64)
                norms = np.linalg.norm(block, axis=1)
                if not (np.isfinite(norms).all() and (norms > 0).all()):
                    bad = int(np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))[0])
                    raise ValueError(f"{files[i]}: row {begin + bad} is zero, NaN or infinite")
                yield ids[begin:stop].tolist(), (block / norms[:, None]).astype(np.float32)

    identity = {"kind": "embeddings", "count": rows, "dim": dim, "fingerprint": manifest.get("fingerprint"),
                "input": manifest.get("input"), "input_size": manifest.get("input_size")}
    return Source(folder, "embeddings", rows, dim, "bigint", identity, batches)
