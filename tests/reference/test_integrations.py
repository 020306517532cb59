"""Integrations on real local clusters and frameworks: Ray (`ray.init(num_cpus=2)`), Spark `local[2]`, LangChain and
LlamaIndex. Vectors equal single-process `encode`; no row lost or duplicated. Bounded: a few thousand sentences, and
each cluster is started once per module and stopped at its end. Fail, never skip, when a framework is missing."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

import tiny_models
import tinyhpd
from helpers import REPO, need


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_models.build_new(tmp_path_factory.mktemp("int") / "m", arch=tiny_models.SMALL_ARCH, dense_out=16)


@pytest.fixture(scope="module")
def sentences(stsb_test_sentences):
    return stsb_test_sentences[:2000]


@pytest.fixture(scope="module")
def reference(model_path, sentences):
    return tinyhpd.load(model_path, num_threads=1).encode(sentences, batch_size=256)


def test_import_tinyhpd_imports_no_framework():
    code = ("import sys, tinyhpd; print([m for m in ('ray', 'pyspark', 'langchain_core', 'llama_index') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.strip() == "[]", out.stderr


# ------------------------------------------------------------------------------------------------ LangChain, LlamaIndex
def test_langchain_embeddings(model_path, sentences, reference):
    need("langchain_core")
    from tinyhpd.integrations.langchain import Embeddings

    emb = Embeddings(model_path, normalize_embeddings=False)
    docs = emb.embed_documents(sentences[:50])
    assert isinstance(docs[0], list) and isinstance(docs[0][0], float)
    assert np.abs(np.array(docs) - reference[:50]).max() <= 1e-5
    assert np.abs(np.array(emb.embed_query(sentences[3])) - reference[3]).max() <= 1e-5
    assert np.abs(np.array(asyncio.run(emb.aembed_documents(sentences[:5]))) - reference[:5]).max() <= 1e-5


def test_llama_index_embedding(model_path, sentences, reference):
    need("llama_index.core")
    from tinyhpd.integrations.llama_index import TinyHPDEmbedding

    emb = TinyHPDEmbedding(model_path, normalize_embeddings=False)
    got = emb.get_text_embedding_batch(sentences[:50])
    assert np.abs(np.array(got) - reference[:50]).max() <= 1e-5
    assert np.abs(np.array(asyncio.run(emb.aget_query_embedding(sentences[7]))) - reference[7]).max() <= 1e-5


# ------------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = need("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def test_ray_map_batches_equals_encode(ray_cluster, model_path, sentences, reference):
    ray = ray_cluster
    from tinyhpd.integrations.ray import Embedder

    ds = ray.data.from_items([{"id": i, "text": s} for i, s in enumerate(sentences)])
    out = ds.map_batches(Embedder, fn_constructor_kwargs={"model": str(model_path), "column": "text"},
                         batch_size=256, concurrency=2, num_cpus=1, batch_format="numpy").take_all()
    ids = [r["id"] for r in out]
    assert sorted(ids) == list(range(len(sentences)))  # no row lost or duplicated
    got = np.stack([r["embedding"] for r in sorted(out, key=lambda r: r["id"])])
    assert np.abs(got - reference).max() <= 1e-5


def test_ray_task_with_a_pickled_model_and_a_retry(ray_cluster, model_path, sentences, reference, tmp_path):
    ray = ray_cluster
    marker = tmp_path / "failed_once"

    @ray.remote(max_retries=2, num_cpus=1)
    def embed(model, texts, marker_path):
        import os

        if not os.path.exists(marker_path):
            open(marker_path, "w").close()
            os._exit(1)  # the worker dies once: Ray retries the task
        return model.encode(texts, batch_size=256), model.num_threads

    model = tinyhpd.load(model_path, num_threads=2)
    vecs, threads = ray.get(embed.remote(model, sentences[:300], str(marker)))
    assert marker.exists() and threads == 1  # retried; the actor's one CPU
    assert vecs.shape == (300, reference.shape[1]) and np.abs(vecs - reference[:300]).max() <= 1e-5


# ------------------------------------------------------------------------------------------------ Spark
@pytest.fixture(scope="module")
def spark():
    need("pyspark")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:  # restored however the fixture ends
        mp.setenv("PYSPARK_PYTHON", sys.executable)  # Python workers run this interpreter, not PATH's python3
        session = (SparkSession.builder.master("local[2]").appName("tinyhpd-test")
                   .config("spark.ui.enabled", "false").config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                   .getOrCreate())
        yield session
        session.stop()


def test_spark_pandas_udf_equals_encode(spark, model_path, sentences, reference):
    from tinyhpd.integrations.spark import embed_udf

    df = spark.createDataFrame([(i, s) for i, s in enumerate(sentences)], ["id", "text"]).repartition(4)
    rows = df.select("id", embed_udf(str(model_path))("text").alias("embedding")).collect()
    assert sorted(r["id"] for r in rows) == list(range(len(sentences)))
    got = np.array([r["embedding"] for r in sorted(rows, key=lambda r: r["id"])], dtype=np.float32)
    assert np.abs(got - reference).max() <= 1e-5
