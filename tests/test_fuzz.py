"""Property-based fuzzing (hypothesis) of everything that reads untrusted bytes: the torch-zip reader, the safetensors
header, config.json, index folders and files of lines. Every generated input either loads correctly or raises one of
the project's clear errors (ValueError, or FileNotFoundError for a missing part); never a crash, a hang or an
allocation beyond what the file's own sizes allow. A fixed, small budget (derandomized, so CI runs the same cases)."""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiny_models
import tinyhpd
from tinyhpd._io import read_lines, safetensors_header
from tinyhpd.config import BertConfig
from tinyhpd.checkpoints import read_torch, read_torch_zip

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CLEAR = (ValueError, FileNotFoundError)


def _valid_zip() -> bytes:
    buf = io.BytesIO()
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(5, dtype=np.int64),
               "c": np.ones(2, np.float16)}
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", tiny_models.state_dict_pickle(tensors))
        zf.writestr("archive/byteorder", "little")
        for key, arr in enumerate(tensors.values()):
            zf.writestr(f"archive/data/{key}", arr.tobytes())
    return buf.getvalue()


VALID_ZIP = _valid_zip()


def _mutate(data: bytes, edits) -> bytes:
    raw = bytearray(data)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    return bytes(raw)


LEGACY = (tiny_models.REPO_TESTS / "data" / "torch_written" / "shared_legacy.bin").read_bytes()  # written by torch


def _mutated_torch_file(tmp_path_factory, base: bytes, edits, cut, read) -> None:
    data = _mutate(base, edits)[:cut]
    path = tmp_path_factory.mktemp("z") / "w.bin"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        out = read(path)
        assert all(isinstance(v, np.ndarray) for v in out.values())
    except CLEAR:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * len(base) + (1 << 20)  # bounded by the file's own sizes


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(1, len(VALID_ZIP))))
def test_torch_zip_reader_on_mutated_checkpoints(tmp_path_factory, edits, cut):
    _mutated_torch_file(tmp_path_factory, VALID_ZIP, edits, cut, read_torch_zip)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(LEGACY) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(1, len(LEGACY))))
def test_legacy_reader_on_mutated_checkpoints(tmp_path_factory, edits, cut):
    _mutated_torch_file(tmp_path_factory, LEGACY, edits, cut, read_torch)


PICKLE_PIECES = [b"\x80\x02", b"ccollections\nOrderedDict\n", b")", b"R", b"(", b"t", b"u", b"s", b"}", b"]", b"a",
                 b"N", b"\x85", b"\x86", b"\x87", b"J\x01\x00\x00\x00", b"J\xff\xff\xff\xff", b"X\x01\x00\x00\x00x",
                 b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n", b"Q", b"b", b"c os\nsystem\n",
                 b"q\x00", b"h\x00", b"0", b"2", b"\x88", b"\x89", b"."]


@FUZZ
@given(pieces=st.lists(st.sampled_from(PICKLE_PIECES), min_size=1, max_size=40))
def test_torch_zip_reader_on_generated_pickles(tmp_path_factory, pieces):
    path = tmp_path_factory.mktemp("p") / "w.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"".join(pieces))
        zf.writestr("archive/data/0", bytes(16))
    try:
        out = read_torch_zip(path)
        assert isinstance(out, dict)
    except CLEAR:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=12)


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=6), st.fixed_dictionaries(
    {"dtype": st.sampled_from(["F32", "F16", "I8", "U8", "X", 3]),
     "shape": st.one_of(st.lists(st.integers(-3, 8), max_size=3), json_values),
     "data_offsets": st.one_of(st.lists(st.integers(-8, 64), min_size=2, max_size=2), json_values)}), max_size=4),
    data_len=st.integers(0, 64), header_len_delta=st.integers(-3, 3))
def test_safetensors_header_on_generated_headers(tmp_path_factory, entries, data_len, header_len_delta):
    h = json.dumps(entries, allow_nan=True).encode()
    path = tmp_path_factory.mktemp("s") / "m.safetensors"
    path.write_bytes(struct.pack("<Q", max(0, len(h) + header_len_delta)) + h + bytes(data_len))
    try:
        _, header, start = safetensors_header(path)
        assert start == 8 + len(h) and set(header) == set(entries)
        from tinyhpd.checkpoints import read_safetensors

        read_safetensors(path)
    except CLEAR:
        pass


@FUZZ
@given(cfg=st.dictionaries(st.sampled_from(["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                            "layer_norm_eps", "hidden_act", "model_type"]), json_values, max_size=10))
def test_config_parsing_on_generated_json(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("c") / "config.json"
    path.write_text(json.dumps(cfg, allow_nan=True))
    try:
        c = BertConfig.from_file(path)
        assert c.hidden_size % c.num_attention_heads == 0 and 0 < c.layer_norm_eps < 1
    except CLEAR:
        pass


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory):
    index = tinyhpd.Index(8, dtype="int8")
    index.add(np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32), ids=list(range(6)))
    return index.save(tmp_path_factory.mktemp("ix") / "ix")


@FUZZ
@given(which=st.sampled_from(["manifest.json", "ids.json", "vectors.safetensors"]),
       edits=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=4))
def test_index_load_on_mutated_folders(tmp_path_factory, saved_index, which, edits):
    import shutil

    folder = tmp_path_factory.mktemp("m") / "ix"
    shutil.copytree(saved_index, folder)
    f = folder / which
    f.write_bytes(_mutate(f.read_bytes(), edits))
    try:
        index = tinyhpd.Index.load(folder, verify=True)
        index.search_rows(np.ones((1, 8), np.float32) / np.sqrt(8), 3)
    except CLEAR:
        pass


@FUZZ
@given(data=st.binary(max_size=200))
def test_line_reading_splits_on_newline_only(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("l") / "in.txt"
    path.write_bytes(data)
    try:
        lines = read_lines(path)
    except ValueError:
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        return
    text = data.decode("utf-8").removeprefix("\ufeff")
    pieces = text.split("\n")
    last = pieces.pop()  # after the final "\n" (empty when the file ends with one)
    expected = [x[:-1] if x.endswith("\r") else x for x in pieces] + ([last] if last else [])
    assert lines == expected
