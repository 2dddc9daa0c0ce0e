"""The real Tatoeba archive, sliced: preprocess → train → translate → evaluate via the CLI."""

import json

import pytest

from conftest import REPO, run_cli


def test_pipeline_on_a_slice_of_the_real_corpus(fra_eng_zip, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    report = run_cli(
        "preprocess", fra_eng_zip, "--out", data, "--max-examples", "4000", "--dev-size", "100",
        "--test-size", "100", "--vocab-size", "1000",
    ).stdout
    assert "train" in report and "vocabulary" in report
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["sources"]["train"][0]["member"] == "fra-eng/fra.txt"
    assert manifest["dev_test_sources_in_train"] == {"dev": 0, "test": 0}
    assert manifest["splits"]["test"]["sources"] == 100
    run_cli("train", "--data", data, "--out", run, "--embed", "64", "--hidden", "128", "--lr", "0.01",
            "--max-steps", "120", "--valid-every", "40")
    sources = (data / "test.en").read_text(encoding="utf-8").splitlines()
    out = run_cli("translate", "--model", run, data / "test.en").stdout.split("\n")[:-1]
    assert len(out) == len(sources) == 100
    scores = json.loads(run_cli("evaluate", "--model", run, "--data", data, "--json").stdout)
    # Measured here: BLEU 4.2, chrF 18.6 on these short sentences; the untrained model: 0.04, 7.1.
    assert scores["bleu"] >= 2 and scores["chrf"] >= 13, scores


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


BOOK_SENTENCES = {"go .": "va !", "i lost .": "j'ai perdu .", "he's calm .": "il est calme .", "i'm home .": "je suis chez moi ."}


@pytest.mark.slow
def test_the_books_run_as_make_d2l_runs_it(fra_eng_zip, tmp_path):
    """The chapter's check: its training-loss curve (about 3.2 after epoch 1, 0.24 at epoch 30),
    validation loss rising again as 512 pairs are learned by heart, and its four sentences."""
    data, run = tmp_path / "data", tmp_path / "run"
    recipe = REPO / "recipes" / "d2l.toml"
    run_cli("preprocess", fra_eng_zip, "--recipe", recipe, "--out", data)
    run_cli("train", "--recipe", recipe, "--data", data, "--out", run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, 31))
    assert 2.5 < rows[0]["train_loss"] < 4.5 and 0.1 < rows[-1]["train_loss"] < 0.4
    dev = [row["dev_loss"] for row in rows]
    assert dev.index(min(dev)) < 15 and dev[-1] > min(dev) + 0.3
    out = run_cli("translate", "--model", run, "--checkpoint", "last", "--tokenized",
                  input="".join(f"{s}\n" for s in BOOK_SENTENCES)).stdout.splitlines()
    assert sum(hyp == ref for hyp, ref in zip(out, BOOK_SENTENCES.values())) >= 2, out
