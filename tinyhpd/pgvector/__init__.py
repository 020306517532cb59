"""PostgreSQL + pgvector: export an index folder or an `embed` output folder into a table, and search it.

```python
from tinyhpd.pgvector import export, search
export("my_index", "postgresql://user@host/db", table="docs")          # halfvec column, HNSW index after the load
hits = search("postgresql://user@host/db", "docs", model.encode(["a query"]), top_k=10)
```

Modules: sources.py (what can be exported, read in batches), copy_format.py (PostgreSQL's binary COPY rows for
bigint/text ids and vector/halfvec columns, built with NumPy), export.py (the resumable load and the HNSW index),
query.py (the search helper). Needs psycopg 3 (``pip install 'tinyhpd[postgres]'``); the server needs the pgvector
extension (``CREATE EXTENSION vector``, done by `export` when the user may).
"""
from __future__ import annotations

try:
    import psycopg  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tinyhpd.pgvector needs psycopg 3: pip install 'tinyhpd[postgres]'") from exc

from tinyhpd.pgvector.export import export  # noqa: E402
from tinyhpd.pgvector.query import search  # noqa: E402
from tinyhpd.pgvector.sources import open_source  # noqa: E402

__all__ = ["export", "search", "open_source"]
