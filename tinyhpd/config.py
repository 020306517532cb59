"""One frozen dataclass per configuration file of a sentence-transformers folder.

Both generations are read: sentence-transformers 2.x (2021-2022, the published HPD model) and the current layout
(`pooling_mode: "mean"`, `embedding_dimension`, max length in `tokenizer_config.json`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

__all__ = [
    "BertConfig",
    "PoolingConfig",
    "DenseConfig",
    "ModuleSpec",
    "read_json",
    "read_modules",
    "read_max_seq_length",
    "read_do_lower_case",
]

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Upper bounds of config.json's sizes (far above any BERT published; a config above them is refused before any
# allocation): the largest tables they allow are still bounded by the checkpoint, whose shapes must match.
SIZE_LIMITS = {"vocab_size": 4_000_000, "hidden_size": 16_384, "num_hidden_layers": 256, "num_attention_heads": 1_024,
               "intermediate_size": 65_536, "max_position_embeddings": 1_048_576, "type_vocab_size": 1_024}


def read_json(path: Path, kind: type = dict) -> Any:
    """Read a JSON object (or a list, for modules.json), with errors that name the file. Only regular files of at
    most 16 MB are read (a FIFO or a device would block or never end)."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file")
    if st.st_size > 16 << 20:
        raise ValueError(f"{path}: {st.st_size} bytes, too large for a config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, kind):
        want = "a JSON object" if kind is dict else "a JSON list"
        raise ValueError(f"{path}: expected {want}, got {type(data).__name__}")
    return data


def _require(cfg: Dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in cfg:
        raise ValueError(f"{path}: missing key {key!r}")
    value = cfg[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{path}: key {key!r} must be {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class BertConfig:
    """The encoder's `config.json` (Hugging Face BertConfig): every size of the forward pass comes from here."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    hidden_act: str
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        cfg = read_json(path)
        model_type = cfg.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"{path}: model_type {model_type!r} is not supported (tinyhpd runs BERT encoders)")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: position_embedding_type {cfg['position_embedding_type']!r} is not supported")
        ints = {k: _require(cfg, k, int, path) for k in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
        for key, default in (("max_position_embeddings", 512), ("type_vocab_size", 2)):
            ints[key] = cfg.get(key, default)
        for key, value in ints.items():  # checked before anything is allocated from them
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SIZE_LIMITS[key]:
                raise ValueError(f"{path}: key {key!r} must be an integer from 1 to {SIZE_LIMITS[key]:,}, "
                                 f"got {value!r}")
        act = cfg.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
        if ints["hidden_size"] % ints["num_attention_heads"]:
            raise ValueError(f"{path}: hidden_size {ints['hidden_size']} is not a multiple of "
                             f"num_attention_heads {ints['num_attention_heads']}")
        eps = cfg.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise ValueError(f"{path}: key 'layer_norm_eps' must be a finite number in (0, 1), got {eps!r}")
        return cls(hidden_act=act, layer_norm_eps=float(eps), **ints)


POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_OLD_POOLING_KEYS = {  # 2.x boolean keys, in the order sentence-transformers concatenates them
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class PoolingConfig:
    """`1_Pooling/config.json`: which token poolings are concatenated, in order."""

    dimension: int
    modes: Tuple[str, ...]

    @property
    def output_dim(self) -> int:
        return self.dimension * len(self.modes)

    @classmethod
    def from_file(cls, path: Path) -> "PoolingConfig":
        cfg = read_json(path)
        dim = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension"))
        if not isinstance(dim, int):
            raise ValueError(f"{path}: missing key 'word_embedding_dimension' (or 'embedding_dimension')")
        if "pooling_mode" in cfg:  # current layout: a name or a list of names, concatenated in that order
            mode = cfg["pooling_mode"]
            modes = [mode] if isinstance(mode, str) else mode
            if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
                raise ValueError(f"{path}: pooling_mode must be a string or a list of strings, got {mode!r}")
        else:  # 2.x layout: one boolean per mode
            modes = [m for key, m in _OLD_POOLING_KEYS.items() if cfg.get(key)]
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown:
            raise ValueError(f"{path}: pooling mode {unknown[0]!r} is not supported "
                             f"(supported: {', '.join(POOLING_MODES)})")
        if not modes:
            raise ValueError(f"{path}: no pooling mode is enabled")
        if cfg.get("include_prompt", True) is False:
            raise ValueError(f"{path}: include_prompt=false is not supported (tinyhpd does not use prompts)")
        return cls(dimension=dim, modes=tuple(modes))


DENSE_ACTIVATIONS = ("Tanh", "Identity", "ReLU", "Sigmoid", "GELU")


@dataclass(frozen=True)
class DenseConfig:
    """`2_Dense/config.json`: y = activation(x W^T + b)."""

    in_features: int
    out_features: int
    bias: bool
    activation: str  # one of DENSE_ACTIVATIONS

    @classmethod
    def from_file(cls, path: Path) -> "DenseConfig":
        cfg = read_json(path)
        fn = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
        if not isinstance(fn, str):
            raise ValueError(f"{path}: activation_function must be a class path string, got {fn!r}")
        name = fn.rsplit(".", 1)[-1]
        if not (fn.startswith("torch.nn.") or "." not in fn) or name not in DENSE_ACTIVATIONS:
            raise ValueError(f"{path}: activation_function {fn!r} is not supported "
                             f"(supported: torch.nn.{', torch.nn.'.join(DENSE_ACTIVATIONS)})")
        return cls(in_features=_require(cfg, "in_features", int, path),
                   out_features=_require(cfg, "out_features", int, path),
                   bias=bool(cfg.get("bias", True)), activation=name)


MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class ModuleSpec:
    """One entry of `modules.json`: its kind (Transformer, Pooling, Dense, Normalize) and its sub-folder."""

    kind: str
    path: str
    type_name: str


def read_modules(folder: Path) -> List[ModuleSpec]:
    """`modules.json` of any sentence-transformers generation; a folder without it is BERT + mean pooling."""
    path = folder / "modules.json"
    if not path.exists():
        return [ModuleSpec("Transformer", "", "(no modules.json)"), ModuleSpec("Pooling", "", "(implicit mean)")]
    entries = read_json(path, list)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of modules")
    specs = []
    for i, entry in enumerate(sorted(entries, key=lambda e: int(e.get("idx", 0)) if isinstance(e, dict) else 0)):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ValueError(f"{path}: entry {i} has no 'type'")
        type_name = entry["type"]
        kind = type_name.rsplit(".", 1)[-1]
        # 2.x: sentence_transformers.models.X; current: sentence_transformers.base.modules.x.X and friends.
        if not type_name.startswith("sentence_transformers.") or kind not in MODULE_KINDS:
            raise ValueError(f"{path}: module type {type_name!r} is not supported "
                             f"(supported: {', '.join(MODULE_KINDS)} from sentence_transformers)")
        specs.append(ModuleSpec(kind, str(entry.get("path", "")), type_name))
    if specs[0].kind != "Transformer" or any(s.kind == "Transformer" for s in specs[1:]):
        raise ValueError(f"{path}: expected exactly one Transformer module, first")
    return specs


def read_max_seq_length(folder: Path, max_position_embeddings: int) -> int:
    """sentence_bert_config.json's max_seq_length, else tokenizer_config.json's model_max_length, capped by the model."""
    length = None
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists():
        length = read_json(sbert).get("max_seq_length")
    if length is None and (folder / "tokenizer_config.json").exists():
        value = read_json(folder / "tokenizer_config.json").get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes ~1e30 for "no limit"
            length = value
    if length is None:
        length = max_position_embeddings
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"{folder}: max_seq_length {length!r} must be an integer >= 2")
    return min(length, max_position_embeddings)


def read_do_lower_case(folder: Path) -> bool:
    """sentence-transformers' own lower-casing flag (applied before the tokenizer)."""
    sbert = folder / "sentence_bert_config.json"
    return bool(read_json(sbert).get("do_lower_case", False)) if sbert.exists() else False
