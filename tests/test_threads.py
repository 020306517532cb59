"""Thread control: how many CPUs tinyhpd uses, and that BLAS never runs more threads than asked."""
import os

import numpy as np
import pytest

import tinyhpd
from tinyhpd import _threads
from tinyhpd._threads import available_cpus, blas_info, blas_single_threaded, blas_threads_at_most, default_num_threads


@pytest.fixture(scope="module")
def blas_threads():
    info = blas_info()
    assert info["library"] is not None, "NumPy's OpenBLAS could not be found: tinyhpd cannot steer its threads"
    return info["threads"]


def test_env_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("TINYHPD_NUM_THREADS", "3")
    assert default_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_env_variable_is_a_value_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("TINYHPD_NUM_THREADS", value)
    with pytest.raises(ValueError, match="TINYHPD_NUM_THREADS"):
        default_num_threads()


def test_default_is_the_usable_cpus(monkeypatch):
    monkeypatch.delenv("TINYHPD_NUM_THREADS", raising=False)
    assert default_num_threads() == available_cpus() <= len(os.sched_getaffinity(0))


def test_cgroup_quota_caps_the_cpus(monkeypatch):
    monkeypatch.setattr(_threads, "_cgroup_cpu_limit", lambda: 0.5)  # half a CPU: still one thread
    assert available_cpus() == 1
    monkeypatch.setattr(_threads, "_cgroup_cpu_limit", lambda: 1.5)
    assert available_cpus() == min(2, len(os.sched_getaffinity(0)))


def test_blas_cap_applies_the_smallest_and_restores(blas_threads):
    with blas_threads_at_most(blas_threads + 4):
        assert blas_info()["threads"] == blas_threads  # a cap above BLAS's own count changes nothing
        with blas_single_threaded():
            assert blas_info()["threads"] == 1
        assert blas_info()["threads"] == blas_threads
    assert blas_info()["threads"] == blas_threads


def test_blas_cap_is_released_after_an_exception(blas_threads):
    with pytest.raises(RuntimeError):
        with blas_single_threaded():
            raise RuntimeError("boom")
    assert blas_info()["threads"] == blas_threads


def _record_blas_threads(model, monkeypatch):
    seen = []
    forward = model._forward

    def spy(ids):
        seen.append(blas_info()["threads"])
        return forward(ids)

    monkeypatch.setattr(model, "_forward", spy)
    return seen


def test_one_thread_model_runs_blas_on_one_thread(hpd_new_path, monkeypatch, blas_threads):
    model = tinyhpd.load(hpd_new_path, num_threads=1)
    seen = _record_blas_threads(model, monkeypatch)
    model.encode("a man is playing a guitar .")
    model.encode(["a man is playing a guitar ."] * 200, batch_size=128)
    assert seen and set(seen) == {1}
    assert blas_info()["threads"] == blas_threads


def test_parallel_workers_hold_blas_at_one_thread_and_match_one_thread(hpd_new_path, monkeypatch, stsb_test_sentences):
    texts = stsb_test_sentences[:256]
    one = tinyhpd.load(hpd_new_path, num_threads=1).encode(texts, batch_size=128)
    model = tinyhpd.load(hpd_new_path, num_threads=2)
    seen = _record_blas_threads(model, monkeypatch)
    two = model.encode(texts, batch_size=128)
    assert len(seen) >= 4 and set(seen) == {1}  # several pieces per batch, each with BLAS on one thread
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)  # equal up to float32 summation order (pieces differ)


def test_small_batches_run_side_by_side_and_keep_input_order(hpd_new_path, stsb_test_sentences):
    texts = stsb_test_sentences[:60]
    ref = tinyhpd.load(hpd_new_path, num_threads=1).encode(texts, batch_size=7)
    got = tinyhpd.load(hpd_new_path, num_threads=2).encode(texts, batch_size=7)  # 9 batches on 2 workers
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_a_failing_piece_stops_the_call_and_restores_blas(hpd_new_path, monkeypatch, blas_threads):
    model = tinyhpd.load(hpd_new_path, num_threads=2)
    calls = []
    forward = model._forward

    def flaky(ids):
        calls.append(len(ids))
        if len(calls) == 3:
            raise MemoryError("piece 3")
        return forward(ids)

    monkeypatch.setattr(model, "_forward", flaky)
    with pytest.raises(MemoryError, match="piece 3"):
        model.encode(["a man is playing a guitar ."] * 400, batch_size=4)
    assert len(calls) < 100  # the queued pieces were cancelled, not all run
    assert blas_info()["threads"] == blas_threads
