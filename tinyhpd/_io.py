"""Files, one helper per concern, used everywhere: atomic writes, files of lines, safetensors headers.

- `atomic_write(path, write)`: the bytes go to a temporary file beside `path`, are fsync'd, then renamed over it
  (and the folder fsync'd): a reader sees the old file or the new one, never half of one; a failure leaves no temp.
- `read_lines` / `iter_lines`: one item per line, split on `\n` and `\r\n` only (a lone `\r`, `\x0b`, `\x1c`, U+2028
  inside a line stays in it, unlike `str.splitlines`); UTF-8 errors name the line.
- `safetensors_header(path)`: the header of a safetensors file, checked as the format requires (offsets non-negative,
  ordered, non-overlapping, covering the data section exactly; shapes and dtypes consistent).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import numpy as np

from tinyhpd.dtypes import ITEMSIZE

__all__ = ["atomic_write", "write_bytes_atomic", "write_text_atomic", "save_npy_atomic", "fsync_dir", "read_lines",
           "iter_lines", "safetensors_header", "exchange_paths", "remove_stale_siblings",
           "MAX_HEADER_BYTES"]

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(path: PathLike) -> None:
    """fsync a folder (so a rename inside it is durable); a no-op where folders cannot be opened."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status), else the usual 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def atomic_write(path: PathLike, write: Callable[[Any], None]) -> Path:
    """`write(f)` into a temporary file beside `path` (binary mode), fsync, rename over `path`, fsync the folder.
    The file gets the mode a plain `open` would give it (0666 less the umask; mkstemp's is 0600). A failure of the
    disk (full, quota, file size limit) is an OSError naming `path`, its cause and the space left."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                import shutil

                code = exc.errno
                if code is None:  # NumPy's tofile says only "N requested and M written": ask the OS why
                    try:
                        os.write(f.fileno(), b"\0")
                    except OSError as probe:
                        code = probe.errno
                free = shutil.disk_usage(parent).free
                cause = os.strerror(code) if code else str(exc)
                raise OSError(code, f"{path}: writing failed: {cause} ({free:,} bytes free on its file "
                                    "system)") from None
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(parent)
    return path


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_npy_atomic(path: PathLike, array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.save(f, array))


def exchange_paths(a: PathLike, b: PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE): at every instant each name holds
    one complete folder. False where the system cannot (then callers fall back to two renames)."""
    import ctypes
    import ctypes.util
    import errno

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), f"{a} <-> {b}")


def remove_stale_siblings(path: PathLike, prefix: str) -> int:
    """Remove `.<name>.<prefix>-<pid>-*` folders beside `path` whose writer process is gone (what killed saves left);
    folders of live processes (a concurrent save) are kept. Returns how many were removed."""
    import shutil

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    removed = 0
    for p in parent.glob(f".{path.name}.{prefix}-*"):
        try:
            pid = int(p.name[len(f".{path.name}.{prefix}-"):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            continue  # alive: its writer may still be at work
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed += 1
    return removed


def _split_line(raw: bytes, number: int, where: str) -> str:
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: line {number} is not UTF-8 text (byte {exc.start} of the line)") from None


def iter_lines(path: PathLike) -> Iterator[str]:
    """The lines of a UTF-8 file (or `-` for stdin), streamed, without their `\\n` / `\\r\\n`; a UTF-8 BOM at the start
    is dropped. Only `\\n` ends a line."""
    if str(path) == "-":
        stream, where, close = sys.stdin.buffer, "<stdin>", False
    else:
        p = Path(path)
        if p.is_dir():
            raise IsADirectoryError(f"{p}: is a folder, expected a text file")
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
        stream, where, close = open(p, "rb"), str(p), True
    try:
        for number, raw in enumerate(stream, start=1):  # binary-mode iteration splits on b"\n" only
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
                if not raw:  # a file holding only a BOM is an empty file, not one empty line
                    return
            yield _split_line(raw, number, where)
    finally:
        if close:
            stream.close()


def read_lines(path: PathLike) -> List[str]:
    return list(iter_lines(path))


MAX_HEADER_BYTES = 100 << 20  # the safetensors reference implementation's own limit
MAX_DIMS = 8


def safetensors_header(path: PathLike, f: Any = None) -> Tuple[Dict[str, Any], Dict[str, dict], int]:
    """(metadata, {name: {"dtype", "shape", "data_offsets"}}, data start) of a safetensors file, every entry checked:
    a known dtype, a shape of non-negative ints, `end - begin == itemsize * prod(shape)`, offsets non-negative and,
    sorted, contiguous from 0 to exactly the size of the data section (no gap, no overlap, nothing after). `f`: the
    file already open (read from its start; `path` only names it in errors)."""
    path = Path(path)
    if f is None:
        with open(path, "rb") as g:
            return safetensors_header(path, g)
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(8)
    if len(head) != 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    n = int.from_bytes(head, "little")
    if n < 2 or n > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(f"{path}: not a safetensors file or truncated (header length {n}, file {size} bytes)")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, expected an object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: __metadata__ must be an object")
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError(f"{path}: tensor {name!r}: entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in ITEMSIZE:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
            raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and 0 <= o for o in offsets) or offsets[0] > offsets[1]):
            raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        count = 1
        for d in shape:
            count *= d
        if offsets[1] - offsets[0] != count * ITEMSIZE[dtype]:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, "
                             f"its shape {shape} and dtype {dtype} need {count * ITEMSIZE[dtype]}")
        if offsets[1] > data_size:
            raise ValueError(f"{path}: tensor {name!r} lies outside the file (data section {data_size} bytes; "
                             "truncated download?)")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise ValueError(f"{path}: tensor {name!r} starts at byte {begin} of the data section, expected {end} "
                             f"({'overlapping' if begin < end else 'a gap between'} tensors)")
        end = stop
    if end != data_size:
        raise ValueError(f"{path}: the tensors cover {end} of the data section's {data_size} bytes")
    return metadata, header, 8 + n
