"""Adapters for frameworks users already run: Ray Data (`ray.Embedder`), Spark (`spark.embed_udf`), LangChain
(`langchain.Embeddings`) and LlamaIndex (`llama_index.TinyHPDEmbedding`). Each module imports its framework when it is
imported itself (a clear ImportError naming the package otherwise); `import tinyhpd` imports none of them.

The thread rule for workers: one tinyhpd thread per CPU the task is given (Ray's `num_cpus`, Spark's
`spark.task.cpus`), so that N workers on N cores never run more than N threads.
"""
from __future__ import annotations

from typing import Any, Optional


def resolve_model(model: Any, num_threads: Optional[int] = None):
    """A Model as given, or loaded from a folder / Hub id / None (the default) with `num_threads`."""
    import tinyhpd

    if isinstance(model, tinyhpd.Model):
        return model
    return tinyhpd.load(model, num_threads=num_threads)


def require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"tinyhpd.integrations needs {module!r} here: pip install {extra}") from None
