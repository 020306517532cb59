"""`python -m tinyhpd encode|convert`: outputs, files, and one-line errors with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tinyhpd
from tinyhpd.cli import build_parser, main


def test_encode_prints_one_json_array_per_sentence(hpd_new_path, capsys):
    assert main(["encode", "--model", str(hpd_new_path), "He plays guitar.", "A street vendor is outside."]) == 0
    lines = capsys.readouterr().out.splitlines()
    vecs = np.array([json.loads(line) for line in lines], dtype=np.float32)
    expected = tinyhpd.load(hpd_new_path).encode(["He plays guitar.", "A street vendor is outside."])
    assert vecs.shape == (2, 128)
    np.testing.assert_allclose(vecs, expected, atol=1e-7)


def test_encode_file_to_npy_keeps_line_order_and_empty_lines(hpd_new_path, tmp_path):
    inp, out = tmp_path / "in.txt", tmp_path / "vecs.npy"
    lines = ["first line", "", "third, after an empty one", "  spaced  "]
    inp.write_text("\r\n".join(lines) + "\n", encoding="utf-8")
    assert main(["encode", "--model", str(hpd_new_path), "--input", str(inp), "--out", str(out)]) == 0
    vecs = np.load(out)
    assert vecs.shape == (4, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs, tinyhpd.load(hpd_new_path).encode(lines), atol=1e-6)


def test_encode_normalize_flag(hpd_new_path, tmp_path):
    out = tmp_path / "v.npy"
    assert main(["encode", "--model", str(hpd_new_path), "--normalize", "--out", str(out), "a", "b"]) == 0
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["encode"], "nothing to encode"),
    (["encode", "--input", "/nonexistent/file.txt"], "/nonexistent/file.txt"),
    (["encode", "--out", "x.txt", "a"], "expected a .npy"),
    (["encode", "--out", "/nonexistent/dir/x.npy", "a"], "does not exist"),
    (["encode", "--input", "-", "a"], "not both"),
])
def test_encode_errors_are_one_line_with_exit_code_2(argv, message, capsys, hpd_new_path):
    assert main(argv[:1] + ["--model", str(hpd_new_path)] + argv[1:]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_model_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert main(["encode", "--model", str(tmp_path / "m"), "a"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_existing_output_survives_a_failed_encode(hpd_new_path, tmp_path):
    out = tmp_path / "v.npy"
    np.save(out, np.arange(3.0))
    inp = tmp_path / "bad.txt"
    inp.write_bytes(b"ok\n\xff\xfe broken utf-8\n")
    assert main(["encode", "--model", str(hpd_new_path), "--input", str(inp), "--out", str(out)]) == 2
    np.testing.assert_array_equal(np.load(out), np.arange(3.0))


def test_convert_writes_a_pickle_free_folder_with_identical_vectors(hpd_old_path, tmp_path):
    dst = tmp_path / "converted"
    assert main(["convert", str(hpd_old_path), str(dst)]) == 0
    assert not list(dst.rglob("*.bin")) and (dst / "model.safetensors").exists()
    assert (dst / "2_Dense" / "model.safetensors").exists()
    sents = ["a b c", "another sentence"]
    np.testing.assert_array_equal(tinyhpd.load(dst).encode(sents), tinyhpd.load(hpd_old_path).encode(sents))


def test_convert_float16_stays_close(hpd_old_path, tmp_path):
    dst = tmp_path / "f16"
    assert main(["convert", str(hpd_old_path), str(dst), "--dtype", "float16"]) == 0
    sents = ["a b c", "another sentence"]
    assert np.abs(tinyhpd.load(dst).encode(sents) - tinyhpd.load(hpd_old_path).encode(sents)).max() < 0.05


def test_convert_refuses_to_overwrite(hpd_old_path, tmp_path, capsys):
    dst = tmp_path / "c"
    dst.mkdir()
    assert main(["convert", str(hpd_old_path), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("layers", ["0,two", "1,-2"])
def test_distill_bad_student_layers_is_a_usage_error_naming_them(layers, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--teacher", "t", "--student", "s", "--sentences", "f", "--out", "o",
              "--student-layers", layers])
    assert exc.value.code == 2 and repr(layers) in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["encode", "--model", "{model}", "--threads", "0", "a"],
                                  ["rerank", "--model", "{model}", "--threads", "0", "q", "d"]])
def test_threads_flag_is_checked_by_every_command_that_loads_a_model(argv, capsys, hpd_new_path):
    with pytest.raises(SystemExit) as exc:
        main([a.format(model=hpd_new_path) for a in argv])
    assert exc.value.code == 2
    assert "argument --threads: must be a positive integer, got 0" in capsys.readouterr().err


# every flag that counts something, with the arguments before it that reach it; the check is argparse's, at parse
# time: a usage error naming the flag as typed, before a model is loaded or a file read
COUNTING_FLAGS = [
    (["encode"], "--batch-size"), (["encode"], "--threads"),
    (["rerank", "--model", "m"], "--batch-size"), (["rerank", "--model", "m"], "--top-k"),
    (["rerank", "--model", "m"], "--threads"),
    (["embed"], "--shard-size"), (["embed"], "--batch-size"), (["embed"], "--threads"),
    (["eval", "sts"], "--batch-size"),
    (["export", "SRC"], "--batch-size"), (["export", "SRC"], "--m"), (["export", "SRC"], "--ef-construction"),
    (["index", "build"], "--batch-size"), (["index", "tune"], "--batch-size"), (["search"], "--top-k"),
    (["serve"], "--max-batch-tokens"), (["serve"], "--max-client-batch-size"),
    (["serve"], "--max-concurrent-requests"), (["serve"], "--max-payload-bytes"), (["serve"], "--graceful-timeout"),
    (["serve"], "--idle-timeout"), (["serve"], "--threads"),
    (["bench"], "--sentences"), (["bench"], "--threads"), (["bench"], "--repeats"), (["bench"], "--latency-sentences"),
    (["bench"], "--doc-batch"), (["bench"], "--gemm-size"), (["bench"], "--cold-repeats"),
    (["distill"], "--dim"), (["distill"], "--batch-size"), (["distill"], "--max-seq-length"),
    (["distill"], "--max-sentences"), (["distill"], "--val-size"), (["distill"], "--eval-every"),
    (["distill"], "--init-size"), (["distill"], "--teacher-batch-size"), (["distill"], "--threads"),
]


@pytest.mark.parametrize("before, flag", COUNTING_FLAGS)
@pytest.mark.parametrize("value, message", [("0", "must be a positive integer, got 0"),
                                            ("-3", "must be a positive integer, got -3"),
                                            ("two", "must be an integer, got 'two'")])
def test_counting_flags_refuse_what_is_not_a_positive_integer_naming_the_flag(before, flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(before + [flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--port", "70000", "must be a port number in 0..65535, got 70000"),
    ("--port", "-1", "must be an integer >= 0, got -1"),
    ("--port", "http", "must be an integer, got 'http'"),
    ("--body-timeout", "0", "must be a finite number of seconds > 0, got 0"),
    ("--body-timeout", "nan", "must be a finite number of seconds > 0, got nan"),
    ("--header-timeout", "-2.5", "must be a finite number of seconds > 0, got -2.5"),
    ("--header-timeout", "soon", "must be a number of seconds, got 'soon'"),
])
def test_serve_port_and_timeouts_are_usage_errors_naming_the_flag(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_serve_port_zero_and_fractional_timeouts_parse():
    args = build_parser().parse_args(["serve", "--port", "0", "--body-timeout", "0.5", "--header-timeout", "2"])
    assert (args.port, args.body_timeout, args.header_timeout) == (0, 0.5, 2.0)


def test_zero_documents_and_batch_size_lists_in_bench(capsys):
    parser = build_parser()
    args = parser.parse_args(["bench", "--docs", "0", "--batch-sizes", "1, 8,32"])
    assert args.docs == 0 and args.batch_sizes == (1, 8, 32)
    for bad in ("0,4", "", "a,b"):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "--batch-sizes", bad])
        assert f"argument --batch-sizes: expected comma-separated positive integers, got {bad!r}" in \
            capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--docs", "-1"])
    assert "argument --docs: must be an integer >= 0, got -1" in capsys.readouterr().err
