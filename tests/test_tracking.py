"""Tracking that survives: a real ``mlflow server`` that dies in the middle of a training and
comes back, a server that never comes back, one that is not there at the start.  (Two
trainings sharing one SQLite ``mlflow.db``: ``test_tracking_sqlite.py``.)

The server runs as its own process group (SQLite backend, local artifact root, a free port
on 127.0.0.1, one worker); every wait is bounded and the group is killed in a finalizer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from titlecat.cli import main
from titlecat.tracking import MlflowLogger

from conftest import _write_jsonl, tiny_rows, tiny_test_rows, wait_until_answering

MLFLOW = Path(sys.executable).parent / "mlflow"
EPOCHS = 4
SMALL = ["--model", "mlp", "--set", "text.buckets=2000", "--set", "text.bigram_buckets=500",
         "--set", "model.embedding_dim=16", "--set", "model.hidden_sizes=[32]", "--set", f"train.epochs={EPOCHS}",
         "--set", "train.patience=10", "--set", "train.batch_size=8"]
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "lr",
                 "epoch_seconds", "elapsed_seconds", "iterations_per_second", "samples_per_second")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on a SQLite file; ``kill()`` and ``start()`` again on the same port and file."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner process: starts faster
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)

    def wait_healthy(self, timeout: float = 120.0) -> None:
        wait_until_answering(f"{self.uri}/health", self.proc, self.root / "server.log", "mlflow server", timeout,
                             on_timeout=self.kill)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its uvicorn worker
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    if not MLFLOW.exists():
        pytest.skip(f"{MLFLOW} not found")
    srv = MlflowServer(tmp_path)
    srv.start()
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.kill()


def test_server_dies_after_epoch_1_and_comes_back(server, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    test = _write_jsonl(tmp_path / "test.jsonl", tiny_test_rows())
    out = tmp_path / "bundle"

    # the server is killed once epoch 1 is logged, and started again (same port, same file) after epoch 3:
    # it answers again while the training ends or while close() retries
    log_metrics, restart = MlflowLogger.log_metrics, []

    def log_metrics_then_disrupt(self, metrics, step=None):
        log_metrics(self, metrics, step)
        if restart:  # once: a refit (train.refit) logs its own epochs 1, 2, ... afterwards
            return
        if step == 1:
            server.kill()
        elif step == 3:
            restart.append(threading.Thread(target=server.start))
            restart[0].start()

    monkeypatch.setattr(MlflowLogger, "log_metrics", log_metrics_then_disrupt)

    t0 = time.monotonic()
    rc = main(["train", "--train", str(train), "--test", str(test), "--output", str(out), "--experiment", "down",
               *SMALL])
    seconds = time.monotonic() - t0

    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Traceback" not in cap.out + cap.err
    assert f"MLflow at {server.uri} failed (connection refused); training goes on" in cap.err
    assert f"MLflow at {server.uri} answers again" in cap.err
    assert "NOT logged" not in cap.err
    assert (out / "bundle.json").is_file()
    assert seconds < 90, "a dead server must cost seconds, not minutes"

    # nothing is missing: every epoch's metrics, the test score, params, artifacts; the run is finished
    restart[0].join(timeout=30)
    server.wait_healthy()
    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("down").experiment_id])
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(1, EPOCHS + 1)), key
    assert {"test_balanced_accuracy", "best_epoch"} <= set(run.data.metrics)
    assert run.data.params["model.name"] == "mlp" and run.data.tags["model"] == "mlp"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "loss_curve.png", "config.yaml", "category_report.csv"} <= artifacts
    # the MLflow model, carrying the bundle (sent once the server was back)
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model/artifacts/bundle")} >= {
        "model/artifacts/bundle/bundle.json", "model/artifacts/bundle/model.safetensors"}


class FlakyClient:
    """Stands in for ``MlflowClient``: records what it is sent, and fails while ``down``."""

    down = False

    def __init__(self, tracking_uri=None):
        self.batches, self.artifacts = [], []

    def _call(self):
        if FlakyClient.down:
            raise ConnectionError("Connection refused")

    def get_experiment_by_name(self, name):
        self._call()

    def create_experiment(self, name):
        self._call()
        return "1"

    def create_run(self, experiment_id, run_name=None, tags=None):
        self._call()
        return SimpleNamespace(info=SimpleNamespace(run_id="run-1"))

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._call()
        self.batches.append((list(metrics), list(params), list(tags)))

    def log_artifact(self, run_id, path, artifact_path=None):
        self._call()
        self.artifacts.append((Path(path).name, Path(path).read_text()))

    def log_artifacts(self, run_id, path, artifact_path=None):
        self._call()
        self.artifacts.append((Path(path).name, sorted(p.name for p in Path(path).iterdir())))

    def set_terminated(self, run_id, status=None):
        self._call()


def test_a_server_that_never_comes_back_is_reported_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mlflow.tracking.MlflowClient", FlakyClient)
    monkeypatch.setattr(FlakyClient, "down", False)
    logger = MlflowLogger("gone", uri="http://tracking.example:5000", backoff=0.0)
    logger.log_params({"model.name": "mlp"})
    logger.log_metrics({"val_loss": 1.0}, step=1)
    FlakyClient.down = True  # the server goes away for good
    report = tmp_path / "category_report.csv"
    report.write_text("category,recall\n")
    for epoch in (2, 3, 4):
        logger.log_metrics({"val_loss": 1.0 / epoch, "val_balanced_accuracy": 0.5}, step=epoch)
    logger.log_params({"data.test_languages": "spanish:12"})
    logger.log_artifact(report)
    report.unlink()  # the caller's temporary file is gone; the logger kept a copy to retry with
    logger.close(wait=0.2)

    err = capsys.readouterr().err
    assert "MLflow at http://tracking.example:5000 failed (connection refused)" in err
    assert "training goes on" in err
    assert "MLflow run run-1 at http://tracking.example:5000 is incomplete" in err
    assert "it has 1 params, 1 metric values" in err  # what was logged
    assert "NOT logged" in err  # and what was not, by name
    assert "val_loss at steps 2-4" in err and "val_balanced_accuracy at steps 2-4" in err
    assert "data.test_languages" in err and "1 artifacts (category_report.csv)" in err
    assert "model bundle on local disk is complete" in err


def test_buffered_logs_are_sent_when_the_server_answers_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mlflow.tracking.MlflowClient", FlakyClient)
    monkeypatch.setattr(FlakyClient, "down", False)
    logger = MlflowLogger("back", uri="http://tracking.example:5000", backoff=0.0)
    FlakyClient.down = True
    report = tmp_path / "report.csv"
    report.write_text("x\n")
    for epoch in (1, 2):
        logger.log_metrics({"val_loss": 1.0 / epoch}, step=epoch)
    logger.log_artifact(report)
    report.unlink()
    FlakyClient.down = False
    logger.close()

    err = capsys.readouterr().err
    assert "answers again; sent what was kept meanwhile (0 params, 2 metric values, 0 tags, 1 artifacts)" in err
    assert "NOT logged" not in err
    sent = [(m.key, m.step) for metrics, _, _ in logger.client.batches for m in metrics]
    assert sent == [("val_loss", 1), ("val_loss", 2)]
    assert logger.client.artifacts == [("report.csv", "x\n")]  # the copy kept for the retry


def test_an_unreachable_server_at_start_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    t0 = time.monotonic()
    rc = main(["train", "--train", str(train), "--output", str(tmp_path / "out"), *SMALL])
    assert rc == 2
    assert time.monotonic() - t0 < 30  # MLflow's own retries alone would take minutes
    err = capsys.readouterr().err
    assert err.startswith("titlecat: error: could not create an MLflow run in 'titlecat' at http://127.0.0.1:")
    assert "(connection refused); start the tracking server or fix MLFLOW_TRACKING_URI, or train with --no-tracking" in err
    assert "Traceback" not in err
