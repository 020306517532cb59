"""`tinyhpd embed`: shards in input order, a manifest, refusal to mix, and resuming after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tiny_models
import tinyhpd
from helpers import REPO
from tinyhpd.cli import main
from tinyhpd.corpus import embed_corpus


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    return tiny_models.build_new(tmp_path_factory.mktemp("corpus") / "m", arch=tiny_models.SMALL_ARCH, dense_out=16)


@pytest.fixture(scope="module")
def small(small_path):
    return tinyhpd.load(small_path)


def _lines(n: int):
    return [f"sentence number {i} about a dog" + " and a cat" * (i % 5) for i in range(n)]


def _read(out):
    shards = sorted(p for p in out.glob("part-*.npy") if not p.name.endswith(".ids.npy"))
    vecs = np.concatenate([np.load(p) for p in shards])
    ids = np.concatenate([np.load(p.with_name(p.stem + ".ids.npy")) for p in shards])
    return vecs, ids


def test_shards_concatenate_to_the_input_embeddings(small, tmp_path):
    lines = _lines(25)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = embed_corpus(src, tmp_path / "out", small, shard_size=10)
    assert manifest["complete"] and manifest["rows"] == 25 and manifest["shards"] == 3
    vecs, ids = _read(tmp_path / "out")
    assert ids.tolist() == list(range(1, 26))
    assert np.abs(vecs - small.encode(lines)).max() <= 1e-5


def test_a_lone_carriage_return_stays_inside_its_line(small, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"one\rstill one\ntwo\r\n")
    assert embed_corpus(src, tmp_path / "out", small, shard_size=10)["rows"] == 2


def test_jsonl_field(small, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"body": t, "n": i}) for i, t in enumerate(_lines(7))) + "\n")
    embed_corpus(src, tmp_path / "out", small, field="body", shard_size=4)
    vecs, ids = _read(tmp_path / "out")
    assert np.abs(vecs - small.encode(_lines(7))).max() <= 1e-5 and ids.tolist() == list(range(1, 8))


def test_jsonl_without_the_field_names_the_line(small, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match="line 2 has no string field 'text'"):
        embed_corpus(src, tmp_path / "out", small)


def test_a_changed_input_is_refused(small, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    embed_corpus(src, tmp_path / "out", small, shard_size=1)
    src.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="another input_size"):
        embed_corpus(src, tmp_path / "out", small, shard_size=1)


def test_another_model_is_refused(small, small_path, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    embed_corpus(src, tmp_path / "out", small)
    other = tinyhpd.load(tiny_models.build_new(tmp_path / "m2", arch=tiny_models.SMALL_ARCH, dense_out=16, seed=5))
    with pytest.raises(ValueError, match="another model|another fingerprint"):
        embed_corpus(src, tmp_path / "out", other)


def test_a_non_empty_folder_without_manifest_is_refused(small, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        embed_corpus(src, tmp_path / "out", small)


def test_cli_embed(small_path, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(_lines(5)) + "\n")
    assert main(["embed", str(src), "--out", str(tmp_path / "out"), "--model", str(small_path),
                 "--shard-size", "2"]) == 0
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["rows"] == 5


def test_sigkill_mid_run_then_rerun_equals_one_shot(small_path, small, tmp_path):
    lines = _lines(3000)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_shot = tmp_path / "one"
    embed_corpus(src, one_shot, tinyhpd.load(small_path, num_threads=1), shard_size=200, batch_size=32)
    cmd = [sys.executable, "-m", "tinyhpd", "embed", str(src), "--out", str(tmp_path / "killed"), "--model",
           str(small_path), "--shard-size", "200", "--threads", "1", "--batch-size", "32"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "killed").glob("part-*.ids.npy"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len([p for p in (tmp_path / "killed").glob("part-*.npy") if not p.name.endswith(".ids.npy")])
    assert 0 < done_before < 15, "the kill should land mid-run"
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    a, ia = _read(one_shot)
    b, ib = _read(tmp_path / "killed")
    assert ia.tolist() == ib.tolist() == list(range(1, 3001))
    np.testing.assert_array_equal(a, b)  # same shards, same batches: bit-equal
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # the rerun removed what the kill left


def test_memory_stays_flat_in_the_input_size(small, tmp_path):
    # The job never holds more than one shard: the reader is a generator and shards are written as they are done.
    import tracemalloc

    def peak(n: int) -> int:
        src = tmp_path / f"in{n}.txt"
        src.write_text("\n".join(_lines(n)) + "\n")
        tracemalloc.start()
        embed_corpus(src, tmp_path / f"out{n}", small, shard_size=100)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small_peak, big_peak = peak(500), peak(4000)
    assert big_peak < 1.5 * small_peak  # 8x the input, about the same peak


def test_a_second_writer_into_the_same_folder_is_refused_naming_the_first(small_path, small, tmp_path):
    """Issue 24: two embed runs into one --out raced (one crashed on the other's temp-file clean-up). Now the writer
    holds out/.lock; the second is refused with the first's pid, and the first finishes whole."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(_lines(3000)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tinyhpd", "embed", str(src), "--out", str(out), "--model", str(small_path),
           "--shard-size", "200", "--threads", "1", "--batch-size", "16"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("part-*.ids.npy")):
            time.sleep(0.02)
        with pytest.raises(ValueError, match=rf"is being written by another embed run \(pid {proc.pid}\)"):
            embed_corpus(src, out, small, shard_size=200)
    finally:
        assert proc.wait(timeout=300) == 0
    assert json.loads((out / "manifest.json").read_text())["rows"] == 3000
    assert embed_corpus(src, out, small, shard_size=200)["complete"]  # the lock is free again


def test_a_failing_disk_is_named_with_its_cause_and_the_job_resumes(small_path, small, tmp_path):
    """Issue 24: a full disk gave '128000 requested and 127968 written', with no path and no cause. A file size limit
    (RLIMIT_FSIZE: EFBIG, as ENOSPC needs a full file system) stands in for it here."""
    import resource

    src = tmp_path / "in.txt"
    src.write_text("\n".join(_lines(600)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tinyhpd", "embed", str(src), "--out", str(out), "--model", str(small_path),
           "--shard-size", "200", "--threads", "1"]

    def limit():  # in the child: files past 8 KiB (a shard is 12.9 KB) fail with EFBIG, not SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 10, 8 << 10))

    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=300, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert f"{out}/part-00000.npy: writing failed: File too large" in proc.stderr
    assert "bytes free on its file system" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.glob(".*.tmp")) and (out / "manifest.json").is_file()
    assert subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          timeout=300).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["rows"] == 600
    assert oct((out / "part-00000.npy").stat().st_mode & 0o777) != oct(0o600)  # a plain file's mode, not mkstemp's


