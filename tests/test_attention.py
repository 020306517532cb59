"""Packed, grouped attention against a float64 per-sequence reference, on both softmax paths."""
import numpy as np
import pytest

from tinyhpd import attention

H, HEADS = 24, 4  # head dim 6


def _reference(qkv: np.ndarray, lengths, n_heads: int) -> np.ndarray:
    """Plain attention of each sequence alone, float64, no padding anywhere."""
    n, h3 = qkv.shape
    h = h3 // 3
    d = h // n_heads
    out = np.empty((n, h))
    start = 0
    for L in lengths:
        blk = qkv[start:start + L].astype(np.float64).reshape(L, 3, n_heads, d).transpose(1, 2, 0, 3)  # [3, h, L, d]
        q, k, v = blk
        s = q @ k.transpose(0, 2, 1)  # [h, L, L]
        s -= s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[start:start + L] = (p @ v).transpose(1, 0, 2).reshape(L, h)
        start += L
    return out


def _run(lengths, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    qkv = np.zeros((n + 1, 3 * H), np.float32)  # the last row stays zero: what padded cells read
    qkv[:n] = rng.standard_normal((n, 3 * H)).astype(np.float32) * scale
    got = attention.attention(qkv, attention.pack(lengths), HEADS, np.empty((n, H), np.float32))
    return got, _reference(qkv[:n], lengths, HEADS)


@pytest.mark.parametrize("lengths", [[7], [5, 5, 5], [9, 8, 8, 6, 3], [40, 3, 2, 1], [1, 1]])
def test_matches_reference_shared_shift(lengths):
    got, want = _run(lengths, scale=1.0)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("lengths", [[9, 8, 8, 6, 3], [40, 3, 2, 1], [6]])
def test_matches_reference_when_scores_span_more_than_80(lengths):
    """Large activations: one shared shift would underflow whole rows, so the per-row path must take over."""
    got, want = _run(lengths, scale=6.0, seed=1)
    rng = np.random.default_rng(1)  # the same qkv again: its scores really span more than the shared-shift limit
    qkv = rng.standard_normal((sum(lengths), 3 * H)).astype(np.float32) * 6.0
    q, k = qkv[:, :H].reshape(-1, HEADS, H // HEADS), qkv[:, H:2 * H].reshape(-1, HEADS, H // HEADS)
    assert np.ptp(np.einsum("ihd,jhd->hij", q, k)) > attention._SHARED_SHIFT_SPAN
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_padding_does_not_leak_into_real_tokens():
    """The same sequence alone and beside a longer one (so it is padded) gives the same attention output."""
    rng = np.random.default_rng(2)
    short = rng.standard_normal((4, 3 * H)).astype(np.float32)
    longer = rng.standard_normal((6, 3 * H)).astype(np.float32)
    alone = np.vstack([short, np.zeros((1, 3 * H), np.float32)])
    both = np.vstack([longer, short, np.zeros((1, 3 * H), np.float32)])
    a = attention.attention(alone, attention.pack([4]), HEADS, np.empty((4, H), np.float32))
    packed = attention.pack([6, 4])
    assert packed.groups[0].rows is not None  # one group, the short sequence padded
    b = attention.attention(both, packed, HEADS, np.empty((10, H), np.float32))
    np.testing.assert_allclose(b[6:], a, atol=1e-6)


@pytest.mark.parametrize("per_block", [(2, "heads"), (2 * HEADS, "sequences")])
@pytest.mark.parametrize("scale", [1.0, 6.0])
@pytest.mark.parametrize("lengths", [[9, 8, 8, 6, 3], [40, 3, 2, 1], [12]])
def test_blocked_path_matches_reference(monkeypatch, lengths, scale, per_block):
    """Big groups are attended a few sequences (or one sequence and a few heads) at a time; force both paths."""
    monkeypatch.setattr(attention, "_SCORE_BLOCK", per_block[0] * max(lengths) ** 2)  # 2 heads, or 2 sequences, per block
    got, want = _run(lengths, scale=scale, seed=3)
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_long_sequences_take_the_blocked_path():
    got, want = _run([300, 200], scale=1.0, seed=4)  # 2 x 4 heads x 300^2 scores > _SCORE_BLOCK
    assert 2 * HEADS * 300 * 300 > attention._SCORE_BLOCK
    np.testing.assert_allclose(got, want, atol=1e-5)
