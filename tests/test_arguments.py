"""tinyhpd/arguments.py: the one positive-integer rule, and the entry points that use it."""
from __future__ import annotations

import numpy as np
import pytest

import tinyhpd
from tinyhpd.arguments import positive_int
from tinyhpd.corpus import embed_corpus


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_python_and_numpy_integers(value):
    out = positive_int(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, np.bool_(True), 2.0, "3", None, np.int64(0)])
def test_positive_int_refuses_with_the_name_and_value(value):
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer; got "):
        positive_int(value, "batch_size")


def test_positive_int_or_none():
    assert positive_int(None, "top_k", or_none=True) is None
    with pytest.raises(ValueError, match=r"^top_k must be None or a positive integer; got 0$"):
        positive_int(0, "top_k", or_none=True)


def test_entry_points_share_the_rule(tmp_path):
    with pytest.raises(ValueError, match="^threads must be None or a positive integer; got 0$"):
        tinyhpd.Index(4, threads=0)
    assert tinyhpd.Index(4, threads=np.int64(2)).threads == 2  # NumPy integers pass everywhere now
    with pytest.raises(ValueError, match="^shard_size must be a positive integer; got 0$"):
        embed_corpus(tmp_path / "in.txt", tmp_path / "out", None, shard_size=0)


def test_server_limits_and_export_sizes_are_checked_before_anything_starts(tmp_path):
    from tinyhpd.pgvector import export
    from tinyhpd.server import serve

    with pytest.raises(ValueError, match="^max_batch_tokens must be a positive integer; got 0$"):
        serve(max_batch_tokens=0)
    with pytest.raises(ValueError, match="^ef_construction must be a positive integer; got -1$"):
        export(tmp_path / "missing", "postgresql:///nowhere", "docs", ef_construction=-1)
