"""Dynamic int8 inference on CPUs: the layers a decoder step runs, in 8-bit integers.

Weights are stored as int8 with one scale per output row; at run time each input row gets its
own scale and is rounded to int8, the product accumulates exactly in int32 (``torch._int_mm``,
VNNI instructions on x86) and is scaled back to fp32. Scales are per row, never per batch, so a
sentence's translation does not depend on the sentences decoded beside it, as in full precision.

PyTorch's own ``torch.ao.quantization.quantize_dynamic`` is deprecated (it warns that it will be
removed in favour of torchao) and scales activations per tensor, which ties each row's rounding
to the rest of the batch: neither fits here. Where ``torch._int_mm`` is missing (it is a private
operator), the same integers are multiplied in fp32: exact while in_features · 127² < 2^24 (up
to 1,040 inputs, every layer of the shipped recipes), so the same results, without the speed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import Tensor, nn

QUANTIZATIONS = ("none", "int8")
LEVELS = 127  # symmetric int8: -127..127


@functools.cache
def has_int_mm() -> bool:
    """Whether this PyTorch multiplies int8 matrices into int32 on the CPU."""
    try:
        a = torch.ones(2, 8, dtype=torch.int8)
        return bool(torch._int_mm(a, a.t().contiguous()).eq(8).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Round each row of a 2-D ``x`` to int8 with its own scale: x ≈ q · scale."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp_(min=1e-12) / LEVELS
    return (x / scale).round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """A linear layer y = x Wᵀ + b computed in int8 (see the module docstring), from the int8
    weight, transposed (in, out), and its per-row scales."""

    def __init__(self, weight_t: Tensor, scale: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        self.register_buffer("weight_t", weight_t)  # the layout _int_mm multiplies fastest
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    @classmethod
    def quantize(cls, weight: Tensor, bias: Tensor | None) -> Int8Linear:
        quantized, scale = quantize_rows(weight.detach().float())
        return cls(quantized.t().contiguous(), scale.view(-1), None if bias is None else bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls.quantize(linear.weight, linear.bias)

    def select(self, rows: Tensor) -> Int8Linear:
        """A layer computing only the outputs ``rows`` (a vocabulary shortlist)."""
        bias = None if self.bias is None else self.bias[rows]
        return Int8Linear(self.weight_t[:, rows].contiguous(), self.scale[rows], bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        products, row_scale = self._products(x.reshape(-1, shape[-1]))
        return self._scale(products, row_scale).view(*shape[:-1], self.out_features)

    def forward_chunks(self, x: Tensor, rows: int) -> Iterator[Tensor]:
        """The fp32 outputs for a 2-D ``x``, ``rows`` rows at a time: one integer product for all
        rows, then each chunk is scaled back while it is in cache (the output layer's use)."""
        products, row_scale = self._products(x)
        for part, scale in zip(products.split(rows), row_scale.split(rows)):
            yield self._scale(part, scale)

    def _products(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q, row_scale = quantize_rows(x)
        if has_int_mm():
            return torch._int_mm(q, self.weight_t), row_scale
        return q.float() @ self.weight_t.float(), row_scale

    def _scale(self, products: Tensor, row_scale: Tensor) -> Tensor:
        y = products * self.scale  # int32 × fp32 → fp32
        y.mul_(row_scale)
        return y if self.bias is None else y.add_(self.bias)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace, in place, the output layer and the decoder RNN's input and recurrent projections
    by int8 layers: the matrix products a decoder step spends its time on. What measured no
    faster in int8 stays in floating point: the attention query and the layer combining state
    and context (small products, where rounding the input costs what the integers save), and
    the encoder (once per sentence, PyTorch's fused RNN kernel). The model can then only
    translate."""
    model.generator = Int8Linear.from_linear(model.generator)
    rnn = model.decoder.rnn
    rnn.int8 = nn.ModuleDict(
        {
            f"{kind}_l{layer}": Int8Linear.quantize(getattr(rnn.net, f"weight_{kind}_l{layer}"), getattr(rnn.net, f"bias_{kind}_l{layer}"))
            for layer in range(rnn.num_layers)
            for kind in ("ih", "hh")
        }
    )
    return model.eval()
