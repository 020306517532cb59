"""STS: the NumPy row equals the PyTorch sentence-transformers row."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from helpers import need as _need
from sts_data import fake_encode, make_senteval

from tinyhpd.eval import sts


def _assert_rows_match(ours: Dict[str, float], ref: Dict[str, float], tol: float = 0.01) -> None:
    diff = {k: abs(ours[k] - ref[k]) for k in ref}
    assert max(diff.values()) <= tol, sts.format_table([("tinyhpd", ours), ("torch", ref)], diff=True)


def _st_encoder(model, batch_size=64):
    return lambda s: model.encode(s, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def _tinyhpd_encoder(path, batch_size=64):
    import tinyhpd

    model = tinyhpd.load(path)
    return lambda s: model.encode(s, batch_size=batch_size)


def test_minilm_numpy_row_equals_torch_row_on_all_seven_sets(shared_dir, minilm_path, st_reference):
    data = shared_dir / "data" / "senteval"
    ref = sts.evaluate(_st_encoder(st_reference(minilm_path)), data)
    ours = sts.evaluate(_tinyhpd_encoder(minilm_path), data)
    assert list(ours) == [*sts.TASKS, "Avg"]
    _assert_rows_match(ours, ref)


def test_hpd_shaped_numpy_row_equals_torch_row_on_stsb_and_sickr(shared_dir, hpd_new_path, st_reference):
    data = shared_dir / "data" / "senteval"
    tasks = ("STSBenchmark", "SICKRelatedness")
    ref = sts.evaluate(_st_encoder(st_reference(hpd_new_path)), data, tasks=tasks)
    ours = sts.evaluate(_tinyhpd_encoder(hpd_new_path), data, tasks=tasks)
    _assert_rows_match(ours, ref)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_on_data_with_ties(seed):
    stats = _need("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=200).astype(float)  # many ties
    y = x + rng.integers(-2, 3, size=200)  # ties too, correlated with x
    assert sts.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).correlation, abs=1e-12)


def test_rankdata_matches_scipy_average_ranks():
    stats = _need("scipy.stats")
    x = np.random.default_rng(1).integers(0, 10, size=300).astype(float)
    np.testing.assert_allclose(sts.rankdata(x), stats.rankdata(x, method="average"))


def test_score_is_spearman_of_float64_cosine_vs_gold(tmp_path):
    task = sts.load_task("SICKRelatedness", make_senteval(tmp_path))
    a = fake_encode(list(task.s1)).astype(np.float64)
    b = fake_encode(list(task.s2)).astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    stats = _need("scipy.stats")
    expected = 100 * stats.spearmanr(cos, task.gold).correlation
    assert sts.score_task(fake_encode, task, chunk_size=5) == pytest.approx(expected, abs=1e-9)
