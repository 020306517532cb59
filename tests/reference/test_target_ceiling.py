"""bench/target_ceiling.py: the rows it reports keep the identities they rely on (fake teachers, no model runs)."""
from __future__ import annotations


import numpy as np
import pytest

from helpers import load_bench
from tinyhpd.eval.sts import STSTask


@pytest.fixture(scope="module")
def ceiling():
    return load_bench("target_ceiling")


def _fake_teacher(dim: int, salt: int):
    def enc(sentences):
        return np.stack([np.random.default_rng(sum(map(ord, s)) * 31 + salt).normal(size=dim) for s in sentences])
    return enc


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(0)
    s1 = tuple(f"first sentence {i}" for i in range(40))
    s2 = tuple(f"second sentence {i} " + "x" * (i % 5) for i in range(40))
    return STSTask("fake", s1, s2, rng.uniform(0, 5, size=40))


def test_a_full_rank_projection_keeps_the_teachers_score(ceiling, task):
    rows = ceiling.ceiling_rows({"a": _fake_teacher(8, 1)}, task, np.eye(8, dtype=np.float32), dims=[])
    assert rows["targets (8-d projection of the run)"] == pytest.approx(rows["a"], abs=1e-9)


def test_two_copies_of_one_teacher_score_as_the_teacher(ceiling, task):
    enc = _fake_teacher(8, 1)
    rows = ceiling.ceiling_rows({"a": enc, "b": enc}, task, np.eye(16, dtype=np.float32)[:4], dims=[])
    assert rows["ensemble"] == pytest.approx(rows["a"], abs=1e-9)


def test_a_projection_of_another_width_is_refused(ceiling, task):
    with pytest.raises(ValueError, match="16-d"):
        ceiling.ceiling_rows({"a": _fake_teacher(16, 1)}, task, np.eye(8, dtype=np.float32), dims=[])
