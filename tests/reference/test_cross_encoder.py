"""tinyhpd.CrossEncoder against sentence-transformers' CrossEncoder: random-weight rerankers of each family saved by
the real transformers + sentence-transformers, scores to 1e-5 (with the saved activation, raw logits, several labels),
rank, the folder layouts of older sentence-transformers, and `python -m tinyhpd rerank`; prompts of embedding models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyhpd
from helpers import REPO, need

PAIRS = [("How many people live in Berlin?", "Berlin has a population of 3.5 million."),
         ("How many people live in Berlin?", "The capital of France is Paris."),
         ("", ""), ("word " * 300, "other " * 300), ("a", "b " * 700), ("Crème brûlée 🍕", "日本語のテキスト")]
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def build_cross_encoder(family: str, dest: Path, minilm: Path, mpnet: Path, labels: int = 1) -> Path:
    """A random `family` ForSequenceClassification model saved by sentence-transformers' CrossEncoder.save."""
    torch, t, st = need("torch"), need("transformers"), need("sentence_transformers")
    configs = {
        "bert": (t.BertForSequenceClassification, t.BertConfig(vocab_size=30522, **SMALL), minilm),
        "roberta": (t.RobertaForSequenceClassification, t.RobertaConfig(
            vocab_size=30527, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1, **SMALL), mpnet),
        "distilbert": (t.DistilBertForSequenceClassification, t.DistilBertConfig(
            vocab_size=30522, dim=48, n_layers=2, n_heads=4, hidden_dim=96), minilm),
        "electra": (t.ElectraForSequenceClassification, t.ElectraConfig(vocab_size=30522, embedding_size=32, **SMALL),
                    minilm),
        "albert": (t.AlbertForSequenceClassification, t.AlbertConfig(vocab_size=30522, embedding_size=32, **SMALL),
                   minilm),
        "mpnet": (t.MPNetForSequenceClassification, t.MPNetConfig(vocab_size=30527, **SMALL), mpnet),
        "modernbert": (t.ModernBertForSequenceClassification, t.ModernBertConfig(
            vocab_size=30522, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
            local_attention=16, max_position_embeddings=512, pad_token_id=0, bos_token_id=101, eos_token_id=102,
            cls_token_id=101, sep_token_id=102), minilm),
        "modernbert-mean": (t.ModernBertForSequenceClassification, t.ModernBertConfig(
            vocab_size=30522, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
            local_attention=16, max_position_embeddings=512, pad_token_id=0, bos_token_id=101, eos_token_id=102,
            cls_token_id=101, sep_token_id=102, classifier_pooling="mean"), minilm),
    }
    cls, cfg, tok = configs[family]
    cfg.num_labels = labels
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.normal_(0.0, 0.1 if "classifier" in name or "pooler" in name else 0.05)
    hf = dest.parent / f"{dest.name}_hf"
    model.save_pretrained(str(hf))
    t.AutoTokenizer.from_pretrained(str(tok)).save_pretrained(str(hf))
    st.CrossEncoder(str(hf), device="cpu", max_length=256).save(str(dest))
    shutil.rmtree(hf)
    return dest


@pytest.fixture(scope="module")
def st_cross():
    st = need("sentence_transformers")
    return lambda path: st.CrossEncoder(str(path), device="cpu")


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra", "albert", "mpnet", "modernbert",
                                    "modernbert-mean"])
def test_cross_encoder_family_matches_sentence_transformers(family, tmp_path, minilm_path, mpnet_path, st_cross):
    folder = build_cross_encoder(family, tmp_path / family, minilm_path, mpnet_path)
    ours, ref = tinyhpd.CrossEncoder(folder), st_cross(folder)
    assert ours.activation_fn == "Sigmoid" and ours.max_length == 256
    assert np.abs(ours.predict(PAIRS) - ref.predict(PAIRS)).max() <= 1e-5
    raw = ours.predict(PAIRS, activation_fn="Identity", batch_size=2)
    torch = need("torch")
    assert np.abs(raw - ref.predict(PAIRS, activation_fn=torch.nn.Identity())).max() <= 1e-5
    assert raw.std() > 1e-3  # the scores differ between pairs: the test can see a wrong one


def test_several_labels_and_softmax(tmp_path, minilm_path, mpnet_path, st_cross):
    folder = build_cross_encoder("bert", tmp_path / "nli", minilm_path, mpnet_path, labels=3)
    ours, ref = tinyhpd.CrossEncoder(folder), st_cross(folder)
    assert ours.activation_fn == "Identity"
    got = ours.predict(PAIRS)
    assert got.shape == (len(PAIRS), 3)
    assert np.abs(got - ref.predict(PAIRS)).max() <= 1e-5
    assert np.abs(ours.predict(PAIRS, apply_softmax=True) - ref.predict(PAIRS, apply_softmax=True)).max() <= 1e-5
    with pytest.raises(ValueError, match="rank needs a model with one label"):
        ours.rank("q", ["d"])


def test_rank_matches_sentence_transformers(tmp_path, minilm_path, mpnet_path, st_cross):
    folder = build_cross_encoder("bert", tmp_path / "ce", minilm_path, mpnet_path)
    docs = [b for _, b in PAIRS]
    ours = tinyhpd.CrossEncoder(folder).rank(PAIRS[0][0], docs, top_k=4, return_documents=True)
    ref = st_cross(folder).rank(PAIRS[0][0], docs, top_k=4, return_documents=True)
    assert [h["corpus_id"] for h in ours] == [h["corpus_id"] for h in ref]
    assert [h["text"] for h in ours] == [h["text"] for h in ref]
    assert np.allclose([h["score"] for h in ours], [h["score"] for h in ref], atol=1e-5)


def test_plain_hugging_face_folders_of_older_sentence_transformers(tmp_path, minilm_path, mpnet_path, st_cross):
    """sentence-transformers 2.x kept the activation in config.json (`sbert_ce_default_activation_function`), 4.x
    under `sentence_transformers`; the folder has no modules.json."""
    folder = build_cross_encoder("bert", tmp_path / "ce", minilm_path, mpnet_path)
    ref = st_cross(folder).predict(PAIRS, activation_fn=need("torch").nn.Identity())
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "sbert_ce_default_activation_function":
                                                    "torch.nn.modules.linear.Identity"}))
    ours = tinyhpd.CrossEncoder(folder)
    assert ours.activation_fn == "Identity"
    assert np.abs(ours.predict(PAIRS[:3]) - ref[:3]).max() <= 1e-5  # max_length 512 now: short pairs only
    (folder / "config.json").write_text(json.dumps({**cfg, "sentence_transformers": {
        "activation_fn": "torch.nn.modules.activation.Tanh", "version": "4.0.1"}}))
    assert np.abs(tinyhpd.CrossEncoder(folder).predict(PAIRS[:3]) - np.tanh(ref[:3])).max() <= 1e-5


def test_rerank_command(tmp_path, minilm_path, mpnet_path):
    folder = build_cross_encoder("bert", tmp_path / "ce", minilm_path, mpnet_path)
    docs = [b for _, b in PAIRS[:2]]
    proc = subprocess.run([sys.executable, "-m", "tinyhpd", "rerank", "--model", str(folder), PAIRS[0][0], *docs],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    scores = tinyhpd.CrossEncoder(folder).predict([(PAIRS[0][0], d) for d in docs])
    assert [x["index"] for x in lines] == list(np.argsort(-scores))
    assert np.allclose([x["score"] for x in lines], sorted(scores, reverse=True), atol=1e-6)


def test_prompts_match_sentence_transformers(tmp_path, st_saved_hpd_path, st_reference):
    folder = shutil.copytree(st_saved_hpd_path, tmp_path / "e5")
    cfg_path = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"})
    cfg_path.write_text(json.dumps(cfg))
    ours, ref = tinyhpd.load(folder), st_reference(folder)
    texts = [a for a, _ in PAIRS]
    assert np.abs(ours.encode(texts) - ref.encode(texts)).max() <= 1e-5  # the default prompt
    assert np.abs(ours.encode(texts, prompt_name="query") - ref.encode(texts, prompt_name="query")).max() <= 1e-5
    assert np.abs(ours.encode(texts, prompt="Represent: ") - ref.encode(texts, prompt="Represent: ")).max() <= 1e-5
    assert np.abs(ours.encode(texts) - ours.encode(texts, prompt="passage: ")).max() == 0
    assert ours.fingerprint != tinyhpd.load(st_saved_hpd_path).fingerprint  # the default prompt changes the vectors
