"""Property-based tests (hypothesis) of the text processing and of the order-keeping machinery."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mtkit.data.batching import bucket_batches, make_batch
from mtkit.data.dataset import EncodedSplit
from mtkit.data.normalize import SCHEMES, clean, normalize
from mtkit.data.tokenizers import SentencePieceTokenizer
from mtkit.data.vocab import SPECIALS, Vocab

# Any text: all of Unicode except surrogates, including controls, RTL, combining marks, emoji.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
FRENCH = [
    "Je suis chez moi.", "Il est calme.", "J'ai perdu.", "Va !", "Nous sommes en retard.",
    "Elle court vite.", "Tu es gentil.", "Ils regardent la télévision.", "Ça alors !",
] * 30


@given(TEXT, st.sampled_from(SCHEMES))
def test_normalisation_is_idempotent(text, scheme):
    once = normalize(text, scheme)
    assert normalize(once, scheme) == once


@given(TEXT)
def test_clean_text_is_one_line_without_outer_spaces(text):
    cleaned = clean(text)
    assert cleaned == cleaned.strip()
    assert len(cleaned.splitlines()) <= 1
    assert "  " not in cleaned


@pytest.fixture(scope="module")
def sentencepiece() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(FRENCH, vocab_size=400)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(text=TEXT)
def test_sentencepiece_decodes_back_to_the_normalised_text(sentencepiece, text):
    normalised = normalize(text, "clean")
    assert sentencepiece.decode(sentencepiece.encode(normalised)) == normalised


TOKENS = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=8), max_size=30)


@given(TOKENS)
def test_vocab_round_trips_known_tokens(tokens):
    vocab = Vocab.build(Counter(tokens))
    known = [t for t in tokens if t not in SPECIALS]
    assert vocab.decode(vocab.encode(known)) == known


SEQUENCES = st.lists(st.lists(st.integers(4, 50), min_size=0, max_size=20), min_size=1, max_size=60)


@given(SEQUENCES, st.integers(10, 200), st.integers(0, 3))
def test_batching_then_unbatching_restores_order(sources, budget, epoch):
    split = EncodedSplit.from_lists(sources, [list(reversed(s)) for s in sources])
    restored: dict[int, list[int]] = {}
    seen = []
    for indices in bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=budget, epoch=epoch):
        batch = make_batch(split, indices)
        seen += batch.indices.tolist()
        for row, index in enumerate(batch.indices.tolist()):
            length = int(batch.src_lengths[row]) - 1  # without <eos>
            restored[index] = batch.src[row, :length].tolist()
    assert sorted(seen) == list(range(len(sources)))  # every sentence exactly once
    assert [restored[i] for i in range(len(sources))] == sources


@pytest.fixture(scope="module")
def translator(reverse_data, tmp_path_factory):
    from conftest import run_cli
    from mtkit.translate import Translator

    run = tmp_path_factory.mktemp("prop") / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--embed", "16", "--hidden", "16",
            "--layers", "1", "--max-steps", "2", "--valid-every", "2")
    return Translator(run)


LINES = st.lists(TEXT.filter(lambda t: "\n" not in t and "\r" not in t), min_size=0, max_size=12)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None)
@given(lines=LINES, batch_size=st.integers(1, 5), buffer=st.integers(1, 5))
def test_translate_gives_one_line_per_input_line(translator, lines, batch_size, buffer):
    from mtkit.decoding import SearchOptions

    torch.manual_seed(0)
    outputs = list(translator.stream(lines, SearchOptions(max_len_a=0, max_len_b=4), batch_size, buffer))
    assert len(outputs) == len(lines)
    assert all("\n" not in out and "\r" not in out for out in outputs)
    for line, out in zip(lines, outputs):
        if not normalize(line, "clean"):
            assert out == ""


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"a")), chunk=st.integers(1, 8), bom=st.booleans())
def test_line_reader_matches_python_line_splitting_for_any_chunking(tmp_path_factory, data, chunk, bom):
    from mtkit.fileio import read_lines

    path = tmp_path_factory.mktemp("lines") / "input.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    body = data if bom else data.removeprefix(b"\xef\xbb\xbf")  # one leading BOM is dropped
    text = body.decode("utf-8", errors="replace")
    # Python's splitlines also breaks at \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029: files don't.
    assume(not any(c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" for c in text))
    expected = text.splitlines()
    assert list(read_lines(path, chunk_size=chunk)) == expected
