"""Layers the networks share: masked pooling over padded token grids, a cheaper ``Dropout``,
activations, and a compiled max-pooling of token bags (``_pool_kernel``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



# below this many tokens a batch max-pools with F.embedding_bag: the compiled loop's one-off
# cost (importing numba: ~0.5 s) would dominate `predict "one title"`; both give the same values
BAG_MAX_MIN_TOKENS = 4096


def bag_max(token_types: torch.Tensor, vec: torch.Tensor, lengths: torch.Tensor,
            offsets: torch.Tensor) -> torch.Tensor:
    """(B, D) max over each title's token vectors: ``F.embedding_bag(mode="max")``, computed
    on the CPU by a compiled loop (``_pool_kernel``), with a backward that needs no sort
    (``python benchmarks/profile_step.py`` compares the two)."""
    if vec.device.type != "cpu" or vec.dtype != torch.float32 or token_types.numel() < BAG_MAX_MIN_TOKENS:
        return F.embedding_bag(token_types, vec, offsets, mode="max")
    return _BagMax.apply(vec, token_types, lengths)


class _BagMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vec, token_types, lengths):
        from .. import _pool_kernel

        out, arg = _pool_kernel.bag_max(vec.detach().contiguous().numpy(), token_types.numpy(), lengths.numpy())
        ctx.save_for_backward(torch.from_numpy(arg))
        ctx.rows = vec.shape[0]
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        (arg,) = ctx.saved_tensors  # (B, D) the row that won each output
        dim = grad.shape[1]
        won = arg >= 0
        flat = (arg.clamp(min=0) * dim + torch.arange(dim)).view(-1)  # its element in the (U, D) input
        g = grad.new_zeros(ctx.rows * dim).index_add_(0, flat, (grad * won).reshape(-1))
        return g.view(ctx.rows, dim), None, None


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D) mean over real tokens."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D) max over real tokens (padding never wins)."""
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).max(1).values


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T), (B, T) -> (B, T) softmax over real tokens; padding gets weight 0."""
    # finfo.min rather than -inf: a row with no real token gets uniform weights, not NaN
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1)


def pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return masked_mean(x, mask)
    if how == "max":
        return masked_max(x, mask)
    if how == "sum":
        return (x * mask.unsqueeze(-1).to(x.dtype)).sum(1)
    if how == "meanmax":
        return torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1)
    raise ValueError(f"unknown pooling {how!r}")


class Dropout(nn.Module):
    """``nn.Dropout`` with a cheaper mask: ``rand >= p`` instead of ``bernoulli_``.

    Same distribution and scaling; on this 2-core CPU ``bernoulli_`` took ~6 ms for
    a (1024, 512) batch -- a third of the MLP's forward pass -- and this takes ~2 ms.
    Off in ``eval()`` like any dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # (…) 0 or 1/(1-p), no grad
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}

