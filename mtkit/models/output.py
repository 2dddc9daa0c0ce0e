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
from torch.nn import functional as F

from mtkit.data.vocab import PAD
from mtkit.models.quantize import Int8Linear
from mtkit.models.shortlist import VocabSubset

CHUNK_BYTES = 4 << 20  # rows of fp32 logits processed together in training: stays in cache
SEARCH_CHUNK_BYTES = 1 << 20  # the same in search, a core's L2 cache
TOPK_BLOCK = 64  # columns per block in row_topk (measured: 16 and 32 reduce slower, 128 no faster)


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(x_i W^T + b, y_i) with label smoothing; gradients for x, W and b.

    The products run in the autocast dtype; the softmax, the loss and the bias gradient in fp32.
    Under fp16 the logits' gradient (probabilities, many far below fp16's smallest number) is
    kept in fp32 until backward has multiplied it by the loss scale, as an unfused fp16 layer
    under a gradient scaler would see it; bf16 has fp32's range and keeps it in place.
    """

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
            grad_logits = logits if compute != torch.float16 else torch.empty_like(logits, dtype=torch.float32)
            bias_f = bias.float() if bias is not None else None
            grad_bias = torch.zeros_like(bias_f) if bias is not None else None
            vocab = logits.size(1)
            rows = max(1, CHUNK_BYTES // (4 * vocab))
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            for start in range(0, logits.size(0), rows):
                z = logits[start : start + rows].float()  # a view when the logits are fp32, else a copy
                if bias_f is not None:
                    z.add_(bias_f)
                y = targets[start : start + rows, None]
                probs = torch.softmax(z, dim=1)  # PyTorch's fused kernel: faster than exp, sum, div
                # log Σ exp z = max z − log(max p); the largest probability is at least 1/vocab.
                log_norm = z.amax(dim=1, keepdim=True) - probs.amax(dim=1, keepdim=True).log_()
                nll = log_norm - z.gather(1, y)
                if smoothing:
                    nll = (1 - smoothing) * nll + smoothing * (log_norm - z.mean(dim=1, keepdim=True))
                total += nll.sum()
                probs.scatter_add_(1, y, torch.full(y.shape, smoothing - 1, dtype=probs.dtype, device=y.device))
                if smoothing:
                    probs.sub_(smoothing / vocab)
                if grad_bias is not None:  # summed here, in fp32 and in cache, not over the whole tensor later
                    grad_bias += probs.sum(dim=0)
                grad_logits[start : start + rows] = probs
        ctx.save_for_backward(x_c, w_c, grad_logits, grad_bias)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        x_c, w_c, grad_logits, grad_bias = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        # The upstream gradient is a scalar: scale the small products, not the logits-sized one,
        # except under fp16, whose range needs the scale applied first.
        scale = grad_total.float()
        if grad_logits.dtype != x_c.dtype:
            grad_logits, scale = (grad_logits * scale).to(x_c.dtype), torch.ones_like(scale)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = ((grad_logits @ w_c).float() * scale).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = ((grad_logits.t() @ x_c).float() * scale).to(w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = (grad_bias * grad_total.float()).to(b_dtype)
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
    features: Tensor, generator: nn.Module, k: int, banned: list[int], extra: int | Tensor,
    vocab: VocabSubset | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` most probable tokens of each row, none of them ``banned``, with their fp32
    log-probabilities, and the log-probability of token ``extra`` (the ``<eos>`` a search may
    have to force), or of each row's own token where ``extra`` is a (rows,) tensor (a prefix
    forced on the output; not with a shortlist). Probabilities are normalised over the whole vocabulary, banned tokens
    included, as the model's softmax is, or over each row's shortlist (``vocab``). One matrix
    product for all rows; the rest runs on cache-sized chunks of rows: a log-softmax (PyTorch's
    fused kernel, one pass that reads and one that writes) and a blocked top-k."""
    blocked = None
    if vocab is not None:
        generator, blocked = vocab.layer, vocab.blocked
        banned = [vocab.position[token] for token in banned if token in vocab.position]
        extra = vocab.position[extra]
    rows = max(1, SEARCH_CHUNK_BYTES // (4 * generator.out_features))
    wanted, k = k, min(k, generator.out_features)
    if isinstance(generator, Int8Linear):
        parts = generator.forward_chunks(features, rows)
    else:
        parts = generator(features).split(rows)
    banned_index = torch.tensor(banned, dtype=torch.int64, device=features.device)
    values, tokens, extras = [], [], []
    for start, part in zip(range(0, len(features), rows), parts):
        if blocked is not None:  # the generator's output is ours to change
            part.masked_fill_(blocked[start : start + rows], float("-inf"))
        log_probs = torch.log_softmax(part, dim=-1, dtype=torch.float32)
        if isinstance(extra, Tensor):
            extras.append(log_probs.gather(1, extra[start : start + rows, None]).squeeze(1))
        else:
            extras.append(log_probs[:, extra].clone())
        top, index = row_topk(log_probs.index_fill_(1, banned_index, float("-inf")), k)
        values.append(top)
        tokens.append(index)
    values, best = torch.cat(values), torch.cat(tokens)
    if vocab is not None:
        best = vocab.columns[best]
    if wanted > k:  # a shortlist with fewer tokens than asked for: the rest can never win
        values = F.pad(values, (0, wanted - k), value=float("-inf"))
        best = F.pad(best, (0, wanted - k), value=PAD)
    return values, best, torch.cat(extras)


def row_topk(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``x.topk(k, dim=1)`` for wide rows, several times as fast on a CPU.

    PyTorch's top-k (and max with indices) walks a row element by element; a max over blocks of
    ``TOPK_BLOCK`` columns is a vectorised reduction. The k largest values of a row lie in the
    k blocks with the largest maxima, so the exact top-k is taken among those k blocks only.
    Ties resolve to the lowest column, as in ``torch.max``.
    """
    rows, width = x.shape
    blocks = width // TOPK_BLOCK
    if blocks < 4 * k:
        return x.topk(k, dim=1) if k > 1 else x.max(dim=1, keepdim=True)
    full = x[:, : blocks * TOPK_BLOCK].unflatten(1, (blocks, TOPK_BLOCK))
    maxima = full.amax(dim=2)
    tail = width - blocks * TOPK_BLOCK
    if tail:  # the last, partial block
        maxima = torch.cat([maxima, x[:, blocks * TOPK_BLOCK :].amax(dim=1, keepdim=True)], dim=1)
    best = maxima.topk(k, dim=1).indices if k > 1 else maxima.argmax(dim=1, keepdim=True)
    # The chosen blocks' values, (rows, k, TOPK_BLOCK): whole blocks copied by advanced indexing.
    candidates = full[torch.arange(rows, device=x.device)[:, None], best.clamp(max=blocks - 1)]
    if tail:
        last = x.new_full((rows, 1, TOPK_BLOCK), float("-inf"))
        last[:, 0, :tail] = x[:, blocks * TOPK_BLOCK :]
        candidates = torch.where((best == blocks)[:, :, None], last, candidates)
    candidates = candidates.flatten(1)
    top, where = candidates.topk(k, dim=1) if k > 1 else candidates.max(dim=1, keepdim=True)
    return top, best.gather(1, where // TOPK_BLOCK) * TOPK_BLOCK + where % TOPK_BLOCK
