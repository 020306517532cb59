"""Reading checkpoints without torch, and the one strict table that maps them onto tinyhpd's layout.

- `read_safetensors`: memory-mapped, zero-copy (header parsed here, data viewed through `np.memmap`).
- `read_torch_zip`: a `pytorch_model.bin` (torch >= 1.6 zip format) parsed with a restricted unpickler that admits only
  the globals a plain state dict needs and never imports or executes anything else.
- `bert_params` / `dense_params`: renames, drops known extras by name, checks every key and shape against the config,
  and does the transposes and the fused Q|K|V once, at load.
"""
from __future__ import annotations

import collections
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Tuple

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


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for torch._utils._rebuild_tensor_v2: a strided view of the storage, copied to a contiguous array."""
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if size and any(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if storage_offset < 0 or last >= storage.size or any(st < 0 for st in stride):
            raise pickle.UnpicklingError("tensor view lies outside its storage")
    base = storage[storage_offset:]
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * item for s in stride), writeable=False)
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
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype
            raw = self._read_storage(key)
            if dtype == "bf16":
                arr = _bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            if arr.size < int(numel):
                raise pickle.UnpicklingError(f"{self._source}: storage {key} is truncated")
            self._storages[key] = arr
        return self._storages[key]


def read_torch_zip(path: Path) -> Tensors:
    """A `torch.save`d state dict (zip format) as NumPy arrays, without torch and without executing the pickle."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip-format torch checkpoint (the legacy pre-1.6 format is not supported: "
                         "re-save it with torch>=1.6 or convert it to safetensors)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the checkpoint, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")

        def read_storage(key: str) -> bytes:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise pickle.UnpicklingError(f"{path}: storage {member!r} is missing")
            return zf.read(member)

        with zf.open(pkl[0]) as f:
            try:
                obj = _StateDictUnpickler(f, read_storage, str(path)).load()
            except pickle.UnpicklingError as exc:
                raise ValueError(str(exc)) from None
            except (EOFError, TypeError, AttributeError, IndexError, KeyError) as exc:
                raise ValueError(f"{path}: not a plain state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{path}: entry {bad[0]!r} is not a tensor")
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
        index = json.loads(path.read_text(encoding="utf-8"))
        out: Tensors = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            out.update(read_checkpoint(path.parent / shard))
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
    return renamed


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
