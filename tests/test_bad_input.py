"""Bad input through the real CLI: one clear line on stderr, the documented exit status, no
traceback, and no half-written output file.

Each case builds its input in a temporary directory, runs ``mtkit ...`` and checks
(exit status, a fragment of the one-line message, the output file that must not exist).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import run_cli


@pytest.fixture(scope="module")
def tiny_run(reverse_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad-input") / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--embed", "16", "--hidden", "16",
            "--layers", "1", "--max-steps", "4", "--valid-every", "4", "--attention", "luong")
    return run


def copy_run(run: Path, target: Path) -> Path:
    target.mkdir()
    for item in run.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


# -- building the bad inputs ------------------------------------------------------------------


def tsv(tmp: Path, text: bytes, name: str = "pairs.tsv") -> Path:
    (tmp / name).write_bytes(text)
    return tmp / name


def zip_with(tmp: Path, members: dict[str, bytes], name: str = "corpus.zip") -> Path:
    with zipfile.ZipFile(tmp / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return tmp / name


def parallel(tmp: Path) -> Path:
    """Files c.en (3 lines) and c.fr (2 lines), given by their prefix."""
    tsv(tmp, b"a\nb\nc\n", "c.en")
    tsv(tmp, b"x\ny\n", "c.fr")
    return tmp / "c"


def truncated_zip(tmp: Path) -> Path:
    good = zip_with(tmp, {"fra.txt": b"Go.\tVa !\n" * 1000}, "good.zip")
    (tmp / "broken.zip").write_bytes(good.read_bytes()[:60])
    return tmp / "broken.zip"


class Payload:
    """Pickles to a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp / "evil")
    buffer = io.BytesIO()
    torch.save({"model": Payload(tmp / "pwned"), "meta": {}}, buffer, pickle_protocol=2)
    (target / "best.pt").write_bytes(buffer.getvalue())
    return target


def truncated_checkpoint(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp / "truncated")
    data = (target / "best.pt").read_bytes()
    (target / "best.pt").write_bytes(data[: len(data) // 2])
    return target


def flipped_checkpoint(run: Path, tmp: Path) -> Path:
    """One byte of one weight changed: the file still loads, the checksum does not match."""
    target = copy_run(run, tmp / "flipped")
    state = torch.load(target / "best.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[0] += 1.0
    torch.save(state, target / "best.pt")
    return target


def other_vocabulary(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp / "vocab")
    lines = (target / "vocab.fr.txt").read_text(encoding="utf-8").splitlines()
    (target / "vocab.fr.txt").write_text("\n".join(lines[:-3]) + "\n", encoding="utf-8")
    return target


def unknown_option(run: Path, tmp: Path) -> Path:
    target = copy_run(run, tmp / "config")
    text = (target / "config.json").read_text(encoding="utf-8")
    (target / "config.json").write_text(text.replace('"cell": "gru"', '"cell": "gru", "celll": 3'), encoding="utf-8")
    return target


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    args: object  # list, or a function (tmp, run, data) -> list
    status: int
    message: str
    output: str | None = None  # a file that must not be left behind
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("empty corpus", lambda t, r, d: ["preprocess", tsv(t, b""), "--out", t / "o"], 1, "no usable sentence pairs", "o"),
    Case("only bad lines", lambda t, r, d: ["preprocess", tsv(t, b"no tab here\n\xff\xfe\tx\n"), "--out", t / "o"], 1, "1 no tab, 1 invalid UTF-8", "o"),
    Case("zip without text", lambda t, r, d: ["preprocess", zip_with(t, {"img.png": b"x"}), "--out", t / "o"], 1, "holds no .txt or .tsv", "o"),
    Case("zip bomb", lambda t, r, d: ["preprocess", zip_with(t, {"fra.txt": b"\0" * 30_000_000}), "--out", t / "o"], 1, "zip bomb", "o"),
    Case("corrupt zip", lambda t, r, d: ["preprocess", truncated_zip(t), "--out", t / "o"], 1, "not a valid zip archive", "o"),
    Case("missing source", lambda t, r, d: ["preprocess", t / "nope.tsv", "--out", t / "o"], 1, "file not found", "o"),
    Case("parallel files of different lengths", lambda t, r, d: ["preprocess", parallel(t), "--out", t / "o"], 1, "c.en has 3 lines, ", "o"),
    Case(
        "download with the wrong sha1",
        lambda t, r, d: ["preprocess", "--out", t / "o"], 1, "removed it", "o",
        env={"MTKIT_DATA_URL": "__ZIP_URL__", "MTKIT_CACHE": "__TMP__/cache"},
    ),
    Case(
        "offline download",
        lambda t, r, d: ["preprocess", "--out", t / "o"], 1, "pass a local copy instead", "o",
        env={"MTKIT_DATA_URL": "http://127.0.0.1:9/fra-eng.zip", "MTKIT_CACHE": "__TMP__/cache"},
    ),
    Case("unknown recipe key", lambda t, r, d: ["preprocess", tsv(t, b"a\tb\n"), "--out", t / "o", "--data.tokeniser", "word"], 2, "unknown option 'data.tokeniser'", "o"),
    Case("bad choice", lambda t, r, d: ["preprocess", tsv(t, b"a\tb\n"), "--out", t / "o", "--tokenizer", "chars"], 2, "'chars' is not one of word, sentencepiece", "o"),
    Case("unknown flag", lambda t, r, d: ["translate", "--model", r, "--beems", "3"], 2, "No such option", None),
    Case("not a data directory", lambda t, r, d: ["train", "--data", t, "--out", t / "run"], 1, "not a data directory", "run/best.pt"),
    Case("impossible model", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--bidirectional", "--bridge", "last"], 2, "bridge 'last'", "run/best.pt"),
    Case("bad duration", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--max-time", "soon"], 2, "cannot read 'soon' as a duration", "run"),
    Case("existing run directory", lambda t, r, d: ["train", "--data", d, "--out", r], 1, "already exists", None),
    Case("not a run directory", lambda t, r, d: ["translate", "--model", t, "-o", t / "out.txt"], 1, "not a run directory", "out.txt"),
    Case("truncated checkpoint", lambda t, r, d: ["translate", "--model", truncated_checkpoint(r, t), "-o", t / "out.txt"], 1, "truncated or corrupted checkpoint", "out.txt"),
    Case("corrupted checkpoint", lambda t, r, d: ["translate", "--model", flipped_checkpoint(r, t), "-o", t / "out.txt"], 1, "checksum mismatch", "out.txt"),
    Case("malicious pickle", lambda t, r, d: ["translate", "--model", malicious_checkpoint(r, t), "-o", t / "out.txt"], 1, "refused", "pwned"),
    Case("vocabulary does not match", lambda t, r, d: ["translate", "--model", other_vocabulary(r, t), "-o", t / "out.txt"], 1, "does not match the model", "out.txt"),
    Case("unknown option in config.json", lambda t, r, d: ["translate", "--model", unknown_option(r, t), "-o", t / "out.txt"], 2, "unknown option 'model.celll'", "out.txt"),
    Case("missing input file", lambda t, r, d: ["translate", "--model", r, t / "nope.txt", "-o", t / "out.txt"], 1, "file not found", "out.txt"),
    Case("strict decoding", lambda t, r, d: ["translate", "--model", r, tsv(t, b"w1 w2\n\xffw3\n", "in.txt"), "-o", t / "out.txt", "--encoding-errors", "strict"], 1, "in.txt:2: invalid UTF-8", "out.txt"),
    Case("zero beam", lambda t, r, d: ["translate", "--model", r, "--beam", "0"], 2, "--nbest <= --beam", None),
    Case("nbest above beam", lambda t, r, d: ["translate", "--model", r, "--beam", "2", "--nbest", "3"], 2, "--nbest <= --beam", None),
    Case("exhaustive search too large", lambda t, r, d: ["translate", "--model", r, "--search", "exhaustive", tsv(t, b"w1 w2 w3\n", "in.txt")], 2, "exhaustive search would score", None),
    Case("hypotheses and references differ in length", lambda t, r, d: ["evaluate", "--hyp", tsv(t, b"a\nb\n", "h"), "--ref", tsv(t, b"a\n", "r")], 1, "has 1 lines but the hypotheses have 2", None),
    Case("evaluate without references", lambda t, r, d: ["evaluate", "--hyp", tsv(t, b"a\n", "h")], 2, "give --hyp and at least one --ref", None),
    Case("resume without a checkpoint", lambda t, r, d: ["train", "--resume", t], 1, "not a run directory", None),
    Case("resume with a changed setting", lambda t, r, d: ["train", "--resume", r, "--lr", "0.1"], 2, "give only limits", None),
    Case("resume of a finished run", lambda t, r, d: ["train", "--resume", r], 1, "already reached its limit at step 4", None),
    Case("resume in another number of processes", lambda t, r, d: ["train", "--resume", r, "--max-steps", "8", "--nproc", "2"], 2, "trained in 1 process(es) in all: resume it in as many", None),
    Case("data setting given to train", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--data.vocab-size", "4000"], 2, "--data.vocab-size is a setting of `mtkit preprocess`, not of `mtkit train`", "run"),
    Case("train setting given to preprocess", lambda t, r, d: ["preprocess", tsv(t, b"a\tb\n"), "--out", t / "o", "--train.lr", "1"], 2, "--train.lr is a setting of `mtkit train`, not of `mtkit preprocess`", "o"),
    Case("model setting given to preprocess", lambda t, r, d: ["preprocess", tsv(t, b"a\tb\n"), "--out", t / "o", "--model.hidden", "8"], 2, "--model.hidden is a setting of `mtkit train`", "o"),
    Case("average no checkpoints", lambda t, r, d: ["average", r, "--last", "0", "-o", t / "avg.pt"], 2, "--last must be at least 1", "avg.pt"),
    Case("beam with exhaustive search", lambda t, r, d: ["translate", "--model", r, "--search", "exhaustive", "--beam", "3"], 2, "it takes no --beam", None),
    Case("several machines without this one's number", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--nnodes", "2", "--master-addr", "127.0.0.1"], 2, "--nnodes needs --node-rank R", "run"),
    Case("a machine's number without --nnodes", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--node-rank", "1"], 2, "are for training on several machines (--nnodes M)", "run"),
    Case("two batch sizes", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--batch-size", "8", "--batch-tokens", "90"], 2, "not both", "run"),
    Case("no batch size", lambda t, r, d: ["train", "--data", d, "--out", t / "run", "--train.batch-tokens", "none"], 2, "set train.batch_tokens or train.batch_size", "run"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_line(case, tiny_run, reverse_data, tmp_path):
    args = case.args(tmp_path, tiny_run, reverse_data)
    env = {**os.environ}
    for key, value in case.env.items():
        if value == "__ZIP_URL__":
            value = zip_with(tmp_path, {"fra-eng/fra.txt": b"Go.\tVa !\n"}, "mirror.zip").as_uri()
        env[key] = value.replace("__TMP__", str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "mtkit", *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == case.status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mtkit: error: ") and case.message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    if case.output:
        assert not (tmp_path / case.output).exists()
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]
    assert not leftovers, leftovers  # atomic_write's .NAME.*.tmp, preprocess's .DIR.tmp-PID, downloads' .part


def test_skipped_lines_are_counted_by_reason(tmp_path):
    data = (b"Go.\tVa !\r\nno tab\nHi.\tSalut !\tCC-BY 2.0 (France) Attribution: tatoeba.org\n\xff\tx\n"
            b"\t\nHello.\t \n1\t2\t3\t4\nRun!\tCours !\n")
    args = ("preprocess", tsv(tmp_path, data), "--out", tmp_path / "o", "--dev-size", "1", "--test-size", "1",
            "--tokenizer", "word", "--min-freq", "1")
    refused = run_cli(*args, check=False)  # 4 of 7 lines skipped (the blank one does not count)
    assert refused.returncode == 1 and "pairs.tsv: 4 of its 7 lines were skipped" in refused.stderr
    assert "--allow-skipped" in refused.stderr and not (tmp_path / "o").exists()
    report = run_cli(*args, "--allow-skipped").stdout
    assert "1 no tab" in report and "1 invalid UTF-8" in report
    assert "1 empty side" in report and "1 more than 3 columns" in report and "1 blank line" in report
    assert (tmp_path / "o" / "manifest.json").is_file()


NASTY_LINES = [
    "\ufeffHello with a BOM",
    "w1\x00w2 with a NUL",
    "\x07\x1b[31m control characters",
    "שלום עולם right-to-left",
    "e\u0301e\u0301 combining accents",
    "emoji 😀🇫🇷👍🏽",
    "w1 " * 40_000,
    "   ",
    "",
    "\u2028line separator inside",
]


def test_nasty_input_keeps_one_output_line_per_input_line(tiny_run, tmp_path):
    raw = ("\r\n".join(NASTY_LINES[:4]) + "\r" + "\n".join(NASTY_LINES[4:]) + "\n").encode("utf-8") + b"\xff\xfe broken\n"
    source = tmp_path / "nasty.txt"
    source.write_bytes(raw)
    result = run_cli("translate", "--model", tiny_run, source, "-o", tmp_path / "out.txt")
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert len(out) - 1 == len(NASTY_LINES) + 1
    assert out[7] == "" and out[8] == ""
    assert "1 with invalid UTF-8 replaced" in result.stderr and "1 cut to 250 tokens" in result.stderr


def test_unexpected_errors_print_a_short_line_and_keep_the_traceback(tmp_path):
    code = (
        "import mtkit.evaluation as e\n"
        "def boom(*a, **k): raise ZeroDivisionError('simulated')\n"
        "e.corpus_scores = boom\n"
        "from mtkit.cli import main\n"
        "main(['evaluate', '--hyp', 'h', '--ref', 'h'])\n"
    )
    (tmp_path / "h").write_text("a\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "unexpected ZeroDivisionError: simulated" in line and "--debug" in line
    log = Path(line.split("traceback in ")[1].split(";")[0])
    assert "Traceback" in log.read_text()
    debug = subprocess.run([sys.executable, "-c", code.replace("'h'])", "'h', '--debug'])")], capture_output=True, text=True, cwd=tmp_path)
    assert "Traceback" in debug.stderr


def test_mtkits_loader_refuses_a_checkpoint_that_would_run_code(tiny_run, tmp_path):
    from mtkit.checkpoint import load_checkpoint
    from mtkit.errors import CheckpointError

    path = malicious_checkpoint(tiny_run, tmp_path) / "best.pt"
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    # what the refusal prevents: loading the same file without weights_only runs the payload
    torch.load(path, weights_only=False)
    assert (tmp_path / "pwned").exists()
