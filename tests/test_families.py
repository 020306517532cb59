"""tinyhpd.families without torch: how a config's family is told (never guessed), the renames onto BERT's names, and
the family-specific pieces of the forward pass (RoBERTa positions, MPNet buckets); prompts and cross-encoder errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tinyhpd
from tinyhpd import attention, bert
from tinyhpd.config import BertConfig
from tinyhpd.families import canonical_name, detect_family


@pytest.mark.parametrize("cfg, family", [
    ({"model_type": "xlm-roberta"}, "roberta"),
    ({"model_type": "mpnet"}, "mpnet"),
    ({"architectures": ["RobertaForMaskedLM"]}, "roberta"),
    ({"architectures": ["XLMRobertaModel"]}, "roberta"),
    ({"architectures": ["DistilBertModel"]}, "distilbert"),
    ({"architectures": ["ModernBertModel"]}, "modernbert"),
    ({"pad_token_id": 0, "type_vocab_size": 2}, "bert"),  # a 2019 BERT config: nothing says otherwise
    ({}, "bert"),
])
def test_the_family_is_told_from_the_config(tmp_path, cfg, family):
    assert detect_family(cfg, tmp_path / "config.json") == family


@pytest.mark.parametrize("cfg, error", [
    ({"model_type": "deberta-v2"}, r"model_type 'deberta-v2' \(DeBERTa-v2\) is not supported"),
    ({"model_type": "gpt2"}, r"model_type 'gpt2' \('gpt2'\) is not supported"),
    ({"architectures": ["GPT2Model"]}, r"no model_type, and architectures 'GPT2Model' is not a supported family"),
    ({"pad_token_id": 1, "type_vocab_size": 1}, r"no model_type or architectures, and the config is not BERT's"),
    ({"dim": 768, "n_layers": 6}, r"no model_type or architectures, and the config is not BERT's"),
])
def test_a_family_that_cannot_be_told_is_an_error(tmp_path, cfg, error):
    with pytest.raises(ValueError, match=error):
        detect_family(cfg, tmp_path / "config.json")


@pytest.mark.parametrize("family, key, name", [
    ("distilbert", "distilbert.transformer.layer.3.attention.q_lin.weight", "encoder.layer.3.attention.self.query.weight"),
    ("distilbert", "transformer.layer.0.output_layer_norm.bias", "encoder.layer.0.output.LayerNorm.bias"),
    ("mpnet", "mpnet.encoder.layer.11.attention.attn.o.bias", "encoder.layer.11.attention.output.dense.bias"),
    ("mpnet", "encoder.layer.2.attention.LayerNorm.weight", "encoder.layer.2.attention.output.LayerNorm.weight"),
    ("albert", "albert.encoder.albert_layer_groups.1.albert_layers.0.ffn_output.weight",
     "encoder.group.1.0.output.dense.weight"),
    ("albert", "albert.encoder.embedding_hidden_mapping_in.bias", "embeddings.projection.bias"),
    ("electra", "electra.embeddings_project.weight", "embeddings.projection.weight"),
    ("roberta", "roberta.encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.weight"),
    ("bert", "bert.embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight"),
])
def test_checkpoint_names_map_onto_berts(family, key, name):
    assert canonical_name(key, family) == name


@pytest.mark.parametrize("cfg, layer_types, window", [
    ({"global_attn_every_n_layers": 3, "local_attention": 128}, ("full", "sliding", "sliding", "full"), 64),
    ({"layer_types": ["full_attention", "full_attention", "sliding_attention", "full_attention"],
      "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}, "local_attention": 32},
     ("full", "full", "sliding", "full"), 16),
])
def test_modernbert_configs_of_both_transformers_generations(tmp_path, cfg, layer_types, window):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "modernbert", "vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 4,
                                "num_attention_heads": 2, "intermediate_size": 32, **cfg}))
    config = BertConfig.from_file(path)
    assert config.layer_types == layer_types and config.sliding_window == window and config.max_positions == 8192
    path.write_text(json.dumps({"model_type": "modernbert", "vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 4,
                                "num_attention_heads": 2, "intermediate_size": 32, "mlp_bias": True}))
    with pytest.raises(ValueError, match="mlp_bias is not supported"):
        BertConfig.from_file(path)


def test_roberta_positions_start_after_padding_and_skip_pad_tokens():
    cfg = BertConfig(vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4,
                     max_position_embeddings=20, type_vocab_size=1, hidden_act="gelu", layer_norm_eps=1e-5,
                     model_type="roberta", padding_idx=1)
    ids = [np.array([0, 5, 1, 6, 2]), np.array([0, 7, 2])]  # a literal <pad> (id 1) inside the first sequence
    packed = attention.pack([len(x) for x in ids])
    got = bert.positions(np.concatenate(ids), packed, cfg)
    assert got.tolist() == [2, 3, 1, 4, 5, 2, 3, 4]  # as transformers' create_position_ids_from_input_ids
    assert cfg.max_positions == 18


def test_mpnet_buckets_are_exact_near_and_logarithmic_far():
    rel = np.arange(-200, 201)
    b = bert.relative_position_bucket(rel, 32)
    assert b[rel == 0][0] == 0 and b[rel == -3][0] == 3 and b[rel == 3][0] == 16 + 3  # exact below 8
    assert b.max() == 31 and b[rel == -200][0] == 15 and b[rel == 200][0] == 31  # capped past max_distance
    assert (np.diff(b[rel <= 0][::-1]) >= 0).all()  # farther back, never a smaller bucket


def test_prompts_are_read_and_checked(hpd_new_path, tmp_path):
    folder = shutil.copytree(hpd_new_path, tmp_path / "m")
    path = folder / "config_sentence_transformers.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "prompts": {"query": "query: "}, "default_prompt_name": "query"}))
    model = tinyhpd.load(folder)
    np.testing.assert_array_equal(model.encode(["x"]), model.encode(["query: x"], prompt=""))
    with pytest.raises(ValueError, match=r"prompt_name 'passage' is not one of this model's prompts \('query'\)"):
        model.encode(["x"], prompt_name="passage")
    path.write_text(json.dumps({**cfg, "prompts": {"query": "query: "}, "default_prompt_name": "doc"}))
    with pytest.raises(ValueError, match=r"config_sentence_transformers\.json: default_prompt_name 'doc' is not one "
                                         r"of the prompts \('query'\)"):
        tinyhpd.load(folder)


def test_a_cross_encoder_refuses_an_embedding_model(hpd_new_path, tmp_path):
    with pytest.raises(ValueError, match=r"a cross-encoder has one Transformer module and no pooling; found "
                                         r"Transformer, Pooling, Dense"):
        tinyhpd.CrossEncoder(hpd_new_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(hpd_new_path / name, plain / name)
    with pytest.raises(ValueError, match=r"architectures \['BertModel'\] is not a \*ForSequenceClassification"):
        tinyhpd.CrossEncoder(plain)
