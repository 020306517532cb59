"""Models built with NumPy alone, in the two layouts sentence-transformers writes: no torch needed.

- `build_new(dest, ...)`: the current layout (safetensors, `pooling_mode`, current module type names), as
  `SentenceTransformer.save` writes it.
- `build_old(dest, new)`: the same weights laid out like the published 2022 HPD repo: `pytorch_model.bin` in torch's zip
  format (written here byte by byte, no torch: `write_torch_zip`), with the int64 `position_ids` buffer, 2.x module
  type names and boolean pooling keys, `2_Dense/pytorch_model.bin`.
- A WordPiece vocabulary in BERT's id order ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103): characters,
  `##` pieces and a few hundred English words, so real sentences tokenise into real pieces.

Weights are random but wide (std 0.05 plus LayerNorm gains away from 1), so outputs vary a lot between inputs.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

REPO_TESTS = Path(__file__).resolve().parent
HPD_ARCH = dict(hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1200)
SMALL_ARCH = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)

_WORDS = (
    "a an the and or but if of to in on at by for with from into over under near after before about as is are was "
    "were be been being has have had do does did not no yes this that these those it its he she they we you i me my "
    "his her their our your him them us who what which when where why how all any some many much more most other "
    "one two three four five six seven eight nine ten first last new old good bad big small long short high low "
    "man men woman women child children boy girl people person dog dogs cat cats horse bird fish animal car bus "
    "train bike plane boat road street city house home room water food ball guitar piano music song game team "
    "day night time year week morning world country government police market stock price company president "
    "play plays playing played run runs running walk walks walking ride rides riding eat eats eating drink "
    "sit sits sitting stand standing jump jumping swim swimming cut cutting cook cooking talk talking look "
    "looking watch watching read reading write writing make making take taking give go goes going come coming "
    "say says said see sees saw get gets got think know like likes love loves want wants need use used "
    "black white red blue green yellow brown young little large great same different "
    "is's n't 're 've 'll 'd"
).split()
_PUNCT = list(".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`")


def vocab() -> list:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + _PUNCT
    tokens += chars + ["##" + c for c in chars if c.isalnum()]
    seen = set(tokens)
    for w in _WORDS:
        if w not in seen:
            tokens.append(w)
            seen.add(w)
    for suffix in ("s", "es", "ed", "ing", "er", "ly", "ion", "est"):
        if "##" + suffix not in seen:
            tokens.append("##" + suffix)
            seen.add("##" + suffix)
    return tokens


def bert_state(arch: dict, vocab_size: int, max_pos: int, seed: int) -> Dict[str, np.ndarray]:
    """A random BertModel state dict (Hugging Face names, torch's [out, in] Linear layout), float32."""
    rng = np.random.default_rng(seed)
    H, I = arch["hidden_size"], arch["intermediate_size"]

    def w(*shape):
        return rng.normal(0.0, 0.05, size=shape).astype(np.float32)

    def ln(prefix: str, out: dict) -> None:
        out[prefix + ".weight"] = (1.0 + rng.normal(0.0, 0.1, size=H)).astype(np.float32)
        out[prefix + ".bias"] = rng.normal(0.0, 0.1, size=H).astype(np.float32)

    s: Dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": w(vocab_size, H),
        "embeddings.position_embeddings.weight": w(max_pos, H),
        "embeddings.token_type_embeddings.weight": w(2, H),
    }
    ln("embeddings.LayerNorm", s)
    for i in range(arch["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            s[p + f"attention.self.{proj}.weight"], s[p + f"attention.self.{proj}.bias"] = w(H, H), w(H)
        s[p + "attention.output.dense.weight"], s[p + "attention.output.dense.bias"] = w(H, H), w(H)
        ln(p + "attention.output.LayerNorm", s)
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = w(I, H), w(I)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = w(H, I), w(H)
        ln(p + "output.LayerNorm", s)
    s["pooler.dense.weight"], s["pooler.dense.bias"] = w(H, H), w(H)
    return s


def _bert_config(arch: dict, vocab_size: int, max_pos: int) -> dict:
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
            "max_position_embeddings": max_pos, "type_vocab_size": 2, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
            "initializer_range": 0.02, "pad_token_id": 0, "position_embedding_type": "absolute", **arch}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


_TOKENIZER_CONFIG = {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                     "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True,
                     "strip_accents": None, "tokenizer_class": "BertTokenizer"}
_SPECIAL_MAP = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}


def build_new(dest: Path, *, seed: int = 0, arch: Optional[dict] = None, dense_out: Optional[int] = 128,
              max_seq_length: int = 256, max_pos: int = 512, pooling: str = "mean") -> Path:
    """A model in the current sentence-transformers layout (safetensors), built with NumPy."""
    from safetensors.numpy import save_file

    arch = dict(HPD_ARCH if arch is None else arch)
    dest = Path(dest)
    dest.mkdir(parents=True)
    toks = vocab()
    (dest / "vocab.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    state = bert_state(arch, len(toks), max_pos, seed)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    _write_json(dest / "config.json", _bert_config(arch, len(toks), max_pos))
    _write_json(dest / "tokenizer_config.json", {**_TOKENIZER_CONFIG, "model_max_length": max_seq_length})
    _write_json(dest / "special_tokens_map.json", _SPECIAL_MAP)
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(dest / "config_sentence_transformers.json",
                {"__version__": {"sentence_transformers": "5.1.0"}, "similarity_fn_name": "cosine"})
    H = arch["hidden_size"]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    _write_json(dest / "1_Pooling" / "config.json", {"embedding_dimension": H, "pooling_mode": pooling,
                                                     "include_prompt": True})
    if dense_out:
        rng = np.random.default_rng(seed + 1)
        (dest / "2_Dense").mkdir()
        save_file({"linear.weight": rng.normal(0.0, 0.05, size=(dense_out, H)).astype(np.float32),
                   "linear.bias": rng.normal(0.0, 0.1, size=dense_out).astype(np.float32)},
                  str(dest / "2_Dense" / "model.safetensors"))
        _write_json(dest / "2_Dense" / "config.json", {"in_features": H, "out_features": dense_out, "bias": True,
                                                       "activation_function": "torch.nn.modules.activation.Tanh"})
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    _write_json(dest / "modules.json", modules)
    return dest


# ---------------------------------------------------------------------------------------------- torch's zip format
_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
            np.dtype(np.float64): "DoubleStorage", np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage"}


def _unicode(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(_int(i) for i in items) + b"t"


def state_dict_pickle(tensors: Dict[str, np.ndarray]) -> bytes:
    """The data.pkl torch.save writes for `module.state_dict()`: an OrderedDict of `_rebuild_tensor_v2(storage,
    offset, size, stride, requires_grad, hooks)`, each storage a persistent id `('storage', torch.XStorage, key,
    'cpu', n)`, then the `_metadata` attribute set by BUILD. Hostile tests mutate it; the torch-free tests of real
    bytes read tests/data/torch_written (written by torch itself)."""
    out = [b"\x80\x02", b"ccollections\nOrderedDict\n", b")R", b"("]
    for key, (name, arr) in enumerate(tensors.items()):
        strides = []
        acc = 1
        for d in reversed(arr.shape):
            strides.append(acc)
            acc *= d
        out += [_unicode(name), b"ctorch._utils\n_rebuild_tensor_v2\n", b"(",
                b"(", _unicode("storage"), f"ctorch\n{_STORAGE[arr.dtype]}\n".encode(), _unicode(str(key)),
                _unicode("cpu"), _int(arr.size), b"tQ",
                _int(0), _tuple(arr.shape), _tuple(reversed(strides)), b"\x89",
                b"ccollections\nOrderedDict\n", b")R", b"tR"]
    # Module.state_dict() returns an OrderedDict with a `_metadata` attribute, which pickle restores with BUILD:
    # {'_metadata': OrderedDict({'': {'version': 1}, ...})} (tests/data/torch_written holds files torch itself wrote).
    modules = sorted({name.rsplit(".", 1)[0] if "." in name else "" for name in tensors} | {""})
    meta = b"".join(_unicode(m) + b"}" + _unicode("version") + _int(1) + b"s" for m in modules)
    out += [b"u", b"}", _unicode("_metadata"), b"ccollections\nOrderedDict\n)R(", meta, b"us", b"b", b"."]
    return b"".join(out)


def write_torch_zip(path: Path, tensors: Dict[str, np.ndarray], archive: str = "archive") -> Path:
    """A checkpoint in torch.save's zip format (what `pytorch_model.bin` holds since torch 1.6), without torch."""
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", state_dict_pickle(tensors))
        zf.writestr(f"{archive}/byteorder", "little")
        for key, arr in enumerate(tensors.values()):
            zf.writestr(f"{archive}/data/{key}", arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{archive}/version", "3\n")
    return path


def build_old(dest: Path, new: Path) -> Path:
    """The weights of `new` laid out exactly like the published 2022 repo (Xuandong/HPD-TinyBERT-F128)."""
    from safetensors.numpy import load_file

    dest = Path(dest)
    dest.mkdir(parents=True)
    state = load_file(str(new / "model.safetensors"))
    cfg = json.loads((new / "config.json").read_text())
    state["embeddings.position_ids"] = np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None, :]
    write_torch_zip(dest / "pytorch_model.bin", state)
    cfg["transformers_version"] = "4.11.3"
    _write_json(dest / "config.json", cfg)
    (dest / "vocab.txt").write_text((new / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
    _write_json(dest / "tokenizer_config.json", {**_TOKENIZER_CONFIG, "model_max_length": 512})
    _write_json(dest / "special_tokens_map.json", _SPECIAL_MAP)
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": 256, "do_lower_case": False})
    _write_json(dest / "config_sentence_transformers.json",
                {"__version__": {"sentence_transformers": "2.1.0", "transformers": "4.11.3", "pytorch": "1.9.0"}})
    _write_json(dest / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    hidden = cfg["hidden_size"]
    _write_json(dest / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    dense = load_file(str(new / "2_Dense" / "model.safetensors"))
    _write_json(dest / "2_Dense" / "config.json", {
        "in_features": hidden, "out_features": int(dense["linear.weight"].shape[0]), "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"})
    write_torch_zip(dest / "2_Dense" / "pytorch_model.bin", dense)
    return dest


def build_cross_encoder(dest: Path, *, seed: int = 0, arch: Optional[dict] = None, labels: int = 1,
                        max_seq_length: int = 128) -> Path:
    """A BertForSequenceClassification reranker in a plain Hugging Face folder (no modules.json), built with NumPy:
    `bert.*` encoder weights, the pooler, `classifier` [labels, H]."""
    from safetensors.numpy import save_file

    arch = dict(SMALL_ARCH if arch is None else arch)
    dest = Path(dest)
    dest.mkdir(parents=True)
    toks = vocab()
    (dest / "vocab.txt").write_text("\n".join(toks) + "\n", encoding="utf-8")
    state = {f"bert.{k}": v for k, v in bert_state(arch, len(toks), 512, seed).items()}
    rng = np.random.default_rng(seed + 7)
    state["classifier.weight"] = rng.normal(0.0, 0.3, size=(labels, arch["hidden_size"])).astype(np.float32)
    state["classifier.bias"] = rng.normal(0.0, 0.1, size=labels).astype(np.float32)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    cfg = {**_bert_config(arch, len(toks), 512), "architectures": ["BertForSequenceClassification"],
           "id2label": {str(i): f"LABEL_{i}" for i in range(labels)}}
    _write_json(dest / "config.json", cfg)
    _write_json(dest / "tokenizer_config.json", {**_TOKENIZER_CONFIG, "model_max_length": max_seq_length})
    _write_json(dest / "special_tokens_map.json", _SPECIAL_MAP)
    return dest
