"""Reading checkpoints without torch, and the one strict table that maps them onto tinyhpd's layout.

- `read_safetensors`: memory-mapped, zero-copy (header parsed here, data viewed through `np.memmap`).
- `read_torch_zip`: a `pytorch_model.bin` (torch >= 1.6 zip format) parsed with a restricted unpickler that admits only
  the globals a plain state dict needs and never imports or executes anything else.
- `bert_params` / `dense_params`: renames, drops known extras by name, checks every key and shape against the config,
  and does the transposes and the fused Q|K|V once, at load.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

from tinyhpd._io import safetensors_header
from tinyhpd.config import BertConfig, DenseConfig

__all__ = [
    "read_safetensors",
    "read_torch_zip",
    "read_checkpoint",
    "find_checkpoint",
    "bert_params",
    "dense_params",
    "BertParams",
    "LayerParams",
    "DenseParams",
    "bert_expected_shapes",
]

Tensors = Dict[str, np.ndarray]

# ---------------------------------------------------------------------------------------------------------------- files

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bf16", "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: Path) -> Tensors:
    """All tensors of a .safetensors file as read-only views of one memory map (bfloat16 is widened to float32); the
    header is checked first (`_io.safetensors_header`: offsets, sizes and dtypes must agree exactly)."""
    path = Path(path)
    _, header, start = safetensors_header(path)
    data = (np.memmap(path, dtype=np.uint8, mode="r", offset=start) if path.stat().st_size > start
            else np.zeros(0, np.uint8))
    out: Tensors = {}
    for name, info in header.items():
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        shape = tuple(info["shape"])
        if dtype == "bf16":
            out[name] = _bf16_to_f32(raw.view(np.uint16)).reshape(shape)
        else:
            out[name] = raw.view(dtype).reshape(shape)
    return out


# Storage class name -> dtype. These are the only classes a state dict pickle may name, besides the three below.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bf16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: object


class _Storage:
    """A storage read from the archive (only persistent_load makes these): a 1-D array of `numel` elements."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _nonneg_ints(what: str, values) -> Tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > 16:
        raise pickle.UnpicklingError(f"tensor {what} must be a short tuple of integers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise pickle.UnpicklingError(f"tensor {what} {tuple(values)!r:.80} must be non-negative integers")
        out.append(v)
    return tuple(out)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2: a strided view of a storage of the archive, copied contiguous.

    The view must lie inside its storage, checked in elements from offset, sizes and strides (scalars included); a
    tensor may not hold more elements than its storage from the offset on, and a stride of 0 on a dimension of size
    > 1 (a broadcast view, which would materialise more memory than the file holds) is refused before any copy."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage of the archive")
    arr = storage.array
    if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset {storage_offset!r:.40} must be a non-negative integer")
    size, stride = _nonneg_ints("size", size), _nonneg_ints("stride", stride)
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    count = 1
    for n in size:
        count *= n
    if count == 0:
        return np.zeros(size, dtype=arr.dtype)
    if any(n > 1 and st == 0 for n, st in zip(size, stride)):
        raise pickle.UnpicklingError(f"tensor with size {size} and stride {stride}: broadcast (stride-0) views are "
                                     "not a plain state dict")
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))  # the last element the view reads
    if last >= arr.size or count > arr.size - storage_offset:
        raise pickle.UnpicklingError(f"tensor view (offset {storage_offset}, size {size}, stride {stride}) lies "
                                     f"outside its storage of {arr.size} elements")
    item = arr.itemsize
    view = np.lib.stride_tricks.as_strided(arr[storage_offset:], shape=size, strides=tuple(st * item for st in stride),
                                           writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Admits the handful of globals a plain state dict needs; any other global is refused before it is resolved."""

    def __init__(self, file, read_storage, source: str):
        super().__init__(file)
        self._read_storage = read_storage
        self._source = source
        self._storages: Dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"{self._source}: refused to load global '{module}.{name}': a weights file may only hold a plain state "
            "dict of tensors (convert it with a trusted torch, or use model.safetensors)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"{self._source}: unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(key, str) or isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"{self._source}: malformed storage id {pid!r:.80}")
        if key not in self._storages:
            dtype = storage_type.dtype
            itemsize = 2 if dtype == "bf16" else np.dtype(dtype).itemsize
            raw = self._read_storage(key, numel * itemsize)  # size checked against the zip entry before reading
            if dtype == "bf16":
                arr = _bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            self._storages[key] = _Storage(arr[:numel])
        return self._storages[key]


_MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle holds names and shapes only: ~100 bytes per tensor
_MAX_DEPTH = 64  # nesting of containers in a state dict pickle (a dict of tensors needs about 5)
# The opcodes torch.save writes for a state dict; anything else (BUILD, INST, OBJ, NEWOBJ, EXT*, ...) is refused.
_PICKLE_OPS = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BINPERSID",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT",
    "FLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING",
    "SHORT_BINBYTES", "BINBYTES", "EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET",
    "BINGET", "LONG_BINGET",
}
_LEAF = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT",
         "FLOAT", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
         "STRING", "SHORT_BINBYTES", "BINBYTES", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "GLOBAL"}


def _scan_pickle(data: bytes, source: str) -> None:
    """One linear pass over the opcodes before anything is unpickled: only a state dict's opcodes, and no container
    nested deeper than _MAX_DEPTH (the C unpickler and the deallocation of deep tuples would overflow the stack)."""
    import pickletools

    stack: List[int] = []  # nesting depth of each stack item
    marks: List[int] = []  # stack heights at each open MARK
    memo: Dict[Any, int] = {}
    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            if name not in _PICKLE_OPS:
                raise ValueError(f"{source}: opcode {name} at byte {pos} is not part of a plain state dict")
            if name in _LEAF:
                stack.append(1)
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("TUPLE", "LIST", "DICT", "POP_MARK", "SETITEMS", "APPENDS"):
                i = marks.pop()
                inner = max(stack[i:], default=0)
                del stack[i:]
                if name in ("SETITEMS", "APPENDS"):
                    stack[-1] = max(stack[-1], inner + 1)
                elif name != "POP_MARK":
                    stack.append(inner + 1)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(name[-1])
                inner = max(stack[-k:])
                del stack[-k:]
                stack.append(inner + 1)
            elif name in ("SETITEM", "APPEND"):
                k = 2 if name == "SETITEM" else 1
                inner = max(stack[-k:])
                del stack[-k:]
                stack[-1] = max(stack[-1], inner + 1)
            elif name == "REDUCE":
                args = stack.pop()
                stack[-1] = max(stack[-1], args)
            elif name == "STACK_GLOBAL":
                del stack[-2:]
                stack.append(1)
            elif name in ("BINPERSID", "POP"):
                if name == "POP":
                    stack.pop()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            if stack and stack[-1] > _MAX_DEPTH:
                raise ValueError(f"{source}: containers nested deeper than {_MAX_DEPTH} (byte {pos}): not a plain "
                                 "state dict")
    except (IndexError, KeyError) as exc:
        raise ValueError(f"{source}: malformed pickle ({type(exc).__name__} while scanning it)") from None
    except ValueError as exc:
        if str(exc).startswith(source):
            raise
        raise ValueError(f"{source}: malformed pickle ({exc})") from None


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = 64) -> bytes:
    with zf.open(info) as f:
        return f.read(limit)


def read_torch_zip(path: Path) -> Tensors:
    """A `torch.save`d state dict (zip format) as NumPy arrays, without torch and without executing the pickle."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if not zipfile.is_zipfile(path):
        if magic.startswith(b"PK"):
            raise ValueError(f"{path}: a truncated or corrupt zip archive (an interrupted download?)")
        raise ValueError(f"{path}: not a zip-format torch checkpoint (the legacy pre-1.6 format is not supported: "
                         "re-save it with torch>=1.6 or convert it to safetensors)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise ValueError(f"{path}: expected one data.pkl in the checkpoint, found {len(pkl)}")
            prefix = pkl[0][: -len("data.pkl")]
            if prefix + "byteorder" in infos and _read_small(zf, infos[prefix + "byteorder"]).strip() != b"little":
                raise ValueError(f"{path}: big-endian checkpoints are not supported")

            def read_storage(key: str, nbytes: int) -> bytes:
                member = f"{prefix}data/{key}"
                info = infos.get(member)
                if info is None:
                    raise pickle.UnpicklingError(f"{path}: storage {member!r} is missing")
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > 200 * max(info.compress_size, 1):
                    raise pickle.UnpicklingError(f"{path}: storage {member!r} inflates {info.compress_size} bytes to "
                                                 f"{info.file_size} (torch.save stores tensors uncompressed): refused "
                                                 "as a zip bomb")
                if info.file_size < nbytes:
                    raise pickle.UnpicklingError(f"{path}: storage {member!r} holds {info.file_size} bytes, its "
                                                 f"tensor needs {nbytes}")
                with zf.open(info) as entry:  # read only what the storage needs: an inflating bomb costs O(1)
                    raw = entry.read(nbytes)
                if len(raw) != nbytes:
                    raise pickle.UnpicklingError(f"{path}: storage {member!r} is truncated")
                return raw

            pinfo = infos[pkl[0]]
            if pinfo.file_size > _MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: data.pkl of {pinfo.file_size} bytes is too large for a state dict")
            with zf.open(pinfo) as f:
                data = f.read(_MAX_PICKLE_BYTES + 1)
            if len(data) > _MAX_PICKLE_BYTES:
                raise ValueError(f"{path}: data.pkl is too large for a state dict")
            _scan_pickle(data, str(path))
            try:
                obj = _StateDictUnpickler(io.BytesIO(data), read_storage, str(path)).load()
            except pickle.UnpicklingError as exc:
                msg = str(exc)
                raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
            except (EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError, OverflowError,
                    MemoryError) as exc:
                raise ValueError(f"{path}: not a plain state dict ({type(exc).__name__}: {exc})") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: corrupt zip archive ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: entry {str(bad[0])[:80]!r} is not a tensor")
    return dict(obj)


_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin")


def find_checkpoint(folder: Path) -> Path:
    """`model.safetensors` first, else `pytorch_model.bin` (sharded `*.index.json` variants too)."""
    for name in _CHECKPOINT_NAMES:
        for candidate in (folder / name, folder / f"{name}.index.json"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{folder}: no weights found (expected {' or '.join(_CHECKPOINT_NAMES)})")


def read_checkpoint(path: Path) -> Tensors:
    """Read one checkpoint file (or a sharded index) into NumPy arrays."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        from tinyhpd.config import read_json

        index = read_json(path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{path}: 'weight_map' must map tensor names to shard file names")
        out: Tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = path.parent / shard
            if "/" in shard or "\\" in shard or shard.endswith(".index.json") or not shard_path.is_file():
                raise ValueError(f"{path}: shard {shard!r} must be a weights file in the same folder")
            out.update(read_checkpoint(shard_path))
        return out
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_zip(path)


# ------------------------------------------------------------------------------------------------------- strict mapping


@dataclass(frozen=True)
class LayerParams:
    """One post-LN transformer layer, weights already transposed to [in, out]."""

    qkv_w: np.ndarray  # [H, 3H]  fused Q|K|V, Q columns pre-scaled by 1/sqrt(head_dim)
    qkv_b: np.ndarray  # [3H]
    out_w: np.ndarray  # [H, H]
    out_b: np.ndarray  # [H]
    ln1_g: np.ndarray  # [H]
    ln1_b: np.ndarray  # [H]
    ffn_in_w: np.ndarray  # [H, I]
    ffn_in_b: np.ndarray  # [I]
    ffn_out_w: np.ndarray  # [I, H]
    ffn_out_b: np.ndarray  # [H]
    ln2_g: np.ndarray  # [H]
    ln2_b: np.ndarray  # [H]


@dataclass(frozen=True)
class BertParams:
    word_emb: np.ndarray  # [V, H]
    pos_emb: np.ndarray  # [P, H]
    type_emb: np.ndarray  # [T, H]
    emb_ln_g: np.ndarray  # [H]
    emb_ln_b: np.ndarray  # [H]
    layers: Tuple[LayerParams, ...]


@dataclass(frozen=True)
class DenseParams:
    w: np.ndarray  # [in, out]
    b: np.ndarray  # [out] (zeros when the layer has no bias)


def bert_expected_shapes(cfg: BertConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor a Hugging Face BertModel checkpoint must hold, with the shape `config.json` implies."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, H),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, H),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            shapes[p + f"attention.self.{proj}.weight"] = (H, H)
            shapes[p + f"attention.self.{proj}.bias"] = (H,)
        shapes.update({
            p + "attention.output.dense.weight": (H, H), p + "attention.output.dense.bias": (H,),
            p + "attention.output.LayerNorm.weight": (H,), p + "attention.output.LayerNorm.bias": (H,),
            p + "intermediate.dense.weight": (I, H), p + "intermediate.dense.bias": (I,),
            p + "output.dense.weight": (H, I), p + "output.dense.bias": (H,),
            p + "output.LayerNorm.weight": (H,), p + "output.LayerNorm.bias": (H,),
        })
    return shapes


# Dropped by name: buffers and heads a BertModel checkpoint may carry that the encoder does not use.
_KNOWN_EXTRAS = ("embeddings.position_ids", "pooler.", "cls.")


def _canonical_name(key: str) -> str:
    for prefix in ("bert.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    if ".LayerNorm." in key or key.endswith(("LayerNorm.gamma", "LayerNorm.beta")):
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def _as_float32(name: str, arr: np.ndarray, source: str) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind != "f":
        raise ValueError(f"{source}: tensor {name!r} has dtype {arr.dtype}, expected a floating-point tensor")
    return arr.astype(np.float32)


def _check_table(tensors: Tensors, expected: Dict[str, Tuple[int, ...]], extras: Iterable[str], source: str) -> Tensors:
    """Rename, drop known extras, then demand exactly the expected keys with exactly the expected shapes."""
    renamed: Tensors = {}
    for key, arr in tensors.items():
        name = _canonical_name(key)
        if name in expected:
            if name in renamed:
                raise ValueError(f"{source}: tensor {name!r} appears twice (as {key!r} and another name)")
            renamed[name] = arr
        elif any(name == x or (x.endswith(".") and name.startswith(x)) for x in extras):
            continue
        else:
            raise ValueError(f"{source}: unexpected tensor {key!r} {tuple(arr.shape)}")
    for name, shape in expected.items():
        if name not in renamed:
            raise ValueError(f"{source}: missing tensor {name!r} (expected shape {shape})")
        if tuple(renamed[name].shape) != shape:
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(renamed[name].shape)}, "
                             f"config implies {shape}")
        renamed[name] = _as_float32(name, renamed[name], source)
        if not _all_finite(renamed[name]):
            raise ValueError(f"{source}: tensor {name!r} holds NaN or infinite values")
    return renamed


def _all_finite(arr: np.ndarray, rows: int = 1 << 16) -> bool:
    """np.isfinite over row blocks (a memory-mapped table is not copied whole); ~1 ms per 4M floats."""
    flat = arr.reshape(-1) if arr.flags.c_contiguous else np.ascontiguousarray(arr).reshape(-1)
    step = rows * 16
    return all(bool(np.isfinite(flat[i:i + step]).all()) for i in range(0, flat.size, step))


def _t(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> contiguous [in, out] for x @ W."""
    return np.ascontiguousarray(w.T)


def bert_params(tensors: Tensors, cfg: BertConfig, source: str) -> BertParams:
    """Map a BertModel state dict onto BertParams: strict keys and shapes, transposes and fused Q|K|V done here."""
    t = _check_table(tensors, bert_expected_shapes(cfg), _KNOWN_EXTRAS, source)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        a = p + "attention.self."
        qkv_w = np.concatenate([t[a + f"{n}.weight"] for n in ("query", "key", "value")], axis=0)  # [3H, H]
        qkv_b = np.concatenate([t[a + f"{n}.bias"] for n in ("query", "key", "value")])  # [3H]
        # Fold attention's 1/sqrt(head_dim) into the query projection, once.
        scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        qkv_w[: cfg.hidden_size] *= scale
        qkv_b[: cfg.hidden_size] *= scale
        layers.append(LayerParams(
            qkv_w=_t(qkv_w), qkv_b=qkv_b,
            out_w=_t(t[p + "attention.output.dense.weight"]), out_b=np.array(t[p + "attention.output.dense.bias"]),
            ln1_g=np.array(t[p + "attention.output.LayerNorm.weight"]),
            ln1_b=np.array(t[p + "attention.output.LayerNorm.bias"]),
            ffn_in_w=_t(t[p + "intermediate.dense.weight"]), ffn_in_b=np.array(t[p + "intermediate.dense.bias"]),
            ffn_out_w=_t(t[p + "output.dense.weight"]), ffn_out_b=np.array(t[p + "output.dense.bias"]),
            ln2_g=np.array(t[p + "output.LayerNorm.weight"]), ln2_b=np.array(t[p + "output.LayerNorm.bias"]),
        ))
    return BertParams(
        word_emb=t["embeddings.word_embeddings.weight"],  # stays memory-mapped when stored as float32
        pos_emb=np.array(t["embeddings.position_embeddings.weight"]),
        type_emb=np.array(t["embeddings.token_type_embeddings.weight"]),
        emb_ln_g=np.array(t["embeddings.LayerNorm.weight"]), emb_ln_b=np.array(t["embeddings.LayerNorm.bias"]),
        layers=tuple(layers),
    )


def dense_params(tensors: Tensors, cfg: DenseConfig, source: str) -> DenseParams:
    """A sentence-transformers Dense module (`linear.weight` [out, in], `linear.bias` [out])."""
    expected = {"linear.weight": (cfg.out_features, cfg.in_features)}
    if cfg.bias:
        expected["linear.bias"] = (cfg.out_features,)
    t = _check_table(tensors, expected, (), source)
    b = np.array(t["linear.bias"]) if cfg.bias else np.zeros(cfg.out_features, np.float32)
    return DenseParams(w=_t(t["linear.weight"]), b=b)
