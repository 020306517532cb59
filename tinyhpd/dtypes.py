"""The one dtype table: every element type a weights or index file may name, in every naming scheme tinyhpd reads or
writes (safetensors' codes, torch's storage classes, NumPy), with its size in bytes.

Readers and writers look types up here: the safetensors reader (`checkpoints.safetensors`), the header check in `_io`,
the torch checkpoint reader (`checkpoints.torch_pickle`) and the index store. bfloat16 has no NumPy type: it is read
as raw uint16 and widened to float32 (`bf16_to_f32`), exactly (bfloat16 is the top half of a float32).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

__all__ = ["DType", "TABLE", "by_safetensors", "by_storage", "by_numpy", "ITEMSIZE", "bf16_to_f32", "from_bytes"]


@dataclass(frozen=True)
class DType:
    safetensors: str  # the code in a safetensors header ("F32")
    itemsize: int  # bytes per element
    numpy: Optional[np.dtype]  # the little-endian NumPy dtype; None where NumPy has none (bfloat16, float8)
    storage: Optional[str] = None  # torch's typed storage class name ("FloatStorage"), where torch has one


TABLE = (
    DType("F64", 8, np.dtype("<f8"), "DoubleStorage"),
    DType("F32", 4, np.dtype("<f4"), "FloatStorage"),
    DType("F16", 2, np.dtype("<f2"), "HalfStorage"),
    DType("BF16", 2, None, "BFloat16Storage"),
    DType("I64", 8, np.dtype("<i8"), "LongStorage"),
    DType("I32", 4, np.dtype("<i4"), "IntStorage"),
    DType("I16", 2, np.dtype("<i2"), "ShortStorage"),
    DType("I8", 1, np.dtype("i1"), "CharStorage"),
    DType("U8", 1, np.dtype("u1"), "ByteStorage"),
    DType("BOOL", 1, np.dtype("?"), "BoolStorage"),
    DType("U16", 2, np.dtype("<u2")),
    DType("U32", 4, np.dtype("<u4")),
    DType("U64", 8, np.dtype("<u8")),
    DType("F8_E4M3", 1, None),
    DType("F8_E5M2", 1, None),
)

_BY_SAFETENSORS: Dict[str, DType] = {d.safetensors: d for d in TABLE}
# torch.UntypedStorage (torch >= 2.0 may name it for byte tensors) holds bytes.
_BY_STORAGE: Dict[str, DType] = {**{d.storage: d for d in TABLE if d.storage}, "UntypedStorage": _BY_SAFETENSORS["U8"]}
_BY_NUMPY: Dict[np.dtype, DType] = {d.numpy: d for d in TABLE if d.numpy is not None}

ITEMSIZE: Dict[str, int] = {d.safetensors: d.itemsize for d in TABLE}


def by_safetensors(code: object) -> Optional[DType]:
    return _BY_SAFETENSORS.get(code) if isinstance(code, str) else None


def by_storage(name: str) -> Optional[DType]:
    return _BY_STORAGE.get(name)


def by_numpy(dtype) -> Optional[DType]:
    return _BY_NUMPY.get(np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype))


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def from_bytes(buffer, dtype: DType, what: str) -> np.ndarray:
    """A 1-D array of `dtype` over raw little-endian bytes (bfloat16 widened to float32); `what` names the tensor in
    the error for a type NumPy cannot hold."""
    if dtype.safetensors == "BF16":
        return bf16_to_f32(np.frombuffer(buffer, dtype="<u2"))
    if dtype.numpy is None:
        raise ValueError(f"{what} has dtype {dtype.safetensors}, which tinyhpd does not read")
    return np.frombuffer(buffer, dtype=dtype.numpy)
