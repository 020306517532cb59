"""How many CPUs this process may really use, and control of the BLAS thread pool without threadpoolctl.

tinyhpd runs a batch as `num_threads` sub-batches in parallel Python threads (NumPy releases the GIL in BLAS and
ufuncs) with BLAS itself limited to one thread meanwhile: the element-wise work then runs on every core too, and
BLAS threads never fight the workers for the same cores.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from pathlib import Path
from typing import Callable, List, Optional, Tuple

__all__ = ["available_cpus", "default_num_threads", "blas_threads_at_most", "blas_single_threaded", "blas_info"]


def _cgroup_cpu_limit() -> Optional[float]:
    """CPU quota of this container (cgroup v2 cpu.max, or v1 cfs quota), None when unlimited or unknown."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask and cgroup quota, whichever is smaller."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def default_num_threads() -> int:
    """`TINYHPD_NUM_THREADS` if set, else `available_cpus()`."""
    env = os.environ.get("TINYHPD_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"TINYHPD_NUM_THREADS={env!r}: expected a positive integer") from None
        if n < 1:
            raise ValueError(f"TINYHPD_NUM_THREADS={env!r}: expected a positive integer")
        return n
    return available_cpus()


def task_cpus() -> Optional[int]:
    """The CPUs a Ray task/actor or a Spark task was given, when this process is one of their workers (looked up only
    if the framework is already imported: never imports it); else None."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None:
        try:
            if ray.is_initialized():
                ctx = ray.get_runtime_context()
                if getattr(ctx, "worker", None) is not None and ctx.worker.mode == 1:  # WORKER_MODE, not the driver
                    cpus = ctx.get_assigned_resources().get("CPU")
                    if cpus:
                        return max(1, int(cpus))
        except Exception:
            pass
    if "pyspark" in sys.modules:
        try:
            from pyspark import TaskContext

            tc = TaskContext.get()
            if tc is not None:
                cpus = tc.cpus() if hasattr(tc, "cpus") else tc.getLocalProperty("spark.task.cpus")
                return max(1, int(cpus or 1))
        except Exception:
            pass
    return None


_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")
_CORENAME = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
             "openblas_get_corename")


def _find_openblas() -> Optional[Tuple[str, Callable[[int], None], Callable[[], int], Optional[Callable]]]:
    """The OpenBLAS that NumPy loaded (from /proc/self/maps), with its thread setter and getter."""
    import numpy  # noqa: F401  (make sure it is loaded)

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower() and ".so" in line})
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, s) for s in _SETTERS if hasattr(lib, s)), None)
        getter = next((getattr(lib, s) for s in _GETTERS if hasattr(lib, s)), None)
        if setter is None or getter is None:
            continue
        setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
        corename = next((getattr(lib, s) for s in _CORENAME if hasattr(lib, s)), None)
        if corename is not None:
            corename.restype = ctypes.c_char_p
        return path, setter, getter, corename
    return None


_BLAS = None
_BLAS_LOCK = threading.Lock()
_limits: List[int] = []  # the BLAS thread caps of the contexts active now, in any thread
_saved = 0  # BLAS's own thread count before the first of them


def blas_handle():
    global _BLAS
    if _BLAS is None:
        _BLAS = _find_openblas() or ()
    return _BLAS


def blas_info() -> dict:
    """Which BLAS tinyhpd can steer: library path, kernel (core name) and current thread count."""
    b = blas_handle()
    if not b:
        return {"library": None, "kernel": None, "threads": None}
    path, _, getter, corename = b
    return {"library": path, "kernel": corename().decode() if corename else None, "threads": getter()}


class blas_threads_at_most:
    """Context manager: BLAS runs at most `n` threads while it is active (process-wide: the smallest cap of all active
    contexts applies; BLAS's own count comes back when the last one exits). `.ok` is False when the BLAS cannot be
    steered (then callers should not run parallel workers of their own)."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self.ok = bool(blas_handle())

    def __enter__(self) -> "blas_threads_at_most":
        global _saved
        if self.ok:
            _, setter, getter, _ = blas_handle()
            with _BLAS_LOCK:
                if not _limits:
                    _saved = getter()
                _limits.append(self.n)
                setter(min(_saved, min(_limits)))
        return self

    def __exit__(self, *exc) -> None:
        if self.ok:
            setter = blas_handle()[1]
            with _BLAS_LOCK:
                _limits.remove(self.n)
                setter(min(_saved, min(_limits)) if _limits else _saved)


def blas_single_threaded() -> blas_threads_at_most:
    """BLAS held at one thread: while tinyhpd's own workers run one sub-batch per core."""
    return blas_threads_at_most(1)
