"""The output layer, fused with what follows it so the (rows × vocabulary) logits are walked once.

The vocabulary-sized projection dominates a training step, and most of its cost beyond the
matrix products is memory traffic over the (tokens × vocabulary) logits. ``LinearCrossEntropy``
computes the logits once, then in cache-sized row chunks turns them in place into the gradient
of the loss with respect to the logits (softmax − target distribution), which backward needs as
it is. Unfused, log-softmax, NLL, their backward passes and a zero-filled one-hot gradient each
walk the whole logits tensor again. ``top_tokens`` does the same for search: per row chunk, the
log-normaliser and the best few tokens, never a full log-softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtkit.data.vocab import PAD

CHUNK_BYTES = 4 << 20  # rows of fp32 logits processed together: stays in cache


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(x_i W^T + b, y_i) with label smoothing; gradients for x, W and b."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, smoothing: float) -> Tensor:
        compute = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            compute = torch.get_autocast_dtype(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            x_c, w_c = x.to(compute), weight.to(compute)
            # No bias in the product: addmm would first copy it into every row of the output;
            # it is added chunk by chunk below, while the chunk is in cache.
            logits = x_c @ w_c.t()
            bias_f = bias.float() if bias is not None else None
            vocab = logits.size(1)
            rows = max(1, CHUNK_BYTES // (4 * vocab))
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            for start in range(0, logits.size(0), rows):
                chunk = logits[start : start + rows]
                z = chunk.float()  # a view when the logits are fp32, else a cached copy
                if bias_f is not None:
                    z.add_(bias_f)
                y = targets[start : start + rows, None]
                nll = -z.gather(1, y)
                if smoothing:
                    nll = (1 - smoothing) * nll - smoothing * z.mean(dim=1, keepdim=True)
                top = z.amax(dim=1, keepdim=True)
                probs = z.sub_(top).exp_()  # one exp serves the loss and the gradient
                norm = probs.sum(dim=1, keepdim=True)
                total += (nll + top + norm.log()).sum()
                probs.div_(norm)
                probs.scatter_add_(1, y, torch.full(y.shape, smoothing - 1, dtype=probs.dtype, device=y.device))
                if smoothing:
                    probs.sub_(smoothing / vocab)
                if probs.data_ptr() != chunk.data_ptr():
                    chunk.copy_(probs)
        ctx.save_for_backward(x_c, w_c, logits)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        x_c, w_c, grad_logits = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        # The upstream gradient is a scalar: scale the small products, not the logits-sized one.
        scale = grad_total.float()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = ((grad_logits @ w_c).float() * scale).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = ((grad_logits.t() @ x_c).float() * scale).to(w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = (grad_logits.sum(0, dtype=torch.float32) * scale).to(b_dtype)
        return grad_x, grad_w, grad_b, None, None


def sequence_loss(
    features: Tensor, generator: nn.Linear, targets: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, int]:
    """Summed cross-entropy over non-pad targets and their count.

    Padding is removed *before* the output layer, so no work is spent on pad positions.
    ``<eos>`` counts as a target, as in the book.
    """
    keep = targets != PAD
    loss = LinearCrossEntropy.apply(
        features[keep], generator.weight, generator.bias, targets[keep], label_smoothing
    )
    return loss, int(keep.sum())


def top_tokens(
    features: Tensor, generator: nn.Linear, k: int, banned: list[int], extra: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` most probable tokens of each row, none of them ``banned``, with their fp32
    log-probabilities, and the log-probability of token ``extra`` (the ``<eos>`` a search may
    have to force). Probabilities are normalised over the whole vocabulary, banned tokens
    included, as the model's softmax is. One matrix product for all rows; the rest runs on
    cache-sized chunks of fp32 logits, in place."""
    all_logits = generator(features)
    rows = max(1, CHUNK_BYTES // (4 * all_logits.size(-1)))
    values, tokens, extras = [], [], []
    for part in all_logits.split(rows):
        logits = part.float()
        extra_logit = logits[:, extra].clone()
        banned_logits = logits[:, banned].clone()
        logits[:, banned] = float("-inf")
        top, index = logits.topk(k, dim=-1)
        logits[:, banned] = banned_logits
        peak = logits.amax(dim=-1, keepdim=True)
        normalizer = peak + logits.sub_(peak).exp_().sum(dim=-1, keepdim=True).log_()
        values.append(top - normalizer)
        tokens.append(index)
        extras.append(extra_logit - normalizer[:, 0])
    return torch.cat(values), torch.cat(tokens), torch.cat(extras)
