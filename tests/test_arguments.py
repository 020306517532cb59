"""tinyhpd/arguments.py: the one positive-integer rule, and the entry points that use it."""
from __future__ import annotations

import numpy as np
import pytest

import tinyhpd
from tinyhpd.arguments import port_number, positive_int, positive_seconds
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


@pytest.mark.parametrize("value", [0.5, 3, np.float32(2.0), np.int64(7)])
def test_positive_seconds_accepts_finite_positive_numbers(value):
    out = positive_seconds(value, "body_timeout")
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "3", None])
def test_positive_seconds_refuses_with_the_name_and_value(value):
    with pytest.raises(ValueError, match=r"^body_timeout must be a finite number of seconds > 0; got "):
        positive_seconds(value, "body_timeout")


@pytest.mark.parametrize("value", [0, 1, 8080, 65535, np.uint16(80)])
def test_port_number_accepts_every_tcp_port(value):
    out = port_number(value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [-1, 65536, 80.0, "80", True, None])
def test_port_number_refuses_with_the_value(value):
    with pytest.raises(ValueError, match=r"^port must be an integer in 0\.\.65535; got "):
        port_number(value)


@pytest.mark.parametrize("kwargs, message", [
    ({"port": 70000}, "port must be an integer in 0..65535; got 70000"),
    ({"body_timeout": 0}, "body_timeout must be a finite number of seconds > 0; got 0"),
    ({"header_timeout": float("nan")}, "header_timeout must be a finite number of seconds > 0; got nan"),
    ({"idle_timeout": 0}, "idle_timeout must be a positive integer; got 0"),
])
def test_serve_checks_its_port_and_timeouts_before_loading_a_model(kwargs, message, monkeypatch):
    """A port outside 0..65535 failed as an OverflowError from the socket after the model had loaded; a timeout of 0
    or NaN was handed to the server as is."""
    import tinyhpd.server as server

    def load(*args, **kw):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(server, "load_for_serving", load)
    with pytest.raises(ValueError) as exc:
        server.serve(**kwargs)
    assert str(exc.value) == message
