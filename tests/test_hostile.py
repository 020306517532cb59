"""Hostile and broken files: each case of the audit gets a clear error naming the file (or a bounded load), never a
crash, a read outside a buffer, or an allocation the file's own sizes do not allow."""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tiny_models
import tinyhpd
from tinyhpd._io import read_lines, safetensors_header
from tinyhpd.checkpoints import read_torch_zip


def _zip(path: Path, pkl: bytes, storages: dict, compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def _pid(key: str, numel: int, storage: str = "FloatStorage") -> bytes:
    T = tiny_models
    return (b"(" + T._unicode("storage") + f"ctorch\n{storage}\n".encode() + T._unicode(key) + T._unicode("cpu")
            + T._int(numel) + b"tQ")


def _rebuild(storage_bytes: bytes, offset: int, size, stride) -> bytes:
    T = tiny_models
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_bytes + T._int(offset) + T._tuple(size)
            + T._tuple(stride) + b"\x89ccollections\nOrderedDict\n)RtR")


def _state(entries) -> bytes:
    T = tiny_models
    body = b"".join(T._unicode(k) + v for k, v in entries)
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + body + b"u."


# ------------------------------------------------------------------------------------------------ torch zip
def test_a_storage_that_is_a_rebuilt_tensor_is_refused(tmp_path):
    # the audit's High case: a 2-D "storage" where slicing by the offset would skip whole rows
    inner = _rebuild(_pid("0", 16), 0, (4, 4), (4, 1))
    outer = _rebuild(inner, 3, (8,), (1,))
    path = _zip(tmp_path / "w.bin", _state([("x", outer)]), {"0": np.zeros(16, np.float32).tobytes()})
    with pytest.raises(ValueError, match="not a storage of the checkpoint"):
        read_torch_zip(path)


def test_a_view_past_the_end_of_its_storage_is_refused(tmp_path):
    path = _zip(tmp_path / "w.bin", _state([("x", _rebuild(_pid("0", 4), 2, (3,), (1,)))]),
                {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match="outside its storage"):
        read_torch_zip(path)


def test_a_scalar_with_an_offset_past_the_end_is_refused(tmp_path):
    path = _zip(tmp_path / "w.bin", _state([("x", _rebuild(_pid("0", 4), 4, (), ()))]),
                {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ValueError, match="outside its storage"):
        read_torch_zip(path)


def test_a_stride_zero_view_of_a_billion_elements_is_refused_before_any_copy(tmp_path):
    path = _zip(tmp_path / "w.bin", _state([("x", _rebuild(_pid("0", 1), 0, (1000, 1000, 1000), (0, 0, 0)))]),
                {"0": np.zeros(1, np.float32).tobytes()})
    with pytest.raises(ValueError, match="broadcast"):
        read_torch_zip(path)


def test_a_storage_shorter_than_it_claims_is_refused(tmp_path):
    path = _zip(tmp_path / "w.bin", _state([("x", _rebuild(_pid("0", 1000), 0, (1000,), (1,)))]),
                {"0": np.zeros(10, np.float32).tobytes()})
    with pytest.raises(ValueError, match="holds 40 bytes, its tensor needs 4000"):
        read_torch_zip(path)


def test_a_zip_bomb_entry_is_refused_without_inflating_it(tmp_path):
    n = 8 << 20  # 32 MB of zeros compress to ~32 KB
    path = _zip(tmp_path / "w.bin", _state([("x", _rebuild(_pid("0", n), 0, (n,), (1,)))]),
                {"0": bytes(4 * n)}, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="zip bomb"):
        read_torch_zip(path)


def test_deep_nesting_is_a_clear_error_not_a_crash(tmp_path):
    deep = b"\x80\x02" + b"N" + b"\x85" * 200_000 + b"."  # a tuple nested 200,000 deep
    path = _zip(tmp_path / "w.bin", deep, {})
    with pytest.raises(ValueError, match="nested deeper"):
        read_torch_zip(path)


_OD = b"ccollections\nOrderedDict\n)R"


def _metadata(extra: bytes = b"") -> bytes:
    """The state `Module.state_dict()` gives its OrderedDict: {'_metadata': OrderedDict({'': {'version': 1}})}."""
    T = tiny_models
    return (b"}" + T._unicode("_metadata") + _OD + b"(" + T._unicode("") + b"}" + T._unicode("version") + b"K\x01s"
            + b"us" + extra)


def _state_with_build(entries, state: bytes) -> bytes:
    return _state(entries)[:-1] + state + b"b."


def test_a_state_dicts_metadata_is_admitted_and_dropped(tmp_path):
    x = np.arange(6, dtype=np.float32)
    path = _zip(tmp_path / "w.bin", _state_with_build([("x", _rebuild(_pid("0", 6), 0, (2, 3), (3, 1)))], _metadata()),
                {"0": x.tobytes()})
    out = read_torch_zip(path)
    assert type(out) is dict and list(out) == ["x"] and not hasattr(out, "_metadata")
    np.testing.assert_array_equal(out["x"], x.reshape(2, 3))


@pytest.mark.parametrize("state, error", [
    (b"}", r"BUILD with state \[\]: only a state dict's '_metadata'"),  # an empty state
    (_metadata(tiny_models._unicode("update") + b"K\x01s"), r"BUILD with state \['_metadata', 'update'\]"),
    (b"}" + tiny_models._unicode("_metadata") + b"}" + tiny_models._unicode("")
     + _rebuild(_pid("0", 6), 0, (6,), (1,)) + b"ss", r"'_metadata' entry '' is not a small dict"),  # a tensor in it
    (b"}" + tiny_models._unicode("_metadata") + b"}" + tiny_models._unicode("") + b"}" + tiny_models._unicode("v")
     + _OD + b"sss", r"'_metadata' entry '': 'v' is not a plain value"),
    (b"}}\x86", "opcode BUILD"),  # a (dict, slot state) pair would set attributes through setattr
    (b"N", "opcode BUILD"),
])
def test_build_with_any_other_state_is_refused(tmp_path, state, error):
    path = _zip(tmp_path / "w.bin", _state_with_build([("x", _rebuild(_pid("0", 6), 0, (6,), (1,)))], state),
                {"0": bytes(24)})
    with pytest.raises(ValueError, match=error):
        read_torch_zip(path)


@pytest.mark.parametrize("pkl", [
    b"\x80\x02ctorch\nFloatStorage\n" + _metadata() + b"b.",  # on a storage class
    b"\x80\x02ccollections\nOrderedDict\n" + _metadata() + b"b.",  # on the class itself
    b"\x80\x02ccollections\nOrderedDict\n(" + tiny_models._unicode("x") + b"tR" + _metadata() + b"b.",  # made with args
    b"\x80\x02" + _OD + b"(" + tiny_models._unicode("x") + _rebuild(_pid("0", 6), 0, (6,), (1,)) + _metadata()
    + b"bu.",  # on a tensor
    b"\x80\x02" + _pid("0", 6)[:-1] + b"Q" + _metadata() + b"b.",  # on a storage
])
def test_build_on_anything_but_an_ordered_dict_is_refused_before_unpickling(tmp_path, pkl):
    path = _zip(tmp_path / "w.bin", pkl, {"0": bytes(24)})
    with pytest.raises(ValueError, match="opcode BUILD at byte"):
        read_torch_zip(path)


@pytest.mark.parametrize("pkl", [b"\x80\x02(cbuiltins\nobject\no.", b"\x80\x02cbuiltins\nobject\n)\x81.",
                                 b"\x80\x02(ibuiltins\nobject\n.", b"\x80\x02\x82\x01."])
def test_obj_inst_newobj_and_ext_stay_refused(tmp_path, pkl):
    with pytest.raises(ValueError, match=r"opcode (OBJ|NEWOBJ|INST|EXT1) at byte"):
        read_torch_zip(_zip(tmp_path / "w.bin", pkl, {}))


def test_a_crc_error_names_the_file(tmp_path):
    path = tiny_models.write_torch_zip(tmp_path / "w.bin", {"x": np.arange(64, dtype=np.float32)})
    raw = bytearray(path.read_bytes())
    i = raw.find(np.arange(64, dtype=np.float32).tobytes())
    raw[i + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"w\.bin: corrupt zip archive"):
        read_torch_zip(path)


def test_a_zip_version_field_past_what_zipfile_reads_names_the_file(tmp_path):
    # found by the mutation fuzz test: zipfile raises NotImplementedError("zip file version 6.4")
    path = tiny_models.write_torch_zip(tmp_path / "w.bin", {"x": np.arange(4, dtype=np.float32)})
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    raw[central + 6:central + 8] = struct.pack("<H", 64)  # "version needed to extract" of the first entry
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"w\.bin: corrupt zip archive \(zip file version 6\.4\)"):
        read_torch_zip(path)


def test_a_truncated_zip_is_not_called_legacy(tmp_path):
    path = tiny_models.write_torch_zip(tmp_path / "w.bin", {"x": np.arange(64, dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt zip"):
        read_torch_zip(path)


def test_twenty_thousand_tiny_storages_load(tmp_path):
    tensors = {f"t{i}": np.full(1, i, np.float32) for i in range(20_000)}
    out = read_torch_zip(tiny_models.write_torch_zip(tmp_path / "w.bin", tensors))
    assert len(out) == 20_000 and out["t19999"][0] == 19999


# ------------------------------------------------------------------------------------------------ safetensors
def _st(path: Path, header: dict, data: bytes) -> Path:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


@pytest.mark.parametrize("offsets, match", [
    ([[0, 8], [4, 12]], "overlapping"),
    ([[0, 8], [12, 20]], "a gap"),
    ([[-4, 4], [8, 16]], "invalid data_offsets"),
    ([[0, 8], [8, 16]], None),
])
def test_safetensors_offsets_must_tile_the_data_exactly(tmp_path, offsets, match):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": offsets[0]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": offsets[1]}}
    path = _st(tmp_path / "m.safetensors", header, bytes(max(o[1] for o in offsets)))
    if match is None:
        safetensors_header(path)
    else:
        with pytest.raises(ValueError, match=match):
            safetensors_header(path)


def test_safetensors_data_after_the_last_tensor_is_refused(tmp_path):
    path = _st(tmp_path / "m.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(12))
    with pytest.raises(ValueError, match="cover 8 of the data section's 12 bytes"):
        safetensors_header(path)


# ------------------------------------------------------------------------------------------------ configs and weights
@pytest.fixture
def folder(tmp_path):
    return tiny_models.build_new(tmp_path / "m", arch=tiny_models.SMALL_ARCH, dense_out=8)


def _edit(path: Path, **kv) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(kv)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("key, value, match", [
    ("num_hidden_layers", 10 ** 9, "'num_hidden_layers' must be an integer from 1 to 256"),
    ("num_attention_heads", 0, "'num_attention_heads' must be an integer from 1"),
    ("hidden_size", 48.0, "'hidden_size' must be int"),
    ("layer_norm_eps", float("nan"), "'layer_norm_eps' must be a finite number"),
    ("layer_norm_eps", -1e-12, "'layer_norm_eps' must be a finite number"),
    ("max_position_embeddings", True, "'max_position_embeddings' must be an integer"),
])
def test_bad_config_sizes_name_the_file_and_key(folder, key, value, match):
    _edit(folder / "config.json", **{key: value})
    with pytest.raises(ValueError, match=match) as err:
        tinyhpd.load(folder)
    assert "config.json" in str(err.value)


def test_a_config_that_is_a_list_names_the_file(folder):
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: expected a JSON object, got list"):
        tinyhpd.load(folder)


def test_a_fifo_as_config_is_refused_without_blocking(folder):
    import os

    os.remove(folder / "config.json")
    os.mkfifo(folder / "config.json")
    with pytest.raises(ValueError, match="not a regular file"):
        tinyhpd.load(folder)


def test_nan_weights_are_refused_naming_the_tensor(folder):
    from safetensors.numpy import load_file, save_file

    t = load_file(str(folder / "model.safetensors"))
    t["encoder.layer.1.output.dense.bias"][3] = np.nan
    save_file(t, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="'encoder.layer.1.output.dense.bias' holds NaN or infinite values"):
        tinyhpd.load(folder)


def test_an_empty_model_name_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is empty"):
        tinyhpd.load("")


def test_a_numpy_integer_batch_size_is_accepted(folder):
    model = tinyhpd.load(folder)
    assert model.encode(["a b", "c"], batch_size=np.int64(1)).shape == (2, 8)


def test_fingerprint_covers_pooling_and_max_seq_length(folder, tmp_path):
    import shutil

    base = tinyhpd.load(folder).fingerprint
    cls = shutil.copytree(folder, tmp_path / "cls")
    _edit(cls / "1_Pooling" / "config.json", pooling_mode="cls")
    short = shutil.copytree(folder, tmp_path / "short")
    _edit(short / "sentence_bert_config.json", max_seq_length=16)
    lower = shutil.copytree(folder, tmp_path / "lower")
    _edit(lower / "sentence_bert_config.json", do_lower_case=True)
    prints = {base, tinyhpd.load(cls).fingerprint, tinyhpd.load(short).fingerprint, tinyhpd.load(lower).fingerprint}
    assert len(prints) == 4


def test_an_index_refuses_the_same_weights_with_another_pooling(folder, tmp_path):
    import shutil

    index = tinyhpd.Index.build(["a cat", "a dog"], model=tinyhpd.load(folder))
    index.save(tmp_path / "ix")
    cls = shutil.copytree(folder, tmp_path / "cls")
    _edit(cls / "1_Pooling" / "config.json", pooling_mode="cls")
    with pytest.raises(ValueError):
        tinyhpd.Index.load(tmp_path / "ix", model=tinyhpd.load(cls))


# ------------------------------------------------------------------------------------------------ files of lines, CLI
def test_a_lone_carriage_return_does_not_split_a_line(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\rstill one\x0bstill\xe2\x80\xa8one\ntwo\r\n\xef\xbb\xbfthree")
    assert read_lines(path) == ["one\rstill one\x0bstill\u2028one", "two", "\ufeffthree"]


def test_a_file_holding_only_a_bom_has_no_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbf")  # found by the line-reading fuzz test: it gave one empty line
    assert read_lines(path) == []
    path.write_bytes(b"\xef\xbb\xbf\n")
    assert read_lines(path) == [""]


def test_encode_input_with_a_lone_cr_gives_one_row_per_line(folder, tmp_path, capsys):
    from tinyhpd.cli import main

    path = tmp_path / "in.txt"
    path.write_bytes(b"a\rb\nc\n")
    assert main(["encode", "--model", str(folder), "--input", str(path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_convert_force_refuses_a_folder_that_is_not_a_model(folder, tmp_path, capsys):
    from tinyhpd.cli import main

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert main(["convert", str(folder), str(precious), "--force"]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_malformed_model_is_one_line_and_status_2(folder, capsys):
    from tinyhpd.cli import main

    (folder / "config.json").write_text('{"vocab_size": 1}')
    assert main(["encode", "--model", str(folder), "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_output_piped_into_a_closed_reader_exits_quietly(folder):
    import os
    import subprocess
    import sys

    from helpers import REPO

    cmd = (f"{sys.executable} -m tinyhpd encode --model {folder} " + " ".join(f"s{i}" for i in range(300))
           + " | head -1")
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stderr.strip() == "" and len(proc.stdout.splitlines()) == 1


# ------------------------------------------------------------------------------------------------ index saves
def _vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_save_swaps_atomically_and_leaves_nothing_beside(tmp_path):
    from tinyhpd._io import exchange_paths

    a, b = tinyhpd.Index(8), tinyhpd.Index(8)
    a.add(_vectors(3))
    b.add(_vectors(5, seed=1))
    a.save(tmp_path / "ix")
    b.save(tmp_path / "ix")
    assert len(tinyhpd.Index.load(tmp_path / "ix")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    (tmp_path / "p").mkdir()
    (tmp_path / "q").mkdir()
    assert exchange_paths(tmp_path / "p", tmp_path / "q")  # this kernel has RENAME_EXCHANGE: no window at all


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    left = tmp_path / f".ix.tmp-{pid}-abcd"
    left.mkdir()
    (left / "vectors.safetensors").write_bytes(bytes(1000))
    live = tmp_path / f".ix.tmp-{__import__('os').getpid()}-live"  # a concurrent save of a live process: kept
    live.mkdir()
    index = tinyhpd.Index(8)
    index.add(_vectors(2))
    index.save(tmp_path / "ix")
    assert not left.exists() and live.exists()


def test_verify_catches_flipped_bytes(tmp_path):
    index = tinyhpd.Index(8)
    index.add(_vectors(4))
    index.save(tmp_path / "ix")
    tinyhpd.Index.load(tmp_path / "ix", verify=True)
    path = tmp_path / "ix" / "vectors.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="differs from the sha256"):
        tinyhpd.Index.load(tmp_path / "ix", verify=True)


def test_a_lone_surrogate_names_the_item(folder):
    with pytest.raises(ValueError, match=r"sentences\[1\] is not valid Unicode text"):
        tinyhpd.load(folder).encode(["fine", "bad \ud800 here"])


def test_huge_components_keep_their_direction(tmp_path):
    index = tinyhpd.Index(4, dtype="float32")
    index.add(np.array([[1e154, 1e154, 0, 0], [0, 1.0, 0, 0]], dtype=np.float64))  # squares overflow float64
    v = index.vectors()
    np.testing.assert_allclose(v, [[2 ** -0.5, 2 ** -0.5, 0, 0], [0, 1, 0, 0]], atol=1e-7)


def test_a_shard_index_pointing_at_itself_is_refused(folder):
    import os

    os.rename(folder / "model.safetensors", folder / "model-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model.safetensors.index.json"}}))
    with pytest.raises(ValueError, match="must be a weights file in the same folder"):
        tinyhpd.load(folder)


def test_a_nan_int8_scale_is_refused_at_load(tmp_path):
    from safetensors.numpy import load_file, save_file

    index = tinyhpd.Index(4, dtype="int8")
    index.add(np.random.default_rng(0).normal(size=(5, 4)))
    index.save(tmp_path / "ix")
    t = load_file(str(tmp_path / "ix" / "vectors.safetensors"))
    t["scale"][1] = np.nan
    save_file(t, str(tmp_path / "ix" / "vectors.safetensors"), metadata={"format": "tinyhpd-index", "dtype": "int8"})
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    manifest["files"]["vectors.safetensors"] = (tmp_path / "ix" / "vectors.safetensors").stat().st_size
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="scale/offset must be finite"):
        tinyhpd.Index.load(tmp_path / "ix")
