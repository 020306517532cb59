"""tinyhpd.eval.sts: Spearman, SentEval loaders, data location/download, the protocol, the CLI, and parity with PyTorch."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from helpers import need as _need
from sts_data import fake_encode, make_senteval
from tinyhpd import cli
from tinyhpd.eval import sts

# Pair counts of SentEval's loaders on the standard data (facts about the data set, quoted in SentEval/SimCSE logs).
SENTEVAL_PAIRS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186,
                  "STSBenchmark": 1379, "SICKRelatedness": 4927}


# ------------------------------------------------------------------------------------------------ helpers
def make_tar(path: Path, files: Dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tar_of_folder(path: Path, folder: Path, prefix: str = "") -> Path:
    files = {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return make_tar(path, files)


class HubStub:
    """Stands in for huggingface_hub.hf_hub_download: records the calls and returns a prepared file."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.calls: List[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return str(self.file)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    huggingface_hub = _need("huggingface_hub")
    src = make_senteval(tmp_path / "src")
    stub = HubStub(tar_of_folder(tmp_path / "senteval.tar", src))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", stub)
    monkeypatch.delenv(sts.ENV_DATA, raising=False)
    return stub


# ------------------------------------------------------------------------------------------------ statistics




def test_spearman_of_constant_input_is_nan():
    assert np.isnan(sts.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_cosine_pairs_is_float64_and_zero_for_a_zero_vector():
    a = np.array([[1, 0], [0, 0]], dtype=np.float32)
    b = np.array([[1, 1], [1, 0]], dtype=np.float32)
    cos = sts.cosine_pairs(a, b)
    assert cos.dtype == np.float64
    np.testing.assert_allclose(cos, [np.sqrt(0.5), 0.0])


def test_average_is_mean_of_scores_rounded_to_two_decimals():
    scores = {t: 70.0 + i * 1.23456 for i, t in enumerate(sts.TASKS)}
    assert sts.average(scores) == pytest.approx(np.mean([round(v, 2) for v in scores.values()]))


# ------------------------------------------------------------------------------------------------ loaders
@pytest.mark.parametrize("task", sts.TASKS)
def test_loader_pair_count_matches_senteval(shared_dir, task):
    loaded = sts.load_task(task, shared_dir / "data" / "senteval")
    assert len(loaded) == len(loaded.s1) == len(loaded.s2) == SENTEVAL_PAIRS[task]


def test_loaded_real_sentences_are_whitespace_normalized(shared_dir):
    for task in sts.load_tasks(shared_dir / "data" / "senteval"):
        assert all(s == " ".join(s.split()) for s in task.s1 + task.s2), task.name


def test_blank_gold_lines_are_dropped(tmp_path):
    root = make_senteval(tmp_path, n=12)
    # every subset has one blank gold line among 12 pairs
    assert len(sts.load_task("STS13", root)) == 11 * len(sts.STS_SUBSETS["STS13"])


def test_sentences_are_split_and_rejoined_with_single_spaces(tmp_path):
    root = make_senteval(tmp_path)
    path = root / "STS" / "STS12-en-test" / "STS.input.MSRpar.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = "  a   man\u00a0is \t playing  "  # the tab after "is" is the pair separator
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = sts.load_task("STS12", root)
    assert (task.s1[0], task.s2[0]) == ("a man is", "playing")


def test_missing_file_error_names_path_and_task(tmp_path):
    root = make_senteval(tmp_path)
    missing = root / "STS" / "STS14-en-test" / "STS.gs.images.txt"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        sts.load_task("STS14", root)
    assert str(missing) in str(err.value) and "STS14" in str(err.value)


def test_file_that_is_not_utf8_is_refused_with_its_name(tmp_path):
    root = make_senteval(tmp_path)
    path = root / "SICK" / "SICK_test_annotated.txt"
    path.write_bytes(path.read_bytes() + "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="SICKRelatedness.*not UTF-8"):
        sts.load_task("SICKRelatedness", root)


def test_input_and_gold_of_different_lengths_are_refused(tmp_path):
    root = make_senteval(tmp_path)
    gs = root / "STS" / "STS16-en-test" / "STS.gs.headlines.txt"
    gs.write_text(gs.read_text() + "3.0\n")
    with pytest.raises(ValueError, match="STS16.*STS.gs.headlines.txt"):
        sts.load_task("STS16", root)


# ------------------------------------------------------------------------------------------------ data location
def test_data_argument_wins_over_environment(tmp_path, monkeypatch):
    a, b = make_senteval(tmp_path / "a"), make_senteval(tmp_path / "b")
    monkeypatch.setenv(sts.ENV_DATA, str(b))
    assert sts.resolve_data_dir(a) == a


def test_environment_wins_over_download(tmp_path, monkeypatch):
    root = make_senteval(tmp_path / "env")
    monkeypatch.setenv(sts.ENV_DATA, str(root))
    monkeypatch.setattr(sts, "download_senteval", lambda *a, **k: pytest.fail("must not download"))
    assert sts.resolve_data_dir() == root


def test_data_folder_that_does_not_exist_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sts.resolve_data_dir(tmp_path / "nowhere")


def test_senteval_downstream_layout_is_found(tmp_path):
    root = make_senteval(tmp_path / "SentEval" / "data" / "downstream")
    assert sts.resolve_data_dir(tmp_path / "SentEval" / "data") == root


def test_download_fetches_simcse_tar_from_the_hub_dataset(hub, tmp_path):
    sts.download_senteval(tmp_path / "cache")
    assert len(hub.calls) == 1
    call = hub.calls[0]
    assert (call["repo_id"], call["filename"], call["repo_type"]) == (sts.SENTEVAL_REPO, "senteval.tar", "dataset")


def test_download_unpacks_once_and_reuses_the_cache(hub, tmp_path, monkeypatch):
    extractions = []
    real_extract = sts.safe_extract
    monkeypatch.setattr(sts, "safe_extract", lambda *a, **k: extractions.append(a) or real_extract(*a, **k))
    first = sts.download_senteval(tmp_path / "cache")
    second = sts.download_senteval(tmp_path / "cache")
    assert first == second
    assert (len(hub.calls), len(extractions)) == (1, 1)
    assert [len(t) for t in sts.load_tasks(second)] == [11 * len(sts.STS_SUBSETS[t]) for t in sts.TASKS[:5]] + [12, 12]


def test_resolve_without_data_or_env_downloads_into_the_cache(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = sts.resolve_data_dir()
    assert root.is_relative_to(tmp_path / "xdg") and (root / "STS" / "STS12-en-test").is_dir()


def test_download_handles_a_tar_with_a_top_level_folder(tmp_path, monkeypatch):
    huggingface_hub = _need("huggingface_hub")
    src = make_senteval(tmp_path / "src")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        HubStub(tar_of_folder(tmp_path / "s.tar", src, prefix="./downstream/")))
    root = sts.download_senteval(tmp_path / "cache")
    assert len(sts.load_task("STSBenchmark", root)) == 12


def test_download_unpacks_only_the_sts_and_sick_folders(tmp_path, monkeypatch):
    huggingface_hub = _need("huggingface_hub")
    src = make_senteval(tmp_path / "src")
    (src / "MR").mkdir()
    (src / "MR" / "rt-polarity.pos").write_text("a transfer task file\n")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", HubStub(tar_of_folder(tmp_path / "s.tar", src)))
    root = sts.download_senteval(tmp_path / "cache")
    assert (root / "SICK").is_dir() and not (root / "MR").exists()


@pytest.mark.parametrize("bad", ["../evil.txt", "STS/../../evil.txt", "/tmp/tinyhpd-evil.txt"])
def test_tar_with_unsafe_member_is_refused(tmp_path, monkeypatch, bad):
    huggingface_hub = _need("huggingface_hub")
    tar = make_tar(tmp_path / "bad.tar", {"STS/STS12-en-test/ok.txt": b"ok\n", bad: b"pwned\n"})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", HubStub(tar))
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ValueError, match="unsafe"):
        sts.download_senteval(cache)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/tinyhpd-evil.txt").exists()
    assert not (cache / "senteval").exists()


def test_tar_links_are_not_created(tmp_path):
    tar_path = tmp_path / "links.tar"
    with tarfile.open(tar_path, "w") as tar:
        link = tarfile.TarInfo("STS/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    sts.safe_extract(tar_path, tmp_path / "out")
    assert not (tmp_path / "out" / "STS" / "link").exists() and not (tmp_path / "out" / "STS" / "link").is_symlink()


def test_download_failure_says_how_to_give_the_data(tmp_path, monkeypatch):
    huggingface_hub = _need("huggingface_hub")

    def offline(**kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match=f"--data.*{sts.ENV_DATA}"):
        sts.download_senteval(tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ protocol
def test_each_distinct_sentence_is_encoded_once_per_task(tmp_path):
    task = sts.load_task("STS12", make_senteval(tmp_path))
    seen: List[str] = []

    def recording(sentences):
        seen.extend(sentences)
        return fake_encode(sentences)

    sts.score_task(recording, task, chunk_size=7)
    assert sorted(seen) == sorted(set(task.s1 + task.s2))




def test_identical_sentence_pairs_have_cosine_exactly_one():
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(12)]
    vec = {w: rng.standard_normal(16).astype(np.float32) for w in words}
    s1 = tuple(words)
    s2 = tuple(words[:6]) + tuple(reversed(words[6:]))  # six identical pairs, six different ones
    gold = rng.uniform(0, 5, size=12)
    task = sts.STSTask("toy", s1, s2, gold)
    emb = lambda sentences: np.stack([vec[s] for s in sentences])
    raw = sts.cosine_pairs(emb(list(s1)), emb(list(s2)))
    assert np.any(raw[:6] != 1.0)  # float rounding: cos(x, x) is not exactly 1 for some x
    expected = np.concatenate([np.ones(6), raw[6:]])
    assert sts.score_task(emb, task) == pytest.approx(100 * sts.spearman(expected, gold), abs=1e-12)


def test_encoder_returning_wrong_row_count_is_an_error(tmp_path):
    task = sts.load_task("STSBenchmark", make_senteval(tmp_path))
    with pytest.raises(ValueError, match="STSBenchmark.*encoder returned"):
        sts.score_task(lambda s: fake_encode(s)[:-1], task)


def test_module_import_stays_light():
    code = ("import sys, tinyhpd.eval.sts; "
            "print(sorted(m for m in ('torch', 'huggingface_hub', 'scipy', 'sentence_transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def fake_engines(monkeypatch):
    """Replace both engines by bag-of-words encoders (the reference one slightly perturbed)."""
    monkeypatch.setattr(sts, "tinyhpd_encoder", lambda model, bs: (fake_encode, "fake", None, "fake"))
    monkeypatch.setattr(sts, "torch_encoder", lambda name, rev, bs: (lambda s: fake_encode(s) + 1e-3))


def test_cli_json_has_the_seven_scores_and_avg_rounded(tmp_path, fake_engines, capsys):
    root = make_senteval(tmp_path / "data")
    out = tmp_path / "scores.json"
    assert cli.main(["eval", "sts", "--data", str(root), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert list(got) == [*sts.TASKS, "Avg"]
    expected = sts.evaluate(fake_encode, root)
    assert got == {k: round(v, 2) for k, v in expected.items()}


def test_cli_prints_table_in_paper_column_order(tmp_path, fake_engines, capsys):
    root = make_senteval(tmp_path / "data")
    assert cli.main(["eval", "sts", "--data", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg"]
    assert out.splitlines()[1].split()[0] == "tinyhpd"
    assert "sentences" in err  # progress goes to stderr


def test_cli_reference_prints_both_rows_and_difference(tmp_path, fake_engines, capsys):
    root = make_senteval(tmp_path / "data")
    out_json = tmp_path / "scores.json"
    assert cli.main(["eval", "sts", "--data", str(root), "--reference", "torch", "--json", str(out_json)]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == ["tinyhpd", "torch", "difference", "largest"]
    assert list(json.loads(out_json.read_text())["torch"]) == [*sts.TASKS, "Avg"]


def test_cli_missing_data_file_is_one_line_error_with_exit_code_2(tmp_path, fake_engines, capsys):
    root = make_senteval(tmp_path / "data")
    (root / "SICK" / "SICK_test_annotated.txt").unlink()
    assert cli.main(["eval", "sts", "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SICKRelatedness" in err[0] and "SICK_test_annotated.txt" in err[0]


# ------------------------------------------------------------------------------------------------ acceptance


def test_stsb_dev_split_loads_for_model_selection_only(shared_dir):
    dev = sts.load_task(sts.DEV_TASK, shared_dir / "data" / "senteval")
    test = sts.load_task("STSBenchmark", shared_dir / "data" / "senteval")
    assert (len(dev), len(test)) == (1500, 1379) and dev.s1[:5] != test.s1[:5]
    assert sts.DEV_TASK not in sts.TASKS
