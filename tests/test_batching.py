import itertools

import numpy as np
import pytest
import torch

from mtkit.data.batching import bucket_batches, make_batch, pad_sequences, updates
from mtkit.data.dataset import EncodedSide, EncodedSplit, write_encoded
from mtkit.data.prefetch import Prefetcher
from mtkit.data.vocab import BOS, EOS, PAD


def random_lists(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 50, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]


@pytest.fixture
def random_split():
    def make(n=500, seed=0):
        return EncodedSplit.from_lists(random_lists(n, seed), random_lists(n, seed + 100))
    return make


def test_buckets_cover_every_example_once_and_respect_the_budget(random_split):
    split = random_split()
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=200, seed=1, epoch=0)
    flat = np.sort(np.concatenate(list(batches)))
    assert flat.tolist() == list(range(len(split)))
    for b in batches:
        longest = int(split.tgt_lengths[b].max()) + 1
        assert len(b) * longest <= 200 or len(b) == 1


def test_buckets_depend_only_on_seed_and_epoch(random_split):
    split = random_split()
    args = (split.src_lengths, split.tgt_lengths, 300)

    def plan(**kw):
        return [b.tolist() for b in bucket_batches(*args, **kw)]

    assert plan(seed=1, epoch=2) == plan(seed=1, epoch=2)
    assert plan(seed=1, epoch=2) != plan(seed=1, epoch=3)
    assert plan(seed=1, epoch=2) != plan(seed=2, epoch=2)


def test_buckets_shuffle_sentences_of_equal_length_between_epochs():
    lengths = np.full(1000, 7, dtype=np.uint16)
    first, second = (bucket_batches(lengths, lengths, batch_size=10, epoch=e) for e in (0, 1))
    assert sorted(map(tuple, first)) != sorted(map(tuple, second))  # not merely the batch order
    assert sorted(np.concatenate(list(first)).tolist()) == list(range(1000))


def test_bucketing_keeps_padding_low(random_split):
    split = random_split(2000)
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=400, seed=0)
    real = padded = 0
    for b in batches:
        batch = make_batch(split, b)
        real += batch.target_tokens
        padded += batch.tgt_out.numel()
    assert 1 - real / padded < 0.10


def test_sentence_batches(random_split):
    split = random_split(103)
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_size=10)
    assert sorted(len(b) for b in batches) == [3] + [10] * 10


def test_a_plan_resumes_from_a_slice(random_split):
    split = random_split()
    plan = bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=250, seed=3, epoch=1)
    assert [b.tolist() for b in plan[5:]] == [b.tolist() for b in list(plan)[5:]]


@pytest.mark.parametrize("world, accumulate", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 3)])
def test_updates_give_each_process_whole_batches_of_the_plan_once(random_split, world, accumulate):
    split = random_split()

    def plan_of(epoch):
        return bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=240, seed=3, epoch=epoch)  # 37

    plan = [b.tolist() for b in plan_of(0)]
    group = world * accumulate
    assert len(plan) % group or group == 1, "the last update of the epoch should be a short one"
    steps = -(-len(plan) // group)
    ranks = [list(itertools.islice(updates(split, plan_of, world=world, rank=r, accumulate=accumulate), steps + 1))
             for r in range(world)]
    for step, same in enumerate(zip(*ranks)):
        if step == steps:  # the next epoch begins
            assert all((u.epoch, u.start) == (1, 0) for u in same)
            continue
        start, end = step * group, min((step + 1) * group, len(plan))
        assert all((u.epoch, u.start, u.end, u.batches_in_epoch) == (0, start, end, len(plan)) for u in same)
        assert {u.tokens for u in same} == {split.target_tokens(np.concatenate(plan[start:end]))}
        for rank, u in enumerate(same):
            mine = plan[start + rank : end : world]
            assert u.stand_in == (not mine) and (not mine) <= (step == steps - 1)  # only at the end
            assert [b.indices.tolist() for b in u.batches] == (mine or plan[start : start + 1])
    resumed = next(updates(split, plan_of, 0, group, world, world - 1, accumulate))  # from a saved position
    assert [b.indices.tolist() for b in resumed.batches] == plan[group + world - 1 : 2 * group : world]


def test_the_prefetcher_keeps_order_stops_when_closed_and_passes_errors_on():
    made = []

    def numbers():
        for i in itertools.count():
            made.append(i)
            yield i

    with Prefetcher(numbers(), depth=2, prepare=lambda i: -i) as ahead:
        assert [next(ahead) for _ in range(5)] == [0, -1, -2, -3, -4]
    assert not ahead.thread.is_alive() and len(made) <= 5 + 2 + 1  # at most depth ahead, and one being made

    def failing():
        yield 1
        raise ValueError("bad batch")

    with Prefetcher(failing()) as ahead:
        assert next(ahead) == 1
        with pytest.raises(ValueError, match="bad batch"):
            next(ahead)
    assert list(Prefetcher(iter(range(3)))) == [0, 1, 2]


@pytest.mark.parametrize("vocab_size", [1 << 16, 70_000])
def test_the_memory_mapped_file_equals_the_token_lists(tmp_path, vocab_size):
    sources = random_lists(300, 8) + [[], [vocab_size - 1] * 3]  # past one index stride; empty; the largest id
    write_encoded(tmp_path / "s.ids", sources, vocab_size)
    side = EncodedSide.open(tmp_path / "s.ids")
    assert side.ids.dtype == (np.uint16 if vocab_size <= 1 << 16 else np.int32)
    assert [side[i].tolist() for i in range(len(side))] == sources
    in_memory = EncodedSide.from_lists(sources)
    assert np.array_equal(in_memory.index, side.index) and np.array_equal(in_memory.lengths, side.lengths)
    indices = np.array([301, 0, 64, 63, 128, 300, 5])
    assert np.array_equal(side.padded(indices, EOS, PAD, 9)[0], in_memory.padded(indices, EOS, PAD, 9)[0])


def test_make_batch_shifts_targets_and_pads():
    split = EncodedSplit.from_lists([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    batch = make_batch(split, [0, 1])
    assert batch.src.tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]
    assert batch.src_lengths.tolist() == [4, 2]
    assert batch.tgt_out.tolist() == [[9, 10, EOS, PAD], [11, 12, 13, EOS]]
    assert batch.tgt_in.tolist() == [[BOS, 9, 10, PAD], [BOS, 11, 12, 13]]
    assert batch.target_tokens == 7 == split.target_tokens([0, 1])


def test_make_batch_equals_padding_the_token_lists(random_split):
    sources, targets = random_lists(300, 5), random_lists(300, 105)
    split = random_split(300, 5)
    indices = [17, 3, 250, 64, 128, 129, 0, 299]
    for truncate in (None, 9):
        batch = make_batch(split, indices, truncate)
        src, src_lengths = pad_sequences([torch.tensor(sources[i]) for i in indices], EOS, truncate)
        tgt, _ = pad_sequences([torch.tensor(targets[i]) for i in indices], EOS, truncate)
        assert torch.equal(batch.src, src) and torch.equal(batch.src_lengths, src_lengths)
        assert torch.equal(batch.tgt_out, tgt)
        assert split.target_tokens(indices, truncate) == int((tgt != PAD).sum())


def test_truncation_is_the_books_num_steps():
    # num_steps 3: a sequence cut to 3 tokens loses its <eos>, as in the chapter
    padded, lengths = pad_sequences([torch.tensor([5, 6, 7, 8]), torch.tensor([5])], EOS, truncate=3)
    assert padded.tolist() == [[5, 6, 7], [5, EOS, PAD]]
    assert lengths.tolist() == [3, 2]
