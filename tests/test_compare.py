"""benchmarks/compare.py's ensemble row: built from the bundles its children kept, scored on the
members' validation split and on test, and written into the table (tiny members, not the
shipped sizes: the benchmark itself runs the real ones)."""

from __future__ import annotations

import importlib
import json
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


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import compare

    return compare


def test_the_ensemble_row_scores_the_kept_bundles(compare, tmp_path):
    data = tmp_path / "data"
    _write_jsonl(data / "spanish.train.jsonl.gz", tiny_rows(), gz=True)
    _write_jsonl(data / "spanish.test.jsonl.gz", tiny_test_rows(), gz=True)
    model = Config.default("ensemble").model
    members = model.members
    rows, names = [], compare.bundle_names(model)
    for name, (i, k) in zip(names, model.expand()):  # what each child leaves: its bundle in --keep, its row on stdout
        m = members[i]
        cfg = Config.default(m).model_copy(update={"tuned_from": None}).with_overrides(
            {**SHRINK, **NARROW[m], "train.seed": Config.default(m).train.seed + k})
        clf = titlecat.train(data / "spanish.train.jsonl.gz", config=cfg, output=tmp_path / "kept" / name, tracking=False)
        rows.append({"model": name, "train_seconds": clf.info.train_seconds, "total_seconds": 1.0})
    assert names[: len(members) * model.seeds : model.seeds] == members  # a shipped model's own bundle is its first seed
    row = compare.run_ensemble(tmp_path / "kept", data, rows)
    ens = titlecat.Ensemble([titlecat.load(tmp_path / "kept" / n) for n in names], model.member_weights())
    assert row["members"] == members
    assert row["val_balanced_accuracy"] == pytest.approx(ens.validate(data / "spanish.train.jsonl.gz")["balanced_accuracy"])
    assert row["test_balanced_accuracy"] == pytest.approx(ens.evaluate(data / "spanish.test.jsonl.gz")["balanced_accuracy"])
    assert row["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows))
    assert row["parameters"] == ens.num_parameters()
    base = {**row, "model": "tfidf", "members": None, "test_balanced_accuracy": 0.5, "epochs": 1, "best_epoch": 1,
            "train_titles_per_s": 10.0}
    md = compare.table([base, row], base)
    seeds = f", {model.seeds} seeds each" if model.seeds > 1 else ""
    assert f"| ensemble ({' + '.join(members)}{seeds}) | {row['test_balanced_accuracy']:.4f} |" in md
    assert f"| {row['test_balanced_accuracy'] / 0.5:.3f} |" in md and "| - |" in md


def run_validation_benchmark(name: str, monkeypatch, tmp_path) -> tuple[str, dict]:
    """Run benchmarks/<name>.py on tiny data (splits 3 and 5, an MLP and a GRU, shrunk) and return
    its Markdown and JSON; the data has no test file for it to read."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(name)
    data = tmp_path / "data"
    _write_jsonl(data / "spanish.train.jsonl.gz", tiny_rows(), gz=True)
    sets = [f"{k}={v}" for k, v in SHRINK.items() if k != "train.num_threads"]
    module.main(["--data", str(data), "--splits", "3", "5", "--models", "mlp", "rnn", "--threads", "1",
                 "--output", str(tmp_path / "out"), *[a for s in sets for a in ("--set", s)]])
    return (tmp_path / "out" / f"{name}.md").read_text(), json.loads((tmp_path / "out" / f"{name}.json").read_text())


def test_token_dropout_benchmark_scores_each_rate_on_validation_only(monkeypatch, tmp_path, capsys):
    """benchmarks/token_dropout.py: a row per network, a score per split and rate, the ensembles
    at each rate and at the shipped rates; there is no test file for it to read."""
    md, result = run_validation_benchmark("token_dropout", monkeypatch, tmp_path)
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
    assert "split 3, rate 0.1" in md and md in capsys.readouterr().out


def test_seeds_benchmark_scores_one_seed_and_all_seeds_on_validation_only(monkeypatch, tmp_path, capsys):
    """benchmarks/seeds.py: every member at every seed on each split, the ensemble of each one
    seed and of all of them (in the order an ensemble with model.seeds trains them)."""
    md, result = run_validation_benchmark("seeds", monkeypatch, tmp_path)
    base = {m: Config.default(m).train.seed for m in ("mlp", "rnn")}
    assert [(r["split"], r["model"], r["seed"]) for r in result["trainings"]] == [
        (s, m, base[m] + k) for s in (3, 5) for m in ("mlp", "rnn") for k in (0, 1)]
    assert [(e["split"], e["members"]) for e in result["ensembles"]] == [
        (s, n) for s in (3, 5) for n in ("one seed (+0)", "one seed (+1)", "2 seeds")]
    for r in result["trainings"] + result["ensembles"]:
        assert 0 <= r["val_balanced_accuracy"] <= 1 and f"{r['val_balanced_accuracy']:.4f}" in md
    assert "| split 3, seed +1 |" in md and "| 2 seeds |" in md and md in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sys.modules["seeds"].main(["--seeds", "1"])


def test_refit_benchmark_scores_both_models_on_rows_neither_learned(monkeypatch, tmp_path, capsys):
    """benchmarks/refit.py: each network validated (on the outer split's training rows less its
    own validation rows) and refitted (on all of them), both and their ensembles scored on the
    outer split's validation rows; there is no test file for it to read."""
    md, result = run_validation_benchmark("refit", monkeypatch, tmp_path)
    assert [(r["split"], r["model"], r["kind"]) for r in result["trainings"]] == [
        (s, m, k) for s in (3, 5) for m in ("mlp", "rnn") for k in ("validated", "refitted")]
    outer_train = len(tiny_rows()) - len(CATEGORIES)  # 0.1 of 11 titles per category: one each held out
    for r in result["trainings"]:
        assert r["n_train"] == outer_train if r["kind"] == "refitted" else r["n_train"] < outer_train
        assert 0 <= r["outer_val_balanced_accuracy"] <= 1 and f"{r['outer_val_balanced_accuracy']:.4f}" in md
    assert [(e["split"], e["kind"]) for e in result["ensembles"]] == [
        (s, k) for s in (3, 5) for k in ("validated", "refitted")]
    assert "| split 3, refitted |" in md and "| ensemble of mlp + rnn |" in md and md in capsys.readouterr().out
