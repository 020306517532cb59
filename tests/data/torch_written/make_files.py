"""Writes the torch checkpoints in this folder with the real torch (the torch-free tests read these very bytes).

    python tests/data/torch_written/make_files.py      # torch==2.13.0, from the repo root

Each `<case>.bin` is what `torch.save` writes; `<case>.expected.safetensors` holds the same tensors as torch itself
sees them after `torch.load` (bfloat16 widened to float32 by torch), written by safetensors.torch.
- module_zip / module_legacy: `torch.save(module.state_dict())` of a small module (Embedding, Linear, LayerNorm, a
  registered int64 buffer): an OrderedDict with `_metadata`, in the zip format and the legacy (pre-1.6) format.
- half_zip / bf16_legacy: the same module's state dict in float16 / bfloat16.
- shared_zip / shared_legacy: two names on one storage (tied weights), views at an offset into one storage (Q, K, V
  sliced from one fused matrix), a non-contiguous column, a scalar, a bool tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(7, 4)
        self.dense = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.register_buffer("position_ids", torch.arange(5).unsqueeze(0))


def shared_state() -> dict:
    g = torch.Generator().manual_seed(1)
    word = torch.randn(6, 4, generator=g)
    qkv = torch.randn(12, 4, generator=g)  # Q|K|V fused: three views at offsets 0, 16 and 32 of one storage
    grid = torch.randn(3, 5, generator=g)
    return {"word": word, "decoder": word, "query": qkv[:4], "key": qkv[4:8], "value": qkv[8:], "column": grid[:, 2],
            "grid": grid, "scale": torch.tensor(0.125), "mask": torch.tensor([True, False, True])}


def write(name: str, state, legacy: bool) -> None:
    torch.save(state, HERE / f"{name}.bin", _use_new_zipfile_serialization=not legacy)
    loaded = torch.load(HERE / f"{name}.bin", weights_only=True)
    expected = {k: (v.float() if v.dtype == torch.bfloat16 else v).contiguous().clone() for k, v in loaded.items()}
    save_file(expected, str(HERE / f"{name}.expected.safetensors"))


def main() -> None:
    torch.manual_seed(0)
    module = Small().eval()
    assert hasattr(module.state_dict(), "_metadata")
    write("module_zip", module.state_dict(), legacy=False)
    write("module_legacy", module.state_dict(), legacy=True)
    write("half_zip", Small().half().state_dict(), legacy=False)
    write("bf16_legacy", Small().to(torch.bfloat16).state_dict(), legacy=True)
    write("shared_zip", shared_state(), legacy=False)
    write("shared_legacy", shared_state(), legacy=True)
    (HERE / "written_by.json").write_text(json.dumps({"torch": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
