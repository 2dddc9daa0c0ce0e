"""One recurrent stack for encoders and decoders, fused (``nn.GRU``/``nn.LSTM``) or scratch.

Padding never changes results: the fused stack packs variable-length input, the scratch stack
masks it, so a sentence encodes to the same vectors alone or inside a padded batch. Final states
come back per layer with the directions concatenated: (layers, batch, dirs·hidden).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtkit.models.cells import ScratchRNN, gru_step, lstm_step

State = Union[Tensor, tuple[Tensor, Tensor]]


def map_state(state: State, fn) -> State:
    """Apply ``fn`` to the hidden state, to both h and c of an LSTM state, or to every tensor of
    a tuple of states (an ensemble's)."""
    return tuple(map_state(s, fn) for s in state) if isinstance(state, tuple) else fn(state)


def top_layer(state: State) -> Tensor:
    """The last layer's hidden vector (an LSTM's h, not its memory cell)."""
    return (state[0] if isinstance(state, tuple) else state)[-1]


class RNN(nn.Module):
    def __init__(
        self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
        bidirectional: bool = False, impl: str = "fused",
    ) -> None:
        super().__init__()
        self.dirs = 2 if bidirectional else 1
        self.num_layers = num_layers
        self.output_size = hidden_size * self.dirs
        dropout = dropout if num_layers > 1 else 0.0
        if impl == "fused":
            module = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
            self.net: nn.Module = module(
                input_size, hidden_size, num_layers, dropout=dropout,
                bidirectional=bidirectional, batch_first=True,
            )
        elif impl == "scratch":
            self.net = ScratchRNN(cell, input_size, hidden_size, num_layers, dropout, bidirectional)
        else:
            raise ValueError(f"unknown RNN implementation {impl!r}")
        self.fused = impl == "fused"
        self.cell, self.dropout = cell, dropout
        # Int8 versions of the projections ``step`` uses (``mtkit.models.quantize``), else None.
        self.int8: nn.ModuleDict | None = None

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        """Run over ``x`` (B, T, D); ``lengths`` (B,) for padded input whose final state matters."""
        if self.fused and x.is_cuda and torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") != torch.float16:
            # PyTorch's autocast runs cuDNN's RNNs in fp16 whatever dtype it was asked for, so
            # under bf16 they would train in fp16 with no gradient scaler: run them in fp32
            # (TF32 tensor cores where allowed) instead.
            with torch.autocast("cuda", enabled=False):
                return self._run(x.float(), lengths, None if state is None else map_state(state, Tensor.float))
        return self._run(x, lengths, state)

    def _run(self, x: Tensor, lengths: Tensor | None, state: State | None) -> tuple[Tensor, State]:
        if state is not None:
            state = map_state(state, self._to_torch_layout)
        if not self.fused:
            outputs, final = self.net(x, state, lengths)
        elif lengths is None:
            outputs, final = self.net(x, state)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            outputs, final = self.net(packed, state)
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.size(1))
        return outputs, map_state(final, self._to_layer_layout)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One time step of a unidirectional stack: input (B, D) → output (B, H) and the new state.

        What ``forward`` computes for a one-token sequence (to rounding; bit for bit for the
        scratch stack) without its per-call set-up: the decoder calls this once per token. With dropout between layers in
        training it runs ``forward`` itself, so that the random draws stay those of a full pass.
        """
        if self.dirs != 1:
            raise ValueError("step needs a unidirectional RNN")
        if self.training and self.dropout > 0:
            output, state = self(x[:, None], state=state)
            return output[:, 0], state
        lstm = isinstance(state, tuple)
        hs, cs = [], []
        for layer in range(self.num_layers):
            h = state[0][layer] if lstm else state[layer]
            gi, gh = self._project(f"ih_l{layer}", x), self._project(f"hh_l{layer}", h)
            if lstm:
                x, c = lstm_step(gi, gh, state[1][layer])
                cs.append(c)
            else:
                x = gru_step(gi, gh, h)
            hs.append(x)
        return x, ((torch.stack(hs), torch.stack(cs)) if lstm else torch.stack(hs))

    def _project(self, name: str, x: Tensor) -> Tensor:
        """x W_name + b_name, for name ih_lN (input) or hh_lN (recurrent)."""
        if self.int8 is not None:
            return self.int8[name](x)
        return F.linear(x, getattr(self.net, f"weight_{name}"), getattr(self.net, f"bias_{name}"))

    def _to_layer_layout(self, s: Tensor) -> Tensor:
        """(layers·dirs, B, H) → (layers, B, dirs·H)."""
        if self.dirs == 1:
            return s
        layers, batch, hidden = self.num_layers, s.size(1), s.size(2)
        return s.view(layers, self.dirs, batch, hidden).permute(0, 2, 1, 3).reshape(layers, batch, -1)

    def _to_torch_layout(self, s: Tensor) -> Tensor:
        if self.dirs == 1:
            return s
        layers, batch = s.size(0), s.size(1)
        return s.view(layers, batch, self.dirs, -1).permute(0, 2, 1, 3).reshape(layers * self.dirs, batch, -1)
