"""The ``titlecat`` command: a one-epoch smoke run per registered model, one run logged to
MLflow whose bundle then predicts from stdin, and every user mistake is exit code 2 with
one ``titlecat: error:`` line that names the setting or ``file:line`` (never a traceback).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import titlecat
from titlecat import Config
from titlecat.cli import main
from titlecat.models import networks

from conftest import _write_jsonl, tiny_rows, tiny_test_rows

TINY = ["--set", "text.buckets=2000", "--set", "model.embedding_dim=16", "--set", "train.epochs=1"]
NARROW = {"hidden_size": 16, "ff_dim": 32, "hidden_sizes": [32]}  # widths shrunk where a model has them


def _narrow(model: str) -> list[str]:
    """``--set`` for the width settings this model has (keeps the smoke run of each model ~1 s)."""
    defaults = Config.default(model).model
    out = []
    for key, value in NARROW.items():
        current = getattr(defaults, key, None)
        if isinstance(current, int) and current > value or isinstance(current, list) and current:
            out += ["--set", f"model.{key}={json.dumps(value)}"]
    return out


def _train_args(train: Path, test: Path | None, out: Path, *extra: str) -> list[str]:
    args = ["train", "--train", str(train), "--output", str(out), *TINY, *extra]
    return args + (["--test", str(test)] if test is not None else [])


def _assert_clean_error(cap, *names: str) -> None:
    """Exit-2 output: one ``titlecat: error:`` message on stderr that names ``names``; no traceback."""
    assert cap.err.startswith("titlecat: error:"), cap.err
    for name in names:
        assert name in cap.err, f"{name!r} not in {cap.err!r}"
    assert "Traceback" not in cap.out + cap.err


@pytest.fixture
def bundle(trained):
    """A tiny MLP bundle trained through the library, for the evaluate/predict tests: conftest's
    ``trained`` (trained once for the session)."""
    return SimpleNamespace(dir=trained.bundle, train=trained.train, test=trained.test)


# ---- one-epoch smoke run per model ----------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(networks()))
def test_one_epoch_smoke_run(model, tiny_train_file, tiny_test_file, tmp_path, capsys):
    out = tmp_path / f"run-{model}"

    rc = main(_train_args(tiny_train_file, tiny_test_file, out, "--model", model, "--no-tracking", *_narrow(model)))

    assert rc == 0
    cap = capsys.readouterr()
    assert "best epoch 1:" in cap.out
    assert "test balanced accuracy" in cap.out and f"({len(tiny_test_rows())} titles)" in cap.out
    assert f"model bundle: {out.resolve()}" in cap.out
    assert "tracking: MLflow tracking off" in cap.out
    assert "Traceback" not in cap.out + cap.err
    clf = titlecat.load(out)
    assert clf.config.model.name == model and clf.config.train.epochs == 1
    assert clf.config.text.buckets == 2000 and clf.config.model.embedding_dim == 16
    labels, probs = clf.predict("Casco Moto Integral Negro", k=2)
    assert len(labels) == 2 and probs.shape == (2,)
    # titles without a usable word, or far too long, still get a valid answer from every model
    odd = ["", "   \t ", "😀🎉🔥", "Zapatillas Nike Air Max " * 420]
    labels, probs = clf.predict(odd, k=2)
    assert all(len(lab) == 2 and set(lab) <= set(clf.labels.classes_) for lab in labels)
    assert probs.shape == (4, 2) and (probs > 0).all() and (probs <= 1).all()


def test_run_logged_to_mlflow_then_predict_from_stdin(tiny_train_file, tiny_test_file, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "run"

    rc = main(_train_args(tiny_train_file, tiny_test_file, out, "--model", "mlp", "--experiment", "cli-smoke",
                          "--run-name", "smoke"))

    assert rc == 0
    printed = capsys.readouterr().out
    assert "tracking: MLflow run" in printed and "cli-smoke" in printed
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cli-smoke").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert run.data.params["model.name"] == "mlp" and run.data.params["text.buckets"] == "2000"
    assert "test_balanced_accuracy" in run.data.metrics
    assert json.loads((out / "bundle.json").read_text())["mlflow_run_id"] == run.info.run_id

    # the bundle alone predicts titles read one per line from stdin
    titles = ["Casco Moto Integral Negro Talle M", "Celular Samsung Galaxy A20 32gb", "Zapatillas Nike Air"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in titles)))
    rc = main(["predict", "--model", str(out), "--top-k", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(titles)
    classes = set(titlecat.load(out).labels.classes_)
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 2
        for field in fields:
            label, p = field.rsplit(" ", 1)
            assert label in classes and 0.0 < float(p) <= 1.0


def test_predict_json_from_arguments(bundle, capsys):
    rc = main(["predict", "--model", str(bundle.dir), "--json", "--top-k", "3", "Cámara Nikon Coolpix", "😀"])
    assert rc == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["title"] for o in objs] == ["Cámara Nikon Coolpix", "😀"]
    for o in objs:
        assert len(o["categories"]) == 3 and len(o["probabilities"]) == 3
        assert o["probabilities"] == sorted(o["probabilities"], reverse=True)


def test_predict_with_empty_stdin_exits_2(bundle, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["predict", "--model", str(bundle.dir)]) == 2
    _assert_clean_error(capsys.readouterr(), "no titles")


# ---- evaluate ----------------------------------------------------------------------------------


def test_evaluate_json_prints_one_object(bundle, capsys):
    rc = main(["evaluate", "--model", str(bundle.dir), "--data", str(bundle.test), "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    assert {"balanced_accuracy", "accuracy", "n"} <= set(result)
    assert result["n"] == len(tiny_test_rows())
    expected = titlecat.load(bundle.dir).evaluate(bundle.test)
    for key in ("balanced_accuracy", "accuracy", "loss"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12)


def test_evaluate_json_with_unseen_categories_keeps_stdout_pure(bundle, tmp_path, capsys):
    rows = tiny_test_rows() + [{"title": "Guitarra Criolla", "category": "GUITARS", "language": "spanish"}]
    data = _write_jsonl(tmp_path / "unseen.jsonl", rows)
    rc = main(["evaluate", "--model", str(bundle.dir), "--data", str(data), "--json"])
    assert rc == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert result["n"] == len(rows) and result["unseen_categories"] == {"GUITARS": 1}
    assert "GUITARS" in cap.err and "count as errors" in cap.err


def test_evaluate_plain_text(bundle, capsys):
    assert main(["evaluate", "--model", str(bundle.dir), "--data", str(bundle.test)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("balanced accuracy ") and f"n {len(tiny_test_rows())}" in out


# ---- user mistakes: exit 2, a clear message, no traceback ------------------------------------------


def _bad_rows_file(tmp_path: Path) -> tuple[Path, str]:
    rows = tiny_rows()[:2] + ['{"title": "Casco Moto", "category": '] + tiny_rows()[2:]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    return path, f"{path}:3"


MISTAKES = {
    # name: (extra arguments or a function of tmp_path giving (train file, what the message must name))
    "unknown-set-key": (["--set", "bad.key=1"], "bad.key"),
    "unknown-key-in-section": (["--set", "model.dropuot=0.1"], "model.dropuot"),
    "out-of-range-value": (["--set", "model.dropout=-0.1"], "model.dropout"),
    "wrong-type-value": (["--set", "train.epochs=many"], "train.epochs"),
    "set-without-equals": (["--set", "train.epochs"], "key=value"),
    "unknown-model": (["--model", "nosuch"], "nosuch"),
    "missing-config-file": (["--config", "no/such/config.yaml"], "no/such/config.yaml"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_bad_settings_exit_2(case, tiny_train_file, tmp_path, capsys):
    extra, name = MISTAKES[case]
    args = _train_args(tiny_train_file, None, tmp_path / "out", "--no-tracking", *extra)
    if "--model" not in extra and "--config" not in extra:
        args += ["--model", "mlp"]

    assert main(args) == 2

    _assert_clean_error(capsys.readouterr(), name)
    assert not (tmp_path / "out").exists()


def _malformed_json(tmp_path: Path) -> tuple[Path, str]:
    return _bad_rows_file(tmp_path)


def _directory(tmp_path: Path) -> tuple[Path, str]:
    d = tmp_path / "a-directory.jsonl"
    d.mkdir()
    return d, str(d)


def _empty(tmp_path: Path) -> tuple[Path, str]:
    p = tmp_path / "empty.jsonl"
    p.write_bytes(b"")
    return p, str(p)


def _empty_gz(tmp_path: Path) -> tuple[Path, str]:
    return _write_jsonl(tmp_path / "empty.jsonl.gz", [], gz=True), "empty.jsonl.gz"


def _missing(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "nowhere.jsonl", str(tmp_path / "nowhere.jsonl")


def _missing_category(tmp_path: Path) -> tuple[Path, str]:
    path = _write_jsonl(tmp_path / "nocat.jsonl", tiny_rows()[:3] + [{"title": "Casco Moto"}])
    return path, f"{path}:4"


BAD_FILES = {"malformed-json": _malformed_json, "directory": _directory, "empty-file": _empty,
             "empty-gz": _empty_gz, "missing-file": _missing, "missing-category": _missing_category}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_training_file_exits_2(case, tmp_path, capsys):
    train, name = BAD_FILES[case](tmp_path)

    rc = main(_train_args(train, None, tmp_path / "out", "--model", "mlp", "--no-tracking"))

    assert rc == 2
    _assert_clean_error(capsys.readouterr(), name)
    assert not (tmp_path / "out").exists()


def test_bad_test_file_is_named(tiny_train_file, tmp_path, capsys):
    bad, where = _bad_rows_file(tmp_path)
    rc = main(_train_args(tiny_train_file, bad, tmp_path / "out", "--model", "mlp", "--no-tracking"))
    assert rc == 2
    _assert_clean_error(capsys.readouterr(), where)


def test_bad_evaluate_data_is_named(bundle, tmp_path, capsys):
    bad, where = _bad_rows_file(tmp_path)
    assert main(["evaluate", "--model", str(bundle.dir), "--data", str(bad), "--json"]) == 2
    cap = capsys.readouterr()
    _assert_clean_error(cap, where)
    assert cap.out == ""


def test_output_that_is_not_a_bundle_is_refused_before_training(tiny_train_file, tmp_path, capsys):
    work = tmp_path / "my-work"
    work.mkdir()
    (work / "thesis.tex").write_text("months of work")

    rc = main(_train_args(tiny_train_file, None, work, "--model", "mlp", "--no-tracking"))

    assert rc == 2
    cap = capsys.readouterr()
    _assert_clean_error(cap, str(work), "not a titlecat bundle")
    assert "epoch" not in cap.out  # refused before training
    assert [p.name for p in work.iterdir()] == ["thesis.tex"]


def test_help_and_usage_errors_do_not_import_torch():
    """``titlecat --help`` and a mistyped argument answer at once: torch, MLflow and numba are
    imported only by the command that needs them (importing torch alone takes seconds)."""
    code = ("import sys\nfrom titlecat.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['nosuch']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'mlflow', 'numba', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
