"""Resuming a killed training: ``titlecat train`` is killed with SIGKILL in the middle of an
epoch, ``titlecat train --resume DIR`` continues it in the same MLflow run, and the result is
the one of a training never interrupted: same validation scores epoch by epoch, same test
score, same weights.

The trainings run as real processes (a SIGKILL cannot be faked in-process).  A checkpoint is
written after every step (``train.checkpoint_minutes`` tiny); the process is frozen with
SIGSTOP as soon as a mid-epoch checkpoint exists, and killed only if the checkpoint it
froze on is mid-epoch, so the kill always lands inside an epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from titlecat.cli import main

from conftest import _write_jsonl, tiny_rows, tiny_test_rows

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

EPOCHS = 5
SETTINGS = ["--set", "text.buckets=2000", "--set", "text.bigram_buckets=500", "--set", "model.embedding_dim=16", "--set", "model.hidden_sizes=[32]",
            "--set", f"train.epochs={EPOCHS}", "--set", "train.batch_size=4", "--set", "train.patience=10",
            "--set", "train.warmup_steps=5", "--set", "train.checkpoint_minutes=1e-9"]
VAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy")


def _titlecat(args: list[str], db: Path, cwd: Path) -> subprocess.Popen:
    # one thread: tiny tensors gain nothing from more, and the test machine's cores are shared
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "titlecat.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _state(out: Path) -> dict | None:
    try:
        return json.loads((out / "checkpoint" / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kill_mid_epoch(proc: subprocess.Popen, out: Path, timeout: float = 60.0) -> dict:
    """SIGKILL ``proc`` while its last checkpoint is in the middle of an epoch after the first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the training ended before a mid-epoch checkpoint was seen:\n" + proc.stdout.read())
        state = _state(out)
        if state and state["progress"]["epoch"] >= 1 and state["progress"]["batch"] > 0:
            proc.send_signal(signal.SIGSTOP)  # frozen: the checkpoint cannot move on while we look at it
            state = _state(out)
            if state["progress"]["batch"] > 0:
                proc.kill()
                proc.wait(timeout=30)
                return state
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no mid-epoch checkpoint within {timeout:.0f} s")


def _run(db: Path) -> tuple:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    history = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, k),
                                                      key=lambda m: m.step)] for k in VAL_METRICS}
    return run, history


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    test = _write_jsonl(tmp_path / "test.jsonl", tiny_test_rows())
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    # files named as a user would, relative to where the training starts; it resumes from elsewhere
    common = ["train", "--model", "mlp", "--train", train.name, "--test", test.name, "--experiment", "resume",
              *SETTINGS]

    # the uninterrupted reference and the training to kill run side by side
    reference = _titlecat([*common, "--output", ref_out.name], tmp_path / "reference.db", tmp_path)
    victim = _titlecat([*common, "--output", out.name], tmp_path / "mlflow-resume.db", tmp_path)
    killed_at = _kill_mid_epoch(victim, out)
    ref_log, _ = reference.communicate(timeout=120)
    assert reference.returncode == 0, ref_log
    assert not (ref_out / "checkpoint").exists(), "a finished training removes its checkpoint"

    # a new training into that directory, or a resume that changes the config, is refused
    capsys.readouterr()
    assert main(["train", "--model", "mlp", "--train", str(train), "--output", str(out), "--no-tracking"]) == 2
    assert f"holds the checkpoint of an interrupted training; continue it with `titlecat train --resume {out}`" \
        in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--set", "train.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("titlecat: error: cannot resume: train.lr=0.1 (the interrupted run has ") and "Traceback" not in err

    resumed = _titlecat(["train", "--resume", str(out)], tmp_path / "mlflow-resume.db", Path.cwd())
    log, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, log
    p = killed_at["progress"]
    assert f"resuming at epoch {p['epoch'] + 1}, batch {p['batch']}" in log
    assert "Traceback" not in log and "warning" not in log  # MLflow took the resumed run's logs without a hitch
    assert not (out / "checkpoint").exists()

    # same weights
    ref_w, w = load_file(str(ref_out / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert ref_w.keys() == w.keys()
    for k in ref_w:
        assert torch.equal(ref_w[k], w[k]), k
    # same scores, epoch by epoch, in one MLflow run that logged each epoch exactly once
    ref_run, ref_history = _run(tmp_path / "reference.db")
    run, history = _run(tmp_path / "mlflow-resume.db")
    assert run.info.status == "FINISHED" and run.info.run_id == killed_at["run_id"]
    assert run.data.params["data.train_file"] == "train.jsonl"  # as the training was started
    for k in VAL_METRICS:
        assert [s for s, _ in history[k]] == list(range(1, EPOCHS + 1)), k
        assert history[k] == ref_history[k], k
    assert run.data.metrics["test_balanced_accuracy"] == ref_run.data.metrics["test_balanced_accuracy"]
    assert json.loads((out / "bundle.json").read_text())["test_balanced_accuracy"] == \
        json.loads((ref_out / "bundle.json").read_text())["test_balanced_accuracy"]


def test_ctrl_c_says_how_to_resume_and_resume_finishes(tmp_path, monkeypatch, capsys):
    from titlecat.checkpoint import Checkpoints

    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    out = tmp_path / "run"
    save, saves = Checkpoints.save, []

    def save_then_ctrl_c(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoints, "save", save_then_ctrl_c)
    assert main(["train", "--model", "mlp", "--train", str(train), "--output", str(out), "--no-tracking",
                 *SETTINGS]) == 130
    assert capsys.readouterr().err.endswith(f"titlecat: interrupted; continue with: titlecat train --resume {out}\n")

    assert main(["train", "--resume", str(out)]) == 0
    cap = capsys.readouterr()
    assert "resuming at epoch 1, batch 3 (step 3)" in cap.out and f"model bundle: {out.resolve()}" in cap.out
    assert (out / "bundle.json").is_file() and not (out / "checkpoint").exists()


def test_a_long_epoch_on_generated_titles_killed_and_resumed_is_exact(tmp_path, real_data):
    """At scale an epoch spans many checkpoints and validations (``train.eval_every_steps``): a
    training on generated titles (benchmarks/corpus.py), killed in the middle of its second epoch
    after several mid-epoch validations, resumes to the uninterrupted result -- same weights, same
    validations, same chosen step."""
    from test_corpus_generator import generate

    generate(tmp_path / "c", "--n", "12000", "--seed", "3")
    files = ["--train", str(tmp_path / "c" / "spanish.train.jsonl.gz"),
             "--validation", str(tmp_path / "c" / "spanish.validation.jsonl.gz")]
    settings = ["--set", "text.buckets=5000", "--set", "text.bigram_buckets=2000", "--set", "model.embedding_dim=16",
                "--set", "train.epochs=2", "--set", "train.batch_size=256", "--set", "train.eval_every_steps=10",
                "--set", "train.patience=100", "--set", "train.checkpoint_minutes=1e-9", "--set", "train.refit=false"]
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    common = ["train", "--model", "mlp", *files, *settings, "--no-tracking"]
    reference = _titlecat([*common, "--output", str(ref_out), "--info-json", str(tmp_path / "ref.json")],
                          tmp_path / "unused.db", tmp_path)
    victim = _titlecat([*common, "--output", str(out)], tmp_path / "unused.db", tmp_path)
    killed_at = _kill_mid_epoch(victim, out, timeout=240)
    ref_log, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_log
    p = killed_at["progress"]
    assert p["epoch"] == 1 and p["batch"] > 0 and p["step"] >= 10  # in the second epoch (47 steps each)

    resumed = _titlecat(["train", "--resume", str(out), "--info-json", str(tmp_path / "resumed.json")],
                        tmp_path / "unused.db", tmp_path)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert f"resuming at epoch 2, batch {p['batch']}" in log
    ref_w, w = load_file(str(ref_out / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in ref_w:
        assert torch.equal(ref_w[k], w[k]), k
    ref, res = json.loads((tmp_path / "ref.json").read_text()), json.loads((tmp_path / "resumed.json").read_text())
    assert ref["history"] and [{k: h[k] for k in VAL_METRICS} for h in res["history"]] == \
        [{k: h[k] for k in VAL_METRICS} for h in ref["history"]]
    assert (res["best_epoch"], res["best_val_balanced_accuracy"]) == \
        (ref["best_epoch"], ref["best_val_balanced_accuracy"])
    # the validations between epoch ends were printed by both, with the same scores
    steps = [ln.split("val bal.acc")[1] for ln in ref_log.splitlines() if ln.startswith("step ")]
    assert len(steps) >= 8


def test_sigterm_stops_a_training_cleanly_and_it_resumes(tmp_path):
    """``kill`` (SIGTERM, what schedulers and containers send) is handled like Ctrl-C: exit 143,
    a message saying how to continue, the last checkpoint kept whole and nothing else left in
    ``checkpoint/`` -- then ``--resume`` finishes the training."""
    train = _write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    out = tmp_path / "out"
    proc = _titlecat(["train", "--model", "mlp", "--train", str(train), "--output", str(out), "--experiment",
                      "resume", *SETTINGS, "--set", "train.epochs=50"], tmp_path / "mlflow.db", tmp_path)
    deadline = time.monotonic() + 60
    while not ((s := _state(out)) and s["progress"]["epoch"] >= 1) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.01)
    proc.terminate()
    log, _ = proc.communicate(timeout=60)

    assert proc.returncode == 143, log
    assert f"titlecat: terminated; continue with: titlecat train --resume {out}" in log and "Traceback" not in log
    state = _state(out)
    left = {p.name for p in (out / "checkpoint").iterdir()}
    assert left - {"logged.json"} == {"state.json", state["tensors"]}, left  # no partial tensors, no .tmp
    resumed = _titlecat(["train", "--resume", str(out), "--set", "train.epochs=50"], tmp_path / "mlflow.db", tmp_path)
    log, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, log
    assert (out / "bundle.json").is_file() and not (out / "checkpoint").exists()


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    import titlecat.checkpoint as ckpt_mod
    from titlecat.checkpoint import Checkpoints

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    ckpt = Checkpoints(tmp_path / "checkpoint")
    ckpt.save(model, [opt], {"epoch": 0, "batch": 1}, None)
    committed = _state(tmp_path)["tensors"]
    real_save = ckpt_mod.save_file

    def interrupted(tensors, path):  # the file is half written when Ctrl-C or SIGTERM arrives
        real_save(tensors, path)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(model, [opt], {"epoch": 0, "batch": 2}, None)

    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == sorted(["state.json", committed])
    assert _state(tmp_path)["progress"]["batch"] == 1
