"""titlecat.optim: the learning-rate schedule and LazyAdam (the sparse Adam of the embedding tables)."""

import pytest
import torch

from titlecat.config import TrainConfig
from titlecat.optim import LazyAdam, _adam_rows_torch, lr_at


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="linear")
    assert lr_at(0, 110, cfg) == pytest.approx(0.1)
    assert lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(60, 110, cfg) == pytest.approx(0.5)
    assert lr_at(110, 110, cfg) == pytest.approx(0.0)
    cos = TrainConfig(lr=1.0, warmup_steps=0, schedule="cosine")
    assert lr_at(50, 100, cos) == pytest.approx(0.5)
    assert lr_at(30, 100, TrainConfig(lr=0.3, warmup_steps=0, schedule="constant")) == 0.3


def test_lazy_adam_equals_adam_when_every_row_is_touched():
    torch.manual_seed(0)
    dense = torch.nn.Embedding(6, 4)
    sparse = torch.nn.Embedding(6, 4, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    a, b = torch.optim.Adam(dense.parameters(), lr=0.01), LazyAdam(sparse.parameters(), lr=0.01)
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 2, 2])  # duplicates: gradients must be summed
    for step in range(5):
        target = torch.randn(len(idx), 4)
        for emb, opt in ((dense, a), (sparse, b)):
            opt.zero_grad()
            ((emb(idx) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(sparse.weight, dense.weight)


def test_lazy_adam_leaves_untouched_rows_alone():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    before = emb.weight.detach().clone()
    opt = LazyAdam(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 4])).sum().backward()
    opt.step()
    changed = (emb.weight != before).any(1)
    assert changed.tolist() == [i in (1, 4) for i in range(10)]


def test_lazy_adam_cpu_kernel_matches_the_torch_update():
    """The numba kernel (CPU) and the indexed torch operations (CUDA path) give the same
    numbers, duplicates in the gradient included, step after step."""
    torch.manual_seed(3)
    emb = torch.nn.Embedding(200, 16, sparse=True)
    w_torch = emb.weight.detach().clone()
    mv_torch = torch.zeros(200, 2, 16)
    opt = LazyAdam(emb.parameters(), lr=0.05)
    for t in range(1, 7):
        idx = torch.randint(0, 200, (150,))  # ~25% repeated rows
        values = torch.randn(150, 16)
        emb.weight.grad = torch.sparse_coo_tensor(idx[None], values, emb.weight.shape, check_invariants=False)
        opt.step()
        grad = emb.weight.grad.coalesce()
        bc1, bc2_sqrt = 1 - 0.9**t, (1 - 0.999**t) ** 0.5
        _adam_rows_torch(w_torch, mv_torch, grad.indices()[0], grad.values(), 0.9, 0.999, 1e-8 * bc2_sqrt,
                         0.05 * bc2_sqrt / bc1)
    torch.testing.assert_close(emb.weight.detach(), w_torch, rtol=1e-4, atol=1e-5)  # fastmath, summing order
    torch.testing.assert_close(opt.state[emb.weight]["mv"], mv_torch, rtol=1e-4, atol=1e-5)


def test_lazy_adam_scratch_is_not_optimizer_state():
    """Checkpoints save ``optimizer.state_dict()``: it holds tensors only (no numpy scratch)."""
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = LazyAdam(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    opt.step()
    state = opt.state_dict()["state"][0]
    assert set(state) == {"step", "mv"} and isinstance(state["mv"], torch.Tensor)
