"""`python -m tinyhpd bench` (issue 4): the command runs end to end and writes the documented JSON keys.

Timings are never checked (they depend on the machine and its load); only structure, counts and the FLOP formula.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyhpd import cli
from tinyhpd.eval import speed as bench

REPO = Path(__file__).resolve().parents[1]

SENTENCES = [
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "Two dogs run across a snowy field.",
    "The cat sleeps on the warm windowsill.",
    "Children are playing football in the park.",
    "A chef cuts tomatoes in a busy kitchen.",
]


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory, hpd_new_path) -> dict:
    """One tiny run of `python -m tinyhpd bench` in a fresh process; its JSON output."""
    tmp = tmp_path_factory.mktemp("bench")
    data = tmp / "sentences.txt"
    data.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp / "out" / "bench.json"
    cmd = [sys.executable, "-m", "tinyhpd", "bench", "--model", str(hpd_new_path), "--data", str(data),
           "--sentences", "6", "--threads", "1", "--repeats", "1", "--batch-sizes", "1,4", "--latency-sentences", "3",
           "--docs", "1", "--doc-batch", "1", "--gemm-size", "64", "--cold-repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    result["_stdout"] = proc.stdout
    return result


def test_bench_json_top_level_keys(bench_json):
    assert {"tool", "command", "machine", "threads", "model", "data", "settings", "engines", "flops"} <= set(bench_json)


def test_bench_records_machine_and_blas(bench_json):
    m = bench_json["machine"]
    assert {"cpu", "cpu_count", "loadavg", "env", "blas_tinyhpd", "blas_threadpoolctl", "time_utc"} <= set(m)
    assert {"library", "kernel", "threads"} <= set(m["blas_tinyhpd"])
    assert "OPENBLAS_CORETYPE" in m["env"]


def test_bench_records_command_and_threads(bench_json):
    assert "-m tinyhpd bench" in bench_json["command"]
    assert bench_json["threads"]["n"] == 1


def test_bench_uses_the_requested_data(bench_json):
    d = bench_json["data"]
    assert d["n_sentences"] == len(SENTENCES)
    assert "sentences.txt" in d["sentences_source"]
    assert d["n_docs"] == 1


def test_bench_documents_reach_max_seq_length(bench_json):
    assert bench_json["data"]["doc_tokens"] == bench_json["model"]["max_seq_length"]


def test_bench_engine_measurements_present(bench_json):
    e = bench_json["engines"]["tinyhpd"]
    assert set(e["throughput"]) == {"1", "4"}
    assert {"per_s", "seconds", "runs_s", "batch_size"} <= set(e["throughput"]["4"])
    assert {"p50_ms", "p95_ms", "n"} <= set(e["latency"])
    assert e["latency"]["n"] == 3
    assert {"per_s", "seconds"} <= set(e["long_docs"])
    assert {"wall_s", "peak_rss_mb", "import_s", "load_s", "first_encode_s"} <= set(e["cold_start"])


def test_bench_flops_section(bench_json):
    f = bench_json["flops"]
    assert {"counted", "sentences", "docs", "sgemm", "achieved_gflops", "fraction_of_sgemm"} <= set(f)
    assert set(f["achieved_gflops"]) == {"batch_1", "batch_4", "docs"}
    assert f["sgemm"]["n"] == 64 and f["sgemm"]["threads"] == 1


def test_bench_model_identified(bench_json):
    assert len(bench_json["model"]["fingerprint"]) == 64
    assert bench_json["model"]["dense"] == [[312, 128]]


def test_bench_prints_table(bench_json):
    out = bench_json["_stdout"]
    assert "throughput batch 4 (sentences/s)" in out
    assert "command:" in out and "BLAS:" in out


def test_encoder_flops_formula():
    # lengths 3 and 1, H=2, I=4, 2 layers, counted by hand
    per_token = 2 * 2 * 6 + 2 * 2 * 2 + 2 * 2 * 2 * 4  # QKV + output projection + feed-forward
    attention = 4 * 2 * (3 * 3 + 1 * 1)  # 2*2*L*L*H per sequence
    assert bench.encoder_flops([3, 1], hidden=2, layers=2, intermediate=4) == 2 * (per_token * 4 + attention)


def test_long_documents_are_truncated_at_max_tokens():
    def count(texts):  # one token per word, plus [CLS] and [SEP], truncated at 12
        return [min(12, len(t.split()) + 2) for t in texts]

    docs = bench.long_documents(["a b c", "d e", "f g h i"], count, max_tokens=12, n_docs=3)
    assert len(docs) == 3
    assert all(len(d.split()) + 2 > 12 for d in docs)


def test_bench_rejects_nonpositive_sentences(capsys, hpd_new_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--model", str(hpd_new_path), "--sentences", "0"])
    assert exc.value.code == 2
    assert "argument --sentences: must be a positive integer, got 0" in capsys.readouterr().err
