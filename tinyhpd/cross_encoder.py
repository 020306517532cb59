"""`CrossEncoder`: a reranker (a `*ForSequenceClassification` model) scoring (query, document) pairs with NumPy,
sentence-transformers' `CrossEncoder.predict` / `rank` without torch.

Reads a sentence-transformers >= 4 CrossEncoder folder (modules.json with one Transformer, `activation_fn` in
config_sentence_transformers.json) or a plain Hugging Face folder (`sentence_transformers.activation_fn` or the older
`sbert_ce_default_activation_function` in config.json). Without a saved activation: Sigmoid for one label, Identity
for more, as sentence-transformers does.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd import attention
from tinyhpd._threads import default_num_threads
from tinyhpd.config import check_eps, read_json, read_modules
from tinyhpd.encoder import encoder_forward, load_encoder
from tinyhpd.families import CLASSIFIERS, FAMILY_NAMES, detect_family
from tinyhpd.heads import DENSE_ACTIVATIONS, Classifier
from tinyhpd.hub import resolve
from tinyhpd.kernels import Workspace
from tinyhpd.arguments import positive_int
from tinyhpd.runner import Runner, progress_bar
from tinyhpd.tokenizer import tokenize_pairs

__all__ = ["CrossEncoder", "is_cross_encoder"]

_TYPE_SHIFT = 40  # a pair's token types ride in the high bits of its ids: the runner sees one array per input


def _activation_name(value: Any, where: str) -> str:
    name = value.rsplit(".", 1)[-1] if isinstance(value, str) else None
    if name not in DENSE_ACTIVATIONS or not (value.startswith("torch.nn.") or "." not in value):
        raise ValueError(f"{where}: activation {value!r} is not supported (supported: torch.nn."
                         f"{', torch.nn.'.join(DENSE_ACTIVATIONS)})")
    return name


def _saved_activation(folder: Path, config: Dict[str, Any], labels: int) -> str:
    """The activation sentence-transformers would apply to this folder's logits."""
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        saved = read_json(st_config).get("activation_fn")
        if saved is not None:
            return _activation_name(saved, str(st_config))
    nested = config.get("sentence_transformers")
    if isinstance(nested, dict) and nested.get("activation_fn") is not None:
        return _activation_name(nested["activation_fn"], str(folder / "config.json"))
    if config.get("sbert_ce_default_activation_function") is not None:
        return _activation_name(config["sbert_ce_default_activation_function"], str(folder / "config.json"))
    return "Sigmoid" if labels == 1 else "Identity"


def _head_options(config: Dict[str, Any], family: str, path: Path) -> Dict[str, Any]:
    """What ModernBERT's config says of its classification head (the other families' heads are fixed)."""
    if family != "modernbert":
        return {}
    pooling = config.get("classifier_pooling", "cls")
    if pooling not in ("cls", "mean"):
        raise ValueError(f"{path}: classifier_pooling {pooling!r} must be 'cls' or 'mean'")
    bias = config.get("classifier_bias", False)
    if bias not in (True, False):
        raise ValueError(f"{path}: classifier_bias must be true or false")
    return {"activation": config.get("classifier_activation", "gelu"), "first_bias": bias,
            "pooling": "mean" if pooling == "mean" else "first", "eps": check_eps(config, "norm_eps", 1e-5, path)}


def _num_labels(config: Dict[str, Any], path: Path) -> int:
    id2label = config.get("id2label")
    labels = config.get("num_labels", len(id2label) if isinstance(id2label, dict) else 2)
    if isinstance(labels, bool) or not isinstance(labels, int) or not 1 <= labels <= 65_536:
        raise ValueError(f"{path}: num_labels {labels!r} must be an integer from 1 to 65,536")
    return labels


def _pairs(pairs: Any) -> List[Tuple[str, str]]:
    if isinstance(pairs, (str, bytes)):
        raise TypeError("pairs must be a sequence of (text, text) pairs, got a single string")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a (text, text) pair, got {type(pair).__name__}")
        for side, text in zip("ab", pair):
            if not isinstance(text, str):
                raise TypeError(f"pairs[{i}] ({side}) is {type(text).__name__}, expected str")
        out.append((str(pair[0]), str(pair[1])))
    return out


def _reranker_config(folder: Path) -> Tuple[Path, Dict[str, Any]]:
    """(the Transformer module's folder, its config.json) of a cross-encoder folder; a ValueError saying why the
    folder is not one (modules beyond the Transformer, or no *ForSequenceClassification architecture)."""
    specs = read_modules(folder) if (folder / "modules.json").is_file() else None
    if specs is not None and len(specs) != 1:
        raise ValueError(f"{folder / 'modules.json'}: a cross-encoder has one Transformer module and no "
                         f"pooling; found {', '.join(s.kind for s in specs)} (load it with tinyhpd.load)")
    tdir = folder / (specs[0].path if specs else "")
    raw = read_json(tdir / "config.json")
    archs = raw.get("architectures") or []
    if not (isinstance(archs, list) and archs and str(archs[0]).endswith("ForSequenceClassification")):
        raise ValueError(f"{tdir / 'config.json'}: architectures {archs!r} is not a *ForSequenceClassification "
                         "model: not a cross-encoder (embedding models load with tinyhpd.load)")
    return tdir, raw


def is_cross_encoder(folder: Path) -> bool:
    """Whether a model folder holds a cross-encoder (its Transformer's config names a *ForSequenceClassification)."""
    try:
        _reranker_config(folder)
    except (ValueError, FileNotFoundError):
        return False
    return True


class CrossEncoder:
    """A cross-encoder (reranker) run with NumPy. Thread-safe, like `Model`."""

    def __init__(self, model_name_or_path: Union[str, Path], *, revision: Optional[str] = None,
                 cache_dir: Optional[Union[str, Path]] = None, local_files_only: Optional[bool] = None,
                 num_threads: Optional[int] = None) -> None:
        folder, model_id, rev = resolve(str(model_name_or_path), revision,
                                        None if cache_dir is None else str(cache_dir), local_files_only)
        tdir, raw = _reranker_config(folder)
        labels = _num_labels(raw, tdir / "config.json")
        family = detect_family(raw, tdir / "config.json")
        if family not in CLASSIFIERS:
            raise ValueError(f"{tdir / 'config.json'}: cross-encoders of the {FAMILY_NAMES[family]} family are not "
                             "supported yet (its classification head differs)")
        enc, tensors, ckpt = load_encoder(tdir, consumed=Classifier.names(family))
        self.config = enc.config
        self._encoder = enc
        self._head = Classifier.from_tensors(tensors, family, enc.config.hidden_size, labels, ckpt,
                                             **_head_options(raw, family, tdir / "config.json"))
        self.num_labels = labels
        self.activation_fn = _saved_activation(folder, raw, labels)
        self.max_length = enc.max_seq_length
        self.name_or_path, self.revision, self.folder = model_id, rev, folder
        self.num_threads = int(num_threads or default_num_threads())
        self._local = threading.local()
        self._runner = Runner(self.num_threads)

    def __repr__(self) -> str:
        c = self.config
        return (f"CrossEncoder({self.name_or_path!r}, {FAMILY_NAMES[c.model_type]}(L{c.num_hidden_layers} "
                f"H{c.hidden_size}) -> "
                f"{self._head!r} -> {self.activation_fn}, max_length={self.max_length})")

    # ------------------------------------------------------------------------------------------------------ forward
    def _forward(self, packed_ids: Sequence[np.ndarray]) -> np.ndarray:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace()
        packed = attention.pack([len(x) for x in packed_ids])
        flat = np.concatenate(packed_ids)  # [n_tok]: ids | types << _TYPE_SHIFT
        ids, types = flat & ((1 << _TYPE_SHIFT) - 1), flat >> _TYPE_SHIFT
        x = encoder_forward(self._encoder.params, self.config, ids, packed, ws, types)  # [n_tok, H]
        return self._head(x, packed)  # [B, labels]

    def tokenize(self, pairs: Sequence[Tuple[str, str]]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """(token ids, token types) of each pair, as the model sees them."""
        return tokenize_pairs(self._encoder.tokenizer, _pairs(pairs), self._encoder.lowercase)

    def tokenize_joined(self, pairs: Sequence[Tuple[str, str]]) -> List[np.ndarray]:
        """Each pair as one int64 array: token ids with the token types in the high bits (what `encode_ids`
        takes; the length is the pair's token count)."""
        ids, types = self.tokenize(pairs)
        vocab = self.config.vocab_size
        for i, x in enumerate(ids):
            if len(x) and int(x.max()) >= vocab:
                raise ValueError(f"pairs[{i}]: token id {int(x.max())} is outside the model's vocabulary "
                                 f"(vocab_size {vocab})")
        return [x | (t << _TYPE_SHIFT) for x, t in zip(ids, types)]

    def encode_ids(self, joined: Sequence[np.ndarray], batch_size: int = 32,
                   show_progress_bar: Optional[bool] = None) -> np.ndarray:
        """Logits `[n, labels]` of pairs tokenised by `tokenize_joined` (the engine call of the server's batcher)."""
        logits = np.empty((len(joined), self.num_labels), np.float32)
        if len(joined):
            order = np.argsort([-len(x) for x in joined], kind="stable")
            with progress_bar(len(joined), show_progress_bar, "Scoring", "pair") as bar:
                self._runner.run(self._forward, list(joined), order, positive_int(batch_size, "batch_size"), logits,
                                 bar)
        return logits

    def activate(self, logits: np.ndarray,
                 activation_fn: Optional[Union[str, Callable[[np.ndarray], np.ndarray]]] = None) -> np.ndarray:
        """Scores from logits: the saved activation, or `activation_fn` (a name such as "Identity", or a callable)."""
        if callable(activation_fn):
            return np.asarray(activation_fn(logits), dtype=np.float32)
        name = self.activation_fn if activation_fn is None else _activation_name(activation_fn, "activation_fn")
        return np.asarray(DENSE_ACTIVATIONS[name](logits), dtype=np.float32)

    def predict(self, sentences: Sequence[Tuple[str, str]], *, batch_size: int = 32,
                activation_fn: Optional[Union[str, Callable[[np.ndarray], np.ndarray]]] = None,
                apply_softmax: bool = False, convert_to_numpy: bool = True,
                show_progress_bar: Optional[bool] = None) -> np.ndarray:
        """Scores of (a, b) pairs: `(n,)` for one label, `(n, labels)` for more (one pair alone: a scalar or
        `(labels,)`). `activation_fn`: the saved one by default; a name ("Sigmoid", "Identity", ...) or a callable on
        the logits replaces it. `apply_softmax`: softmax over labels (several labels only). `show_progress_bar`: a
        tqdm bar over the pairs."""
        single = isinstance(sentences, tuple) and len(sentences) == 2 and all(isinstance(s, str) for s in sentences)
        pairs = [sentences] if single else sentences
        batch_size = positive_int(batch_size, "batch_size")  # before tokenising
        scores = self.activate(self.encode_ids(self.tokenize_joined(pairs), batch_size, show_progress_bar),
                               activation_fn)
        if apply_softmax and scores.ndim == 2 and scores.shape[1] > 1:
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        if self.num_labels == 1:
            scores = scores[:, 0]
        if single:
            return scores[0]
        return scores if convert_to_numpy else list(scores)

    def rank(self, query: str, documents: Sequence[str], *, top_k: Optional[int] = None,
             return_documents: bool = False, batch_size: int = 32,
             activation_fn: Optional[Union[str, Callable[[np.ndarray], np.ndarray]]] = None) -> List[Dict[str, Any]]:
        """Documents by their score against `query`, best first: `[{"corpus_id", "score"(, "text")}]`, at most
        `top_k` (one label only, as sentence-transformers)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if isinstance(documents, str):
            raise TypeError("documents must be a sequence of str, got a single string")
        documents = list(documents)
        if self.num_labels != 1:
            raise ValueError(f"rank needs a model with one label; this one has {self.num_labels}")
        top_k = positive_int(top_k, "top_k", or_none=True)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, activation_fn=activation_fn)
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))[:top_k]
        return [{"corpus_id": i, "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]
