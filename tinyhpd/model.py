"""`Model`: a sentence-transformers pipeline (BERT -> Pooling -> Dense* -> Normalize?) run with NumPy.

`Model(...)` takes parsed parts (config, weights, tokenizer, heads); `Model.from_folder` / `load` read them from a
sentence-transformers folder. Batching and threads live in runner.py, the forward pass in bert.py, the heads in heads.py.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd import attention, heads as heads_mod
from tinyhpd._threads import default_num_threads
from tinyhpd.config import BertConfig, read_modules, read_prompts
from tinyhpd.cross_encoder import is_cross_encoder
from tinyhpd.encoder import encoder_forward, load_encoder
from tinyhpd.heads import Head, load_heads
from tinyhpd.hub import resolve
from tinyhpd.kernels import Workspace
from tinyhpd.arguments import positive_int
from tinyhpd.runner import Runner, progress_bar
from tinyhpd.tokenizer import tokenize, tokenize_info
from tinyhpd.families import FAMILY_NAMES
from tinyhpd.params import BertParams

__all__ = ["Model", "load"]


def _as_texts(sentences: Any) -> List[str]:
    """A list of strings from any iterable of str; a non-string item is a TypeError naming its index and type."""
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError("sentences must be a str or an iterable of str, got bytes (decode it first)")
    if isinstance(sentences, np.ndarray) and sentences.ndim != 1:
        raise TypeError(f"sentences as a NumPy array must be 1-D, got shape {sentences.shape}")
    try:
        items = list(sentences)
    except TypeError:
        raise TypeError(f"sentences must be a str or an iterable of str, got {type(sentences).__name__}") from None
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] is {type(s).__name__}, expected str")
    return [str(s) for s in items]  # np.str_ -> str


class Model:
    """A loaded sentence-embedding model. Thread-safe: `encode` keeps no state between calls. Picklable: the weights,
    configs and tokenizer travel by value (plain arrays, dicts and the tokenizer's JSON), see `__reduce__`."""

    def __init__(self, config: BertConfig, params: BertParams, tokenizer, heads: Sequence[Head], *,
                 max_seq_length: int, lowercase: bool = False, name_or_path: str = "(in memory)",
                 revision: Optional[str] = None, num_threads: Optional[int] = None,
                 folder: Optional[Path] = None, config_path: Optional[Path] = None,
                 prompts: Optional[Dict[str, str]] = None, default_prompt_name: Optional[str] = None) -> None:
        if num_threads is None:
            num_threads = default_num_threads()
        self.num_threads: int = positive_int(num_threads, "num_threads")
        self.config = config
        self._bert = params
        self.max_seq_length: int = max_seq_length
        self._lowercase = bool(lowercase)
        self._tokenizer = tokenizer
        self._heads: Tuple[Head, ...] = tuple(heads)
        self.prompts: Dict[str, str] = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts")
        self.default_prompt_name: Optional[str] = default_prompt_name
        self.embedding_dim: int = self._heads[-1].out_dim if self._heads else config.hidden_size
        self.folder = folder
        self._config_path = config_path or "config.json"
        self.name_or_path: str = name_or_path
        self.revision: Optional[str] = revision
        # ids can only leave the embedding matrix when the tokenizer knows more tokens than config.json's vocab_size
        self._check_ids = tokenizer.get_vocab_size(with_added_tokens=True) > config.vocab_size
        self._fingerprint: Optional[str] = None
        self._special: Optional[Tuple[int, int]] = None  # special_ids(), found once
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread scratch buffers
        self._runner = Runner(self.num_threads)

    @classmethod
    def from_folder(cls, folder: Union[str, Path], *, name_or_path: Optional[str] = None,
                    revision: Optional[str] = None, num_threads: Optional[int] = None) -> "Model":
        """Read a sentence-transformers folder: modules.json, the encoder's config and weights (one strict table),
        its tokenizer, then every head."""
        folder = Path(folder)
        if is_cross_encoder(folder):
            raise ValueError(f"{folder}: a cross-encoder (a *ForSequenceClassification model): load it with "
                             "tinyhpd.CrossEncoder (or serve it: the rerank routes)")
        specs = read_modules(folder)
        enc, _, _ = load_encoder(folder / specs[0].path)
        prompts, default_prompt_name = read_prompts(folder)
        return cls(enc.config, enc.params, enc.tokenizer, load_heads(folder, specs, enc.config.hidden_size),
                   max_seq_length=enc.max_seq_length, lowercase=enc.lowercase,
                   name_or_path=name_or_path or str(folder), revision=revision, num_threads=num_threads,
                   folder=folder, config_path=enc.config_path, prompts=prompts,
                   default_prompt_name=default_prompt_name)

    def with_num_threads(self, num_threads: int) -> "Model":
        """The same model (weights shared, not copied) running `num_threads` threads: for a worker given fewer CPUs."""
        return Model(self.config, self._bert, self._tokenizer, self._heads, max_seq_length=self.max_seq_length,
                     lowercase=self._lowercase, name_or_path=self.name_or_path, revision=self.revision,
                     num_threads=num_threads, folder=self.folder, config_path=self._config_path,
                     prompts=self.prompts, default_prompt_name=self.default_prompt_name)

    def __repr__(self) -> str:
        c = self.config
        pipeline = " -> ".join(
            [f"{FAMILY_NAMES[c.model_type]}(L{c.num_hidden_layers} H{c.hidden_size} A{c.num_attention_heads} "
             f"I{c.intermediate_size})"]
            + [repr(h) for h in self._heads])
        rev = f"@{self.revision[:12]}" if self.revision else ""
        return (f"Model({self.name_or_path!r}{rev}, {pipeline}, embedding_dim={self.embedding_dim}, "
                f"max_seq_length={self.max_seq_length})")

    # ---------------------------------------------------------------------------------------------------- identity
    def pipeline(self) -> dict:
        """Everything besides the weights that changes the vectors: encoder config, max_seq_length, lowercasing,
        each head's settings, and a digest of the tokenizer."""
        out = {"bert": self.config.identity(), "max_seq_length": self.max_seq_length,
               "lowercase": self._lowercase, "heads": [h.identity() for h in self._heads],
               "tokenizer": hashlib.sha256(self._tokenizer.to_str().encode("utf-8")).hexdigest()}
        if self.default_prompt_name is not None:  # what encode(text) puts before every text
            out["default_prompt"] = self.prompts[self.default_prompt_name]
        return out

    @property
    def fingerprint(self) -> str:
        """sha256 over every weight (names, shapes, float32 bytes) and the pipeline (`pipeline()`): two models with
        the same fingerprint give the same vectors."""
        with self._lock:
            if self._fingerprint is None:
                h = hashlib.sha256()
                for name, arr in self._named_arrays():
                    h.update(f"{name}:{arr.shape}".encode())
                    h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
                h.update(json.dumps(self.pipeline(), sort_keys=True).encode())
                self._fingerprint = h.hexdigest()
            return self._fingerprint

    def _named_arrays(self):
        b = self._bert
        for name in ("word_emb", "pos_emb", "type_emb", "emb_ln_g", "emb_ln_b"):
            yield name, getattr(b, name)
        yield from b.extras().items()  # none for BERT: its fingerprint is 0.2's
        for i, lp in enumerate(b.layers):
            for name, arr in vars(lp).items():
                yield f"layer{i}.{name}", arr
        for i, h in enumerate(self._heads):
            for name, arr in h.named_arrays():
                yield f"head{i}.{name}", arr

    # ------------------------------------------------------------------------------------------------------ pickle
    def __reduce__(self):
        from tinyhpd import _pickle

        return _pickle.rebuild_model, (_pickle.model_state(self),)

    # ------------------------------------------------------------------------------------------------------ encode
    def tokenize(self, sentences: Sequence[str]) -> List[np.ndarray]:
        """Token ids (with [CLS]/[SEP], truncated to max_seq_length) for each sentence."""
        return tokenize(self._tokenizer, _as_texts(sentences), self._lowercase)

    def tokenize_info(self, sentences: Sequence[str]) -> Tuple[List[np.ndarray], List[bool]]:
        """(token ids, truncated?) per sentence: which inputs were longer than max_seq_length."""
        return tokenize_info(self._tokenizer, _as_texts(sentences), self._lowercase)

    def special_ids(self) -> Tuple[int, int]:
        """The ids of [CLS] and [SEP] (RoBERTa's <s> and </s>: what `tokenize` puts around every sentence)."""
        if self._special is None:
            ids = self.tokenize(["a"])[0]
            self._special = (int(ids[0]), int(ids[-1]))
        return self._special

    def with_special_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Token ids of a sentence tokenised elsewhere (no special tokens), wrapped as `tokenize` wraps its own:
        `[CLS] ids [SEP]`, cut to max_seq_length."""
        cls_id, sep_id = self.special_ids()
        body = np.asarray(ids, dtype=np.int64)[: self.max_seq_length - 2]
        return np.concatenate([[cls_id], body, [sep_id]]).astype(np.int64)

    def _forward(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        """Sentence embeddings `[B, d]` for one (sub-)batch of token id arrays, on this thread."""
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = Workspace()
        packed = attention.pack([len(x) for x in ids])
        flat = np.concatenate(ids)  # [n_tok]
        x = encoder_forward(self._bert, self.config, flat, packed, ws)  # [n_tok] -> [n_tok, H]
        for head in self._heads:
            x = head(x, packed)  # Pooling: [n_tok, H] -> [B, H']; Dense / Normalize: [B, d] -> [B, d']
        return x

    def _validate_ids(self, ids: Sequence[np.ndarray]) -> None:
        vocab = self.config.vocab_size
        for i, x in enumerate(ids):
            if len(x) and int(x.max()) >= vocab:
                raise ValueError(f"sentences[{i}]: token id {int(x.max())} is outside the model's vocabulary "
                                 f"(vocab_size {vocab} in {self._config_path}); the tokenizer has "
                                 f"{self._tokenizer.get_vocab_size(with_added_tokens=True)} tokens")

    def _embed(self, ids: Sequence[np.ndarray], batch_size: int, normalize_embeddings: bool,
               show_progress_bar: Optional[bool]) -> np.ndarray:
        out = np.empty((len(ids), self.embedding_dim), dtype=np.float32)
        if len(ids):
            order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first: similar lengths share a batch
            with progress_bar(len(ids), show_progress_bar, "Encoding", "sent") as bar:
                self._runner.run(self._forward, ids, order, batch_size, out, bar)
            if normalize_embeddings:
                out = heads_mod.normalize(out)
        return out

    def encode_ids(self, ids: Sequence[Sequence[int]], *, batch_size: int = 32, normalize_embeddings: bool = False,
                   show_progress_bar: Optional[bool] = None) -> np.ndarray:
        """Embeddings `(n, d)` of already tokenised inputs: token ids *with* [CLS]/[SEP] (as `tokenize` gives), at
        most `max_seq_length` each. The path for pre-tokenised batches (the server's token-id inputs)."""
        batch_size = positive_int(batch_size, "batch_size")
        arrays = []
        for i, x in enumerate(ids):
            a = np.asarray(x)
            if a.ndim != 1 or not len(a) or a.dtype.kind not in "iu":
                raise ValueError(f"ids[{i}] must be a non-empty 1-D sequence of integers")
            if len(a) > self.max_seq_length:
                raise ValueError(f"ids[{i}] has {len(a)} tokens, more than max_seq_length {self.max_seq_length}")
            if int(a.min()) < 0:
                raise ValueError(f"ids[{i}]: token id {int(a.min())} is negative")
            arrays.append(a.astype(np.int64, copy=False))
        self._validate_ids(arrays)
        return self._embed(arrays, batch_size, normalize_embeddings, show_progress_bar)

    def _prompt(self, prompt_name: Optional[str], prompt: Optional[str]) -> str:
        """The text put before every sentence: `prompt`, else the named (or default) prompt of the folder's
        config_sentence_transformers.json, as sentence-transformers chooses it."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        name = self.default_prompt_name if prompt_name is None else prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts "
                             f"({', '.join(map(repr, self.prompts)) or 'none'})")
        return self.prompts[name]

    def encode(self, sentences: Union[str, Iterable[str]], *, prompt_name: Optional[str] = None,
               prompt: Optional[str] = None, batch_size: int = 32,
               normalize_embeddings: bool = False, show_progress_bar: Optional[bool] = None,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False):
        """Embed one sentence (-> `(d,)`) or many (-> `(n, d)` float32), sentence-transformers style.

        Sentences are sorted by token count, run in batches of `batch_size`, and returned in input order; results do not
        depend on `batch_size` or order. `prompt` (or `prompt_name`, one of `self.prompts`) goes before every
        sentence; by default the folder's `default_prompt_name`, if any. `convert_to_numpy=False` returns a list of 1-D
        arrays; `convert_to_tensor=True` a torch tensor (needs torch).
        """
        batch_size = positive_int(batch_size, "batch_size")
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_texts(sentences)
        before = self._prompt(prompt_name, prompt)
        if before:
            texts = [before + t for t in texts]
        ids = tokenize(self._tokenizer, texts, self._lowercase) if texts else []
        if self._check_ids:
            self._validate_ids(ids)
        out = self._embed(ids, batch_size, normalize_embeddings, show_progress_bar)
        result: Any = out[0] if single else out
        if convert_to_tensor:
            try:
                import torch
            except ImportError:
                raise ValueError("convert_to_tensor=True needs torch; tinyhpd itself returns NumPy arrays") from None
            return torch.from_numpy(np.ascontiguousarray(result))
        if not convert_to_numpy and not single:
            return list(out)
        return result


def load(name_or_path: Optional[Union[str, Path]] = None, *, revision: Optional[str] = None,
         cache_dir: Optional[Union[str, Path]] = None, local_files_only: Optional[bool] = None,
         num_threads: Optional[int] = None) -> Model:
    """Load a model from a local sentence-transformers folder or a Hub id (None: the default model, see README).

    `num_threads`: CPU threads for encoding (default `TINYHPD_NUM_THREADS`, else the CPUs this process may use,
    counting affinity and cgroup quota)."""
    folder, model_id, rev = resolve(None if name_or_path is None else str(name_or_path), revision,
                                    None if cache_dir is None else str(cache_dir), local_files_only)
    return Model.from_folder(folder, name_or_path=model_id, revision=rev, num_threads=num_threads)
