"""The book's procedure, as recipes/d2l.toml asks for it: an encoder that runs over <pad>,
shuffled sentence batches, PyTorch's own initialisation of the output layer, and num_steps
predicted tokens. Each is a setting that is off by default."""

import math

import torch

from conftest import REPO
from mtkit.config import ModelConfig, TrainConfig, load_recipe
from mtkit.data.batching import shuffled_batches
from mtkit.data.vocab import EOS, PAD
from mtkit.decoding import SearchOptions, decode
from mtkit.models.seq2seq import build_model

BOOK = dict(embed=16, hidden=24, layers=2, bidirectional=False, bridge="last", attention="none", dropout=0.0)


def test_the_d2l_recipe_turns_on_the_books_procedure_and_the_defaults_do_not():
    book = load_recipe(REPO / "recipes" / "d2l.toml")
    assert (book.model.source_steps, book.model.decode_steps, book.model.output_init) == (9, 9, "pytorch")
    assert book.train.shuffled_batches and book.train.batch_size == 128
    model, train = ModelConfig(), TrainConfig()
    assert (model.source_steps, model.decode_steps, model.output_init) == (None, None, "xavier")
    assert not train.shuffled_batches


def test_the_books_encoder_runs_over_padding_to_num_steps():
    torch.manual_seed(0)
    book = build_model(ModelConfig(**BOOK, source_steps=9), 30, 30).eval()
    packed = build_model(ModelConfig(**BOOK), 30, 30).eval()
    packed.load_state_dict(book.state_dict())
    sentence = torch.tensor([[5, 6, 7, EOS]])
    with torch.no_grad():
        _, state = book.encode(sentence, torch.tensor([4]))
        _, alone = packed.encode(sentence, torch.tensor([4]))
        # the same sentence beside a longer one: the book's encoding does not depend on the batch
        batch = torch.tensor([[5, 6, 7, EOS, PAD, PAD], [8, 9, 10, 11, 12, EOS]])
        _, in_batch = book.encode(batch, torch.tensor([4, 6]))
    assert not torch.allclose(state, alone)  # five more steps, over <pad>
    torch.testing.assert_close(in_batch[:, :1], state, rtol=1e-5, atol=1e-6)
    # the <pad> embedding is learned, as in the book's nn.Embedding
    assert book.encoder.embedding.padding_idx is None and packed.encoder.embedding.padding_idx == PAD
    assert book.encoder.embedding.weight[PAD].abs().sum() > 0


def test_shuffled_batches_are_the_books_data_loader():
    def lists(plan):
        return [b.tolist() for b in plan]

    batches = lists(shuffled_batches(512, 128, seed=1, epoch=0))
    assert [len(b) for b in batches] == [128] * 4
    assert sorted(i for b in batches for i in b) == list(range(512))
    assert batches != [list(range(i, i + 128)) for i in range(0, 512, 128)]  # shuffled
    assert batches == lists(shuffled_batches(512, 128, seed=1, epoch=0))
    assert batches != lists(shuffled_batches(512, 128, seed=1, epoch=1))
    assert batches != lists(shuffled_batches(512, 128, seed=2, epoch=0))
    assert lists(shuffled_batches(512, 128, seed=1, epoch=0)[2:]) == batches[2:]  # a resumed epoch
    assert [len(b) for b in shuffled_batches(300, 128)] == [128, 128, 44]


def test_the_output_layer_keeps_pytorchs_initialisation():
    torch.manual_seed(0)
    fan_in, vocab = 24, 2000
    book = build_model(ModelConfig(**BOOK, output_init="pytorch"), 30, vocab).generator.weight
    xavier = build_model(ModelConfig(**BOOK), 30, vocab).generator.weight
    # PyTorch: U(±1/√fan_in) = ±0.204 here; Xavier: U(±√(6/(fan_in + fan_out))) = ±0.055
    assert 0.15 < book.abs().max() <= 1 / math.sqrt(fan_in)
    assert xavier.abs().max() <= math.sqrt(6 / (fan_in + vocab))


def test_the_book_predicts_num_steps_tokens():
    config = ModelConfig(**BOOK, decode_steps=9)
    assert config.length_limit() == (0.0, 10)  # 9 tokens, then <eos>
    assert config.length_limit(1.0, 2) == (1.0, 2)  # what the user asks for wins
    assert ModelConfig(**BOOK).length_limit() == (2.0, 10)
    torch.manual_seed(0)
    model = build_model(config, 30, 30)
    sources = [[5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    a, b = config.length_limit()
    lengths = [len(h[0].tokens) for h in decode(model, sources, SearchOptions(max_len_a=a, max_len_b=b))]
    assert max(lengths) <= 9
    # an untrained model rarely says <eos>: without the limit it would run to 2·|x| + 10
    unlimited = [len(h[0].tokens) for h in decode(model, sources, SearchOptions())]
    assert max(unlimited) > 9
