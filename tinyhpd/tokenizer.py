"""Tokenization with the Hugging Face `tokenizers` library: the folder's tokenizer.json, or BERT WordPiece from vocab.txt."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple

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


def _prepare(text: str, lowercase: bool) -> str:
    """What the tokenizer is given, as sentence-transformers prepares it: stripped, lower-cased if the model asks."""
    return text.strip().lower() if lowercase else text.strip()


def _encode_batch(tok, prepared: Sequence[Any], texts_of: Callable[[int], List[Tuple[str, str]]]) -> list:
    """`tok.encode_batch`, whose own error names no item: on failure, the item it refused is named (`texts_of(k)`:
    the (label, text) pieces of item k)."""
    try:
        return tok.encode_batch(list(prepared), add_special_tokens=True)
    except Exception as exc:
        for k in range(len(prepared)):
            for label, text in texts_of(k):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise ValueError(f"{label} is not valid Unicode text (a lone surrogate at character "
                                     f"{bad.start})") from None
        raise ValueError(f"the tokenizer refused the input: {exc}") from None


# Texts longer than this many characters per token of max_seq_length are tokenised from a prefix (_bounded).
_CHARS_PER_TOKEN = 16


def _bounded(tok, text: str, lowercase: bool, max_len: int):
    """The encoding of a long text from a prefix of it: a 51 MB line cost 7 GB and minutes when tokenised whole,
    for 128 tokens. The prefix grows (doubling) until the tokens kept are certainly those of the whole text: every
    kept token comes from a pre-tokenizer word that ends before the prefix's last two words (the words at the cut may
    tokenise differently; the words before it cannot, as normalisers and pre-tokenizers are local). Returns None
    where that cannot be told (a tokenizer without word ids): the caller tokenises the whole text."""
    size = max_len * _CHARS_PER_TOKEN
    while size < len(text):
        enc = tok.encode(_prepare(text[:size], lowercase), add_special_tokens=True)
        if enc.overflowing:
            kept = [w for w in enc.word_ids if w is not None]
            rest = [w for o in enc.overflowing for w in o.word_ids if w is not None]
            if not kept or not rest:
                return None
            if max(kept) < max(rest) - 1:
                return enc
        size *= 2
    return None


def tokenize_info(tok, texts: Sequence[str], lowercase: bool) -> Tuple[List[np.ndarray], List[bool]]:
    """(token ids, truncated?) for each text: `truncated` is True where the text had more than max_seq_length tokens.
    Texts are stripped (and lower-cased if asked); a text far longer than max_seq_length tokens is tokenised from a
    prefix that gives the same tokens (`_bounded`), so the work per input is bounded."""
    max_len = (tok.truncation or {}).get("max_length")
    long_encs = {}
    if max_len:
        for i, t in enumerate(texts):
            if len(t) > max_len * _CHARS_PER_TOKEN:
                enc = _bounded(tok, t, lowercase, max_len)
                if enc is not None:
                    long_encs[i] = enc
    todo = [i for i in range(len(texts)) if i not in long_encs]
    prepared = [_prepare(texts[i], lowercase) for i in todo]
    batch = _encode_batch(tok, prepared, lambda k: [(f"sentences[{todo[k]}]", prepared[k])])
    encs = dict(zip(todo, batch))
    encs.update(long_encs)
    ordered = [encs[i] for i in range(len(texts))]
    return [np.asarray(e.ids, dtype=np.int64) for e in ordered], [bool(e.overflowing) for e in ordered]


def tokenize_pairs(tok, pairs: Sequence[Tuple[str, str]], lowercase: bool) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(token ids, token types) of each (a, b) pair, `[CLS] a [SEP] b [SEP]` (or the family's own template) with
    type 1 on the second segment, truncated `longest_first` to max_seq_length, as sentence-transformers' CrossEncoder
    tokenises them."""
    prepared = [(_prepare(a, lowercase), _prepare(b, lowercase)) for a, b in pairs]
    encs = _encode_batch(tok, prepared, lambda k: [(f"pairs[{k}] ({side})", text)
                                                   for side, text in zip("ab", prepared[k])])
    return ([np.asarray(e.ids, dtype=np.int64) for e in encs], [np.asarray(e.type_ids, dtype=np.int64) for e in encs])
