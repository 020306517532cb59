"""Speed and memory of tinyhpd alone (the measuring behind `python -m tinyhpd bench`), with NumPy and the standard library only.

One run measures, for one model and one thread count, on real sentences (the first N unique sentences of the STS-B test
split when `../shared` is found, else `--data FILE`, else a deterministic synthetic set; the JSON says which):

throughput   sentences/s of `model.encode(sentences, batch_size=b)` for b in 1, 32, 128: median of `repeats` timed
             runs after one warm-up run on a slice of the sentences
latency      per-sentence `model.encode(s)` calls (batch 1) on sentences evenly spaced over the set: p50, p95 in ms
long docs    documents of `max_seq_length` tokens (consecutive sentences joined until the tokenizer truncates): docs/s
cold start   a fresh `python -c` process that imports tinyhpd, loads the model and encodes one sentence: wall time seen
             by the parent (interpreter start-up included) and the child's peak RSS (VmHWM from /proc/self/status)
FLOPs        work counted from the config and the real token counts (see `encoder_flops`), achieved GFLOP/s at each
             batch size, and its fraction of NumPy's float32 matrix-product rate (an n x n @ n x n product timed with
             the same BLAS thread count)

`bench/bench_engines.py` (in the repository) reuses these functions to put sentence-transformers on PyTorch and ONNX
Runtime beside tinyhpd. Timings mean little while other processes load the CPU: the load average is recorded.
Run with `OPENBLAS_CORETYPE` unset unless you want a specific OpenBLAS kernel; a warning is printed when it is set.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "find_stsb", "read_sentences", "synthetic_sentences", "bench_sentences", "long_documents", "encoder_flops",
    "head_flops", "matmul_gflops", "set_blas_threads", "throughput", "latency", "latency_sample", "measure_engine",
    "child_script",
    "cold_start", "machine_info", "openblas_env_warning", "run_bench", "format_report", 
]

STSB_TEST = Path("data") / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
DEFAULT_BATCH_SIZES = (1, 32, 128)


# ------------------------------------------------------------------------------------------------ data


def find_stsb() -> Optional[Path]:
    """The STS-B test file under `$TINYHPD_SHARED`, `./../shared` or the repository's `../shared`, if any."""
    roots = []
    if os.environ.get("TINYHPD_SHARED"):
        roots.append(Path(os.environ["TINYHPD_SHARED"]))
    roots += [Path.cwd().parent / "shared", Path(__file__).resolve().parents[2] / "shared"]
    for root in roots:
        if (root / STSB_TEST).is_file():
            return root / STSB_TEST
    return None


def read_sentences(path: Path, limit: Optional[int] = None) -> List[str]:
    """Unique non-empty sentences in file order: an STS-B style .csv (tab-separated, sentences in columns 6 and 7) or a
    text file with one sentence per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sentence file not found")
    seen: Dict[str, None] = {}
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".csv":
            items = (s for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) for s in row[5:7])
        else:
            items = (line.rstrip("\n") for line in f)
        for s in items:
            if s.strip():
                seen.setdefault(s, None)
                if limit is not None and len(seen) >= limit:
                    break
    if not seen:
        raise ValueError(f"{path}: no sentences found")
    return list(seen)


_WORDS = ("a man woman child dog cat is are was plays playing rides riding on in the a of with and to at by near over "
          "under small large red blue green guitar piano horse bike street park river kitchen market city people two "
          "three group running walking eating talking cutting slicing onion tomato water ball field beach snow").split()


def synthetic_sentences(n: int, seed: int = 0) -> List[str]:
    """`n` distinct deterministic pseudo-sentences of 6 to 20 words (for machines without the STS-B data)."""
    rng = np.random.default_rng(seed)
    out: Dict[str, None] = {}
    while len(out) < n:
        words = rng.choice(_WORDS, size=int(rng.integers(6, 21)))
        out.setdefault(" ".join(words).capitalize() + ".", None)
    return list(out)


def bench_sentences(n: int, data: Optional[Path] = None) -> Tuple[List[str], str]:
    """The benchmark sentences and a description of where they come from."""
    if data is not None:
        sentences = read_sentences(Path(data), n)
        return sentences, f"{Path(data).resolve()} (first {len(sentences)} unique sentences)"
    stsb = find_stsb()
    if stsb is not None:
        sentences = read_sentences(stsb, n)
        return sentences, f"{stsb.resolve()} (first {len(sentences)} unique sentences)"
    return synthetic_sentences(n), f"synthetic ({n} deterministic pseudo-sentences; STS-B test not found)"


def long_documents(sentences: Sequence[str], count_tokens: Callable[[Sequence[str]], List[int]], max_tokens: int,
                   n_docs: int) -> List[str]:
    """`n_docs` documents that the tokenizer truncates at `max_tokens`: consecutive sentences (cycling through the list)
    joined with spaces until their tokens, [CLS] and [SEP] included, exceed `max_tokens`.

    `count_tokens(texts)` returns each text's token count with special tokens (truncated counts are fine for the
    short sentences; the finished documents are checked to reach `max_tokens`)."""
    if not sentences:
        raise ValueError("long_documents needs at least one sentence")
    content = [max(0, n - 2) for n in count_tokens(sentences)]  # without [CLS]/[SEP]
    if sum(content) == 0:
        raise ValueError("the sentences contain no tokens")
    docs, i = [], 0
    for _ in range(n_docs):
        parts, total = [], 0
        while total + 2 <= max_tokens:  # stop once the text no longer fits: the tokenizer truncates it
            parts.append(sentences[i % len(sentences)])
            total += content[i % len(sentences)]
            i += 1
        docs.append(" ".join(parts))
    lengths = count_tokens(docs)
    if docs and min(lengths) < max_tokens:
        raise RuntimeError(f"document token counts {min(lengths)}..{max(lengths)} do not reach {max_tokens}: "
                           "the tokenizer does not split joined sentences as it splits them one by one")
    return docs


# ------------------------------------------------------------------------------------------------ FLOPs


def encoder_flops(lengths: Sequence[int], hidden: int, layers: int, intermediate: int) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of a BERT encoder's matrix products on sequences of `lengths` tokens.

    Per token and layer: fused Q|K|V 2*H*3H, attention output 2*H*H, feed-forward 2*2*H*I; per sequence of L tokens and
    layer: attention scores and context 2*2*L*L*H. Not counted: embeddings, LayerNorm, GELU, softmax, biases,
    pooling."""
    lens = np.asarray(lengths, dtype=np.float64)
    dense = 2.0 * hidden * 3 * hidden + 2.0 * hidden * hidden + 2.0 * 2 * hidden * intermediate
    return float(layers * (dense * lens.sum() + 4.0 * hidden * (lens * lens).sum()))


def head_flops(n_sentences: int, dense_dims: Sequence[Tuple[int, int]]) -> float:
    """FLOPs of the Dense heads (2*in*out per sentence each)."""
    return float(n_sentences * sum(2.0 * i * o for i, o in dense_dims))


_LIMITERS: List[Any] = []  # keeps threadpoolctl limits alive for the life of the process


def set_blas_threads(n: int) -> Optional[str]:
    """Set NumPy's BLAS thread count (threadpoolctl when installed, else tinyhpd's own OpenBLAS handle); returns how,
    or None when neither can steer the BLAS."""
    try:
        from threadpoolctl import threadpool_limits

        _LIMITERS.append(threadpool_limits(limits=n, user_api="blas"))
        return "threadpoolctl"
    except ImportError:
        pass
    from tinyhpd import _threads

    blas = _threads.blas_handle()
    if not blas:
        return None
    blas[1](n)
    return "openblas_set_num_threads"


def matmul_gflops(n: int = 2048, repeats: int = 5, seed: int = 0) -> Dict[str, float]:
    """NumPy float32 `[n, n] @ [n, n]` rate in GFLOP/s (2 n^3 FLOPs): median and best of `repeats` after a warm-up."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    return {"n": n, "gflops": flop / float(np.median(times)) / 1e9, "gflops_best": flop / min(times) / 1e9,
            "repeats": len(times)}


# ------------------------------------------------------------------------------------------------ timing


def throughput(encode: Callable[[List[str], int], Any], texts: List[str], batch_size: int, repeats: int,
               warmup: Optional[int] = None) -> Dict[str, Any]:
    """Items/s of `encode(texts, batch_size)`: one warm-up call on the first `warmup` texts (default 2 batches, at
    least 64), then the median of `repeats` timed calls on all texts."""
    n_warm = min(len(texts), warmup if warmup is not None else max(2 * batch_size, 64))
    encode(texts[:n_warm], batch_size)
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        encode(texts, batch_size)
        runs.append(time.perf_counter() - t0)
    seconds = float(np.median(runs))
    return {"batch_size": batch_size, "n": len(texts), "seconds": seconds, "per_s": len(texts) / seconds,
            "runs_s": runs}


def latency(encode_one: Callable[[str], Any], texts: Sequence[str], warmup: int = 10) -> Dict[str, Any]:
    """Milliseconds per single-sentence call over `texts` (after `warmup` untimed calls): p50, p95, mean."""
    for s in texts[:warmup]:
        encode_one(s)
    ms = []
    for s in texts:
        t0 = time.perf_counter()
        encode_one(s)
        ms.append((time.perf_counter() - t0) * 1e3)
    p50, p95 = np.percentile(ms, [50, 95])
    return {"n": len(ms), "p50_ms": float(p50), "p95_ms": float(p95), "mean_ms": float(np.mean(ms))}


def latency_sample(sentences: Sequence[str], n: int) -> List[str]:
    """`n` sentences evenly spaced over the list (its length mix, not just its first, often shorter, sentences)."""
    if n >= len(sentences):
        return list(sentences)
    return [sentences[i] for i in np.linspace(0, len(sentences) - 1, n).round().astype(int)]


def measure_engine(encode: Callable[[List[str], int], Any], encode_one: Callable[[str], Any], sentences: List[str],
                   docs: List[str], *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, repeats: int = 3,
                   latency_n: int = 300, doc_batch: int = 8, log: Callable[[str], None] = lambda m: None
                   ) -> Dict[str, Any]:
    """Throughput at each batch size, batch-1 latency and long-document throughput of one engine."""
    out: Dict[str, Any] = {"throughput": {}}
    for b in batch_sizes:
        r = throughput(encode, sentences, b, repeats)
        out["throughput"][str(b)] = r
        log(f"  batch {b}: {r['per_s']:.1f} sentences/s")
    out["latency"] = latency(encode_one, latency_sample(sentences, latency_n))
    log(f"  latency: p50 {out['latency']['p50_ms']:.2f} ms, p95 {out['latency']['p95_ms']:.2f} ms")
    if docs:
        r = throughput(encode, docs, doc_batch, repeats, warmup=min(len(docs), doc_batch))
        out["long_docs"] = r
        log(f"  long docs: {r['per_s']:.2f} docs/s")
    return out


# ------------------------------------------------------------------------------------------------ cold start


def child_script(imports: str, load: str, first_encode: str) -> str:
    """Python source for a cold-start child: times its import, load and first-encode phases (each a statement block
    at module level) and prints one JSON line with them and its VmHWM."""
    def block(code: str) -> str:
        return "\n".join(line for line in code.strip().splitlines())

    return "\n".join([
        "import time as _t",
        "_t0 = _t.perf_counter()",
        block(imports),
        "_t1 = _t.perf_counter()",
        block(load),
        "_t2 = _t.perf_counter()",
        block(first_encode),
        "_t3 = _t.perf_counter()",
        "import json as _j",
        "_hwm = None",
        "try:",
        "    _hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))",
        "except (OSError, StopIteration):",
        "    pass",
        "print(_j.dumps({'import_s': _t1 - _t0, 'load_s': _t2 - _t1, 'first_encode_s': _t3 - _t2, 'vmhwm_kb': _hwm}))",
    ])


def _run_child(code: str, env: Optional[Dict[str, str]], cwd: Optional[str]) -> Dict[str, Any]:
    """Run `python -c code`: wall time seen by the parent, and the child's own peak RSS (its VmHWM at the end).

    Not `ru_maxrss` of the child: Linux carries the parent's high-water mark across fork+exec into it."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"cold-start child failed (exit {proc.returncode}): {' | '.join(tail)}")
    phases = json.loads(proc.stdout.decode(errors="replace").strip().splitlines()[-1])
    hwm = phases.pop("vmhwm_kb", None)
    return {"wall_s": wall, "peak_rss_mb": None if hwm is None else hwm / 1024.0, **phases}


def cold_start(code: str, repeats: int = 3, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
               warmup: int = 1) -> Dict[str, Any]:
    """Cold start of a fresh process running `code` (from `child_script`): `warmup` untimed runs (page cache), then the
    median over `repeats` runs of each field."""
    for _ in range(warmup):
        _run_child(code, env, cwd)
    runs = [_run_child(code, env, cwd) for _ in range(max(1, repeats))]
    out: Dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = float(np.median(values)) if values else None
    out["repeats"] = len(runs)
    out["runs_wall_s"] = [r["wall_s"] for r in runs]
    return out


# ------------------------------------------------------------------------------------------------ environment


def _cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in text.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _threadpoolctl_info() -> Optional[List[Dict[str, Any]]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: p.get(k) for k in keys if k in p} for p in threadpool_info()]


def machine_info() -> Dict[str, Any]:
    """CPU, load, Python/NumPy versions, OpenBLAS environment and BLAS kernel (threadpoolctl and tinyhpd's view)."""
    from tinyhpd import _threads

    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "TINYHPD_NUM_THREADS")
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "available_cpus": _threads.available_cpus(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "env": {k: os.environ.get(k) for k in env_keys},
        "blas_threadpoolctl": _threadpoolctl_info(),
        "blas_tinyhpd": _threads.blas_info(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def openblas_env_warning() -> Optional[str]:
    """A warning when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (they can pin a slower OpenBLAS kernel)."""
    bad = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k)]
    if not bad:
        return None
    return ("warning: " + ", ".join(f"{k}={os.environ[k]}" for k in bad) + " is set: OpenBLAS may use a slower kernel; "
            "for comparable numbers run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`")


# ------------------------------------------------------------------------------------------------ tinyhpd run


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _child_env() -> Dict[str, str]:
    """The current environment with this tinyhpd first on PYTHONPATH (so the child imports the same package)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def tinyhpd_cold_start_code(model: str, threads: int, sentence: str) -> str:
    return child_script("import tinyhpd", f"m = tinyhpd.load({model!r}, num_threads={threads})",
                        f"m.encode({sentence!r})")


def model_info(model: Any) -> Dict[str, Any]:
    """Name, fingerprint, architecture and head dimensions of a loaded tinyhpd model."""
    c = model.config
    dense = [(h.config.in_features, h.config.out_features) for h in model._heads if h.kind == "Dense"]
    return {"name_or_path": model.name_or_path, "revision": model.revision, "fingerprint": model.fingerprint,
            "architecture": {"hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
                             "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
                             "max_position_embeddings": c.max_position_embeddings},
            "dense": dense, "max_seq_length": model.max_seq_length, "embedding_dim": model.embedding_dim,
            "repr": repr(model)}


def flops_summary(info: Dict[str, Any], sentence_lengths: Sequence[int], doc_lengths: Sequence[int]) -> Dict[str, Any]:
    """Counted FLOPs of the sentence set and of the document set (encoder matrix products + Dense heads)."""
    a = info["architecture"]

    def total(lengths: Sequence[int]) -> float:
        return (encoder_flops(lengths, a["hidden_size"], a["num_hidden_layers"], a["intermediate_size"])
                + head_flops(len(lengths), info["dense"]))

    n_tok = int(np.sum(sentence_lengths)) if len(sentence_lengths) else 0
    s_total = total(sentence_lengths)
    return {
        "counted": "encoder matrix products (per token and layer 2*H*3H + 2*H*H + 2*2*H*I; per sequence of L "
                   "tokens and layer 2*2*L*L*H for attention) + Dense heads 2*in*out per sentence; not embeddings, "
                   "LayerNorm, GELU, softmax, biases or pooling; real token counts (no padding)",
        "sentences": {"n": len(sentence_lengths), "tokens": n_tok,
                      "mean_tokens": n_tok / max(1, len(sentence_lengths)), "gflop": s_total / 1e9,
                      "mflop_per_sentence": s_total / max(1, len(sentence_lengths)) / 1e6,
                      "mflop_per_token": s_total / max(1, n_tok) / 1e6},
        "docs": {"n": len(doc_lengths), "tokens": int(np.sum(doc_lengths)) if len(doc_lengths) else 0,
                 "gflop": total(doc_lengths) / 1e9 if len(doc_lengths) else 0.0},
    }


def achieved_gflops(engine: Dict[str, Any], flops: Dict[str, Any]) -> Dict[str, float]:
    """Counted GFLOP / median seconds for each measured batch size ("batch_<b>") and for the long documents."""
    out = {f"batch_{b}": flops["sentences"]["gflop"] / r["seconds"] for b, r in engine["throughput"].items()}
    if "long_docs" in engine and flops["docs"]["n"]:
        out["docs"] = flops["docs"]["gflop"] / engine["long_docs"]["seconds"]
    return out


def run_bench(model_name: Optional[str], *, n_sentences: int = 2000, threads: Optional[int] = None, repeats: int = 3,
              latency_n: int = 300, n_docs: int = 32, doc_batch: int = 8, gemm_size: int = 2048,
              cold_repeats: int = 3, data: Optional[Path] = None,
              batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, command: str = "",
              log: Callable[[str], None] = log_stderr) -> Dict[str, Any]:
    """The whole tinyhpd-only benchmark; returns the JSON-ready result (see the module docstring)."""
    import tinyhpd
    from tinyhpd._threads import default_num_threads

    threads = default_num_threads() if threads is None else threads
    blas_control = set_blas_threads(threads)
    model = tinyhpd.load(model_name, num_threads=threads)
    info = model_info(model)
    sentences, source = bench_sentences(n_sentences, data)

    def count(texts: Sequence[str]) -> List[int]:
        return [len(x) for x in model.tokenize(list(texts))]

    docs = long_documents(sentences, count, model.max_seq_length, n_docs) if n_docs > 0 else []
    sentence_lengths, doc_lengths = count(sentences), count(docs) if docs else []
    log(f"tinyhpd bench: {info['repr']}, {threads} threads, {len(sentences)} sentences, {len(docs)} docs")
    machine = machine_info()

    def encode(texts: List[str], b: int) -> Any:
        return model.encode(texts, batch_size=b)

    engine = measure_engine(encode, model.encode, sentences, docs, batch_sizes=batch_sizes, repeats=repeats,
                            latency_n=latency_n, doc_batch=doc_batch, log=log)
    engine["cold_start"] = cold_start(tinyhpd_cold_start_code(str(model.folder), threads, sentences[0]),
                                      cold_repeats, env=_child_env())
    log(f"  cold start: {engine['cold_start']['wall_s']:.2f} s, peak RSS {engine['cold_start']['peak_rss_mb']:.0f} MB")
    flops = flops_summary(info, sentence_lengths, doc_lengths)
    gemm = matmul_gflops(gemm_size)
    gemm["threads"] = threads
    flops["sgemm"] = gemm
    flops["achieved_gflops"] = engine["gflops"] = achieved_gflops(engine, flops)
    flops["fraction_of_sgemm"] = {k: v / gemm["gflops"] for k, v in flops["achieved_gflops"].items()}
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "tool": "tinyhpd bench",
        "command": command,
        "machine": machine,
        "threads": {"n": threads, "tinyhpd_num_threads": threads, "numpy_blas": threads,
                    "blas_control": blas_control},
        "model": info,
        "data": {"sentences_source": source, "n_sentences": len(sentences),
                 "mean_tokens": float(np.mean(sentence_lengths)) if sentence_lengths else 0.0,
                 "n_docs": len(docs), "doc_tokens": max(doc_lengths) if doc_lengths else 0, "doc_batch": doc_batch},
        "settings": {"repeats": repeats, "latency_n": min(latency_n, len(sentences)), "batch_sizes": list(batch_sizes),
                     "cold_repeats": cold_repeats},
        "engines": {"tinyhpd": engine},
        "flops": flops,
    }


# ------------------------------------------------------------------------------------------------ report


def _fmt(v: Optional[float]) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 0.01 or v == 0:
        return f"{v:.2f}"
    return f"{v:.1e}"


def _get(d: Any, *keys: Any) -> Optional[float]:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d if isinstance(d, (int, float)) else None


def report_rows(result: Dict[str, Any]) -> List[Tuple[str, Callable[[Dict[str, Any]], Optional[float]]]]:
    """(label, getter) of each table row; a getter takes one engine's result."""
    rows: List[Tuple[str, Callable[[Dict[str, Any]], Optional[float]]]] = []
    for b in result["settings"]["batch_sizes"]:
        rows.append((f"throughput batch {b} (sentences/s)", lambda e, b=b: _get(e, "throughput", str(b), "per_s")))
    rows += [("latency batch 1 p50 (ms)", lambda e: _get(e, "latency", "p50_ms")),
             ("latency batch 1 p95 (ms)", lambda e: _get(e, "latency", "p95_ms"))]
    data = result["data"]
    if data.get("n_docs"):
        rows.append((f"long docs {data['doc_tokens']} tokens, batch {data['doc_batch']} (docs/s)",
                     lambda e: _get(e, "long_docs", "per_s")))
    rows += [("cold start: import+load+1st encode, wall (s)", lambda e: _get(e, "cold_start", "wall_s")),
             ("cold start peak RSS (MB)", lambda e: _get(e, "cold_start", "peak_rss_mb"))]
    big = max(result["settings"]["batch_sizes"])
    rows.append((f"GFLOP/s at batch {big} (counted work / time)", lambda e, big=big: _get(e, "gflops", f"batch_{big}")))
    if any("parity_max_abs_diff" in e for e in result["engines"].values()):
        rows.append(("max |embedding - tinyhpd|", lambda e: _get(e, "parity_max_abs_diff")))
    return rows


def blas_line(machine: Dict[str, Any]) -> str:
    parts = []
    for p in machine.get("blas_threadpoolctl") or []:
        parts.append(f"{p.get('internal_api')} {p.get('version') or ''} {p.get('architecture') or ''} "
                     f"threads={p.get('num_threads')} ({Path(str(p.get('filepath', ''))).name})".replace("  ", " "))
    tl = "; ".join(parts) if parts else "threadpoolctl not installed"
    b = machine.get("blas_tinyhpd") or {}
    return f"threadpoolctl: {tl}\n  tinyhpd blas_info(): kernel={b.get('kernel')} threads={b.get('threads')}"


def format_report(result: Dict[str, Any]) -> str:
    """The side-by-side table (one column per engine, then tinyhpd/peer ratios) with its header and FLOP notes."""
    m = result["machine"]
    engines = list(result["engines"])
    peers = [e for e in engines if e != "tinyhpd"] if "tinyhpd" in engines else []
    env = m.get("env", {})
    load = m.get("loadavg")
    load_end = m.get("loadavg_end")
    lines = [
        f"{result['tool']} - {m.get('time_utc')} UTC",
        f"machine: {m.get('cpu')}, {m.get('cpu_count')} CPUs ({m.get('available_cpus')} usable), "
        f"Python {m.get('python')}, NumPy {m.get('numpy')}",
        "load average (1/5/15 min) at start: " + ("/".join(f"{x:.2f}" for x in load) if load else "?")
        + ("   at end: " + "/".join(f"{x:.2f}" for x in load_end) if load_end else ""),
        f"BLAS: {blas_line(m)}",
        f"env: OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE') or 'unset'} "
        f"OPENBLAS_L2_SIZE={env.get('OPENBLAS_L2_SIZE') or 'unset'}",
        f"threads: {result['threads'].get('description', result['threads']['n'])}",
        f"command: {result.get('command') or '?'}",
        f"model: {result['model']['repr']}  fingerprint {result['model']['fingerprint'][:16]}",
    ]
    if result["model"].get("note"):
        lines.append(f"  note: {result['model']['note']}")
    d = result["data"]
    lines.append(f"data: {d['n_sentences']} sentences, mean {d['mean_tokens']:.1f} tokens ([CLS]/[SEP] included), "
                 f"from {d['sentences_source']}")
    if d.get("n_docs"):
        lines.append(f"      {d['n_docs']} documents of {d['doc_tokens']} tokens "
                     "(STS sentences joined until truncation)")
    s = result["settings"]
    lines.append(f"timing: median of {s['repeats']} runs after a warm-up; latency over {s['latency_n']} "
                 f"single-sentence calls (evenly spaced sentences); cold start median of {s['cold_repeats']} fresh "
                 "processes after 1 untimed")
    lines.append("")
    rows = report_rows(result)
    label_w = max(len(r[0]) for r in rows) + 2
    cols = engines + [f"tinyhpd/{p}" for p in peers]
    col_w = max(12, max(len(c) for c in cols) + 2)
    lines.append("".ljust(label_w) + "".join(c.rjust(col_w) for c in cols))
    for label, get in rows:
        vals = [get(result["engines"][e]) for e in engines]
        cells = [_fmt(v) for v in vals]
        t = vals[engines.index("tinyhpd")] if "tinyhpd" in engines else None
        for p in peers:
            v = get(result["engines"][p])
            ratio = t / v if t is not None and v else None
            cells.append("-" if ratio is None or label.startswith("max |") else f"{ratio:.2f}x")
        lines.append(label.ljust(label_w) + "".join(c.rjust(col_w) for c in cells))
    f = result["flops"]
    lines.append("")
    lines.append(f"FLOPs counted: {f['counted']}")
    lines.append(f"  sentences: {f['sentences']['mflop_per_sentence']:.1f} MFLOP/sentence, "
                 f"{f['sentences']['mflop_per_token']:.2f} MFLOP/token, {f['sentences']['gflop']:.1f} GFLOP in all")
    g = f["sgemm"]
    lines.append(f"  NumPy float32 matmul {g['n']}x{g['n']} @ {g['n']}x{g['n']}, {g['threads']} threads: "
                 f"{g['gflops']:.0f} GFLOP/s (best {g['gflops_best']:.0f})")
    ach = ", ".join(f"{k.replace('_', ' ')} {v:.0f} ({100 * f['fraction_of_sgemm'][k]:.0f}%)"
                    for k, v in f["achieved_gflops"].items())
    lines.append(f"  tinyhpd achieved GFLOP/s (% of matmul rate): {ach}")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
