"""Search a table written by `export`: nearest rows by cosine distance through pgvector's HNSW index."""
from __future__ import annotations

from typing import Any, List, Optional, Union

import numpy as np

from tinyhpd.arguments import positive_int
from tinyhpd.index.checks import Hits
from tinyhpd.pgvector.export import connect, table_sql


def _column_type(cur: Any, table: str) -> str:
    cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attname = 'embedding' AND NOT attisdropped", (table,))
    row = cur.fetchone()
    if row is None:
        raise ValueError(f"table {table} does not exist or has no embedding column")
    return row[0].split("(")[0]


def search_statement(table: str, kind: str) -> Any:
    """The query of :func:`search` (parameters: the vector as text, top_k): the vector is sent once, and the ORDER BY
    names the distance column, the form pgvector's HNSW index serves (the test checks the plan)."""
    from psycopg import sql

    return sql.SQL("SELECT id, embedding <=> %s::{kind} AS distance FROM {table} ORDER BY distance LIMIT %s").format(
        kind=sql.SQL(kind), table=table_sql(table))


def search(conn_or_url: Any, table: str, queries: Any, top_k: int = 10, *,
           ef_search: Optional[int] = None) -> Union[Hits, List[Hits]]:
    """Top-k ids and cosine similarities (1 - cosine distance), best first, for a 1-D query vector (one Hits) or a
    2-D array (a list). ``ef_search``: pgvector's ``hnsw.ef_search`` for these queries (its default is 40)."""
    from psycopg import sql

    q = np.asarray(queries, dtype=np.float64)
    single = q.ndim == 1
    q = q[None, :] if single else q
    if q.ndim != 2 or q.shape[0] == 0 or not np.isfinite(q).all():
        raise ValueError("queries must be a finite 1-D vector or a non-empty 2-D array")
    top_k = positive_int(top_k, "top_k")
    own = isinstance(conn_or_url, str)
    conn = connect(conn_or_url) if own else conn_or_url
    try:
        out = []
        with conn.transaction():
            with conn.cursor() as cur:
                kind = _column_type(cur, table)
                if ef_search is not None:
                    cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
                statement = search_statement(table, kind)
                for row in q:
                    cur.execute(statement, ("[" + ",".join(repr(float(v)) for v in row) + "]", top_k))
                    found = cur.fetchall()
                    out.append(Hits([r[0] for r in found], 1.0 - np.array([r[1] for r in found], dtype=np.float64)))
    finally:
        if own:
            conn.close()
    return out[0] if single else out
