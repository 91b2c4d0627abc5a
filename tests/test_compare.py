"""benchmarks/compare.py's ensemble row: built from the bundles its children kept, scored on the
members' validation split and on test, and written into the table (tiny members, not the
shipped sizes: the benchmark itself runs the real ones)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import titlecat
from titlecat.config import Config

from conftest import _write_jsonl, tiny_rows, tiny_test_rows

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
    members = Config.default("ensemble").model.members
    rows = []
    for m in members:  # what each child leaves: its bundle in --keep, its row on stdout
        cfg = Config.default(m).model_copy(update={"tuned_from": None}).with_overrides({**SHRINK, **NARROW[m]})
        clf = titlecat.train(data / "spanish.train.jsonl.gz", config=cfg, output=tmp_path / "kept" / m, tracking=False)
        rows.append({"model": m, "train_seconds": clf.info["train_seconds"], "total_seconds": 1.0})
    row = compare.run_ensemble(tmp_path / "kept", data, rows)
    ens = titlecat.Ensemble([titlecat.load(tmp_path / "kept" / m) for m in members])
    assert row["members"] == members
    assert row["val_balanced_accuracy"] == pytest.approx(ens.validate(data / "spanish.train.jsonl.gz")["balanced_accuracy"])
    assert row["test_balanced_accuracy"] == pytest.approx(ens.evaluate(data / "spanish.test.jsonl.gz")["balanced_accuracy"])
    assert row["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in rows))
    assert row["parameters"] == ens.num_parameters()
    base = {**row, "model": "tfidf", "members": None, "test_balanced_accuracy": 0.5, "epochs": 1, "best_epoch": 1,
            "train_titles_per_s": 10.0}
    md = compare.table([base, row], base)
    assert f"| ensemble ({' + '.join(members)}) | {row['test_balanced_accuracy']:.4f} |" in md
    assert f"| {row['test_balanced_accuracy'] / 0.5:.3f} |" in md and "| - |" in md


def test_token_dropout_benchmark_scores_each_rate_on_validation_only(monkeypatch, tmp_path, capsys):
    """benchmarks/token_dropout.py: a row per network, a score per split and rate, the ensembles
    at each rate and at the shipped rates; there is no test file for it to read."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import token_dropout

    data = tmp_path / "data"
    _write_jsonl(data / "spanish.train.jsonl.gz", tiny_rows(), gz=True)
    sets = [f"{k}={v}" for k, v in SHRINK.items() if k != "train.num_threads"]
    token_dropout.main(["--data", str(data), "--splits", "3", "5", "--models", "mlp", "rnn", "--threads", "1",
                        "--output", str(tmp_path / "out"), *[a for s in sets for a in ("--set", s)]])
    md = (tmp_path / "out" / "token_dropout.md").read_text()
    result = json.loads((tmp_path / "out" / "token_dropout.json").read_text())
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
