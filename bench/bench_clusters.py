"""Framework overhead: Ray Data, Spark and Dask against single-process `encode` on the same cores, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_clusters.py [--n 20000]

Same model (a random one with the exact HPD-TinyBERT-F128 architecture, tests/tiny_models.py), the same STS-B/SICK
sentences repeated to --n, 2 cores in all: single process with 2 threads; Ray `ray.init(num_cpus=2)`, map_batches
with 2 actors x 1 CPU; Spark `local[2]` pandas UDF (1 thread per task); Dask `LocalCluster(2 workers x 1 thread)`
map_partitions with a per-worker model. Wall time from a warm cluster (model already loaded on the workers by one
warm-up pass), sentences/s, overhead = 1 - framework rate / single-process rate. Every framework's vectors are
checked against single-process encode (max |diff| printed).
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))


def sentences(n: int):
    seen = {}
    with open(SHARED / "data/senteval/STS/STSBenchmark/sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                seen.setdefault(s, None)
    base = list(seen)
    return [f"{base[i % len(base)]} ({i // len(base)})" for i in range(n)]


@functools.lru_cache(None)
def _dask_model(path: str):
    import tinyhpd

    return tinyhpd.load(path, num_threads=1)


def _installed(pkg: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(pkg)
    except PackageNotFoundError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--model-dir", type=Path, default=REPO / "bench/out/serve_model_new")
    args = ap.parse_args()
    import tiny_models
    import tinyhpd

    folder = args.model_dir
    if not (folder / "modules.json").is_file():
        tiny_models.build_new(folder, arch=tiny_models.HPD_ARCH)
    texts = sentences(args.n)
    rows = {}

    model = tinyhpd.load(folder, num_threads=2)
    model.encode(texts[:512], batch_size=256)
    t = time.perf_counter()
    ref = model.encode(texts, batch_size=256)
    rows["single process, 2 threads"] = (time.perf_counter() - t, 0.0)

    import ray

    from tinyhpd.integrations.ray import Embedder

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"i": i, "text": s} for i, s in enumerate(texts)]).materialize()

    def ray_run(data):
        return data.map_batches(Embedder, fn_constructor_kwargs={"model": str(folder), "column": "text"},
                                batch_size=256, concurrency=2, num_cpus=1, batch_format="numpy").take_all()
    ray_run(ds.limit(1024))
    t = time.perf_counter()
    out = ray_run(ds)
    wall = time.perf_counter() - t
    got = np.stack([r["embedding"] for r in sorted(out, key=lambda r: r["i"])])
    rows["Ray Data, 2 actors x 1 CPU"] = (wall, float(np.abs(got - ref).max()))
    ray.shutdown()

    from pyspark.sql import SparkSession

    from tinyhpd.integrations.spark import embed_udf

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
    df = spark.createDataFrame(list(enumerate(texts)), ["i", "text"]).repartition(8).cache()
    df.count()
    udf = embed_udf(str(folder))
    df.select(udf("text")).limit(1).collect()
    t = time.perf_counter()
    res = df.select("i", udf("text").alias("e")).collect()
    wall = time.perf_counter() - t
    got = np.array([r["e"] for r in sorted(res, key=lambda r: r["i"])], dtype=np.float32)
    rows["Spark local[2], pandas UDF"] = (wall, float(np.abs(got - ref).max()))
    spark.stop()

    try:
        import dask.dataframe as dd
        import pandas as pd
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print("dask not installed: pip install 'dask[dataframe]' distributed", file=sys.stderr)
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            pdf = pd.DataFrame({"i": range(len(texts)), "text": texts})
            ddf = dd.from_pandas(pdf, npartitions=8).persist()
            path = str(folder)

            def part(s):
                return pd.Series(list(_dask_model(path).encode(s.tolist(), batch_size=256)), index=s.index)

            client.run(_dask_model, path)  # warm: the model loaded on each worker
            t = time.perf_counter()
            out = ddf["text"].map_partitions(part, meta=("e", object)).compute()
            wall = time.perf_counter() - t
            got = np.stack(out.sort_index().tolist())
            rows["Dask, 2 workers x 1 thread"] = (wall, float(np.abs(got - ref).max()))

    from importlib.metadata import version

    from tinyhpd.eval.speed import machine_info

    machine = machine_info()
    kernels = [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')} ({b.get('num_threads')} threads "
               "in the driver)" for b in machine["blas_threadpoolctl"] or []]
    base = args.n / rows["single process, 2 threads"][0]
    print(f"{args.n} sentences, model {folder.name} (HPD-TinyBERT-F128 architecture, random weights); "
          f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, load {machine['loadavg']}; BLAS: "
          f"{'; '.join(kernels) or 'unknown'}; OPENBLAS env {machine['env']['OPENBLAS_CORETYPE']!r}/"
          f"{machine['env']['OPENBLAS_L2_SIZE']!r}; one BLAS thread per worker")
    print("versions: " + ", ".join(f"{pkg} {version(pkg)}" for pkg in ("numpy", "ray", "pyspark", "dask", "distributed")
                                  if _installed(pkg)))
    print("| engine | seconds | sentences/s | overhead vs single process | max abs diff |")
    print("|---|---|---|---|---|")
    for name, (wall, diff) in rows.items():
        rate = args.n / wall
        print(f"| {name} | {wall:.2f} | {rate:.0f} | {100 * (1 - rate / base):.1f} % | {diff:.1e} |")
    print(json.dumps({k: {"seconds": v[0], "max_abs_diff": v[1]} for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
