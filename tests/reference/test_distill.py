"""HPD distillation (tinyhpd.distill) and the bundled distilled model in weights/.

The end-to-end test builds a tiny teacher and a tiny student with torch and runs in seconds. The bundled-model tests
compare the NumPy engine with PyTorch sentence-transformers on real sentences and check the published checksums.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import need as _need
from tinyhpd import distill as D

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------------
# Pure NumPy pieces
# ----------------------------------------------------------------------------------------------------------------------
def test_read_sentences_drops_blanks_and_duplicates(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("a  b\n\n  \nc\na b\nd\n", encoding="utf-8")
    assert D.read_sentences(f) == ["a b", "c", "d"]


def test_read_sentences_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        D.read_sentences(tmp_path / "nope.txt")


def test_sample_indices_prefix_is_a_smaller_sample():
    full = D.sample_indices(1000, None, seed=3)
    assert sorted(full.tolist()) == list(range(1000))
    assert D.sample_indices(1000, 100, seed=3).tolist() == full[:100].tolist()


def test_split_train_val_rejects_oversized_validation():
    with pytest.raises(ValueError, match="val_size"):
        D.split_train_val(10, 10)


def test_fit_projection_matches_svd_of_centred_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) * np.linspace(3, 0.1, 12) + 5.0  # large mean, decreasing variances
    comps = D.fit_projection(x, 4)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    # Same subspace and order as PCA, up to the sign of each direction.
    np.testing.assert_allclose(np.abs(np.sum(comps * vt[:4], axis=1)), 1.0, atol=1e-5)


def test_project_does_not_subtract_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)).astype(np.float32) + 4.0
    comps = D.fit_projection(x, 3)
    np.testing.assert_allclose(D.project(x, comps), x @ comps.T, rtol=1e-6, atol=1e-6)
    assert np.abs(D.project(x, comps).mean(0)).max() > 0.1  # centring would have made this ~0


def test_init_dense_least_squares_recovers_a_tanh_layer():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 10))
    w, b = rng.normal(size=(3, 10)) * 0.2, rng.normal(size=3) * 0.1
    y = np.tanh(x @ w.T + b)
    w_hat, b_hat = D.init_dense_least_squares(x, y, ridge=0.0)
    np.testing.assert_allclose(w_hat, w, atol=1e-4)
    np.testing.assert_allclose(b_hat, b, atol=1e-4)


def test_init_dense_procrustes_keeps_the_students_pca_cosines():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)) + 1.0
    t = rng.normal(size=(300, 4)) * 0.1
    w, b = D.init_dense_procrustes(x, t)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    base = xn @ D.fit_projection(xn, 4).T

    def cos(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a @ a.T

    np.testing.assert_allclose(cos(x @ w.T + b), cos(base), atol=1e-5)


def test_auto_target_scale_leaves_small_targets_alone():
    assert D.auto_target_scale(np.array([[0.5, -0.8]])) == 1.0


def test_auto_target_scale_shrinks_large_targets_to_tanh_range():
    t = np.array([[3.0, -6.0]])
    assert np.abs(t * D.auto_target_scale(t)).max() == pytest.approx(0.9)


def test_length_bucketed_batches_cover_every_position_once():
    lengths = np.random.default_rng(4).integers(1, 50, size=1003)
    batches = D.length_bucketed_batches(lengths, 16, np.random.default_rng(5))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    assert max(len(b) for b in batches) == 16


def _counting_encoder(dim: int = 8):
    calls: list[int] = []

    def enc(batch):
        calls.append(len(batch))
        return np.array([[len(s) + j for j in range(dim)] for s in batch], dtype=np.float32)

    return enc, calls


def test_teacher_cache_is_reused(tmp_path):
    sents = [f"sentence {i}" for i in range(25)]
    enc, calls = _counting_encoder()
    first = D.teacher_embeddings("fake-teacher", sents, tmp_path, chunk_size=10, encoder=enc, progress=False)
    n_calls = len(calls)
    again = D.teacher_embeddings("fake-teacher", sents, tmp_path, chunk_size=10, encoder=enc, progress=False)
    assert len(calls) == n_calls
    np.testing.assert_array_equal(first, again)


def test_teacher_cache_resumes_only_missing_chunks(tmp_path):
    sents = [f"sentence {i}" for i in range(25)]
    enc, calls = _counting_encoder()
    D.teacher_embeddings("fake-teacher", sents, tmp_path, chunk_size=10, encoder=enc, progress=False)
    chunk = sorted(tmp_path.glob("chunk_*.npy"))[0]
    chunk.unlink()  # as if the run had been interrupted before writing it
    calls.clear()
    D.teacher_embeddings("fake-teacher", sents, tmp_path, chunk_size=10, encoder=enc, progress=False)
    assert len(calls) == 1


def test_teacher_cache_key_depends_on_the_teacher(tmp_path):
    sents = [f"sentence {i}" for i in range(5)]
    enc, calls = _counting_encoder()
    D.teacher_embeddings("teacher-a", sents, tmp_path, encoder=enc, progress=False)
    D.teacher_embeddings("teacher-b", sents, tmp_path, encoder=enc, progress=False)
    assert len(calls) == 2


def _text_encoder(dim: int = 4):
    """A fake teacher whose vector is a function of the sentence's text (so rows can be checked against sentences)."""
    calls: list[int] = []

    def enc(batch):
        calls.append(len(batch))
        rows = [[1.0 + (sum(map(ord, s)) * (j + 1)) % 97 for j in range(dim)] for s in batch]
        return np.array(rows, dtype=np.float32)

    return enc, calls


def test_prepare_targets_with_another_seed_reuses_the_teacher_cache(tmp_path):
    sents = [f"sentence number {i}" + "!" * (i % 7) for i in range(60)]
    enc, calls = _text_encoder()
    cfg = dict(dim=2, val_size=10, chunk_size=16, projection_fit_size=0, progress=False)
    D.prepare_targets("fake-teacher", sents, tmp_path, D.DistillConfig(seed=0, **cfg), teacher_encoder=enc)
    calls.clear()
    D.prepare_targets("fake-teacher", sents, tmp_path, D.DistillConfig(seed=1, **cfg), teacher_encoder=enc)
    assert calls == []


def test_prepare_targets_rows_follow_the_seeded_sentence_order(tmp_path):
    sents = [f"sentence number {i}" + "!" * (i % 7) for i in range(60)]
    enc, _ = _text_encoder()
    cfg = D.DistillConfig(dim=2, val_size=10, chunk_size=16, projection_fit_size=0, progress=False, seed=3)
    data = D.prepare_targets("fake-teacher", sents, tmp_path, cfg, teacher_encoder=enc)
    assert data.sentences != sents  # shuffled
    np.testing.assert_array_equal(data.teacher, enc(data.sentences))


def test_prepare_targets_returns_the_projection_it_applied(tmp_path):
    sents = [f"sentence number {i}" + "!" * (i % 7) for i in range(60)]
    enc, _ = _text_encoder()
    cfg = D.DistillConfig(dim=2, val_size=10, chunk_size=16, projection_fit_size=0, progress=False, target_scale=1e-3)
    data = D.prepare_targets("fake-teacher", sents, tmp_path, cfg, teacher_encoder=enc)
    np.testing.assert_allclose(data.targets, 1e-3 * D.project(data.teacher, data.components), rtol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "projection_2.npy"), data.components)


def test_teacher_record_lists_every_teacher_sharing_the_cache(tmp_path):
    sents = [f"sentence {i}" for i in range(5)]
    enc, _ = _counting_encoder()
    for name in ("teacher-a", "teacher-b", "teacher-a"):  # the second run of teacher-a updates its entry
        D.teacher_embeddings(name, sents, tmp_path, encoder=enc, progress=False)
    record = json.loads((tmp_path / "teacher.json").read_text())
    assert [t["teacher"] for t in record["teachers"]] == ["teacher-b", "teacher-a"]
    assert all(t["sentences"] == 5 for t in record["teachers"])


def test_cli_registers_distill():
    from tinyhpd.cli import build_parser
    from tinyhpd.cli import distill as distill_cli

    args = build_parser().parse_args(["distill", "--teacher", "t", "--student", "s", "--sentences", "f", "--out", "o",
                                      "--epochs", "2", "--max-sentences", "500"])
    assert (args.func, args.epochs, args.max_sentences) == (distill_cli.run, 2.0, 500)


# ----------------------------------------------------------------------------------------------------------------------
# Tiny end-to-end distillation (torch)
# ----------------------------------------------------------------------------------------------------------------------
def _tiny_st(dest: Path, minilm: Path, seed: int, hidden: int, layers: int) -> Path:
    """A small random BERT + mean pooling sentence-transformers folder using MiniLM's tokenizer."""
    torch = _need("torch")
    transformers = _need("transformers")
    st = _need("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128)
    hf = dest.parent / (dest.name + "_hf")
    transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, hf / name)
    modules = [Transformer(str(hf), max_seq_length=64), Pooling(hidden, pooling_mode="mean")]
    st.SentenceTransformer(modules=modules, device="cpu").save(str(dest))
    return dest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, minilm_path, shared_dir):
    tmp = tmp_path_factory.mktemp("distill")
    teacher = _tiny_st(tmp / "teacher", minilm_path, seed=0, hidden=64, layers=2)
    student = _tiny_st(tmp / "student", minilm_path, seed=1, hidden=32, layers=1)
    sents = D.read_sentences(shared_dir / "data" / "distill" / "sentences.txt")[:300]
    cfg = D.DistillConfig(dim=16, epochs=3, batch_size=16, lr=1e-3, max_seq_length=32, val_size=60, eval_every=10,
                          projection_fit_size=0, init_dense=False, chunk_size=100, progress=False, num_threads=1)
    result = D.distill(str(teacher), str(student), sents, tmp / "out", cache_dir=tmp / "cache", config=cfg)
    return result, sents


def test_tiny_distillation_lowers_validation_mse(tiny_run):
    result, _ = tiny_run
    assert result.best_val_mse < 0.9 * result.initial_val_mse


def test_tiny_distillation_writes_safetensors_folder(tiny_run):
    result, _ = tiny_run
    out = result.out_dir
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense"]
    assert (out / "model.safetensors").is_file() and list(out.glob("2_Dense/*.safetensors"))


def test_tiny_distillation_records_a_random_dense_start_for_a_headless_student(tiny_run):
    result, _ = tiny_run
    assert json.loads((result.out_dir / "distill_run.json").read_text())["dense_start"] == "random"


def test_student_with_a_fitting_dense_head_keeps_it(tiny_run):
    """Training a distilled model further (``init_dense=False``) starts from its own Dense head, not a random one."""
    from tinyhpd.distill.train import _build_student

    result, sents = tiny_run
    student, origin = _build_student(str(result.out_dir), 16, 32)
    assert origin == "student"
    ours = student.encode(sents[:20], convert_to_numpy=True)
    saved = _need("sentence_transformers").SentenceTransformer(str(result.out_dir), device="cpu")
    np.testing.assert_allclose(ours, saved.encode(sents[:20], convert_to_numpy=True), atol=1e-6)


def test_student_head_of_another_size_is_replaced(tiny_run):
    from tinyhpd.distill.train import _build_student

    result, _ = tiny_run
    _, origin = _build_student(str(result.out_dir), 8, 32)
    assert origin == "random"


def test_tiny_distilled_model_loads_in_tinyhpd_like_sentence_transformers(tiny_run, st_reference):
    import tinyhpd

    result, sents = tiny_run
    ours = tinyhpd.load(result.out_dir).encode(sents[:50])
    ref = st_reference(result.out_dir).encode(sents[:50], convert_to_numpy=True)
    assert ours.shape == (50, 16)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_convert_float16_stores_half_precision(tiny_run, tmp_path):
    from safetensors.numpy import load_file

    result, _ = tiny_run
    half = D.convert_float16(result.out_dir, tmp_path / "half")
    dtypes = {v.dtype for f in half.rglob("*.safetensors") for v in load_file(str(f)).values()}
    assert dtypes == {np.dtype(np.float16)}


def test_convert_float16_model_loads_in_both_engines_alike(tiny_run, tmp_path, st_reference):
    import tinyhpd

    result, sents = tiny_run
    half = D.convert_float16(result.out_dir, tmp_path / "half")
    ours = tinyhpd.load(half).encode(sents[:20])
    ref = st_reference(half).encode(sents[:20], convert_to_numpy=True)
    assert ref.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_write_sha256sums_lists_every_weight_file(tiny_run, tmp_path):
    result, _ = tiny_run
    folder = shutil.copytree(result.out_dir, tmp_path / "copy")
    lines = D.write_sha256sums(folder).read_text().splitlines()
    expected = {f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}"
                for p in folder.rglob("*.safetensors")}
    assert set(lines) == expected


# ----------------------------------------------------------------------------------------------------------------------
# The bundled model in weights/
# ----------------------------------------------------------------------------------------------------------------------






@pytest.fixture(scope="module")
def bundled_dir() -> Path:
    from tinyhpd.hub import BUNDLED_DIR

    if not (BUNDLED_DIR / "modules.json").is_file():
        pytest.fail(f"bundled model missing: {BUNDLED_DIR}")
    return BUNDLED_DIR


def test_bundled_model_matches_pytorch(bundled_dir, stsb_test_sentences, st_reference):
    import tinyhpd
    from helpers import EDGE_CASES

    sents = stsb_test_sentences[:300] + list(EDGE_CASES)  # edge cases include inputs far beyond max_seq_length
    ours = tinyhpd.load(bundled_dir).encode(sents, batch_size=32)
    ref = st_reference(bundled_dir).encode(sents, batch_size=32, convert_to_numpy=True)
    assert np.abs(ours - ref).max() < 1e-5


def test_bundled_model_scores_what_its_model_card_records(bundled_dir, shared_dir):
    """The STS row in the bundled folder's eval_sts.json (written by `tinyhpd eval sts --json`, shown in the model
    card and the README) is what the bundled weights score now, on all seven sets."""
    import tinyhpd
    from tinyhpd.eval import sts

    recorded = json.loads((bundled_dir / "eval_sts.json").read_text())
    model = tinyhpd.load(bundled_dir)
    scores = sts.evaluate(lambda s: model.encode(s, batch_size=64), shared_dir / "data" / "senteval")
    for task in list(sts.TASKS) + ["Avg"]:
        assert scores[task] == pytest.approx(recorded[task], abs=0.02), task




def test_teacher_ensemble_gives_unit_rows_with_equal_teacher_weight():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 4)) * 3.0, rng.standard_normal((5, 6)) * 0.1
    e = D.teacher_ensemble([a, b])
    assert e.shape == (5, 10) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(e[:, :4], axis=1), np.sqrt(0.5), rtol=1e-6)


def test_teacher_ensemble_of_one_teacher_is_unchanged():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(D.teacher_ensemble([a]), a)


def test_teacher_ensemble_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="teacher 1"):
        D.teacher_ensemble([np.zeros((3, 2)), np.zeros((4, 2))])


def test_tiny_distillation_with_cosine_term_and_two_teachers(tmp_path, minilm_path, shared_dir):
    """The ensemble target and the in-batch cosine term run end to end and improve the validation objective."""
    teacher_a = _tiny_st(tmp_path / "ta", minilm_path, seed=0, hidden=64, layers=2)
    teacher_b = _tiny_st(tmp_path / "tb", minilm_path, seed=2, hidden=48, layers=1)
    student = _tiny_st(tmp_path / "student", minilm_path, seed=1, hidden=32, layers=1)
    sents = D.read_sentences(shared_dir / "data" / "distill" / "sentences.txt")[:200]
    cfg = D.DistillConfig(dim=16, epochs=2, batch_size=16, lr=1e-3, max_seq_length=32, val_size=40, eval_every=5,
                          projection_fit_size=0, init_dense=False, chunk_size=100, progress=False, num_threads=1,
                          sim_weight=0.5)
    result = D.distill([str(teacher_a), str(teacher_b)], str(student), sents, tmp_path / "out",
                       cache_dir=tmp_path / "cache", config=cfg)
    assert result.best_val_mse < result.initial_val_mse
    run = json.loads((result.out_dir / "distill_run.json").read_text())
    assert run["teacher"] == [str(teacher_a), str(teacher_b)] and run["config"]["sim_weight"] == 0.5


# ----------------------------------------------------------------------------------------------------------------------
# A faster teacher (ONNX Runtime) and a student cut to some of its layers
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, minilm_path):
    return _tiny_st(tmp_path_factory.mktemp("onnx") / "teacher", minilm_path, seed=0, hidden=64, layers=2)


def test_onnx_teacher_equals_the_torch_teacher(tiny_teacher, tmp_path, shared_dir):
    _need("onnxruntime")
    _need("onnx")
    sents = D.read_sentences(shared_dir / "data" / "distill" / "sentences.txt")[:150]
    torch_emb = D.teacher_embeddings(str(tiny_teacher), sents, tmp_path / "a", chunk_size=64, progress=False)
    onnx_emb = D.teacher_embeddings(str(tiny_teacher), sents, tmp_path / "b", chunk_size=64, progress=False,
                                    engine="onnx", threads=1)
    np.testing.assert_allclose(onnx_emb, torch_emb, atol=1e-5)
    assert list((tmp_path / "b" / "onnx").glob("teacher-*.onnx"))  # the export is cached beside the chunks


def test_onnx_teacher_that_differs_from_torch_is_refused(tiny_teacher, tmp_path, monkeypatch):
    _need("onnxruntime")
    _need("onnx")
    from tinyhpd.distill import onnx_teacher

    teacher = onnx_teacher.OnnxTeacher(str(tiny_teacher), "tiny", tmp_path, threads=1)
    real_run = teacher.session.run
    monkeypatch.setattr(teacher.session, "run", lambda names, feeds: [real_run(names, feeds)[0][..., ::-1].copy()],
                        raising=False)
    with pytest.raises(RuntimeError, match="differs from torch"):
        teacher.encode(["a sentence", "another one here"])


def test_unknown_teacher_engine_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="teacher engine"):
        D.teacher_embeddings("t", ["a"], tmp_path, engine="tensorrt", progress=False)
    assert not list(tmp_path.glob("chunk_*"))


def test_keep_layers_cuts_the_encoder_in_the_given_order(tiny_teacher):
    st = _need("sentence_transformers")
    model = st.SentenceTransformer(str(tiny_teacher), device="cpu")
    second = model[0].auto_model.encoder.layer[1]
    D.keep_layers(model[0], [1])
    assert len(model[0].auto_model.encoder.layer) == 1 and model[0].auto_model.encoder.layer[0] is second
    assert model[0].auto_model.config.num_hidden_layers == 1


@pytest.mark.parametrize("layers", [[2], [0, 0], [], [-1]])
def test_keep_layers_refuses_bad_indices_naming_them(tiny_teacher, layers):
    st = _need("sentence_transformers")
    model = st.SentenceTransformer(str(tiny_teacher), device="cpu")
    with pytest.raises(ValueError, match=r"student_layers .* distinct indices in 0\.\.1"):
        D.keep_layers(model[0], layers)


def test_distilled_cut_student_loads_in_tinyhpd_with_its_layers(tmp_path, minilm_path, shared_dir):
    """A student cut to layers (0, 2) of three trains, saves as a 2-layer BERT and runs in tinyhpd as in torch."""
    import tinyhpd

    st = _need("sentence_transformers")
    teacher = _tiny_st(tmp_path / "t", minilm_path, seed=0, hidden=64, layers=2)
    student = _tiny_st(tmp_path / "s", minilm_path, seed=1, hidden=32, layers=3)
    sents = D.read_sentences(shared_dir / "data" / "distill" / "sentences.txt")[:120]
    cfg = D.DistillConfig(dim=8, epochs=1, batch_size=16, lr=1e-3, max_seq_length=32, val_size=20, eval_every=5,
                          projection_fit_size=0, init_dense=False, chunk_size=100, progress=False, num_threads=1,
                          student_layers=(0, 2))
    out = D.distill(str(teacher), str(student), sents, tmp_path / "out", cache_dir=tmp_path / "c", config=cfg).out_dir
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    ours = tinyhpd.load(out).encode(sents[:20])
    ref = st.SentenceTransformer(str(out), device="cpu").encode(sents[:20], convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_cli_parses_teacher_engine_and_student_layers():
    from tinyhpd.cli import build_parser

    args = build_parser().parse_args(["distill", "--teacher", "t", "--student", "s", "--sentences", "f", "--out", "o",
                                      "--teacher-engine", "onnx", "--student-layers", "0,2,4,5"])
    assert (args.teacher_engine, args.student_layers) == ("onnx", (0, 2, 4, 5))


@pytest.mark.parametrize("method", ["lstsq", "procrustes"])
def test_init_student_dense_sets_the_dense_that_fits_the_targets(method, tmp_path, minilm_path, shared_dir):
    """The Dense set from the student's own features is the fit of those features to the targets (lstsq: the Dense
    then reproduces a Tanh layer's outputs far better than the random start)."""
    _need("torch")
    from tinyhpd.distill.train import _build_student, _pooled_features

    student, _ = _build_student(str(_tiny_st(tmp_path / "s", minilm_path, seed=1, hidden=32, layers=1)), 8, 32)
    sents = D.read_sentences(shared_dir / "data" / "distill" / "sentences.txt")[:200]
    feats = _pooled_features(student, sents, 64, False)
    targets = np.tanh(feats @ np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32) * 0.1)
    before = float(np.mean((student.encode(sents, convert_to_numpy=True) - targets) ** 2))
    D.init_student_dense(student, sents, targets, method)
    fit = D.init_dense_procrustes if method == "procrustes" else D.init_dense_least_squares
    w, b = fit(feats, targets)
    np.testing.assert_allclose(student[2].linear.weight.detach().numpy(), w, atol=1e-6)
    np.testing.assert_allclose(student[2].linear.bias.detach().numpy(), b, atol=1e-6)
    if method == "lstsq":
        after = float(np.mean((student.encode(sents, convert_to_numpy=True) - targets) ** 2))
        assert after < 0.1 * before


def test_init_student_dense_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="init_method must be 'lstsq' or 'procrustes', got 'pca'"):
        D.init_student_dense(None, [], np.zeros((0, 1)), "pca")
