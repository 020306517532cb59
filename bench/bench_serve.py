"""tinyhpd serve vs infinity-emb on the same model folder, one after the other in one run, loopback load only.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_serve.py --infinity /path/to/infinity/venv/bin/infinity_emb

infinity-emb runs from its own venv (`pip install torch==2.13.0` first, then `pip install "infinity-emb[server,torch]"`)
as `infinity_emb v2 --model-id FOLDER --engine torch --device cpu`. The model is a random one with the exact
HPD-TinyBERT-F128 architecture (tests/tiny_models.py), saved in the published 2022 layout, which both servers load. Scenarios: 1, 8, 32, 64 concurrent clients sending one STS-B sentence per request, and 4 clients sending
32 sentences each; every scenario is bounded by a request count and a time limit. Reports req/s, sentences/s, p50 and
p99 latency and the error count per server, and the ratios. Both servers get 2 threads (tinyhpd --threads 2; torch
uses both cores). The load generator (aiohttp) runs in this process on the same 2 cores: the same for both servers.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("TINYHPD_SHARED", REPO.parent / "shared"))


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _sentences(n: int) -> List[str]:
    path = SHARED / "data" / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
    seen: Dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                seen.setdefault(s, None)
    return list(seen)[:n]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, probe: dict) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            if httpx.post(url + "/embeddings", json=probe, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout} s")


async def _scenario(url: str, model: str, sentences: List[str], clients: int, per_request: int, n_requests: int,
                    limit_s: float) -> dict:
    """`clients` coroutines on one aiohttp session (a connection each), `n_requests` in all or `limit_s` seconds."""
    import aiohttp

    lat: List[float] = []
    errors = 0
    counter = iter(range(n_requests))
    t_end = time.perf_counter() + limit_s

    async def client(http):
        nonlocal errors
        for i in counter:
            if time.perf_counter() > t_end:
                return
            batch = [sentences[(i * per_request + j) % len(sentences)] for j in range(per_request)]
            t0 = time.perf_counter()
            try:
                async with http.post(url + "/embeddings", json={"model": model, "input": batch}) as r:
                    body = await r.json()
                    ok = r.status == 200 and len(body["data"]) == per_request
            except (aiohttp.ClientError, ValueError, KeyError):
                ok = False
            lat.append(time.perf_counter() - t0)
            errors += not ok

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as http:
        await asyncio.gather(*(http.post(url + "/embeddings", json={"model": model, "input": sentences[:1]})
                               for _ in range(min(clients, 8))))  # warm connections
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat.sort()
    n = len(lat)
    return {"clients": clients, "per_request": per_request, "requests": n, "errors": errors, "seconds": wall,
            "req_s": n / wall, "sent_s": n * per_request / wall,
            "p50_ms": 1000 * lat[n // 2], "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))]}


SCENARIOS = [(1, 1, 400), (8, 1, 1500), (32, 1, 3000), (64, 1, 3000), (4, 32, 200)]


def run_server(name: str, cmd: List[str], url: str, model: str, sentences: List[str], limit_s: float) -> List[dict]:
    print(f"[{name}] {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_ready(url, proc, 600, {"model": model, "input": ["warm up"]})
        rows = []
        for clients, per, n in SCENARIOS:
            row = asyncio.run(_scenario(url, model, sentences, clients, per, n, limit_s))
            print(f"[{name}] {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})}",
                  file=sys.stderr, flush=True)
            rows.append(row)
        return rows
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--infinity", required=True, help="path of infinity-emb's `infinity_emb` executable (its own venv)")
    ap.add_argument("--model-dir", type=Path, default=Path("bench/out/serve_model"))
    ap.add_argument("--limit-s", type=float, default=40.0, help="time limit per scenario")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import tiny_models
    from threadpoolctl import threadpool_info

    # The published HPD repo's own layout (2022 pickle, 2.x pooling keys): the sentence-transformers that infinity-emb
    # pins reads it (it refuses the current `embedding_dimension` key), and so does tinyhpd.
    folder = args.model_dir.resolve()
    if not (folder / "modules.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        new = tiny_models.build_new(folder.with_name(folder.name + "_new"), arch=tiny_models.HPD_ARCH)
        tiny_models.build_old(folder, new)
    sentences = _sentences(2000)
    results = {}
    port = _port()
    results["tinyhpd"] = run_server(
        "tinyhpd", [sys.executable, "-m", "tinyhpd", "serve", "--model", str(folder), "--port", str(port),
                    "--threads", "2", "--served-model-name", folder.name, "--log-level", "warning",
                    "--max-client-batch-size", "64"],
        f"http://127.0.0.1:{port}", folder.name, sentences, args.limit_s)
    port = _port()
    results["infinity"] = run_server(
        "infinity", [args.infinity, "v2", "--model-id", str(folder), "--engine", "torch", "--device", "cpu",
                     "--port", str(port), "--served-model-name", folder.name],
        f"http://127.0.0.1:{port}", folder.name, sentences, args.limit_s)
    blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in threadpool_info()]
    machine = {"cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count(), "blas": blas,
               "loadavg": os.getloadavg(), "command": shlex.join([sys.executable] + sys.argv)}
    print(f"machine: {json.dumps(machine)}")
    print("| scenario | tinyhpd req/s | infinity req/s | ratio | tinyhpd sent/s | infinity sent/s | tinyhpd p50/p99 ms "
          "| infinity p50/p99 ms | errors t/i |")
    print("|---|---|---|---|---|---|---|---|---|")
    for a, b in zip(results["tinyhpd"], results["infinity"]):
        label = f"{a['clients']} clients x {a['per_request']} sentence(s)"
        print(f"| {label} | {a['req_s']:.0f} | {b['req_s']:.0f} | {a['req_s'] / b['req_s']:.2f}x | {a['sent_s']:.0f} "
              f"| {b['sent_s']:.0f} | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} "
              f"| {a['errors']} / {b['errors']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
