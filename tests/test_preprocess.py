"""Streaming preprocess: the same data as a straightforward in-memory reference, for any number
of workers and chunks; compressed and several corpora; the guards on what it reads."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from synthetic import make_task, write_tsv
from mtkit.config import DataConfig
from mtkit.data.dataset import DataDir
from mtkit.data.normalize import clean, normalize
from mtkit.data.preprocess import RunOptions, preprocess
from mtkit.data.split import EvalSet, group_hashes
from mtkit.data.tokenizers import SentencePieceTokenizer, WordTokenizer


def reference(lines: list[bytes], config: DataConfig) -> dict:
    """The data directory's content computed the plain way: everything in memory, in one go."""
    pairs = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            columns = raw.decode("utf-8").split("\t")
        except UnicodeDecodeError:
            continue
        if len(columns) in (2, 3) and clean(columns[0]) and clean(columns[1]):
            pairs.append((clean(columns[0]), clean(columns[1])))
    pairs = pairs[: config.max_examples]
    hashes = group_hashes([s for s, _ in pairs], config.seed)
    held = np.unique(hashes)[: config.dev_size + config.test_size]
    dev, test = set(held[: config.dev_size].tolist()), set(held[config.dev_size :].tolist())
    split = {"train": [], "dev": [], "test": []}
    for pair, h in zip(pairs, hashes.tolist()):
        split["dev" if h in dev else "test" if h in test else "train"].append(pair)
    texts = [[normalize(p[side], config.normalize) for p in split["train"]] for side in (0, 1)]
    if config.tokenizer == "word":
        tokenizers = [WordTokenizer.train(t, config.min_freq) for t in texts]
    else:
        tokenizers = [SentencePieceTokenizer.train(t, config.vocab_size) for t in texts]
    split["dev"], split["test"] = EvalSet.from_pairs(split["dev"]).pairs, EvalSet.from_pairs(split["test"]).pairs
    ids = {
        name: [[tok.encode(normalize(p[side], config.normalize)) for p in split_pairs] for side, tok in enumerate(tokenizers)]
        for name, split_pairs in split.items()
    }
    return {"split": split, "ids": ids, "vocabs": [tok.vocab.tokens for tok in tokenizers]}


def read_back(directory: Path) -> dict:
    data = DataDir(directory)
    ids, split = {}, {}
    for name in ("train", "dev", "test"):
        encoded = data.encoded(name)
        ids[name] = [[side[i].tolist() for i in range(len(encoded))] for side in (encoded.src, encoded.tgt)]
        if name == "train":
            src = (directory / "train.en").read_text(encoding="utf-8").splitlines()
            tgt = (directory / "train.fr").read_text(encoding="utf-8").splitlines()
            split[name] = list(zip(src, tgt))
        else:
            split[name] = data.eval_set(name).pairs
    vocabs = [(directory / f"vocab.{lang}.txt").read_text(encoding="utf-8").split("\n")[:-1] for lang in ("en", "fr")]
    return {"split": split, "ids": ids, "vocabs": vocabs}


def zip_lines(path: Path) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        return archive.read("fra-eng/fra.txt").splitlines()


def test_streaming_equals_the_in_memory_reference_on_tatoeba(fra_eng_zip, tmp_path):
    config = DataConfig(max_examples=3000, dev_size=100, test_size=150, vocab_size=1000)
    # small chunks and two workers: the corpus goes through ten chunks, out of order
    preprocess(config, tmp_path / "data", [fra_eng_zip], options=RunOptions(workers=2, chunk_lines=300, progress=False))
    expected = reference(zip_lines(fra_eng_zip), config)
    got = read_back(tmp_path / "data")
    assert got == expected  # splits (dev and test grouped by source), vocabularies, every id
    assert len(got["split"]["dev"]) > 100 and len(got["split"]["train"]) > 2500
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["dev_test_sources_in_train"] == {"dev": 0, "test": 0}
    assert manifest["splits"]["train"]["pairs"] == len(expected["split"]["train"])


def test_the_split_does_not_depend_on_the_corpus_order(tmp_path):
    pairs = make_task("copy", 3000, seed=4)
    config = DataConfig(tokenizer="word", min_freq=1, dev_size=50, test_size=50)
    options = RunOptions(workers=1, chunk_lines=700, progress=False)
    preprocess(config, tmp_path / "a", [write_tsv(tmp_path / "a.tsv", pairs)], options=options)
    preprocess(config, tmp_path / "b", [write_tsv(tmp_path / "b.tsv", pairs[::-1])], options=options)
    for name in ("dev", "test"):
        a, b = (DataDir(tmp_path / d).eval_set(name) for d in "ab")
        assert sorted(a.sources) == sorted(b.sources) and len(a.sources) == 50
    other = DataConfig(tokenizer="word", min_freq=1, dev_size=50, test_size=50, seed=2)
    preprocess(other, tmp_path / "c", [tmp_path / "a.tsv"], options=options)
    assert DataDir(tmp_path / "c").eval_set("dev").sources != DataDir(tmp_path / "a").eval_set("dev").sources


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
def test_any_number_of_workers_gives_a_byte_identical_data_directory(tmp_path, tokenizer):
    corpus = write_tsv(tmp_path / "pairs.tsv", make_task("reverse", 5000, seed=7))
    config = DataConfig(tokenizer=tokenizer, min_freq=1, vocab_size=300, dev_size=40, test_size=40, spm_sample=1500)
    for workers in (1, 2, 3):
        preprocess(config, tmp_path / f"w{workers}", [corpus], options=RunOptions(workers=workers, chunk_lines=400, progress=False))
    files = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert "train.src.ids" in files and "manifest.json" in files
    for workers in (2, 3):
        assert sorted(p.name for p in (tmp_path / f"w{workers}").iterdir()) == files
        for name in files:
            assert (tmp_path / f"w{workers}" / name).read_bytes() == (tmp_path / "w1" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "w1" / "manifest.json").read_text())
    if tokenizer == "sentencepiece":
        assert manifest["tokenizer_sentences"] == 1500  # the sample, not the 4,920 training pairs


def test_the_sentencepiece_sample_is_capped_in_megabytes_with_evenly_spaced_sentences(tmp_path):
    words = [w for s, _ in make_task("reverse", 200, seed=3) for w in s.split()]
    pairs = [(f"s{i} " + " ".join(words[i % 150:i % 150 + 80]), " ".join(words[i % 170:i % 170 + 80])) for i in range(4000)]
    corpus = write_tsv(tmp_path / "long.tsv", pairs)  # about 1.3 MB a side
    run_cli("preprocess", corpus, "--out", tmp_path / "data", "--vocab-size", 300, "--dev-size", 20,
            "--test-size", 20, "--spm-sample-mb", 1, "--workers", 1)
    kept = json.loads((tmp_path / "data" / "manifest.json").read_text())["tokenizer_sentences"]
    largest = max((tmp_path / "data" / f"train.{lang}").stat().st_size for lang in ("en", "fr"))  # = the sample's text
    assert largest > 2**20 and kept == 3960 * 2**20 // largest

    lines = [f"line {i} " + " ".join(words[i % 97:i % 97 + 8]) for i in range(90)]
    (tmp_path / "sample.txt").write_text("".join(line + "\n" for line in lines))
    spaced = SentencePieceTokenizer.train_file(tmp_path / "sample.txt", 320, keep=(30, 90))
    assert spaced.model_proto == SentencePieceTokenizer.train(lines[2::3], 320).model_proto
    assert spaced.model_proto != SentencePieceTokenizer.train(lines[:30], 320).model_proto


def test_compressed_and_several_corpora_add_up(tmp_path):
    pairs = make_task("copy", 4000, seed=5)
    parts = [pairs[:1000], pairs[1000:2000], pairs[2000:3000], pairs[3000:]]
    plain = write_tsv(tmp_path / "a.tsv", parts[0])
    (tmp_path / "b.tsv.gz").write_bytes(gzip.compress(write_tsv(tmp_path / "b", parts[1]).read_bytes()))
    (tmp_path / "c.data").write_bytes(lzma.compress(write_tsv(tmp_path / "c", parts[2]).read_bytes()))  # xz, whatever its name
    (tmp_path / "d.en.bz2").write_bytes(bz2.compress("".join(s + "\n" for s, _ in parts[3]).encode()))
    (tmp_path / "d.fr.gz").write_bytes(gzip.compress("".join(t + "\n" for _, t in parts[3]).encode()))
    args = ("--tokenizer", "word", "--min-freq", "1", "--dev-size", "30", "--test-size", "30")
    report = run_cli("preprocess", "--train", plain, "--train", tmp_path / "b.tsv.gz", "--train", tmp_path / "c.data",
                     "--train", tmp_path / "d", "--out", tmp_path / "several", *args).stdout
    run_cli("preprocess", write_tsv(tmp_path / "all.tsv", pairs), "--out", tmp_path / "one", *args)
    for name in ("train.src.ids", "train.tgt.ids", "train.en", "dev.refs.jsonl", "test.src.ids", "vocab.en.txt"):
        assert (tmp_path / "several" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    sources = json.loads((tmp_path / "several" / "manifest.json").read_text())["sources"]["train"]
    assert [s["pairs"] for s in sources] == [1000, 1000, 1000, 1000]
    assert [s.get("compression") for s in sources] == ["none", "gzip", "xz", "bzip2"]
    assert sources[3]["target_compression"] == "gzip"
    assert "b.tsv.gz" in report and "1,000" in report  # each corpus counted in the summary


def test_a_compressed_or_binary_file_is_never_read_as_text(tmp_path):
    pairs = make_task("copy", 300, seed=1)
    (tmp_path / "big-b.tsv").write_bytes(gzip.compress(write_tsv(tmp_path / "x", pairs).read_bytes()))  # .gz without the name
    args = ("--tokenizer", "word", "--min-freq", "1", "--dev-size", "5", "--test-size", "5")
    run_cli("preprocess", "--train", tmp_path / "big-b.tsv", "--out", tmp_path / "o", *args)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["splits"]["train"]["pairs"] > 250
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 100)
    (tmp_path / "utf16.tsv").write_bytes("Go.\tVa !\n".encode("utf-16"))
    (tmp_path / "c.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(100))
    for name, message in (("model.bin", "binary data"), ("utf16.tsv", "UTF-16"), ("c.zst", "zstd")):
        result = run_cli("preprocess", tmp_path / name, "--out", tmp_path / "bad", *args, check=False)
        assert result.returncode == 1 and message in result.stderr and name in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_a_mostly_skipped_source_stops_preprocess_unless_allowed(tmp_path):
    good = write_tsv(tmp_path / "good.tsv", make_task("copy", 500, seed=2))
    latin1 = "".join(f"caf\xe9 {i}\tcaf\xe9 {i}\n" if i % 3 else f"tea {i}\tthe {i}\n" for i in range(300))
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(latin1.encode("latin-1"))
    args = ("--tokenizer", "word", "--min-freq", "1", "--dev-size", "5", "--test-size", "5")
    result = run_cli("preprocess", "--train", good, "--train", bad, "--out", tmp_path / "o", *args, check=False)
    assert result.returncode == 1
    assert "latin1.tsv: 200 of its 300 lines were skipped (skipped: 200 invalid UTF-8)" in result.stderr
    assert not (tmp_path / "o").exists()
    mixed = tmp_path / "mixed.tsv"
    mixed.write_bytes(b"".join(line.encode("latin-1") if i % 3 == 1 else line.encode("utf-8") for i, line in enumerate(latin1.splitlines(True))))
    report = run_cli("preprocess", "--train", good, "--train", mixed, "--out", tmp_path / "o", *args).stdout
    assert "100 invalid UTF-8" in report  # a third skipped: kept, and counted
    run_cli("preprocess", "--train", good, "--train", bad, "--out", tmp_path / "o2", *args, "--allow-skipped")


def test_decompression_bombs_are_refused_and_the_limits_can_be_raised(tmp_path):
    bomb = tmp_path / "bomb.tsv.gz"
    bomb.write_bytes(gzip.compress(b"".join(b"a%d\tb%d\n" % (i % 50, i % 50) for i in range(1_000_000))))  # 8 MB from 25 kB
    args = ("--tokenizer", "word", "--min-freq", "1", "--dev-size", "1", "--test-size", "1")
    result = run_cli("preprocess", bomb, "--out", tmp_path / "o", *args, check=False)
    assert result.returncode == 1 and "likely decompression bomb" in result.stderr and "--max-expand-ratio" in result.stderr
    text = write_tsv(tmp_path / "t", make_task("copy", 20_000, seed=3)).read_bytes()
    (tmp_path / "big.tsv.xz").write_bytes(lzma.compress(text))
    result = run_cli("preprocess", tmp_path / "big.tsv.xz", "--out", tmp_path / "o", *args, "--max-expanded-size", "100K",
                     "--max-examples", "100", check=False)
    assert result.returncode == 1 and "expands beyond 100 KiB" in result.stderr
    run_cli("preprocess", bomb, "--out", tmp_path / "o", *args, "--max-examples", "1000", "--max-expand-ratio", "2000")


def test_an_interrupted_force_run_leaves_the_old_directory_as_it_was(tmp_path):
    corpus = write_tsv(tmp_path / "pairs.tsv", make_task("copy", 300_000, seed=6, max_len=30))
    old = tmp_path / "data"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    (old / "keep.txt").write_text("old data")
    process = subprocess.Popen(
        [sys.executable, "-m", "mtkit", "preprocess", corpus, "--out", old, "--force", "--workers", "2",
         "--tokenizer", "word", "--min-freq", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    children: list[int] = []
    while not children and time.monotonic() < deadline and process.poll() is None:
        scratch = list(tmp_path.glob(".data.new-*/.work/*.key"))  # pass 1 under way
        if scratch:
            children = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        time.sleep(0.05)
    assert children, "preprocess finished before it could be interrupted"
    os.kill(children[0], signal.SIGKILL)  # a worker dies midway
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "worker process died" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt", "manifest.json"]
    assert (old / "keep.txt").read_text() == "old data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pairs.tsv"]  # no scratch left either


def test_vocab_with_dev_counts_the_dev_split_as_the_book_does(tmp_path):
    pairs = [(f"w{i} common", f"v{i} commun") for i in range(40)] + [("rare1 rare1", "x y")] * 2 + [("rare2 z", "q")] * 2
    corpus = write_tsv(tmp_path / "pairs.tsv", pairs)
    base = dict(tokenizer="word", min_freq=2, split="ordered", dev_size=3, test_size=0)
    options = RunOptions(workers=1, progress=False)
    preprocess(DataConfig(**base), tmp_path / "train-only", [corpus], options=options)
    preprocess(DataConfig(**base, vocab_with_dev=True), tmp_path / "with-dev", [corpus], options=options)
    train_only = (tmp_path / "train-only" / "vocab.en.txt").read_text().split()
    with_dev = (tmp_path / "with-dev" / "vocab.en.txt").read_text().split()
    # the last 3 pairs validate: "rare2" is seen twice only when dev counts too
    assert "rare1" in train_only and "rare2" not in train_only
    assert "rare2" in with_dev and set(with_dev) - set(train_only) == {"rare2", "z"}


def test_old_data_directories_are_refused_with_a_clear_message(tmp_path, reverse_data):
    old = tmp_path / "old"
    old.mkdir()
    for item in reverse_data.iterdir():
        if not item.name.endswith(".ids"):
            (old / item.name).write_bytes(item.read_bytes())
    (old / "train.ids.pt").write_bytes(b"PK")
    result = run_cli("train", "--data", old, "--out", tmp_path / "run", "--max-steps", "1", check=False)
    assert result.returncode == 1 and "older mtkit" in result.stderr and "mtkit preprocess" in result.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_ids_file_is_detected(tmp_path, reverse_data, damage):
    copy = tmp_path / "data"
    copy.mkdir()
    for item in reverse_data.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    target = copy / "train.tgt.ids"
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        data = data[:-3]
    else:
        data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    result = run_cli("train", "--data", copy, "--out", tmp_path / "run", "--max-steps", "1", check=False)
    assert result.returncode == 1 and "train.tgt.ids" in result.stderr
    assert ("truncated" if damage == "truncate" else "checksum") in result.stderr
