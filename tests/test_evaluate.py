"""Scores (titlecat.evaluate, through ``Classifier.evaluate``): accuracy, balanced accuracy and loss
on a labelled file, categories never seen in training counted as errors and reported, the
per-category report.

The classifier is conftest's ``trained`` tiny MLP, trained once for the session.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _write_jsonl, tiny_test_rows


def test_evaluate_reports_the_scores(clf, trained):
    out = clf.evaluate(trained.test)
    assert {"balanced_accuracy", "accuracy", "loss", "n"} <= set(out)
    assert out["n"] == len(tiny_test_rows())
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["balanced_accuracy"] <= 1.0
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    assert out["unseen_categories"] == {}
    # the same numbers as predicting the titles and comparing by hand
    rows = tiny_test_rows()
    pred = [lab[0] for lab in clf.predict([r["title"] for r in rows])[0]]
    assert out["accuracy"] == pytest.approx(np.mean([p == r["category"] for p, r in zip(pred, rows)]))
    # and the same as the single test evaluation of the training run
    assert out["balanced_accuracy"] == pytest.approx(clf.info.test_balanced_accuracy, abs=1e-12)


def test_unseen_category_is_reported_and_counted_as_an_error(clf, tmp_path):
    rows = tiny_test_rows() + [
        {"title": "Guitarra Criolla Fonseca Modelo 25", "category": "GUITARS", "language": "spanish"},
        {"title": "Guitarra Eléctrica Fender Stratocaster", "category": "GUITARS", "language": "spanish"},
    ]
    path = _write_jsonl(tmp_path / "with_unseen.jsonl", rows)

    out = clf.evaluate(path)

    assert out["unseen_categories"] == {"GUITARS": 2}
    assert out["n"] == len(rows)
    pred = [lab[0] for lab in clf.predict([r["title"] for r in rows])[0]]
    assert "GUITARS" not in pred
    correct = [p == r["category"] for p, r in zip(pred, rows)]
    assert out["accuracy"] == pytest.approx(np.mean(correct))
    # balanced accuracy is the mean recall over the five categories of the file, GUITARS's being 0
    categories = sorted({r["category"] for r in rows})
    assert len(categories) == 5
    recalls = [np.mean([c for c, r in zip(correct, rows) if r["category"] == cat]) for cat in categories]
    assert out["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert out["balanced_accuracy"] <= 4 / 5


def test_evaluate_writes_the_category_report(clf, trained, tmp_path):
    report = tmp_path / "report.csv"
    clf.evaluate(trained.test, report=report)
    lines = report.read_text().splitlines()
    assert lines[0].startswith("category,precision,recall,f1,support")
    assert len(lines) == 1 + len(clf.labels)
