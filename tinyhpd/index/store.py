"""An index on disk: model identity, safetensors vectors, the manifest and its checks; model access."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from tinyhpd._io import safetensors_header

from tinyhpd import dtypes
from tinyhpd.arguments import positive_int
from tinyhpd.index.checks import check_dtype, FORMAT_NAME, FORMAT_VERSION, IDS, VECTORS
from tinyhpd.index.ann import GRAPH
from tinyhpd.index.codecs import READABLE_STORAGE


def model_identity(model: Any) -> dict:
    """name_or_path, revision, fingerprint and embedding dim of a tinyhpd.Model (or a look-alike)."""
    dim = getattr(model, "embedding_dim", None)
    if dim is None:
        for getter in ("get_sentence_embedding_dimension", "get_embedding_dimension"):
            if callable(getattr(model, getter, None)):
                dim = getattr(model, getter)()
                break
    fingerprint = getattr(model, "fingerprint", None)
    return {
        "name_or_path": None if getattr(model, "name_or_path", None) is None else str(model.name_or_path),
        "revision": getattr(model, "revision", None),
        "fingerprint": None if fingerprint is None else str(fingerprint),
        "embedding_dim": None if dim is None else int(dim),
    }


def write_bytes(path: Path, data: bytes) -> None:
    """One file of a new index folder, fsync'd (the folder itself becomes visible by one rename)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha256_of(f) -> str:
    """The sha256 of an open binary file, from where it stands to its end, read in 1 MB blocks."""
    import hashlib

    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


class FolderChanged(Exception):
    """The folder was replaced (or removed) while its files were being opened: open it again."""


class FolderFiles:
    """Files of one folder opened together through one handle on the folder (a directory fd), so that they are one
    version of it: `Index.save` swaps a new folder in with RENAME_EXCHANGE and removes the old one, and a reader that
    opened files by path one after another could pair one version's vectors with the other's ids. Once open, a file
    stays readable even when a writer unlinks it. A file missing at open time means a writer is at work:
    `FolderChanged` (the caller opens the folder again)."""

    def __init__(self, folder: Path, names: Tuple[str, ...], optional: Tuple[str, ...] = ()) -> None:
        self.folder = folder
        self._files = {}
        try:
            dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            raise FolderChanged(str(folder)) from None
        try:
            for name in names + optional:
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                except FileNotFoundError:
                    if name in optional:
                        continue
                    self.close()
                    raise FolderChanged(f"{folder / name}") from None
                self._files[name] = os.fdopen(fd, "rb")
        finally:
            os.close(dir_fd)

    def __enter__(self) -> "FolderFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def file(self, name: str):
        return self._files[name]

    def has(self, name: str) -> bool:
        return name in self._files

    def path(self, name: str) -> str:
        """A path that opens this very file (the open descriptor's /proc entry where there is one)."""
        proc = f"/proc/self/fd/{self._files[name].fileno()}"
        return proc if os.path.exists(proc) else str(self.folder / name)

    def size(self, name: str) -> int:
        return os.fstat(self._files[name].fileno()).st_size

    def read(self, name: str) -> bytes:
        f = self._files[name]
        f.seek(0)
        return f.read()

    def sha256(self, name: str) -> str:
        f = self._files[name]
        f.seek(0)
        return sha256_of(f)


def read_safetensors_header(path: Path, f=None) -> Tuple[dict, int]:
    """The tensor entries of a safetensors file (checked by `_io.safetensors_header`) and where its data starts;
    `f`: the file already open (read from it, `path` names it in errors)."""
    _, header, start = safetensors_header(path, f)
    return header, start


def open_tensor(path: Path, header: dict, start: int, name: str, mmap: bool, f=None) -> np.ndarray:
    size = path.stat().st_size if f is None else os.fstat(f.fileno()).st_size
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: tensor {name!r} is missing")
    known = dtypes.by_safetensors(entry.get("dtype"))
    dtype = known.numpy if known is not None and known.numpy in READABLE_STORAGE else None
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
    shape = tuple(int(s) for s in entry["shape"])
    begin, end = (int(o) for o in entry["data_offsets"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - begin != expected or start + end > size:
        raise ValueError(f"{path}: tensor {name!r} is truncated or inconsistent with its shape {list(shape)}")
    if expected == 0:
        return np.empty(shape, dtype=dtype)
    if mmap:
        return np.memmap(path if f is None else f, dtype=dtype, mode="r", offset=start + begin, shape=shape)
    if f is None:
        with open(path, "rb") as g:
            g.seek(start + begin)
            return np.fromfile(g, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    f.seek(start + begin)
    raw = f.read(expected)
    if len(raw) != expected:
        raise ValueError(f"{path}: tensor {name!r} is truncated")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()



def check_manifest(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {version!r} is not supported (this tinyhpd reads <= {FORMAT_VERSION})")
    for key, kind in (("dim", int), ("count", int), ("dtype", str), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{where}: key {key!r} is missing or not a {kind.__name__}")
    try:
        check_dtype(manifest["dtype"])
        positive_int(manifest["dim"], "dim")
    except ValueError as bad:
        raise ValueError(f"{where}: {bad}") from None
    if manifest["count"] < 0:
        raise ValueError(f"{where}: negative count")
    expected = {VECTORS, IDS} | ({GRAPH} if manifest.get("ann") is not None else set())
    if set(manifest["files"]) != expected:
        raise ValueError(f"{where}: 'files' must list {', '.join(sorted(expected))}")
    if manifest.get("model") is not None and not isinstance(manifest["model"], dict):
        raise ValueError(f"{where}: key 'model' must be an object or null")



# ----------------------------------------------------------------------------------------------------------------
# model access (lazy imports keep `import tinyhpd.index` light)


def load_model(name: Optional[str], revision: Optional[str] = None) -> Any:
    import tinyhpd

    if not hasattr(tinyhpd, "load"):
        raise RuntimeError("tinyhpd.load is not available in this build; pass a loaded model")
    kwargs = {} if revision is None else {"revision": revision}
    return tinyhpd.load(name, **kwargs)


def encode_texts(model: Any, texts: List[str], *, batch_size: int = 32, show_progress_bar: Optional[bool] = None) -> np.ndarray:
    kwargs: dict = {"batch_size": batch_size}
    if show_progress_bar is not None:
        kwargs["show_progress_bar"] = show_progress_bar
    emb = np.asarray(model.encode(texts, **kwargs))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"model.encode returned shape {emb.shape} for {len(texts)} texts")
    return emb
