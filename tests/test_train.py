"""The training loop's parts: learning-rate schedule, LazyAdam, reproducibility, early stopping."""

import numpy as np
import pytest
import torch

from titlecat.config import Config, TrainConfig
from titlecat.features import Featurizer, tokenize_titles
from titlecat.models import build_model
from titlecat.train import LazyAdam, fit, lr_at


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
    model = build_model(cfg.model, n_classes=3, **feat.sizes())
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
