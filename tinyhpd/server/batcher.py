"""Dynamic batching: concurrent requests coalesced into one engine call.

Continuous: one engine thread runs one batch at a time (calling the model in this process, or in a forked engine
process with `engine="process"`, the server's default); when it is free, the next batch takes everything queued (in
arrival order) up to `max_batch_tokens`. A request's rows stay together and in order. The engine is the model's own
runner (its `num_threads` workers), so the server never runs more engine threads than asked. A batch that fails is
retried request by request, so that only the request that really fails gets the error.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np

__all__ = ["Batcher", "QueueFull", "EngineDied", "Job"]


class QueueFull(Exception):
    """More requests in the queue than --max-concurrent-requests allows (HTTP 429)."""


class EngineDied(RuntimeError):
    """The engine process died (killed, out of memory) during a call; a new one was started (HTTP 503)."""


@dataclass
class Job:
    ids: List[np.ndarray]
    n_tokens: int
    future: "asyncio.Future[np.ndarray]"
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0


def _engine_process(model: Any, conn: Any, parent_end: Any, batch_size: int) -> None:
    """The engine in a process of its own: token ids in, vectors (or the error's text) out, until the pipe closes.
    Signals are the server's business: it drains, then closes the pipe."""
    import signal

    parent_end.close()  # else this process keeps the pipe open itself and never sees its end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            ids = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", model.encode_ids(ids, batch_size=batch_size)))
        except Exception as exc:  # the request's own failure: reported, the engine goes on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _ProcessEngine:
    """`encode_ids` forwarded to a forked child that holds the model: the server's event loop and the engine then
    never wait for each other's GIL (with both in one process, a busy engine delays every HTTP read and write).
    Supervised: a child that dies (kill -9, the OOM killer) is reaped and forked again from this process's copy of
    the model; the call that found it dead raises `EngineDied`, and `restarts` counts the new children."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self._model, self._batch_size = model, batch_size
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_engine_process, args=(self._model, child, self._conn, self._batch_size),
                                 daemon=True, name="tinyhpd-engine")
        self._proc.start()
        child.close()

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()

    def restart(self) -> None:
        """Reap the old child (killed if it still runs) and fork a new one."""
        self._conn.close()
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=10)  # reaped: no zombie
        self._start()
        self.restarts += 1

    def encode_ids(self, ids, batch_size: int = 128) -> np.ndarray:
        try:
            self._conn.send(list(ids))
            status, value = self._conn.recv()
        except (EOFError, OSError):  # BrokenPipeError, ConnectionResetError: the child is gone
            self._proc.join(timeout=1)
            code = self._proc.exitcode
            self.restart()
            raise EngineDied(f"the engine process died (exit code {code}) and was restarted") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        self._conn.close()
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=10)


class Batcher:
    def __init__(self, model: Any, *, max_batch_tokens: int, max_queue: int, metrics: Any = None,
                 batch_size: int = 128, engine: str = "thread") -> None:
        if engine not in ("thread", "process"):
            raise ValueError(f"engine must be 'thread' or 'process', got {engine!r}")
        self.engine_kind = engine
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.metrics = metrics
        self._queue: List[Job] = []
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinyhpd-engine")
        self._closing = False
        self.dropped = 0  # jobs abandoned by their clients before they reached the engine

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def abandoned(self) -> int:
        """Queued requests whose clients went away (dropped when the engine comes to them)."""
        return sum(1 for job in self._queue if job.future.done())

    @property
    def restarts(self) -> int:
        return getattr(self.model, "restarts", 0)

    def engine_alive(self) -> bool:
        return self.model.alive() if isinstance(self.model, _ProcessEngine) else True

    async def restart_engine(self) -> None:
        """A dead engine process replaced now (on the engine thread, between batches), not at the next request."""
        if isinstance(self.model, _ProcessEngine) and not self.model.alive():
            await asyncio.get_running_loop().run_in_executor(self._engine, self.model.restart)

    def start(self) -> None:
        if self.engine_kind == "process":
            self.model = _ProcessEngine(self.model, self.batch_size)  # forked before the engine thread exists
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop the engine thread."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self._engine.shutdown(wait=True)
        if isinstance(self.model, _ProcessEngine):
            self.model.close()

    async def embed(self, ids: Sequence[np.ndarray]) -> np.ndarray:
        """Queue one request's token ids; its vectors `[len(ids), d]` in order, once its batch has run."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"{len(self._queue)} requests are queued (limit {self.max_queue})")
        job = Job(list(ids), int(sum(len(x) for x in ids)), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    def _take(self) -> List[Job]:
        """The next batch: queued jobs in arrival order up to the token budget; jobs whose caller gave up (client
        gone: the future is cancelled) are dropped here, before the engine sees them."""
        batch, tokens = [], 0
        while self._queue and (not batch or tokens + self._queue[0].n_tokens <= self.max_batch_tokens):
            job = self._queue.pop(0)
            if job.future.done():
                self.dropped += 1
                continue
            batch.append(job)
            tokens += job.n_tokens
        return batch

    def _run(self, jobs: List[Job]) -> List[Any]:
        """On the engine thread: one call for the whole batch; on failure, each job alone."""
        ids = [x for job in jobs for x in job.ids]
        try:
            vecs = self.model.encode_ids(ids, batch_size=self.batch_size)
            out, start = [], 0
            for job in jobs:
                out.append(vecs[start:start + len(job.ids)])
                start += len(job.ids)
            return out
        except Exception:
            if len(jobs) == 1:
                raise
        results: List[Any] = []
        for job in jobs:
            try:
                results.append(self.model.encode_ids(job.ids, batch_size=self.batch_size))
            except Exception as exc:  # this request's own failure
                results.append(exc)
        return results

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take()
            if not jobs:
                continue
            now = time.perf_counter()
            for job in jobs:
                job.started = now
            if self.metrics is not None:
                self.metrics.observe_batch(sum(len(j.ids) for j in jobs), sum(j.n_tokens for j in jobs))
            try:
                results = await loop.run_in_executor(self._engine, self._run, jobs)
            except Exception as exc:
                results = [exc] * len(jobs)
            for job, res in zip(jobs, results):
                if job.future.done():  # the client went away
                    continue
                if isinstance(res, Exception):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)
