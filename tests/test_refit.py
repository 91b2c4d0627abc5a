"""train.refit: after the epoch is chosen on validation, the config is trained again on every row
for that many epochs; the refitted model keeps its first training's validation logits, which are
its validation scores from then on (in MLflow, in the bundle, in an ensemble).

(``fit`` without validation rows, as the refit runs it, is tested in ``test_loop.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import titlecat
import titlecat.recipe
from titlecat.dataset import language_aware_split
from titlecat.config import Config, ConfigError
from titlecat.cache import tokenize_file
from titlecat.tokenizer import tokenize_titles
from titlecat.models import NeuralModel

from conftest import _write_jsonl, module_workspace, tiny_rows
from test_ensemble import ensemble_yaml, member_yaml

TINY_MLP = {"text.buckets": 2000, "text.bigram_buckets": 100, "model.embedding_dim": 16, "train.epochs": 3,
            "train.batch_size": 8, "train.warmup_steps": 0, "train.num_threads": 1, "data.val_fraction": 0.25,
            "data.split_seed": 5, "train.refit": True}


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    """A tiny MLP trained with train.refit, tracked in its own MLflow store and saved."""
    with module_workspace(tmp_path_factory, "refit") as (d, train, test):
        clf = titlecat.train(train, test, model="mlp", overrides=TINY_MLP, output=d / "bundle")
    return clf, train, test, d


def test_the_refit_learns_every_row_for_the_chosen_epochs(refitted):
    clf, train, _, _ = refitted
    info = clf.info
    assert info.n_train + info.n_val == len(tiny_rows())
    assert info.n_refit == len(tiny_rows())
    assert info.refit_epochs == info.best_epoch
    # the refitted featurizer knows the words only the validation rows have
    corpus = tokenize_file(train, clf.text_config, clf.config.data)
    _, val_idx = language_aware_split(corpus, 0.25, 5)
    val_words = {corpus.types[t] for t in corpus.subset(val_idx).token_types}
    assert val_words <= set(clf.model.featurizer.vocab_.index_)


def test_its_validation_scores_are_its_first_trainings(refitted):
    clf, train, _, d = refitted
    first = titlecat.train(train, model="mlp", overrides={**TINY_MLP, "train.refit": False}, tracking=False)
    assert clf.held_out is not None
    assert clf.validate(train)["balanced_accuracy"] == pytest.approx(first.info.best_val_balanced_accuracy)
    assert clf.validate(train)["balanced_accuracy"] == pytest.approx(clf.info.best_val_balanced_accuracy)
    # the kept logits are the validated model's: the MLP trains bit-for-bit alike from one seed
    corpus, y = first._validation_rows(train, None, None)
    np.testing.assert_allclose(clf.held_out.logits, first.logits(corpus), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(clf.held_out.labels, y)
    # ... and not the refitted model's own (which learned those rows)
    assert not np.allclose(clf.logits(corpus), clf.held_out.logits)


def test_the_bundle_keeps_the_validation_logits(refitted):
    clf, train, test, d = refitted
    loaded = titlecat.load(d / "bundle")
    np.testing.assert_array_equal(loaded.held_out.logits, clf.held_out.logits)
    np.testing.assert_array_equal(loaded.held_out.labels, clf.held_out.labels)
    assert loaded.validate(train) == clf.validate(train)
    assert loaded.evaluate(test)["balanced_accuracy"] == clf.info.test_balanced_accuracy


def test_a_refitted_model_is_validated_on_its_own_held_out_rows_only(refitted, tmp_path):
    clf, train, test, _ = refitted
    with pytest.raises(ValueError, match="refitted on its validation rows"):
        clf.validate(train, validation=test)


def test_mlflow_holds_the_refit(refitted):
    clf, _, _, d = refitted
    client = MlflowClient(f"sqlite:///{d / 'mlflow.db'}")
    run = client.get_run(clf.info.mlflow_run_id)
    assert run.data.params["train.refit"] == "True"
    assert run.data.params["data.n_refit"] == str(len(tiny_rows()))
    assert run.data.metrics["refit_epochs"] == clf.info.best_epoch
    assert run.data.metrics["best_val_balanced_accuracy"] == pytest.approx(clf.info.best_val_balanced_accuracy)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "refit_train_loss")]
    assert steps == list(range(1, clf.info.best_epoch + 1))
    assert "test_balanced_accuracy" in run.data.metrics


def test_refit_is_refused_before_training_when_validation_has_unseen_categories(tmp_path, tiny_train_file,
                                                                                monkeypatch):
    val = _write_jsonl(tmp_path / "val.jsonl", [*tiny_rows()[:4], {"title": "Mesa de luz", "category": "TABLES"}])
    monkeypatch.setattr(NeuralModel, "fit", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ConfigError, match="train.refit.*TABLES"):
        titlecat.train(tiny_train_file, validation=val, model="mlp", overrides=TINY_MLP, tracking=False)


def test_refit_with_a_validation_file_learns_both_files(tmp_path, tiny_train_file):
    val_rows = [r | {"title": r["title"] + " Originalisimo"} for r in tiny_rows()[::4]]
    val = _write_jsonl(tmp_path / "val.jsonl", val_rows)
    clf = titlecat.train(tiny_train_file, validation=val, model="mlp", overrides=TINY_MLP, tracking=False)
    assert clf.info.n_refit == len(tiny_rows()) + len(val_rows)
    assert "originalisimo" in clf.model.featurizer.vocab_.index_
    assert clf.validate(tiny_train_file, validation=val)["balanced_accuracy"] == pytest.approx(
        clf.info.best_val_balanced_accuracy)


def test_the_tfidf_baseline_refits_too(tiny_train_file):
    clf = titlecat.train(tiny_train_file, model="tfidf", tracking=False,
                         overrides={"data.val_fraction": 0.25, "data.split_seed": 5, "train.refit": True})
    assert clf.info.n_refit == len(tiny_rows())
    assert clf.validate(tiny_train_file)["balanced_accuracy"] == pytest.approx(clf.info.best_val_balanced_accuracy)


def test_an_ensemble_of_refitted_members_is_scored_on_their_first_trainings(tmp_path, tiny_train_file):
    refit = {"train.refit": True}
    cfg = ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp", refit), member_yaml(tmp_path, "rnn", refit)])
    ens = titlecat.train(tiny_train_file, config=cfg, tracking=False)
    assert all(m.held_out is not None and m.info.n_refit == len(tiny_rows()) for m in ens.members)
    held = [torch.log_softmax(torch.from_numpy(m.held_out.logits), 1) for m in ens.members]
    corpus, y = ens._validation_rows(tiny_train_file, None, None)
    expected = (held[0] + held[1]).div(2).argmax(1).numpy()
    val = ens.validate(tiny_train_file)
    assert val["accuracy"] == pytest.approx(float(np.mean(expected == y)))
    assert ens.info.best_val_balanced_accuracy == val["balanced_accuracy"]
    for m, member_scores in zip(ens.members, val["members"]):
        assert member_scores["balanced_accuracy"] == pytest.approx(m.info.best_val_balanced_accuracy)


def test_a_training_stopped_in_its_refit_resumes_into_the_refit(tmp_path, tiny_train_file, monkeypatch):
    """The first training's checkpoint stays until the bundle is written: a run stopped while
    refitting resumes without training its first epochs again, then refits."""
    settings = {**TINY_MLP, "train.checkpoint_minutes": 0}  # a checkpoint at every epoch end
    out = tmp_path / "out"
    real_refit = titlecat.recipe.refit

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(titlecat.recipe, "refit", stopped)
    with pytest.raises(KeyboardInterrupt):
        titlecat.train(tiny_train_file, model="mlp", overrides=settings, output=out, tracking=False)
    assert (out / "checkpoint").is_dir() and not (out / "bundle.json").exists()

    monkeypatch.setattr(titlecat.recipe, "refit", real_refit)
    resumed = titlecat.train(tiny_train_file, output=out, resume=True, tracking=False)
    whole = titlecat.train(tiny_train_file, model="mlp", overrides=settings, tracking=False)
    assert resumed.info.n_refit == whole.info.n_refit == len(tiny_rows())
    assert resumed.info.best_epoch == whole.info.best_epoch
    np.testing.assert_array_equal(resumed.held_out.logits, whole.held_out.logits)
    corpus = tokenize_titles([r["title"] for r in tiny_rows()], resumed.text_config)
    np.testing.assert_array_equal(resumed.logits(corpus), whole.logits(corpus))
    assert (out / "bundle.json").is_file() and not (out / "checkpoint").exists()


def test_tuning_trials_never_refit_and_the_written_config_keeps_refit(tiny_train_file, tmp_path, monkeypatch):
    from titlecat.tune import run_study

    monkeypatch.setattr(titlecat.recipe, "refit", lambda *a, **k: pytest.fail("a trial was refitted"))
    best = tmp_path / "best.yaml"
    res = run_study(tiny_train_file, model="mlp", overrides=TINY_MLP, trials=1, output=best, tracking=False, seed=1)
    assert res.complete == 1
    assert Config.from_yaml(best).train.refit is True


def test_no_refit_above_refit_max_rows(tmp_path, tiny_train_file, capsys):
    """On millions of rows the refit is skipped (train.refit_max_rows): said, and the validated
    model is the one kept; refit_max_rows=0 lifts the limit."""
    n = len(tiny_rows())
    clf = titlecat.train(tiny_train_file, model="mlp", overrides={**TINY_MLP, "train.refit_max_rows": n - 1},
                         tracking=False)
    assert clf.info.n_refit is None and clf.info.refit_epochs is None
    assert f"no refit: {n:,} rows are more than train.refit_max_rows ({n - 1:,})" in capsys.readouterr().err
    assert titlecat.train(tiny_train_file, model="mlp", overrides={**TINY_MLP, "train.refit_max_rows": 0},
                          tracking=False).info.n_refit == n


def test_a_refit_after_a_mid_epoch_choice_trains_that_fraction_of_epochs(tiny_train_file):
    clf = titlecat.train(tiny_train_file, model="mlp", tracking=False,
                         overrides={**TINY_MLP, "train.batch_size": 4, "train.eval_every_steps": 3, "train.epochs": 4})
    refit = clf.info.refit_epochs
    assert refit is not None and 0 < refit <= 4
    assert clf.info.best_epoch == int(-(-refit // 1))  # the epoch of the chosen step
