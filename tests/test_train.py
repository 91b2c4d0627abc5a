"""The training loop's parts: learning-rate schedule, LazyAdam, reproducibility, early stopping."""

import numpy as np
import pytest
import torch

from titlecat.config import Config, TrainConfig
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import tokenize_titles
from titlecat.models import build_network
from titlecat.optim import LazyAdam, _adam_rows_torch, lr_at
from titlecat.loop import fit, log_prior


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


def test_log_prior_is_smoothed_and_normalised():
    prior = log_prior(np.array([0, 0, 0, 1]), 3)
    assert torch.exp(prior).sum().item() == pytest.approx(1.0)
    assert torch.exp(prior).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])  # add-one: an unseen class is not -inf


def test_logit_adjustment_trades_a_frequent_class_for_a_rare_one():
    """"x" is category 0 in 60% of its rows and 1 in 40%, but 0 is 4x as frequent overall.
    Plain cross-entropy predicts 0 for "x"; the logit-adjusted loss (tau = 1) learns
    p(y|x)/p(y) and predicts 1 -- the decision that maximises balanced accuracy."""
    titles = ["x"] * 10 + ["y"] * 10
    labels = np.array([0] * 6 + [1] * 4 + [0] * 10)
    text = Config.default("mlp").text.model_copy(update={"buckets": 100, "bigram_buckets": 0})
    corpus = tokenize_titles(titles, text)
    feat = Featurizer(text).fit(corpus)
    data = feat.encode(corpus, labels)
    final = {}
    for tau in (0.0, 1.0):
        cfg = Config.default("mlp").with_overrides({"model.embedding_dim": 8, "model.hidden_sizes": [],
                                                     "model.dropout": 0.0, "train.epochs": 60, "train.lr": 0.05,
                                                     "train.batch_size": 20, "train.label_smoothing": 0.0,
                                                     "train.schedule": "constant", "train.patience": 100,
                                                     "train.logit_adjustment": tau})
        torch.manual_seed(0)
        model = build_network(cfg.model, n_classes=2, **feat.sizes())
        result = fit(model, data, data, cfg.train)
        final[tau] = round(result.history[-1]["val_balanced_accuracy"], 4)
    # "x" -> 0: recalls 16/16 and 0/4; "x" -> 1: recalls 10/16 and 4/4
    assert final == {0.0: 0.5, 1.0: 0.8125}


TITLES = ["zapatillas nike air max", "zapatillas adidas running", "casco moto integral", "casco moto rebatible",
          "celular samsung galaxy", "celular motorola moto g"] * 6
LABELS = np.repeat([[0, 0, 1, 1, 2, 2]], 6, axis=0).ravel()


def _data():
    text = Config.default("mlp").text.model_copy(update={"buckets": 1000, "bigram_buckets": 500})
    corpus = tokenize_titles(TITLES, text)
    feat = Featurizer(text).fit(corpus)
    return feat, feat.encode(corpus, LABELS)


def _fit(seed: int, epochs: int = 3, patience: int = 5):
    feat, data = _data()
    cfg = Config.default("mlp").with_overrides({"model.embedding_dim": 8, "model.hidden_sizes": [16],
                                                 "train.epochs": epochs, "train.batch_size": 8,
                                                 "train.patience": patience, "train.seed": seed})
    torch.manual_seed(seed)
    model = build_network(cfg.model, n_classes=3, **feat.sizes())
    return fit(model, data, data, cfg.train), model


def test_fit_is_reproducible_with_a_seed():
    r1, m1 = _fit(7)
    r2, m2 = _fit(7)
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_fit_keeps_the_best_epoch_and_stops_early():
    result, model = _fit(1, epochs=40, patience=2)
    best = max(h["val_balanced_accuracy"] for h in result.history)
    assert result.best_val_balanced_accuracy == best
    assert len(result.history) < 40  # perfect validation score reached, then no improvement: stopped
    assert result.history[result.best_epoch - 1]["val_balanced_accuracy"] == best
