"""Encoder families behind one table: how each reads its `config.json`, and how its checkpoint names map onto BERT's.

The forward pass is BERT's for all but ModernBERT (post-LN layers); what a family changes is data, said here once:

| family | config keys | positions | token types | other |
|---|---|---|---|---|
| bert | BERT's | 0, 1, ... | yes | |
| roberta, xlm-roberta, camembert | BERT's | from padding_idx + 1, pad tokens skipped | one row | |
| electra | BERT's + embedding_size | 0, 1, ... | yes | embeddings at E, projected to H |
| albert | BERT's + embedding_size, groups | 0, 1, ... | yes | E -> H mapping; layers share weights by group |
| distilbert | dim, n_layers, n_heads, hidden_dim, activation | 0, 1, ... | none | |
| mpnet | BERT's + relative_attention_num_buckets | from padding_idx + 1 | none | one relative position bias for all layers |
| modernbert | its own (norm_eps, layer_types, RoPE thetas, ...) | RoPE | none | pre-LN, gated MLP, sliding window |

`RENAMES` maps each family's checkpoint names onto BERT's (after its prefix is dropped); `params.py` then checks every
key and shape against the config in one strict table. A config whose family cannot be told with certainty is an
error: a guess would give other vectors with no error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Tuple

from tinyhpd.config import ACTIVATIONS, BertConfig, check_eps, check_sizes, read_json, require

__all__ = ["FAMILIES", "FAMILY_NAMES", "WORDPIECE_FAMILIES", "CLASSIFIERS", "CLASSIFIER_NORMS", "read_encoder_config",
           "detect_family", "canonical_name", "CHECKPOINT_PREFIXES", "KNOWN_EXTRAS"]

# model_type -> family; `architectures` names (e.g. "RobertaModel") are told apart by these prefixes.
FAMILIES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta",
            "electra": "electra", "albert": "albert", "distilbert": "distilbert", "mpnet": "mpnet",
            "modernbert": "modernbert"}
_ARCHITECTURES = (("ModernBert", "modernbert"), ("XLMRoberta", "xlm-roberta"), ("Camembert", "camembert"),
                  ("Roberta", "roberta"), ("DistilBert", "distilbert"), ("MPNet", "mpnet"), ("Electra", "electra"),
                  ("Albert", "albert"), ("Bert", "bert"))
FAMILY_NAMES = {"bert": "BERT", "roberta": "RoBERTa", "electra": "ELECTRA", "albert": "ALBERT",
                "distilbert": "DistilBERT", "mpnet": "MPNet", "modernbert": "ModernBERT"}
# Families whose tokenizer may be rebuilt from vocab.txt as BERT's WordPiece when tokenizer.json is missing.
WORDPIECE_FAMILIES = ("bert", "distilbert", "electra")
UNSUPPORTED = {"deberta": "DeBERTa", "deberta-v2": "DeBERTa-v2", "nomic_bert": "NomicBERT", "new": "gte's NewModel",
               "t5": "T5", "mt5": "mT5", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma3_text": "Gemma 3",
               "mistral": "Mistral", "xlm": "XLM", "funnel": "Funnel", "longformer": "Longformer", "bigbird": "BigBird"}

# Prefixes a task model puts before the encoder's names (BertForMaskedLM: "bert."); dropped once, in this order.
CHECKPOINT_PREFIXES = ("bert.", "roberta.", "electra.", "albert.", "distilbert.", "mpnet.", "model.")

# Names of each family -> BERT's names (regex on the name without prefix). BERT's own need none.
_LAYER = r"encoder\.layer\.(\d+)\."
RENAMES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "bert": (), "roberta": (), "electra": (("^embeddings_project\\.", "embeddings.projection."),),
    "distilbert": (
        (r"^transformer\.layer\.(\d+)\.attention\.q_lin\.", r"encoder.layer.\1.attention.self.query."),
        (r"^transformer\.layer\.(\d+)\.attention\.k_lin\.", r"encoder.layer.\1.attention.self.key."),
        (r"^transformer\.layer\.(\d+)\.attention\.v_lin\.", r"encoder.layer.\1.attention.self.value."),
        (r"^transformer\.layer\.(\d+)\.attention\.out_lin\.", r"encoder.layer.\1.attention.output.dense."),
        (r"^transformer\.layer\.(\d+)\.sa_layer_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
        (r"^transformer\.layer\.(\d+)\.ffn\.lin1\.", r"encoder.layer.\1.intermediate.dense."),
        (r"^transformer\.layer\.(\d+)\.ffn\.lin2\.", r"encoder.layer.\1.output.dense."),
        (r"^transformer\.layer\.(\d+)\.output_layer_norm\.", r"encoder.layer.\1.output.LayerNorm."),
    ),
    "mpnet": (
        (r"^" + _LAYER + r"attention\.attn\.q\.", r"encoder.layer.\1.attention.self.query."),
        (r"^" + _LAYER + r"attention\.attn\.k\.", r"encoder.layer.\1.attention.self.key."),
        (r"^" + _LAYER + r"attention\.attn\.v\.", r"encoder.layer.\1.attention.self.value."),
        (r"^" + _LAYER + r"attention\.attn\.o\.", r"encoder.layer.\1.attention.output.dense."),
        (r"^" + _LAYER + r"attention\.LayerNorm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    ),
    "modernbert": (),  # its own names, checked by params.modernbert_expected_shapes
    "albert": (  # the weights of group g's k-th layer are named encoder.group.g.k.* (params.py repeats them)
        (r"^encoder\.embedding_hidden_mapping_in\.", "embeddings.projection."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.attention\.(query|key|value)\.",
         r"encoder.group.\1.\2.attention.self.\3."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.attention\.dense\.",
         r"encoder.group.\1.\2.attention.output.dense."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.attention\.LayerNorm\.",
         r"encoder.group.\1.\2.attention.output.LayerNorm."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.ffn\.",
         r"encoder.group.\1.\2.intermediate.dense."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.ffn_output\.",
         r"encoder.group.\1.\2.output.dense."),
        (r"^encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.full_layer_layer_norm\.",
         r"encoder.group.\1.\2.output.LayerNorm."),
    ),
}
_COMPILED = {family: tuple((re.compile(a), b) for a, b in rules) for family, rules in RENAMES.items()}

# Dropped by name: buffers and task heads a checkpoint may carry that the encoder does not use.
KNOWN_EXTRAS = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.", "lm_head.", "predictions.",
                "head.", "decoder.",
                "sop_classifier.", "generator_predictions.", "generator_lm_head.", "discriminator_predictions.",
                "vocab_transform.", "vocab_layer_norm.", "vocab_projector.")


# Each family's sequence-classification head (a cross-encoder's score), on the first token: first linear (in BERT's
# names, after canonical_name), its activation, output linear. BERT / ALBERT go through their pooler.
CLASSIFIERS = {
    "bert": ("pooler.dense", "tanh", "classifier"),
    "albert": ("pooler", "tanh", "classifier"),
    "roberta": ("classifier.dense", "tanh", "classifier.out_proj"),
    "mpnet": ("classifier.dense", "tanh", "classifier.out_proj"),
    "electra": ("classifier.dense", "gelu", "classifier.out_proj"),
    "distilbert": ("pre_classifier", "relu", "classifier"),
    "modernbert": ("head.dense", "gelu", "classifier"),  # activation: config's classifier_activation
}
# A LayerNorm (weight only) after the activation of the first linear.
CLASSIFIER_NORMS = {"modernbert": "head.norm"}


def canonical_name(key: str, family: str) -> str:
    """A checkpoint name in BERT's words: prefix dropped, the family's renames, TF-era gamma/beta."""
    for prefix in CHECKPOINT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    for pattern, repl in _COMPILED[family]:
        new = pattern.sub(repl, key, count=1)
        if new != key:
            key = new
            break
    if key.endswith(("LayerNorm.gamma", "LayerNorm.beta")):
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def detect_family(cfg: Dict[str, Any], path: Path) -> str:
    """The family of a config.json: its `model_type`, else its `architectures`, else BERT only where nothing in the
    config says otherwise (pad_token_id 0 or absent, token types not a single row); anything else is an error."""
    model_type = cfg.get("model_type")
    if model_type is not None:
        if not isinstance(model_type, str):
            raise ValueError(f"{path}: model_type must be a string, got {json.dumps(model_type)[:40]}")
        if model_type in FAMILIES:
            return FAMILIES[model_type]
        what = UNSUPPORTED.get(model_type, repr(model_type))
        raise ValueError(f"{path}: model_type {model_type!r} ({what}) is not supported (supported: "
                         f"{', '.join(sorted(FAMILIES))})")
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        for prefix, model_type in _ARCHITECTURES:
            if archs[0].startswith(prefix):
                return FAMILIES[model_type]
        raise ValueError(f"{path}: no model_type, and architectures {archs[0]!r} is not a supported family")
    if cfg.get("pad_token_id", 0) not in (0, None) or cfg.get("type_vocab_size", 2) == 1 or "dim" in cfg:
        raise ValueError(f"{path}: no model_type or architectures, and the config is not BERT's (pad_token_id "
                         f"{cfg.get('pad_token_id')!r}, type_vocab_size {cfg.get('type_vocab_size')!r}): add the "
                         "model_type (e.g. \"roberta\") to config.json")
    return "bert"


def _activation(cfg: Dict[str, Any], key: str, default: str, path: Path) -> str:
    act = cfg.get(key, default)
    if act not in ACTIVATIONS:
        raise ValueError(f"{path}: {key} {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
    return act


def _bert_like(cfg: Dict[str, Any], path: Path, family: str) -> BertConfig:
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type {cfg['position_embedding_type']!r} is not supported")
    sizes = {k: require(cfg, k, int, path) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    defaults = {"bert": (512, 2), "roberta": (514, 1), "electra": (512, 2), "albert": (512, 2), "mpnet": (514, 0)}
    pos, types = defaults[family]
    sizes["max_position_embeddings"] = cfg.get("max_position_embeddings", pos)
    sizes["type_vocab_size"] = 0 if family == "mpnet" else cfg.get("type_vocab_size", types)
    extra: Dict[str, Any] = {}
    if family in ("roberta", "mpnet"):
        extra["padding_idx"] = cfg.get("pad_token_id", 1)
    if family in ("electra", "albert"):
        emb = cfg.get("embedding_size", sizes["hidden_size"])
        if emb != sizes["hidden_size"] or family == "albert":
            extra["embedding_size"] = emb
    if family == "albert":
        extra["num_hidden_groups"] = cfg.get("num_hidden_groups", 1)
        extra["inner_group_num"] = cfg.get("inner_group_num", 1)
    if family == "mpnet":
        extra["relative_attention_num_buckets"] = cfg.get("relative_attention_num_buckets", 32)
    check_sizes({**sizes, **extra}, path, minimum={"type_vocab_size": 0, "padding_idx": 0})
    if family == "albert" and sizes["num_hidden_layers"] % extra["num_hidden_groups"]:
        raise ValueError(f"{path}: num_hidden_layers {sizes['num_hidden_layers']} is not a multiple of "
                         f"num_hidden_groups {extra['num_hidden_groups']}")
    default_eps = 1e-5 if family in ("roberta", "mpnet") else 1e-12
    return BertConfig(hidden_act=_activation(cfg, "hidden_act", "gelu_new" if family == "albert" else "gelu", path),
                      layer_norm_eps=check_eps(cfg, "layer_norm_eps", default_eps, path),
                      model_type=family, **sizes, **extra)


def _distilbert(cfg: Dict[str, Any], path: Path) -> BertConfig:
    keys = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
            "hidden_dim": "intermediate_size", "vocab_size": "vocab_size"}
    sizes = {ours: require(cfg, theirs, int, path) for theirs, ours in keys.items()}
    sizes["max_position_embeddings"] = cfg.get("max_position_embeddings", 512)
    sizes["type_vocab_size"] = 0
    check_sizes(sizes, path, minimum={"type_vocab_size": 0})
    return BertConfig(hidden_act=_activation(cfg, "activation", "gelu", path), layer_norm_eps=1e-12,
                      model_type="distilbert", **sizes)


def _theta(value: Any, key: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 < value < 1e12:
        raise ValueError(f"{path}: {key} must be a number above 1, got {json.dumps(value)[:40]}")
    return float(value)


def _modernbert(cfg: Dict[str, Any], path: Path) -> BertConfig:
    sizes = {k: require(cfg, k, int, path) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    sizes["max_position_embeddings"] = cfg.get("max_position_embeddings", 8192)
    sizes["type_vocab_size"] = 0
    check_sizes(sizes, path, minimum={"type_vocab_size": 0})
    n = sizes["num_hidden_layers"]
    types = cfg.get("layer_types")
    if types is None:  # configs written before transformers 5: the pattern as an int
        every = cfg.get("global_attn_every_n_layers", 3)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"{path}: global_attn_every_n_layers must be a positive integer, got {every!r}")
        types = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]
    if not isinstance(types, list) or len(types) != n or not set(types) <= {"full_attention", "sliding_attention"}:
        raise ValueError(f"{path}: layer_types must list 'full_attention' or 'sliding_attention' for each of the {n} "
                         "layers")
    rope = cfg.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise ValueError(f"{path}: rope_parameters must be an object")
    for kind in ("full_attention", "sliding_attention"):
        params = rope.get(kind) or {}
        if not isinstance(params, dict) or params.get("rope_type", "default") != "default":
            raise ValueError(f"{path}: rope_parameters[{kind!r}] {json.dumps(params)[:60]}: only the default RoPE is "
                             "supported")
    full = (rope.get("full_attention") or {}).get("rope_theta", cfg.get("global_rope_theta", 160000.0))
    local = (rope.get("sliding_attention") or {}).get("rope_theta", cfg.get("local_rope_theta", 10000.0))
    window = cfg.get("local_attention", 128)
    if isinstance(window, bool) or not isinstance(window, int) or not 2 <= window <= 1 << 20:
        raise ValueError(f"{path}: local_attention must be an integer from 2, got {window!r}")
    for key in ("norm_bias", "attention_bias", "mlp_bias"):
        if cfg.get(key, False) not in (True, False):
            raise ValueError(f"{path}: {key} must be true or false")
    if cfg.get("norm_bias", False) or cfg.get("attention_bias", False) or cfg.get("mlp_bias", False):
        raise ValueError(f"{path}: ModernBERT with norm_bias, attention_bias or mlp_bias is not supported")
    return BertConfig(hidden_act=_activation(cfg, "hidden_activation", "gelu", path),
                      layer_norm_eps=check_eps(cfg, "norm_eps", 1e-5, path), model_type="modernbert",
                      layer_types=tuple("full" if t == "full_attention" else "sliding" for t in types),
                      rope_theta=_theta(full, "global rope_theta", path),
                      local_rope_theta=_theta(local, "local rope_theta", path), sliding_window=window // 2, **sizes)


def read_encoder_config(path: Path) -> BertConfig:
    """The encoder's config.json, whatever its family, as a BertConfig (sizes checked before any allocation)."""
    cfg = read_json(path)
    family = detect_family(cfg, path)
    readers = {"distilbert": _distilbert, "modernbert": _modernbert}
    config = readers[family](cfg, path) if family in readers else _bert_like(cfg, path, family)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{path}: hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                         f"{config.num_attention_heads}")
    if config.max_positions < 2:
        raise ValueError(f"{path}: max_position_embeddings {config.max_position_embeddings} leaves no room for a "
                         f"sequence (positions start at padding_idx + 1 = {config.padding_idx + 1})")
    return config

