"""The index with the real all-MiniLM-L6-v2."""
from __future__ import annotations

import pytest
from tinyhpd.index import Index


def test_real_model_end_to_end(minilm_path, stsb_test_sentences, tmp_path):
    import tinyhpd

    model = tinyhpd.load(str(minilm_path))
    docs = stsb_test_sentences[:300]
    index = Index.build(docs, model=model, dtype="int8")
    index.save(tmp_path / "ix")
    loaded = Index.load(tmp_path / "ix", model=model)
    assert loaded.model_info["fingerprint"] == model.fingerprint
    hits = loaded.search(docs[:20], top_k=3)
    assert [h.ids[0] for h in hits] == list(range(20))


def test_cli_with_the_real_model(tmp_path, minilm_path, stsb_test_sentences, capsys):
    from tinyhpd.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(stsb_test_sentences[:40]) + "\n", encoding="utf-8")
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "ix"), "--model", str(minilm_path),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "ix"), stsb_test_sentences[7]]) == 0  # model taken from the manifest
    first = capsys.readouterr().out.splitlines()[0].split("\t")
    assert first[0] == "1" and first[2] == "8" and float(first[1]) == pytest.approx(1.0, abs=1e-3)
