"""tinyhpd.checkpoints on files written by the real torch (tests/data/torch_written, made by make_files.py there):
both of torch.save's formats, state dicts with `_metadata`, float16 / bfloat16, shared storages and views at offsets;
then truncated, padded and hostile variants of those very bytes. No torch needed."""
from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinyhpd.checkpoints import read_checkpoint, read_safetensors, read_torch, read_torch_legacy, read_torch_zip
from tinyhpd.checkpoints.torch_pickle import LEGACY_MAGIC

DATA = Path(__file__).resolve().parent / "data" / "torch_written"
CASES = ["module_zip", "module_legacy", "half_zip", "bf16_legacy", "shared_zip", "shared_legacy"]


def _pickles(path: Path) -> list:
    """The opcode names of every pickle in a torch file (the zip's data.pkl, or the legacy file's five)."""
    raw = path.read_bytes()
    if raw.startswith(b"PK"):
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    f, out = io.BytesIO(raw), []
    while f.tell() < len(raw):
        try:
            out.append([op.name for op, _, _ in pickletools.genops(f)])
        except ValueError:  # the legacy file's raw storages after the pickles
            break
    return out


def test_the_committed_files_are_what_torch_writes():
    assert json.loads((DATA / "written_by.json").read_text())["torch"].startswith("2.")
    for name in ("module_zip", "module_legacy", "half_zip", "bf16_legacy"):
        ops = [op for p in _pickles(DATA / f"{name}.bin") for op in p]
        assert "BUILD" in ops, name  # Module.state_dict()'s _metadata: what 0.2 refused
    assert len(_pickles(DATA / "module_legacy.bin")) == 5  # magic, protocol, sys info, state dict, storage keys


@pytest.mark.parametrize("case", CASES)
def test_torch_written_checkpoints_read_as_torch_load_reads_them(case):
    expected = read_safetensors(DATA / f"{case}.expected.safetensors")
    ours = read_torch(DATA / f"{case}.bin")
    assert list(ours) == list(torch_order(case, expected))
    for name, want in expected.items():
        assert ours[name].dtype == want.dtype and ours[name].shape == want.shape, name
        np.testing.assert_array_equal(ours[name], want, err_msg=name)
        assert ours[name].flags.c_contiguous
    reader = read_torch_legacy if case.endswith("legacy") else read_torch_zip
    assert set(reader(DATA / f"{case}.bin")) == set(expected)
    assert set(read_checkpoint(DATA / f"{case}.bin")) == set(expected)


def torch_order(case, expected):
    """The state dict's own key order (safetensors sorts its keys): the order of first appearance in the pickle."""
    raw = (DATA / f"{case}.bin").read_bytes()
    if raw.startswith(b"PK"):
        with zipfile.ZipFile(DATA / f"{case}.bin") as zf:
            raw = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    return sorted(expected, key=lambda k: raw.find(pickle.dumps(k, protocol=2)[3:-2]))


def test_shared_storages_and_offset_views_keep_their_values():
    for case in ("shared_zip", "shared_legacy"):
        t = read_torch(DATA / f"{case}.bin")
        np.testing.assert_array_equal(t["word"], t["decoder"])
        np.testing.assert_array_equal(np.concatenate([t["query"], t["key"], t["value"]]).shape, (12, 4))
        np.testing.assert_array_equal(t["column"], t["grid"][:, 2])
        assert t["scale"].shape == () and t["scale"] == np.float32(0.125) and t["mask"].dtype == np.bool_
        assert not t["word"].flags.writeable and not t["decoder"].flags.writeable  # shared bytes stay read-only


@pytest.mark.parametrize("case", ["module_legacy", "shared_legacy", "module_zip"])
def test_every_truncation_is_a_clear_error_naming_the_file(tmp_path, case):
    raw = (DATA / f"{case}.bin").read_bytes()
    path = tmp_path / "pytorch_model.bin"
    step = 1 if case.endswith("legacy") else 7
    for cut in range(1, len(raw), step):
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=r"pytorch_model\.bin"):
            read_torch(path)


def test_bytes_after_the_last_storage_are_refused(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes((DATA / "module_legacy.bin").read_bytes() + b"\0" * 8)
    with pytest.raises(ValueError, match=r"w\.bin: 8 bytes after the last storage"):
        read_torch(path)


def test_a_storage_whose_recorded_count_disagrees_is_refused(tmp_path):
    raw = bytearray((DATA / "module_legacy.bin").read_bytes())
    f = io.BytesIO(bytes(raw))
    for _ in range(5):
        for op, _, _ in pickletools.genops(f):
            pass
    start = f.tell()  # the first storage's int64 element count
    raw[start:start + 8] = (int.from_bytes(raw[start:start + 8], "little") + 1).to_bytes(8, "little")
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"w\.bin: storage '\d+' records \d+ elements, the state dict \d+"):
        read_torch(path)


def _legacy(*objs: bytes) -> bytes:
    head = [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2),
            pickle.dumps({"protocol_version": 1001, "little_endian": True,
                          "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)]
    return b"".join(head) + b"".join(objs)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_legacy_file_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(_legacy(pickle.dumps({"w": _Exploit(marker)}, protocol=2), pickle.dumps([], protocol=2)))
    with pytest.raises(ValueError, match=r"refused to load global '(os|posix)\.system'"):
        read_torch(path)
    assert not marker.exists()


def test_a_legacy_header_that_is_not_plain_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(_Exploit(tmp_path / "x"), protocol=2))
    with pytest.raises(ValueError, match="refused to load global"):
        read_torch(path)
    path.write_bytes(_legacy()[:-40])
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: the sys info pickle is truncated"):
        read_torch(path)


def _legacy_view_file(offset: int, numel: int) -> bytes:
    """A state dict of one tensor on a legacy storage view (torch < 1.0 wrote these), written with pickle's opcodes."""
    def U(s):  # noqa: N802
        b = s.encode()
        return b"X" + len(b).to_bytes(4, "little") + b

    def J(i):  # noqa: N802
        return b"J" + i.to_bytes(4, "little", signed=True)

    pid = (b"(" + U("storage") + b"ctorch\nFloatStorage\n" + U("7") + U("cpu") + J(8)
           + b"(" + U("v") + J(offset) + J(numel) + b"t" + b"tQ")
    main = (b"\x80\x02ccollections\nOrderedDict\n)R(" + U("x") + b"ctorch._utils\n_rebuild_tensor\n(" + pid + J(0)
            + b"(" + J(numel) + b"t(" + J(1) + b"ttRu.")
    return _legacy(main, pickle.dumps(["7"], protocol=2)) + (8).to_bytes(8, "little") + np.arange(8, dtype="<f4").tobytes()


def test_a_legacy_storage_view_is_read_inside_its_storage(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(_legacy_view_file(3, 4))
    np.testing.assert_array_equal(read_torch(path)["x"], np.arange(3, 7, dtype=np.float32))
    path.write_bytes(_legacy_view_file(6, 4))
    with pytest.raises(ValueError, match=r"storage view 'v' \(offset 6, 4 elements\) lies outside storage '7'"):
        read_torch(path)


def test_convert_rewrites_a_legacy_checkpoint_as_safetensors(tmp_path):
    from tinyhpd.convert import convert

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    shutil.copy(DATA / "module_legacy.bin", src / "pytorch_model.bin")
    out = convert(str(src), str(tmp_path / "out"))
    assert not (out / "pytorch_model.bin").exists()
    got = read_safetensors(out / "model.safetensors")
    want = read_safetensors(DATA / "module_legacy.expected.safetensors")
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
