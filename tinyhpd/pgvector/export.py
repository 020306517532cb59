"""Export embeddings into PostgreSQL + pgvector, resumably.

The table gets ``id`` (bigint, or text for string ids) as its primary key and ``embedding`` (``halfvec(d)`` by
default, or ``vector(d)``). Rows go in with binary COPY in batches, each batch in one transaction together with the
export's progress row in ``tinyhpd_exports`` (table name, what the source is, rows done, column type, complete), so a
killed export continues after the last committed batch and never loads a row twice. Another source, dimension or
column type for the same table is refused, naming the key; so is a table the export did not create. The HNSW index
(cosine operator class) is created after the load, when building it once is cheaper than maintaining it per row.
"""
from __future__ import annotations

import json
import re
import sys
import time
from typing import Any, Callable, Dict, Optional

from tinyhpd.arguments import positive_int
from tinyhpd.pgvector.copy_format import COMPONENT, HEADER, TRAILER, encode_rows
from tinyhpd.pgvector.sources import open_source

PROGRESS_TABLE = "tinyhpd_exports"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
OPCLASS = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}


def check_table_name(table: str) -> str:
    if not isinstance(table, str) or not _NAME.match(table):
        raise ValueError(f"table name {table!r}: use letters, digits and _ (optionally schema.table), at most 63 each")
    return table


def table_sql(table: str) -> Any:
    """The table name as a quoted SQL identifier (schema-qualified if given so)."""
    from psycopg import sql

    return sql.Identifier(*check_table_name(table).split("."))


def connect(url: str) -> Any:
    import psycopg

    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--to must be a postgresql:// URL; got {url!r}")
    try:
        return psycopg.connect(url)
    except psycopg.OperationalError as exc:
        raise ValueError(f"cannot connect to {url}: {str(exc).strip()}") from None


def _ensure_extension(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if cur.fetchone() is None:
            try:
                cur.execute("CREATE EXTENSION vector")
            except Exception as exc:
                conn.rollback()
                raise ValueError(f"the pgvector extension is not installed in this database and could not be created "
                                 f"({str(exc).strip()}); ask an administrator to run CREATE EXTENSION vector") from None
        cur.execute(f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (table_name text PRIMARY KEY, source jsonb NOT NULL, "
                    "column_type text NOT NULL, dim integer NOT NULL, rows_done bigint NOT NULL, "
                    "complete boolean NOT NULL, updated timestamptz NOT NULL DEFAULT now())")
    conn.commit()


def export(source: Any, url: str, table: str, *, column_type: str = "halfvec", batch_size: int = 10_000,
           create_index: bool = True, m: int = 16, ef_construction: int = 64,
           progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Any]:
    """Export an index folder or a complete `tinyhpd embed` folder (``source``) into ``table`` of the database at
    ``url`` (see the module docs). ``progress(done, total)`` is called after every committed batch (default: a
    line on stderr when it is a terminal). Returns a summary."""
    from psycopg import sql

    if column_type not in COMPONENT:
        raise ValueError(f"column type must be one of {', '.join(COMPONENT)}; got {column_type!r}")
    batch_size, m, ef_construction = (positive_int(value, name) for name, value in (
        ("batch_size", batch_size), ("m", m), ("ef_construction", ef_construction)))
    src = open_source(source)
    ident = table_sql(table)
    if progress is None and sys.stderr.isatty():
        progress = _stderr_progress
    started = time.perf_counter()
    conn = connect(url)
    try:
        _ensure_extension(conn)
        done = _start(conn, table, ident, src, column_type)
        copy_sql = sql.SQL("COPY {} (id, embedding) FROM STDIN WITH (FORMAT BINARY)").format(ident)
        for ids, vectors in src.batches(done, batch_size):
            data = encode_rows(ids, vectors, column_type, src.id_type)
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy(copy_sql) as copy:
                        copy.write(HEADER + data + TRAILER)
                    cur.execute(f"UPDATE {PROGRESS_TABLE} SET rows_done = rows_done + %s, updated = now() "
                                "WHERE table_name = %s", (len(ids), table))
            done += len(ids)
            if progress is not None:
                progress(done, src.count)
        loaded = time.perf_counter() - started
        index_name = None
        if create_index:
            index_name = f"{table.split('.')[-1]}_embedding_hnsw"
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding {}) "
                                    "WITH (m = {}, ef_construction = {})").format(
                    sql.Identifier(index_name), ident, sql.SQL(OPCLASS[column_type]), sql.Literal(m),
                    sql.Literal(ef_construction)))
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {PROGRESS_TABLE} SET complete = true, updated = now() WHERE table_name = %s",
                        (table,))
        conn.commit()
    finally:
        conn.close()
    return {"table": table, "rows": done, "dim": src.dim, "column_type": column_type, "id_type": src.id_type,
            "hnsw_index": index_name, "load_seconds": round(loaded, 3),
            "seconds": round(time.perf_counter() - started, 3)}


def _start(conn: Any, table: str, ident: Any, src: Any, column_type: str) -> int:
    """Rows already exported into ``table`` from this very source (0 for a new table, created here)."""
    from psycopg import sql

    with conn.cursor() as cur:
        cur.execute(f"SELECT source, column_type, dim, rows_done, complete FROM {PROGRESS_TABLE} "
                    "WHERE table_name = %s", (table,))
        row = cur.fetchone()
        if row is not None:
            source, have_type, dim, rows_done, _complete = row
            for key, have, want in (("column_type", have_type, column_type), ("dim", dim, src.dim)):
                if have != want:
                    raise ValueError(f"table {table} was exported with {key} {have!r}, now {want!r}; export into "
                                     "another table or drop this one")
            for key, value in src.identity.items():
                if source.get(key) != json.loads(json.dumps(value)):
                    raise ValueError(f"table {table} holds an export of another source ({key} "
                                     f"{source.get(key)!r}, now {value!r}); export into another table or drop it")
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
            present = cur.fetchone()[0]
            if present != rows_done:
                raise ValueError(f"table {table} holds {present} rows but {PROGRESS_TABLE} records {rows_done}: it was "
                                 "changed outside the export; drop it and export again")
            conn.commit()
            return int(rows_done)
        cur.execute("SELECT to_regclass(%s)", (table,))
        if cur.fetchone()[0] is not None:
            raise ValueError(f"table {table} exists and was not created by tinyhpd export; choose another name")
        cur.execute(sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, embedding {}({}) NOT NULL)").format(
            ident, sql.SQL(src.id_type), sql.SQL(column_type), sql.Literal(src.dim)))
        cur.execute(f"INSERT INTO {PROGRESS_TABLE} (table_name, source, column_type, dim, rows_done, complete) "
                    "VALUES (%s, %s, %s, %s, 0, false)", (table, json.dumps(src.identity), column_type, src.dim))
    conn.commit()
    return 0


def _stderr_progress(done: int, total: int) -> None:
    print(f"\rexport: {done:,}/{total:,} rows", end="\n" if done >= total else "", file=sys.stderr, flush=True)
