"""The one strict table that maps a checkpoint's tensors onto tinyhpd's layout (nanoGPT's `from_pretrained`,
tinygrad's `nn/state.py`): renames and known extras by name, every key and shape checked against the config, one
`ValueError` naming the file and the key; the transposes to [in, out] and the fused, pre-scaled Q|K|V are done here,
once, at load. Reading the files is `tinyhpd.checkpoints`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.families import KNOWN_EXTRAS, canonical_name

__all__ = ["bert_params", "check_table", "transposed", "BertParams", "LayerParams", "bert_expected_shapes",
           "layer_prefixes", "modernbert_expected_shapes"]

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
    word_emb: np.ndarray  # [V, E]  (E = H but for ELECTRA / ALBERT)
    pos_emb: np.ndarray  # [P, E]
    type_emb: np.ndarray  # [T, E]  (one zero row for families without token types)
    emb_ln_g: np.ndarray  # [E]
    emb_ln_b: np.ndarray  # [E]
    layers: Tuple[LayerParams, ...]  # one per applied layer (ALBERT: the same objects repeated)
    emb_proj_w: Optional[np.ndarray] = None  # [E, H]  ELECTRA's embeddings_project, ALBERT's mapping
    emb_proj_b: Optional[np.ndarray] = None  # [H]
    rel_bias: Optional[np.ndarray] = None  # [buckets, heads]  MPNet's relative position bias
    final_ln_g: Optional[np.ndarray] = None  # [H]  ModernBERT's final norm
    final_ln_b: Optional[np.ndarray] = None  # [H]

    def extras(self) -> Dict[str, np.ndarray]:
        """The family-specific arrays that are present (what BERT lacks)."""
        return {k: getattr(self, k) for k in ("emb_proj_w", "emb_proj_b", "rel_bias", "final_ln_g", "final_ln_b")
                if getattr(self, k) is not None}


_LAYER_SHAPES = (  # suffix -> shape in (H, I) terms, torch's [out, in] Linear layout
    ("attention.self.query.weight", "HH"), ("attention.self.query.bias", "H"),
    ("attention.self.key.weight", "HH"), ("attention.self.key.bias", "H"),
    ("attention.self.value.weight", "HH"), ("attention.self.value.bias", "H"),
    ("attention.output.dense.weight", "HH"), ("attention.output.dense.bias", "H"),
    ("attention.output.LayerNorm.weight", "H"), ("attention.output.LayerNorm.bias", "H"),
    ("intermediate.dense.weight", "IH"), ("intermediate.dense.bias", "I"),
    ("output.dense.weight", "HI"), ("output.dense.bias", "H"),
    ("output.LayerNorm.weight", "H"), ("output.LayerNorm.bias", "H"),
)


def layer_prefixes(cfg: BertConfig) -> Tuple[str, ...]:
    """The checkpoint prefix of the weights each applied layer uses (ALBERT: its group's layers, in order)."""
    if cfg.model_type != "albert":
        return tuple(f"encoder.layer.{i}." for i in range(cfg.num_hidden_layers))
    per_group = cfg.num_hidden_layers // cfg.num_hidden_groups
    return tuple(f"encoder.group.{i // per_group}.{k}." for i in range(cfg.num_hidden_layers)
                 for k in range(cfg.inner_group_num))


def bert_expected_shapes(cfg: BertConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor the encoder's checkpoint must hold (in BERT's names), with the shape `config.json` implies."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    E = cfg.embedding_size or H
    shapes = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, E),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, E),
        "embeddings.LayerNorm.weight": (E,),
        "embeddings.LayerNorm.bias": (E,),
    }
    if cfg.type_vocab_size:
        shapes["embeddings.token_type_embeddings.weight"] = (cfg.type_vocab_size, E)
    if E != H or cfg.model_type == "albert":
        shapes["embeddings.projection.weight"] = (H, E)
        shapes["embeddings.projection.bias"] = (H,)
    if cfg.relative_attention_num_buckets:
        shapes["encoder.relative_attention_bias.weight"] = (cfg.relative_attention_num_buckets, cfg.num_attention_heads)
    size = {"H": H, "I": I}
    for p in dict.fromkeys(layer_prefixes(cfg)):
        for suffix, dims in _LAYER_SHAPES:
            shapes[p + suffix] = tuple(size[d] for d in dims)
    return shapes


def _as_float32(name: str, arr: np.ndarray, source: str) -> np.ndarray:
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind != "f":
        raise ValueError(f"{source}: tensor {name!r} has dtype {arr.dtype}, expected a floating-point tensor")
    return arr.astype(np.float32)


def check_table(tensors: Tensors, expected: Dict[str, Tuple[int, ...]], extras: Iterable[str], source: str,
                 rename: Callable[[str], str] = lambda key: key) -> Tensors:
    """Rename, drop known extras, then demand exactly the expected keys with exactly the expected shapes."""
    renamed: Tensors = {}
    for key, arr in tensors.items():
        name = rename(key)
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


def transposed(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> contiguous [in, out] for x @ W."""
    return np.ascontiguousarray(w.T)


def _query_scaled(qkv: np.ndarray, cfg: BertConfig) -> np.ndarray:
    """A fused Q|K|V weight `[3H, H]` (-> `[H, 3H]`, transposed) or bias `[3H]`, attention's 1/sqrt(head_dim) folded
    into its query part, once, at load (in place on `qkv`, a fresh array)."""
    qkv[: cfg.hidden_size] *= np.float32(1.0 / np.sqrt(cfg.head_dim))
    return transposed(qkv) if qkv.ndim == 2 else qkv


def _layer(t: Tensors, p: str, cfg: BertConfig) -> LayerParams:
    a = p + "attention.self."
    qkv_w = np.concatenate([t[a + f"{n}.weight"] for n in ("query", "key", "value")], axis=0)  # [3H, H]
    qkv_b = np.concatenate([t[a + f"{n}.bias"] for n in ("query", "key", "value")])  # [3H]
    return LayerParams(
        qkv_w=_query_scaled(qkv_w, cfg), qkv_b=_query_scaled(qkv_b, cfg),
        out_w=transposed(t[p + "attention.output.dense.weight"]),
        out_b=np.array(t[p + "attention.output.dense.bias"]),
        ln1_g=np.array(t[p + "attention.output.LayerNorm.weight"]),
        ln1_b=np.array(t[p + "attention.output.LayerNorm.bias"]),
        ffn_in_w=transposed(t[p + "intermediate.dense.weight"]), ffn_in_b=np.array(t[p + "intermediate.dense.bias"]),
        ffn_out_w=transposed(t[p + "output.dense.weight"]), ffn_out_b=np.array(t[p + "output.dense.bias"]),
        ln2_g=np.array(t[p + "output.LayerNorm.weight"]), ln2_b=np.array(t[p + "output.LayerNorm.bias"]),
    )


def modernbert_expected_shapes(cfg: BertConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor of a ModernBertModel checkpoint (its own names; no biases), with the shape the config implies."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    shapes = {"embeddings.tok_embeddings.weight": (cfg.vocab_size, H), "embeddings.norm.weight": (H,),
              "final_norm.weight": (H,)}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        if i:  # layer 0 has no attention norm (the embeddings' norm serves)
            shapes[p + "attn_norm.weight"] = (H,)
        shapes.update({p + "attn.Wqkv.weight": (3 * H, H), p + "attn.Wo.weight": (H, H), p + "mlp_norm.weight": (H,),
                       p + "mlp.Wi.weight": (2 * I, H), p + "mlp.Wo.weight": (H, I)})
    return shapes


def _modernbert_params(t: Tensors, cfg: BertConfig) -> BertParams:
    """ModernBERT onto the same arrays: ln1 = attention norm (empty for layer 0: none), ffn_in = Wi (input | gate
    columns), ln2 = MLP norm; biases are zeros (the checkpoints have none); Q pre-scaled like BERT's."""
    H = cfg.hidden_size
    zeros = np.zeros(H, np.float32)
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        layers.append(LayerParams(
            qkv_w=_query_scaled(np.array(t[p + "attn.Wqkv.weight"]), cfg), qkv_b=np.zeros(3 * H, np.float32),
            out_w=transposed(t[p + "attn.Wo.weight"]), out_b=zeros.copy(),
            ln1_g=np.array(t[p + "attn_norm.weight"]) if i else np.zeros(0, np.float32), ln1_b=zeros.copy(),
            ffn_in_w=transposed(t[p + "mlp.Wi.weight"]), ffn_in_b=np.zeros(2 * cfg.intermediate_size, np.float32),
            ffn_out_w=transposed(t[p + "mlp.Wo.weight"]), ffn_out_b=zeros.copy(),
            ln2_g=np.array(t[p + "mlp_norm.weight"]), ln2_b=zeros.copy()))
    return BertParams(word_emb=t["embeddings.tok_embeddings.weight"], pos_emb=np.zeros((0, H), np.float32),
                      type_emb=np.zeros((1, H), np.float32), emb_ln_g=np.array(t["embeddings.norm.weight"]),
                      emb_ln_b=zeros.copy(), layers=tuple(layers), final_ln_g=np.array(t["final_norm.weight"]),
                      final_ln_b=zeros.copy())


def bert_params(tensors: Tensors, cfg: BertConfig, source: str, consumed: Iterable[str] = ()) -> BertParams:
    """Map an encoder's state dict (any family of `families.py`) onto BertParams: strict keys and shapes, transposes
    and fused Q|K|V done here. `consumed`: names (or prefixes ending in '.') another part of the model reads from the
    same file (a cross-encoder's classifier), left alone here."""
    family = cfg.model_type
    expected = modernbert_expected_shapes(cfg) if family == "modernbert" else bert_expected_shapes(cfg)
    t = check_table(tensors, expected, (*KNOWN_EXTRAS, *consumed), source,
                     rename=lambda key: canonical_name(key, family))
    if family == "modernbert":
        return _modernbert_params(t, cfg)
    built: Dict[str, LayerParams] = {}
    layers = []
    for p in layer_prefixes(cfg):
        if p not in built:  # ALBERT's shared layers are built once and repeated
            built[p] = _layer(t, p, cfg)
        layers.append(built[p])
    E = cfg.embedding_size or cfg.hidden_size
    has_proj = "embeddings.projection.weight" in t
    return BertParams(
        word_emb=t["embeddings.word_embeddings.weight"],  # stays memory-mapped when stored as float32
        pos_emb=np.array(t["embeddings.position_embeddings.weight"]),
        type_emb=(np.array(t["embeddings.token_type_embeddings.weight"]) if cfg.type_vocab_size
                  else np.zeros((1, E), np.float32)),
        emb_ln_g=np.array(t["embeddings.LayerNorm.weight"]), emb_ln_b=np.array(t["embeddings.LayerNorm.bias"]),
        layers=tuple(layers),
        emb_proj_w=transposed(t["embeddings.projection.weight"]) if has_proj else None,
        emb_proj_b=np.array(t["embeddings.projection.bias"]) if has_proj else None,
        rel_bias=(np.array(t["encoder.relative_attention_bias.weight"]) if cfg.relative_attention_num_buckets
                  else None),
    )
