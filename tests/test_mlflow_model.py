"""The MLflow model of every tracked training, against a real ``mlflow server`` on 127.0.0.1: a
pyfunc "model from code" (no pickle) carrying the bundle, with a signature and an input example;
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` answer with categories (and probabilities
on request); ``titlecat train --register`` puts it in the Model Registry and ``titlecat serve
--model models:/NAME@champion`` serves it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from titlecat.cli import main

from conftest import FAST, tiny_test_rows, wait_until_answering
from test_serve import cli_predictions, serving
from test_tracking import MLFLOW, SMALL, MlflowServer, _free_port

TITLES = [r["title"] for r in tiny_test_rows()]


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory):
    """A real ``mlflow server``, and a tiny MLP trained with ``--register tc --alias champion``."""
    if not MLFLOW.exists():
        pytest.skip(f"{MLFLOW} not found")
    d = tmp_path_factory.mktemp("registry")
    srv = MlflowServer(d)
    srv.start()
    try:
        srv.wait_healthy()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", srv.uri)
            mp.setenv("TITLECAT_CACHE", str(d / "cache"))
            assert main(["train", "--train", str(trained.train), "--test", str(trained.test), "--output",
                         str(d / "bundle"), "--experiment", "serving", *SMALL, "--register", "tc",
                         "--alias", "champion"]) == 0
        from mlflow.tracking import MlflowClient

        client = MlflowClient(srv.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("serving").experiment_id])
        yield SimpleNamespace(server=srv, client=client, run_id=run.info.run_id, bundle=d / "bundle", dir=d)
    finally:
        srv.kill()


def test_the_run_logs_a_pyfunc_model_from_code_without_pickle(registered):
    client, run_id = registered.client, registered.run_id
    local = Path(client.download_artifacts(run_id, "model", str(registered.dir / "download")))
    files = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "titlecat_model.py", "input_example.json", "requirements.txt",
            "artifacts/bundle/bundle.json", "artifacts/bundle/model.safetensors"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    import yaml

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # a model from code
    assert [c["name"] for c in json.loads(mlmodel["signature"]["inputs"])] == ["title", "language"]
    assert {p["name"] for p in json.loads(mlmodel["signature"]["params"])} == {"k", "probabilities"}
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == ["title"] and len(example["data"]) == 2
    # the bundle inside is the bundle on disk, file for file
    bundle_json = json.loads((local / "artifacts/bundle/bundle.json").read_text())
    assert bundle_json["files"] == json.loads((registered.bundle / "bundle.json").read_text())["files"]


def test_pyfunc_load_model_predicts_categories_and_probabilities(registered, monkeypatch, capsys):
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.server.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{registered.run_id}/model")
    expected = cli_predictions(registered.bundle, TITLES, 3, capsys)
    top = model.predict(pd.DataFrame({"title": TITLES}))
    assert list(top.columns) == ["category"] and top["category"].tolist() == [e["categories"][0] for e in expected]
    full = model.predict(pd.DataFrame({"title": TITLES}), params={"k": 3, "probabilities": True})
    assert list(full.columns) == ["category", "probability", "categories", "probabilities"]
    assert [list(c) for c in full["categories"]] == [e["categories"] for e in expected]
    np.testing.assert_allclose(np.array([list(p) for p in full["probabilities"]]),
                               [e["probabilities"] for e in expected], atol=1e-6)
    # the registered version is the same model
    again = mlflow.pyfunc.load_model("models:/tc@champion").predict(pd.DataFrame({"title": TITLES}))
    assert again["category"].tolist() == top["category"].tolist()


def test_the_registry_holds_the_version_with_its_alias(registered, capsys):
    version = registered.client.get_model_version_by_alias("tc", "champion")
    assert version.version == "1" and version.run_id == registered.run_id
    assert json.loads((registered.bundle / "bundle.json").read_text())["mlflow_run_id"] == registered.run_id


def test_mlflow_models_serve_answers_on_127_0_0_1(registered, tmp_path, capsys):
    port = _free_port()
    log = open(tmp_path / "mlflow-serve.log", "ab")
    proc = subprocess.Popen([str(MLFLOW), "models", "serve", "-m", f"runs:/{registered.run_id}/model",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # mlflow runs ``uvicorn`` by name: the environment's bin/ first, as when it is activated
                            env={**os.environ, "MLFLOW_TRACKING_URI": registered.server.uri,
                                 "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/ping", proc, tmp_path / "mlflow-serve.log",
                             "mlflow models serve", 180)
        body = json.dumps({"dataframe_records": [{"title": t} for t in TITLES],
                           "params": {"k": 2, "probabilities": True}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
        expected = cli_predictions(registered.bundle, TITLES, 2, capsys)
        assert [p["categories"] for p in predictions] == [e["categories"] for e in expected]
        assert [p["category"] for p in predictions] == [e["categories"][0] for e in expected]
        np.testing.assert_allclose([p["probabilities"] for p in predictions], [e["probabilities"] for e in expected],
                                   atol=1e-6)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_titlecat_serve_serves_the_champion_from_the_registry(registered, tmp_path, capsys):
    env = {"MLFLOW_TRACKING_URI": registered.server.uri}
    for srv in serving("models:/tc@champion", tmp_path / "serve.log", env=env):
        answer = srv.predict(TITLES, k=2)
        assert answer["predictions"] == cli_predictions(registered.bundle, TITLES, 2, capsys)
        info = srv.request("GET", "/model")[1]
        assert info["source"] == "models:/tc@champion" and info["mlflow_run_id"] == registered.run_id
    log = srv.output()
    assert "Downloading artifacts" not in log  # no progress bar per file in the server's log
    assert "Finished server process" in log  # stopped by SIGTERM, which deletes the downloaded model


def test_register_without_tracking_or_an_unknown_model_is_one_line_exit_2(trained, registered, tmp_path, capsys,
                                                                          monkeypatch):
    args = ["train", "--train", str(trained.train), "--output", str(tmp_path / "b"), *SMALL]
    assert main([*args, "--no-tracking", "--register", "tc"]) == 2
    assert "--register NAME registers the run's MLflow model: it needs tracking" in capsys.readouterr().err
    assert main([*args, "--alias", "champion"]) == 2
    assert "needs --register NAME" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.server.uri)
    assert main(["serve", "--model", "models:/nope@champion", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "could not get the MLflow model models:/nope@champion" in err and "nope" in err


def test_the_pyfunc_model_passes_each_row_s_language(joint):
    """A model trained with language tokens: the input's optional ``language`` column is used per row."""
    from titlecat.mlflow_model import predict_frame

    clf, _ = joint
    titles = ["Capacete Moto Fechado Preto", "Casco Moto Integral Negro", "Tênis Nike Air"]
    langs = ["portuguese", "spanish", None]
    out = predict_frame(clf, pd.DataFrame({"title": titles, "language": langs}), {"k": 2, "probabilities": True})
    for i, (t, lang) in enumerate(zip(titles, langs)):
        labels, probs = clf.predict([t], k=2, language=lang)
        assert list(out["categories"][i]) == list(labels[0])
        np.testing.assert_allclose(out["probabilities"][i], probs[0], rtol=1e-6)
    assert FAST["text.language_token"]  # (the joint model's settings)
