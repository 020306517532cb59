"""The wheel as users install it: it ships the bundled default model, and from another folder, offline and without
torch, it gives the checkout's default vectors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import NO_TORCH

from tinyhpd.hub import BUNDLED_NAME as BUNDLED  # the folder of weights/ that setup.py puts in the wheel

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["He plays guitar.", "A street vendor is outside.", ""]

@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """`pip wheel --no-deps .`, then the wheel installed (without dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(tmp / "dist")],
                   check=True, env=env, timeout=600, cwd=tmp)
    wheels = list((tmp / "dist").glob("tinyhpd-*.whl"))
    assert len(wheels) == 1, wheels
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheels[0])], check=True, env=env, timeout=600)
    return tmp / "site"


def _run(site: Path, code: str, cwd: Path, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", **env_extra)
    env.pop("TINYHPD_MODEL", None)
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_the_wheel_ships_the_bundled_model(wheel_site):
    bundled = wheel_site / "tinyhpd" / "_bundled" / BUNDLED
    for name in ("modules.json", "model.safetensors", "2_Dense/model.safetensors", "tokenizer.json", "SHA256SUMS"):
        assert (bundled / name).is_file(), name
    assert (bundled / "model.safetensors").read_bytes() == \
        (REPO / "weights" / BUNDLED / "model.safetensors").read_bytes()


def test_the_installed_default_equals_the_checkout_default(wheel_site, tmp_path):
    import tinyhpd

    code = ("import json, tinyhpd\n"
            f"v = tinyhpd.encode({SENTENCES!r})\n"
            "print(json.dumps({'file': tinyhpd.__file__, 'vecs': v.tolist()}))\n")
    proc = _run(wheel_site, code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["file"]).resolve().is_relative_to(wheel_site.resolve())  # the wheel's copy, not the checkout
    ref = tinyhpd.load(REPO / "weights" / BUNDLED).encode(SENTENCES)
    assert np.abs(np.asarray(out["vecs"], dtype=np.float32) - ref).max() <= 1e-6


def _cli(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    code = f"import runpy, sys\nsys.argv = ['tinyhpd', *{list(argv)!r}]\nrunpy.run_module('tinyhpd', run_name='__main__')\n"
    return _run(site, code, cwd=cwd)


def test_the_installed_cli_encodes(wheel_site, tmp_path):
    enc = _cli(wheel_site, tmp_path, "encode", "He plays guitar.")
    assert enc.returncode == 0, enc.stderr
    assert len(json.loads(enc.stdout)) == 128


def test_the_installed_cli_has_bench(wheel_site, tmp_path):
    bench = _cli(wheel_site, tmp_path, "bench", "--help")
    assert bench.returncode == 0 and "usage: tinyhpd bench" in bench.stdout, bench.stderr


def test_the_wheel_has_no_second_copy_in_the_repository():
    # one committed copy: weights/ (the package folder tinyhpd/_bundled is a build product, git-ignored)
    tracked = subprocess.run(["git", "ls-files", "tinyhpd/_bundled"], capture_output=True, text=True, cwd=REPO)
    assert tracked.returncode != 0 or tracked.stdout.strip() == ""


def test_wheel_records_its_files(wheel_site):
    record = next(wheel_site.glob("tinyhpd-*.dist-info")) / "RECORD"
    assert f"tinyhpd/_bundled/{BUNDLED}/model.safetensors" in record.read_text()


def test_wheel_version_is_the_package_version(wheel_site):
    # setup.cfg reads the version from tinyhpd.__version__: the wheel's metadata and the import agree
    import tinyhpd

    assert next(wheel_site.glob("tinyhpd-*.dist-info")).name == f"tinyhpd-{tinyhpd.__version__}.dist-info"


def test_the_wheel_ships_only_the_default_model(wheel_site):
    # setup.py copies only the default (BUNDLED there) into the wheel, whatever else weights/ may hold
    assert sorted(p.name for p in (wheel_site / "tinyhpd" / "_bundled").iterdir()) == [BUNDLED]
