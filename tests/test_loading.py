"""The loader: both sentence-transformers generations, the restricted unpickler, and clear errors for broken folders."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinyhpd
from tinyhpd import bert
import tiny_models
from tinyhpd.heads import PoolingConfig
from tinyhpd.checkpoints import read_safetensors, read_torch, read_torch_zip

SENTS = ["A man is playing a guitar.", "", "Crème brûlée 🍕", "A woman slices an onion on the cutting board."]


def _copy(src: Path, tmp_path: Path, name: str = "m") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------------ the pickle is refused

class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_like_zip(path: Path, obj) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/version", "3\n")


def test_pickle_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "pytorch_model.bin"
    _torch_like_zip(ckpt, {"embeddings.word_embeddings.weight": _Exploit(marker)})
    with pytest.raises(ValueError, match=r"refused to load global '(os|posix)\.system'"):
        read_torch_zip(ckpt)
    assert not marker.exists()


def test_model_folder_with_malicious_pickle_is_refused(hpd_old_path, tmp_path):
    folder = _copy(hpd_old_path, tmp_path)
    marker = tmp_path / "pwned"
    _torch_like_zip(folder / "2_Dense" / "pytorch_model.bin", {"linear.weight": _Exploit(marker)})
    with pytest.raises(ValueError, match="refused to load global"):
        tinyhpd.load(folder)
    assert not marker.exists()


def test_pickle_naming_builtins_eval_is_refused(tmp_path):
    ckpt = tmp_path / "pytorch_model.bin"
    _torch_like_zip(ckpt, {"x": eval})
    with pytest.raises(ValueError, match=r"(__builtin__|builtins)\.eval"):
        read_torch_zip(ckpt)


def test_a_pickle_that_is_not_a_torch_checkpoint_gets_a_clear_error(tmp_path):
    ckpt = tmp_path / "pytorch_model.bin"
    ckpt.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a torch checkpoint \(a pickle, but without torch's "
                                         "magic number"):
        read_torch(ckpt)
    ckpt.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a torch checkpoint \(neither"):
        read_torch(ckpt)




def test_safetensors_reader_is_memory_mapped(hpd_new_path):
    t = read_safetensors(hpd_new_path / "model.safetensors")
    w = t["embeddings.word_embeddings.weight"]
    assert isinstance(w.base, np.memmap) or isinstance(w, np.memmap) or not w.flags.owndata
    assert not w.flags.writeable


# ------------------------------------------------------------------------------------------ layouts and config variants

def test_old_and_new_layouts_give_identical_vectors(hpd_old_path, hpd_new_path):
    a = tinyhpd.load(hpd_old_path).encode(SENTS)
    b = tinyhpd.load(hpd_new_path).encode(SENTS)
    np.testing.assert_array_equal(a, b)


def test_bert_prefix_and_gamma_beta_names_are_tolerated(hpd_new_path, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(hpd_new_path, tmp_path)
    t = read_safetensors(folder / "model.safetensors")
    renamed = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
               np.array(v) for k, v in t.items()}
    renamed["cls.predictions.bias"] = np.zeros(3, np.float32)  # a pre-training head: dropped by name
    os.remove(folder / "model.safetensors")
    save_file(renamed, str(folder / "model.safetensors"))
    np.testing.assert_array_equal(tinyhpd.load(folder).encode(SENTS), tinyhpd.load(hpd_new_path).encode(SENTS))


def test_float16_weights_are_upcast(hpd_new_path, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(hpd_new_path, tmp_path)
    t = {k: np.array(v).astype(np.float16) for k, v in read_safetensors(folder / "model.safetensors").items()}
    save_file(t, str(folder / "model.safetensors"))
    vecs = tinyhpd.load(folder).encode(SENTS)
    assert vecs.dtype == np.float32
    assert np.abs(vecs - tinyhpd.load(hpd_new_path).encode(SENTS)).max() < 0.05








def test_old_pooling_keys_map_to_modes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"word_embedding_dimension": 8, "pooling_mode_cls_token": False,
                                "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True,
                                "pooling_mode_mean_sqrt_len_tokens": False}))
    assert PoolingConfig.from_file(path) == PoolingConfig(8, ("max", "mean"))




def test_max_seq_length_comes_from_config_and_is_capped(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    model = tinyhpd.load(folder)
    assert model.max_seq_length == 16
    assert max(len(x) for x in model.tokenize(["word " * 100])) == 16
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 4096}))
    assert tinyhpd.load(folder).max_seq_length == 512


def test_sizes_come_from_config_not_hard_coded(tmp_path):
    folder = tiny_models.build_new(tmp_path / "odd", arch=dict(hidden_size=48, num_hidden_layers=3,
                                                               num_attention_heads=4, intermediate_size=100),
                                   dense_out=20)
    model = tinyhpd.load(folder)
    assert model.encode(SENTS).shape == (len(SENTS), 20)


# ------------------------------------------------------------------------------------------------------- broken folders

def test_missing_weights_names_the_folder(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    os.remove(folder / "2_Dense" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"2_Dense: no weights found"):
        tinyhpd.load(folder)


def test_missing_config_names_the_file(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    os.remove(folder / "config.json")
    with pytest.raises(FileNotFoundError, match=r"missing file: .*config\.json"):
        tinyhpd.load(folder)


def test_wrong_shape_names_the_key_and_both_shapes(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "config.json", intermediate_size=1201)
    with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape \(1200, 312\), "
                                         r"config implies \(1201, 312\)"):
        tinyhpd.load(folder)


def test_missing_tensor_names_the_key(hpd_new_path, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(hpd_new_path, tmp_path)
    t = {k: np.array(v) for k, v in read_safetensors(folder / "model.safetensors").items()}
    del t["encoder.layer.3.output.LayerNorm.bias"]
    save_file(t, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensor 'encoder\.layer\.3\.output\.LayerNorm\.bias'"):
        tinyhpd.load(folder)


def test_unexpected_tensor_names_the_key(hpd_new_path, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(hpd_new_path, tmp_path)
    t = {k: np.array(v) for k, v in read_safetensors(folder / "2_Dense" / "model.safetensors").items()}
    t["linear.extra"] = np.zeros(2, np.float32)
    save_file(t, str(folder / "2_Dense" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected tensor 'linear\.extra'"):
        tinyhpd.load(folder)


def test_unknown_dense_activation_is_named(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "2_Dense" / "config.json", activation_function="torch.nn.modules.activation.Softplus")
    with pytest.raises(ValueError, match=r"activation_function 'torch\.nn\.modules\.activation\.Softplus'"):
        tinyhpd.load(folder)


def test_unknown_hidden_act_is_named(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "config.json", hidden_act="swish")
    with pytest.raises(ValueError, match=r"hidden_act 'swish'"):
        tinyhpd.load(folder)


def test_unknown_module_type_is_named(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    mods = json.loads((folder / "modules.json").read_text())
    mods.append({"idx": 3, "name": "3", "path": "3_LSTM", "type": "sentence_transformers.models.LSTM"})
    (folder / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ValueError, match=r"module type 'sentence_transformers\.models\.LSTM'"):
        tinyhpd.load(folder)


def test_dense_size_mismatch_is_named(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    _edit_json(folder / "2_Dense" / "config.json", in_features=300)
    with pytest.raises(ValueError, match=r"in_features 300 does not match the incoming dimension 312"):
        tinyhpd.load(folder)


def test_truncated_safetensors_is_a_clear_error(hpd_new_path, tmp_path):
    folder = _copy(hpd_new_path, tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"lies outside the file"):
        tinyhpd.load(folder)


def test_nonexistent_path_that_is_not_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder, and not a Hub id"):
        tinyhpd.load(tmp_path / "nope" / "deeper")


def test_token_id_beyond_the_embedding_matrix_is_a_value_error_naming_the_sentence(hpd_new_path, tmp_path):
    # config.json and the embedding matrix cut to fewer rows than the tokenizer has tokens
    from safetensors.numpy import save_file

    import tiny_models

    vocab = tiny_models.vocab()
    guitar, rows = vocab.index("guitar"), vocab.index("guitar") - 10
    assert max(vocab.index("a"), vocab.index(".")) < rows
    folder = _copy(hpd_new_path, tmp_path)
    t = {k: np.array(v) for k, v in read_safetensors(folder / "model.safetensors").items()}
    t["embeddings.word_embeddings.weight"] = t["embeddings.word_embeddings.weight"][:rows]
    save_file(t, str(folder / "model.safetensors"))
    _edit_json(folder / "config.json", vocab_size=rows)
    model = tinyhpd.load(folder)
    model.encode(["a ."])  # [CLS] a . [SEP]: every id inside the matrix
    with pytest.raises(ValueError, match=rf"sentences\[1\]: token id {guitar} is outside .*vocab_size {rows} in "
                                         r".*config\.json"):
        model.encode(["a .", "a guitar"])
    with pytest.raises(ValueError, match=f"token id {guitar} is outside the embedding matrix"):
        bert.embed(model._bert, np.array([101, guitar, 102]), np.arange(3), 1e-12)  # the engine's own check
    with pytest.raises(ValueError, match="position 512 is outside the position embeddings"):
        bert.embed(model._bert, np.array([101, 102]), np.array([0, 512]), 1e-12)
