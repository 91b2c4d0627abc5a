"""End to end on a slice of the real data: CLI train -> MLflow holds everything -> evaluate reproduces it."""

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from titlecat.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meli2019-es"
EPOCH_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
                 "epoch_seconds", "elapsed_seconds", "iterations_per_second", "samples_per_second"]


def _slice(src: Path, dst: Path, categories: set[str]) -> int:
    n = 0
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as out:
        for line in f:
            if json.loads(line)["category"] in categories:
                out.write(line)
                n += 1
    return n


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory):
    if not (DATA / "spanish.train.jsonl.gz").is_file():
        pytest.skip("real data not found beside the repository")
    with gzip.open(DATA / "spanish.train.jsonl.gz", "rt", encoding="utf-8") as f:
        counts = Counter(json.loads(line)["category"] for line in f)
    cats = {c for c, _ in sorted(counts.items())[:40]}  # 40 categories, alphabetically first
    d = tmp_path_factory.mktemp("slice")
    n_train = _slice(DATA / "spanish.train.jsonl.gz", d / "train.jsonl.gz", cats)
    n_test = _slice(DATA / "spanish.test.jsonl.gz", d / "test.jsonl.gz", cats)
    assert n_train > 1000 and n_test == 40 * 15
    return d


@pytest.mark.slow
def test_cli_train_logs_everything_and_evaluate_reproduces_test_score(real_slice, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TITLECAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bundle"
    rc = main(["train", "--model", "mlp", "--train", str(real_slice / "train.jsonl.gz"),
               "--test", str(real_slice / "test.jsonl.gz"), "--output", str(out), "--experiment", "e2e",
               "--set", "train.epochs=3", "--set", "train.batch_size=64", "--set", "text.buckets=20000",
               "--set", "model.embedding_dim=32", "--set", "train.checkpoint_minutes=0"])  # checkpoints too
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test balanced accuracy" in printed

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    # every per-epoch metric, once per epoch
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    for name in ("test_balanced_accuracy", "test_accuracy"):
        assert name in run.data.metrics
    assert run.data.metrics["test_balanced_accuracy"] > 0.5  # 40 categories: far above chance after 3 epochs
    # params: every hyperparameter and data fact
    params = run.data.params
    for key in ("model.name", "model.dropout", "model.hidden_sizes", "train.lr", "train.seed", "text.buckets",
                "data.val_fraction", "data.split_seed", "data.n_train", "data.n_val", "data.train_file",
                "data.test_file", "data.n_classes"):
        assert key in params, key
    assert params["text.buckets"] == "20000" and params["data.n_classes"] == "40"
    # artifacts: loss curve, config, per-category report, the MLflow model carrying the model bundle
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "config.yaml", "category_report.csv", "model"} <= names
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    bundle_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model/artifacts/bundle")}
    assert {"bundle.json", "model.safetensors", "config.yaml", "featurizer.json", "labels.json"} <= bundle_files
    assert "checkpoint" not in bundle_files and not (out / "checkpoint").exists()  # removed before logging
    report = Path(client.download_artifacts(run.info.run_id, "category_report.csv", str(tmp_path)))
    lines = report.read_text().splitlines()
    assert lines[0].startswith("category,precision,recall,f1,support") and len(lines) == 41

    # evaluate --json on the bundle reproduces the logged test score
    rc = main(["evaluate", "--model", str(out), "--data", str(real_slice / "test.jsonl.gz"), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 600
    assert result["balanced_accuracy"] == pytest.approx(run.data.metrics["test_balanced_accuracy"], abs=1e-9)
    assert result["accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-9)

    # predict from the bundle alone
    rc = main(["predict", "--model", str(out), "--top-k", "2", "Zapatillas Nike Air Max 90 Talle 42"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert len(line.split("\t")) == 2
