"""titlecat.loop: the training loop -- the log prior and logit adjustment, reproducibility,
early stopping on the best epoch, a fit without validation (the refit's)."""

import numpy as np
import pytest
import torch
from conftest import tiny_rows
from test_refit import TINY_MLP

from titlecat.config import Config
from titlecat.featurizer import Featurizer
from titlecat.tokenizer import tokenize_titles
from titlecat.models import build_network
from titlecat.loop import fit, log_prior


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


def test_fit_without_validation_trains_the_given_epochs_of_the_schedule():
    titles = [r["title"] for r in tiny_rows()]
    cfg = Config.default("mlp").with_overrides({**TINY_MLP, "train.epochs": 5})
    corpus = tokenize_titles(titles, cfg.text)
    feat = Featurizer(cfg.text).fit(corpus)
    data = feat.encode(corpus, np.arange(len(titles)) % 4)
    model = build_network(cfg.model, n_classes=4, **feat.sizes())
    model.adapt(data)
    result = fit(model, data, None, cfg.train, stop_after=2, metric_prefix="refit_")
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert not any(k.startswith("val_") for h in result.history for k in h)
    assert result.best_epoch == 2
    # the schedule is the 5-epoch one, stopped after 2: the learning rate has not decayed to 0
    assert result.history[-1]["lr"] > 0.5 * cfg.train.lr


class _Logged:
    """A RunLogger that keeps what it is given."""

    run_id = None

    def __init__(self):
        self.metrics: list[tuple[dict, int | None]] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((dict(metrics), step))

    def __getattr__(self, name):
        return lambda *a, **k: None


def _fit_steps(overrides: dict, stop_after=None, logger=None):
    feat, data = _data()  # 36 titles, batches of 8: 5 steps per epoch
    cfg = Config.default("mlp").with_overrides({"model.embedding_dim": 8, "model.hidden_sizes": [16],
                                                 "train.epochs": 4, "train.batch_size": 8, "train.patience": 50,
                                                 "train.seed": 3, **overrides})
    torch.manual_seed(3)
    model = build_network(cfg.model, n_classes=3, **feat.sizes())
    return fit(model, data, None if stop_after else data, cfg.train, logger=logger, stop_after=stop_after), model


def test_eval_every_steps_validates_between_epoch_ends_and_keeps_the_best_step():
    logger = _Logged()
    result, model = _fit_steps({"train.eval_every_steps": 2}, logger=logger)
    steps = [step for m, step in logger.metrics if "step_val_balanced_accuracy" in m]
    # every 2nd step and every epoch end (steps 5, 10, 15, 20), each once
    assert steps == [2, 4, 5, 6, 8, 10, 12, 14, 15, 16, 18, 20]
    scores = {step: m["step_val_balanced_accuracy"] for m, step in logger.metrics if "step_val_balanced_accuracy" in m}
    best = max(scores.values())
    best_step = min(s for s, v in scores.items() if v == best)  # the first to reach it is kept
    assert result.best_val_balanced_accuracy == best
    assert result.best_epochs == best_step / 5 and result.best_epoch == -(-best_step // 5)
    # the per-epoch history is unchanged: one entry per epoch, validated at its end
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert all("val_balanced_accuracy" in h for h in result.history)


def test_early_stopping_counts_validations_and_can_stop_mid_epoch():
    result, _ = _fit_steps({"train.eval_every_steps": 1, "train.patience": 3, "train.epochs": 40})
    assert result.steps < 40 * 5
    assert result.steps - round(result.best_epochs * 5) == 3  # three validations without a better score
    assert "val_balanced_accuracy" in result.history[-1]  # the epoch cut short still reports its validation


def test_without_eval_every_steps_the_best_is_chosen_at_epoch_ends():
    result, _ = _fit_steps({"train.patience": 50})
    assert result.best_epochs == result.best_epoch  # whole epochs


def test_max_steps_stops_a_run_early_and_validates_where_it_stops():
    result, _ = _fit_steps({"train.max_steps": 7})
    assert result.steps == 7 and [h["epoch"] for h in result.history] == [1, 2]
    assert "val_balanced_accuracy" in result.history[-1]
    # the schedule still spans the 4 epochs: the learning rate is far from 0
    assert result.history[-1]["lr"] > 0.5 * Config.default("mlp").train.lr


def test_a_refit_of_fractional_epochs_stops_mid_epoch():
    result, _ = _fit_steps({}, stop_after=1.6)
    assert result.steps == 8 and [h["epoch"] for h in result.history] == [1, 2]


def test_a_diverging_training_stops_with_a_clear_error():
    from titlecat.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"training diverged: .* with train.lr=1e\+30; .* try a lower train.lr"):
        _fit_steps({"train.lr": 1e30, "train.warmup_steps": 0})
    with pytest.raises(TrainingDiverged, match="training diverged"):  # no validation (a refit): the loss or weights
        _fit_steps({"train.lr": 1e30, "train.warmup_steps": 0}, stop_after=4)
