import math
import subprocess
import sys

import pytest

from conftest import run_cli
from mtkit.evaluation import book_bleu, corpus_scores, reference_streams


def test_book_bleu_reproduces_the_chapters_numbers():
    assert book_bleu("A B", "A B C D E F", k=2) == pytest.approx(math.exp(1 - 6 / 2))
    assert book_bleu("A B C D E F", "A B C D E F", k=4) == 1.0
    assert book_bleu("A B B C D", "A B C D E F", k=4) == 0.0  # p4 = 0, no smoothing
    assert book_bleu("elle court .", "il est calme .", k=2) == 0.0
    assert book_bleu("", "va !", k=2) == 0.0
    # one-token prediction: p2 skipped, only the brevity penalty bites
    assert book_bleu("va", "va !", k=2) == pytest.approx(math.exp(1 - 2 / 1))


def test_missing_references_are_skipped_not_empty():
    assert reference_streams([["a", "b"], ["c"]]) == [["a", "c"], ["b", None]]
    hyps = ["the cat sat on the mat", "a dog ran in the park"]
    scores = corpus_scores(hyps, [["the cat sat on the mat", "x"], ["a dog ran in the park"]])
    assert scores.bleu == pytest.approx(100.0)
    assert scores.ter == pytest.approx(0.0)  # an empty second reference would not change BLEU, but TER
    assert "nrefs:var" in scores.signatures["bleu"]


@pytest.mark.parametrize("case", [[], ["-lc"]], ids=["cased", "lowercased"])
def test_evaluate_equals_sacrebleu_cli(tmp_path, case):
    hyp = tmp_path / "hyp.txt"
    ref = tmp_path / "ref.txt"
    hyp.write_text("je suis chez moi.\nIl est calme.\nElle court vite !\n", encoding="utf-8")
    ref.write_text("Je suis à la maison.\nIl est calme.\nElle court !\n", encoding="utf-8")
    ours = run_cli("evaluate", "--hyp", hyp, "--ref", ref, *case).stdout.splitlines()
    theirs = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-f", "text", "-m", "bleu", "chrf", "ter", *case],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert [line.strip() for line in ours] == [line.strip() for line in theirs]


def test_evaluate_json_and_multiple_references(tmp_path):
    import json

    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a b c d e\nf g h i j\n", encoding="utf-8")
    (tmp_path / "r1").write_text("a b c d e\nx y z\n", encoding="utf-8")
    (tmp_path / "r2").write_text("\nf g h i j\n", encoding="utf-8")
    out = json.loads(run_cli("evaluate", "--hyp", hyp, "--ref", tmp_path / "r1", "--ref", tmp_path / "r2", "--json").stdout)
    assert out["bleu"] == pytest.approx(100.0)
    assert set(out) >= {"bleu", "chrf", "ter", "signatures"}
    assert "nrefs:var" in out["signatures"]["bleu"]


def test_evaluate_book_bleu_prints_each_sentence(tmp_path):
    (tmp_path / "src").write_text("go .\nhe's calm .\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("va !\nelle court .\n", encoding="utf-8")
    (tmp_path / "ref").write_text("va !\nil est calme .\n", encoding="utf-8")
    out = run_cli("evaluate", "--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref", "--src", tmp_path / "src", "--book-bleu").stdout
    assert "go . => va !, bleu,1.000" in out
    assert "he's calm . => elle court ., bleu,0.000" in out
