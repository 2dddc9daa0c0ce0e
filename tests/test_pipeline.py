"""The four commands end to end, as a user runs them."""

import json

import pytest

from conftest import run_cli


def train_reverse(data, out, *extra):
    run_cli(
        "train", "--data", data, "--out", out, "--embed", "64", "--hidden", "128", "--layers", "1",
        "--unidirectional", "--bridge", "last",
        "--lr", "0.01", "--batch-tokens", "2000", "--max-steps", "300", "--valid-every", "150",
        "--train.schedule", "linear", "--seed", "1", *extra,
    )


@pytest.fixture(scope="module")
def reverse_run(reverse_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "luong"
    train_reverse(reverse_data, out, "--model.attention", "luong")
    return out


def test_system_reverse_task_learns_to_bleu_90(reverse_run, reverse_data):
    scores = json.loads(run_cli("evaluate", "--model", reverse_run, "--data", reverse_data, "--json").stdout)
    assert scores["bleu"] >= 90


def test_run_dir_holds_everything_to_translate(reverse_run):
    names = {p.name for p in reverse_run.iterdir()}
    assert {"config.json", "best.pt", "last.pt", "metrics.jsonl", "train.log", "vocab.en.txt", "vocab.fr.txt"} <= names
    config = json.loads((reverse_run / "config.json").read_text())
    assert config["model"]["attention"] == "luong"
    assert config["data"]["tokenizer"] == "word"
    lines = (reverse_run / "metrics.jsonl").read_text().splitlines()
    assert all({"step", "dev_bleu", "dev_loss"} <= set(json.loads(line)) for line in lines)


def test_translate_keeps_one_line_per_input_line(reverse_run, tmp_path):
    text = "w1 w2 w3\n\nw4 w5 w6 w7\n   \nw8 w9 w10\n"
    out = run_cli("translate", "--model", reverse_run, input=text).stdout
    lines = out.split("\n")[:-1]
    assert len(lines) == 5
    assert lines[1] == "" and lines[3] == ""
    assert lines[0] == "w3 w2 w1"
    # a file gives the same as stdin, byte for byte, for any batch size, greedy or beam
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    for beam in ("1", "5"):
        expected = out if beam == "1" else run_cli("translate", "--model", reverse_run, "--beam", beam, input=text).stdout
        for batch_size in ("1", "7", "64"):
            run_cli("translate", "--model", reverse_run, src, "-o", tmp_path / "out.txt", "--batch-size", batch_size, "--beam", beam)
            assert (tmp_path / "out.txt").read_bytes() == expected.encode("utf-8")


def test_training_refuses_to_overwrite_a_run(reverse_run, reverse_data):
    result = run_cli("train", "--data", reverse_data, "--out", reverse_run, "--max-steps", "1", check=False)
    assert result.returncode == 1
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert (reverse_run / "best.pt").is_file()


def test_interactive_prompt_on_a_terminal(reverse_run):
    import os
    import pty
    import select
    import sys

    def read_until(fd, marker, timeout=60.0):
        seen = b""
        while marker not in seen:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise AssertionError(f"no {marker!r} in {seen!r}")
            seen += os.read(fd, 1024)
        return seen

    pid, fd = pty.fork()
    if pid == 0:  # the child: mtkit with a terminal on stdin and stdout
        os.execv(sys.executable, [sys.executable, "-m", "mtkit", "translate", "--model", str(reverse_run)])
    try:
        read_until(fd, b"> ")
        os.write(fd, b"w1 w2 w3\n")
        assert b"w3 w2 w1" in read_until(fd, b"> ")
        os.write(fd, b"\x04")  # Ctrl-D ends the session
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


def test_nbest_and_jsonl_output(reverse_run):
    text = "w1 w2 w3\n\nw4 w5\n"
    nbest = run_cli("translate", "--model", reverse_run, "--beam", "4", "--nbest", "3", input=text).stdout.splitlines()
    # three hypotheses per sentence; the empty line gets one empty entry
    assert [line.split(" ||| ")[0] for line in nbest] == ["0"] * 3 + ["1"] + ["2"] * 3
    assert nbest[3] == "1 |||  ||| 0.0000"
    scores = [float(line.split(" ||| ")[2]) for line in nbest[:3]]
    assert scores == sorted(scores, reverse=True)
    best = run_cli("translate", "--model", reverse_run, "--beam", "4", input=text).stdout.splitlines()
    assert nbest[0].split(" ||| ")[1] == best[0]
    rows = [json.loads(line) for line in run_cli("translate", "--model", reverse_run, "--beam", "4", "--nbest", "2",
                                                 "--format", "jsonl", input=text).stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert rows[1]["hypotheses"] == [] and len(rows[0]["hypotheses"]) == 2
    assert rows[0]["hypotheses"][0]["text"] == best[0]


@pytest.mark.parametrize("options", [
    {"cell": "lstm", "impl": "scratch", "embed": 24, "hidden": 24, "layers": 1, "decoder-layers": 2,
     "bidirectional": True, "bridge": "linear", "attention": "bahdanau", "tie-embeddings": True, "dropout": 0.1},
    {"cell": "gru", "impl": "fused", "embed": 16, "hidden": 24, "layers": 2, "bidirectional": False,
     "bridge": "zero", "attention": "luong", "attention-score": "dot", "context-input": True},
], ids=["lstm-bahdanau", "gru-luong"])
def test_every_model_option_is_saved_and_rebuilt_by_translate(reverse_data, tmp_path, options):
    run = tmp_path / "run"
    args = []
    for key, value in options.items():
        if isinstance(value, bool):
            args.append(f"--{key}" if value else {"bidirectional": "--unidirectional"}.get(key, f"--no-{key}"))
        else:
            args += [f"--{key}", str(value)]
    run_cli("train", "--data", reverse_data, "--out", run, *args, "--max-steps", "2", "--valid-every", "2")
    saved = json.loads((run / "config.json").read_text())["model"]
    assert {key.replace("-", "_"): saved[key.replace("-", "_")] for key in options} == {
        key.replace("-", "_"): value for key, value in options.items()
    }
    out = run_cli("translate", "--model", run, "--beam", "3", input="w1 w2\nw3\n").stdout
    assert len(out.splitlines()) == 2


def test_show_attention_draws_each_translated_sentence_and_keeps_the_output(reverse_run, tmp_path):
    text = "w1 w2 w3\n\nw4 w5\n"
    plain = run_cli("translate", "--model", reverse_run, input=text).stdout
    shown = run_cli("translate", "--model", reverse_run, "--show-attention", "--attention-png", tmp_path / "att",
                    "--buffer", "2", "--batch-size", "1", input=text)
    assert shown.stdout == plain
    assert "1: w3 w2 w1" in shown.stderr and "3: w5 w4" in shown.stderr and "2:" not in shown.stderr
    assert sorted(p.name for p in tmp_path.glob("att-*.png")) == ["att-1.png", "att-3.png"]
