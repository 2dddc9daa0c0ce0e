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
    """A linear layer y = x Wᵀ + b computed in int8 (see the module docstring)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        quantized, scale = quantize_rows(weight.detach().float())
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        # (in, out), the layout _int_mm multiplies fastest.
        self.register_buffer("weight_t", quantized.t().contiguous())
        self.register_buffer("scale", scale.view(-1))
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

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
    """Replace, in place, the matrix products of translation by int8 ones: the output layer, the
    recurrent layers of encoder and decoder (input and recurrent projections), the attention
    query and the layer that combines state and context. Embeddings, attention scores and what
    runs once per batch (attention keys, bridge) stay in floating point. The model can then
    only translate."""
    decoder = model.decoder
    model.generator = Int8Linear.from_linear(model.generator)
    if decoder.combine is not None:
        decoder.combine = Int8Linear.from_linear(decoder.combine)
    if hasattr(decoder.attention, "query_proj"):
        decoder.attention.query_proj = Int8Linear.from_linear(decoder.attention.query_proj)
    for rnn in (model.encoder.rnn, decoder.rnn):
        rnn.int8 = nn.ModuleDict(
            {
                name: Int8Linear(getattr(rnn.net, f"weight_{name}"), getattr(rnn.net, f"bias_{name}"))
                for name in rnn.projection_names()
            }
        )
    return model.eval()
