from collections import Counter

import pytest

from mtkit.data.tokenizers import SentencePieceTokenizer, TextProcessor, WordTokenizer
from mtkit.data.vocab import SPECIALS, UNK, Vocab

FRENCH = [
    "Je suis chez moi.", "Il est calme.", "J'ai perdu.", "Va !", "Nous sommes en retard.",
    "Elle court vite.", "Tu es gentil.", "Ils regardent la télévision.",
] * 20


def test_vocab_orders_by_frequency_then_token_and_round_trips(tmp_path):
    vocab = Vocab.build(Counter({"b": 3, "a": 3, "c": 5, "rare": 1}), min_freq=2)
    assert vocab.tokens == [*SPECIALS, "c", "a", "b"]
    assert vocab.encode(["a", "rare"]) == [5, UNK]
    vocab.save(tmp_path / "v.txt")
    assert Vocab.load(tmp_path / "v.txt").tokens == vocab.tokens


def test_vocab_rejects_duplicates_and_missing_specials():
    with pytest.raises(ValueError):
        Vocab([*SPECIALS, "x", "x"])
    with pytest.raises(ValueError):
        Vocab(["x", *SPECIALS])


def test_word_tokenizer_is_the_books():
    tok = WordTokenizer.train(["go .", "go home .", "i lost ."], min_freq=2)
    assert tok.vocab.tokens[len(SPECIALS):] == ["."] + ["go"]
    assert tok.decode(tok.encode("go home .")) == "go <unk> ."


def test_word_processor_detokenises_with_french_rules():
    tok = WordTokenizer.train(["je suis chez moi .", "va !"], min_freq=1)
    proc = TextProcessor("fr", "book", tok)
    assert proc.decode(proc.encode("Je suis chez moi.")) == "je suis chez moi."
    assert proc.decode(proc.encode("Va\u202f!")) == "va !"


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_is_exact(model_type):
    tok = SentencePieceTokenizer.train(FRENCH, vocab_size=400, model_type=model_type)
    assert tok.vocab.tokens[: len(SPECIALS)] == list(SPECIALS)
    for text in ["Je suis chez moi.", "Ils regardent !", "Ωmega 漢字 😀 naïve", "a  b"]:
        normalised = " ".join(text.split())
        assert tok.decode(tok.encode(normalised)) == normalised


def test_sentencepiece_training_is_deterministic():
    a = SentencePieceTokenizer.train(FRENCH, vocab_size=400)
    b = SentencePieceTokenizer.train(FRENCH, vocab_size=400)
    assert a.model_proto == b.model_proto


def test_sentencepiece_too_small_vocabulary_is_a_clear_error():
    from mtkit.errors import DataError

    with pytest.raises(DataError, match="vocabulary size 50"):
        SentencePieceTokenizer.train(FRENCH, vocab_size=50)
