"""The book's own model through the ``d2l`` package, on mtkit's split, for a wall-clock budget.

    PEERS_VENV/bin/python benchmarks/peers/book_d2l.py --data DATA_DIR --out OUT --budget 600

Runs in the peers' virtual environment (``pip install --no-deps d2l==1.0.3``; compare.py builds
it), never in mtkit's. What comes from the package: ``MTFraEng`` (the book's normalisation,
word tokens, ``<eos>``, padding or cutting to ``num_steps``, ``Vocab(min_freq=2)``),
``Seq2SeqEncoder``, ``GRU``, ``init_seq2seq``, ``Seq2Seq`` (Adam), ``EncoderDecoder.predict_step``
(greedy search for exactly ``num_steps`` steps) and ``Trainer`` (its ``fit_epoch`` loop with
gradient clipping). d2l 1.0.3 lacks two pieces the chapter defines in its text without saving
them to the package: the decoder (the context concatenated to every input) and the masked loss;
they are written below from the chapter's description. Two changes to the book's run, both
in its favour: the training step skips the notebook plot (``ProgressBoard`` draws through
matplotlib and IPython), and prediction runs under ``torch.no_grad``.

The book reads ``fra.txt`` from its download; here ``_download`` returns the training pairs of
mtkit's data directory instead (``train.en``/``train.fr``), and the test sources are translated
with ``MTFraEng.build`` (which applies the book's preprocessing to them). The output is the
book's token sequence cut at ``<eos>`` and joined with spaces; it is detokenised by removing the
space that the book's preprocessing put before ``,`` and ``.`` (French text keeps one before
``!`` and ``?``), the rule mtkit applies to its own book-normalised output. Its lowercase cannot
be undone: it is scored against the cased references like every other system.

Writes ``OUT/test.hyp`` (one line per test source) and ``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import types
from pathlib import Path


def detokenize(tokens: list[str]) -> str:
    """The book's tokens → text: joined with spaces, no space before ``,`` and ``.``."""
    return re.sub(r" ([,.])", r"\1", " ".join(tokens))


def import_d2l():
    """``d2l.torch`` imports torchvision at the top for its vision chapters. Without a build
    for this torch, an empty stand-in takes its place: the recurrent chapters never use it."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"] = stand_in
        sys.modules["torchvision.transforms"] = stand_in.transforms
    from d2l import torch as d2l

    return d2l


class BudgetSpent(Exception):
    """Raised from a training step once the wall-clock budget has run out."""


def book_classes(d2l, torch):
    """The chapter's decoder and masked loss (seq2seq section), plus the data hook."""
    nn = torch.nn

    class Seq2SeqDecoder(d2l.Decoder):
        """The RNN decoder: the encoder's final top-layer state c is concatenated to every
        input embedding, and the decoder's GRU starts from the encoder's final state."""

        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = d2l.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout)
            self.dense = nn.LazyLinear(vocab_size)
            self.apply(d2l.init_seq2seq)

        def init_state(self, enc_all_outputs, *args):
            return enc_all_outputs

        def forward(self, X, state):
            embs = self.embedding(X.t().type(torch.int32))  # (T, B, E)
            enc_output, hidden_state = state
            context = enc_output[-1].repeat(embs.shape[0], 1, 1)  # (T, B, H)
            outputs, hidden_state = self.rnn(torch.cat((embs, context), -1), hidden_state)
            return self.dense(outputs).swapaxes(0, 1), [enc_output, hidden_state]

    class Seq2Seq(d2l.Seq2Seq):
        """d2l's Seq2Seq (Adam) with the chapter's masked loss; the training step counts target
        tokens and watches the clock instead of plotting."""

        tokens = sentences = steps = 0
        deadline = float("inf")

        def loss(self, Y_hat, Y):
            l = super().loss(Y_hat, Y, averaged=False)
            mask = (Y.reshape(-1) != self.tgt_pad).type(torch.float32)
            return (l * mask).sum() / mask.sum()

        def training_step(self, batch):
            if time.perf_counter() > self.deadline:
                raise BudgetSpent
            self.tokens += int((batch[-1] != self.tgt_pad).sum())
            self.sentences += len(batch[-1])
            self.steps += 1
            return self.loss(self(*batch[:-1]), batch[-1])

    class SplitData(d2l.MTFraEng):
        """MTFraEng reading the given training pairs instead of downloading fra.txt."""

        def __init__(self, pairs_text, num_pairs, batch_size, num_steps):
            self.pairs_text = pairs_text
            super().__init__(batch_size, num_steps, num_train=num_pairs, num_val=0)

        def _download(self):
            return self.pairs_text

    return Seq2SeqDecoder, Seq2Seq, SplitData


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="mtkit data directory (train/test text files)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=600, help="training seconds (wall clock)")
    parser.add_argument("--num-steps", type=int, default=9, help="the book's num_steps: pad or cut to this many tokens")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--src-lang", default="en")
    parser.add_argument("--tgt-lang", default="fr")
    args = parser.parse_args()

    import torch

    d2l = import_d2l()
    Seq2SeqDecoder, Seq2Seq, SplitData = book_classes(d2l, torch)
    torch.manual_seed(1)

    started = time.perf_counter()
    sources = read_lines(args.data / f"train.{args.src_lang}")
    targets = read_lines(args.data / f"train.{args.tgt_lang}")
    text = "\n".join(f"{s}\t{t}" for s, t in zip(sources, targets))
    data = SplitData(text, len(sources), args.batch_size, args.num_steps)
    prepare_seconds = time.perf_counter() - started

    # The chapter's headline configuration: 2 x 256 GRUs, embeddings 256, dropout 0.2, Adam 0.005.
    embed_size, num_hiddens, num_layers, dropout = 256, 256, 2, 0.2
    encoder = d2l.Seq2SeqEncoder(len(data.src_vocab), embed_size, num_hiddens, num_layers, dropout)
    decoder = Seq2SeqDecoder(len(data.tgt_vocab), embed_size, num_hiddens, num_layers, dropout)
    model = Seq2Seq(encoder, decoder, tgt_pad=data.tgt_vocab["<pad>"], lr=0.005)
    trainer = d2l.Trainer(max_epochs=10**6, gradient_clip_val=1, num_gpus=1)

    model.deadline = time.perf_counter() + args.budget
    train_started = time.perf_counter()
    try:
        trainer.fit(model, data)
    except BudgetSpent:
        pass
    train_seconds = time.perf_counter() - train_started

    test_sources = read_lines(args.data / f"test.{args.src_lang}")
    first_refs = read_lines(args.data / f"test.{args.tgt_lang}")  # build() needs a target column
    model.eval()
    decode_started = time.perf_counter()
    with torch.no_grad():
        batch = data.build(test_sources, first_refs)
        predictions, _ = model.predict_step(batch, d2l.cpu(), data.num_steps)
    hypotheses = []
    for row in predictions:
        tokens = []
        for token in data.tgt_vocab.to_tokens(row):
            if token == "<eos>":
                break
            tokens.append(token)
        hypotheses.append(detokenize(tokens))
    decode_seconds = time.perf_counter() - decode_started
    if len(hypotheses) != len(test_sources):
        sys.exit(f"book_d2l: {len(hypotheses)} outputs for {len(test_sources)} test sources")

    import d2l as d2l_package

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "test.hyp").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    result = {
        "d2l_version": getattr(d2l_package, "__version__", "?"), "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "num_steps": args.num_steps, "batch_size": args.batch_size,
        "train_pairs": len(sources), "src_vocab": len(data.src_vocab), "tgt_vocab": len(data.tgt_vocab),
        "parameters": sum(p.numel() for p in model.parameters()),
        "prepare_seconds": prepare_seconds, "train_seconds": train_seconds, "steps": model.steps,
        "target_tokens": model.tokens, "tokens_per_second": model.tokens / train_seconds,
        "epochs": model.sentences / len(sources),
        "greedy_seconds": decode_seconds, "test_sentences": len(hypotheses),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
