"""Model resolution: local folders, the pinned Hub default, the Hugging Face cache, offline mode, clear errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinyhpd
from helpers import REPO
from tinyhpd.hub import HPD_HUB_MODEL, HPD_HUB_REVISION, choose_files, default_model


def test_choose_files_prefers_safetensors_and_skips_exports():
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "onnx/model.onnx",
             "onnx/config.json", "openvino/openvino_model.xml", "1_Pooling/config.json", "2_Dense/config.json",
             "2_Dense/pytorch_model.bin", "modules.json", "tokenizer.json", "vocab.txt", "README.md",
             "sentence_bert_config.json"]
    assert choose_files(files) == ["1_Pooling/config.json", "2_Dense/config.json", "2_Dense/pytorch_model.bin",
                                   "config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
                                   "tokenizer.json", "vocab.txt"]


def _fake_hub_cache(cache, model_folder, repo_id=HPD_HUB_MODEL, revision=HPD_HUB_REVISION):
    """The Hugging Face cache layout (models--org--name/snapshots/<commit>, refs/main) holding a model folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo


def test_pinned_hub_model_loads_from_the_cache_offline(hpd_old_path, tmp_path):
    _fake_hub_cache(tmp_path, hpd_old_path)
    model = tinyhpd.load(HPD_HUB_MODEL, cache_dir=tmp_path, local_files_only=True)
    assert model.name_or_path == HPD_HUB_MODEL and model.revision == HPD_HUB_REVISION
    assert HPD_HUB_REVISION[:12] in repr(model)
    np.testing.assert_array_equal(model.encode(["a b"]), tinyhpd.load(hpd_old_path).encode(["a b"]))


def test_offline_with_an_empty_cache_says_how_to_use_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        tinyhpd.load(HPD_HUB_MODEL, cache_dir=tmp_path, local_files_only=True)
    msg = str(err.value)
    assert HPD_HUB_MODEL in msg and "TINYHPD_MODEL" in msg and "model=PATH" in msg


def test_unreachable_hub_with_empty_cache_is_one_clear_error(tmp_path):
    # No network here: the Hub call fails fast, and nothing is cached.
    with pytest.raises(FileNotFoundError, match="TINYHPD_MODEL"):
        tinyhpd.load("someone/some-model", cache_dir=tmp_path, local_files_only=False)


def test_hf_hub_cache_and_offline_variables_are_honoured(hpd_old_path, tmp_path):
    _fake_hub_cache(tmp_path / "hub", hpd_old_path)
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("TINYHPD_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "tinyhpd", "encode", "--model", HPD_HUB_MODEL, "hello"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_tinyhpd_model_variable_sets_the_default(hpd_new_path, monkeypatch):
    monkeypatch.setenv("TINYHPD_MODEL", str(hpd_new_path))
    assert default_model() == str(hpd_new_path)
    assert tinyhpd.load().name_or_path == str(hpd_new_path)


def test_without_bundled_model_or_variable_loading_is_an_error_never_another_model(monkeypatch, tmp_path):
    import tinyhpd.hub as hub

    monkeypatch.delenv("TINYHPD_MODEL", raising=False)
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="bundled default model") as err:
        tinyhpd.load()
    assert HPD_HUB_MODEL in str(err.value) and "TINYHPD_MODEL" in str(err.value)


def test_the_published_hpd_model_is_pinned_when_named():
    import tinyhpd.hub as hub

    assert hub.PINNED_REVISIONS[HPD_HUB_MODEL] == HPD_HUB_REVISION


def test_a_file_is_not_a_model(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        tinyhpd.load(path)


def test_import_is_light():
    code = ("import sys, tinyhpd; heavy = [m for m in ('torch', 'huggingface_hub', 'transformers', 'tqdm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
