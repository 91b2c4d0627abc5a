"""titlecat.models.tfidf: the TF-IDF + linear SVM baseline runs in the same harness as the neural models."""

import json

import numpy as np
import pytest

import titlecat
from titlecat.cli import main
from titlecat.tokenizer import tokenize_titles
from titlecat.models.tfidf import corpus_texts

SMALL = {"model.min_df": 1}


@pytest.fixture
def trained(tiny_train_file, tiny_test_file, tmp_path):  # a TF-IDF model: this file's own, not conftest's MLP
    out = tmp_path / "tfidf"
    clf = titlecat.train(tiny_train_file, tiny_test_file, model="tfidf", overrides=SMALL, output=out,
                         experiment="linear")
    return clf, out


def test_corpus_texts_are_the_normalised_tokens():
    corpus = tokenize_titles(["Moto 110cc Cámara", "", "Casco  LS2"], titlecat.Config.default("tfidf").text)
    assert corpus_texts(corpus) == ["moto 110 cc camara", "", "casco ls2"]


def test_tfidf_trains_logs_and_round_trips(trained, tiny_test_file):
    from mlflow.tracking import MlflowClient

    clf, out = trained
    assert clf.info.test_balanced_accuracy >= 0.75  # four easy categories
    assert clf.info.best_epoch == 1
    # logged like a neural run: same metric names, the bundle as an artifact
    client = MlflowClient()
    run = client.get_run(clf.info.mlflow_run_id)
    for name in ("val_balanced_accuracy", "train_loss", "samples_per_second", "test_balanced_accuracy"):
        assert name in run.data.metrics, name
    assert run.data.params["model.name"] == "tfidf"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "loss_curve.png", "config.yaml"}
    # the bundle: no pickle, checksummed linear.json, identical predictions after load
    meta = json.loads((out / "bundle.json").read_text())
    assert "linear.json" in meta["files"]
    loaded = titlecat.load(out)
    titles = ["Zapatillas Nike Air Max 90", "Casco moto integral", "🙂", ""]
    np.testing.assert_allclose(loaded.predict_proba(titles), clf.predict_proba(titles), rtol=1e-6)
    assert loaded.evaluate(tiny_test_file)["balanced_accuracy"] == pytest.approx(clf.info.test_balanced_accuracy)


def test_tfidf_cli_evaluate_and_predict(trained, tiny_test_file, capsys):
    _, out = trained
    assert main(["evaluate", "--model", str(out), "--data", str(tiny_test_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"balanced_accuracy", "accuracy", "n"} <= set(result)
    assert main(["predict", "--model", str(out), "--top-k", "2", "Zapatillas Adidas"]) == 0
    assert len(capsys.readouterr().out.strip().split("\t")) == 2


def test_pruning_keeps_predictions(tiny_train_file, tmp_path):
    full = titlecat.train(tiny_train_file, model="tfidf", overrides={**SMALL, "model.prune_below": 0.0},
                          tracking=False)
    pruned = titlecat.train(tiny_train_file, model="tfidf", overrides={**SMALL, "model.prune_below": 0.01},
                            tracking=False)
    titles = ["Zapatillas Nike", "Casco moto", "Celular Samsung", "Camara Canon", "cosa rara"]
    assert full.predict(titles)[0] == pruned.predict(titles)[0]
    assert pruned.model.weights_.nnz < full.model.weights_.nnz
