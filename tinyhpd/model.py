"""`Model`: a sentence-transformers pipeline (BERT -> Pooling -> Dense* -> Normalize?) run with NumPy."""
from __future__ import annotations

import hashlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tinyhpd import bert, heads
from tinyhpd.config import (BertConfig, DenseConfig, PoolingConfig, read_do_lower_case, read_max_seq_length,
                            read_modules)
from tinyhpd._threads import blas_single_threaded, blas_threads_at_most, default_num_threads
from tinyhpd.hub import resolve
from tinyhpd.tokenizer import load_tokenizer, tokenize
from tinyhpd.weights import BertParams, DenseParams, bert_params, dense_params, find_checkpoint, read_checkpoint

__all__ = ["Model", "load"]


@dataclass(frozen=True)
class _Head:
    kind: str  # "Pooling", "Dense" or "Normalize"
    config: Any = None
    params: Optional[DenseParams] = None


def _load_heads(folder: Path, specs, hidden: int) -> Tuple[Tuple[_Head, ...], int]:
    """Configs and weights of every module after the Transformer, checking that their sizes chain up."""
    out: List[_Head] = []
    dim = hidden
    for spec in specs[1:]:
        sub = folder / spec.path
        if spec.kind == "Pooling":
            cfg = (PoolingConfig(hidden, ("mean",)) if spec.type_name == "(implicit mean)"
                   else PoolingConfig.from_file(sub / "config.json"))
            if out and any(h.kind == "Pooling" for h in out):
                raise ValueError(f"{folder}/modules.json: more than one Pooling module")
            if cfg.dimension != dim:
                raise ValueError(f"{sub / 'config.json'}: pooling dimension {cfg.dimension} does not match the "
                                 f"encoder's hidden_size {dim}")
            out.append(_Head("Pooling", cfg))
            dim = cfg.output_dim
        elif not any(h.kind == "Pooling" for h in out):
            raise ValueError(f"{folder}/modules.json: {spec.kind} module {spec.path!r} comes before any Pooling module")
        elif spec.kind == "Dense":
            cfg = DenseConfig.from_file(sub / "config.json")
            if cfg.in_features != dim:
                raise ValueError(f"{sub / 'config.json'}: in_features {cfg.in_features} does not match the "
                                 f"incoming dimension {dim}")
            ckpt = find_checkpoint(sub)
            out.append(_Head("Dense", cfg, dense_params(read_checkpoint(ckpt), cfg, str(ckpt))))
            dim = cfg.out_features
        else:  # Normalize
            out.append(_Head("Normalize"))
    if not any(h.kind == "Pooling" for h in out):
        raise ValueError(f"{folder}/modules.json: no Pooling module: tinyhpd produces sentence embeddings only")
    return tuple(out), dim


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
    """A loaded sentence-embedding model. Thread-safe: `encode` keeps no state between calls."""

    def __init__(self, folder: Union[str, Path], *, name_or_path: Optional[str] = None,
                 revision: Optional[str] = None, num_threads: Optional[int] = None) -> None:
        folder = Path(folder)
        if num_threads is None:
            num_threads = default_num_threads()
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        self.num_threads: int = num_threads
        specs = read_modules(folder)
        tdir = folder / specs[0].path
        self._config_path = tdir / "config.json"
        self.config: BertConfig = BertConfig.from_file(self._config_path)
        ckpt = find_checkpoint(tdir)
        self._bert: BertParams = bert_params(read_checkpoint(ckpt), self.config, str(ckpt))
        self.max_seq_length: int = read_max_seq_length(tdir, self.config.max_position_embeddings)
        self._lowercase = read_do_lower_case(tdir)
        self._tokenizer = load_tokenizer(tdir, self.max_seq_length)
        # ids can only leave the embedding matrix when the tokenizer knows more tokens than config.json's vocab_size
        self._check_ids = self._tokenizer.get_vocab_size(with_added_tokens=True) > self.config.vocab_size
        self._heads, self.embedding_dim = _load_heads(folder, specs, self.config.hidden_size)
        self.folder = folder
        self.name_or_path: str = name_or_path or str(folder)
        self.revision: Optional[str] = revision
        self._fingerprint: Optional[str] = None
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread scratch buffers
        self._pool: Optional[ThreadPoolExecutor] = None

    def __repr__(self) -> str:
        c = self.config
        pipeline = " -> ".join(
            [f"BERT(L{c.num_hidden_layers} H{c.hidden_size} A{c.num_attention_heads} I{c.intermediate_size})"]
            + [_describe(h) for h in self._heads])
        rev = f"@{self.revision[:12]}" if self.revision else ""
        return (f"Model({self.name_or_path!r}{rev}, {pipeline}, embedding_dim={self.embedding_dim}, "
                f"max_seq_length={self.max_seq_length})")

    @property
    def fingerprint(self) -> str:
        """sha256 over every weight (names, shapes, float32 bytes): identifies the model exactly."""
        with self._lock:
            if self._fingerprint is None:
                h = hashlib.sha256()
                for name, arr in self._named_arrays():
                    h.update(f"{name}:{arr.shape}".encode())
                    h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
                self._fingerprint = h.hexdigest()
            return self._fingerprint

    def _named_arrays(self):
        b = self._bert
        for name in ("word_emb", "pos_emb", "type_emb", "emb_ln_g", "emb_ln_b"):
            yield name, getattr(b, name)
        for i, lp in enumerate(b.layers):
            for name, arr in vars(lp).items():
                yield f"layer{i}.{name}", arr
        for i, h in enumerate(self._heads):
            if h.params is not None:
                yield f"head{i}.w", h.params.w
                yield f"head{i}.b", h.params.b

    def tokenize(self, sentences: Sequence[str]) -> List[np.ndarray]:
        """Token ids (with [CLS]/[SEP], truncated to max_seq_length) for each sentence."""
        return tokenize(self._tokenizer, _as_texts(sentences), self._lowercase)

    def _forward(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        """Sentence embeddings `[B, d]` for one (sub-)batch of token id arrays, on this thread."""
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = bert.Workspace()
        packed = bert.pack([len(x) for x in ids])
        flat = np.concatenate(ids)  # [n_tok]
        x = bert.bert_forward(self._bert, self.config, flat, packed, ws)  # [n_tok] -> [n_tok, H]
        for h in self._heads:
            if h.kind == "Pooling":
                x = heads.pool(x, packed.offsets, packed.lengths, h.config)  # [n_tok, H] -> [B, H']
            elif h.kind == "Dense":
                x = heads.dense(x, h.params, h.config.activation)  # [B, in] -> [B, out]
            else:
                x = heads.normalize(x)  # [B, d] -> [B, d]
        return x

    def _plan(self, ids: Sequence[np.ndarray]) -> List[Tuple[int, int]]:
        """Cut one batch into pieces `[(start, stop), ...]` of about equal estimated work, for `num_threads` workers
        taking them from a queue: two per worker on large batches (a worker that finishes early takes another instead
        of waiting), one piece for a batch too small to share."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        k = min(self.num_threads, len(lengths))
        n_tok = int(lengths.sum())
        if k <= 1 or n_tok < 32 * k:
            return [(0, len(lengths))]
        n_pieces = min(len(lengths), 2 * k if n_tok >= 512 * k else k)
        work = lengths + lengths * lengths / 128.0  # dense layers ~ tokens; attention adds ~ length^2
        cum = np.cumsum(work)
        cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_pieces) / n_pieces)
        bounds = [0] + sorted(set(int(c) + 1 for c in cuts if 0 <= c < len(lengths) - 1)) + [len(lengths)]
        return list(zip(bounds[:-1], bounds[1:]))

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="tinyhpd")
            return self._pool

    def _embed_ids(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        """One batch: its pieces on the workers with BLAS single-threaded meanwhile; a batch too small to share runs on
        the calling thread with BLAS's own threads, at most `num_threads` of them."""
        parts = self._plan(ids)
        if len(parts) == 1:
            with blas_threads_at_most(self.num_threads):  # num_threads=1 in a 1-CPU Spark task: BLAS too
                return self._forward(ids)
        with blas_single_threaded() as blas:
            if not blas.ok:
                return self._forward(ids)
            futures = [self._workers().submit(self._forward, ids[a:b]) for a, b in parts]
            return np.concatenate([f.result() for f in futures])

    def _embed_batches(self, ids: Sequence[np.ndarray], order: np.ndarray, batch_size: int, out: np.ndarray,
                       bar) -> None:
        """out[i] <- embedding of ids[i], in batches of `batch_size` taken in `order`. With several batches and several
        workers, the pieces of every batch go to the worker queue as they are planned (a bounded window ahead), so no
        worker waits for the slowest piece of a batch and small batches run side by side, one per core."""
        n = len(ids)
        if self.num_threads == 1 or n <= batch_size or not blas_single_threaded().ok:
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self._embed_ids([ids[i] for i in idx])
                if bar is not None:
                    bar.update(len(idx))
            return
        pending: Deque[Tuple[np.ndarray, Future]] = deque()

        def collect() -> None:
            rows, future = pending.popleft()
            out[rows] = future.result()
            if bar is not None:
                bar.update(len(rows))

        with blas_single_threaded():
            pool = self._workers()
            try:
                for start in range(0, n, batch_size):
                    idx = order[start:start + batch_size]
                    batch = [ids[i] for i in idx]
                    for a, b in self._plan(batch):
                        pending.append((idx[a:b], pool.submit(self._forward, batch[a:b])))
                        while len(pending) > 4 * self.num_threads:
                            collect()
                while pending:
                    collect()
            except BaseException:
                for _, future in pending:
                    future.cancel()
                wait([f for _, f in pending])
                raise

    def _validate_ids(self, ids: Sequence[np.ndarray]) -> None:
        vocab = self.config.vocab_size
        for i, x in enumerate(ids):
            if len(x) and int(x.max()) >= vocab:
                raise ValueError(f"sentences[{i}]: token id {int(x.max())} is outside the model's vocabulary "
                                 f"(vocab_size {vocab} in {self._config_path}); the tokenizer has "
                                 f"{self._tokenizer.get_vocab_size(with_added_tokens=True)} tokens")

    def encode(self, sentences: Union[str, Iterable[str]], *, batch_size: int = 32,
               normalize_embeddings: bool = False, show_progress_bar: Optional[bool] = None,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False):
        """Embed one sentence (-> `(d,)`) or many (-> `(n, d)` float32), sentence-transformers style.

        Sentences are sorted by token count, run in batches of `batch_size`, and returned in input order; results do not
        depend on `batch_size` or order. `convert_to_numpy=False` returns a list of 1-D arrays; `convert_to_tensor=True`
        a torch tensor (needs torch).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_texts(sentences)
        out = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        if texts:
            ids = tokenize(self._tokenizer, texts, self._lowercase)
            if self._check_ids:
                self._validate_ids(ids)
            order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first: similar lengths share a batch
            bar = _progress(len(texts), show_progress_bar)
            self._embed_batches(ids, order, batch_size, out, bar)
            if bar is not None:
                bar.close()
            if normalize_embeddings:
                out = heads.normalize(out)
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


def _describe(h: _Head) -> str:
    if h.kind == "Pooling":
        return f"Pooling({'+'.join(h.config.modes)})"
    if h.kind == "Dense":
        return f"Dense({h.config.in_features}->{h.config.out_features} {h.config.activation})"
    return "Normalize"


def _progress(total: int, show: Optional[bool]):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Encoding", unit="sent")


def load(name_or_path: Optional[Union[str, Path]] = None, *, revision: Optional[str] = None,
         cache_dir: Optional[Union[str, Path]] = None, local_files_only: Optional[bool] = None,
         num_threads: Optional[int] = None) -> Model:
    """Load a model from a local sentence-transformers folder or a Hub id (None: the default model, see README).

    `num_threads`: CPU threads for encoding (default `TINYHPD_NUM_THREADS`, else the CPUs this process may use,
    counting affinity and cgroup quota)."""
    folder, model_id, rev = resolve(None if name_or_path is None else str(name_or_path), revision,
                                    None if cache_dir is None else str(cache_dir), local_files_only)
    return Model(folder, name_or_path=model_id, revision=rev, num_threads=num_threads)
