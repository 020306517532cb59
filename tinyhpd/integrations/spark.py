"""Spark: `embed_udf(model=None)` returns a pandas UDF giving `array<float>` embeddings.

```python
from tinyhpd.integrations.spark import embed_udf
df = df.withColumn("embedding", embed_udf("path/or/hub-id")("text"))
```

The model is loaded once per Python worker (kept in a module-level cache keyed by model and threads) and reused by
every task there; tinyhpd runs `spark.task.cpus` threads (1 by default), so executors never oversubscribe their cores.
Pass a path or Hub id that every worker can read, or a Model (pickled by value into the UDF).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

from tinyhpd.integrations import require, resolve_model

require("pyspark", "pyspark pandas pyarrow")

__all__ = ["embed_udf"]

_MODELS: Dict[Tuple[str, int], Any] = {}
_LOCK = threading.Lock()


def _task_cpus() -> int:
    from tinyhpd._threads import task_cpus

    return task_cpus() or 1


def _worker_model(model: Any, threads: int):
    key = (model.fingerprint if hasattr(model, "fingerprint") else str(model), threads)
    with _LOCK:
        if key not in _MODELS:
            m = resolve_model(model, threads)
            _MODELS[key] = m if m.num_threads == threads else m.with_num_threads(threads)
        return _MODELS[key]


def embed_udf(model: Any = None, *, batch_size: int = 256, normalize_embeddings: bool = False,
              num_threads: Optional[int] = None):
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, FloatType

    @pandas_udf(ArrayType(FloatType()))
    def embed(texts):  # a pandas Series of str -> a Series of float32 arrays
        import pandas as pd

        m = _worker_model(model, num_threads or _task_cpus())
        vecs = m.encode([str(t) for t in texts.tolist()], batch_size=batch_size,
                        normalize_embeddings=normalize_embeddings)
        return pd.Series(list(vecs))

    return embed
