"""Batching and threads: how one `encode` call's batches become work for `num_threads` workers.

A batch is cut into pieces of about equal estimated work; the pieces of every batch go to one worker queue (a bounded
window ahead), BLAS held at one thread meanwhile, so element-wise work uses every core and no worker waits for the
slowest piece of a batch. A batch too small to share runs on the calling thread with BLAS's own threads, at most
`num_threads` of them. One thread is simply the one-worker case: everything on the calling thread.
"""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import numpy as np

from tinyhpd._threads import blas_single_threaded, blas_threads_at_most

__all__ = ["Runner", "plan", "progress_bar"]

Forward = Callable[[Sequence[np.ndarray]], np.ndarray]  # token-id arrays of one piece -> [b, d]


def progress_bar(total: int, show: Optional[bool], desc: str, unit: str) -> Any:
    """A context giving the ``bar`` of :meth:`Runner.run`: a tqdm bar (tqdm comes with huggingface-hub), closed on
    leaving, even on an error; or None when not asked for."""
    if not show:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)


def plan(ids: Sequence[np.ndarray], num_threads: int) -> List[Tuple[int, int]]:
    """Cut one batch into pieces `[(start, stop), ...]` of about equal estimated work: two per worker on large batches
    (a worker that finishes early takes another instead of waiting), one piece for a batch too small to share."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    k = min(num_threads, len(lengths))
    n_tok = int(lengths.sum())
    if k <= 1 or n_tok < 32 * k:
        return [(0, len(lengths))]
    n_pieces = min(len(lengths), 2 * k if n_tok >= 512 * k else k)
    work = lengths + lengths * lengths / 128.0  # dense layers ~ tokens; attention adds ~ length^2
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_pieces) / n_pieces)
    bounds = [0] + sorted(set(int(c) + 1 for c in cuts if 0 <= c < len(lengths) - 1)) + [len(lengths)]
    return list(zip(bounds[:-1], bounds[1:]))


class Runner:
    """`num_threads` workers (a thread pool made on first need) running a `forward` over batches."""

    def __init__(self, num_threads: int) -> None:
        self.num_threads = num_threads
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="tinyhpd")
            return self._pool

    def run_batch(self, forward: Forward, ids: Sequence[np.ndarray]) -> np.ndarray:
        """One batch: its pieces on the workers with BLAS single-threaded meanwhile, or on this thread."""
        parts = plan(ids, self.num_threads)
        if len(parts) == 1:
            with blas_threads_at_most(self.num_threads):  # num_threads=1 in a 1-CPU Spark task: BLAS too
                return forward(ids)
        with blas_single_threaded() as blas:
            if not blas.ok:
                return forward(ids)
            futures = [self._workers().submit(forward, ids[a:b]) for a, b in parts]
            return np.concatenate([f.result() for f in futures])

    def run(self, forward: Forward, ids: Sequence[np.ndarray], order: np.ndarray, batch_size: int,
            out: np.ndarray, bar=None) -> None:
        """out[i] <- forward of ids[i], in batches of `batch_size` taken in `order`."""
        n = len(ids)
        if self.num_threads == 1 or n <= batch_size or not blas_single_threaded().ok:
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self.run_batch(forward, [ids[i] for i in idx])
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
                    for a, b in plan(batch, self.num_threads):
                        pending.append((idx[a:b], pool.submit(forward, batch[a:b])))
                        while len(pending) > 4 * self.num_threads:
                            collect()
                while pending:
                    collect()
            except BaseException:
                for _, future in pending:
                    future.cancel()
                wait([f for _, f in pending])
                raise
