"""Parity with PyTorch sentence-transformers: max abs difference <= 1e-5 on real STS-B sentences plus edge cases."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinyhpd
from helpers import EDGE_CASES, REPO

TOL = 1e-5


@pytest.fixture(scope="module")
def sentences(stsb_test_sentences):
    assert len(stsb_test_sentences) >= 500
    return stsb_test_sentences[:600] + EDGE_CASES


def _max_diff(model_path, sentences, st_reference) -> float:
    ours = tinyhpd.load(model_path).encode(sentences, batch_size=64)
    ref = st_reference(model_path).encode(sentences, batch_size=64, convert_to_numpy=True)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    return float(np.abs(ours - ref).max())


def test_real_minilm_matches_pytorch(minilm_path, sentences, st_reference):
    assert _max_diff(minilm_path, sentences, st_reference) <= TOL


def test_hpd_architecture_new_layout_matches_pytorch(hpd_new_path, sentences, st_reference):
    model = tinyhpd.load(hpd_new_path)
    assert model.embedding_dim == 128 and model.config.num_hidden_layers == 4 and model.config.hidden_size == 312
    assert _max_diff(hpd_new_path, sentences, st_reference) <= TOL


def test_hpd_architecture_2022_layout_matches_pytorch(hpd_old_path, sentences, st_reference):
    assert not (hpd_old_path / "model.safetensors").exists()
    assert _max_diff(hpd_old_path, sentences, st_reference) <= TOL


def test_2022_layout_loads_where_torch_cannot_be_imported(hpd_old_path, sentences, st_reference, tmp_path):
    """The pickle path is torch-free: run it in a process where `import torch` raises."""
    out = tmp_path / "vecs.npy"
    inp = tmp_path / "sentences.txt"
    inp.write_text("\n".join(s.replace("\n", " ") for s in sentences[:200]), encoding="utf-8")
    code = textwrap.dedent(f"""
        import sys
        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _NoTorch())
        import numpy as np, tinyhpd
        texts = open({str(inp)!r}, encoding="utf-8").read().split("\\n")
        np.save({str(out)!r}, tinyhpd.load({str(hpd_old_path)!r}).encode(texts))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    texts = inp.read_text(encoding="utf-8").split("\n")
    ref = st_reference(hpd_old_path).encode(texts, convert_to_numpy=True)
    assert np.abs(np.load(out) - ref).max() <= TOL
