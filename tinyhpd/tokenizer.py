"""Tokenization with the Hugging Face `tokenizers` library: the folder's tokenizer.json, or BERT WordPiece from vocab.txt."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from tinyhpd.config import read_json

__all__ = ["load_tokenizer", "tokenize", "tokenize_info", "tokenize_pairs"]

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _wordpiece_from_vocab(folder: Path):
    """BERT's WordPiece tokenizer built from vocab.txt and tokenizer_config.json (lowercase, accents, CJK)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer found (expected tokenizer.json or vocab.txt)")
    cfg = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    lowercase = bool(cfg.get("do_lower_case", True))
    strip_accents = cfg.get("strip_accents")  # None: follow lowercase, as BertTokenizer does
    tok = Tokenizer(models.WordPiece.from_file(str(vocab), unk_token=cfg.get("unk_token", "[UNK]")))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
        strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = cfg.get("cls_token", "[CLS]"), cfg.get("sep_token", "[SEP]")
    for name in (cls, sep):
        if tok.token_to_id(name) is None:
            raise ValueError(f"{vocab}: special token {name!r} is not in the vocabulary")
    tok.post_processor = processors.BertProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)))
    tok.add_special_tokens([t for t in _SPECIAL if tok.token_to_id(t) is not None])
    return tok


def load_tokenizer(folder: Path, max_seq_length: int, wordpiece: bool = True):
    """A `tokenizers.Tokenizer` with no padding and truncation at `max_seq_length` (special tokens included).
    Without tokenizer.json, BERT's WordPiece is rebuilt from vocab.txt only where `wordpiece` allows it (the family
    tokenises that way): any other family needs its tokenizer.json."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ValueError(f"{path}: cannot be read by the tokenizers library ({exc})") from None
    elif wordpiece:
        tok = _wordpiece_from_vocab(folder)
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer.json (this model family's tokenizer cannot be rebuilt from "
                                "vocab.txt; save the tokenizer with a current transformers)")
    tok.no_padding()
    tok.enable_truncation(max_length=max_seq_length)
    return tok


def tokenize(tok, texts: Sequence[str], lowercase: bool) -> List[np.ndarray]:
    """Token ids for each text, special tokens added, truncated; texts are stripped (and lower-cased if asked)."""
    return tokenize_info(tok, texts, lowercase)[0]


def tokenize_info(tok, texts: Sequence[str], lowercase: bool) -> Tuple[List[np.ndarray], List[bool]]:
    """(token ids, truncated?) for each text: `truncated` is True where the text had more than max_seq_length tokens."""
    prepared = [t.strip().lower() if lowercase else t.strip() for t in texts]
    try:
        encs = tok.encode_batch(prepared, add_special_tokens=True)
    except Exception as exc:  # tokenizers' own error names no item: find the one it refused
        for i, t in enumerate(prepared):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as bad:
                raise ValueError(f"sentences[{i}] is not valid Unicode text (a lone surrogate at character "
                                 f"{bad.start})") from None
        raise ValueError(f"the tokenizer refused the input: {exc}") from None
    return [np.asarray(e.ids, dtype=np.int64) for e in encs], [bool(e.overflowing) for e in encs]


def tokenize_pairs(tok, pairs: Sequence[Tuple[str, str]], lowercase: bool) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(token ids, token types) of each (a, b) pair, `[CLS] a [SEP] b [SEP]` (or the family's own template) with
    type 1 on the second segment, truncated `longest_first` to max_seq_length, as sentence-transformers' CrossEncoder
    tokenises them."""
    def prep(t: str) -> str:
        return t.strip().lower() if lowercase else t.strip()

    prepared = [(prep(a), prep(b)) for a, b in pairs]
    try:
        encs = tok.encode_batch(prepared, add_special_tokens=True)
    except Exception as exc:  # tokenizers' own error names no item: find the one it refused
        for i, pair in enumerate(prepared):
            for side, text in zip("ab", pair):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise ValueError(f"pairs[{i}] ({side}) is not valid Unicode text (a lone surrogate at character "
                                     f"{bad.start})") from None
        raise ValueError(f"the tokenizer refused the input: {exc}") from None
    return ([np.asarray(e.ids, dtype=np.int64) for e in encs], [np.asarray(e.type_ids, dtype=np.int64) for e in encs])
