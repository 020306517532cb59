"""The one strict table that maps a checkpoint's tensors onto tinyhpd's layout (nanoGPT's `from_pretrained`,
tinygrad's `nn/state.py`): renames and known extras by name, every key and shape checked against the config, one
`ValueError` naming the file and the key; the transposes to [in, out] and the fused, pre-scaled Q|K|V are done here,
once, at load. Reading the files is `tinyhpd.checkpoints`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

import numpy as np

from tinyhpd.config import BertConfig, DenseConfig

__all__ = ["bert_params", "dense_params", "BertParams", "LayerParams", "DenseParams", "bert_expected_shapes"]

Tensors = Dict[str, np.ndarray]

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
