"""The producer matrix: one BERT + Pooling + Dense(Tanh) model written by every tool and format users have, each folder
loaded by tinyhpd and by sentence-transformers itself, and compared to 1e-5; `convert` of each gives the same vectors
(and sentence-transformers reads the converted folder too). Versions are pinned in setup.cfg's test extra.

What is not run here: transformers 5 no longer writes `.bin` from `save_pretrained`, so the sharded `.bin` folder is
written the way transformers 4.x did it: huggingface_hub's `split_torch_state_dict_into_shards` (the helper transformers
4.4x called), one `torch.save` per shard, and its `pytorch_model.bin.index.json`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyhpd
from tinyhpd.convert import convert
from conftest import build_hpd_new, build_hpd_old
from helpers import NO_TORCH, REPO, need
from tiny_models import SMALL_ARCH

SENTS = ["A man is playing a guitar.", "", "Crème brûlée 🍕", "A woman slices an onion on the cutting board.",
         "word " * 300, "The quick brown fox jumps over the lazy dog. " * 3]


@pytest.fixture(scope="module")
def base(tmp_path_factory, minilm_path) -> Path:
    """The model, saved by the current sentence-transformers (safetensors): every producer starts from its weights."""
    return build_hpd_new(tmp_path_factory.mktemp("producers") / "base", minilm_path, seed=3, arch=SMALL_ARCH,
                         dense_out=16)


def _bert(base: Path):
    transformers = need("transformers")
    return transformers.BertModel.from_pretrained(str(base)).eval()


def _dense(base: Path):
    need("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Dense

    return Dense.load(str(base / "2_Dense"))


def _without_weights(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    for p in [*dest.glob("model*.safetensors*"), *dest.glob("2_Dense/model.safetensors")]:
        p.unlink()
    return dest


def _torch_save(state, path: Path, legacy: bool = False) -> None:
    torch = need("torch")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


# ------------------------------------------------------------------------------------------------ the producers


def st_save_safetensors(base: Path, dest: Path) -> Path:
    st = need("sentence_transformers")
    st.SentenceTransformer(str(base), device="cpu").save(str(dest))
    assert (dest / "2_Dense" / "model.safetensors").is_file()
    return dest


def st_save_bin(base: Path, dest: Path) -> Path:
    st = need("sentence_transformers")
    st.SentenceTransformer(str(base), device="cpu").save(str(dest), safe_serialization=False)
    assert (dest / "2_Dense" / "pytorch_model.bin").is_file()
    return dest


def sharded_bin(base: Path, dest: Path) -> Path:
    hub = need("huggingface_hub")
    _without_weights(base, dest)
    state = _bert(base).state_dict()
    split = hub.split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin",
                                                   max_shard_size="1MB")
    assert split.is_sharded
    for filename, names in split.filename_to_tensors.items():
        _torch_save({name: state[name] for name in names}, dest / filename)
    (dest / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": split.metadata, "weight_map": split.tensor_to_filename}, indent=2))
    _torch_save(_dense(base).state_dict(), dest / "2_Dense" / "pytorch_model.bin")
    return dest


def sharded_safetensors(base: Path, dest: Path) -> Path:
    _without_weights(base, dest)
    _bert(base).save_pretrained(str(dest), max_shard_size="1MB")
    assert (dest / "model.safetensors.index.json").is_file()
    _torch_save(_dense(base).state_dict(), dest / "2_Dense" / "pytorch_model.bin")
    return dest


def _state_dicts(base: Path, dest: Path, legacy: bool, dtype=None) -> Path:
    _without_weights(base, dest)
    bert, dense = _bert(base), _dense(base)
    if dtype is not None:
        bert, dense = bert.to(dtype), dense.to(dtype)
    state = bert.state_dict()
    assert hasattr(state, "_metadata")  # what 0.2 refused
    _torch_save(state, dest / "pytorch_model.bin", legacy)
    _torch_save(dense.state_dict(), dest / "2_Dense" / "pytorch_model.bin", legacy)
    return dest


def torch_save_zip(base, dest):
    return _state_dicts(base, dest, legacy=False)


def torch_save_legacy(base, dest):
    return _state_dicts(base, dest, legacy=True)


def float16_zip(base, dest):
    return _state_dicts(base, dest, legacy=False, dtype=need("torch").float16)


def float16_legacy(base, dest):
    return _state_dicts(base, dest, legacy=True, dtype=need("torch").float16)


def bfloat16_zip(base, dest):
    return _state_dicts(base, dest, legacy=False, dtype=need("torch").bfloat16)


def bfloat16_legacy(base, dest):
    return _state_dicts(base, dest, legacy=True, dtype=need("torch").bfloat16)


def _shared(base: Path, dest: Path, legacy: bool) -> Path:
    """Two names on one storage (BertForMaskedLM ties its decoder to the word embeddings) and views at offsets
    (each layer's Q, K, V sliced out of one fused matrix, as conversion scripts leave them)."""
    torch, transformers = need("torch"), need("transformers")
    _without_weights(base, dest)
    mlm = transformers.BertForMaskedLM(transformers.BertConfig.from_pretrained(str(base))).eval()
    mlm.bert.load_state_dict(_bert(base).state_dict(), strict=False)
    state = mlm.state_dict()
    assert state["cls.predictions.decoder.weight"].data_ptr() == state["bert.embeddings.word_embeddings.weight"].data_ptr()
    for i in range(SMALL_ARCH["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}.attention.self."
        for part in ("weight", "bias"):
            fused = torch.cat([state[p + f"{n}.{part}"] for n in ("query", "key", "value")]).clone()
            for j, n in enumerate(("query", "key", "value")):
                state[p + f"{n}.{part}"] = fused.narrow(0, j * SMALL_ARCH["hidden_size"], SMALL_ARCH["hidden_size"])
    _torch_save(state, dest / "pytorch_model.bin", legacy)
    _torch_save(_dense(base).state_dict(), dest / "2_Dense" / "pytorch_model.bin", legacy)
    return dest


def shared_storages_zip(base, dest):
    return _shared(base, dest, legacy=False)


def shared_storages_legacy(base, dest):
    return _shared(base, dest, legacy=True)


def hpd_2022_layout(base: Path, dest: Path) -> Path:
    """Laid out exactly like the published Xuandong/HPD-TinyBERT-F128 repository (2022): conftest.build_hpd_old."""
    return build_hpd_old(dest, base)


PRODUCERS = [st_save_safetensors, st_save_bin, sharded_bin, sharded_safetensors, torch_save_zip, torch_save_legacy,
             float16_zip, float16_legacy, bfloat16_zip, bfloat16_legacy, shared_storages_zip, shared_storages_legacy,
             hpd_2022_layout]


@pytest.mark.parametrize("producer", PRODUCERS, ids=[p.__name__ for p in PRODUCERS])
def test_every_producer_loads_and_matches_sentence_transformers(producer, base, tmp_path):
    st = need("sentence_transformers")
    folder = producer(base, tmp_path / producer.__name__)
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(SENTS, convert_to_numpy=True)
    ours = tinyhpd.load(folder).encode(SENTS)
    assert np.abs(ours - ref).max() <= 1e-5

    converted = convert(str(folder), str(tmp_path / "converted"))
    assert not list(converted.rglob("*.bin")) and not list(converted.rglob("*.index.json"))
    np.testing.assert_array_equal(tinyhpd.load(converted).encode(SENTS), ours)
    again = st.SentenceTransformer(str(converted), device="cpu").encode(SENTS, convert_to_numpy=True)
    assert np.abs(again - ref).max() <= 1e-5


def test_a_process_without_torch_loads_torch_save_and_legacy_checkpoints(base, tmp_path):
    folders = [torch_save_zip(base, tmp_path / "zip"), torch_save_legacy(base, tmp_path / "legacy"),
               hpd_2022_layout(base, tmp_path / "hpd")]
    code = NO_TORCH + ("import json, sys, tinyhpd\n"
                        "print(json.dumps([tinyhpd.load(f).encode(json.loads(sys.argv[1])).tolist() "
                        "for f in sys.argv[2:]]))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(SENTS), *map(str, folders)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for folder, vecs in zip(folders, json.loads(proc.stdout)):
        np.testing.assert_array_equal(np.asarray(vecs, dtype=np.float32), tinyhpd.load(folder).encode(SENTS))


def test_the_hpd_sized_2022_layout_matches_sentence_transformers(st_saved_hpd_old_path, st_reference):
    """The full HPD-TinyBERT-F128 architecture (L4 H312, Dense 312 -> 128 Tanh) in the published repository's layout."""
    ref = st_reference(st_saved_hpd_old_path).encode(SENTS, convert_to_numpy=True)
    model = tinyhpd.load(st_saved_hpd_old_path)
    assert model.embedding_dim == 128
    assert np.abs(model.encode(SENTS) - ref).max() <= 1e-5
