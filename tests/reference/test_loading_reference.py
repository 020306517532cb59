"""Loading checked against the PyTorch stack: torch.load, HF tokenizers from vocab.txt, pooling modes and Dense activations of sentence-transformers."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
import numpy as np
import pytest
import tinyhpd
from helpers import HPD_ARCH, need as _need
from tinyhpd.checkpoints import read_torch_zip

SENTS = ["A man is playing a guitar.", "", "Crème brûlée 🍕", "A woman slices an onion on the cutting board."]


def _copy(src: Path, tmp_path: Path, name: str = "m") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_torch_zip_reader_matches_torch_load_for_every_dtype(tmp_path):
    torch = _need("torch")
    state = {
        "f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(7), "strided": torch.randn(4, 6)[:, 1:4],  # a non-contiguous view
        "f64": torch.randn(2, dtype=torch.float64),
    }
    torch.save(state, tmp_path / "w.bin")
    ours = read_torch_zip(tmp_path / "w.bin")
    assert set(ours) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(ours[k], v.float().numpy() if k == "bf16" else v.numpy(), err_msg=k)


def test_folder_without_modules_json_is_bert_with_mean_pooling(minilm_path, tmp_path, st_reference):
    folder = tmp_path / "plain"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(minilm_path / name, folder / name)
    model = tinyhpd.load(folder)
    assert repr(model).endswith("embedding_dim=384, max_seq_length=512)") and "Pooling(mean)" in repr(model)
    ref = st_reference(folder).encode(SENTS, convert_to_numpy=True)
    assert np.abs(model.encode(SENTS) - ref).max() <= 1e-5


def test_vocab_txt_tokenizer_matches_tokenizer_json(minilm_path, tmp_path, stsb_test_sentences):
    folder = _copy(minilm_path, tmp_path)
    os.remove(folder / "tokenizer.json")
    texts = stsb_test_sentences[:300] + ["Crème brûlée", "日本語のテキスト", "[CLS] literal [SEP]", "x" * 300]
    ours = tinyhpd.load(folder).tokenize(texts)
    ref = tinyhpd.load(minilm_path).tokenize(texts)
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ["mean", "max"]])
def test_pooling_modes_match_pytorch(hpd_new_path, tmp_path, mode, st_reference):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "1_Pooling" / "config.json", pooling_mode=mode)
    if isinstance(mode, list):  # concatenated pooling doubles the Dense input: test pooling alone
        (folder / "modules.json").write_text(json.dumps(json.loads((folder / "modules.json").read_text())[:2]))
    model = tinyhpd.load(folder)
    if isinstance(mode, list):
        assert model.embedding_dim == 2 * HPD_ARCH["hidden_size"]
    ref = st_reference(folder).encode(SENTS, convert_to_numpy=True)
    assert np.abs(model.encode(SENTS) - ref).max() <= 1e-5


@pytest.mark.parametrize("act", ["linear.Identity", "activation.ReLU", "activation.Sigmoid", "activation.GELU"])
def test_dense_activations_match_pytorch(hpd_new_path, tmp_path, act, st_reference):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "2_Dense" / "config.json", activation_function=f"torch.nn.modules.{act}")
    ref = st_reference(folder).encode(SENTS, convert_to_numpy=True)
    assert np.abs(tinyhpd.load(folder).encode(SENTS) - ref).max() <= 1e-5
