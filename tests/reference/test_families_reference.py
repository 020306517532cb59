"""Every encoder family of tinyhpd.families against PyTorch: a random-weight model of each, saved by the real
transformers and sentence-transformers (pinned in setup.cfg), compared with sentence-transformers' own `encode` to
1e-5 on inputs past 128 tokens, empty ones and padding-heavy batches; the real all-mpnet-base-v2 on STS-B."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tinyhpd
from helpers import need
from tinyhpd.eval import sts

SENTS = ["A man is playing a guitar.", "", "Crème brûlée 🍕 and a literal <pad> token", "word " * 300, "short one",
         "The cat sat on the mat and looked at the dog for a very long time.", "日本語のテキスト", "x"]
SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def _widen(model) -> None:
    """Init std 0.02 makes every token look alike; wider weights test parity on varied activations."""
    torch = need("torch")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.normal_(0.0, 0.05)


def _configs(t):
    """family -> (transformers model, which tokenizer): small random models of every family."""
    return {
        "bert": (lambda: t.BertModel(t.BertConfig(vocab_size=30522, **SMALL)), "minilm"),
        "roberta": (lambda: t.RobertaModel(t.RobertaConfig(vocab_size=30527, max_position_embeddings=514,
                                                           pad_token_id=1, type_vocab_size=1, **SMALL)), "mpnet"),
        "xlm-roberta": (lambda: t.XLMRobertaModel(t.XLMRobertaConfig(
            vocab_size=30527, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1, **SMALL)), "mpnet"),
        "distilbert": (lambda: t.DistilBertModel(t.DistilBertConfig(vocab_size=30522, dim=48, n_layers=2, n_heads=4,
                                                                    hidden_dim=96)), "minilm"),
        "electra": (lambda: t.ElectraModel(t.ElectraConfig(vocab_size=30522, embedding_size=32, **SMALL)), "minilm"),
        "electra-no-projection": (lambda: t.ElectraModel(t.ElectraConfig(vocab_size=30522, embedding_size=48,
                                                                         **SMALL)), "minilm"),
        "albert": (lambda: t.AlbertModel(t.AlbertConfig(vocab_size=30522, embedding_size=32, **SMALL)), "minilm"),
        "albert-groups": (lambda: t.AlbertModel(t.AlbertConfig(
            vocab_size=30522, embedding_size=32, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=96, num_hidden_groups=2, inner_group_num=2)), "minilm"),
        "mpnet": (lambda: t.MPNetModel(t.MPNetConfig(vocab_size=30527, **SMALL)), "mpnet"),
        # 4 layers: full, sliding, sliding, full; a window of +-8 tokens, so inputs past 17 tokens see it
        "modernbert": (lambda: t.ModernBertModel(t.ModernBertConfig(
            vocab_size=30522, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
            local_attention=16, global_attn_every_n_layers=3, max_position_embeddings=512, pad_token_id=0,
            bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102)), "minilm"),
    }


FAMILIES = ["bert", "roberta", "xlm-roberta", "distilbert", "electra", "electra-no-projection", "albert",
            "albert-groups", "mpnet", "modernbert"]


def build_family(family: str, dest: Path, minilm: Path, mpnet: Path, max_seq_length: int = 200) -> Path:
    """A random `family` model + mean pooling, saved by transformers and sentence-transformers."""
    torch, t, st = need("torch"), need("transformers"), need("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    make, tok = _configs(t)[family]
    torch.manual_seed(0)
    model = make().eval()
    _widen(model)
    hf = dest.parent / f"{dest.name}_hf"
    model.save_pretrained(str(hf))
    t.AutoTokenizer.from_pretrained(str(minilm if tok == "minilm" else mpnet)).save_pretrained(str(hf))
    hidden = getattr(model.config, "hidden_size", None) or model.config.dim
    st.SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=max_seq_length),
                                    Pooling(hidden, pooling_mode="mean")], device="cpu").save(str(dest))
    shutil.rmtree(hf)
    return dest


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_sentence_transformers(family, tmp_path, minilm_path, mpnet_path, st_reference):
    folder = build_family(family, tmp_path / family, minilm_path, mpnet_path)
    model = tinyhpd.load(folder)
    ref = st_reference(folder).encode(SENTS, convert_to_numpy=True)
    assert np.abs(model.encode(SENTS) - ref).max() <= 1e-5
    assert np.abs(model.encode(SENTS, batch_size=3) - ref).max() <= 1e-5  # other batches, other padding
    ids = model.tokenize(SENTS)
    assert max(len(x) for x in ids) == 200  # past 128 tokens, truncated where sentence-transformers truncates


def test_a_roberta_config_without_model_type_is_refused_not_guessed(tmp_path, minilm_path, mpnet_path):
    folder = build_family("roberta", tmp_path / "r", minilm_path, mpnet_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("model_type")
    (folder / "config.json").write_text(json.dumps(cfg))  # architectures ["RobertaModel"] still says it
    assert repr(tinyhpd.load(folder)).startswith(f"Model({str(folder)!r}, RoBERTa(")
    cfg.pop("architectures")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: no model_type or architectures, and the config is not "
                                         r"BERT's \(pad_token_id 1, type_vocab_size 1\)"):
        tinyhpd.load(folder)


def test_a_family_model_travels_by_pickle(tmp_path, minilm_path, mpnet_path):
    import pickle

    for family in ("mpnet", "albert-groups", "electra", "modernbert"):
        model = tinyhpd.load(build_family(family, tmp_path / family, minilm_path, mpnet_path))
        again = pickle.loads(pickle.dumps(model))
        assert again.fingerprint == model.fingerprint
        np.testing.assert_array_equal(again.encode(SENTS), model.encode(SENTS))


def test_real_all_mpnet_base_v2_matches_pytorch_on_stsb(mpnet_path, shared_dir, st_reference):
    """The second most used sentence-transformers model (and the distillation teacher): every unique STS-B test
    sentence within 1e-5 of PyTorch, and the same STS-B Spearman to 0.01."""
    task = sts.load_task("STSBenchmark", shared_dir / "data" / "senteval")
    unique = list(dict.fromkeys(task.s1 + task.s2)) + ["word " * 600]
    row = {s: i for i, s in enumerate(unique)}
    ours = tinyhpd.load(mpnet_path).encode(unique, batch_size=64)
    ref = st_reference(mpnet_path).encode(unique, batch_size=64, convert_to_numpy=True)
    assert np.abs(ours - ref).max() <= 1e-5

    def lookup(emb):
        return lambda texts: emb[[row[t] for t in texts]]

    score = sts.score_task(lookup(ours), task)
    assert abs(score - sts.score_task(lookup(ref), task)) <= 0.01
    assert score > 80  # all-mpnet-base-v2's published STS-B test Spearman is about 83
