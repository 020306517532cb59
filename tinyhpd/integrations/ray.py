"""Ray Data: `Embedder`, a callable class for `map_batches` that adds an `embedding` column.

```python
import ray
from tinyhpd.integrations.ray import Embedder
ds = ray.data.read_text("corpus.txt")                      # a "text" column
ds = ds.map_batches(Embedder, fn_constructor_kwargs={"model": PATH_OR_MODEL, "column": "text"},
                    batch_size=256, concurrency=2, num_cpus=1, batch_format="numpy")
```

Each actor loads the model once (a path, a Hub id, None for the default, or a Model, which Ray pickles by value) with
`num_threads` = the CPUs Ray gave the actor, so `concurrency` actors with `num_cpus=1` each run one thread.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from tinyhpd.integrations import resolve_model

__all__ = ["Embedder", "actor_cpus"]


def actor_cpus(default: int = 1) -> int:
    """The CPUs Ray assigned to the current task or actor (`default` outside Ray)."""
    from tinyhpd._threads import task_cpus

    return task_cpus() or default


class Embedder:
    def __init__(self, model: Any = None, column: str = "text", output_column: str = "embedding",
                 batch_size: int = 256, normalize_embeddings: bool = False, num_threads: Optional[int] = None) -> None:
        threads = num_threads or actor_cpus()
        self.model = resolve_model(model, threads)
        if self.model.num_threads != threads:  # a Model sent by the driver: run this actor's share of threads
            self.model = self.model.with_num_threads(threads)
        self.column, self.output_column = column, output_column
        self.batch_size, self.normalize = batch_size, normalize_embeddings

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        if self.column not in batch:
            raise KeyError(f"tinyhpd Embedder: the batch has no column {self.column!r} (columns: {sorted(batch)})")
        texts = [str(t) for t in np.asarray(batch[self.column]).tolist()]
        out = dict(batch)
        out[self.output_column] = self.model.encode(texts, batch_size=self.batch_size,
                                                    normalize_embeddings=self.normalize)
        return out
