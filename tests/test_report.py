"""``titlecat report``: tiny runs are logged to a temporary MLflow store (default and tuned MLPs, a
CNN, a run without test, a tuning study with a trial), the report is written from them, and
every section is there with the numbers MLflow holds.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import titlecat
from titlecat.cli import main
from titlecat.config import Config
from titlecat.report import write_report
from titlecat.tracking import MlflowLogger, RunRecord

from conftest import _write_jsonl, module_workspace, tiny_test_rows

TINY = {"text.buckets": 2000, "text.bigram_buckets": 100, "model.embedding_dim": 16, "train.epochs": 2,
        "train.batch_size": 8, "train.warmup_steps": 0, "train.num_threads": 1}
# test rows: the tiny held-out titles and a category never seen in training (always an error)
TEST_ROWS = tiny_test_rows() + [{"title": t, "category": "BOOKS", "language": "spanish", "label_quality": "reliable"}
                                for t in ("Libro Cien Años De Soledad Tapa Dura", "Libro Harry Potter Y La Piedra")]
SECTIONS = ["## Runs", "## Best run per architecture", "## Loss curves of the best runs",
            "## The 5 categories with the lowest recall", "## Category pairs most often confused",
            "## Effect of tuning", "## Tuning studies"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, _empty_mlflow_db):
    """Runs in experiment "exp" of a fresh store, and the report written from them.

    Not conftest's shared ``trained`` MLP: a report is made of tracked runs, so these trainings
    log to MLflow (``trained`` is untracked), with other settings (untuned and tuned configs, a
    CNN, a run without test) and a test file holding a category never seen in training."""
    import shutil

    with module_workspace(tmp_path_factory, "report") as (d, train, test):
        shutil.copyfile(_empty_mlflow_db, d / "mlflow.db")  # MLFLOW_TRACKING_URI, set by module_workspace
        _write_jsonl(test, TEST_ROWS, gz=True)
        mlp = {**TINY, "model.hidden_sizes": [32]}
        tuned = Config.default("mlp").with_overrides({**mlp, "model.dropout": 0.1, "train.lr": 0.02}).to_dict()
        tuned["tuned_from"] = {"study": "s", "storage": "sqlite:///x.db", "trial": 3, "val_balanced_accuracy": 0.9,
                               "trials": 8}
        def untuned(model: str, overrides: dict) -> Config:  # the shipped mlp/cnn configs are tuned ones
            return Config.default(model).model_copy(update={"tuned_from": None}).with_overrides(overrides)

        for name, kwargs in (("mlp default", {"config": untuned("mlp", mlp)}),
                             ("mlp tuned", {"config": Config.from_dict(tuned)}),
                             ("cnn default", {"config": untuned("cnn", {**TINY, "model.filter_counts": [8, 8, 8]})}),
                             ("mlp no test", {"config": untuned("mlp", mlp), "test": None})):
            titlecat.train(train, kwargs.pop("test", test), experiment="exp", run_name=name, **kwargs)
        # a study's run with one trial nested in it: tuning, not training runs
        study = MlflowLogger("exp", "tune s")
        study.set_tags({"titlecat.kind": "tune", "titlecat.study": "s", "model": "mlp"})
        study.log_metrics({"best_val_balanced_accuracy": 0.9, "trials_complete": 6, "trials_pruned": 2,
                           "best_trial": 3})
        trial = MlflowLogger("exp", "s trial 0", parent_run_id=study.run_id)
        trial.set_tags({"titlecat.kind": "trial", "titlecat.study": "s", "titlecat.trial": "0", "model": "mlp"})
        trial.log_metrics({"best_val_balanced_accuracy": 0.99, "test_balanced_accuracy": 0.99})
        for run in (trial, study):
            run.close()
        out = d / "out" / "report.md"
        files = write_report(out, experiment="exp", n_categories=5, n_pairs=3)
        client = MlflowClient()
        runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
        yield SimpleNamespace(files=files, text=out.read_text(encoding="utf-8"), client=client, dir=d,
                              runs={r.info.run_name: r for r in runs})


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _row(text: str, run) -> str:
    (line,) = [ln for ln in text.splitlines() if f"`{run.info.run_id[:8]}`" in ln]
    return line


def _artifact_rows(logged, run, name: str) -> list[dict]:
    path = logged.client.download_artifacts(run.info.run_id, name, str(logged.dir))
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_section_is_written_and_the_plot_is_linked(logged):
    positions = [logged.text.index(h) for h in SECTIONS]
    assert positions == sorted(positions)
    plot = logged.files.plot
    assert plot.parent == logged.files.markdown.parent and plot.read_bytes()[:4] == b"\x89PNG"
    assert f"![loss curves]({plot.name})" in logged.text
    assert logged.files.runs == 4


def test_runs_table_holds_the_trainings_with_mlflows_numbers(logged):
    table = _section(logged.text, "## Runs")
    for name in ("mlp default", "mlp tuned", "cnn default", "mlp no test"):
        run = logged.runs[name]
        row = _row(table, run).split(" | ")
        m = run.data.metrics
        assert row[1] == run.data.tags["model"] and row[2] == ("yes" if name == "mlp tuned" else "no")
        assert row[4] == f"{m['best_val_balanced_accuracy']:.4f}"
        assert row[5] == (f"{m['test_balanced_accuracy']:.4f}" if "test_balanced_accuracy" in m else "")
        assert row[6] == f"{m['train_seconds']:.1f} s"  # all under 10 s
    row = _row(table, logged.runs["mlp tuned"])
    assert "pooling=tfidf" in row and "dropout=0.1," in row and "lr=0.02," in row  # pooling + the searched settings
    run_params = logged.runs["mlp tuned"].data.params  # and the shape of the model, searched or not
    assert f"embedding_dim={run_params['model.embedding_dim']}," in row
    assert f"ngram_max={run_params['text.ngram_max']}," in row and "batch_size=" in row
    for name in ("tune s", "s trial 0"):  # tuning runs are not trainings
        assert logged.runs[name].info.run_id[:8] not in table


def test_best_run_per_architecture_is_chosen_on_validation(logged):
    table = _section(logged.text, "## Best run per architecture")
    trainings = [r for n, r in logged.runs.items() if n not in ("tune s", "s trial 0")]
    for model in ("mlp", "cnn"):
        runs = [r for r in trainings if r.data.tags["model"] == model]
        best = max(runs, key=lambda r: r.data.metrics["best_val_balanced_accuracy"])  # first of equals: oldest
        best = min((r for r in runs if r.data.metrics["best_val_balanced_accuracy"] ==
                    best.data.metrics["best_val_balanced_accuracy"]), key=lambda r: r.info.start_time)
        row = [ln for ln in table.splitlines() if ln.startswith(f"| {model} |")]
        assert len(row) == 1 and f"`{best.info.run_id[:8]}`" in row[0]
        assert f"{best.data.metrics['best_val_balanced_accuracy']:.4f}" in row[0]


def _overall_best(logged):
    tested = [r for n, r in logged.runs.items() if "test_balanced_accuracy" in r.data.metrics
              and n not in ("tune s", "s trial 0")]
    top = max(r.data.metrics["best_val_balanced_accuracy"] for r in tested)
    return min((r for r in tested if r.data.metrics["best_val_balanced_accuracy"] == top),
               key=lambda r: r.info.start_time)


def test_lowest_recall_comes_from_the_best_runs_category_report(logged):
    best = _overall_best(logged)
    rows = sorted((r for r in _artifact_rows(logged, best, "category_report.csv") if int(r["support"]) > 0),
                  key=lambda r: (float(r["recall"]), -int(r["support"]), r["category"]))
    section = _section(logged.text, "## The 5 categories with the lowest recall")
    assert f"`{best.info.run_id[:8]}`" in section
    shown = [ln.split(" | ") for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [(s[0][2:], s[1]) for s in shown] == [(r["category"], f"{float(r['recall']):.4f}") for r in rows[:5]]


def test_confused_pairs_come_from_the_best_runs_test_predictions(logged):
    best = _overall_best(logged)
    rows = _artifact_rows(logged, best, "test_predictions.csv")
    assert list(rows[0]) == ["title", "category", "predicted"]
    assert [(r["title"], r["category"]) for r in rows] == [(r["title"], r["category"]) for r in TEST_ROWS]
    accuracy = sum(r["category"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(best.data.metrics["test_accuracy"])  # the predictions are the scored ones
    section = _section(logged.text, "## Category pairs most often confused")
    errors = Counter((r["category"], r["predicted"]) for r in rows if r["category"] != r["predicted"])
    assert errors  # the unseen category at least
    assert f"{sum(errors.values())} of {len(rows)} titles misclassified" in section
    for (true, pred), n in errors.most_common(3):
        (line,) = [ln for ln in section.splitlines() if ln.startswith(f"| {true} | {pred} |")]
        assert line.split(" | ")[2] == str(n)
        example = next(r["title"] for r in rows if (r["category"], r["predicted"]) == (true, pred))
        assert example in line


def test_effect_of_tuning_compares_default_and_tuned(logged):
    section = _section(logged.text, "## Effect of tuning")
    tuned = logged.runs["mlp tuned"].data.metrics
    defaults = [logged.runs[n] for n in ("mlp default", "mlp no test")]
    top = max(r.data.metrics["best_val_balanced_accuracy"] for r in defaults)
    default = min((r for r in defaults if r.data.metrics["best_val_balanced_accuracy"] == top),
                  key=lambda r: r.info.start_time)
    (line,) = [ln for ln in section.splitlines() if ln.startswith("| mlp |")]
    cells = line.split(" | ")
    d, t = default.data.metrics, tuned
    assert cells[3:6] == [f"{d['best_val_balanced_accuracy']:.4f}", f"{t['best_val_balanced_accuracy']:.4f}",
                          f"{t['best_val_balanced_accuracy'] - d['best_val_balanced_accuracy']:+.4f}"]
    if "test_balanced_accuracy" in d:
        assert cells[8].rstrip(" |") == f"{t['test_balanced_accuracy'] - d['test_balanced_accuracy']:+.4f}"
    assert "No untuned and tuned runs to compare for: cnn." in section
    assert logged.runs["mlp tuned"].data.tags["titlecat.tuned"] == "true"
    assert logged.runs["mlp default"].data.tags["titlecat.tuned"] == "false"


def test_tuning_studies_are_listed(logged):
    section = _section(logged.text, "## Tuning studies")
    (line,) = [ln for ln in section.splitlines() if ln.startswith("| s |")]
    assert line == "| s | mlp | 1 | 6 | 2 | 0.9000 | 3 |"


def test_the_command_writes_the_report_or_names_what_is_missing(tmp_path, mlflow_db, capsys):
    assert main(["report", "--experiment", "nope", "--output", str(tmp_path / "r.md")]) == 2
    assert re.search(r"titlecat: error: no MLflow experiment 'nope'", capsys.readouterr().err)
    mlflow_db.unlink()
    assert main(["report", "--output", str(tmp_path / "r.md")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not mlflow_db.exists()


class FakeReader:
    """Runs without MLflow: selection rules tested on chosen numbers."""

    uri = "memory"

    def __init__(self, runs):
        self._runs = runs

    def runs(self, experiment):
        return self._runs

    def history(self, run_id, key):
        return [(1, 1.0), (2, 0.5)]

    def artifact(self, run_id, path, dest):
        return None


def _record(i: int, model: str, val: float, test: float | None, tuned: bool = False) -> RunRecord:
    metrics = {"best_val_balanced_accuracy": val, "train_seconds": 3600.0}
    if test is not None:
        metrics["test_balanced_accuracy"] = test
    return RunRecord(f"{i:08d}" + "f" * 24, f"run{i}", "FINISHED", i, {"model.dropout": "0.25"}, metrics,
                     {"model": model, "titlecat.tuned": str(tuned).lower()})


def test_selection_is_on_validation_never_test(tmp_path):
    runs = [_record(1, "mlp", 0.80, 0.95), _record(2, "mlp", 0.85, 0.70), _record(3, "mlp", 0.90, 0.60, tuned=True),
            RunRecord("9" * 32, "failed", "FAILED", 4, {}, {"best_val_balanced_accuracy": 0.99}, {"model": "mlp"})]
    files = write_report(tmp_path / "r.md", reader=FakeReader(runs))
    text = files.markdown.read_text(encoding="utf-8")
    best = _section(text, "## Best run per architecture")
    assert "`00000003`" in best and "`00000001`" not in best
    assert "| mlp | run2 `00000002` | run3 `00000003` | 0.8500 | 0.9000 | +0.0500 | 0.7000 | 0.6000 | -0.1000 |" in text
    assert "`99999999`" not in text  # not finished: not reported
    assert "60.0 min" in text and "has no `category_report.csv` artifact" in text
