"""The configuration files of a sentence-transformers folder that are not a head's own: the encoder's config.json
(`BertConfig`; families.py reads each family's keys), modules.json, the max length, lower-casing and prompts. Each head
(Pooling, Dense, ...) parses its own config in heads.py.

Both generations are read: sentence-transformers 2.x (2021-2022, the published HPD model) and the current layout
(`pooling_mode: "mean"`, `embedding_dimension`, max length in `tokenizer_config.json`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "BertConfig",
    "BERT_FIELDS",
    "check_sizes",
    "check_eps",
    "require",
    "ModuleSpec",
    "read_json",
    "read_modules",
    "read_max_seq_length",
    "read_do_lower_case",
    "read_prompts",
]

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Upper bounds of config.json's sizes (far above any BERT published; a config above them is refused before any
# allocation): the largest tables they allow are still bounded by the checkpoint, whose shapes must match.
SIZE_LIMITS = {"vocab_size": 4_000_000, "hidden_size": 16_384, "num_hidden_layers": 256, "num_attention_heads": 1_024,
               "intermediate_size": 65_536, "max_position_embeddings": 1_048_576, "type_vocab_size": 1_024,
               "embedding_size": 16_384, "relative_attention_num_buckets": 4_096, "num_hidden_groups": 256,
               "inner_group_num": 256, "padding_idx": 4_000_000}


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


def require(cfg: Dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in cfg:
        raise ValueError(f"{path}: missing key {key!r}")
    value = cfg[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{path}: key {key!r} must be {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class BertConfig:
    """The encoder's `config.json`, in BERT's words whatever the family (`families.py` reads each family's keys):
    every size of the forward pass comes from here. The fields after `layer_norm_eps` describe what a family does
    differently from BERT; at their defaults the encoder is BERT (and they stay out of the fingerprint)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int  # 0: the family has no token types (DistilBERT, MPNet)
    hidden_act: str
    layer_norm_eps: float
    model_type: str = "bert"
    padding_idx: int = -1  # >= 0: positions count from padding_idx + 1, skipping pad tokens (RoBERTa, XLM-R, MPNet)
    embedding_size: int = 0  # > 0: embeddings at this width, then a projection to hidden_size (ELECTRA, ALBERT)
    relative_attention_num_buckets: int = 0  # > 0: MPNet's relative position bias, shared by all layers
    num_hidden_groups: int = 1  # ALBERT: layer i uses the weights of group i * groups // layers ...
    inner_group_num: int = 1  # ... and each group holds this many layers
    # ModernBERT: pre-LN layers with RoPE and a gated MLP; "sliding" layers attend within +-sliding_window tokens
    layer_types: Tuple[str, ...] = ()  # "full" / "sliding" per layer (empty: BERT's full attention, no RoPE)
    rope_theta: float = 0.0  # RoPE base of the full-attention layers
    local_rope_theta: float = 0.0  # RoPE base of the sliding-window layers
    sliding_window: int = 0  # half window: |query - key| <= sliding_window

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_positions(self) -> int:
        """Tokens a sequence may have: RoBERTa-style positions start at padding_idx + 1."""
        return self.max_position_embeddings - (self.padding_idx + 1 if self.padding_idx >= 0 else 0)

    def identity(self) -> Dict[str, Any]:
        """The fields that describe this encoder: BERT's, plus each family field that differs from BERT (so a BERT
        model's fingerprint is what tinyhpd 0.2 computed)."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self)[len(BERT_FIELDS):]:
            if out[f.name] == f.default:
                del out[f.name]
        return out

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        from tinyhpd.families import read_encoder_config

        return read_encoder_config(path)


BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")


def check_sizes(sizes: Dict[str, Any], path: Path, minimum: Dict[str, int] = None) -> None:
    """Every size a positive integer under SIZE_LIMITS (a few may be 0 where `minimum` says), checked before anything
    is allocated from them."""
    for key, value in sizes.items():
        low = (minimum or {}).get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= SIZE_LIMITS[key]:
            raise ValueError(f"{path}: key {key!r} must be an integer from {low} to {SIZE_LIMITS[key]:,}, "
                             f"got {value!r}")


def check_eps(cfg: Dict[str, Any], key: str, default: float, path: Path) -> float:
    eps = cfg.get(key, default)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
        raise ValueError(f"{path}: key {key!r} must be a finite number in (0, 1), got {eps!r}")
    return float(eps)


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


def read_prompts(folder: Path) -> Tuple[Dict[str, str], Optional[str]]:
    """(prompts, default_prompt_name) of `config_sentence_transformers.json`, as sentence-transformers reads them
    (e5's {"query": "query: ", "passage": "passage: "}, bge's instruction)."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    cfg = read_json(path)
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{path}: 'prompts' must map prompt names to strings")
    default = cfg.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"{path}: default_prompt_name {default!r} is not one of the prompts "
                         f"({', '.join(map(repr, prompts)) or 'none'})")
    return dict(prompts), default


def read_do_lower_case(folder: Path) -> bool:
    """sentence-transformers' own lower-casing flag (applied before the tokenizer)."""
    sbert = folder / "sentence_bert_config.json"
    return bool(read_json(sbert).get("do_lower_case", False)) if sbert.exists() else False
