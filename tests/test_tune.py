"""``titlecat tune``: the config's ``search`` section, the per-epoch callback that prunes, trials
nested under one MLflow run, the best config that ``titlecat train --config`` takes as is, and
two worker processes sharing one study through Optuna's SQLite storage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

import titlecat
from titlecat.cli import main
from titlecat.config import Config, ConfigError
from titlecat.tune import command_line, run_study, suggest

from conftest import _write_jsonl, tiny_rows

# fixed for every trial (a setting given with --set is not searched); the mlp's search space
# then leaves dropout, idf minimum count, learning rate and label smoothing to the trials
TINY = {"text.buckets": 2000, "text.bigram_buckets": 100, "model.embedding_dim": 16, "model.hidden_sizes": [32],
        "train.epochs": 2, "train.batch_size": 8, "train.warmup_steps": 0, "train.num_threads": 1}
TINY_SET = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
SPACE = {"model.dropout": {"type": "float", "low": 0.1, "high": 0.6},
         "train.lr": {"type": "float", "low": 1e-3, "high": 2e-2, "log": True},
         "model.hidden_sizes": {"type": "categorical", "choices": [[256], [512], [1024]]},
         "train.epochs": {"type": "int", "low": 2, "high": 6, "step": 2}}


def _mlp(search: dict) -> dict:
    return {"model": {"name": "mlp"}, "search": search}


# ---- the search section ------------------------------------------------------------------


def test_search_section_is_typed_and_round_trips(tmp_path):
    cfg = Config.from_dict(_mlp(SPACE))
    assert cfg.search["train.lr"].log is True and cfg.search["model.hidden_sizes"].choices[2] == [1024]
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert Config.from_yaml(path) == cfg
    # written compactly: only what was set
    assert cfg.to_dict()["search"]["model.dropout"] == {"type": "float", "low": 0.1, "high": 0.6}


def test_search_does_not_change_the_training_settings():
    with_search, without = Config.from_dict(_mlp(SPACE)), Config.from_dict(_mlp({}))
    assert with_search.flat() == without.flat()
    assert (with_search.model, with_search.text, with_search.data, with_search.train) == \
        (without.model, without.text, without.data, without.train)
    assert "search" not in without.to_dict() and "tuned_from" not in without.to_dict()


@pytest.mark.parametrize("search, message", [
    ({"model.dropot": {"type": "float", "low": 0.1, "high": 0.5}}, "'model.dropot' is not a setting"),
    ({"optimizer.lr": {"type": "float", "low": 0.1, "high": 0.5}}, "'optimizer.lr' is not a setting"),
    ({"model.name": {"type": "categorical", "choices": ["cnn"]}}, "'model.name' is not a setting"),
    ({"model.dropout": {"type": "float", "low": 0.1, "high": 1.5}}, r"model.dropout: 1.5 is not a valid value"),
    ({"model.dropout": {"type": "float", "low": 0.5, "high": 0.1}}, r"search.model.dropout: low \(0.5\) must be below"),
    ({"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
    ({"model.embedding_dim": {"type": "float", "low": 16, "high": 64}}, "model.embedding_dim: a whole-number"),
    ({"train.epochs": {"type": "int", "low": 1.5, "high": 4}}, "int needs whole"),
    ({"model.hidden_sizes": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    ({"model.hidden_sizes": {"type": "categorical", "choices": [[64], "wide"]}}, "model.hidden_sizes: 'wide' is not"),
    ({"model.dropout": {"type": "uniform", "low": 0.1, "high": 0.5}}, r"search.model.dropout.type"),
    ({"model.dropout": {"type": "float", "low": 0.1, "high": 0.5, "lo": 1}}, r"search.model.dropout.lo: unknown key"),
])
def test_a_bad_search_entry_is_a_config_error_naming_it(search, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(_mlp(search))


def test_every_shipped_neural_config_has_a_search_space():
    for model in ("mlp", "cnn", "rnn", "transformer"):
        assert Config.default(model).search, model


def test_suggest_draws_within_the_space():
    space = Config.from_dict(_mlp(SPACE)).search
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        values = suggest(study.ask(), space)
        assert 0.1 <= values["model.dropout"] <= 0.6 and 1e-3 <= values["train.lr"] <= 2e-2
        assert values["model.hidden_sizes"] in ([256], [512], [1024])  # lists come back as lists
        assert values["train.epochs"] in (2, 4, 6)
        Config.from_dict(_mlp({})).with_overrides(values)  # every draw is a valid config


# ---- the per-epoch callback --------------------------------------------------------------


class Stop(Exception):
    pass


def test_on_epoch_sees_each_epoch_and_may_stop_the_training(tiny_train_file):
    seen = []

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics["val_balanced_accuracy"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        titlecat.train(tiny_train_file, model="mlp", overrides={**TINY, "train.epochs": 4}, tracking=False,
                       on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]
    assert all(0.0 <= v <= 1.0 for _, v in seen)


# ---- tune in-process: nesting, pruning, the best config, joining a study ---------------------


class PruneAfterTheFirstTrial(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number >= 1


def test_tune_nests_trials_prunes_and_writes_a_config_that_trains(tiny_train_file, tiny_test_file, tmp_path, mlflow_db):
    best = tmp_path / "best.yaml"
    res = run_study(tiny_train_file, model="mlp", overrides=[f"{k}={v}" for k, v in TINY.items()], trials=2,
               output=best, experiment="tune", seed=1, pruner=PruneAfterTheFirstTrial(), command="titlecat tune ...")
    assert (res.complete, res.pruned, res.trial) == (1, 1, 0)
    assert res.storage == f"sqlite:///{tmp_path / 'optuna.db'}"  # default: beside the output

    # MLflow: one run for the study, its two trials nested in it, the pruned one stopped after epoch 1
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tune").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("titlecat.kind") == "tune"]
    trials = sorted((r for r in runs if r.data.tags.get("titlecat.kind") == "trial"),
                    key=lambda r: int(r.data.tags["titlecat.trial"]))
    assert len(runs) == 3 and parent.info.run_id == res.mlflow_parent_run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert [r.data.tags["titlecat.trial_state"] for r in trials] == ["complete", "pruned"]
    assert [r.info.status for r in trials] == ["FINISHED", "KILLED"]
    assert [len(client.get_metric_history(r.info.run_id, "val_loss")) for r in trials] == [2, 1]
    assert parent.data.metrics["best_val_balanced_accuracy"] == pytest.approx(res.value)
    assert trials[0].data.metrics["best_val_balanced_accuracy"] == pytest.approx(res.value)

    # the config file: headed by how to use it, the best trial's values, loads and trains as is
    text = best.read_text(encoding="utf-8")
    assert text.startswith(f"# titlecat train --config {best} ") and "# Written by: titlecat tune ..." in text
    assert f"validation balanced accuracy {res.value:.4f}" in text
    cfg = Config.from_yaml(best)
    assert cfg == res.config and cfg.tuned_from.trial == 0 and cfg.tuned_from.study == "titlecat-mlp"
    for key in ("model.dropout", "train.lr", "train.label_smoothing"):  # searched: the trial's values
        assert cfg.flat()[key] == trials[0].data.params[key]
    assert cfg.model.hidden_sizes == [32] and cfg.text.buckets == 2000  # fixed with --set
    assert set(cfg.search) == {"model.dropout", "model.idf_min_df", "train.lr", "train.label_smoothing"}

    assert main(["train", "--config", str(best), "--train", str(tiny_train_file), "--test", str(tiny_test_file),
                 "--output", str(tmp_path / "tuned"), "--experiment", "tuned"]) == 0
    (run,) = client.search_runs([client.get_experiment_by_name("tuned").experiment_id])
    assert run.data.tags["titlecat.tuned"] == "true" and run.data.tags["titlecat.study"] == "titlecat-mlp"

    # a worker joining the study with other settings is stopped before it trains
    with pytest.raises(ConfigError, match=r"train.lr: study [0-9.]+, here 0.01"):
        run_study(tiny_train_file, model="mlp", overrides=[*(f"{k}={v}" for k, v in TINY.items()), "train.lr=0.01"],
             trials=1, output=best, experiment="tune")


def test_cli_errors_name_the_problem(tiny_train_file, tmp_path, capsys, write_jsonl):
    plain = tmp_path / "plain.yaml"
    Config.default("mlp").model_copy(update={"search": {}}).to_yaml(plain)
    assert main(["tune", "--config", str(plain), "--train", str(tiny_train_file), "--trials", "1",
                 "--output", str(tmp_path / "b.yaml")]) == 2
    assert "no 'search' section" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: mlp\nsearch:\n  model.dropot: {type: float, low: 0.1, high: 0.5}\n")
    assert main(["tune", "--config", str(bad), "--train", str(tiny_train_file), "--trials", "1",
                 "--output", str(tmp_path / "b.yaml")]) == 2
    assert re.search(r"bad.yaml: search: 'model.dropot' is not a setting", capsys.readouterr().err)
    assert main(["tune", "--model", "mlp", "--train", str(tiny_train_file), "--trials", "1",
                 "--output", str(tmp_path / "b.yaml"), "--storage", "nosuchdb://x"]) == 2
    assert "--storage nosuchdb://x: cannot open" in capsys.readouterr().err


def test_the_command_line_hides_a_storage_password():
    shown = command_line(["tune", "--storage", "postgresql://me:secret@db/optuna", "--trials", "2"])
    assert "secret" not in shown and "postgresql://me:***@db/optuna" in shown
    assert "secret" not in command_line(["tune", "--storage=postgresql://me:secret@db/optuna"])


# ---- two workers, one study ------------------------------------------------------------------


def test_two_workers_share_one_study(tmp_path, mlflow_db):
    train = _write_jsonl(tmp_path / "train.jsonl.gz", tiny_rows(), gz=True)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    best = tmp_path / "best.yaml"
    args = ["tune", "--model", "mlp", "--train", str(train), "--trials", "2", "--output", str(best),
            "--storage", storage, "--study-name", "shared", "--experiment", "workers", *TINY_SET]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # MLFLOW_TRACKING_URI and the cache: the test's own
    workers = [subprocess.Popen([sys.executable, "-m", "titlecat.cli", *args, "--seed", str(seed)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out

    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # one MLflow run for the study, made by whichever worker created it; all four trials in it
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("workers").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("titlecat.kind") == "tune"]
    trials = [r for r in runs if r.data.tags.get("titlecat.kind") == "trial"]
    assert sorted(int(r.data.tags["titlecat.trial"]) for r in trials) == [0, 1, 2, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}

    # the best config (trained as is in the test above): the study's best, whichever worker ran it
    cfg = Config.from_yaml(best)
    assert cfg.tuned_from.study == "shared" and cfg.tuned_from.val_balanced_accuracy == pytest.approx(study.best_value)
    assert cfg.tuned_from.trial == study.best_trial.number and cfg.tuned_from.trials == 4


def test_default_pruner_spares_the_first_epochs():
    """A trial far below the median is pruned at epoch 3, never at epochs 1-2 (whose scores
    mostly rank learning rates, not final accuracy)."""
    import optuna

    from titlecat.tune import PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_EPOCHS, default_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=default_pruner())
    for _ in range(PRUNER_STARTUP_TRIALS):
        good = study.ask()
        for epoch in range(1, 6):
            good.report(0.9, epoch)
        study.tell(good, 0.9)
    slow = study.ask()
    decisions = []
    for epoch in range(1, PRUNER_WARMUP_EPOCHS + 2):
        slow.report(0.1, epoch)
        decisions.append(slow.should_prune())
    assert decisions == [False] * PRUNER_WARMUP_EPOCHS + [True]


def test_repeats_score_a_trial_by_the_mean_of_trainings_on_other_seeds_and_splits(tiny_train_file, tmp_path,
                                                                                 mlflow_db, monkeypatch):
    import titlecat.tune

    seen = []
    real_train = titlecat.tune.train_model

    def spy(*args, config=None, **kwargs):
        seen.append((config.train.seed, config.data.split_seed, kwargs.get("on_epoch") is not None))
        return real_train(*args, config=config, **kwargs)

    monkeypatch.setattr(titlecat.tune, "train_model", spy)
    best = tmp_path / "best.yaml"
    res = run_study(tiny_train_file, model="mlp", overrides=[f"{k}={v}" for k, v in TINY.items()], trials=1,
               output=best, experiment="tune", seed=1, repeats=3)
    base = Config.default("mlp")
    s, d = base.train.seed, base.data.split_seed
    assert seen == [(s, d, True), (s + 1, d + 1, False), (s + 2, d + 2, False)]  # only the first prunes
    cfg = Config.from_yaml(best)
    values = cfg.tuned_from.repeat_val_balanced_accuracy
    assert len(values) == 3 and res.value == pytest.approx(sum(values) / 3)
    assert cfg.train.seed == s and cfg.data.split_seed == d  # the config is the trial's, not a repeat's
    assert "mean of 3 trainings" in best.read_text(encoding="utf-8")
    client = MlflowClient()
    (trial,) = [r for r in client.search_runs([client.get_experiment_by_name("tune").experiment_id])
                if r.data.tags.get("titlecat.kind") == "trial"]
    history = client.get_metric_history(trial.info.run_id, "repeat_val_balanced_accuracy")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(values)
    # a study is scored one way: joining it with another number of repeats is refused
    with pytest.raises(ConfigError, match="tune.repeats"):
        run_study(tiny_train_file, model="mlp", overrides=[f"{k}={v}" for k, v in TINY.items()], trials=1,
             output=best, experiment="tune", repeats=2)
    with pytest.raises(ValueError, match="--repeats must be >= 1"):
        run_study(tiny_train_file, model="mlp", trials=1, output=best, repeats=0)
