"""tinyhpd.tokenizer: long texts are tokenised from a prefix that gives exactly the tokens of the whole text (issue
24: one 51 MB line took 7 GB and minutes for 128 tokens), checked on generated texts against tokenising the whole."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tiny_models
import tinyhpd
from helpers import REPO
from tinyhpd.tokenizer import tokenize_info

WORDS = [w for w in tiny_models.vocab() if w.isalpha()] + ["supercalifragilistic", "Crème", "brûlée", "日本語", "🍕",
                                                          "İstanbul", "naïve", "x" * 150]
SEPARATORS = [" ", "  ", "\n", "\t", "-", ",", ".", "", "\u00a0", "\u200b", "'"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_path):
    tiny = tinyhpd.load(tiny_models.build_new(tmp_path_factory.mktemp("tok") / "m", arch=tiny_models.SMALL_ARCH,
                                              dense_out=None, max_seq_length=16))
    return [tiny, tinyhpd.load(minilm_path)]


texts = st.builds(lambda ws, seps: "".join(w + s for w, s in zip(ws, seps)),
                  st.lists(st.sampled_from(WORDS), min_size=1, max_size=900),
                  st.lists(st.sampled_from(SEPARATORS), min_size=900, max_size=900))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=texts, lowercase=st.booleans())
def test_a_long_text_gives_the_tokens_of_the_whole_text(models, text, lowercase):
    for model in models:
        tok = model._tokenizer
        ids, truncated = tokenize_info(tok, [text], lowercase)
        whole = tok.encode(text.strip().lower() if lowercase else text.strip(), add_special_tokens=True)
        assert ids[0].tolist() == whole.ids and truncated[0] == bool(whole.overflowing)


def test_a_50_mb_line_embeds_in_bounded_time_and_memory(tmp_path, hpd_new_path):
    src = tmp_path / "in.txt"
    src.write_text("short line\n" + "word " * 10_000_000 + "\nlast line\n", encoding="utf-8")
    # VmHWM: this process's peak RSS (ru_maxrss would carry the forking pytest process's peak across exec)
    code = ("import json, sys, time, tinyhpd\n"
            "m = tinyhpd.load(sys.argv[1])\n"
            "t = time.perf_counter()\n"
            "v = m.encode(open(sys.argv[2], encoding='utf-8').read().split('\\n')[:3])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print(json.dumps({'s': time.perf_counter() - t, 'rss_mb': int(hwm) / 1024, 'row': v[1].tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(hpd_new_path), str(src)], capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["s"] < 20 and out["rss_mb"] < 1500, out  # was 6.5-7 GB and 2.5 min
    np.testing.assert_allclose(out["row"], tinyhpd.load(hpd_new_path).encode("word " * 1000), atol=1e-6)
