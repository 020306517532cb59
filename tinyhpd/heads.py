"""What sentence-transformers puts after the encoder (Pooling, Dense, Normalize) and a cross-encoder's Classifier: each
head's config file parsing, weights table, forward, identity, pickled state and repr live here, beside its class. One
registry (`HEADS`) maps a modules.json kind to its class; to add a head, write its class (and config) here and
register it.

A head is called on the packed token rows of a batch (`Pooling`) or on sentence vectors (the others):
`head(x, packed) -> y`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type

import numpy as np

from tinyhpd.config import ModuleSpec, read_json, require
from tinyhpd.checkpoints import find_checkpoint, read_checkpoint
from tinyhpd.families import CLASSIFIER_NORMS, CLASSIFIERS, canonical_name
from tinyhpd.kernels import gelu, layer_norm
from tinyhpd.params import check_table, transposed

__all__ = ["Head", "Pooling", "Dense", "Normalize", "Classifier", "PoolingConfig", "DenseConfig", "DenseParams",
           "dense_params", "HEADS", "DENSE_ACTIVATIONS", "load_heads", "normalize"]


class Head:
    kind = ""

    @classmethod
    def from_folder(cls, folder: Path, spec: ModuleSpec, in_dim: int) -> "Head":
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    def named_arrays(self) -> Iterator[Tuple[str, np.ndarray]]:
        return iter(())

    def identity(self) -> dict:
        """Everything besides the weights that changes the vectors (for the model's fingerprint)."""
        return {"kind": self.kind}

    def state(self) -> Dict[str, Any]:
        """The head as plain data (dicts, lists, numbers, arrays): what travels when a model is pickled."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Head":
        raise NotImplementedError


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
            raise ValueError(f"{path}: include_prompt=false (prompt tokens left out of the pooling) is not supported")
        return cls(dimension=dim, modes=tuple(modes))


def mean_tokens(tokens: np.ndarray, packed) -> np.ndarray:
    """The mean of each sequence's token rows: `[n_tok, H]` -> `[B, H]`."""
    return np.add.reduceat(tokens, packed.offsets, axis=0) / packed.lengths[:, None].astype(np.float32)


class Pooling(Head):
    """Token rows `[n_tok, H]` -> one vector per sequence `[B, H * n_modes]`, modes in sentence-transformers' order."""

    kind = "Pooling"

    def __init__(self, config: PoolingConfig) -> None:
        self.config = config

    @classmethod
    def from_folder(cls, folder: Path, spec: ModuleSpec, in_dim: int) -> "Pooling":
        path = folder / spec.path / "config.json"
        cfg = PoolingConfig(in_dim, ("mean",)) if spec.type_name == "(implicit mean)" else PoolingConfig.from_file(path)
        if cfg.dimension != in_dim:
            raise ValueError(f"{path}: pooling dimension {cfg.dimension} does not match the encoder's hidden_size "
                             f"{in_dim}")
        return cls(cfg)

    @property
    def out_dim(self) -> int:
        return self.config.output_dim

    def identity(self) -> dict:
        return {"kind": self.kind, "modes": list(self.config.modes)}

    def state(self) -> Dict[str, Any]:
        return {"dimension": self.config.dimension, "modes": list(self.config.modes)}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Pooling":
        return cls(PoolingConfig(int(state["dimension"]), tuple(state["modes"])))

    def __call__(self, tokens: np.ndarray, packed) -> np.ndarray:
        offsets, lengths = packed.offsets, packed.lengths
        parts = []
        for mode in self.config.modes:
            if mode == "cls":
                parts.append(tokens[offsets])  # [B, H]
            elif mode == "max":
                parts.append(np.maximum.reduceat(tokens, offsets, axis=0))  # [B, H]
            elif mode == "mean":
                parts.append(mean_tokens(tokens, packed))  # [B, H]
            elif mode == "mean_sqrt_len_tokens":
                parts.append(np.add.reduceat(tokens, offsets, axis=0) / np.sqrt(lengths[:, None].astype(np.float32)))
            elif mode == "weightedmean":  # token i of a sequence weighs i + 1
                w = (np.arange(tokens.shape[0]) - np.repeat(offsets, lengths) + 1).astype(np.float32)  # [n_tok]
                total = (lengths * (lengths + 1) / 2).astype(np.float32)  # [B]
                parts.append(np.add.reduceat(tokens * w[:, None], offsets, axis=0) / total[:, None])  # [B, H]
            else:  # lasttoken
                parts.append(tokens[offsets + lengths - 1])  # [B, H]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return out.astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"Pooling({'+'.join(self.config.modes)})"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


DENSE_ACTIVATIONS = {
    "Tanh": np.tanh,
    "Identity": lambda x: x,
    "ReLU": lambda x: np.maximum(x, 0),
    "Sigmoid": _sigmoid,
    "GELU": gelu,
}


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
        return cls(in_features=require(cfg, "in_features", int, path),
                   out_features=require(cfg, "out_features", int, path),
                   bias=bool(cfg.get("bias", True)), activation=name)


@dataclass(frozen=True)
class DenseParams:
    w: np.ndarray  # [in, out]
    b: np.ndarray  # [out] (zeros when the layer has no bias)


def dense_params(tensors: Dict[str, np.ndarray], cfg: DenseConfig, source: str) -> DenseParams:
    """A sentence-transformers Dense module (`linear.weight` [out, in], `linear.bias` [out])."""
    expected = {"linear.weight": (cfg.out_features, cfg.in_features)}
    if cfg.bias:
        expected["linear.bias"] = (cfg.out_features,)
    t = check_table(tensors, expected, (), source)
    b = np.array(t["linear.bias"]) if cfg.bias else np.zeros(cfg.out_features, np.float32)
    return DenseParams(w=transposed(t["linear.weight"]), b=b)


class Dense(Head):
    """y = activation(x W + b): `[B, in]` -> `[B, out]`."""

    kind = "Dense"

    def __init__(self, config: DenseConfig, params: DenseParams) -> None:
        self.config, self.params = config, params

    @classmethod
    def from_folder(cls, folder: Path, spec: ModuleSpec, in_dim: int) -> "Dense":
        sub = folder / spec.path
        cfg = DenseConfig.from_file(sub / "config.json")
        if cfg.in_features != in_dim:
            raise ValueError(f"{sub / 'config.json'}: in_features {cfg.in_features} does not match the incoming "
                             f"dimension {in_dim}")
        ckpt = find_checkpoint(sub)
        return cls(cfg, dense_params(read_checkpoint(ckpt), cfg, str(ckpt)))

    @property
    def out_dim(self) -> int:
        return self.config.out_features

    def named_arrays(self) -> Iterator[Tuple[str, np.ndarray]]:
        yield "w", self.params.w
        yield "b", self.params.b

    def identity(self) -> dict:
        return {"kind": self.kind, "activation": self.config.activation, "bias": self.config.bias}

    def state(self) -> Dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "w": np.asarray(self.params.w),
                "b": np.asarray(self.params.b)}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Dense":
        return cls(DenseConfig(**state["config"]), DenseParams(w=state["w"], b=state["b"]))

    def __call__(self, x: np.ndarray, packed=None) -> np.ndarray:
        return DENSE_ACTIVATIONS[self.config.activation](x @ self.params.w + self.params.b).astype(np.float32,
                                                                                                   copy=False)

    def __repr__(self) -> str:
        return f"Dense({self.config.in_features}->{self.config.out_features} {self.config.activation})"


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as torch's F.normalize (norm clamped at 1e-12)."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]  # [B, 1]
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


class Normalize(Head):
    kind = "Normalize"

    def __init__(self, dim: int) -> None:
        self._dim = dim

    @classmethod
    def from_folder(cls, folder: Path, spec: ModuleSpec, in_dim: int) -> "Normalize":
        return cls(in_dim)

    @property
    def out_dim(self) -> int:
        return self._dim

    def __call__(self, x: np.ndarray, packed=None) -> np.ndarray:
        return normalize(x)

    def state(self) -> Dict[str, Any]:
        return {"dim": self._dim}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Normalize":
        return cls(int(state["dim"]))

    def __repr__(self) -> str:
        return "Normalize"


_CLASSIFIER_ACTIVATIONS = {"tanh": np.tanh, "gelu": gelu, "relu": lambda x: np.maximum(x, 0)}


class Classifier(Head):
    """A sequence-classification head (a cross-encoder's scores): each sequence's first token (or, for ModernBERT with
    `classifier_pooling: mean`, the mean of its tokens), the family's first linear + activation (BERT's pooler,
    RoBERTa's classifier.dense, ModernBERT's head.dense followed by its head.norm), then the output linear: token rows
    `[n_tok, H]` -> logits `[B, labels]`. Its weights sit in the encoder's checkpoint (`families.CLASSIFIERS` names
    them)."""

    kind = "Classifier"

    def __init__(self, w1: np.ndarray, b1: np.ndarray, activation: str, w2: np.ndarray, b2: np.ndarray,
                 norm_g: Optional[np.ndarray] = None, eps: float = 1e-5, pooling: str = "first") -> None:
        self.w1, self.b1, self.activation, self.w2, self.b2 = w1, b1, activation, w2, b2  # w: [in, out]
        self.norm_g, self.eps, self.pooling = norm_g, float(eps), pooling

    @staticmethod
    def names(family: str) -> Tuple[str, ...]:
        """The checkpoint prefixes (in BERT's names) of the family's head."""
        first, _, out = CLASSIFIERS[family]
        return (first + ".", out + ".") + ((CLASSIFIER_NORMS[family] + ".",) if family in CLASSIFIER_NORMS else ())

    @classmethod
    def from_tensors(cls, tensors: Dict[str, np.ndarray], family: str, hidden: int, labels: int, source: str, *,
                     activation: Optional[str] = None, first_bias: bool = True, pooling: str = "first",
                     eps: float = 1e-5) -> "Classifier":
        first, act, out = CLASSIFIERS[family]
        act = activation or act
        if act not in _CLASSIFIER_ACTIVATIONS:
            raise ValueError(f"{source}: classifier activation {act!r} is not supported "
                             f"(supported: {', '.join(_CLASSIFIER_ACTIVATIONS)})")
        norm = CLASSIFIER_NORMS.get(family)
        expected = {f"{first}.weight": (hidden, hidden), f"{out}.weight": (labels, hidden), f"{out}.bias": (labels,)}
        if first_bias:
            expected[f"{first}.bias"] = (hidden,)
        if norm:
            expected[f"{norm}.weight"] = (hidden,)
        mine = {k: v for k, v in tensors.items() if canonical_name(k, family) in expected}
        t = check_table(mine, expected, (), source, rename=lambda key: canonical_name(key, family))
        b1 = np.array(t[f"{first}.bias"]) if first_bias else np.zeros(hidden, np.float32)
        return cls(transposed(t[f"{first}.weight"]), b1, act, transposed(t[f"{out}.weight"]),
                   np.array(t[f"{out}.bias"]), np.array(t[f"{norm}.weight"]) if norm else None, eps, pooling)

    @property
    def out_dim(self) -> int:
        return self.w2.shape[1]

    def named_arrays(self) -> Iterator[Tuple[str, np.ndarray]]:
        yield from (("w1", self.w1), ("b1", self.b1), ("w2", self.w2), ("b2", self.b2))
        if self.norm_g is not None:
            yield "norm_g", self.norm_g

    def identity(self) -> dict:
        return {"kind": self.kind, "activation": self.activation, "pooling": self.pooling,
                "norm_eps": None if self.norm_g is None else self.eps}

    def state(self) -> Dict[str, Any]:
        return {"activation": self.activation, "eps": self.eps, "pooling": self.pooling,
                **{k: np.asarray(v) for k, v in self.named_arrays()}}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "Classifier":
        return cls(state["w1"], state["b1"], state["activation"], state["w2"], state["b2"], state.get("norm_g"),
                   state.get("eps", 1e-5), state.get("pooling", "first"))

    def __call__(self, tokens: np.ndarray, packed) -> np.ndarray:
        # [B, H]: the mean of each sequence's tokens, or its first token ([CLS] / <s>)
        pooled = mean_tokens(tokens, packed) if self.pooling == "mean" else tokens[packed.offsets]
        h = _CLASSIFIER_ACTIVATIONS[self.activation](pooled @ self.w1 + self.b1)  # [B, H]
        if self.norm_g is not None:  # ModernBERT's head.norm (no bias)
            h = layer_norm(h, self.norm_g, np.zeros_like(self.norm_g), self.eps)
        return (h @ self.w2 + self.b2).astype(np.float32, copy=False)  # [B, labels]

    def __repr__(self) -> str:
        return f"Classifier({self.w1.shape[0]}->{self.out_dim} {self.activation})"


HEADS: Dict[str, Type[Head]] = {cls.kind: cls for cls in (Pooling, Dense, Normalize)}


def load_heads(folder: Path, specs: List[ModuleSpec], hidden: int) -> Tuple[Head, ...]:
    """Every module after the Transformer, from its folder, checking that the sizes chain up and Pooling comes first."""
    out: List[Head] = []
    dim = hidden
    pooled: Optional[Pooling] = None
    for spec in specs[1:]:
        if spec.kind == "Pooling" and pooled is not None:
            raise ValueError(f"{folder}/modules.json: more than one Pooling module")
        if spec.kind != "Pooling" and pooled is None:
            raise ValueError(f"{folder}/modules.json: {spec.kind} module {spec.path!r} comes before any Pooling module")
        head = HEADS[spec.kind].from_folder(folder, spec, dim)
        if isinstance(head, Pooling):
            pooled = head
        out.append(head)
        dim = head.out_dim
    if pooled is None:
        raise ValueError(f"{folder}/modules.json: no Pooling module: tinyhpd.load gives sentence embeddings only")
    return tuple(out)
