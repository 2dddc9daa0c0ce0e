"""The chapter's LSTM and GRU, written out gate by gate.

``ScratchRNN`` has exactly the parameters of ``nn.LSTM``/``nn.GRU`` (same names, shapes and gate
order), so a checkpoint trained with the fused cuDNN/oneDNN kernels loads into it and vice versa;
tests prove both compute the same outputs, states and gradients.

LSTM (gate rows ordered i, f, g, o as in PyTorch; the chapter's C~ is g):
    I = σ(X W_xi + H W_hi + b_i)   F = σ(X W_xf + H W_hf + b_f)   O = σ(X W_xo + H W_ho + b_o)
    C~ = tanh(X W_xc + H W_hc + b_c)   C = F ⊙ C_prev + I ⊙ C~   H = O ⊙ tanh(C)
GRU (rows ordered r, z, n):
    R = σ(X W_xr + H W_hr + b_r)   Z = σ(X W_xz + H W_hz + b_z)
    H~ = tanh(X W_xh + R ⊙ (H W_hh + b_hh) + b_h)   H = Z ⊙ H_prev + (1 − Z) ⊙ H~
The chapter writes the candidate as tanh(X W_xh + (R ⊙ H) W_hh + b_h); cuDNN and ``nn.GRU`` apply
R after the recurrent product, as above, and so do we, so both implementations stay
interchangeable. PyTorch keeps two bias vectors per gate (b_ih + b_hh): their sum is the book's b.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

GATES = {"lstm": 4, "gru": 3}


def lstm_step(gi: Tensor, gh: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step from the input part ``gi`` (X W_x* + b_i*) and the recurrent part ``gh``
    (H W_h* + b_h*) of all four gates."""
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """One GRU step from the input part ``gi`` and the recurrent part ``gh`` of the three gates.
    The update is written as PyTorch's CPU kernel writes it, (H − H~) ⊙ Z + H~."""
    gi_r, gi_z, gi_n = gi.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    return (h - n) * z + n


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (B, T, ...) within its length; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.size(1), device=x.device)
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class ScratchRNN(nn.Module):
    """A stacked, optionally bidirectional LSTM/GRU that loops over time in Python.

    Inputs are batch-first and padded; ``lengths`` makes padding inert: a sequence's state stops
    at its last valid step and outputs at padded steps are zero (as ``pack_padded_sequence``).
    Returns outputs (B, T, dirs·H) and final states in ``nn.LSTM``/``nn.GRU`` layout.
    """

    def __init__(
        self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
        dropout: float = 0.0, bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.suffixes = ["", "_reverse"] if bidirectional else [""]
        rows = GATES[cell] * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * len(self.suffixes)
            for suffix in self.suffixes:
                name = f"l{layer}{suffix}"
                setattr(self, f"weight_ih_{name}", nn.Parameter(torch.empty(rows, width)))
                setattr(self, f"weight_hh_{name}", nn.Parameter(torch.empty(rows, hidden_size)))
                setattr(self, f"bias_ih_{name}", nn.Parameter(torch.empty(rows)))
                setattr(self, f"bias_hh_{name}", nn.Parameter(torch.empty(rows)))
        bound = 1 / math.sqrt(hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(
        self, x: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        batch, steps = x.shape[:2]
        dirs = len(self.suffixes)
        if state is None:
            zeros = x.new_zeros(self.num_layers * dirs, batch, self.hidden_size)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        mask = torch.ones(batch, steps, 1, dtype=torch.bool, device=x.device)
        if lengths is not None:
            mask = (torch.arange(steps, device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]
        finals_h, finals_c = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self.suffixes):
                k = layer * dirs + d
                start = (state[0][k], state[1][k]) if self.cell == "lstm" else state[k]
                sequence = reverse_padded(layer_input, lengths) if d else layer_input
                out, final = self._run_layer(sequence, mask, start, f"l{layer}{suffix}")
                outputs.append(reverse_padded(out, lengths) if d else out)
                if self.cell == "lstm":
                    finals_h.append(final[0])
                    finals_c.append(final[1])
                else:
                    finals_h.append(final)
            layer_input = torch.cat(outputs, dim=-1)
            if layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
        h_n = torch.stack(finals_h)
        return layer_input, ((h_n, torch.stack(finals_c)) if self.cell == "lstm" else h_n)

    def _run_layer(self, x: Tensor, mask: Tensor, state, name: str):
        w_hh, b_hh = getattr(self, f"weight_hh_{name}"), getattr(self, f"bias_hh_{name}")
        # The input part of every gate for all steps at once; only the recurrence loops.
        gi = F.linear(x, getattr(self, f"weight_ih_{name}"), getattr(self, f"bias_ih_{name}"))
        outputs = []
        for t in range(x.size(1)):
            valid = mask[:, t]
            if self.cell == "lstm":
                h_new, c_new = lstm_step(gi[:, t], F.linear(state[0], w_hh, b_hh), state[1])
                state = (torch.where(valid, h_new, state[0]), torch.where(valid, c_new, state[1]))
            else:
                h_new = gru_step(gi[:, t], F.linear(state, w_hh, b_hh), state)
                state = torch.where(valid, h_new, state)
            outputs.append(h_new * valid)
        return torch.stack(outputs, dim=1), state
