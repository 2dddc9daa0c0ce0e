"""The encoder-decoder model, its state hand-off (bridge), initialisation and construction."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtkit.config import ModelConfig
from mtkit.data.vocab import EOS
from mtkit.errors import UsageError
from mtkit.models.cells import ScratchRNN
from mtkit.models.decoder import Decoder
from mtkit.models.encoder import Encoder, Memory
from mtkit.models.output import sequence_loss, top_tokens
from mtkit.models.rnn import State, top_layer
from mtkit.models.shortlist import Shortlist

BRIDGES = ("last", "linear", "zero")


class Bridge(nn.Module):
    """Initial decoder state from the encoder's final state.

    ``last`` hands every layer's state over unchanged (the book; needs equal depth and size),
    ``linear`` maps the top encoder layer (both directions) through tanh(W s) to every decoder
    layer (an LSTM's memory cell through its own W), ``zero`` starts from zeros.
    """

    def __init__(
        self, kind: str, cell: str, enc_layers: int, enc_size: int, dec_layers: int, dec_size: int
    ) -> None:
        super().__init__()
        if kind == "last" and (enc_layers, enc_size) != (dec_layers, dec_size):
            raise ValueError(
                f"bridge 'last' hands the encoder state over as is, so it needs the same depth "
                f"and state size on both sides (encoder {enc_layers}x{enc_size}, decoder "
                f"{dec_layers}x{dec_size}); use bridge 'linear' or 'zero'"
            )
        if kind not in BRIDGES:
            raise ValueError(f"unknown bridge {kind!r}; choose from {', '.join(BRIDGES)}")
        self.kind, self.cell, self.dec_layers, self.dec_size = kind, cell, dec_layers, dec_size
        if kind == "linear":
            self.hidden = nn.Linear(enc_size, dec_layers * dec_size)
            self.memory_cell = nn.Linear(enc_size, dec_layers * dec_size) if cell == "lstm" else None

    def forward(self, final: State) -> State:
        if self.kind == "last":
            return final
        top = top_layer(final)
        if self.kind == "zero":
            zeros = top.new_zeros(self.dec_layers, top.size(0), self.dec_size)
            return (zeros, zeros) if self.cell == "lstm" else zeros

        def spread(x: Tensor) -> Tensor:  # (B, L·H) → (L, B, H)
            return x.view(x.size(0), self.dec_layers, self.dec_size).transpose(0, 1).contiguous()

        h = spread(torch.tanh(self.hidden(top)))
        if self.cell == "lstm":
            return h, spread(self.memory_cell(final[1][-1]))
        return h


class Seq2Seq(nn.Module):
    """Encoder → bridge → decoder → output layer over the target vocabulary."""

    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        dec_layers = config.decoder_layers or config.layers
        self.encoder = Encoder(
            config.cell, src_vocab_size, config.embed, config.hidden, config.layers,
            config.dropout, config.bidirectional, config.impl, config.source_steps,
        )
        self.bridge = Bridge(
            config.bridge, config.cell, config.layers, self.encoder.output_size, dec_layers, config.hidden
        )
        self.decoder = Decoder(
            config.cell, tgt_vocab_size, config.embed, config.hidden, dec_layers, config.dropout,
            config.impl, self.encoder.output_size, config.attention, config.attention_score,
            config.context_input,
        )
        self.generator = nn.Linear(self.decoder.output_size, tgt_vocab_size)
        self.shortlist: Shortlist | None = None  # set for search only (``mtkit.models.shortlist``)
        # The book's output layer is an nn.LazyLinear, which its Xavier initialisation misses.
        initialize(self, skip=self.generator if config.output_init == "pytorch" else None)
        if config.tie_embeddings:
            if config.embed != self.decoder.output_size:
                raise ValueError(
                    f"tied embeddings need embed == hidden (embed {config.embed}, hidden {config.hidden})"
                )
            self.generator.weight = self.decoder.embedding.weight

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, State]:
        memory, final = self.encoder(src, src_lengths)
        if self.shortlist is not None:
            memory.vocab = self.shortlist.subset(src, self.generator)
        return self.decoder.prepare(memory), self.bridge(final)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        """Teacher forcing. Without ``tgt_out``: the features (B, T, H) before the output layer.
        With it: the summed cross-entropy over its non-pad tokens and their count (computed in
        ``forward`` so that DistributedDataParallel sees the whole model)."""
        memory, state = self.encode(src, src_lengths)
        features, _ = self.decoder(tgt_in, memory, state)
        if tgt_out is None:
            return features
        return sequence_loss(features, self.generator, tgt_out, label_smoothing)

    def step(self, tokens: Tensor, memory: Memory, state: State) -> tuple[Tensor, State, Tensor | None]:
        """Log-probabilities (B, V) of the next token, the new state and attention weights."""
        features, state, weights = self.decoder.step(tokens, memory, state)
        return torch.log_softmax(self.generator(features).float(), dim=-1), state, weights

    def step_top(
        self, tokens: Tensor, memory: Memory, state: State, k: int, banned: list[int], extra: int | Tensor = EOS
    ) -> tuple[Tensor, Tensor, Tensor, State]:
        """What a search needs of the next token, without a log-softmax over the vocabulary:
        the ``k`` best tokens (B, k) that are not ``banned``, their log-probabilities, the
        log-probability of ``<eos>`` (B,), or of each row's ``extra`` token (a forced prefix),
        and the new state."""
        features, state, _ = self.decoder.step(tokens, memory, state)
        log_probs, best, extra_log_prob = top_tokens(features, self.generator, k, banned, extra, memory.vocab)
        return log_probs, best, extra_log_prob, state


def initialize(model: nn.Module, skip: nn.Module | None = None) -> None:
    """The book's scheme, kept per layer type: Xavier-uniform weight matrices in linear and
    recurrent layers; embeddings stay N(0, 1) (Xavier there shrinks inputs ~40x and stalls
    training); biases keep PyTorch's defaults, except that an LSTM's forget gate starts at 1
    (Jozefowicz et al., 2015: it remembers by default). ``skip`` keeps PyTorch's initialisation."""
    for module in model.modules():
        if module is skip:
            continue
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, (nn.GRU, nn.LSTM, ScratchRNN)):
            lstm = isinstance(module, nn.LSTM) or getattr(module, "cell", None) == "lstm"
            with torch.no_grad():
                for name, parameter in module.named_parameters():
                    if name.startswith("weight"):
                        nn.init.xavier_uniform_(parameter)
                    elif lstm:  # rows i, f, g, o: the forget gate's bias sums to 1 over b_ih + b_hh
                        hidden = parameter.size(0) // 4
                        parameter[hidden : 2 * hidden] = 1.0 if name.startswith("bias_ih") else 0.0


def build_model(config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """Construct the model, turning an impossible combination of options into a usage error."""
    try:
        return Seq2Seq(config, src_vocab_size, tgt_vocab_size)
    except ValueError as exc:
        raise UsageError(f"model: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
