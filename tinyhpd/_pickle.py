"""A Model as plain data and back: what travels to a Spark, Ray or Dask worker.

The state holds only arrays, dicts, lists, strings and numbers (no code objects, no file paths that must exist on the
worker): the encoder config and weights, the tokenizer as its JSON text, and each head's config and weights. Rebuilding
makes a new lock, thread-local buffers and worker pool, and checks the fingerprint against the one sent along.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict

import numpy as np

from tinyhpd.config import BertConfig
from tinyhpd.params import BertParams, LayerParams

__all__ = ["model_state", "rebuild_model"]

STATE_VERSION = 2


def _head_state(head) -> Dict[str, Any]:
    return {"kind": head.kind, **head.state()}


def _head_from_state(state: Dict[str, Any]):
    from tinyhpd.heads import HEADS

    if state.get("kind") not in HEADS:
        raise ValueError(f"pickled tinyhpd model: unknown head kind {state.get('kind')!r}")
    return HEADS[state["kind"]].from_state(state)


def _unique(layers) -> Dict[int, Any]:
    """Each layer object once, in first-use order, keyed by its id() (ALBERT repeats shared layers)."""
    out: Dict[int, Any] = {}
    for lp in layers:
        out.setdefault(id(lp), lp)
    return out


def model_state(model) -> Dict[str, Any]:
    b = model._bert
    unique = _unique(b.layers)
    position = {key: i for i, key in enumerate(unique)}
    return {
        "version": STATE_VERSION,
        "config": dataclasses.asdict(model.config),
        "embeddings": {k: np.asarray(getattr(b, k)) for k in ("word_emb", "pos_emb", "type_emb", "emb_ln_g",
                                                              "emb_ln_b")},
        "extras": {k: np.asarray(v) for k, v in b.extras().items()},
        "layers": [{k: np.asarray(v) for k, v in vars(lp).items()} for lp in unique.values()],
        "layer_order": [position[id(lp)] for lp in b.layers],
        "tokenizer": model._tokenizer.to_str(),
        "heads": [_head_state(h) for h in model._heads],
        "max_seq_length": model.max_seq_length,
        "lowercase": model._lowercase,
        "name_or_path": model.name_or_path,
        "revision": model.revision,
        "num_threads": model.num_threads,
        "folder": None if model.folder is None else str(model.folder),
        "fingerprint": model.fingerprint,
        "prompts": dict(model.prompts),
        "default_prompt_name": model.default_prompt_name,
    }


def rebuild_model(state: Dict[str, Any]):
    from tokenizers import Tokenizer

    from tinyhpd.model import Model

    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"pickled tinyhpd model: state version {state.get('version') if isinstance(state, dict) else '?'}"
                         f" is not {STATE_VERSION} (pickled by another tinyhpd version?)")
    config = BertConfig(**state["config"])
    unique = [LayerParams(**lp) for lp in state["layers"]]
    params = BertParams(layers=tuple(unique[i] for i in state["layer_order"]), **state["embeddings"],
                        **state["extras"])
    tokenizer = Tokenizer.from_str(state["tokenizer"])
    folder = state["folder"]
    model = Model(config, params, tokenizer, [_head_from_state(h) for h in state["heads"]],
                  max_seq_length=state["max_seq_length"], lowercase=state["lowercase"],
                  name_or_path=state["name_or_path"], revision=state["revision"],
                  num_threads=_worker_threads(state["num_threads"]),
                  folder=None if folder is None else Path(folder), prompts=state["prompts"],
                  default_prompt_name=state["default_prompt_name"])
    if model.fingerprint != state["fingerprint"]:
        raise ValueError("pickled tinyhpd model: the rebuilt model's fingerprint differs from the one pickled with it "
                         "(corrupted in transit, or another tinyhpd/tokenizers version on this worker)")
    return model


def _worker_threads(sent: int) -> int:
    """The sender's thread count, capped by the CPUs this worker may use: a Ray/Spark task's CPUs, else the process's
    (a 64-core driver, a 1-CPU task)."""
    from tinyhpd._threads import default_num_threads, task_cpus

    return max(1, min(int(sent), task_cpus() or default_num_threads()))
