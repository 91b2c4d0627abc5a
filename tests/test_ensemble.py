"""Ensembles: the vote is the weighted mean of the members' log-probabilities; one config trains
every member on one shared validation split, nested in MLflow; the bundle round-trips; bad
ensembles are refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import titlecat
from titlecat.bundle import BundleError
from titlecat.config import Config, ConfigError
from titlecat.models.ensemble import Ensemble, member_configs

from conftest import module_workspace, tiny_rows

TINY = {"text.buckets": 2000, "text.bigram_buckets": 100, "model.embedding_dim": 16, "train.epochs": 2,
        "train.batch_size": 8, "train.warmup_steps": 0, "train.num_threads": 1}
MEMBERS = {"mlp": {**TINY, "model.hidden_sizes": [32]}, "rnn": {**TINY, "model.hidden_size": 16}}


def member_yaml(directory: Path, model: str, extra: dict | None = None) -> Path:
    """A tiny member config (the shipped one, shrunk) written as YAML: an ensemble member by path."""
    cfg = Config.default(model).model_copy(update={"tuned_from": None}).with_overrides({**MEMBERS[model], **(extra or {})})
    return Path(cfg.to_yaml(directory / f"{model}.yaml") and directory / f"{model}.yaml")


def ensemble_yaml(directory: Path, members: list, **model) -> Path:
    path = directory / "ensemble.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "ensemble", "members": [str(m) for m in members], **model},
                                    "data": {"val_fraction": 0.2, "split_seed": 5}}))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny members trained separately (MLP and GRU), and the files."""
    with module_workspace(tmp_path_factory, "pair") as (d, train, test):
        members = [titlecat.train(train, config=member_yaml(d, m), tracking=False) for m in ("mlp", "rnn")]
    return members, train, test


TITLES = ["Zapatillas Nike Air Max 90 Talle 42", "Casco Moto Integral LS2", "Celular Samsung Galaxy A10",
          "Cámara Digital Canon", "", "xyz"]


def test_logits_are_the_weighted_mean_of_the_members_log_probabilities(pair):
    members, _, _ = pair
    ens = Ensemble(members, weights=[1.0, 3.0])
    log_p = [torch.log_softmax(torch.from_numpy(m.predict_proba(TITLES)).log(), 1) for m in members]
    expected = torch.softmax(0.25 * log_p[0] + 0.75 * log_p[1], 1).numpy()
    np.testing.assert_allclose(ens.predict_proba(TITLES), expected, rtol=1e-4, atol=1e-6)
    labels, probs = ens.predict(TITLES, k=2)
    assert [lab[0] for lab in labels] == [ens.labels.classes_[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(probs[:, 0], expected.max(1), rtol=1e-4)
    # a member of weight 0 has no say: the ensemble is that other member
    only_rnn = Ensemble(members, weights=[0.0, 1.0])
    np.testing.assert_allclose(only_rnn.predict_proba(TITLES), members[1].predict_proba(TITLES), rtol=1e-4, atol=1e-6)


def test_equal_weights_by_default_and_parameters_add_up(pair):
    members, _, _ = pair
    ens = Ensemble(members)
    assert ens.weights == [1.0, 1.0]
    assert ens.config.model.members == ["mlp", "rnn"]
    assert ens.num_parameters() == sum(m.num_parameters() for m in members)


def test_validate_scores_the_rows_the_members_held_out(pair):
    members, train, _ = pair
    ens = Ensemble(members)
    val = ens.validate(train)
    assert val["n"] == members[0].info.n_val
    for m, alone in zip(members, val["members"]):  # each member on the same rows: its training's score
        assert m.validate(train)["balanced_accuracy"] == pytest.approx(m.info.best_val_balanced_accuracy)
        assert alone == pytest.approx(m.validate(train))


def test_members_of_other_categories_or_tokenization_are_refused(pair, tmp_path):
    members, _, _ = pair
    three = [r for r in tiny_rows() if r["category"] != "SNEAKERS"]
    from conftest import _write_jsonl

    other = titlecat.train(_write_jsonl(tmp_path / "three.jsonl.gz", three, gz=True),
                           config=member_yaml(tmp_path, "mlp"), tracking=False)
    with pytest.raises(ValueError, match="other categories"):
        Ensemble([members[0], other])
    short = titlecat.train(pair[1], config=member_yaml(tmp_path, "mlp", {"text.max_tokens": 5}), tracking=False)
    with pytest.raises(ValueError, match="text.max_tokens"):
        Ensemble([members[0], short])
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([members[0]])
    with pytest.raises(ValueError, match="weights"):
        Ensemble(members, weights=[1.0])
    with pytest.raises(ValueError, match="itself an ensemble"):
        Ensemble([Ensemble(members), members[0]])


@pytest.mark.parametrize("change, message", [
    ({"model.members": ["mlp", "nosuchmodel"]}, r"members\[1\]: 'nosuchmodel' is neither"),
    ({"model.members": ["mlp", "ensemble"]}, "cannot be a member of an ensemble"),
    ({"model.members": ["mlp"]}, "at least 2"),
    ({"model.weights": [1.0]}, "1 given for 4 members"),
    ({"model.weights": [0, 0, 0, 0]}, "at least one > 0"),
    ({"train.lr": 0.1}, "train.lr: an ensemble's members bring their own"),
    ({"model.members": ["mlp", "/no/such/member.yaml"]}, r"members\[1\]: /no/such/member.yaml: config file not found"),
])
def test_bad_ensemble_configs_are_refused_before_training(change, message, tiny_train_file):
    with pytest.raises(ConfigError, match=message):
        titlecat.train(tiny_train_file, overrides=change, model="ensemble", tracking=False)


def test_members_share_the_ensembles_split_and_take_its_device(tmp_path):
    cfg = Config.from_yaml(ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp"), "rnn"])).with_overrides(
        ["train.device=cpu"])
    mlp, rnn = member_configs(cfg)
    for m in (mlp, rnn):
        assert (m.data.val_fraction, m.data.split_seed, m.train.device) == (0.2, 5, "cpu")
    assert mlp.model.embedding_dim == 16  # otherwise the member's own config
    assert rnn.train == Config.default("rnn").train.model_copy(update={"device": "cpu"})


def test_seeds_train_each_member_config_that_many_times(tmp_path):
    cfg = Config.from_yaml(ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp"), "rnn"], seeds=3, weights=[1, 2]))
    configs = member_configs(cfg)
    assert [(c.model.name, c.train.seed) for c in configs] == [
        ("mlp", 42), ("mlp", 43), ("mlp", 44), ("rnn", 42), ("rnn", 43), ("rnn", 44)]
    assert all(c.data == cfg.data for c in configs)
    assert cfg.model.member_weights() == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="seeds"):
        Config.from_dict({"model": {"name": "ensemble", "members": ["mlp", "rnn"], "seeds": 0}})


def test_a_seeded_ensemble_is_every_training_voting_with_its_members_weight(tmp_path, tiny_train_file, tiny_test_file):
    cfg = ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp"), member_yaml(tmp_path, "rnn")], seeds=2,
                        weights=[1.0, 3.0])
    ens = titlecat.train(tiny_train_file, tiny_test_file, config=cfg, output=tmp_path / "ens", tracking=False)
    assert [(m.config.model.name, m.config.train.seed) for m in ens.members] == [
        ("mlp", 42), ("mlp", 43), ("rnn", 42), ("rnn", 43)]
    assert ens.weights == [1.0, 1.0, 3.0, 3.0]
    assert [m.seed for m in ens.info.members] == [42, 43, 42, 43]
    corpus = ens._validation_rows(tiny_train_file, None, None)[0]
    logits = [m.logits(corpus) for m in ens.members]
    assert not np.allclose(logits[0], logits[1])  # another seed, another network
    log_p = [torch.log_softmax(torch.from_numpy(x).float(), 1).numpy() for x in logits]
    expected = (log_p[0] + log_p[1] + 3 * log_p[2] + 3 * log_p[3]) / 8
    np.testing.assert_allclose(ens.logits(corpus), expected, rtol=1e-5, atol=1e-5)
    loaded = titlecat.load(tmp_path / "ens")
    assert json.loads((tmp_path / "ens" / "bundle.json").read_text())["members"] == [
        "members/0-mlp", "members/1-mlp", "members/2-rnn", "members/3-rnn"]
    assert loaded.weights == ens.weights and loaded.config.model.seeds == 2
    np.testing.assert_allclose(loaded.logits(corpus), ens.logits(corpus), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"2 members for a config of 4 \(2 member configs x 2 seeds\)"):
        Ensemble(ens.members[:2], config=ens.config)


@pytest.fixture
def trained_ensemble(tmp_path, mlflow_db, tiny_train_file, tiny_test_file):
    cfg = ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp"), member_yaml(tmp_path, "rnn")])
    ens = titlecat.train(tiny_train_file, tiny_test_file, config=cfg, output=tmp_path / "ens", experiment="e")
    return ens, tmp_path / "ens", tiny_train_file, tiny_test_file


def test_training_an_ensemble_logs_it_and_its_members_to_mlflow(trained_ensemble):
    from mlflow.tracking import MlflowClient

    ens, out, train, test = trained_ensemble
    client = MlflowClient()
    parent = client.get_run(ens.info.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["model"] == "ensemble"
    m = parent.data.metrics
    assert m["best_val_balanced_accuracy"] == pytest.approx(ens.validate(train)["balanced_accuracy"])
    assert m["test_balanced_accuracy"] == pytest.approx(ens.evaluate(test)["balanced_accuracy"])
    assert m["train_seconds"] == pytest.approx(sum(x.train_seconds for x in ens.info.members))
    assert {"member0_mlp_val_balanced_accuracy", "member1_rnn_val_balanced_accuracy"} <= set(m)
    assert parent.data.params["model.members"].count(".yaml") == 2 and "text.ngram_max" not in parent.data.params
    assert parent.data.params["members.refit"] == "True"  # the members' own setting (the shipped configs refit)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "members.md", "category_report.csv", "test_predictions.csv"} <= artifacts
    exp = client.get_experiment_by_name("e")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["model"] for c in children) == ["mlp", "rnn"]
    for child in children:  # each member: a whole training run of its own, on the ensemble's split
        assert child.info.status == "FINISHED"
        assert child.data.params["data.split_seed"] == "5" and child.data.params["data.val_fraction"] == "0.2"
        assert "test_balanced_accuracy" in child.data.metrics
        assert "model" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert sorted(x.mlflow_run_id for x in ens.info.members) == sorted(c.info.run_id for c in children)


def test_the_ensemble_bundle_round_trips(trained_ensemble, tmp_path):
    ens, out, _, test = trained_ensemble
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["format"] == "titlecat-ensemble" and meta["members"] == ["members/0-mlp", "members/1-rnn"]
    loaded = titlecat.load(out)
    assert isinstance(loaded, Ensemble) and loaded.weights == ens.weights
    np.testing.assert_allclose(loaded.predict_proba(TITLES), ens.predict_proba(TITLES), rtol=1e-5, atol=1e-7)
    assert loaded.evaluate(test)["balanced_accuracy"] == pytest.approx(ens.info.test_balanced_accuracy)
    assert loaded.info.test_balanced_accuracy == pytest.approx(ens.info.test_balanced_accuracy)


def test_an_interrupted_ensemble_cannot_be_resumed(trained_ensemble):
    """Its members keep no checkpoint: --resume says there is none, rather than retraining anything."""
    from titlecat.checkpoint import CheckpointError

    _, out, train, _ = trained_ensemble
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        titlecat.train(train, output=out, resume=True, tracking=False)


def test_a_damaged_ensemble_bundle_is_reported(trained_ensemble):
    _, out, _, _ = trained_ensemble
    (out / "config.yaml").write_text((out / "config.yaml").read_text() + "\n# edited\n")
    with pytest.raises(BundleError, match="config.yaml: checksum mismatch"):
        titlecat.load(out)


def test_a_missing_member_is_reported(trained_ensemble):
    import shutil

    _, out, _, _ = trained_ensemble
    shutil.rmtree(out / "members" / "1-rnn")
    with pytest.raises(BundleError, match="1-rnn: member bundle missing"):
        titlecat.load(out)


def test_cli_trains_evaluates_and_predicts_with_an_ensemble(tmp_path, tiny_train_file, tiny_test_file, capsys):
    from titlecat.cli import main

    cfg = ensemble_yaml(tmp_path, [member_yaml(tmp_path, "mlp"), member_yaml(tmp_path, "rnn")])
    assert main(["train", "--config", str(cfg), "--train", str(tiny_train_file), "--test", str(tiny_test_file),
                 "--output", str(tmp_path / "ens"), "--no-tracking", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "ensemble of 2: validation balanced accuracy" in out and "test balanced accuracy" in out
    assert out.count("member ") == 2 and "ensemble member 2/2: rnn" in err
    assert titlecat.load(tmp_path / "ens").members[1].config.train.device == "cpu"
    assert main(["evaluate", "--model", str(tmp_path / "ens"), "--data", str(tiny_test_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
    assert main(["predict", "--model", str(tmp_path / "ens"), "--top-k", "2", "Zapatillas Nike Air Max 90"]) == 0
    assert capsys.readouterr().out.startswith("SNEAKERS ")


def test_an_ensemble_writes_a_submission(pair, tmp_path, write_csv):
    members, _, _ = pair
    ens = Ensemble(members)
    src = write_csv(tmp_path / "test.csv", ["id", "title", "language"],
                    [[i, t, "spanish"] for i, t in enumerate(TITLES)])
    ens.predict_file(src, tmp_path / "sub.csv")
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert rows[0] == "id,category"
    assert [r.split(",")[1] for r in rows[1:]] == [lab[0] for lab in ens.predict(TITLES)[0]]


def test_the_report_lists_the_ensemble_and_not_its_members_as_runs(trained_ensemble, tmp_path):
    from titlecat.report import write_report

    files = write_report(tmp_path / "report.md", experiment="e")
    text = files.markdown.read_text()
    assert files.runs == 1  # the members are nested runs of the ensemble, as a study's trials are
    runs = text.split("## Runs", 1)[1].split("\n## ", 1)[0]
    assert "| ensemble |" in runs and "members=" in runs


def test_an_ensemble_bundle_never_points_outside_itself(trained_ensemble, tmp_path):
    import shutil

    _, out, _, _ = trained_ensemble
    shutil.copytree(out / "members" / "1-rnn", tmp_path / "elsewhere")
    meta = json.loads((out / "bundle.json").read_text())
    meta["members"][1] = "../elsewhere"
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="'../elsewhere' lies outside the bundle"):
        titlecat.load(out)


def test_cli_combines_trained_bundles(pair, tmp_path, capsys):
    from titlecat.cli import main

    members, train, test = pair
    for i, m in enumerate(members):
        m.save(tmp_path / f"m{i}")
    argv = ["ensemble", "--models", str(tmp_path / "m0"), str(tmp_path / "m1"), "--weights", "1", "3",
            "--output", str(tmp_path / "ens"), "--train", str(train)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = Ensemble(members, [1, 3]).validate(train)["balanced_accuracy"]
    assert f"ensemble of 2: validation balanced accuracy {expected:.4f}" in out and out.count("member ") == 2
    ens = titlecat.load(tmp_path / "ens")
    assert ens.weights == [1.0, 3.0]
    np.testing.assert_allclose(ens.predict_proba(TITLES), Ensemble(members, [1, 3]).predict_proba(TITLES),
                               rtol=1e-5, atol=1e-7)
    # bad calls: one line, exit 2, nothing written
    assert main(["ensemble", "--models", str(tmp_path / "m0"), "--output", str(tmp_path / "one")]) == 2
    assert "at least 2 members" in capsys.readouterr().err and not (tmp_path / "one").exists()
    assert main(["ensemble", "--models", str(tmp_path / "m0"), str(tmp_path / "nope"), "--output",
                 str(tmp_path / "two")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "two").exists()


def test_an_ensemble_bundle_json_without_a_files_mapping_is_damaged(trained_ensemble):
    _, out, _, _ = trained_ensemble
    meta = json.loads((out / "bundle.json").read_text())
    meta["files"] = ["config.yaml"]
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="damaged .expected a JSON object with a 'files' mapping"):
        titlecat.load(out)
