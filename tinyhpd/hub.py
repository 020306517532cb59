"""Where a model comes from: a local folder, the bundled default in weights/, or the Hugging Face Hub (pinned, cached).

huggingface_hub is imported only when a download or a cache look-up is really needed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = [
    "HPD_HUB_MODEL",
    "HPD_HUB_REVISION",
    "BUNDLED_DIR",
    "default_model",
    "resolve",
    "choose_files",
]

HPD_HUB_MODEL = "Xuandong/HPD-TinyBERT-F128"
HPD_HUB_REVISION = "28e49638354a308425ba4c2ad1b1fe678dfff07d"
PINNED_REVISIONS = {HPD_HUB_MODEL: HPD_HUB_REVISION}

# The bundled default model (a sentence-transformers folder). Its one committed copy is the repository's top-level
# weights/; setup.py copies it into the package (tinyhpd/_bundled/) when a wheel or a non-editable install is built.
BUNDLED_NAME = "tinyhpd-minilm-l4-h128"


def _find_bundled() -> Path:
    """The installed copy (wheel, `pip install .`) first, else the checkout's weights/ (editable install, source tree)."""
    here = Path(__file__).resolve().parent
    installed = here / "_bundled" / BUNDLED_NAME
    if (installed / "modules.json").is_file():
        return installed
    return here.parent / "weights" / BUNDLED_NAME


BUNDLED_DIR = _find_bundled()

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_TRUE = {"1", "true", "yes", "on"}


def default_model() -> str:
    """`TINYHPD_MODEL`, else the bundled model. Never another model: without both, a FileNotFoundError that says so."""
    env = os.environ.get("TINYHPD_MODEL", "").strip()
    if env:
        return env
    if (BUNDLED_DIR / "modules.json").is_file():
        return str(BUNDLED_DIR)
    raise FileNotFoundError(
        f"no model named and the bundled default model {BUNDLED_NAME!r} is not in this install (looked in "
        f"{BUNDLED_DIR}); reinstall tinyhpd from its wheel, or name a model: model=PATH / --model PATH, "
        f"TINYHPD_MODEL=PATH, or the published {HPD_HUB_MODEL!r}")


def choose_files(files: Sequence[str]) -> List[str]:
    """The files of a Hub repo that tinyhpd needs: configs, tokenizer, and one weights file per module folder
    (safetensors preferred; ONNX/OpenVINO exports and other frameworks' weights are skipped)."""
    chosen = []
    weights_by_dir: dict = {}
    for f in files:
        d, _, name = f.rpartition("/")
        if d and not re.match(r"^\d+_\w+$", d):
            continue  # onnx/, openvino/, ... : not modules of a sentence-transformers pipeline
        if name.endswith(".json") or name in ("vocab.txt",):
            chosen.append(f)
        elif name in ("model.safetensors", "pytorch_model.bin"):
            weights_by_dir.setdefault(d, set()).add(name)
    for d, names in sorted(weights_by_dir.items()):
        name = "model.safetensors" if "model.safetensors" in names else "pytorch_model.bin"
        chosen.append(f"{d}/{name}" if d else name)
    return sorted(chosen)


def _offline(local_files_only: Optional[bool]) -> bool:
    if local_files_only is not None:
        return bool(local_files_only)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _unreachable(repo_id: str, revision: Optional[str], why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"cannot get model {repo_id!r}" + (f" at revision {revision}" if revision else "") + f": {why}. "
        "To run without the Hub, pass a local sentence-transformers folder (model=PATH, or --model PATH) or set "
        "TINYHPD_MODEL=PATH.")


def _download(repo_id: str, revision: Optional[str], cache_dir: Optional[str], offline: bool) -> Path:
    import huggingface_hub as hh

    if offline:
        try:
            return Path(hh.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
        except Exception as exc:  # LocalEntryNotFoundError and friends
            raise _unreachable(repo_id, revision, f"offline mode and not in the cache ({type(exc).__name__})") from None
    try:
        info = hh.HfApi().model_info(repo_id, revision=revision)
        files = choose_files([s.rfilename for s in (info.siblings or [])])
        return Path(hh.snapshot_download(repo_id, revision=info.sha or revision, cache_dir=cache_dir,
                                         allow_patterns=files))
    except Exception as exc:
        network_error = exc
    # The Hub failed (no network, rate limit, ...): a complete cached snapshot of that revision is still fine.
    try:
        return Path(hh.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except Exception:
        raise _unreachable(repo_id, revision, f"the Hub could not be reached ({type(network_error).__name__}: "
                                              f"{str(network_error)[:200]}) and nothing is cached") from None


def resolve(name_or_path: Optional[str], revision: Optional[str] = None, cache_dir: Optional[str] = None,
            local_files_only: Optional[bool] = None) -> Tuple[Path, str, Optional[str]]:
    """-> (local folder, model id, revision). A local folder wins over a Hub id of the same spelling."""
    name = default_model() if name_or_path is None else os.fspath(name_or_path)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name {name_or_path!r} is empty: pass a folder or a Hub id, or None for the default")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve()), None
    if path.exists():
        raise ValueError(f"model {name!r} is a file; expected a sentence-transformers folder or a Hub id")
    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"model {name!r}: no such folder, and not a Hub id of the form 'org/name'")
    rev = revision or PINNED_REVISIONS.get(name)
    return _download(name, rev, cache_dir, _offline(local_files_only)), name, rev
