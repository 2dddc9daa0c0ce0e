"""The real Tatoeba archive, sliced: preprocess → train → translate → evaluate via the CLI."""

import json

from conftest import REPO, run_cli


def test_pipeline_on_a_slice_of_the_real_corpus(fra_eng_zip, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    report = run_cli(
        "preprocess", fra_eng_zip, "--out", data, "--max-examples", "4000", "--dev-size", "100",
        "--test-size", "100", "--vocab-size", "1000",
    ).stdout
    assert "train" in report and "vocabulary" in report
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["sources"]["corpus"]["member"] == "fra-eng/fra.txt"
    assert manifest["dev_test_sources_in_train"] == {"dev": 0, "test": 0}
    assert manifest["splits"]["test"]["sources"] == 100
    run_cli("train", "--data", data, "--out", run, "--embed", "32", "--hidden", "64", "--layers", "1",
            "--max-steps", "30", "--valid-every", "15")
    sources = (data / "test.en").read_text(encoding="utf-8").splitlines()
    out = run_cli("translate", "--model", run, data / "test.en").stdout.split("\n")[:-1]
    assert len(out) == len(sources) == 100
    scores = json.loads(run_cli("evaluate", "--model", run, "--data", data, "--json").stdout)
    assert 0 <= scores["bleu"] <= 100


def test_the_books_split_and_tokens(fra_eng_zip, tmp_path):
    data = tmp_path / "d2l"
    run_cli("preprocess", fra_eng_zip, "--recipe", REPO / "recipes" / "d2l.toml", "--out", data)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["splits"]["train"]["pairs"] == 512
    assert manifest["splits"]["dev"]["pairs"] == 129
    vocab = (data / "vocab.en.txt").read_text(encoding="utf-8").split("\n")
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and "." in vocab
    first = (data / "train.en").read_text(encoding="utf-8").split("\n")[0]
    assert first == "Go."
