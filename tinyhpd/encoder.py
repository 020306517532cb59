"""The encoder part of a model folder, read once for every pipeline that runs it (`Model` for embeddings,
`CrossEncoder` for pair scores): its config (any family), weights (one strict table), tokenizer and length."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

import numpy as np

from tinyhpd.bert import bert_forward
from tinyhpd.checkpoints import find_checkpoint, read_checkpoint
from tinyhpd.config import BertConfig, read_do_lower_case, read_max_seq_length
from tinyhpd.families import WORDPIECE_FAMILIES
from tinyhpd.modernbert import modernbert_forward
from tinyhpd.params import BertParams, bert_params
from tinyhpd.tokenizer import load_tokenizer

__all__ = ["Encoder", "load_encoder", "encoder_forward"]


def encoder_forward(params: BertParams, config: BertConfig, ids: np.ndarray, packed, ws, types=None) -> np.ndarray:
    """The family's forward pass: token rows `[n_tok, H]` of packed ids (bert.py, or modernbert.py)."""
    forward = modernbert_forward if config.model_type == "modernbert" else bert_forward
    return forward(params, config, ids, packed, ws, types)


@dataclass(frozen=True)
class Encoder:
    config: BertConfig
    params: BertParams
    tokenizer: Any  # tokenizers.Tokenizer, truncating at max_seq_length
    max_seq_length: int
    lowercase: bool
    config_path: Path


def load_encoder(folder: Path, consumed: Iterable[str] = ()) -> Tuple[Encoder, Dict[str, np.ndarray], str]:
    """(encoder, every tensor of its checkpoint, the checkpoint's path) of the Transformer module in `folder`;
    `consumed`: names another part (a classifier head) reads from the same checkpoint."""
    config_path = folder / "config.json"
    config = BertConfig.from_file(config_path)
    ckpt = find_checkpoint(folder)
    tensors = read_checkpoint(ckpt)
    params = bert_params(tensors, config, str(ckpt), consumed)
    max_len = read_max_seq_length(folder, config.max_positions)
    tokenizer = load_tokenizer(folder, max_len, wordpiece=config.model_type in WORDPIECE_FAMILIES)
    return (Encoder(config, params, tokenizer, max_len, read_do_lower_case(folder), config_path), tensors,
            str(ckpt))
