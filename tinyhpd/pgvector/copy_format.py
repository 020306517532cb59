"""PostgreSQL's binary COPY format for rows (id, embedding), built with NumPy: a bigint or text id and a pgvector
``vector`` (float4) or ``halfvec`` (float2) value.

A COPY stream is the signature ``PGCOPY\\n\\377\\r\\n\\0``, a flags word and a header-extension length (both 0), then
per row a field count (int16) and per field its byte length (int32) and bytes, and a trailer int16 -1; every number
is big-endian. pgvector's binary form of a vector is int16 dimensions, int16 0 (unused), then the components (float4
for ``vector``, IEEE half for ``halfvec``), as its ``vector_recv`` / ``halfvec_recv`` read them.
"""
from __future__ import annotations

import struct
from typing import Any, List, Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
COMPONENT = {"vector": np.dtype(">f4"), "halfvec": np.dtype(">f2")}


def _vector_fields(vectors: np.ndarray, column_type: str) -> np.ndarray:
    """(n,) structured rows holding the length-prefixed binary vector value of each row."""
    component = COMPONENT[column_type]
    n, dim = vectors.shape
    rows = np.zeros(n, dtype=np.dtype([("length", ">i4"), ("dim", ">i2"), ("unused", ">i2"),
                                       ("x", component, (dim,))]))
    rows["length"] = 4 + dim * component.itemsize
    rows["dim"] = dim
    rows["x"] = vectors
    return rows


def encode_rows(ids: Sequence[Any], vectors: np.ndarray, column_type: str, id_type: str) -> bytes:
    """The COPY rows (without header and trailer) for ``ids`` (ints for bigint, strs for text) and float vectors."""
    if column_type not in COMPONENT:
        raise ValueError(f"column type must be one of {', '.join(COMPONENT)}; got {column_type!r}")
    n, dim = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors hold NaN or infinite values")
    if column_type == "halfvec" and np.abs(vectors).max(initial=0) > 65504:
        raise ValueError("a component exceeds the float16 range of a halfvec column; use --column-type vector")
    values = _vector_fields(vectors, column_type)
    if id_type == "bigint":
        head = np.zeros(n, dtype=np.dtype([("fields", ">i2"), ("length", ">i4"), ("id", ">i8")]))
        head["fields"], head["length"], head["id"] = 2, 8, np.asarray(ids, dtype=np.int64)
        both = np.empty(n, dtype=np.dtype([("head", head.dtype), ("value", values.dtype)]))
        both["head"], both["value"] = head, values
        return both.tobytes()
    if id_type != "text":
        raise ValueError(f"id type must be bigint or text; got {id_type!r}")
    value_bytes = values.tobytes()
    width = values.dtype.itemsize
    out: List[bytes] = []
    for i, id_ in enumerate(ids):
        text = str(id_).encode("utf-8")
        out.append(struct.pack(">hi", 2, len(text)) + text + value_bytes[i * width:(i + 1) * width])
    return b"".join(out)
