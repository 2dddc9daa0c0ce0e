import torch

from mtkit.data.batching import bucket_batches, make_batch, pad_sequences
from mtkit.data.dataset import EncodedSplit
from mtkit.data.vocab import BOS, EOS, PAD


def random_split(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, 50, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    tgt = [torch.randint(4, 50, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    return EncodedSplit.from_lists(src, tgt)


def test_buckets_cover_every_example_once_and_respect_the_budget():
    split = random_split()
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=200, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(split)))
    for b in batches:
        longest = int(split.tgt_lengths[b].max()) + 1
        assert len(b) * longest <= 200 or len(b) == 1


def test_buckets_depend_only_on_seed_and_epoch():
    split = random_split()
    args = (split.src_lengths, split.tgt_lengths, 300)
    assert bucket_batches(*args, seed=1, epoch=2) == bucket_batches(*args, seed=1, epoch=2)
    assert bucket_batches(*args, seed=1, epoch=2) != bucket_batches(*args, seed=1, epoch=3)


def test_bucketing_keeps_padding_low():
    split = random_split(2000)
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_tokens=400, seed=0)
    real = padded = 0
    for b in batches:
        batch = make_batch(split, b)
        real += batch.target_tokens
        padded += batch.tgt_out.numel()
    assert 1 - real / padded < 0.10


def test_sentence_batches():
    split = random_split(103)
    batches = bucket_batches(split.src_lengths, split.tgt_lengths, batch_size=10)
    assert sorted(len(b) for b in batches) == [3] + [10] * 10


def test_make_batch_shifts_targets_and_pads():
    split = EncodedSplit.from_lists([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    batch = make_batch(split, [0, 1])
    assert batch.src.tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]
    assert batch.src_lengths.tolist() == [4, 2]
    assert batch.tgt_out.tolist() == [[9, 10, EOS, PAD], [11, 12, 13, EOS]]
    assert batch.tgt_in.tolist() == [[BOS, 9, 10, PAD], [BOS, 11, 12, 13]]
    assert batch.target_tokens == 7


def test_truncation_is_the_books_num_steps():
    # num_steps 3: a sequence cut to 3 tokens loses its <eos>, as in the chapter
    padded, lengths = pad_sequences([torch.tensor([5, 6, 7, 8]), torch.tensor([5])], EOS, truncate=3)
    assert padded.tolist() == [[5, 6, 7], [5, EOS, PAD]]
    assert lengths.tolist() == [3, 2]
