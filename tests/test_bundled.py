"""The bundled default model in weights/: checksums, shape, and that it is the default (no torch needed)."""
from __future__ import annotations

import hashlib
from pathlib import Path
import pytest


@pytest.fixture(scope="module")
def bundled_dir() -> Path:
    from tinyhpd.hub import BUNDLED_DIR

    if not (BUNDLED_DIR / "modules.json").is_file():
        pytest.fail(f"bundled model missing: {BUNDLED_DIR}")
    return BUNDLED_DIR


def test_bundled_model_checksums_match(bundled_dir):
    lines = (bundled_dir / "SHA256SUMS").read_text().split("\n")
    entries = [ln.split(None, 1) for ln in lines if ln.strip()]
    assert entries, "SHA256SUMS is empty"
    weight_files = {p.relative_to(bundled_dir).as_posix() for p in bundled_dir.rglob("*.safetensors")}
    assert {name.lstrip("*") for _, name in entries} >= weight_files
    for digest, name in entries:
        actual = hashlib.sha256((bundled_dir / name.lstrip("*")).read_bytes()).hexdigest()
        assert actual == digest, name


def test_bundled_model_is_the_4_layer_128d_hpd_student(bundled_dir):
    import tinyhpd

    model = tinyhpd.load(bundled_dir)
    text = repr(model).replace("Tanh", "tanh")
    assert model.embedding_dim == 128
    assert "BERT(L4 H384" in text and "Dense(384->128 tanh)" in text, text


def test_bundled_model_card_and_run_records_ship_with_it(bundled_dir):
    """The model card, the recipe of both training stages and the STS row travel with the weights."""
    import json

    for name in ("README.md", "distill_run.json", "distill_run_stage1.json", "eval_sts.json"):
        assert (bundled_dir / name).is_file(), name
    assert json.loads((bundled_dir / "distill_run.json").read_text())["dense_start"] == "student"


def test_default_model_is_the_bundled_one(bundled_dir, monkeypatch):
    from tinyhpd.hub import default_model

    monkeypatch.delenv("TINYHPD_MODEL", raising=False)
    assert Path(default_model()) == bundled_dir
