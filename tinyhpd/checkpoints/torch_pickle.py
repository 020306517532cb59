"""`torch.save`d state dicts read without torch and without executing the pickle, in both of torch's formats:

- the zip format (torch >= 1.6): `<archive>/data.pkl` plus one zip entry per storage, `<archive>/data/<key>`;
- the legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row (the magic
  number, the protocol version, a sys-info dict, the state dict, the sorted storage keys), then each storage's raw
  bytes in key order, each behind its element count as an int64.

What a state dict pickle may hold, and nothing else:
- the globals `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter`
  and torch's typed storage classes (`torch.FloatStorage`, ...); any other global is refused before it is resolved;
- persistent ids `('storage', <storage class>, key, location, numel[, view])` naming storages of the file;
- the opcodes `torch.save` writes for that, and BUILD only where `Module.state_dict()` puts it: on an `OrderedDict`,
  with a state `{'_metadata': {module name: {key: plain value}}}` (each submodule's version). That state is checked
  and dropped: no attribute is ever set from a file.

One linear opcode scan runs before anything is unpickled (`_scan_pickle`): opcodes, nesting depth and the BUILD rule.
Tensors come back as lazy references checked against their storage's element count (views inside their storages,
no broadcast strides) before any storage byte is read; sizes are checked against the file before anything is read or
allocated, and a truncated file is an error naming it.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from tinyhpd import dtypes

__all__ = ["read_torch", "read_torch_zip", "read_torch_legacy", "LEGACY_MAGIC", "MAX_PICKLE_BYTES"]

Tensors = Dict[str, np.ndarray]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle holds names and shapes only: ~100 bytes per tensor
_MAX_DEPTH = 64  # nesting of containers in a state dict pickle (a dict of tensors needs about 5)
_MAX_METADATA_ENTRIES = 1 << 20  # `_metadata` has one entry per submodule
_MAX_METADATA_KEYS = 16  # each entry is a small dict, `{"version": 1}` in every torch so far

# ------------------------------------------------------------------------------------------------ what a pickle names


class _StorageType:
    """What `torch.FloatStorage` & co. resolve to: only their element type."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: dtypes.DType) -> None:
        self.dtype = dtype

    def __setstate__(self, state):  # never reached (the scan admits BUILD on an OrderedDict only): defence in depth
        raise pickle.UnpicklingError("BUILD on a storage class is not part of a state dict")


class _StorageRef:
    """A storage of the file, known by key, element type and element count; its bytes are read only after the whole
    pickle has been checked. `offset`/`numel` narrow it to a legacy storage view."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key: str, dtype: dtypes.DType, numel: int, offset: int = 0) -> None:
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a storage is not part of a state dict")


class _TensorRef:
    """A strided view of a storage, checked to lie inside it; materialised once every storage has been read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):
        raise pickle.UnpicklingError("BUILD on a tensor is not part of a state dict")

    def materialise(self, storage: np.ndarray) -> np.ndarray:
        count = int(np.prod(self.size, dtype=np.int64)) if self.size else 1
        if count == 0:
            return np.zeros(self.size, dtype=storage.dtype)
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(storage[self.storage.offset + self.offset:], shape=self.size,
                                               strides=tuple(st * item for st in self.stride), writeable=False)
        return np.ascontiguousarray(view).reshape(self.size)  # (ascontiguousarray makes a scalar 1-D)


class _StateDict(collections.OrderedDict):
    """What `collections.OrderedDict` resolves to. BUILD on it (what `Module.state_dict()` writes: the `_metadata`
    attribute) is checked and dropped; no attribute is set from the file."""

    def __setstate__(self, state) -> None:
        _check_metadata_state(state)


def _check_metadata_state(state: Any) -> None:
    if not isinstance(state, dict) or set(state) != {"_metadata"}:
        keys = sorted(map(str, state))[:5] if isinstance(state, dict) else type(state).__name__
        raise pickle.UnpicklingError(f"BUILD with state {keys!r}: only a state dict's '_metadata' is admitted")
    meta = state["_metadata"]
    if not isinstance(meta, dict) or len(meta) > _MAX_METADATA_ENTRIES:
        raise pickle.UnpicklingError("a state dict's '_metadata' must be a mapping of module names")
    for name, entry in meta.items():
        if not isinstance(name, str) or not isinstance(entry, dict) or len(entry) > _MAX_METADATA_KEYS:
            raise pickle.UnpicklingError(f"'_metadata' entry {str(name)[:80]!r} is not a small dict")
        for key, value in entry.items():
            if not isinstance(key, str) or not (value is None or isinstance(value, (bool, int, float, str))):
                raise pickle.UnpicklingError(f"'_metadata' entry {name[:80]!r}: {str(key)[:40]!r} is not a plain "
                                             "value")


def _nonneg_ints(what: str, values) -> Tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > 16:
        raise pickle.UnpicklingError(f"tensor {what} must be a short tuple of integers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise pickle.UnpicklingError(f"tensor {what} {tuple(values)!r:.80} must be non-negative integers")
        out.append(v)
    return tuple(out)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor(_v2): a view of a storage, checked in elements from offset, sizes and
    strides (scalars included). A tensor may not hold more elements than its storage from the offset on, and a stride
    of 0 on a dimension of size > 1 (a broadcast view, which would materialise more memory than the file holds) is
    refused. The extra arguments of v2 (requires_grad, hooks, metadata) do not change the values."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage of the checkpoint")
    if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset {storage_offset!r:.40} must be a non-negative integer")
    size, stride = _nonneg_ints("size", size), _nonneg_ints("stride", stride)
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    count = 1
    for n in size:
        count *= n
    if count:
        if any(n > 1 and st == 0 for n, st in zip(size, stride)):
            raise pickle.UnpicklingError(f"tensor with size {size} and stride {stride}: broadcast (stride-0) views "
                                         "are not a plain state dict")
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))  # the last element the view reads
        if last >= storage.numel or count > storage.numel - storage_offset:
            raise pickle.UnpicklingError(f"tensor view (offset {storage_offset}, size {size}, stride {stride}) lies "
                                         f"outside its storage of {storage.numel} elements")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Admits the handful of globals a state dict needs; any other global is refused before it is resolved. Storages
    become `_StorageRef`s (one per key; a legacy view one per view key): no byte of them is read here."""

    def __init__(self, file, source: str, legacy: bool):
        super().__init__(file)
        self._source = source
        self._legacy = legacy
        self.storages: Dict[str, _StorageRef] = {}  # root key -> storage
        self._views: Dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and dtypes.by_storage(name) is not None:
            return _StorageType(dtypes.by_storage(name))
        raise pickle.UnpicklingError(
            f"refused to load global '{module}.{name}': a weights file may only hold a plain state dict of tensors "
            "(convert it with a trusted torch, or use model.safetensors)")

    def persistent_load(self, pid):
        width = 6 if self._legacy else 5
        if not (isinstance(pid, tuple) and len(pid) == width and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(key, str) or isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.80}")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
        elif ref.dtype != storage_type.dtype or ref.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is named with two types or sizes")
        view = pid[5] if self._legacy else None
        if view is None:
            return ref
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)):
            raise pickle.UnpicklingError(f"malformed storage view {view!r:.80}")
        view_key, offset, view_numel = view[0], *_nonneg_ints("storage view", view[1:])
        if offset + view_numel > numel:
            raise pickle.UnpicklingError(f"storage view {view_key!r} (offset {offset}, {view_numel} elements) lies "
                                         f"outside storage {key!r} of {numel} elements")
        if view_key not in self._views:
            self._views[view_key] = _StorageRef(key, ref.dtype, view_numel, offset)
        return self._views[view_key]


# ------------------------------------------------------------------------------------------------ the opcode scan

# The opcodes torch.save writes for a state dict; anything else (INST, OBJ, NEWOBJ, EXT*, ...) is refused, and BUILD
# is admitted only on an OrderedDict (see _scan_pickle).
_PICKLE_OPS = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BINPERSID",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT",
    "FLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING",
    "SHORT_BINBYTES", "BINBYTES", "EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET",
    "BINGET", "LONG_BINGET", "BUILD",
}
_LEAF = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT",
         "FLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
         "STRING", "SHORT_BINBYTES", "BINBYTES", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "GLOBAL"}
# What the scan knows of a stack item besides its depth: the OrderedDict global, an OrderedDict made from it, a dict.
_ODICT_GLOBAL, _ODICT, _DICT, _EMPTY_TUPLE = "odict-global", "odict", "dict", "()"


def _scan_pickle(data: bytes, source: str) -> None:
    """One linear pass over the opcodes before anything is unpickled: only a state dict's opcodes, BUILD only on an
    OrderedDict made by `OrderedDict()` with a dict as its state (what `Module.state_dict()` writes), and no container
    nested deeper than _MAX_DEPTH (the C unpickler and the deallocation of deep tuples would overflow the stack)."""
    stack: List[Tuple[int, Optional[str]]] = []  # (nesting depth, kind) of each stack item
    marks: List[int] = []  # stack heights at each open MARK
    memo: Dict[Any, Tuple[int, Optional[str]]] = {}

    def push(depth: int, kind: Optional[str] = None) -> None:
        stack.append((depth, kind))

    def merge_into_top(depth: int) -> None:
        stack[-1] = (max(stack[-1][0], depth), stack[-1][1])

    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name not in _PICKLE_OPS:
                raise ValueError(f"{source}: opcode {name} at byte {pos} is not part of a plain state dict")
            if name in _LEAF:
                kind = {"EMPTY_DICT": _DICT, "EMPTY_TUPLE": _EMPTY_TUPLE}.get(name)
                if name == "GLOBAL" and arg == "collections OrderedDict":
                    kind = _ODICT_GLOBAL
                push(1, kind)
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("TUPLE", "LIST", "DICT", "POP_MARK", "SETITEMS", "APPENDS"):
                i = marks.pop()
                inner = max((d for d, _ in stack[i:]), default=0)
                del stack[i:]
                if name in ("SETITEMS", "APPENDS"):
                    merge_into_top(inner + 1)
                elif name != "POP_MARK":
                    push(inner + 1, _DICT if name == "DICT" else _EMPTY_TUPLE if name == "TUPLE" and not inner else None)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(name[-1])
                inner = max(d for d, _ in stack[-k:])
                del stack[-k:]
                push(inner + 1)
            elif name in ("SETITEM", "APPEND"):
                k = 2 if name == "SETITEM" else 1
                inner = max(d for d, _ in stack[-k:])
                del stack[-k:]
                merge_into_top(inner + 1)
            elif name == "REDUCE":
                args_depth, args_kind = stack.pop()
                func_depth, func_kind = stack.pop()
                made = _ODICT if func_kind == _ODICT_GLOBAL and args_kind == _EMPTY_TUPLE else None
                push(max(func_depth, args_depth), made)
            elif name == "BUILD":
                state_depth, state_kind = stack.pop()
                if not stack or stack[-1][1] != _ODICT or state_kind != _DICT:
                    raise ValueError(f"{source}: opcode BUILD at byte {pos} is not part of a plain state dict (only a "
                                     "state dict's _metadata, a dict set on an OrderedDict, is admitted)")
                merge_into_top(state_depth + 1)
            elif name == "STACK_GLOBAL":
                del stack[-2:]
                push(1)
            elif name == "POP":
                stack.pop()
            elif name == "BINPERSID":
                stack[-1] = (stack[-1][0], None)
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            if stack and stack[-1][0] > _MAX_DEPTH:
                raise ValueError(f"{source}: containers nested deeper than {_MAX_DEPTH} (byte {pos}): not a plain "
                                 "state dict")
    except (IndexError, KeyError) as exc:
        raise ValueError(f"{source}: malformed pickle ({type(exc).__name__} while scanning it)") from None
    except ValueError as exc:
        if str(exc).startswith(source):
            raise
        raise ValueError(f"{source}: malformed pickle ({exc})") from None


def _unpickle(data: bytes, source: str, legacy: bool = False) -> Tuple[Any, Dict[str, _StorageRef]]:
    """Scan, then unpickle with the restricted unpickler: (object, storages it names)."""
    _scan_pickle(data, source)
    unpickler = _StateDictUnpickler(io.BytesIO(data), source, legacy)
    try:
        obj = unpickler.load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(source) else f"{source}: {msg}") from None
    except (EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError, OverflowError, MemoryError) as exc:
        raise ValueError(f"{source}: not a plain state dict ({type(exc).__name__}: {exc})") from None
    return obj, unpickler.storages


def _tensor_refs(obj: Any, source: str) -> Dict[str, _TensorRef]:
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, _TensorRef)]
    if bad:
        raise ValueError(f"{source}: entry {str(bad[0])[:80]!r} is not a tensor")
    return dict(obj)


def _materialise(refs: Dict[str, _TensorRef], read: Callable[[_StorageRef], np.ndarray]) -> Tensors:
    """Each storage read once (`read(root storage)`), each tensor a contiguous copy of its view (bfloat16 widened)."""
    arrays: Dict[str, np.ndarray] = {}
    out: Tensors = {}
    for name, ref in refs.items():
        key = ref.storage.key
        if key not in arrays:
            arrays[key] = read(ref.storage)
        out[name] = ref.materialise(arrays[key])
    return out


# ------------------------------------------------------------------------------------------------ the zip format


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = 64) -> bytes:
    with zf.open(info) as f:
        return f.read(limit)


def read_torch_zip(path: Path) -> Tensors:
    """A `torch.save`d state dict in the zip format (torch >= 1.6) as NumPy arrays."""
    path = Path(path)
    source = str(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: a truncated or corrupt zip archive (an interrupted download?)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise ValueError(f"{path}: expected one data.pkl in the checkpoint, found {len(pkl)}")
            prefix = pkl[0][: -len("data.pkl")]
            if prefix + "byteorder" in infos and _read_small(zf, infos[prefix + "byteorder"]).strip() != b"little":
                raise ValueError(f"{path}: big-endian checkpoints are not supported")
            pinfo = infos[pkl[0]]
            if pinfo.file_size > MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: data.pkl of {pinfo.file_size} bytes is too large for a state dict")
            with zf.open(pinfo) as f:
                data = f.read(MAX_PICKLE_BYTES + 1)
            if len(data) > MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: data.pkl is too large for a state dict")
            obj, _ = _unpickle(data, source)
            refs = _tensor_refs(obj, source)

            def read(storage: _StorageRef) -> np.ndarray:
                member = f"{prefix}data/{storage.key}"
                info = infos.get(member)
                if info is None:
                    raise ValueError(f"{path}: storage {member!r} is missing")
                nbytes = storage.numel * storage.dtype.itemsize
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > 200 * max(info.compress_size, 1):
                    raise ValueError(f"{path}: storage {member!r} inflates {info.compress_size} bytes to "
                                     f"{info.file_size} (torch.save stores tensors uncompressed): refused as a zip "
                                     "bomb")
                if info.file_size < nbytes:
                    raise ValueError(f"{path}: storage {member!r} holds {info.file_size} bytes, its tensor needs "
                                     f"{nbytes}")
                with zf.open(info) as entry:  # read only what the storage needs: an inflating bomb costs O(1)
                    raw = entry.read(nbytes)
                if len(raw) != nbytes:
                    raise ValueError(f"{path}: storage {member!r} is truncated")
                return dtypes.from_bytes(raw, storage.dtype, f"{path}: storage {member!r}")

            return _materialise(refs, read)
    except (zipfile.BadZipFile, NotImplementedError) as exc:  # NotImplementedError: a zip version or method field
        raise ValueError(f"{path}: corrupt zip archive ({exc})") from None
    except (OSError, EOFError) as exc:  # zlib errors, short reads inside the archive
        raise ValueError(f"{path}: unreadable zip archive ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------------------ the legacy format


def _next_pickle(head: io.BytesIO, source: str, what: str) -> bytes:
    """The bytes of the next pickle in `head` (up to and including its STOP); `head` is left just after it."""
    start = head.tell()
    try:
        for op, _, _ in pickletools.genops(head):
            if op.name == "STOP":
                break
    except ValueError as exc:
        raise ValueError(f"{source}: the {what} pickle is truncated, malformed or larger than {MAX_PICKLE_BYTES} "
                         f"bytes ({exc})") from None
    return head.getvalue()[start:head.tell()]


def _next_plain(head: io.BytesIO, source: str, what: str) -> Any:
    """The next pickle of `head`, of plain values only (numbers, strings, lists, dicts): the legacy header and the
    storage key list."""
    obj, storages = _unpickle(_next_pickle(head, source, what), f"{source} ({what})", legacy=True)
    if storages:
        raise ValueError(f"{source}: the {what} pickle names storages")
    return obj


def read_torch_legacy(path: Path) -> Tensors:
    """A `torch.save`d state dict in torch's legacy format (before 1.6, or `_use_new_zipfile_serialization=False`)."""
    path = Path(path)
    source = str(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = io.BytesIO(f.read(min(size, MAX_PICKLE_BYTES)))  # read(n) would allocate n bytes up front
        if _next_plain(head, source, "magic number") != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (a pickle, but without torch's magic number)")
        protocol = _next_plain(head, source, "protocol version")
        if protocol != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: torch legacy protocol {protocol!r:.40} is not supported (expected "
                             f"{_LEGACY_PROTOCOL})")
        info = _next_plain(head, source, "sys info")
        if not isinstance(info, dict) or info.get("little_endian") is not True:
            raise ValueError(f"{path}: big-endian or unknown-platform checkpoints are not supported")
        obj, storages = _unpickle(_next_pickle(head, source, "state dict"), source, legacy=True)
        refs = _tensor_refs(obj, source)
        keys = _next_plain(head, source, "storage keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"{path}: the storage key list is malformed")
        if set(keys) != set(storages):
            missing = sorted(set(storages) - set(keys))[:3] or sorted(set(keys) - set(storages))[:3]
            raise ValueError(f"{path}: the storage key list and the state dict's storages differ (e.g. {missing})")
        # Where each storage's bytes lie, checked against the file before anything is read or allocated.
        spans: Dict[str, Tuple[int, int]] = {}
        offset = head.tell()
        for key in keys:
            storage = storages[key]
            nbytes = storage.numel * storage.dtype.itemsize
            if offset + 8 + nbytes > size:
                raise ValueError(f"{path}: truncated: storage {key!r} needs bytes {offset + 8}..{offset + 8 + nbytes} "
                                 f"of a {size}-byte file (an interrupted download?)")
            f.seek(offset)
            count = int.from_bytes(f.read(8), "little")
            if count != storage.numel:
                raise ValueError(f"{path}: storage {key!r} records {count} elements, the state dict {storage.numel}")
            spans[key] = (offset + 8, nbytes)
            offset += 8 + nbytes
        if offset != size:
            raise ValueError(f"{path}: {size - offset} bytes after the last storage (not a torch checkpoint?)")

        def read(storage: _StorageRef) -> np.ndarray:
            start, nbytes = spans[storage.key]
            f.seek(start)
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: storage {storage.key!r} is truncated")
            return dtypes.from_bytes(raw, storage.dtype, f"{path}: storage {storage.key!r}")

        return _materialise(refs, read)


def read_torch(path: Path) -> Tensors:
    """A `torch.save`d state dict in either format, told apart by the first bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):
        return read_torch_zip(path)
    if magic[:1] == b"\x80":  # a pickle's PROTO opcode: the legacy format starts with a pickled magic number
        return read_torch_legacy(path)
    raise ValueError(f"{path}: not a torch checkpoint (neither torch's zip format nor its legacy format)")
