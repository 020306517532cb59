"""A faster teacher: the sentence-transformers model's Transformer exported to ONNX and run with ONNX Runtime.

Only the transformer body runs in ONNX Runtime; tokenisation and every later module (Pooling, Normalize, Dense) are
the teacher's own sentence-transformers modules, so the result can differ from the torch teacher only by the body's
float arithmetic. Each teacher is checked against torch on its first batch and refused if it differs.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

ONNX_OPSET = 17
PARITY_MIN_COSINE = 0.99999  # the first batch's rows: ONNX Runtime vs torch, each row


def _export(model, dest: Path, input_names: List[str]) -> None:
    """Export ``model`` (a transformers model taking ``input_names``) with dynamic batch and sequence axes."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):  # type: ignore[no-untyped-def]
            return self.inner(**dict(zip(input_names, inputs))).last_hidden_state  # [b, L, H]

    ids = torch.tensor([[0, 100, 200, 300, 2], [0, 100, 2, 1, 1]], dtype=torch.long)  # [2, 5]: shapes only
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    axes = {n: {0: "batch", 1: "sequence"} for n in input_names + ["last_hidden_state"]}
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(LastHidden(model).eval(), tuple(example[n] for n in input_names), str(tmp),
                          input_names=input_names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False)
    os.replace(tmp, dest)


class OnnxTeacher:
    """``encode(batch) -> [b, d] float32`` for a sentence-transformers teacher, its body on ONNX Runtime.

    The export is cached in ``cache_dir/onnx/`` under a key of the teacher's identity (weights' names, sizes, mtimes),
    so a changed teacher is exported again. ``threads`` sets ONNX Runtime's intra-op threads.
    """

    def __init__(self, teacher: str, identity: str, cache_dir: os.PathLike | str, *, threads: Optional[int] = None,
                 batch_size: int = 64) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("teacher_engine='onnx' needs onnxruntime and onnx: pip install onnx onnxruntime") from e
        import torch
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(teacher, device="cpu")
        self.st.eval()
        body = self.st[0]
        self.hf = getattr(body, "auto_model", None) or body.model
        accepted = inspect.signature(self.hf.forward).parameters  # follows decorators' __wrapped__
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
        if "input_ids" not in self.input_names:
            raise ValueError(f"teacher {teacher!r}: {type(self.hf).__name__}.forward takes no input_ids")
        key = hashlib.sha256(f"{identity}\0opset{ONNX_OPSET}\0{','.join(self.input_names)}".encode()).hexdigest()[:20]
        self.path = Path(cache_dir) / "onnx" / f"teacher-{key}.onnx"
        if not self.path.is_file():
            _export(self.hf, self.path, self.input_names)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size
        self.checked = False
        self._torch = torch

    def _heads(self, features: dict, hidden: np.ndarray) -> np.ndarray:
        """The teacher's own modules after the body (Pooling, Normalize, ...) on ``hidden [b, L, H]``."""
        torch = self._torch
        feats = dict(features)
        feats["token_embeddings"] = torch.from_numpy(hidden)
        with torch.no_grad():
            for module in list(self.st)[1:]:
                feats = module(feats)
        return feats["sentence_embedding"].float().numpy()  # [b, d]

    def _batch(self, texts: List[str]) -> np.ndarray:
        prep = getattr(self.st, "preprocess", None) or self.st.tokenize
        features = prep(texts)
        inputs = {n: features[n].numpy().astype(np.int64) if n in features
                  else np.zeros_like(features["input_ids"].numpy(), dtype=np.int64) for n in self.input_names}
        hidden = self.session.run(["last_hidden_state"], inputs)[0].astype(np.float32)  # [b, L, H]
        out = self._heads(features, hidden)
        if not self.checked:
            self._check(texts, out)
        return out

    def _check(self, texts: List[str], out: np.ndarray) -> None:
        """Refuse the ONNX path unless this batch's rows equal the torch teacher's (cosine per row)."""
        from tinyhpd.eval.sts import cosine_pairs

        cos = cosine_pairs(out, self.st.encode(texts, batch_size=len(texts), convert_to_numpy=True))
        if float(cos.min()) < PARITY_MIN_COSINE:
            raise RuntimeError(f"ONNX Runtime teacher {self.path} differs from torch: min cosine {cos.min():.8f} "
                               f"< {PARITY_MIN_COSINE} on the first batch; use teacher_engine='torch'")
        self.min_cosine = float(cos.min())
        self.checked = True

    def encode(self, texts: List[str]) -> np.ndarray:
        """Embeddings of ``texts`` (batches of similar length, input order kept)."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: Optional[np.ndarray] = None
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            emb = self._batch([texts[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
        if out is None:
            raise ValueError("no sentences to encode")
        return out
