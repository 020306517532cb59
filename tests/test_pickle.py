"""Models travel: pickle carries weights, configs and tokenizer by value; a fresh process in another folder, with the
model folder gone, rebuilds the same model (fingerprint checked) and gives the same vectors."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tiny_models
import tinyhpd
from helpers import REPO

SENTS = ["A man is playing a guitar.", "two dogs run in the park", ""]


@pytest.fixture
def folder(tmp_path):
    return tiny_models.build_new(tmp_path / "m", arch=tiny_models.SMALL_ARCH, dense_out=16)


def test_pickle_round_trip_gives_the_same_vectors_and_fingerprint(folder):
    model = tinyhpd.load(folder, num_threads=1)
    back = pickle.loads(pickle.dumps(model))
    assert back.fingerprint == model.fingerprint and repr(back) == repr(model)
    np.testing.assert_array_equal(back.encode(SENTS), model.encode(SENTS))


def test_the_pickle_holds_data_not_code(folder):
    # Every global the pickle names: tinyhpd's rebuild function and NumPy's array reconstruction, nothing else.
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    import io

    Recorder(io.BytesIO(pickle.dumps(tinyhpd.load(folder)))).load()
    assert ("tinyhpd._pickle", "rebuild_model") in seen
    assert {m.split(".")[0] for m, _ in seen} <= {"tinyhpd", "numpy", "_codecs", "copyreg"}
    assert {(m, n) for m, n in seen if m.startswith("tinyhpd")} == {("tinyhpd._pickle", "rebuild_model")}


def test_unpickling_in_a_fresh_process_after_the_folder_is_gone(folder, tmp_path):
    model = tinyhpd.load(folder, num_threads=1)
    blob = tmp_path / "model.pkl"
    blob.write_bytes(pickle.dumps(model))
    expected = model.encode(SENTS)
    np.save(tmp_path / "expected.npy", expected)
    shutil.rmtree(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import pickle, sys, numpy as np\n"
            f"m = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
            f"e = np.load({str(tmp_path / 'expected.npy')!r})\n"
            f"print(float(np.abs(m.encode({SENTS!r}) - e).max()), m.num_threads)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO), TINYHPD_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    diff, threads = proc.stdout.split()
    assert float(diff) == 0.0 and threads == "1"


def test_a_tampered_pickle_is_refused_by_its_fingerprint(folder):
    from tinyhpd import _pickle

    state = _pickle.model_state(tinyhpd.load(folder))
    state["layers"][0]["ffn_in_b"] = state["layers"][0]["ffn_in_b"] + 1.0
    with pytest.raises(ValueError, match="fingerprint"):
        _pickle.rebuild_model(state)


def test_an_index_holding_a_model_pickles(folder):
    model = tinyhpd.load(folder)
    index = tinyhpd.Index.build(SENTS[:2], model=model, dtype="float32")
    back = pickle.loads(pickle.dumps(index))
    assert back.search("a man playing guitar", top_k=1).ids == index.search("a man playing guitar", top_k=1).ids


def test_the_worker_never_runs_more_threads_than_it_may(folder, monkeypatch):
    blob = pickle.dumps(tinyhpd.load(folder, num_threads=8))
    monkeypatch.setattr("tinyhpd._threads.default_num_threads", lambda: 1)
    assert pickle.loads(blob).num_threads == 1
