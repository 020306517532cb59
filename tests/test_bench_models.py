"""bench/bench_models.py: several tinyhpd models side by side (structure and counted quantities, never timings)."""
from __future__ import annotations

import json

import pytest

import tiny_models
from helpers import HPD_ARCH, load_bench


@pytest.fixture(scope="module")
def bench_models():
    return load_bench("bench_models")


def test_round_order_alternates(bench_models):
    assert bench_models.round_orders(2, 4) == [[0, 1], [1, 0], [0, 1], [1, 0]]


def test_two_models_side_by_side(bench_models, hpd_new_path, tmp_path, capsys):
    half = tiny_models.build_new(tmp_path / "half", arch=dict(HPD_ARCH, num_hidden_layers=2))
    data = tmp_path / "sentences.txt"
    data.write_text("A man plays a guitar.\nTwo dogs run in the snow.\nA woman slices an onion.\n", encoding="utf-8")
    out = tmp_path / "models.json"
    rc = bench_models.main([str(hpd_new_path), str(half), "--data", str(data), "--sentences", "3", "--threads", "1",
                            "--rounds", "2", "--repeats", "1", "--batch-sizes", "1,2", "--latency-sentences", "2",
                            "--json-out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    full, cut = result["facts"]
    # half the layers: the encoder's FLOPs per token halve (the Dense head adds a little per sentence to both)
    assert cut["mflop_per_token"] / full["mflop_per_token"] == pytest.approx(0.5, abs=0.02)
    assert cut["params"] < full["params"]
    assert [len(r) for r in result["rounds"]] == [2, 2]
    printed = capsys.readouterr().out
    assert "| encoder+head MFLOP per token |" in printed and "half / hpd_new" in printed
