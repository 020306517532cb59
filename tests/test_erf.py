import math

import numpy as np

from tinyhpd.kernels import erf, gelu, gelu_, layer_norm, layer_norm_


def test_erf_max_abs_error_at_most_1e_6():
    x = np.concatenate([np.linspace(-10, 10, 400_001), [0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0]]).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in x])
    assert np.abs(erf(x).astype(np.float64) - ref).max() <= 1e-6


def test_erf_is_odd_and_bounded():
    x = np.linspace(-50, 50, 10_001, dtype=np.float32)
    y = erf(x)
    assert np.array_equal(y, -erf(-x))
    assert np.all(np.abs(y) <= 1.0)


def test_gelu_is_the_exact_erf_form_not_tanh():
    x = np.linspace(-6, 6, 20_001).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    tanh_approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    err = np.abs(gelu(x) - exact).max()
    assert err <= 5e-6
    assert np.abs(tanh_approx - exact).max() > 10 * err  # the approximation would be distinguishable


def test_layer_norm_matches_float64_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(7, 312)).astype(np.float32)
    g, b = rng.normal(size=312).astype(np.float32), rng.normal(size=312).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-12) * g + b
    assert np.abs(layer_norm(x, g, b, 1e-12) - ref).max() <= 1e-5


def _exact_gelu(x64):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x64.ravel()]).reshape(x64.shape)


def test_gelu_in_place_adds_the_bias_in_row_pieces():
    # 70 x 1200 floats is more than one in-place piece: the bias must reach every piece exactly once
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, size=(70, 1200)).astype(np.float32)
    bias = rng.normal(size=1200).astype(np.float32)
    ref = _exact_gelu((x + bias).astype(np.float64))
    out = gelu_(x.copy(), np.empty(16, np.float32), bias)  # too-small scratch: gelu_ allocates its own
    assert np.abs(out - ref).max() <= 5e-6


def test_gelu_of_extremes_is_finite_and_exact():
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 9.0, -9.0, 30.0, -30.0, 1e20, -1e20], np.float32)
    out = gelu(x)
    assert np.all(np.isfinite(out))
    assert np.abs(out - _exact_gelu(x.astype(np.float64))).max() <= 1e-6 * np.abs(x).max()
    assert out[6] == 30.0 and out[8] == 1e20 and out[7] <= 0.0 and out[9] <= 0.0


def test_layer_norm_in_place_adds_bias_and_residual_before_normalising():
    rng = np.random.default_rng(2)
    x = rng.normal(1, 2, size=(300, 312)).astype(np.float32)  # several row pieces
    residual = rng.normal(size=(300, 312)).astype(np.float32)
    bias, g, b = (rng.normal(size=312).astype(np.float32) for _ in range(3))
    ref = layer_norm((x + bias) + residual, g, b, 1e-12)
    out = layer_norm_(x.copy(), g, b, 1e-12, np.empty(300, np.float32), bias, residual)
    assert np.array_equal(out, ref)


def test_layer_norm_without_vecdot_uses_einsum_and_agrees(monkeypatch):
    from tinyhpd import kernels

    rng = np.random.default_rng(3)
    x = rng.normal(3, 2, size=(7, 312)).astype(np.float32)
    g, b = rng.normal(size=312).astype(np.float32), rng.normal(size=312).astype(np.float32)
    with_vecdot = layer_norm(x, g, b, 1e-12)
    monkeypatch.setattr(kernels, "_VECDOT", None)  # NumPy < 2.0 has no np.vecdot
    np.testing.assert_allclose(layer_norm(x, g, b, 1e-12), with_vecdot, rtol=0, atol=1e-5)
