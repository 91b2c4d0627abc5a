"""benchmarks/compare.py's ensemble row: built from the bundles its children kept, scored on the
members' validation split and on test, and written into the table (tiny members, not the
shipped sizes: the benchmark itself runs the real ones); and the validation benchmarks
(token_dropout.py, seeds.py, refit.py) on tiny data.

The scripts run as a user runs them, in a subprocess with this test's environment (its cache
and MLflow store); the tests read what they print and write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import titlecat
from titlecat.config import Config

from conftest import CATEGORIES, _write_jsonl, tiny_rows, tiny_test_rows

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHRINK = {"text.buckets": 2000, "text.bigram_buckets": 100, "model.embedding_dim": 16, "train.epochs": 2,
          "train.batch_size": 8, "train.warmup_steps": 0, "train.num_threads": 1}
NARROW = {"cnn": {"model.filter_counts": [8, 8, 8]}, "rnn": {"model.hidden_size": 16},
          "transformer": {"model.ff_dim": 32}, "mlp": {}}


def run_script(name: str, *args, stdin: str | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    """``python benchmarks/<name> args...`` with this test's environment; fails the test, with the
    script's stderr, unless it exits with ``expect``."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], input=stdin,
                          capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == expect, f"{name} exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def bundle_names(model) -> list[str]:
    """The names compare.py keeps the ensemble's networks under (``EnsembleConfig.expand``'s order):
    ``member`` for its first seed, ``member+k`` for its k-th further one."""
    return [model.members[i] if k == 0 else f"{model.members[i]}+{k}" for i, k in model.expand()]


def test_the_ensemble_its_student_and_the_quantized_rows_score_the_kept_bundles(tmp_path):
    data = tmp_path / "data"
    _write_jsonl(data / "spanish.train.jsonl.gz", tiny_rows(), gz=True)
    _write_jsonl(data / "spanish.test.jsonl.gz", tiny_test_rows(), gz=True)
    model = Config.default("ensemble").model
    members = model.members
    rows, names = [], bundle_names(model)
    for name, (i, k) in zip(names, model.expand()):  # what each child leaves: its bundle in --keep, its row on stdout
        m = members[i]
        cfg = Config.default(m).model_copy(update={"tuned_from": None}).with_overrides(
            {**SHRINK, **NARROW[m], "train.seed": Config.default(m).train.seed + k})
        clf = titlecat.train(data / "spanish.train.jsonl.gz", config=cfg, output=tmp_path / "kept" / name, tracking=False)
        rows.append({"model": name, "train_seconds": clf.info.train_seconds, "total_seconds": 1.0})
    assert names[: len(members) * model.seeds : model.seeds] == members  # a shipped model's own bundle is its first seed
    # the ensemble child: the member rows as JSON on stdin, its row as JSON on its last stdout line
    child = run_script("compare.py", "--ensemble", tmp_path / "kept", "--data", data, stdin=json.dumps(rows))
    row = json.loads(child.stdout.strip().splitlines()[-1])
    ens = titlecat.Ensemble([titlecat.load(tmp_path / "kept" / n) for n in names], model.member_weights())
    assert row["members"] == members
    assert row["val_balanced_accuracy"] == pytest.approx(ens.validate(data / "spanish.train.jsonl.gz")["balanced_accuracy"])
    assert row["test_balanced_accuracy"] == pytest.approx(ens.evaluate(data / "spanish.test.jsonl.gz")["balanced_accuracy"])
    assert row["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows))
    assert row["parameters"] == ens.num_parameters()
    base = {**row, "model": "tfidf", "members": None, "test_balanced_accuracy": 0.5, "epochs": 1, "best_epoch": 1,
            "train_titles_per_s": 10.0}
    (tmp_path / "rows.json").write_text(json.dumps([base, row]))
    md = run_script("compare.py", "--table", tmp_path / "rows.json").stdout  # the table of these rows, base the tfidf one
    seeds = f", {model.seeds} seeds each" if model.seeds > 1 else ""
    assert f"| ensemble ({' + '.join(members)}{seeds}) | {row['test_balanced_accuracy']:.4f} |" in md
    assert f"| {row['test_balanced_accuracy'] / 0.5:.3f} |" in md and "| - |" in md
    assert row["bundle_mb"] > 0 and row["load_seconds"] > 0 and (tmp_path / "kept" / "ensemble" / "bundle.json").is_file()

    # the student child: the shipped student config distilled from the ensemble the last child saved
    sets = [a for k, v in {**SHRINK, "train.num_threads": 1}.items() for a in ("--set", f"{k}={v}")]
    child = run_script("compare.py", "--one", "mlp", "--teacher", tmp_path / "kept" / "ensemble", "--data", data,
                       "--keep", tmp_path / "kept", *sets)
    student = json.loads(child.stdout.strip().splitlines()[-1])
    loaded = titlecat.load(tmp_path / "kept" / "mlp-distilled")
    assert student["model"] == "mlp-distilled" and student["teacher"] == "ensemble"
    assert loaded.config.distill == Config.default("mlp-distill").distill and loaded.config.model.embedding_dim == 16
    assert student["test_balanced_accuracy"] == pytest.approx(loaded.evaluate(data / "spanish.test.jsonl.gz")["balanced_accuracy"])
    assert student["train_seconds"] >= student["teacher_seconds"] > 0
    # the quantized children: int8 copies of the MLP and of the student, scored on test
    quantized = []
    for source in (rows[0], student):
        child = run_script("compare.py", "--quantize", source["model"], "--keep", tmp_path / "kept", "--data", data,
                           stdin=json.dumps(source))
        quantized.append(json.loads(child.stdout.strip().splitlines()[-1]))
        q = titlecat.load(tmp_path / "kept" / f"{source['model']}-int8")
        assert quantized[-1]["test_balanced_accuracy"] == pytest.approx(
            q.evaluate(data / "spanish.test.jsonl.gz")["balanced_accuracy"])
        assert quantized[-1]["train_seconds"] >= source["train_seconds"] and quantized[-1]["val_balanced_accuracy"] is None
    (tmp_path / "rows.json").write_text(json.dumps([base, row, student, *quantized]))
    md = run_script("compare.py", "--table", tmp_path / "rows.json").stdout
    assert "| mlp-distilled (student of the ensemble) |" in md and "| mlp-int8 (int8 copy of mlp) |" in md
    assert "| mlp-distilled-int8 (int8 copy of mlp-distilled) |" in md


def run_validation_benchmark(name: str, tmp_path) -> tuple[str, dict, str]:
    """Run benchmarks/<name>.py on tiny data (splits 3 and 5, an MLP and a GRU, shrunk) and return
    its Markdown, its JSON and what it printed; the data has no test file for it to read."""
    data = tmp_path / "data"
    _write_jsonl(data / "spanish.train.jsonl.gz", tiny_rows(), gz=True)
    sets = [f"{k}={v}" for k, v in SHRINK.items() if k != "train.num_threads"]
    proc = run_script(f"{name}.py", "--data", data, "--splits", "3", "5", "--models", "mlp", "rnn", "--threads", "1",
                      "--output", tmp_path / "out", *[a for s in sets for a in ("--set", s)])
    return ((tmp_path / "out" / f"{name}.md").read_text(), json.loads((tmp_path / "out" / f"{name}.json").read_text()),
            proc.stdout)


def test_token_dropout_benchmark_scores_each_rate_on_validation_only(tmp_path):
    """benchmarks/token_dropout.py: a row per network, a score per split and rate, the ensembles
    at each rate and at the shipped rates; there is no test file for it to read."""
    md, result, printed = run_validation_benchmark("token_dropout", tmp_path)
    assert [(r["split"], r["model"], r["rate"]) for r in result["trainings"]] == [
        (s, m, r) for s in (3, 5) for m in ("mlp", "rnn") for r in (0.0, 0.1)]
    assert [(e["split"], e["members"]) for e in result["ensembles"]] == [
        (s, n) for s in (3, 5) for n in ("all at 0", "all at 0.1", "shipped rates")]
    shipped = {m: Config.default(m).train.token_dropout for m in ("mlp", "rnn")}
    assert all(e["rates"] == shipped for e in result["ensembles"] if e["members"] == "shipped rates")
    for r in result["trainings"]:
        assert 0 <= r["val_balanced_accuracy"] <= 1
        assert f"{r['val_balanced_accuracy']:.4f}" in md
    assert "| mlp (shipped rate 0) |" in md and "| members shipped rates |" in md
    assert "split 3, rate 0.1" in md and md in printed


def test_seeds_benchmark_scores_one_seed_and_all_seeds_on_validation_only(tmp_path):
    """benchmarks/seeds.py: every member at every seed on each split, the ensemble of each one
    seed and of all of them (in the order an ensemble with model.seeds trains them)."""
    md, result, printed = run_validation_benchmark("seeds", tmp_path)
    base = {m: Config.default(m).train.seed for m in ("mlp", "rnn")}
    assert [(r["split"], r["model"], r["seed"]) for r in result["trainings"]] == [
        (s, m, base[m] + k) for s in (3, 5) for m in ("mlp", "rnn") for k in (0, 1)]
    assert [(e["split"], e["members"]) for e in result["ensembles"]] == [
        (s, n) for s in (3, 5) for n in ("one seed (+0)", "one seed (+1)", "2 seeds")]
    for r in result["trainings"] + result["ensembles"]:
        assert 0 <= r["val_balanced_accuracy"] <= 1 and f"{r['val_balanced_accuracy']:.4f}" in md
    assert "| split 3, seed +1 |" in md and "| 2 seeds |" in md and md in printed
    refused = run_script("seeds.py", "--seeds", "1", expect=2)  # a usage error: argparse's exit code
    assert "--seeds: at least 2" in refused.stderr


def test_refit_benchmark_scores_both_models_on_rows_neither_learned(tmp_path):
    """benchmarks/refit.py: each network validated (on the outer split's training rows less its
    own validation rows) and refitted (on all of them), both and their ensembles scored on the
    outer split's validation rows; there is no test file for it to read."""
    md, result, printed = run_validation_benchmark("refit", tmp_path)
    assert [(r["split"], r["model"], r["kind"]) for r in result["trainings"]] == [
        (s, m, k) for s in (3, 5) for m in ("mlp", "rnn") for k in ("validated", "refitted")]
    outer_train = len(tiny_rows()) - len(CATEGORIES)  # 0.1 of 11 titles per category: one each held out
    for r in result["trainings"]:
        assert r["n_train"] == outer_train if r["kind"] == "refitted" else r["n_train"] < outer_train
        assert 0 <= r["outer_val_balanced_accuracy"] <= 1 and f"{r['outer_val_balanced_accuracy']:.4f}" in md
    assert [(e["split"], e["kind"]) for e in result["ensembles"]] == [
        (s, k) for s in (3, 5) for k in ("validated", "refitted")]
    assert "| split 3, refitted |" in md and "| ensemble of mlp + rnn |" in md and md in printed
