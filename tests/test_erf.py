import math

import numpy as np

from tinyhpd.bert import erf, gelu, layer_norm


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
