"""Optimisation: ``LazyAdam`` for the sparse embedding tables, AdamW for the rest, and the
learning-rate schedule.

The embedding tables hold most parameters (200k n-gram buckets); a dense optimizer would
update all of them at every step.  Sparse gradients touch only the rows a batch used, which
is what makes CPU training fast.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import TrainConfig


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up, then constant, linear or cosine decay to 0."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class LazyAdam(torch.optim.Optimizer):
    """Adam for sparse gradients that updates only the rows present in the gradient.

    ``torch.optim.SparseAdam`` computes the same update but measured ~100 ms a step
    here on a 200k-row table (sparse-tensor arithmetic on the CPU).  On the CPU the
    update is one fused numba loop over the touched rows (``_adam_kernel``: ~8 ms for
    25k rows of 128, against ~30 ms for the same update as indexed torch operations,
    which read and write the rows ten times; ``benchmarks/profile_step.py``); elsewhere
    (CUDA) it is those torch operations (``_adam_rows_torch``).  Both compute the same
    numbers.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self._slots: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def step(self, closure=None):
        kernels = None  # the CPU kernels, looked up (and their thread count set) once per step
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    # first and second moments side by side: a touched row's state is one read
                    state["mv"] = torch.zeros((p.shape[0], 2, *p.shape[1:]), dtype=p.dtype, device=p.device)
                state["step"] += 1
                t = state["step"]
                # bias corrections folded into two scalars, as torch.optim.Adam does
                bc1, bc2_sqrt = 1 - b1**t, math.sqrt(1 - b2**t)
                step_size, eps_hat = group["lr"] * bc2_sqrt / bc1, group["eps"] * bc2_sqrt
                if p.device.type == "cpu" and p.dtype == torch.float32 and p.dim() == 2 and p.is_contiguous():
                    kernels = kernels or _cpu_kernels()
                    # scratch for summing duplicate rows (all -1 between calls): not optimizer
                    # state, so checkpoints never hold it
                    slot = self._slots.get(id(p))
                    if slot is None:
                        slot = self._slots[id(p)] = np.full(p.shape[0], -1, dtype=np.int32)
                    # the raw (uncoalesced) gradient: the kernel sums duplicate rows without sorting
                    rows, g = kernels.sum_duplicate_rows(p.grad._indices()[0].numpy(),
                                                         p.grad._values().contiguous().numpy(), slot)
                    f32 = np.float32
                    kernels.adam_rows(p.detach().numpy(), state["mv"].numpy(), rows, g,
                                      f32(b1), f32(b2), f32(eps_hat), f32(step_size))
                else:
                    grad = p.grad.coalesce()  # one row per index: Adam needs each row's summed gradient
                    _adam_rows_torch(p, state["mv"], grad.indices()[0], grad.values(), b1, b2, eps_hat, step_size)


def _adam_rows_torch(p, mv_all, rows, g, b1, b2, eps_hat, step_size):
    """The Adam update of ``p[rows]`` with indexed torch operations (any device)."""
    mv = mv_all.index_select(0, rows)  # (R, 2, D)
    m, v = mv[:, 0], mv[:, 1]
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    mv_all.index_copy_(0, rows, mv)
    # m and v are copies of the state rows now, so they can be overwritten in place
    p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps_hat)), alpha=-step_size)


_KERNELS = None


def _cpu_kernels():
    """The numba-compiled row update, compiled (or loaded from numba's cache) on first use;
    called once per optimizer step, to follow torch's thread count.

    Imported lazily: numba costs ~0.5 s to import, which a small prediction never pays.  It runs
    on as many threads as torch's intra-op pool (``train.num_threads``), in numba's
    ``workqueue`` threading layer: its OpenMP layer starts a second OpenMP runtime beside
    torch's, whose idle threads spin and (measured) cut two concurrent 1-thread trainings
    from ~9,800 to ~1,000 titles/s each.  ``NUMBA_THREADING_LAYER`` still overrides it.
    """
    global _KERNELS
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    if _KERNELS is None:
        from . import _adam_kernel

        _KERNELS = _adam_kernel
    return _KERNELS


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """``LazyAdam`` for the sparse embedding tables, AdamW for everything else.

    The embedding tables hold most parameters (200k n-gram buckets); a dense
    optimizer would update all of them at every step.  Sparse gradients touch only
    the rows a batch used, which is what makes CPU training fast.
    """
    sparse = [p for m in model.modules() if getattr(m, "sparse", False) for p in m.parameters(recurse=False)
              if p.requires_grad]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    optimizers: list[torch.optim.Optimizer] = []
    if dense:  # a network of embedding tables alone has none
        optimizers.append(torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay))
    if sparse:
        optimizers.append(LazyAdam(sparse, lr=cfg.lr))
    return optimizers

